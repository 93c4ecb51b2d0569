"""The node core: what a tinc 1.1 daemon decides on the meta level (tinc's protocol_edge.c,
protocol_subnet.c, protocol_key.c routing, ack_h's activation and terminate_connection).

Owns: the graph, the subnet table, the seen-requests cache and the registry of meta
connections (opaque tokens handed in by the shell) with the peer name, activity and our edge of
each. The shell feeds it connection events with `now`; the node answers with actions
(SendTo, Close, RunScript, TunnelReset, UdpAddressReset, ToDataPlane, Sleep) drained with
pop_actions(). It does not own the connections' streams, PING/PONG, sockets, timers or the
data plane.

No I/O, no clock, no global randomness (`rng(n)` makes nonces). Not thread-safe.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Hashable, Optional

from tincapp.mesh.graph import (Graph, NodeBecameReachable, NodeBecameUnreachable,
                                NodeUdpAddressChanged, SockAddr, sockaddr_strings)
from tincapp.mesh.subnets import Subnet, SubnetTable
from tincapp.meta.dedup import SeenRequests
from tincapp.meta.events import Activated
from tincapp.meta.messages import (FLOODED, AddEdge, AddSubnet, AnsKey, DelEdge, DelSubnet,
                                   KeyChanged, Message, MtuInfo, ReqKeySptpsPacket, UdpInfo,
                                   ReqKeyBase, new_nonce)

# tinc's periodic handler (every 5 s) sleeps when both kinds of contradictions exceed this
# within one period: the damping for two nodes fighting over one name.
CONTRADICTION_LIMIT = 100
PERIODIC_S = 5.0
MIN_SLEEP_S = 10
MAX_SLEEP_S = 3600


# --- actions (drained by the shell, in order) -------------------------------------------------

@dataclass(frozen=True)
class SendTo:
    """Queue a request on `conn`: `msg` we originate (send_request) or `line`, a received text
    forwarded unchanged (forward_request). Exactly one of the two is set."""
    conn: Hashable
    msg: Optional[Message] = None
    line: Optional[bytes] = None


@dataclass(frozen=True)
class Close:
    """Close `conn`. The node has already forgotten it: report nothing more about it."""
    conn: Hashable
    reason: str


@dataclass(frozen=True)
class RunScript:
    """Run script `name` (tinc-up, host-up, hosts/NAME-up, subnet-up, ...) with `env`."""
    name: str
    env: dict = field(default_factory=dict)


@dataclass(frozen=True)
class TunnelReset:
    """Node `name` changed reachability: its tunnel key and UDP/MTU state must be reset
    (graph.md 4, steps 4-5)."""
    name: str


@dataclass(frozen=True)
class UdpAddressReset:
    """The graph moved reachable node `name` to another UDP address: its UDP confirmation and
    path MTU start over (tinc update_node_udp)."""
    name: str


@dataclass(frozen=True)
class ToDataPlane:
    """A routed request the data plane handles: REQ_KEY/ANS_KEY addressed to us, an
    SPTPS_PACKET or ANS_KEY passing through (relayed over UDP when possible, or with the
    reflexive address appended), and every UDP_INFO/MTU_INFO (each hop regenerates them).
    `line` is the text as received, `for_us` whether we are the destination."""
    conn: Hashable
    msg: Message
    line: bytes
    for_us: bool


@dataclass(frozen=True)
class Sleep:
    """Stop handling the network for `seconds` (tinc blocks in nanosleep): too many
    contradicting ADD_EDGE and DEL_EDGE about our own edges, probably a node with our name."""
    seconds: float


@dataclass
class _Conn:
    name: Optional[str]
    outgoing: bool
    active: bool = False


def numeric_ip(host: str):
    """The IP address `host` spells, as tinc normalises it (scope dropped, IPv4-mapped IPv6
    as IPv4), or None if it is not a numeric address."""
    try:
        ip = ipaddress.ip_address(str(host).split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip


def address_from_text(host: str, port: str) -> Optional[SockAddr]:
    """tinc's str2sockaddr for ADD_EDGE fields: numeric addresses normalised (numeric_ip),
    anything else kept verbatim as an "unknown" address."""
    ip = numeric_ip(host)
    # A port no socket can use stays text too: sending to it would raise OverflowError.
    if ip is None or not port.isdigit() or not 0 <= int(port) <= 65535:
        return SockAddr(host, port, unknown=True)
    return SockAddr(str(ip), str(int(port)))


def _addr_fields(address: Optional[SockAddr]) -> tuple[str, str]:
    return sockaddr_strings(address)


class Node:
    """The meta-level daemon state of node `myself`. Single-threaded."""

    def __init__(self, myself: str, *, rng, now: float, options: int = 0,
                 tcp_port: str = "655", own_subnets=(), tunnel_server: bool = False,
                 strict_subnets: bool = False, seen_lifetime_s: float = 60.0,
                 known_nodes=(), broadcast_subnets=(), log=None):
        self.myself = myself
        self.graph = Graph(myself, options=options, tcp_port=tcp_port, now=now)
        self.subnets = SubnetTable(self.graph)
        self.seen = SeenRequests(seen_lifetime_s)
        self.tunnel_server = tunnel_server
        # COMPAT: TunnelServer implies StrictSubnets.
        self.strict_subnets = strict_subnets or tunnel_server
        self.own_subnets = tuple(s.with_owner(myself) for s in own_subnets)
        self._rng = rng
        self._log = log or (lambda level, text: None)
        self._conns: dict[Hashable, _Conn] = {}
        self._by_name: dict[str, Hashable] = {}        # active connection per peer name
        self._actions: list = []
        self.contradicting_add_edge = 0
        self.contradicting_del_edge = 0
        self._sleep_s = MIN_SLEEP_S
        self._periodic_at = now + PERIODIC_S
        self._learnt: set[Subnet] = set()      # MAC subnets switch mode learnt on our device
        # Called with each subnet another node announced (the router hands a roaming MAC over).
        self.subnet_added_hook = None
        for name in known_nodes:
            if name != myself:
                self.graph.ensure_node(name)
        # COMPAT: setup_myself adds the ownerless broadcast subnets (DEFAULT_BROADCAST_SUBNETS
        # and BroadcastSubnet lines); dumps show them as "(broadcast)".
        for s in broadcast_subnets:
            self.subnets.add(s.with_owner(None))
        for s in self.own_subnets:
            self.subnets.add(s)

    # --- output ---------------------------------------------------------------------------

    def pop_actions(self) -> list:
        out, self._actions = self._actions, []
        return out

    def next_deadline(self) -> Optional[float]:
        seen = self.seen.next_deadline()
        return self._periodic_at if seen is None else min(seen, self._periodic_at)

    def handle_deadline(self, now: float) -> None:
        """Called when next_deadline() has passed: age the seen-requests cache; every 5 s
        check the contradiction counters (tinc's periodic_handler)."""
        deadline = self.seen.next_deadline()
        if deadline is not None and now >= deadline:
            self.seen.handle_deadline(now)
        if now >= self._periodic_at:
            self._periodic_at = now + PERIODIC_S
            if (self.contradicting_add_edge > CONTRADICTION_LIMIT
                    and self.contradicting_del_edge > CONTRADICTION_LIMIT):
                self._log(0, f"Possible node with same Name as us! Sleeping {self._sleep_s} "
                          "seconds.")
                self._actions.append(Sleep(self._sleep_s))
                self._sleep_s = min(self._sleep_s * 2, MAX_SLEEP_S)
            else:
                self._sleep_s = max(self._sleep_s // 2, MIN_SLEEP_S)
            self.contradicting_add_edge = 0
            self.contradicting_del_edge = 0

    # --- queries --------------------------------------------------------------------------

    def connection_for(self, name: str) -> Optional[Hashable]:
        """The active meta connection to `name`, if any."""
        return self._by_name.get(name)

    def active_connections(self) -> list:
        return [c for c, info in self._conns.items() if info.active]

    def connection_name(self, conn) -> Optional[str]:
        info = self._conns.get(conn)
        return None if info is None else info.name

    # --- start and stop -------------------------------------------------------------------

    def start(self) -> None:
        """Called once the device and listeners are up: tinc-up, then subnet-up for our own
        subnets (net_setup.c)."""
        self._actions.append(RunScript("tinc-up"))
        for s in self.subnets.owned_by(self.myself):
            self._subnet_script("subnet-up", s)

    def stop(self) -> None:
        """Called at shutdown after the connections are closed: subnet-down for our subnets,
        then tinc-down."""
        for s in self.subnets.owned_by(self.myself):
            self._subnet_script("subnet-down", s)
        self._actions.append(RunScript("tinc-down"))

    def set_own_subnets(self, subnets) -> None:
        """Called on reload with the Subnet lines now configured for us: announce and script
        the difference (graph.md 10; DEL_SUBNET + subnet-down, then ADD_SUBNET + subnet-up)."""
        wanted = [s.with_owner(self.myself) for s in subnets]
        for s in self.subnets.owned_by(self.myself):
            if s not in wanted and s not in self._learnt:
                self._send_all(DelSubnet(new_nonce(self._rng), self.myself, s))
                self._subnet_script("subnet-down", s)
                self.subnets.delete(s)
        for s in wanted:
            if self.subnets.lookup(self.myself, s) is None:
                self.subnets.add(s)
                self._send_all(AddSubnet(new_nonce(self._rng), self.myself, s))
                self._subnet_script("subnet-up", s)
        self.own_subnets = tuple(wanted)

    def set_authorized_subnets(self, by_owner) -> None:
        """StrictSubnets: the Subnet lines of the other nodes' host files ({owner: subnets}),
        read at start and on reload (tinc load_all_nodes and reload_configuration). They are
        the only subnets those nodes may have: new ones are added (ADD_SUBNET to everyone,
        subnet-up if the owner is reachable), ones no longer listed are withdrawn (DEL_SUBNET,
        subnet-down if reachable). Our own subnets are set_own_subnets' business."""
        if not self.strict_subnets:
            return
        wanted = {owner: {s.with_owner(owner) for s in subnets}
                  for owner, subnets in by_owner.items() if owner != self.myself}
        for n in self.graph.nodes():
            if n is self.graph.myself:
                continue
            for s in self.subnets.owned_by(n.name):
                if s not in wanted.get(n.name, ()):
                    self._send_all(DelSubnet(new_nonce(self._rng), n.name, s))
                    if n.reachable:
                        self._subnet_script("subnet-down", s)
                    self.subnets.delete(s)
        for owner in sorted(wanted):
            node = self.graph.ensure_node(owner)
            for s in sorted(wanted[owner], key=Subnet.sort_key):
                if self.subnets.lookup(owner, s) is None:
                    self.subnets.add(s)
                    self._send_all(AddSubnet(new_nonce(self._rng), owner, s))
                    if node.reachable:
                        self._subnet_script("subnet-up", s)

    def add_learnt_subnet(self, subnet: Subnet) -> None:
        """Called when switch mode learnt a MAC address on our device (tinc learn_mac):
        subnet-up, then announce it."""
        s = subnet.with_owner(self.myself)
        if self.subnets.lookup(self.myself, s) is not None:
            return
        self.subnets.add(s)
        self._learnt.add(s)
        self._subnet_script("subnet-up", s)
        self._send_all(AddSubnet(new_nonce(self._rng), self.myself, s))

    def remove_learnt_subnet(self, subnet: Subnet) -> None:
        """Called when a learnt MAC address expired (tinc age_subnets: DEL_SUBNET and gone,
        COMPAT: without a subnet-down script)."""
        s = subnet.with_owner(self.myself)
        self._learnt.discard(s)
        if self.subnets.lookup(self.myself, s) is None:
            return
        self._send_all(DelSubnet(new_nonce(self._rng), self.myself, s))
        self.subnets.delete(s)

    # --- connection events ----------------------------------------------------------------

    def connection_opened(self, conn, *, outgoing: bool, name: Optional[str] = None) -> None:
        """Called when the shell created a MetaConnection for a socket."""
        self._conns[conn] = _Conn(name, outgoing)

    def connection_activated(self, conn, ev: Activated, *, remote_host: Optional[str],
                             local_host: Optional[str], my_udp_port: str, now: float) -> None:
        """Called when `conn` reported Activated (tinc's ack_h, from step 2)."""
        info = self._conns[conn]
        info.name = ev.name
        old = self._by_name.get(ev.name)
        if old is not None and old is not conn:
            # COMPAT: the old connection goes without a DEL_EDGE announcement.
            self._log(1, f"Established a second connection with {ev.name}, closing old "
                      "connection")
            old_outgoing = self._conns[old].outgoing
            self._terminate(old, now, report=False)
            self._actions.append(Close(old, "replaced by a new connection"))
            if old_outgoing and not info.outgoing:
                info.outgoing = True     # the new one takes over the reconnect duty
            self._run_graph(now)
        info.active = True
        self._by_name[ev.name] = conn
        self._send_everything(conn)
        address = (address_from_text(remote_host, ev.port) if remote_host is not None
                   else None)
        local = (address_from_text(local_host, my_udp_port) if local_host is not None
                 else None)
        if self.graph.edge(self.myself, ev.name) is not None:
            self.graph.del_edge(self.myself, ev.name)
        self.graph.add_edge(self.myself, ev.name, address=address, local_address=local,
                            options=ev.options, weight=ev.weight, connection=conn)
        msg = self._add_edge_msg(self.graph.edge(self.myself, ev.name))
        if self.tunnel_server:
            self._send(conn, msg)
        else:
            self._send_all(msg)
        self._run_graph(now)

    def connection_closed(self, conn, now: float, *, report: bool = True) -> None:
        """Called when `conn` ended by itself (ConnectionFailed, EOF, socket error) or the
        shell closed it (DISCONNECT, shutdown). tinc's terminate_connection."""
        if conn in self._conns:
            self._terminate(conn, now, report=report)

    def _terminate(self, conn, now, report):
        info = self._conns.pop(conn)
        was_active = info.active
        info.active = False
        if info.name is not None and self._by_name.get(info.name) is conn:
            del self._by_name[info.name]
        if not was_active or info.name is None:
            return
        e = self.graph.edge(self.myself, info.name)
        if e is None or e.connection is not conn:
            return
        if report and not self.tunnel_server:
            self._send_all(self._del_edge_msg(self.myself, info.name))
        self.graph.del_edge(self.myself, info.name)
        self._run_graph(now)
        # If the peer is now unreachable, its edge to us is stale: drop and announce it.
        if report and not self.graph.is_reachable(info.name):
            if self.graph.edge(info.name, self.myself) is not None:
                if not self.tunnel_server:
                    self._send_all(self._del_edge_msg(info.name, self.myself))
                self.graph.del_edge(info.name, self.myself)

    def request_received(self, conn, msg: Message, line: bytes, now: float) -> None:
        """Called when `conn` reported RequestReceived."""
        info = self._conns.get(conn)
        if info is None or not info.active:
            return
        if msg.request in FLOODED and self.seen.seen(line, now):
            return
        handler = {AddSubnet: self._add_subnet, DelSubnet: self._del_subnet,
                   AddEdge: self._add_edge, DelEdge: self._del_edge,
                   KeyChanged: self._key_changed}.get(type(msg))
        if handler is not None:
            handler(conn, info.name, msg, line, now)
        elif isinstance(msg, (ReqKeyBase, AnsKey, UdpInfo, MtuInfo)):
            self._routed(conn, info.name, msg, line)
        else:
            self._log(3, f"Ignoring {msg.request.name} from {info.name}")

    # --- flooded requests -----------------------------------------------------------------

    def _add_subnet(self, conn, peer, msg: AddSubnet, line, now):
        owner, s = msg.owner, msg.subnet
        if self.tunnel_server and owner not in (self.myself, peer):
            self._log(3, f"Ignoring indirect ADD_SUBNET from {peer} for {owner}")
            return
        self.graph.ensure_node(owner)
        if self.subnets.lookup(owner, s) is not None:
            return                                   # known: not forwarded
        if owner == self.myself:
            self._log(2, f"Got ADD_SUBNET from {peer} for ourself")
            self._send(conn, DelSubnet(new_nonce(self._rng), owner, s))
            return
        if self.tunnel_server:
            return
        if self.strict_subnets:
            self._log(2, f"Ignoring unauthorized ADD_SUBNET from {peer} ({owner}: {s})")
            self._forward(conn, line)
            return
        self.subnets.add(s)
        if self.subnet_added_hook is not None:
            self.subnet_added_hook(s)
        if self.graph.is_reachable(owner):
            self._subnet_script("subnet-up", s)
        self._forward(conn, line)

    def _del_subnet(self, conn, peer, msg: DelSubnet, line, now):
        owner, s = msg.owner, msg.subnet
        if self.tunnel_server and owner not in (self.myself, peer):
            return
        if self.graph.node(owner) is None:
            self._log(3, f"Got DEL_SUBNET from {peer} for {owner} which is not in our node tree")
            return
        if self.subnets.lookup(owner, s) is None:
            self._log(3, f"Got DEL_SUBNET from {peer} for {owner} which does not appear "
                      "in his subnet tree")
            if self.strict_subnets:
                self._forward(conn, line)
            return
        if owner == self.myself:
            self._log(2, f"Got DEL_SUBNET from {peer} for ourself")
            self._send(conn, AddSubnet(new_nonce(self._rng), owner, s))
            return
        if self.tunnel_server:
            return
        self._forward(conn, line)
        if self.strict_subnets:
            return
        if self.graph.is_reachable(owner):
            self._subnet_script("subnet-down", s)
        self.subnets.delete(s)

    def _add_edge(self, conn, peer, msg: AddEdge, line, now):
        if self.tunnel_server and msg.from_name not in (self.myself, peer) \
                and msg.to_name not in (self.myself, peer):
            return
        self.graph.ensure_node(msg.from_name)
        self.graph.ensure_node(msg.to_name)
        address = address_from_text(msg.address, msg.port)
        local = (address_from_text(msg.local_address, msg.local_port)
                 if msg.local_address is not None else None)
        e = self.graph.edge(msg.from_name, msg.to_name)
        if e is not None:
            same = (e.weight == msg.weight and e.options == msg.options
                    and e.address == address
                    and (local is None or local.unknown or e.local_address == local))
            if same:
                return                               # identical: not forwarded
            if msg.from_name == self.myself:
                self._log(2, f"Got ADD_EDGE from {peer} for ourself which does not match "
                          "existing entry")
                self._send(conn, self._add_edge_msg(e))
                return
            changes = dict(options=msg.options, address=address, weight=msg.weight)
            # A local address that is not numeric never replaces a known one.
            if local is not None and not local.unknown:
                changes["local_address"] = local
            self.graph.update_edge(msg.from_name, msg.to_name, **changes)
        elif msg.from_name == self.myself:
            self._log(2, f"Got ADD_EDGE from {peer} for ourself which does not exist")
            self.contradicting_add_edge += 1
            self._send(conn, DelEdge(new_nonce(self._rng), msg.from_name, msg.to_name))
            return
        else:
            self.graph.add_edge(msg.from_name, msg.to_name, address=address,
                                local_address=local, options=msg.options, weight=msg.weight)
        if not self.tunnel_server:
            self._forward(conn, line)
        self._run_graph(now)

    def _del_edge(self, conn, peer, msg: DelEdge, line, now):
        if self.tunnel_server and msg.from_name not in (self.myself, peer) \
                and msg.to_name not in (self.myself, peer):
            return
        e = self.graph.edge(msg.from_name, msg.to_name)
        if e is None:
            self._log(3, f"Got DEL_EDGE from {peer} for {msg.from_name} -> {msg.to_name} "
                      "which does not appear in the edge tree")
            return
        if msg.from_name == self.myself:
            self._log(2, f"Got DEL_EDGE from {peer} for ourself")
            self.contradicting_del_edge += 1
            self._send(conn, self._add_edge_msg(e))
            return
        if not self.tunnel_server:
            self._forward(conn, line)
        self.graph.del_edge(msg.from_name, msg.to_name)
        self._run_graph(now)
        to = msg.to_name
        if not self.graph.is_reachable(to) and self.graph.edge(to, self.myself) is not None:
            if not self.tunnel_server:
                self._send_all(self._del_edge_msg(to, self.myself))
            self.graph.del_edge(to, self.myself)

    def _key_changed(self, conn, peer, msg: KeyChanged, line, now):
        if self.graph.node(msg.name) is None:
            self._log(2, f"Got KEY_CHANGED from {peer} origin {msg.name} which does not exist")
            return
        # SPTPS nodes: no key to invalidate; only flood it.
        if not self.tunnel_server:
            self._forward(conn, line)

    # --- routed requests ------------------------------------------------------------------

    def _routed(self, conn, peer, msg, line):
        name = msg.request.name
        src, dst = self.graph.node(msg.from_name), self.graph.node(msg.to_name)
        if src is None or dst is None:
            self._log(2, f"Got {name} from {peer} with unknown origin or destination "
                      f"({msg.from_name} -> {msg.to_name})")
            return
        if isinstance(msg, (UdpInfo, MtuInfo)):
            # COMPAT: udp_info_h/mtu_info_h act at every hop and send their own message on.
            self._actions.append(ToDataPlane(conn, msg, line, dst is self.graph.myself))
            return
        if dst is self.graph.myself:
            if isinstance(msg, ReqKeyBase) and not src.reachable:
                self._log(0, f"Got {name} from {peer} origin {msg.from_name} which is not "
                          "reachable")
                return
            self._actions.append(ToDataPlane(conn, msg, line, True))
            return
        if self.tunnel_server:
            return
        if not dst.reachable:
            self._log(2, f"Got {name} from {peer} destination {msg.to_name} which is not "
                      "reachable")
            return
        if isinstance(msg, (ReqKeySptpsPacket, AnsKey)):
            # SPTPS_PACKET goes on by UDP when it can; ANS_KEY may get the reflexive address.
            self._actions.append(ToDataPlane(conn, msg, line, False))
            return
        if not self.send_toward(msg.to_name, line=line):
            self._log(2, f"No connection towards {msg.to_name} for {name}")

    def send_toward(self, to_name: str, *, msg: Optional[Message] = None,
                    line: Optional[bytes] = None) -> bool:
        """Queue a request on the meta connection to `to_name`'s next hop (tinc's
        send_request(to->nexthop->connection, ...)). False if there is none."""
        n = self.graph.node(to_name)
        via = (self._by_name.get(n.nexthop.name)
               if n is not None and n.nexthop is not None else None)
        if via is None:
            return False
        self._actions.append(SendTo(via, msg=msg, line=None if line is None else bytes(line)))
        return True

    # --- purge ----------------------------------------------------------------------------

    def purge(self) -> None:
        """The PURGE control request (graph.md 8)."""
        unreachable = [n for n in self.graph.nodes()
                       if n is not self.graph.myself and not n.reachable]
        for n in unreachable:
            for s in self.subnets.owned_by(n.name):
                self._send_all(DelSubnet(new_nonce(self._rng), n.name, s))
                if not self.strict_subnets:
                    self.subnets.delete(s)
            for e in n.sorted_edges():
                if not self.tunnel_server:
                    self._send_all(self._del_edge_msg(e.from_node.name, e.to_node.name))
                self.graph.del_edge(e.from_node.name, e.to_node.name)
        for n in unreachable:
            if any(n.name in other.edges for other in self.graph.nodes()):
                return
            if self.strict_subnets and self.subnets.owned_by(n.name):
                continue
            self.graph.remove_node(n.name)

    # --- helpers --------------------------------------------------------------------------

    def _add_edge_msg(self, e) -> AddEdge:
        addr, port = _addr_fields(e.address)
        local = {}
        if e.local_address is not None:
            local = dict(zip(("local_address", "local_port"), _addr_fields(e.local_address)))
        return AddEdge(new_nonce(self._rng), e.from_node.name, e.to_node.name, addr, port,
                       e.options & 0xFFFFFFFF, e.weight, **local)

    def _del_edge_msg(self, from_name, to_name) -> DelEdge:
        return DelEdge(new_nonce(self._rng), from_name, to_name)

    def _send(self, conn, msg):
        self._actions.append(SendTo(conn, msg=msg))

    def _send_all(self, msg):
        for c in self.active_connections():
            self._send(c, msg)

    def _forward(self, from_conn, line):
        """Flood a received request text to every other active connection."""
        for c in self.active_connections():
            if c is not from_conn:
                self._actions.append(SendTo(c, line=bytes(line)))

    def _send_everything(self, conn):
        """tinc's send_everything: per node by name, its subnets then its edges."""
        if self.tunnel_server:
            for s in self.subnets.owned_by(self.myself):
                self._send(conn, AddSubnet(new_nonce(self._rng), self.myself, s))
            return
        for n in self.graph.nodes():
            for s in self.subnets.owned_by(n.name):
                self._send(conn, AddSubnet(new_nonce(self._rng), n.name, s))
            for e in n.sorted_edges():
                self._send(conn, self._add_edge_msg(e))

    def _subnet_script(self, script, s: Subnet):
        env = {"NODE": s.owner, "SUBNET": s.text_without_weight(), "WEIGHT": s.weight_text()}
        if s.owner != self.myself:
            n = self.graph.node(s.owner)
            addr, port = sockaddr_strings(n.address if n is not None else None)
            env.update(REMOTEADDRESS=addr, REMOTEPORT=port)
        self._actions.append(RunScript(script, env))

    def _run_graph(self, now):
        for ev in self.graph.run(now):
            if isinstance(ev, NodeUdpAddressChanged):
                self._actions.append(UdpAddressReset(ev.name))
            elif isinstance(ev, (NodeBecameReachable, NodeBecameUnreachable)):
                up = isinstance(ev, NodeBecameReachable)
                word = "up" if up else "down"
                self._log(1 if up else 1, f"Node {ev.name} became "
                          f"{'reachable' if up else 'unreachable'}")
                self._actions.append(TunnelReset(ev.name))
                addr, port = sockaddr_strings(ev.address)
                env = {"NODE": ev.name, "REMOTEADDRESS": addr, "REMOTEPORT": port}
                self._actions.append(RunScript(f"host-{word}", dict(env)))
                self._actions.append(RunScript(f"hosts/{ev.name}-{word}", dict(env)))
                for s in self.subnets.owned_by(ev.name):
                    senv = {"NODE": ev.name, "SUBNET": s.text_without_weight(),
                            "WEIGHT": s.weight_text(), "REMOTEADDRESS": addr,
                            "REMOTEPORT": port}
                    self._actions.append(RunScript(f"subnet-{word}", senv))
            # MeshBecameEmpty/NonEmpty matter only with DeviceStandby and a device.
