"""The UDP-tunnel core (datapath.tunnels.DataPlane) between simulated nodes, no sockets.

A small in-memory mesh: each node has its own Graph (as the meta protocol would have built
it), requests toward a node travel hop by hop along next hops, UDP datagrams go to whichever
node owns the address, and links can be cut for UDP only."""
import random

import pytest

from tincapp.datapath.tunnels import (ETH_HLEN, MTU, PKT_PROBE, DataPlane, DeliverFrame,
                                      SavePublicKey, SendPacket, SendSptpsPacket, SendToward,
                                      SendUdp, node_id)
from tincapp.datapath.restart import Decision
from tincapp.keys import generate_private_key
from tincapp.mesh.graph import Graph, SockAddr
from tincapp.meta.messages import (OPTION_PMTU_DISCOVERY, OPTION_TCPONLY, AnsKey, MtuInfo,
                                   ReqKeySptpsPacket, ReqSptpsStart, UdpInfo, format, parse)

MINOR = 7


class Net:
    """Nodes, links (meta connections) and a clock."""

    def __init__(self, names, links, seed=1, minors=None, compression=None):
        self.rng = random.Random(seed)
        self.now = 1000.0
        self.names = list(names)
        self.links = {frozenset(link) for link in links}
        self.udp_blocked = set()
        self.keys = {n: generate_private_key(self.rng.randbytes) for n in names}
        self.addr = {n: SockAddr(f"10.0.0.{i + 1}", "655") for i, n in enumerate(names)}
        self.minors = minors or {}
        self.compression = compression or {}
        self.delivered = {n: [] for n in names}
        self.requests = []            # (from, to_hop, text) as seen on the meta links
        self.udp_count = 0
        self.known_keys = {n: {m: self.keys[m].public for m in names} for n in names}
        self.graphs = {}
        self.planes = {}
        for n in names:
            self.start(n)

    def options(self, name):
        return OPTION_PMTU_DISCOVERY | self.minors.get(name, MINOR) << 24

    def build_graph(self, me):
        g = Graph(me, options=self.options(me))
        for link in self.links:
            a, b = sorted(link)
            for x, y in ((a, b), (b, a)):
                g.add_edge(x, y, address=self.addr[y], options=self.options(y), weight=10)
        g.run(self.now)
        return g

    def start(self, name):
        """(Re)start node `name` with fresh state."""
        g = self.graphs[name] = self.build_graph(name)
        self.planes[name] = DataPlane(
            name, graph=g, has_connection=lambda peer, me=name: frozenset((me, peer)) in self.links,
            my_key=self.keys[name], peer_key=lambda peer, me=name: self.known_keys[me].get(peer),
            rng=self.rng.randbytes, my_options=self.options(name),
            compression=self.compression.get(name, 0))

    # --- moving actions ------------------------------------------------------------------

    def pump(self, rounds=50):
        for _ in range(rounds):
            moved = False
            for name in self.names:
                for act in self.planes[name].pop_actions():
                    moved = True
                    self.carry(name, act)
            if not moved:
                return
        raise AssertionError("the mesh did not settle")

    def carry(self, sender, act):
        if isinstance(act, SendToward):
            text = act.msg if isinstance(act.msg, bytes) else format(act.msg)
            self.meta_hop(sender, act.to, text)
        elif isinstance(act, SendUdp):
            target = next(n for n, a in self.addr.items() if a == act.address)
            if frozenset((sender, target)) in self.udp_blocked:
                return
            self.udp_count += 1
            self.planes[target].receive_udp(act.data, self.addr[sender], self.now)
        elif isinstance(act, SendPacket):
            assert frozenset((sender, act.to)) in self.links
            self.planes[act.to].receive_packet(sender, act.frame, self.now)
        elif isinstance(act, SendSptpsPacket):
            assert frozenset((sender, act.via)) in self.links
            assert MINOR >= 7
            self.planes[act.via].receive_tcp_sptps_packet(act.data, self.now)
        elif isinstance(act, DeliverFrame):
            self.delivered[sender].append((act.source, act.frame))
        elif isinstance(act, SavePublicKey):
            self.known_keys[sender][act.name] = act.public

    def meta_hop(self, sender, to, text):
        hop = self.graphs[sender].node(to).nexthop.name
        assert frozenset((sender, hop)) in self.links, (sender, hop)
        self.requests.append((sender, hop, text))
        msg = parse(text)
        plane = self.planes[hop]
        for_us = msg.to_name == hop
        if for_us or isinstance(msg, (AnsKey, ReqKeySptpsPacket, UdpInfo, MtuInfo)):
            plane.receive_request(msg, text, for_us, self.now)
        else:
            self.meta_hop(hop, msg.to_name, text)

    def advance(self, seconds):
        self.now += seconds


def ipv4_frame(payload=b"x" * 100, dst=b"\x0a\x01\x00\x02"):
    total = 20 + len(payload)
    header = bytes([0x45, 0, total >> 8, total & 255, 0, 0, 0, 0, 64, 17, 0, 0,
                    10, 1, 0, 1]) + dst
    return bytes(12) + b"\x08\x00" + header + payload


def frames_from(net, receiver, source):
    return [f for s, f in net.delivered[receiver] if s == source]


def establish(net, a, b):
    net.planes[a].try_tx(b, True, net.now)
    net.pump()


# --- key exchange ---------------------------------------------------------------------------

def test_node_ids_are_sha512_prefixes():
    assert node_id("alice").hex() == "408b27d3097e"
    assert node_id("relay").hex() == "75b4babbcd84"


def test_neighbours_exchange_keys_over_the_meta_connection():
    net = Net(["a", "b"], [("a", "b")])
    establish(net, "a", "b")
    ta, tb = net.planes["a"].tunnel("b"), net.planes["b"].tunnel("a")
    assert ta.validkey and tb.validkey
    assert not ta.waitingforkey and not tb.waitingforkey
    kinds = [parse(t).__class__ for _, _, t in net.requests]
    assert kinds[0] is ReqSptpsStart
    assert AnsKey in kinds


def test_first_frame_to_a_neighbour_goes_as_packet_while_the_key_is_made():
    net = Net(["a", "b"], [("a", "b")])
    frame = ipv4_frame()
    net.planes["a"].send_frame("b", frame, net.now)
    net.pump()
    assert frames_from(net, "b", "a") == [frame]
    assert net.planes["a"].tunnel("b").validkey


def test_udp_is_confirmed_by_probes_and_then_carries_data():
    net = Net(["a", "b"], [("a", "b")])
    establish(net, "a", "b")
    a = net.planes["a"]
    for _ in range(40):            # PMTU discovery runs probe rounds from try_tx
        net.advance(0.4)
        a.try_tx("b", True, net.now)
        net.pump()
    t = a.tunnel("b")
    assert t.pmtu.udp_confirmed
    assert t.pmtu.minmtu == t.pmtu.maxmtu == MTU       # nothing limits the simulated path
    sent = net.udp_count
    frame = ipv4_frame(b"y" * 1000)
    a.send_frame("b", frame, net.now)
    net.pump()
    assert frames_from(net, "b", "a")[-1] == frame
    assert net.udp_count > sent
    assert not any(isinstance(parse(t), ReqKeySptpsPacket) for _, _, t in net.requests)


def test_a_tunnel_through_a_relay_carries_data_over_the_meta_mesh():
    # a - b - c: a and c have no meta connection; their tunnel's handshake is relayed by b.
    net = Net(["a", "b", "c"], [("a", "b"), ("b", "c")])
    frame = ipv4_frame()
    a = net.planes["a"]
    a.send_frame("c", frame, net.now)      # no key yet, no connection: dropped, key requested
    net.pump()
    assert frames_from(net, "c", "a") == []
    assert a.tunnel("c").validkey and net.planes["c"].tunnel("a").validkey
    # COMPAT: b passes SPTPS_PACKET on only once it has a valid tunnel of its own with c
    # (receive_tcppacket_sptps); the first relayed frame makes b set that up.
    a.send_frame("c", frame, net.now)
    net.pump()
    assert net.planes["b"].tunnel("c").validkey
    a.send_frame("c", frame, net.now)
    net.pump()
    assert frames_from(net, "c", "a") == [frame]
    kinds = {type(parse(t)) for _, _, t in net.requests}
    assert ReqKeySptpsPacket not in kinds          # minor 7: binary SPTPS_PACKET instead


def test_udp_blocked_between_two_nodes_falls_back_to_tcp():
    net = Net(["a", "b"], [("a", "b")])
    net.udp_blocked.add(frozenset(("a", "b")))
    establish(net, "a", "b")
    a = net.planes["a"]
    for _ in range(10):
        net.advance(1)
        a.try_tx("b", True, net.now)
        net.pump()
    assert not a.tunnel("b").pmtu.udp_confirmed
    frame = ipv4_frame()
    a.send_frame("b", frame, net.now)
    net.pump()
    assert frames_from(net, "b", "a")[-1] == frame


# --- failures and restarts -------------------------------------------------------------------

def confirmed_pair(net, a="a", b="b"):
    establish(net, a, b)
    for _ in range(40):
        net.advance(0.4)
        net.planes[a].try_tx(b, True, net.now)
        net.planes[b].try_tx(a, True, net.now)
        net.pump()
    assert net.planes[a].tunnel(b).pmtu.udp_confirmed


def test_a_corrupted_datagram_restarts_the_tunnel_at_most_once_per_10_seconds():
    net = Net(["a", "b"], [("a", "b")])
    confirmed_pair(net)
    net.advance(11)
    b = net.planes["b"]
    restarts = b.tunnel("a").policy.snapshot().restarts
    garbage = bytes(6) + node_id("a") + bytes(60)
    b.receive_udp(garbage, net.addr["a"], net.now)
    assert b.tunnel("a").policy.snapshot().restarts == restarts + 1
    net.pump()
    assert b.tunnel("a").validkey
    b.receive_udp(garbage, net.addr["a"], net.now)
    assert b.tunnel("a").policy.snapshot().restarts == restarts + 1       # within 10 s: no restart
    net.advance(11)
    b.receive_udp(garbage, net.addr["a"], net.now)
    assert b.tunnel("a").policy.snapshot().restarts == restarts + 2


def test_a_peer_that_restarted_unnoticed_gets_a_new_tunnel():
    net = Net(["a", "b"], [("a", "b")])
    confirmed_pair(net)
    net.advance(20)
    net.start("b")                     # fresh state, same address; a still has its old tunnel
    frame = ipv4_frame(b"z" * 200)
    a = net.planes["a"]
    a.send_frame("b", frame, net.now)  # goes by UDP under the old key: b cannot read it
    net.pump()
    net.advance(1)
    a.send_frame("b", frame, net.now)
    net.pump()
    assert net.planes["b"].tunnel("a").validkey
    assert a.tunnel("b").validkey
    net.delivered["b"].clear()
    a.send_frame("b", frame, net.now)
    net.pump()
    assert frames_from(net, "b", "a") == [frame]


def test_probe_records_over_tcp_are_refused():
    net = Net(["a", "b"], [("a", "b")])
    establish(net, "a", "b")
    a, b = net.planes["a"], net.planes["b"]
    probe = bytes(14) + b"p" * 10
    datagram = a.tunnel("b").session.seal_record(PKT_PROBE, probe)
    before = b.tunnel("a").policy.snapshot().decode_errors
    b.receive_tcp_sptps_packet(bytes(node_id("b")) + node_id("a") + datagram, net.now)
    assert b.tunnel("a").policy.snapshot().decode_errors == before + 1


def test_mtu_info_and_udp_info_are_regenerated_at_each_hop():
    net = Net(["a", "b", "c"], [("a", "b"), ("b", "c")])
    frame = ipv4_frame()
    a = net.planes["a"]
    a.send_frame("c", frame, net.now)
    net.pump()
    a.send_frame("c", frame, net.now)
    net.pump()
    texts = [t for _, _, t in net.requests]
    assert any(t.startswith(b"23 c a ") for t in texts)      # MTU_INFO from c toward a


def test_unknown_source_ids_are_dropped_without_state():
    net = Net(["a", "b"], [("a", "b")])
    b = net.planes["b"]
    b.receive_udp(bytes(6) + b"\x01" * 6 + bytes(40), SockAddr("192.0.2.9", "1"), net.now)
    assert b.pop_actions() == []


@pytest.mark.parametrize("minor", [2, 3])
def test_old_peers_without_node_ids_get_bare_datagrams(minor):
    net = Net(["a", "b"], [("a", "b")], minors={"b": minor})
    establish(net, "a", "b")
    a = net.planes["a"]
    t = a.tunnel("b")
    assert t.validkey
    t.pmtu.udp_confirmed = True
    t.pmtu.minmtu = MTU
    frame = ipv4_frame()
    a.send_frame("b", frame, net.now)
    data = [x for x in a.pop_actions()
            if isinstance(x, SendUdp) and x.payload_len == len(frame) - ETH_HLEN]
    assert len(data) == 1
    assert len(data[0].data) == len(frame) - ETH_HLEN + 21      # no node-ID prefix


def test_forged_datagrams_into_a_healthy_tunnel_never_restart_it():
    net = Net(["a", "b"], [("a", "b")])
    confirmed_pair(net)
    a, b = net.planes["a"], net.planes["b"]
    before = b.tunnel("a").policy.snapshot()
    rng = random.Random(7)
    frame = ipv4_frame(b"v" * 300)
    for step in range(600):                      # a minute in 0.1 s steps
        net.advance(0.1)
        a.send_frame("b", frame, net.now)        # the peer's real traffic
        net.pump()
        for _ in range(20):                      # 200 forgeries per second
            forged = bytes(6) + node_id("a") + rng.randbytes(rng.choice((30, 120, 600)))
            b.receive_udp(forged, net.addr["a"], net.now)
        net.pump()
    after = b.tunnel("a").policy.snapshot()
    assert after.restarts == before.restarts
    assert after.decode_errors >= before.decode_errors + 600 * 20
    assert after.suppressed > 0
    assert len(frames_from(net, "b", "a")) >= 600


def test_a_stuck_tunnel_recovers_within_12_seconds_of_the_fault():
    net = Net(["a", "b"], [("a", "b")])
    confirmed_pair(net)
    net.advance(3)
    net.start("b")                               # b lost its state; a does not know
    a = net.planes["a"]
    fault_at = net.now
    frame = ipv4_frame(b"w" * 100)
    recovered_at = None
    while net.now < fault_at + 30:
        net.advance(0.25)
        net.delivered["b"].clear()
        a.send_frame("b", frame, net.now)
        for plane in net.planes.values():
            deadline = plane.next_deadline()
            if deadline is not None and deadline <= net.now:
                plane.handle_deadline(net.now)
        net.pump()
        if frames_from(net, "b", "a") == [frame]:
            recovered_at = net.now
            break
    assert recovered_at is not None and recovered_at - fault_at <= 12


@pytest.mark.parametrize("level", [1, 9, 10, 11, 12])
def test_the_receiver_chooses_the_compression_and_frames_arrive_intact(level):
    net = Net(["a", "b"], [("a", "b")], compression={"b": level})
    confirmed_pair(net)
    assert net.planes["a"].tunnel("b").outcompression == level
    a = net.planes["a"]
    frame = ipv4_frame(b"compressible " * 80)
    udp_before = net.udp_count
    a.send_frame("b", frame, net.now)
    sent = [x for x in a.pop_actions() if isinstance(x, SendUdp)]
    assert sent and len(sent[-1].data) < len(frame) // 2          # went out compressed
    for act in sent:
        net.carry("a", act)
    net.pump()
    assert frames_from(net, "b", "a")[-1] == frame
    assert net.udp_count > udp_before


def test_node_ids_resolve_and_unknown_ids_cost_one_index_per_graph_change():
    net = Net(["a", "b", "c"], [("a", "b"), ("b", "c")])
    plane, graph = net.planes["a"], net.graphs["a"]
    assert plane.name_for_id(node_id("c")) == "c"
    scans = []
    real_nodes = graph.nodes
    graph.nodes = lambda: scans.append(1) or real_nodes()
    for i in range(100):                     # forged IDs: nobody has them
        assert plane.name_for_id(i.to_bytes(6, "big")) is None
    assert len(scans) <= 1
    graph.add_edge("c", "d", address=SockAddr("10.0.0.9", "655"), options=net.options("d"),
                   weight=10)
    assert plane.name_for_id(node_id("d")) == "d"     # a node learnt since resolves
    assert len(scans) <= 2


def test_silence_probe_never_goes_over_tcp():
    """Rule 10's probe (the policy's Decision(probe=True)) goes only by UDP: tinc restarts a
    tunnel on a probe that came by TCP. Without a UDP path the watch is dropped instead."""
    net = Net(["a", "b", "c"], [("a", "b"), ("b", "c")])
    a = net.planes["a"]
    for _ in range(3):
        a.send_frame("c", ipv4_frame(), net.now)
        net.pump()
        net.advance(1)
    t = a.tunnel("c")
    assert t.validkey
    a._apply(t, Decision(probe=True), net.now)
    assert [type(x) for x in a.pop_actions()] == [SendUdp]
    a.my_options |= OPTION_TCPONLY
    t.policy.data_sent(net.now)
    a._apply(t, Decision(probe=True), net.now)
    assert a.pop_actions() == []
    assert t.policy.next_deadline() is None or t.policy.next_deadline() > net.now + 1
