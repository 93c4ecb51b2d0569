"""The UDP-tunnel core: one datagram SPTPS session per peer node, and how VPN packets travel.

tinc's protocol_key.c (REQ_KEY/ANS_KEY for SPTPS nodes), the SPTPS half of net_packet.c
(send_sptps_data, receive_udppacket, receive_tcppacket_sptps, try_tx, try_sptps) and
protocol_misc.c (UDP_INFO/MTU_INFO). meta-protocol.md 6-9 and data-path.md 2-9 have the rules.

Owns: a Tunnel per peer node (its session, key state, compression asked for, UDP address
confirmation and path MTU state, counters) and the node-ID table. Does not own the graph, the
subnets or the meta connections (it asks `mesh`, the node core), routing decisions (`router`),
sockets or the device: it hands the shell actions (requests to send toward a node, PACKET and
SPTPS_PACKET on a meta connection, UDP datagrams, frames for the device) drained with
pop_actions(), and fills the UDP and device batches the shell flushes.

No I/O, no clock (`now` is an argument), no global randomness (`rng(n)`). Not thread-safe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from tincapp import b64
from tincapp.datapath import compress
from tincapp.datapath import restart
from tincapp.datapath.pmtu import MIN_PROBE_SIZE, PathMtu, PmtuConfig, build_probe_request
from tincapp.datapath.restart import RestartConfig, RestartPolicy
from tincapp.errors import Base64Error, SptpsError, TincappError, WireError
from tincapp.datapath.packets import ETH_HLEN, MAXSIZE, MTU
from tincapp.mesh.graph import SockAddr, node_id, option_version
from tincapp.mesh.node import address_from_text
from tincapp.meta.events import NODE_ID_LEN
from tincapp.meta.messages import (OPTION_PMTU_DISCOVERY, OPTION_TCPONLY, AnsKey, AnsPubkey,
                                   MtuInfo, ReqKeySptpsPacket, ReqPubkey, ReqSptpsStart, UdpInfo)
from tincapp.sptps.session import (DEFAULT_REPLAY_WINDOW, HandshakeCompleted, RecordReceived,
                                   SptpsSession)
from tincapp.sptps import wire
from tincapp.sptps.wire import DATAGRAM_OVERHEAD

# SPTPS record types of the UDP tunnel (data-path.md 2).
PKT_NORMAL = 0
PKT_COMPRESSED = 1
PKT_MAC = 2
PKT_PROBE = 4
HANDSHAKE = wire.HANDSHAKE           # 128: handshake records travel as ANS_KEY

ID_PREFIX_LEN = 2 * NODE_ID_LEN
ZERO_ID = bytes(NODE_ID_LEN)

IP_MIN_MTU = 590                     # route.c never refuses or fragments below this
ETHERTYPE_IPV4 = b"\x08\x00"
ETHERTYPE_IPV6 = b"\x86\xdd"

# Minor versions that introduced features (meta-protocol.md 11 and data-path.md 4).
MINOR_SPTPS = 2
MINOR_PROBE_REPLY_2 = 3
MINOR_RELAY_IDS = 4
MINOR_UDP_INFO = 5
MINOR_MTU_INFO = 6
MINOR_SPTPS_PACKET = 7


def _sptps_data(text: str) -> bytes:
    """The bytes of a base64 SPTPS argument; b"" (which callers refuse, as tinc refuses an
    empty one) when it is not base64."""
    try:
        return b64.decode(text)
    except Base64Error:
        return b""


def tunnel_label(initiator: str, responder: str) -> bytes:
    """COMPAT: the label includes the terminating NUL (tinc passes sizeof the buffer)."""
    return f"tinc UDP key expansion {initiator} {responder}".encode() + b"\0"


# --- actions (drained by the shell, in order) -------------------------------------------------

@dataclass(frozen=True)
class SendToward:
    """Send `msg` on the meta connection to `to`'s next hop (tinc: to->nexthop->connection)."""
    to: str
    msg: object


@dataclass(frozen=True)
class SendPacket:
    """Send `frame` as PACKET (17) on our meta connection to neighbour `to`."""
    to: str
    frame: bytes


@dataclass(frozen=True)
class SendSptpsPacket:
    """Send `data` (dst id, src id, datagram) as binary SPTPS_PACKET (21) on our meta
    connection to neighbour `via`."""
    via: str
    data: bytes


@dataclass(frozen=True)
class SendUdp:
    """Send one UDP datagram to `address` (SockAddr). If the OS says EMSGSIZE, report
    udp_send_too_big(relay, payload_len) (data-path.md 8.5)."""
    address: SockAddr
    data: bytes
    relay: str
    payload_len: int


@dataclass(frozen=True)
class SavePublicKey:
    """Append `Ed25519PublicKey = ...` for `name` to hosts/NAME (ANS_PUBKEY, trust on first
    use)."""
    name: str
    public: bytes


@dataclass(frozen=True)
class DeliverFrame:
    """A frame that arrived through a tunnel from `source`, for routing (the router decides
    between our device, another node and a broadcast)."""
    source: str
    frame: bytes


@dataclass
class TunnelCounters:
    in_packets: int = 0
    in_bytes: int = 0
    out_packets: int = 0
    out_bytes: int = 0


class Tunnel:
    """The data-plane state of one peer node (tinc's node_t fields about its UDP tunnel)."""

    __slots__ = ("name", "id", "session", "validkey", "waitingforkey", "outcompression",
                 "pmtu", "policy", "counters", "udp_info_sent_at", "mtu_info_sent_at",
                 "sent_to_current", "rx_prefix")

    def __init__(self, name: str, pmtu: PathMtu, policy: RestartPolicy):
        self.name = name
        self.id = node_id(name)
        self.session: Optional[SptpsSession] = None
        self.validkey = False
        self.waitingforkey = False
        self.outcompression = 0
        self.pmtu = pmtu
        self.policy = policy              # when to start the session over, and the record why
        self.counters = TunnelCounters()
        self.udp_info_sent_at = None
        self.mtu_info_sent_at = None
        self.sent_to_current = 0          # tinc's global "every third packet" counter, per node
        self.rx_prefix = ZERO_ID + self.id   # what datagrams straight from this node start with


@dataclass(frozen=True)
class FastTx:
    """DataPlane.fast_tx_plan's answer: seal with `tunnel`'s session, prefix each datagram
    with `prefix` (target ID, our ID), send to `address`; only frames of at most max_len."""
    tunnel: Tunnel
    address: SockAddr
    prefix: bytes
    max_len: int


class TunnelError(TincappError):
    """A record a tunnel cannot use (wrong type bits, bad compression, oversized). `kind` is
    the restart policy's error kind."""

    def __init__(self, message: str, kind: str = restart.KIND_BAD_TYPE):
        super().__init__(message)
        self.kind = kind


class DataPlane:
    """All tunnels of node `myself`. The shell feeds it meta requests meant for the data plane,
    UDP datagrams, frames from the device and the clock; it answers with actions and with
    frames for the router."""

    def __init__(self, myself: str, *, graph, has_connection: Callable[[str], bool],
                 my_key, peer_key: Callable[[str], Optional[bytes]], rng,
                 my_options: int, compression: int = 0, mode: str = "router",
                 forwarding: str = "internal", replay_window: int = DEFAULT_REPLAY_WINDOW,
                 pmtu_config=None, udp_info_interval_s: float = 5,
                 mtu_info_interval_s: float = 5, restart_config: RestartConfig = RestartConfig(),
                 log=None):
        self.myself = myself
        self.graph = graph
        self._has_connection = has_connection
        self._my_key = my_key
        self._peer_key = peer_key
        self._rng = rng
        self.my_options = my_options
        self.compression = compression          # what we ask peers to send us
        self.switch_mode = mode != "router"
        self.forwarding = forwarding
        self.replay_window = replay_window
        self._pmtu_config = pmtu_config or PmtuConfig()
        self._restart_config = restart_config
        self.udp_info_interval_s = udp_info_interval_s
        self.mtu_info_interval_s = mtu_info_interval_s
        self._log = log or (lambda level, text: None)
        self.tunnels: dict[str, Tunnel] = {}
        self._by_id: dict[bytes, str] = {node_id(myself): myself}    # IDs are never removed
        self._ids_indexed_at = None          # (graph generation, node count) of the last index
        self._actions: list = []
        self._my_id = node_id(myself)
        # The shell may set these: (SockAddr, peer minor) -> initial maxmtu or None; and
        # name -> the PMTU setting for that node (its host file or ours) or None.
        self.path_mtu_of = None
        self.configured_pmtu = None

    # --- bookkeeping -------------------------------------------------------------------------

    def pop_actions(self) -> list:
        out, self._actions = self._actions, []
        return out

    def reconfigure(self, *, my_options: int, compression: int, mode: str, forwarding: str,
                    pmtu_config, udp_info_interval_s: float,
                    mtu_info_interval_s: float) -> None:
        """Called on reload with the settings tinc re-reads (setup_myself_reloadable)."""
        self.my_options = my_options
        self.compression = compression
        self.switch_mode = mode != "router"
        self.forwarding = forwarding
        self._pmtu_config = pmtu_config
        for t in self.tunnels.values():
            t.pmtu.config = pmtu_config
        self.udp_info_interval_s = udp_info_interval_s
        self.mtu_info_interval_s = mtu_info_interval_s

    def tunnel(self, name: str) -> Tunnel:
        t = self.tunnels.get(name)
        if t is None:
            t = self.tunnels[name] = Tunnel(
                name, PathMtu(self._pmtu_config, self._rng),
                RestartPolicy(name, self.myself, self._rng, self._restart_config))
            self._by_id[t.id] = name
        return t

    def name_for_id(self, nid: bytes) -> Optional[str]:
        name = self._by_id.get(bytes(nid))
        if name is None:
            # Index the nodes the graph learnt since the last miss, once per graph change:
            # IDs nobody has (anyone can send them) must not cost a hash of every name.
            epoch = (self.graph.generation, self.graph.node_count())
            if epoch != self._ids_indexed_at:
                self._ids_indexed_at = epoch
                for n in self.graph.nodes():
                    self._by_id.setdefault(node_id(n.name), n.name)
                name = self._by_id.get(bytes(nid))
        return name

    def _minor(self, name: str) -> int:
        n = self.graph.node(name)
        return option_version(n.options) if n is not None else 0

    def _hostname(self, name: str) -> str:
        n = self.graph.node(name)
        return n.hostname if n is not None and n.hostname else "unknown port unknown"

    def reachability_changed(self, name: str, now: float) -> None:
        """Called for the graph's TunnelReset: the node became reachable or unreachable.
        COMPAT: graph.c resets the key state, last_req_key (the policy's timing), UDP
        confirmation and MTU."""
        t = self.tunnel(name)
        t.session = None
        t.validkey = False
        t.waitingforkey = False
        t.policy.reachability_changed(now)
        t.pmtu.reset()
        if self.configured_pmtu is not None:
            limit = self.configured_pmtu(name)
            if limit is not None:
                t.pmtu.limit_mtu(limit)        # COMPAT: ack_h applies PMTU from both files

    def _learn_udp_address(self, t: Tunnel, address: Optional[SockAddr], log_text) -> None:
        """A new UDP address for t's node (tinc update_node_udp): set in the graph, and the
        tunnel's UDP state starts over. Nothing if it is unknown or what the graph has."""
        n = self.graph.node(t.name)
        if n is None or address is None or address.unknown or n.address == address:
            return
        if log_text is not None:
            self._log(3, log_text.format(name=t.name, address=address.hostname()))
        self.graph.set_udp_address(t.name, address)
        t.pmtu.reset()

    def udp_address_changed(self, name: str, now: float) -> None:
        """Called when the graph reset a node's UDP address (tinc update_node_udp): the
        address is unconfirmed and the MTU unknown again."""
        self.tunnel(name).pmtu.reset()

    # --- starting sessions (meta-protocol.md 6.2, 6.5) ---------------------------------------

    def _public_key(self, name: str) -> Optional[bytes]:
        try:
            return self._peer_key(name)
        except TincappError as e:
            self._log(0, f"Could not read public key of {name}: {e}")
            return None

    def send_req_key(self, name: str, now: float) -> None:
        """Start a new session with `name` as initiator (tinc send_req_key)."""
        t = self.tunnel(name)
        public = self._public_key(name)
        if public is None:
            self._log(3, f"No Ed25519 key known for {name}")
            self._toward(name, ReqPubkey(self.myself, name))
            return
        t.validkey = False
        t.waitingforkey = True
        t.policy.started(now)
        t.session = SptpsSession(initiator=True, datagram=True,
                                 label=tunnel_label(self.myself, name), my_key=self._my_key,
                                 peer_public=public, rng=self._rng,
                                 replay_window=self.replay_window)
        t.session.start()
        out = t.session.pop_outgoing()
        # The first record (our KEX) starts the session at the peer; the rest are ANS_KEY.
        kex = out[0][1]
        self._toward(name, ReqSptpsStart(self.myself, name, b64.encode(kex)))
        self._send_records(t, out[1:], now)

    def try_sptps(self, name: str, now: float) -> None:
        """Make sure a tunnel to `name` is valid or on its way (tinc try_sptps). The policy
        starts over a handshake that is overdue (tinc: no key after 10 seconds)."""
        t = self.tunnel(name)
        self._apply(t, t.policy.wanted(now), now)
        if t.validkey:
            return
        self._log(5, f"No valid key known yet for {name}")
        if not t.waitingforkey:
            self.send_req_key(name, now)

    def _apply(self, t: Tunnel, decision, now: float) -> None:
        """Carry out a restart policy decision."""
        if decision.log is not None:
            self._log(*decision.log)
        if decision.probe:
            # Rule 10: a live peer answers this, a silent one shows it is gone. Only by UDP:
            # tinc takes a probe that came over TCP for a broken tunnel and restarts it, and
            # over TCP the peer reports its own decode errors anyway.
            to = self.graph.node(t.name)
            if to is not None and to.nexthop is not None and not self._datagram_route(
                    to, self.myself, PKT_PROBE, MIN_PROBE_SIZE)[4]:
                self._send_probe(t, build_probe_request(MIN_PROBE_SIZE, self._rng), now)
            else:
                t.policy.silence_unprobeable()
        if decision.restart:
            t.session = None
            t.waitingforkey = False
            self.send_req_key(t.name, now)

    def receive_failed(self, t: Tunnel, path: str, kind: str, now: float, detail,
                       count: int = 1) -> None:
        """Called when data from `t`'s peer on `path` could not be used; the policy decides
        whether the tunnel starts over (tinc: at most once per 10 s, meta-protocol.md 7)."""
        self._log(5, f"Bad record ({kind}) from {t.name} via {path}: {detail}")
        self._apply(t, t.policy.receive_failed(now, kind, path, str(detail),
                                               self._hostname(t.name), count), now)

    # --- requests for the data plane ---------------------------------------------------------

    def receive_request(self, msg, line: bytes, for_us: bool, now: float) -> None:
        """Called for the node core's ToDataPlane."""
        if isinstance(msg, UdpInfo):
            self._receive_udp_info(msg, now)
        elif isinstance(msg, MtuInfo):
            self._receive_mtu_info(msg, now)
        elif isinstance(msg, AnsKey):
            if for_us:
                self._receive_ans_key(msg, now)
            else:
                self._relay_ans_key(msg, line)
        elif isinstance(msg, ReqKeySptpsPacket) and not for_us:
            self._relay_req_key_packet(msg, now)
        elif for_us:
            self._receive_req_key(msg, now)

    def _receive_req_key(self, msg, now):
        frm = msg.from_name
        t = self.tunnel(frm)
        if isinstance(msg, (ReqSptpsStart, ReqKeySptpsPacket)):
            # COMPAT: the destination of a TCP-carried packet tells the originator where it
            # sees it (hole punching).
            self.send_udp_info(self.myself, frm, now)
        if isinstance(msg, ReqPubkey):
            if self._public_key(frm) is None:
                self._log(3, f"Preemptively requesting Ed25519 key for {frm}")
                self._toward(frm, ReqPubkey(self.myself, frm))
            self._toward(frm, AnsPubkey(self.myself, frm, b64.encode(self._my_key.public)))
        elif isinstance(msg, AnsPubkey):
            if self._public_key(frm) is not None:
                self._log(2, f"Got ANS_PUBKEY from {frm} even though we already have his "
                          "pubkey")
                return
            try:
                from tincapp.keys import public_key_from_b64
                public = public_key_from_b64(msg.argument, f"ANS_PUBKEY from {frm}")
            except TincappError as e:
                self._log(0, f"Got bad ANS_PUBKEY from {frm}: {e}")
                return
            self._log(2, f"Learned Ed25519 public key from {frm}")
            self._actions.append(SavePublicKey(frm, public))
        elif isinstance(msg, ReqSptpsStart):
            self._receive_sptps_start(t, msg, now)
        elif isinstance(msg, ReqKeySptpsPacket):
            datagram = _sptps_data(msg.argument)
            if not datagram:
                self._log(0, f"Got bad SPTPS_PACKET from {frm}: invalid SPTPS data")
                return
            if self._receive_datagram(t, datagram, restart.PATH_REQ_KEY_21, now, via_tcp=True):
                self.send_mtu_info(self.myself, frm, MTU, now)
        else:
            self._log(0, f"Unknown extended REQ_KEY request from {frm}: {msg.request.name}")

    def _receive_sptps_start(self, t: Tunnel, msg, now):
        public = self._public_key(t.name)
        if public is None:
            self._log(2, f"No Ed25519 key known for {t.name}; requesting it")
            self._toward(t.name, ReqPubkey(self.myself, t.name))
            return
        kex = _sptps_data(msg.argument)
        if not kex:
            self._log(0, f"Got bad REQ_SPTPS_START from {t.name}: invalid SPTPS data")
            return
        decision = t.policy.peer_started(now)
        if decision.log is not None:
            self._log(*decision.log)
        if not decision.follow:
            return
        if t.validkey:
            self._log(3, f"Got REQ_KEY from {t.name} while we already have a valid key")
        self._log(3, f"Got REQ_SPTPS_START from {t.name}")
        t.validkey = False
        t.waitingforkey = True
        t.session = SptpsSession(initiator=False, datagram=True,
                                 label=tunnel_label(t.name, self.myself),
                                 my_key=self._my_key, peer_public=public, rng=self._rng,
                                 replay_window=self.replay_window)
        t.session.start()
        self._send_records(t, t.session.pop_outgoing(), now)
        try:
            events = t.session.receive_datagram(kex)
        except (SptpsError, WireError) as e:
            # COMPAT: a bad first record is ignored here (no restart).
            self._log(3, f"Bad REQ_SPTPS_START from {t.name}: {e}")
            return
        self._session_events(t, events, now, via_tcp=True, path=restart.PATH_ANS_KEY)
        self.send_mtu_info(self.myself, t.name, MTU, now)

    def _receive_ans_key(self, msg: AnsKey, now):
        frm = msg.from_name
        t = self.tunnel(frm)
        if msg.compression not in compress.SUPPORTED_LEVELS:
            self._log(0, f"Node {frm} uses bogus compression level {msg.compression}!")
            return
        t.outcompression = msg.compression
        datagram = _sptps_data(msg.key)
        if not datagram:
            self.receive_failed(t, restart.PATH_ANS_KEY, restart.KIND_BAD_DATA, now,
                                "invalid key data")
            return
        if not self._receive_datagram(t, datagram, restart.PATH_ANS_KEY, now, via_tcp=True):
            return
        if t.validkey and msg.address is not None and msg.port is not None:
            self._learn_udp_address(t, address_from_text(msg.address, msg.port),
                                    "Using reflexive UDP address from {name}: {address}")
        self.send_mtu_info(self.myself, frm, MTU, now)

    def _relay_ans_key(self, msg: AnsKey, line: bytes):
        """COMPAT: ans_key_h appends the UDP address from which we see `from`, once the path
        to `to` carries UDP (to->minmtu), so the destination can punch a hole."""
        frm, to = self.graph.node(msg.from_name), msg.to_name
        if msg.address is None and frm is not None and frm.address is not None \
                and not frm.address.unknown and self.tunnel(to).pmtu.minmtu:
            self._log(4, f"Appending reflexive UDP address to ANS_KEY from {msg.from_name} "
                      f"to {to}")
            line = bytes(line) + f" {frm.address.host} {frm.address.port}".encode()
        self._toward_line(to, line)

    def _relay_req_key_packet(self, msg, now):
        """COMPAT: an SPTPS_PACKET passing through is sent on by UDP if possible (only with
        Forwarding = internal), not forwarded as text."""
        to = self.graph.node(msg.to_name)
        if to is not None and to.via is self.graph.myself:
            self.send_udp_info(self.myself, msg.from_name, now)
        datagram = _sptps_data(msg.argument)
        if not datagram:
            self._log(0, f"Got bad SPTPS_PACKET from {msg.from_name} to {msg.to_name}: "
                      "invalid SPTPS data")
            return
        if self.forwarding == "internal":
            self._send_datagram(msg.to_name, msg.from_name, PKT_NORMAL, datagram, now)
            self.try_tx(msg.to_name, True, now)

    # --- sending records ---------------------------------------------------------------------

    def _send_records(self, t: Tunnel, records, now) -> None:
        """Send what a session queued: handshake records as ANS_KEY, data by UDP or TCP."""
        for type, datagram in records:
            self._send_datagram(t.name, self.myself, type, datagram, now)

    def _send_datagram(self, to_name: str, from_name: str, type: int, datagram: bytes,
                       now: float) -> None:
        """One SPTPS datagram of the from-to tunnel (tinc send_sptps_data, data-path.md 6.2)."""
        to = self.graph.node(to_name)
        if to is None or to.nexthop is None:
            return
        payload_len = len(datagram) - DATAGRAM_OVERHEAD
        relay, relay_t, direct, relay_supported, by_tcp = self._datagram_route(
            to, from_name, type, payload_len)
        if by_tcp:
            if type != HANDSHAKE and option_version(to.nexthop.options) >= MINOR_SPTPS_PACKET:
                self._log(5, f"Sending packet from {from_name} to {to_name} via "
                          f"{to.nexthop.name} (TCP)")
                self._actions.append(SendSptpsPacket(
                    to.nexthop.name, self._id(to_name) + self._id(from_name) + bytes(datagram)))
            elif type == HANDSHAKE:
                self._toward(to_name, AnsKey.sptps(from_name, to_name, b64.encode(datagram),
                                                   self.compression))
            else:
                self._toward(to_name, ReqKeySptpsPacket(from_name, to_name,
                                                        b64.encode(datagram)))
            return
        if relay_supported:
            prefix = (ZERO_ID if direct else self._id(to_name)) + self._id(from_name)
        else:
            prefix = b""
        address = self._choose_udp_address(relay, relay_t)
        if address is None:
            return
        self._log(5, f"Sending packet from {from_name} to {to_name} via {relay.name} (UDP)")
        self._actions.append(SendUdp(address, prefix + bytes(datagram), relay.name,
                                     payload_len))

    def _datagram_route(self, to, from_name: str, type: int, payload_len: int):
        """send_sptps_data's choice for a datagram to node `to` (which has a next hop):
        (relay, its tunnel, direct, relay understands node IDs, goes over TCP instead)."""
        me = self.graph.myself
        via_t = self.tunnels.get(to.via.name) if to.via is not None else None
        if to.via is not me and to.via is not None and (
                type == PKT_PROBE or (via_t is not None and payload_len <= via_t.pmtu.minmtu)):
            relay = to.via
        else:
            relay = to.nexthop
        relay_t = self.tunnel(relay.name)
        direct = from_name == self.myself and to is relay
        relay_supported = option_version(relay.options) >= MINOR_RELAY_IDS
        tcponly = (self.my_options | relay.options) & OPTION_TCPONLY
        by_tcp = (type == HANDSHAKE or bool(tcponly) or (not direct and not relay_supported)
                  or (type != PKT_PROBE and payload_len > relay_t.pmtu.minmtu))
        return relay, relay_t, direct, relay_supported, by_tcp

    def _id(self, name: str) -> bytes:
        t = self.tunnels.get(name)
        return t.id if t is not None else node_id(name)

    def _choose_udp_address(self, n, t: Tunnel) -> Optional[SockAddr]:
        """data-path.md 6.4: the confirmed address, else every third packet the current
        guess and the others the address of a random edge towards the node."""
        if t.pmtu.udp_confirmed or n.address is None:
            return n.address if n.address is not None and not n.address.unknown else \
                self._random_edge_address(n)
        t.sent_to_current += 1
        if t.sent_to_current >= 3:
            t.sent_to_current = 0
            if not n.address.unknown:
                return n.address
        return self._random_edge_address(n) or (None if n.address.unknown else n.address)

    def _random_edge_address(self, n) -> Optional[SockAddr]:
        edges = n.sorted_edges()
        if not edges:
            return None
        e = edges[int.from_bytes(self._rng(2), "big") % len(edges)]
        rev = e.to_node.edges.get(n.name)
        if rev is None or rev.address is None or rev.address.unknown:
            return None
        return rev.address

    def _local_edge_address(self, n) -> Optional[SockAddr]:
        """For LocalDiscovery: the local address of a random edge from the node."""
        if n is None:
            return None
        candidates = [e.local_address for e in n.sorted_edges()
                      if e.local_address is not None and not e.local_address.unknown]
        if not candidates:
            return None
        return candidates[int.from_bytes(self._rng(2), "big") % len(candidates)]

    def _initial_maxmtu(self, n) -> Optional[int]:
        """The first upper bound for PMTU discovery: the OS's path MTU towards the node, if
        the shell can tell (path_mtu_of), else None (1518)."""
        if self.path_mtu_of is None or n.address is None or n.address.unknown:
            return None
        return self.path_mtu_of(n.address, self._minor(n.name))

    def _toward(self, to_name: str, msg) -> None:
        self._actions.append(SendToward(to_name, msg))

    def _toward_line(self, to_name: str, line: bytes) -> None:
        self._actions.append(SendToward(to_name, bytes(line)))

    # --- receiving records -------------------------------------------------------------------

    def _receive_datagram(self, t: Tunnel, datagram, path: str, now: float, *,
                          via_tcp: bool) -> bool:
        """Feed one datagram of `t`'s session; False (after telling the policy) if it failed."""
        if t.session is None:
            self.receive_failed(t, path, restart.KIND_NO_SESSION, now, "no session")
            return False
        try:
            events = t.session.receive_datagram(datagram)
        except (SptpsError, WireError) as e:
            self.receive_failed(t, path, restart.classify(e), now, e)
            return False
        t.policy.record_accepted(now)
        self._send_records(t, t.session.pop_outgoing(), now)
        return self._session_events(t, events, now, via_tcp=via_tcp, path=path)

    def _session_events(self, t: Tunnel, events, now, *, via_tcp, path) -> bool:
        ok = True
        for ev in events:
            if isinstance(ev, RecordReceived):
                try:
                    self._receive_record(t, ev.type, ev.data, now, via_tcp)
                except TunnelError as e:
                    self.receive_failed(t, path, e.kind, now, e)
                    ok = False
            elif isinstance(ev, HandshakeCompleted):
                if not t.validkey:
                    self._log(3, f"SPTPS key exchange with {t.name} successful")
                t.validkey = True
                t.waitingforkey = False
                t.policy.handshake_completed(now)
            elif isinstance(ev, SptpsError):
                self.receive_failed(t, path, restart.classify(ev), now, ev)
                ok = False
        if t.session is not None:
            if t.validkey and t.session.handshake_pending:
                t.policy.rekey_started(now)        # the peer began a rekey
            self._send_records(t, t.session.pop_outgoing(), now)
        return ok

    def _receive_record(self, t: Tunnel, type: int, data: bytes, now, via_tcp) -> None:
        """A data record from the tunnel (data-path.md 2.3)."""
        if len(data) > MTU:
            raise TunnelError(f"Packet from {t.name} larger than maximum supported size "
                              f"({len(data)} > {MTU})", restart.KIND_TOO_BIG)
        if type == PKT_PROBE:
            if via_tcp:
                raise TunnelError(f"Got SPTPS PROBE packet from {t.name} via TCP")
            self._receive_probe(t, data, now)
            return
        if type & ~(PKT_COMPRESSED | PKT_MAC):
            raise TunnelError(f"Unexpected SPTPS record type {type} from {t.name}")
        if self.switch_mode and not type & PKT_MAC:
            raise TunnelError(f"Received packet from {t.name} without MAC header (maybe "
                              "Mode is not set correctly)")
        if type & PKT_COMPRESSED:
            try:
                data = compress.decompress(self.compression, data, MAXSIZE)
            except compress.CompressionError as e:
                raise TunnelError(f"Error while decompressing packet from {t.name}: {e}",
                                  restart.KIND_DECOMPRESS)
        if type & PKT_MAC:
            frame = bytes(data)
        else:
            if not data:
                raise TunnelError(f"Empty packet from {t.name}")
            version = data[0] >> 4
            if version == 4:
                frame = bytes(12) + ETHERTYPE_IPV4 + bytes(data)
            elif version == 6:
                frame = bytes(12) + ETHERTYPE_IPV6 + bytes(data)
            else:
                raise TunnelError(f"Unknown IP version {version} while reading packet from "
                                  f"{t.name}")
        t.counters.in_packets += 1
        t.counters.in_bytes += len(frame)
        if not via_tcp:
            t.pmtu.record_received_len(len(frame))
        self._actions.append(DeliverFrame(t.name, frame))

    # --- the shell's fast path (it opens and seals bursts itself) -----------------------------

    def fast_tx_plan(self, name: str) -> Optional[FastTx]:
        """How a burst of plain router-mode frames to `name` may be sealed with its session and
        sent by UDP in one go: what send_frame and send_sptps_data would do for each frame of
        at most `max_len` bytes. Straight to the node's confirmed address with a zero target
        ID, or to the relay (its static relay, else its next hop) whose address is confirmed,
        with the node's ID. None: the frames go one by one (send_frame)."""
        t = self.tunnels.get(name)
        n = self.graph.node(name)
        g = self.graph
        if (t is None or n is None or not t.validkey or t.session is None
                or not t.session.handshake_done or t.outcompression or self.switch_mode
                or not n.reachable or n.nexthop is None):
            return None
        # send_sptps_data's choice: the static relay (the node itself when it has none) if
        # the payload fits its proven MTU, else the next hop.
        relay = n.via if n.via is not None and n.via is not g.myself else n.nexthop
        rt = self.tunnels.get(relay.name)
        if rt is None or not rt.pmtu.udp_confirmed or not rt.pmtu.minmtu:
            relay = n.nexthop
            rt = self.tunnels.get(relay.name)
        if rt is None or relay is g.myself:
            return None
        # the payload (the frame minus its Ethernet header) must fit the relay's proven MTU
        max_len = min(rt.pmtu.minmtu + ETH_HLEN, max(t.pmtu.mtu, IP_MIN_MTU))
        if self._has_connection(name):
            max_len = min(max_len, t.pmtu.minmtu)    # send_frame: larger ones go as PACKET
        prefix = (ZERO_ID if relay is n else t.id) + self._my_id
        if (not rt.pmtu.udp_confirmed or relay.address is None or relay.address.unknown
                or (self.my_options | relay.options) & OPTION_TCPONLY
                or option_version(relay.options) < MINOR_RELAY_IDS):
            return None
        return FastTx(t, relay.address, prefix, max_len)

    def sent_burst(self, t: Tunnel, packets: int, frame_bytes: int, now: float) -> None:
        """Called after the shell sent a burst on `t`'s session: counters, the session's own
        output (an automatic rekey) and tunnel upkeep, as send_frame does per frame."""
        t.counters.out_packets += packets
        t.counters.out_bytes += frame_bytes
        t.policy.data_sent(now)
        self._send_records(t, t.session.pop_outgoing(), now)
        self.try_tx(t.name, True, now)

    def received_burst(self, t: Tunnel, events, failures: dict, packets: int,
                       frame_bytes: int, longest_frame: int, now: float) -> None:
        """Called after the shell opened a run of datagrams from `t`'s confirmed address
        itself: session events, failed records by kind (told to the policy once per kind)
        and counters. `packets` counts the records the shell wrote to the device."""
        if packets or events:
            t.policy.record_accepted(now)
        self._session_events(t, events, now, via_tcp=False, path=restart.PATH_UDP)
        for kind, count in failures.items():
            self.receive_failed(t, restart.PATH_UDP, kind, now,
                                f"{count} datagrams in a burst", count)
        t.counters.in_packets += packets
        t.counters.in_bytes += frame_bytes
        if packets:
            t.pmtu.record_received_len(longest_frame)

    def fast_relay_target(self, prev_hop: str, prefix: bytes, longest: int) -> Optional[SockAddr]:
        """Where a run of UDP datagrams that `prev_hop` sent us, all with node-ID prefix
        `prefix` and at most `longest` bytes, goes on by UDP unchanged: the next relay's
        confirmed address, if receive_udp and send_sptps_data would send each of them there
        (a relayed datagram keeps its IDs). None: let the slow path decide."""
        if self.forwarding != "internal" or prefix[:NODE_ID_LEN] == ZERO_ID:
            return None
        g = self.graph
        n = g.node(prev_hop)
        to_name = self.name_for_id(prefix[:NODE_ID_LEN])
        frm_name = self.name_for_id(prefix[NODE_ID_LEN:])
        if n is None or to_name is None or frm_name is None or frm_name == self.myself:
            return None
        to, frm = g.node(to_name), g.node(frm_name)
        if (to is None or frm is None or to is g.myself or not to.reachable
                or option_version(n.options) < MINOR_RELAY_IDS or to.nexthop is None):
            return None
        payload_len = longest - ID_PREFIX_LEN - DATAGRAM_OVERHEAD
        via_t = self.tunnels.get(to.via.name) if to.via is not None else None
        if (to.via is not g.myself and to.via is not None and via_t is not None
                and payload_len <= via_t.pmtu.minmtu):
            relay = to.via
        else:
            relay = to.nexthop
        rt = self.tunnels.get(relay.name)
        if (rt is None or not rt.pmtu.udp_confirmed or payload_len > rt.pmtu.minmtu
                or option_version(relay.options) < MINOR_RELAY_IDS
                or (self.my_options | relay.options) & OPTION_TCPONLY
                or relay.address is None or relay.address.unknown):
            return None
        return relay.address

    def relayed_burst(self, prev_hop: str, prefix: bytes, now: float) -> None:
        """Called after the shell handled a run of relayed datagrams (prefix: target ID,
        originator ID) itself, passing them on or opening them for us: what receive_udp does
        besides that (UDP_INFO toward the originator; tunnel upkeep toward the target, or
        MTU_INFO toward the relay that brought them to us)."""
        g = self.graph
        to = g.node(self.name_for_id(prefix[:NODE_ID_LEN]) or "")
        frm = g.node(self.name_for_id(prefix[NODE_ID_LEN:]) or "")
        if to is None or frm is None:
            return
        if g.node(prev_hop) is not frm.via and to.via is g.myself:
            self.send_udp_info(self.myself, frm.name, now)
        if to is g.myself:
            self.send_mtu_info(self.myself, prev_hop, MTU, now)
        else:
            self.try_tx(to.name, True, now)

    def receive_opened_record(self, t: Tunnel, type: int, data: bytes, now: float) -> None:
        """A record the shell opened from a UDP burst that its fast path does not handle."""
        t.policy.record_accepted(now)
        try:
            self._receive_record(t, type, data, now, via_tcp=False)
        except TunnelError as e:
            self.receive_failed(t, restart.PATH_UDP, e.kind, now, e)

    # --- probes (data-path.md 8) -------------------------------------------------------------

    def _receive_probe(self, t: Tunnel, data: bytes, now) -> None:
        reply = t.pmtu.probe_received(data, now, self._minor(t.name))
        if reply is not None:
            self._send_probe(t, reply, now, reply=True)

    def _send_probe(self, t: Tunnel, frame: bytes, now, reply=False, locally=False) -> None:
        if t.session is None or not t.session.handshake_done:
            return
        datagram = t.session.seal_record(PKT_PROBE, frame)
        if locally:
            address = self._local_edge_address(self.graph.node(t.name))
            if address is not None:
                self._actions.append(SendUdp(address, self._udp_prefix(t.name) + datagram,
                                             t.name, len(frame)))
            self._send_records(t, t.session.pop_outgoing(), now)
            return
        if reply and not t.pmtu.udp_confirmed:
            # COMPAT: send_udp_probe_reply pretends the address is confirmed so the reply
            # goes to the address the probe came from.
            n = self.graph.node(t.name)
            if n is not None and n.address is not None and not n.address.unknown:
                self._actions.append(SendUdp(n.address, self._udp_prefix(t.name) + datagram,
                                             t.name, len(frame)))
                self._send_records(t, t.session.pop_outgoing(), now)
                return
        self._send_datagram(t.name, self.myself, PKT_PROBE, datagram, now)
        self._send_records(t, t.session.pop_outgoing(), now)

    def _udp_prefix(self, name: str) -> bytes:
        if self._minor(name) >= MINOR_RELAY_IDS:
            return ZERO_ID + self._my_id
        return b""

    # --- tunnel maintenance (data-path.md 9) -------------------------------------------------

    def try_tx(self, name: str, mtu_probe: bool, now: float) -> None:
        """Keep the tunnel to `name` going: key, UDP discovery, PMTU (tinc try_tx)."""
        n = self.graph.node(name)
        if n is None or not n.reachable or n is self.graph.myself:
            return
        if self._has_connection(name) and (self.my_options | n.options) & OPTION_TCPONLY:
            return
        self.try_sptps(name, now)
        via = n.nexthop if n.via is self.graph.myself else n.via
        if via is not None and via is not n:
            if option_version(via.options) < MINOR_RELAY_IDS:
                return
            self.try_tx(via.name, mtu_probe, now)
            return
        t = self.tunnel(name)
        if t.validkey:
            probes = t.pmtu.maintenance(
                now, mtu_probe and bool(n.options & OPTION_PMTU_DISCOVERY), self._minor(name),
                initial_maxmtu=((lambda: self._initial_maxmtu(n) or MTU)
                                if self.path_mtu_of is not None else None),
                local_candidate=n.prevedge is not None)
            for p in probes:
                self._send_probe(t, p.frame, now, reply=p.is_reply, locally=p.locally)
        if not t.pmtu.udp_confirmed and n.nexthop is not None and n.nexthop is not n \
                and option_version(n.nexthop.options) >= MINOR_RELAY_IDS:
            self.try_tx(n.nexthop.name, mtu_probe, now)

    def next_deadline(self) -> Optional[float]:
        deadlines = [d for t in self.tunnels.values()
                     for d in (t.pmtu.next_deadline(), t.policy.next_deadline())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def handle_deadline(self, now: float) -> None:
        """Called when next_deadline() has passed: UDP confirmations time out, pending
        errors and overdue handshakes restart tunnels."""
        for t in list(self.tunnels.values()):
            d = t.pmtu.next_deadline()
            if d is not None and now >= d:
                t.pmtu.handle_deadline(now)
            d = t.policy.next_deadline()
            if d is not None and now >= d:
                self._apply(t, t.policy.handle_deadline(now), now)

    def rekey_all(self, now: float) -> None:
        """KeyExpire: a new key exchange on every valid tunnel (tinc keyexpire_handler forces
        a KEX on each SPTPS node with a valid key; the records travel as ANS_KEY)."""
        for t in self.tunnels.values():
            n = self.graph.node(t.name)
            if t.validkey and t.session is not None and n is not None and n.reachable:
                try:
                    t.session.force_kex()
                except SptpsError:
                    continue              # a rekey is already running
                t.policy.rekey_started(now)
                self._send_records(t, t.session.pop_outgoing(), now)

    def udp_send_too_big(self, relay: str, payload_len: int, now: float) -> None:
        """Called when sendto said EMSGSIZE (data-path.md 8.5)."""
        t = self.tunnel(relay)
        for p in t.pmtu.send_failed_emsgsize(payload_len):
            self._send_probe(t, p.frame, now, reply=p.is_reply, locally=p.locally)

    # --- sending frames (data-path.md 6.1) ---------------------------------------------------

    def send_frame(self, to_name: str, frame: bytes, now: float) -> None:
        """Send an Ethernet frame to node `to_name` through its tunnel (tinc
        send_sptps_packet; routing already chose the node)."""
        n = self.graph.node(to_name)
        if n is None or not n.reachable or n is self.graph.myself:
            return
        t = self.tunnel(to_name)
        connected = self._has_connection(to_name)
        if not t.validkey and not connected:
            self._log(5, f"No valid key known yet for {to_name}")
            self.try_tx(to_name, True, now)
            return
        if len(frame) >= ETH_HLEN and frame[12] == 0 and frame[13] == 0:
            if t.session is not None and t.session.handshake_done:
                self._send_probe(t, frame, now)
            return
        t.counters.out_packets += 1
        t.counters.out_bytes += len(frame)
        if self.switch_mode:
            type, payload = PKT_MAC, frame
        else:
            type, payload = PKT_NORMAL, frame[ETH_HLEN:]
        if t.outcompression:
            packed = compress.compress(t.outcompression, payload)
            if packed is not None:
                type, payload = type | PKT_COMPRESSED, packed
        if connected and ((self.my_options | n.options) & OPTION_TCPONLY
                          or len(frame) > t.pmtu.minmtu):
            # DEVIATION: tinc sends the possibly-compressed buffer here (pitfalls.md); PACKET
            # must carry the original frame.
            self._actions.append(SendPacket(to_name, bytes(frame)))
        elif t.session is not None and t.session.handshake_done:
            datagram = t.session.seal_record(type, payload)
            t.policy.data_sent(now)
            self._send_datagram(to_name, self.myself, type, datagram, now)
            self._send_records(t, t.session.pop_outgoing(), now)
        self.try_tx(to_name, True, now)

    # --- receiving UDP datagrams (data-path.md 5) --------------------------------------------

    def receive_udp(self, data: bytes, address: SockAddr, now: float) -> None:
        """One UDP datagram from `address`."""
        g = self.graph
        n = g.node_by_udp_address(address)
        t = self.tunnels.get(n.name) if n is not None else None
        if n is None or t is None or not t.pmtu.udp_confirmed:
            n = self._identify(data)
            if n is None:
                self._log(5, f"Received UDP packet from unknown source {address.hostname()}")
                return
            t = self.tunnel(n.name)
        if option_version(n.options) >= MINOR_RELAY_IDS:
            if len(data) < ID_PREFIX_LEN:
                return
            dst_id, src_id, datagram = data[:6], data[6:12], data[12:]
            if dst_id == ZERO_ID:
                frm, to = n, g.myself
            else:
                frm_name, to_name = self.name_for_id(src_id), self.name_for_id(dst_id)
                if frm_name is None or to_name is None:
                    self._log(5, f"Received UDP packet from {n.name} with unknown source "
                              "and/or destination ID")
                    return
                frm, to = g.node(frm_name), g.node(to_name)
        else:
            frm, to, datagram = n, g.myself, data
        if frm is None or to is None or not to.reachable:
            return
        direct = to is g.myself and frm is n and (
            option_version(n.options) < MINOR_RELAY_IDS or data[:6] == ZERO_ID)
        if n is not frm.via and to.via is g.myself:
            self.send_udp_info(self.myself, frm.name, now)
        if to is not g.myself:
            if self.forwarding == "internal":
                self._send_datagram(to.name, frm.name, PKT_NORMAL, datagram, now)
                self.try_tx(to.name, True, now)
            return
        ft = self.tunnel(frm.name)
        if ft.session is None:
            if not ft.waitingforkey:
                self.send_req_key(frm.name, now)
            return
        if not self._receive_datagram(ft, datagram, restart.PATH_UDP, now, via_tcp=False):
            return
        if direct:
            self._learn_udp_address(t, address,
                                    "Received UDP packet from {name} on a new address {address}")
        else:
            self.send_mtu_info(self.myself, n.name, MTU, now)

    def _identify(self, data: bytes):
        """The node a UDP datagram of unknown address comes from: the source ID, checked by
        authenticating the datagram against that node's session (data-path.md 5 step 1)."""
        if len(data) < ID_PREFIX_LEN or data[:6] != ZERO_ID:
            # COMPAT: a relayed datagram from an unconfirmed address: tinc tries every node
            # with the whole datagram (try_harder), which cannot succeed for minor >= 4 peers;
            # we drop it at once. Older peers (no IDs) are not supported on UDP.
            return None
        name = self.name_for_id(data[6:12])
        if name is None or name == self.myself:
            return None
        n = self.graph.node(name)
        t = self.tunnels.get(name)
        if n is None or not n.sptps:
            return None
        if t is None or t.session is None:
            # DEVIATION: tinc cannot verify without a session and drops the datagram as from
            # an "unknown source", so a peer that restarted unnoticed keeps sending into the
            # void until a key request crosses. We take the claim, which leads to a key
            # request (one at a time: none while waitingforkey).
            return n
        return n if t.session.verify_datagram(data[12:]) else None

    # --- data over meta connections (data-path.md 6.3, meta-protocol.md 8) ------------------

    def receive_tcp_sptps_packet(self, data: bytes, now: float) -> None:
        """The raw bytes after SPTPS_PACKET (21): dst id, src id, datagram."""
        if len(data) < ID_PREFIX_LEN:
            return
        to_name, frm_name = self.name_for_id(data[:6]), self.name_for_id(data[6:12])
        if to_name is None or frm_name is None:
            self._log(5, "Got SPTPS_PACKET with unknown source and/or destination ID")
            return
        to = self.graph.node(to_name)
        if to is None or not to.reachable:
            return
        if to.via is self.graph.myself:
            self.send_udp_info(self.myself, frm_name, now)
        datagram = bytes(data[12:])
        if to is not self.graph.myself:
            # COMPAT: tinc checks for a valid key of *our* tunnel with the destination.
            if self.tunnel(to_name).validkey:
                self._send_datagram(to_name, frm_name, PKT_NORMAL, datagram, now)
            self.try_tx(to_name, True, now)
            return
        t = self.tunnel(frm_name)
        if self._receive_datagram(t, datagram, restart.PATH_TCP_RAW, now, via_tcp=True):
            self.send_mtu_info(self.myself, frm_name, MTU, now)

    def receive_packet(self, from_name: str, frame: bytes, now: float) -> None:
        """A PACKET (17) from neighbour `from_name`: a frame to route as coming from it."""
        if len(frame) > MAXSIZE:
            return
        t = self.tunnel(from_name)
        t.counters.in_packets += 1
        t.counters.in_bytes += len(frame)
        self._actions.append(DeliverFrame(from_name, bytes(frame)))

    # --- UDP_INFO and MTU_INFO (meta-protocol.md 9) ------------------------------------------

    def send_udp_info(self, from_name: str, to_name: str, now: float) -> None:
        g = self.graph
        to = g.node(to_name)
        if to is None:
            return
        to = to.nexthop if to.via is g.myself else to.via
        if to is None or to is g.myself or not to.reachable:
            return
        t = self.tunnel(to.name)
        if from_name == self.myself:
            if self._has_connection(to.name):
                return
            if t.udp_info_sent_at is not None and \
                    now - t.udp_info_sent_at < self.udp_info_interval_s:
                return
        frm = g.node(from_name)
        if frm is None or (self.my_options | frm.options | to.options) & OPTION_TCPONLY:
            return
        if to.nexthop is None or option_version(to.nexthop.options) < MINOR_UDP_INFO:
            return
        if frm is not g.myself:
            address = frm.address
        else:
            e = g.edge(self.myself, to.nexthop.name)
            address = e.local_address if e is not None else None
        if address is None:
            host, port = "unknown", "unknown"
        else:
            host, port = address.host, address.port
        self._toward(to.name, UdpInfo(from_name, to.name, host, port))
        if from_name == self.myself:
            t.udp_info_sent_at = now

    def _receive_udp_info(self, msg: UdpInfo, now):
        g = self.graph
        frm = g.node(msg.from_name)
        if frm is None:
            return
        if frm.via is not frm:
            self._log(3, f"Got UDP info message from {frm.name} which we can't reach directly")
            return
        t = self.tunnel(frm.name)
        if not self._has_connection(frm.name) and not t.pmtu.udp_confirmed:
            self._learn_udp_address(t, address_from_text(msg.address, msg.port), None)
        if g.node(msg.to_name) is None:
            return
        self.send_udp_info(msg.from_name, msg.to_name, now)

    def send_mtu_info(self, from_name: str, to_name: str, mtu: int, now: float) -> None:
        g = self.graph
        to, frm = g.node(to_name), g.node(from_name)
        if to is None or frm is None or to is g.myself or not to.reachable:
            return
        tt = self.tunnel(to_name)
        if from_name == self.myself:
            if self._has_connection(to_name):
                return
            if tt.mtu_info_sent_at is not None and \
                    now - tt.mtu_info_sent_at < self.mtu_info_interval_s:
                return
        if to.nexthop is None or option_version(to.nexthop.options) < MINOR_MTU_INFO:
            return
        via = frm.nexthop if frm.via is g.myself else frm.via
        fp = self.tunnel(from_name).pmtu
        if via is not None:
            vp = self.tunnel(via.name).pmtu
            if fp.minmtu == fp.maxmtu and frm.via is g.myself:
                mtu = fp.minmtu
            elif vp.minmtu == vp.maxmtu:
                mtu = min(mtu, vp.minmtu)
            elif via.nexthop is not None:
                np_ = self.tunnel(via.nexthop.name).pmtu
                if np_.minmtu == np_.maxmtu:
                    mtu = min(mtu, np_.minmtu)
        if from_name == self.myself:
            tt.mtu_info_sent_at = now
        self._toward(to_name, MtuInfo(from_name, to_name, max(mtu, 512)))

    def _receive_mtu_info(self, msg: MtuInfo, now):
        mtu = min(msg.mtu, MTU)
        frm = self.graph.node(msg.from_name)
        if frm is None:
            return
        self.tunnel(frm.name).pmtu.mtu_info(mtu)
        if self.graph.node(msg.to_name) is None:
            return
        self.send_mtu_info(msg.from_name, msg.to_name, mtu, now)
