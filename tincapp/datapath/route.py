"""Routing decisions for VPN frames: tinc 1.1's src/route.c and broadcast_packet (data-path.md
section 10), without I/O.

Owns: the routing policy (router/switch/hub mode, Forwarding, DirectOnly, DecrementTTL,
Broadcast, TunnelServer), the ICMP rate limit, and the expiry times of MAC addresses learnt in
switch mode. Reads (never changes) the Graph and the SubnetTable; the meta-level Node owns
those, so a learnt or expired MAC comes out as an AnnounceSubnet/WithdrawSubnet action that the
caller applies.

`route(source, frame, now)` returns actions; the caller performs them in order:

* DeliverToDevice(frame)       write to our device (router mode with TAP: the device writer
                               rewrites the MACs, data-path.md 1.1)
* SendToNode(name, frame, priority)
                               unicast to that node's tunnel (data-path.md 6.1 and 9); the
                               router has already checked that the node is reachable
* AnnounceSubnet(subnet)       switch mode learnt a MAC: add it as our subnet, send ADD_SUBNET
                               to every active connection, run subnet-up
* WithdrawSubnet(subnet)       a learnt MAC expired (handle_deadline): send DEL_SUBNET to
                               every active connection, then remove it (COMPAT: tinc's
                               age_subnets runs no subnet-down script)
* Dropped(reason)              the frame (or a copy) went nowhere; for counters only

Broadcasts are expanded here. For Broadcast = mst the router asks `mst_peers()` for the names
of the peers whose active meta connection (one with an edge) is part of the minimum spanning
tree, i.e. `[node.connection_name(c) for c in node.active_connections()
if c in graph.mst_connections]`.

In switch mode the caller also reports accepted ADD_SUBNETs of other nodes through
`subnet_added(subnet)` (roaming MAC handoff), and drives `next_deadline()`/`handle_deadline()`.

Fast path: `fast_route(source, frame)` answers, for a frame whose full decision would be "send
it unchanged to node X", a FastRoute the caller may cache; see its docstring for the rules.

Times are the caller's monotonic `now`. Logging goes to `log(level, text)` at tinc's
DEBUG_TRAFFIC level (5) only. Not thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

from tincapp.datapath import packets as P
from tincapp.mesh.graph import OPTION_CLAMP_MSS
from tincapp.mesh.subnets import Subnet, SubnetType

DEBUG_TRAFFIC = 5
DEFAULT_MTU = 1518
MAC_AGE_INTERVAL_S = 10.0      # tinc's age_subnets timer
LEARNT_MAC_WEIGHT = 10
ICMP_RATE_PER_S = 3

# Smallest sizes routing never fragments or refuses (tinc route_ipv4/route_ipv6).
IPV4_MIN_MTU = 590
IPV6_MIN_MTU = 1294

ROUTER_MODES = ("router", "switch", "hub")
FORWARDING_MODES = ("internal", "off", "kernel")
BROADCAST_MODES = ("mst", "direct", "no")

# Drop reasons (Dropped.reason).
DROP_SHORT = "too short"
DROP_LOOP = "looping back to its source"
DROP_ROUTING_LOOP = "routing loop"
DROP_UNKNOWN_TYPE = "unknown ethertype"
DROP_UNREACHABLE = "node unreachable"
DROP_ICMP = "answered with ICMP"
DROP_ICMP_RATELIMIT = "ICMP rate limit"
DROP_ARP = "ARP request not answered"
DROP_NDP = "neighbour solicitation not answered"
DROP_FORWARDING_OFF = "forwarding off"
DROP_DIRECT_ONLY = "not directly reachable"
DROP_BAD_FRAGMENT = "cannot fragment"
DROP_TTL = "TTL exceeded"


# --- actions --------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DeliverToDevice:
    frame: bytes


@dataclass(frozen=True, slots=True)
class SendToNode:
    name: str
    frame: bytes
    priority: int = 0        # with PriorityInheritance: the inner TOS/traffic class


@dataclass(frozen=True, slots=True)
class AnnounceSubnet:
    subnet: Subnet


@dataclass(frozen=True, slots=True)
class WithdrawSubnet:
    subnet: Subnet


@dataclass(frozen=True, slots=True)
class Dropped:
    reason: str


@dataclass(frozen=True, slots=True)
class FastRoute:
    """A cached "send unchanged to `name`" decision for one (source, ethertype, destination).

    Valid for a frame when `accepts(frame)`; otherwise the frame goes through Router.route.
    """

    name: str
    ethertype: int
    max_len: int             # longer frames need fragmentation or an ICMP error
    clamp_mss: bool          # via clamps MSS: TCP SYNs (and IP-in-IP) need route()

    def accepts(self, frame) -> bool:
        n = len(frame)
        if n > self.max_len:
            return False
        if self.ethertype == P.ETH_P_IP:
            if n < P.ETH_HLEN + P.IP_HLEN:
                return False
        elif n < P.ETH_HLEN + P.IP6_HLEN or P.is_neighbor_solicitation(frame):
            return False
        return not (self.clamp_mss and needs_clamping(frame))


def needs_clamping(frame) -> bool:
    """An IPv4/IPv6 frame clamp_mss may change: IP-in-IP, or a TCP SYN (only SYNs carry the
    MSS option), or TCP too short to tell. Everything else passes a clamping node unchanged
    (pyx/fastpath.pyx's _needs_clamping is the same test)."""
    ip = P.ETH_HLEN
    if frame[ip] >> 4 == 4:
        if frame[ip + P.IP_P] == P.IPPROTO_IPIP:
            return True
        if frame[ip + P.IP_P] != P.IPPROTO_TCP:
            return False
        tcp = ip + (frame[ip] & 15) * 4
    else:
        if frame[ip + P.IP6_NXT] != P.IPPROTO_TCP:
            return False
        tcp = ip + P.IP6_HLEN
    return len(frame) <= tcp + P.TCP_FLAGS or bool(frame[tcp + P.TCP_FLAGS] & P.TCP_SYN)


def _no_peers() -> Iterable[str]:
    return ()


class Router:
    """tinc's route() for node `myself`. Single-threaded."""

    def __init__(self, myself: str, graph, subnets, *, mode: str = "router",
                 forwarding: str = "internal", direct_only: bool = False,
                 decrement_ttl: bool = False, broadcast: str = "mst",
                 tunnel_server: bool = False, mac_expire_s: float = 600,
                 priority_inheritance: bool = False,
                 mtu_of: Optional[Callable[[str], int]] = None,
                 mst_peers: Callable[[], Iterable[str]] = _no_peers,
                 local_address_of: Optional[Callable[[bytes], Optional[bytes]]] = None,
                 log: Optional[Callable[[int, str], None]] = None):
        """`mtu_of(name)`: the node's current `mtu` (data-path.md 8.6; 1518 until known, and
        for us). `local_address_of(addr)`: our own address the OS would use to reach the 4- or
        16-byte `addr`, or None (time-exceeded replies use it, as tinc does).
        """
        if mode not in ROUTER_MODES:
            raise ValueError(f"unknown routing mode {mode!r}")
        if forwarding not in FORWARDING_MODES:
            raise ValueError(f"unknown forwarding mode {forwarding!r}")
        if broadcast not in BROADCAST_MODES:
            raise ValueError(f"unknown broadcast mode {broadcast!r}")
        self.myself = myself
        self.graph = graph
        self.subnets = subnets
        self.mode = mode
        self.forwarding = forwarding
        self.direct_only = direct_only
        self.decrement_ttl = decrement_ttl
        self.broadcast = broadcast
        self.tunnel_server = tunnel_server
        self.mac_expire_s = mac_expire_s
        self.priority_inheritance = priority_inheritance
        self._mtu_of = mtu_of or (lambda name: DEFAULT_MTU)
        self._mst_peers = mst_peers
        self._local_address_of = local_address_of
        self._log = log
        # ICMP rate limit: tinc counts per wall-clock second.
        self._icmp_second: Optional[int] = None
        self._icmp_count = 0
        # Learnt MACs (switch mode) -> expiry time; the age timer runs while any exist.
        self._learnt: dict[bytes, float] = {}
        self._age_at: Optional[float] = None

    # --- entry points ----------------------------------------------------------------------

    def route(self, source: str, frame, now: float) -> list:
        """Called for every frame from our device (`source` = us) or from another node
        (`source` = the node that originated it)."""
        frame = bytes(frame)
        out: list = []
        if self.forwarding == "kernel" and source != self.myself:
            out.append(DeliverToDevice(frame))
            return out
        if len(frame) < P.ETH_HLEN:
            out.append(Dropped(DROP_SHORT))
            return out
        if self.mode == "router":
            etype = P.ethertype(frame)
            if etype == P.ETH_P_IP:
                self._route_ipv4(source, frame, now, out)
            elif etype == P.ETH_P_IPV6:
                self._route_ipv6(source, frame, now, out)
            elif etype == P.ETH_P_ARP:
                self._route_arp(source, frame, out)
            else:
                self._debug(f"Cannot route packet from {source}: unknown type {etype:x}")
                out.append(Dropped(DROP_UNKNOWN_TYPE))
        elif self.mode == "switch":
            self._route_mac(source, frame, now, out)
        else:
            self._route_broadcast(source, frame, now, out)
        return out

    def next_deadline(self) -> Optional[float]:
        return self._age_at

    def handle_deadline(self, now: float) -> list:
        """Called when next_deadline() has passed: withdraw learnt MACs whose time is up
        (tinc age_subnets, every 10 s while learnt MACs exist)."""
        out: list = []
        if self._age_at is None or now < self._age_at:
            return out
        # COMPAT: tinc walks our subnets in tree order, i.e. by MAC address.
        for mac in sorted(self._learnt):
            if self._learnt[mac] < now:
                del self._learnt[mac]
                self._debug(f"Subnet {_mac_text(mac)} expired")
                out.append(WithdrawSubnet(self._mac_subnet(mac)))
        self._age_at = now + MAC_AGE_INTERVAL_S if self._learnt else None
        return out

    def subnet_added(self, subnet: Subnet) -> None:
        """Called when an ADD_SUBNET from another node has been accepted.

        COMPAT: fast handoff of roaming MACs (protocol_subnet.c): if another node now claims a
        MAC we learnt, ours expires at the next age run (within 10 s) instead of after
        MACExpire.
        """
        if (subnet.type == SubnetType.MAC and subnet.owner != self.myself
                and subnet.address in self._learnt):
            self._learnt[subnet.address] = float("-inf")

    def learnt_macs(self) -> dict[bytes, float]:
        """MAC -> expiry time, for dumps and tests."""
        return dict(self._learnt)

    def fast_route(self, source: str, frame) -> Optional[FastRoute]:
        """The decision for `frame` if it is a plain unchanged unicast, else None.

        Only router mode, IPv4/IPv6, Forwarding != kernel for other sources, no DecrementTTL
        on transit, no PriorityInheritance, owner reachable and not us, no loop, DirectOnly
        satisfied, and `frame` itself `accepts`-ed (size within MTU, not an MSS-clamping case,
        not a neighbour solicitation).

        The caller may cache the result under `fast_route_key(source, frame)` and, for a later
        frame with the same key, send it to `.name` without calling route() when
        `.accepts(frame)`. The cache must be flushed whenever the graph runs (a new
        `graph.generation`: reachability, via/nexthop and node options change there), whenever
        a subnet is added to or removed from the SubnetTable, and whenever the MTU of any node
        changes (mtu_of). A None answer must not be cached.
        """
        if self.mode != "router" or self.priority_inheritance:
            return None
        if len(frame) < P.ETH_HLEN:
            return None
        me = self.myself
        if source != me and (self.forwarding != "internal" or self.decrement_ttl):
            return None
        etype = P.ethertype(frame)
        if etype == P.ETH_P_IP:
            if len(frame) < P.ETH_HLEN + P.IP_HLEN:
                return None
            subnet = self.subnets.lookup_ipv4(bytes(frame[30:34]))
            floor = IPV4_MIN_MTU
        elif etype == P.ETH_P_IPV6:
            if len(frame) < P.ETH_HLEN + P.IP6_HLEN:
                return None
            subnet = self.subnets.lookup_ipv6(bytes(frame[38:54]))
            floor = IPV6_MIN_MTU
        else:
            return None
        if subnet is None or subnet.owner is None or subnet.owner in (source, me):
            return None
        owner = self.graph.node(subnet.owner)
        if owner is None or not owner.reachable:
            return None
        via = self._via(owner)
        if via is None or via.name == source or via.name == me:
            return None
        if self.direct_only and owner is not via:
            return None
        fast = FastRoute(owner.name, etype, max(self._mtu_of(via.name), floor),
                         bool(via.options & OPTION_CLAMP_MSS))
        return fast if fast.accepts(frame) else None

    @staticmethod
    def fast_route_key(source: str, frame) -> tuple:
        """(source, ethertype, destination address) for a router-mode IPv4/IPv6 frame."""
        if P.ethertype(frame) == P.ETH_P_IP:
            return (source, P.ETH_P_IP, bytes(frame[30:34]))
        return (source, P.ETH_P_IPV6, bytes(frame[38:54]))

    # --- router mode -----------------------------------------------------------------------

    def _route_ipv4(self, source, frame, now, out):
        if len(frame) < P.ETH_HLEN + P.IP_HLEN:
            out.append(Dropped(DROP_SHORT))
            return
        me = self.myself
        subnet = self.subnets.lookup_ipv4(frame[30:34])
        if subnet is None:
            self._debug(f"Cannot route packet from {source}: unknown IPv4 destination address "
                        f"{'.'.join(str(b) for b in frame[30:34])}")
            self._icmp4(source, frame, P.ETH_HLEN, P.ICMP_DEST_UNREACH, P.ICMP_NET_UNKNOWN,
                        now, out)
            return
        if subnet.owner is None:
            self._route_broadcast(source, frame, now, out)
            return
        if subnet.owner == source:
            self._debug(f"Packet looping back to {source}!")
            out.append(Dropped(DROP_LOOP))
            return
        owner = self.graph.node(subnet.owner)
        if owner is None or not owner.reachable:
            self._icmp4(source, frame, P.ETH_HLEN, P.ICMP_DEST_UNREACH, P.ICMP_NET_UNREACH,
                        now, out)
            return
        if self.forwarding == "off" and source != me and owner.name != me:
            self._icmp4(source, frame, P.ETH_HLEN, P.ICMP_DEST_UNREACH, P.ICMP_NET_ANO,
                        now, out)
            return
        if self.decrement_ttl and source != me and owner.name != me:
            frame = self._do_decrement_ttl(source, frame, now, out)
            if frame is None:
                return
        priority = frame[15] if self.priority_inheritance else 0
        via = self._via(owner)
        if via.name == source:
            self._debug(f"Routing loop for packet from {source}!")
            out.append(Dropped(DROP_ROUTING_LOOP))
            return
        if self.direct_only and owner is not via:
            self._icmp4(source, frame, P.ETH_HLEN, P.ICMP_DEST_UNREACH, P.ICMP_NET_ANO,
                        now, out, priority)
            return
        if via.name != me:
            limit = max(self._mtu_of(via.name), IPV4_MIN_MTU)
            if len(frame) > limit:
                self._debug(f"Packet for {owner.name} length {len(frame)} larger than MTU "
                            f"{self._mtu_of(via.name)}")
                if frame[P.ETH_HLEN + P.IP_OFF] & (P.IP_DF >> 8):
                    self._icmp4(source, frame[:limit], P.ETH_HLEN, P.ICMP_DEST_UNREACH,
                                P.ICMP_FRAG_NEEDED, now, out, priority,
                                next_mtu=limit - P.ETH_HLEN)
                else:
                    self._fragment(via, frame, P.ETH_HLEN, priority, out)
                return
        frame = self._clamp_mss(source, via, frame)
        self._send(owner.name, frame, out, priority)

    def _route_ipv6(self, source, frame, now, out):
        if len(frame) < P.ETH_HLEN + P.IP6_HLEN:
            out.append(Dropped(DROP_SHORT))
            return
        if P.is_neighbor_solicitation(frame):
            self._route_neighbor_solicitation(source, frame, out)
            return
        me = self.myself
        subnet = self.subnets.lookup_ipv6(frame[38:54])
        if subnet is None:
            self._debug(f"Cannot route packet from {source}: unknown IPv6 destination address "
                        f"{bytes(frame[38:54]).hex()}")
            self._icmp6(source, frame, P.ETH_HLEN, P.ICMP6_DST_UNREACH,
                        P.ICMP6_DST_UNREACH_ADDR, now, out)
            return
        if subnet.owner is None:
            self._route_broadcast(source, frame, now, out)
            return
        if subnet.owner == source:
            self._debug(f"Packet looping back to {source}!")
            out.append(Dropped(DROP_LOOP))
            return
        owner = self.graph.node(subnet.owner)
        if owner is None or not owner.reachable:
            self._icmp6(source, frame, P.ETH_HLEN, P.ICMP6_DST_UNREACH,
                        P.ICMP6_DST_UNREACH_NOROUTE, now, out)
            return
        if self.forwarding == "off" and source != me and owner.name != me:
            self._icmp6(source, frame, P.ETH_HLEN, P.ICMP6_DST_UNREACH,
                        P.ICMP6_DST_UNREACH_ADMIN, now, out)
            return
        if self.decrement_ttl and source != me and owner.name != me:
            frame = self._do_decrement_ttl(source, frame, now, out)
            if frame is None:
                return
        priority = ((frame[14] & 0x0F) << 4 | frame[15] >> 4) if self.priority_inheritance else 0
        via = self._via(owner)
        if via.name == source:
            self._debug(f"Routing loop for packet from {source}!")
            out.append(Dropped(DROP_ROUTING_LOOP))
            return
        if self.direct_only and owner is not via:
            self._icmp6(source, frame, P.ETH_HLEN, P.ICMP6_DST_UNREACH,
                        P.ICMP6_DST_UNREACH_ADMIN, now, out, priority)
            return
        if via.name != me:
            limit = max(self._mtu_of(via.name), IPV6_MIN_MTU)
            if len(frame) > limit:
                self._debug(f"Packet for {owner.name} length {len(frame)} larger than MTU "
                            f"{self._mtu_of(via.name)}")
                self._icmp6(source, frame[:limit], P.ETH_HLEN, P.ICMP6_PACKET_TOO_BIG, 0,
                            now, out, priority, mtu=limit - P.ETH_HLEN)
                return
        frame = self._clamp_mss(source, via, frame)
        self._send(owner.name, frame, out, priority)

    def _route_arp(self, source, frame, out):
        """Proxy ARP (tinc route_arp): answer requests from our device for other nodes'
        addresses."""
        if len(frame) < P.ETH_HLEN + P.ARP_LEN:
            out.append(Dropped(DROP_SHORT))
            return
        if source != self.myself:
            self._debug(f"Got ARP request from {source} while in router mode!")
            out.append(Dropped(DROP_ARP))
            return
        target = P.arp_request_target(frame)
        if target is None:
            self._debug("Cannot route packet: received unknown type ARP request")
            out.append(Dropped(DROP_ARP))
            return
        subnet = self.subnets.lookup_ipv4(target)
        # COMPAT: addresses of unreachable nodes and of broadcast subnets are answered too.
        if subnet is None or subnet.owner == self.myself:
            out.append(Dropped(DROP_ARP))
            return
        # tinc runs DecrementTTL here too, which leaves ARP untouched.
        out.append(DeliverToDevice(P.arp_reply(frame)))

    def _route_neighbor_solicitation(self, source, frame, out):
        """Proxy NDP (tinc route_neighborsol)."""
        if len(frame) < P.ETH_HLEN + P.IP6_HLEN + P.ND_NS_LEN:
            out.append(Dropped(DROP_SHORT))
            return
        if source != self.myself:
            self._debug(f"Got neighbor solicitation request from {source} while in router "
                        "mode!")
            out.append(Dropped(DROP_NDP))
            return
        target = P.neighbor_solicitation_target(frame)
        if target is None:
            self._debug("Cannot route packet: bad neighbor solicitation request")
            out.append(Dropped(DROP_NDP))
            return
        subnet = self.subnets.lookup_ipv6(target)
        if subnet is None or subnet.owner == self.myself:
            out.append(Dropped(DROP_NDP))
            return
        # DEVIATION: with DecrementTTL tinc decrements the solicitation's hop limit before
        # turning it into the advertisement, which receivers then discard (RFC 4861 requires
        # 255). We answer with the request's hop limit unchanged.
        out.append(DeliverToDevice(P.neighbor_advertisement(frame)))

    # --- switch and hub modes --------------------------------------------------------------

    def _route_mac(self, source, frame, now, out):
        me = self.myself
        if source == me:
            self._learn_mac(bytes(frame[P.ETH_SRC:P.ETH_SRC + 6]), now, out)
        subnet = self.subnets.lookup_mac(frame[P.ETH_DST:P.ETH_DST + 6])
        if subnet is None or subnet.owner is None:
            self._route_broadcast(source, frame, now, out)
            return
        if subnet.owner == source:
            self._debug(f"Packet looping back to {source}!")
            out.append(Dropped(DROP_LOOP))
            return
        if self.forwarding == "off" and source != me and subnet.owner != me:
            out.append(Dropped(DROP_FORWARDING_OFF))
            return
        if self.decrement_ttl and source != me and subnet.owner != me:
            frame = self._do_decrement_ttl(source, frame, now, out)
            if frame is None:
                return
        etype = P.ethertype(frame)
        priority = 0
        if self.priority_inheritance:
            if etype == P.ETH_P_IP and len(frame) >= P.ETH_HLEN + P.IP_HLEN:
                priority = frame[15]
            elif etype == P.ETH_P_IPV6 and len(frame) >= P.ETH_HLEN + P.IP6_HLEN:
                priority = (frame[14] & 0x0F) << 4 | frame[15] >> 4
        owner = self.graph.node(subnet.owner)
        via = self._via(owner) if owner is not None else None
        if self.direct_only and owner is not via:
            out.append(Dropped(DROP_DIRECT_ONLY))
            return
        if via is not None and via.name != me:
            mtu = self._mtu_of(via.name)
            if len(frame) > mtu:
                self._debug(f"Packet for {subnet.owner} length {len(frame)} larger than MTU "
                            f"{mtu}")
                etype, ethlen = P.link_header(frame)
                if etype == P.ETH_P_IP and len(frame) > P.IP_MSS + ethlen:
                    if frame[ethlen + P.IP_OFF] & (P.IP_DF >> 8):
                        self._icmp4(source, frame[:mtu], ethlen, P.ICMP_DEST_UNREACH,
                                    P.ICMP_FRAG_NEEDED, now, out, priority,
                                    next_mtu=mtu - ethlen)
                    else:
                        self._fragment(via, frame, ethlen, priority, out)
                    return
                if etype == P.ETH_P_IPV6 and len(frame) > 1280 + ethlen:
                    self._icmp6(source, frame[:mtu], ethlen, P.ICMP6_PACKET_TOO_BIG, 0, now,
                                out, priority, mtu=mtu - ethlen)
                    return
        if via is not None:
            frame = self._clamp_mss(source, via, frame)
        self._send(subnet.owner, frame, out, priority)

    def _learn_mac(self, mac: bytes, now: float, out):
        """tinc learn_mac: a source MAC seen on our device becomes (or stays) our subnet."""
        if mac in self._learnt:
            self._learnt[mac] = now + self.mac_expire_s
            return
        # A MAC configured as our Subnet (or, via tinc's shared MAC cache, one just looked up
        # for another node) is not learnt.
        if self.subnets.lookup_mac(mac, owner=self.myself) is not None:
            return
        self._debug(f"Learned new MAC address {_mac_text(mac)}")
        self._learnt[mac] = now + self.mac_expire_s
        out.append(AnnounceSubnet(self._mac_subnet(mac)))
        # DEVIATION: tinc re-arms the 10 s age timer on every new MAC, so a steady stream of
        # new MACs postpones expiry indefinitely; we arm it only when it is idle.
        if self._age_at is None:
            self._age_at = now + MAC_AGE_INTERVAL_S

    def _mac_subnet(self, mac: bytes) -> Subnet:
        return Subnet(SubnetType.MAC, mac, 48, LEARNT_MAC_WEIGHT, self.myself)

    # --- broadcast (data-path.md 10.6) -----------------------------------------------------

    def _route_broadcast(self, source, frame, now, out):
        """tinc route_broadcast + broadcast_packet."""
        me = self.myself
        if self.decrement_ttl and source != me:
            frame = self._do_decrement_ttl(source, frame, now, out)
            if frame is None:
                return
        frame = bytes(frame)
        if source != me:
            out.append(DeliverToDevice(frame))
        # COMPAT: in TunnelServer mode the MST may be incomplete and could loop.
        if self.tunnel_server or self.broadcast == "no":
            return
        self._debug(f"Broadcasting packet of {len(frame)} bytes from {source}")
        if self.broadcast == "mst":
            # Not back over the connection the frame came in on (source's nexthop's).
            exclude = None
            if source != me:
                from_node = self.graph.node(source)
                if from_node is not None and from_node.nexthop is not None:
                    exclude = from_node.nexthop.name
            for peer in self._mst_peers():
                if peer != exclude:
                    self._send(peer, frame, out)
        elif source == me:
            # direct: only our own broadcasts, to every node one hop away.
            myself = self.graph.myself
            for n in self.graph.nodes():
                if (n.reachable and n is not myself
                        and (n.via is n or (n.via is myself and n.nexthop is n))):
                    self._send(n.name, frame, out)

    # --- shared steps ----------------------------------------------------------------------

    def _via(self, owner):
        """The node a frame for `owner` is handed to: its via, or its nexthop if via is us."""
        return owner.nexthop if owner.via is self.graph.myself else owner.via

    def _send(self, name: str, frame, out, priority: int = 0):
        """tinc send_packet: us -> device; unreachable -> drop; else the node's tunnel."""
        frame = bytes(frame)
        if name == self.myself:
            out.append(DeliverToDevice(frame))
            return
        n = self.graph.node(name)
        if n is None or not n.reachable:
            self._debug(f"Node {name} is not reachable")
            out.append(Dropped(DROP_UNREACHABLE))
            return
        out.append(SendToNode(name, frame, priority))

    def _fragment(self, via, frame, ethlen, priority, out):
        fragments = P.fragment_ipv4(frame, ethlen, self._mtu_of(via.name))
        if fragments is None:
            self._debug(f"Cannot fragment packet of {len(frame)} bytes")
            out.append(Dropped(DROP_BAD_FRAGMENT))
            return
        self._debug(f"Fragmenting packet of {len(frame)} bytes to {via.name}")
        # COMPAT: fragments go to `via`, which routes them on by their destination address.
        for f in fragments:
            self._send(via.name, f, out, priority)

    def _clamp_mss(self, source, via, frame):
        if not via.options & OPTION_CLAMP_MSS:
            return frame
        mtu = self._mtu_of(source)
        if via.name != self.myself:
            mtu = min(mtu, self._mtu_of(via.name))
        buf = bytearray(frame)
        changed = P.clamp_mss(buf, mtu)
        if changed is None:
            return frame
        self._debug(f"Clamping MSS of packet from {source} to {via.name} to {changed[1]}")
        return bytes(buf)

    def _do_decrement_ttl(self, source, frame, now, out):
        """tinc do_decrement_ttl: the frame with TTL/hop limit one lower, or None if it ran
        out (and then an ICMP time exceeded may have been queued)."""
        etype, ethlen = P.link_header(frame)
        if etype == P.ETH_P_IP:
            if len(frame) < ethlen + P.IP_HLEN:
                out.append(Dropped(DROP_SHORT))
                return None
            if frame[ethlen + P.IP_TTL] <= 1:
                # DEVIATION: tinc looks for the ICMP type at frame offset ethlen + 32 (inside
                # the quoted header); we look at the ICMP header itself, ethlen + 20.
                icmp_type_at = ethlen + P.IP_HLEN
                is_time_exceeded = (frame[ethlen + P.IP_P] == P.IPPROTO_ICMP
                                    and len(frame) > icmp_type_at
                                    and frame[icmp_type_at] == P.ICMP_TIME_EXCEEDED)
                if is_time_exceeded:
                    out.append(Dropped(DROP_TTL))
                else:
                    src = self._local_address(frame[ethlen + P.IP_SRC:ethlen + P.IP_SRC + 4])
                    self._icmp4(source, frame, ethlen, P.ICMP_TIME_EXCEEDED, P.ICMP_EXC_TTL,
                                now, out, src=src)
                return None
            buf = bytearray(frame)
            P.decrement_ipv4_ttl(buf, ethlen)
            return bytes(buf)
        if etype == P.ETH_P_IPV6:
            if len(frame) < ethlen + P.IP6_HLEN:
                out.append(Dropped(DROP_SHORT))
                return None
            if frame[ethlen + P.IP6_HLIM] <= 1:
                icmp_type_at = ethlen + P.IP6_HLEN
                is_time_exceeded = (frame[ethlen + P.IP6_NXT] == P.IPPROTO_ICMPV6
                                    and len(frame) > icmp_type_at
                                    and frame[icmp_type_at] == P.ICMP6_TIME_EXCEEDED)
                if is_time_exceeded:
                    out.append(Dropped(DROP_TTL))
                else:
                    src = self._local_address(
                        frame[ethlen + P.IP6_SRC:ethlen + P.IP6_SRC + 16])
                    self._icmp6(source, frame, ethlen, P.ICMP6_TIME_EXCEEDED,
                                P.ICMP6_TIME_EXCEED_TRANSIT, now, out, src=src)
                return None
            buf = bytearray(frame)
            buf[ethlen + P.IP6_HLIM] -= 1
            return bytes(buf)
        return frame

    def _local_address(self, addr) -> Optional[bytes]:
        if self._local_address_of is None:
            return None
        return self._local_address_of(bytes(addr))

    def _icmp_allowed(self, now: float) -> bool:
        """tinc ratelimit(3): at most 3 generated ICMP messages per whole second of `now`."""
        second = int(now)
        if second != self._icmp_second:
            self._icmp_second = second
            self._icmp_count = 0
        if self._icmp_count >= ICMP_RATE_PER_S:
            return False
        self._icmp_count += 1
        return True

    def _icmp4(self, source, frame, ethlen, type, code, now, out, priority=0, *,
               next_mtu=0, src=None):
        if not self._icmp_allowed(now):
            out.append(Dropped(DROP_ICMP_RATELIMIT))
            return
        reply = P.icmp4_error(frame, ethlen, type, code, next_mtu=next_mtu, src=src)
        out.append(Dropped(DROP_ICMP))
        self._send(source, reply, out, priority)

    def _icmp6(self, source, frame, ethlen, type, code, now, out, priority=0, *, mtu=0,
               src=None):
        if not self._icmp_allowed(now):
            out.append(Dropped(DROP_ICMP_RATELIMIT))
            return
        reply = P.icmp6_error(frame, ethlen, type, code, mtu=mtu, src=src)
        out.append(Dropped(DROP_ICMP))
        self._send(source, reply, out, priority)

    def _debug(self, text: str) -> None:
        if self._log is not None:
            self._log(DEBUG_TRAFFIC, text)


def _mac_text(mac: bytes) -> str:
    return ":".join(f"{b:x}" for b in mac)
