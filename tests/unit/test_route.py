"""tinc's routing decisions (data-path.md 10, src/route.c) through a real Graph and SubnetTable.

Topology, seen from alpha (all links weight 10):

    alpha -- bravo -- charlie      bravo -> charlie is INDIRECT: charlie.via = bravo
                  \\-- delta        direct: delta.via = delta, nexthop bravo
    echo: known, owns subnets, no edges (unreachable)

Subnets: alpha 10.0.0.0/24 fd00:a::/64, bravo 10.1.0.0/24 fd00:b::/64, charlie 10.2.0.0/24
fd00:c::/64, delta 10.3.0.0/24 fd00:d::/64, echo 10.4.0.0/24 fd00:e::/64, plus tinc's default
broadcast subnets.
"""
import struct

import pytest

from tests.unit.test_packets import (MAC_A, MAC_B, arp_request, eth, icmp6_checksum_ok, ip4,
                                     ip6, ipv4_frame, ipv6_frame, naive_checksum,
                                     neighbor_solicitation, tcp_checksum, tcp_frame)
from tincapp.datapath import route as R
from tincapp.datapath.route import (AnnounceSubnet, DeliverToDevice, Dropped, FastRoute, Router,
                                    SendToNode, WithdrawSubnet)
from tincapp.mesh.graph import OPTION_CLAMP_MSS, OPTION_INDIRECT, Graph
from tincapp.mesh.subnets import DEFAULT_BROADCAST_SUBNETS, SubnetTable, parse_subnet

V7 = 0x7000000
ME = "alpha"


def link(g, a, b, options=V7, conn=None):
    g.add_edge(a, b, options=options, weight=10, connection=conn)
    g.add_edge(b, a, options=V7, weight=10)


def make_mesh(bravo_options=V7):
    g = Graph(ME, options=V7)
    link(g, ME, "bravo", options=bravo_options, conn="conn-bravo")
    link(g, "bravo", "charlie", options=V7 | OPTION_INDIRECT)
    link(g, "bravo", "delta")
    g.ensure_node("echo")
    g.run(0.0)
    t = SubnetTable(g)
    for s in DEFAULT_BROADCAST_SUBNETS:
        t.add(parse_subnet(s))
    for name, n4, n6 in (("alpha", "10.0.0.0/24", "fd00:a::/64"),
                         ("bravo", "10.1.0.0/24", "fd00:b::/64"),
                         ("charlie", "10.2.0.0/24", "fd00:c::/64"),
                         ("delta", "10.3.0.0/24", "fd00:d::/64"),
                         ("echo", "10.4.0.0/24", "fd00:e::/64")):
        t.add(parse_subnet(n4, name))
        t.add(parse_subnet(n6, name))
    return g, t


def router(mtus=None, peers=("bravo",), bravo_options=V7, **kw):
    g, t = make_mesh(bravo_options)
    mtus = mtus or {}
    return Router(ME, g, t, mtu_of=lambda n: mtus.get(n, 1518), mst_peers=lambda: list(peers),
                  **kw)


def sends(actions):
    """The frames that leave: ("device", frame) or (node name, frame)."""
    out = []
    for a in actions:
        if isinstance(a, DeliverToDevice):
            out.append(("device", a.frame))
        elif isinstance(a, SendToNode):
            out.append((a.name, a.frame))
    return out


def only_send(actions):
    s = sends(actions)
    assert len(s) == 1, actions
    return s[0]


def check_icmp4(reply, orig, type, code, *, src=None, next_mtu=0, ethlen=14):
    """Every byte of a generated ICMP error against the original frame."""
    assert reply[0:6] == orig[6:12] and reply[6:12] == orig[0:6]
    assert reply[12:ethlen] == orig[12:ethlen]
    ip, icmp = reply[ethlen:ethlen + 20], reply[ethlen + 20:]
    quote = orig[ethlen:ethlen + 548]
    assert ip[0] == 0x45 and ip[8] == 255 and ip[9] == 1
    assert struct.unpack("!H", ip[2:4])[0] == 28 + len(quote) == len(reply) - ethlen
    assert ip[12:16] == (orig[ethlen + 16:ethlen + 20] if src is None else src)
    assert ip[16:20] == orig[ethlen + 12:ethlen + 16]
    assert naive_checksum(ip) == 0
    assert icmp[0] == type and icmp[1] == code
    assert struct.unpack("!I", icmp[4:8])[0] == next_mtu
    assert icmp[8:] == quote
    assert naive_checksum(icmp) == 0


def check_icmp6(reply, orig, type, code, *, mtu=0, src=None, ethlen=14):
    assert reply[0:6] == orig[6:12] and reply[6:12] == orig[0:6]
    ip = reply[ethlen:ethlen + 40]
    quote = orig[ethlen:ethlen + 528]
    assert ip[0:4] == b"\x60\0\0\0" and ip[6] == 58 and ip[7] == 255
    assert struct.unpack("!H", ip[4:6])[0] == 8 + len(quote)
    assert ip[8:24] == (orig[ethlen + 24:ethlen + 40] if src is None else src)
    assert ip[24:40] == orig[ethlen + 8:ethlen + 24]
    icmp = reply[ethlen + 40:]
    assert icmp[0] == type and icmp[1] == code
    assert struct.unpack("!I", icmp[4:8])[0] == mtu
    assert icmp[8:] == quote
    assert icmp6_checksum_ok(reply, ethlen)


# --- router mode: IPv4 ---------------------------------------------------------------------

def test_graph_shape_is_what_the_tests_assume():
    r = router()
    g = r.graph
    assert r._via(g.node("charlie")).name == "bravo"
    assert r._via(g.node("delta")).name == "delta"
    assert r._via(g.node("bravo")).name == "bravo"
    assert not g.node("echo").reachable


def test_ipv4_unicast_goes_unchanged_to_the_owner():
    r = router()
    frame = ipv4_frame("10.0.0.1", "10.1.0.5")
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame)]
    frame = ipv4_frame("10.0.0.1", "10.2.0.5")
    assert r.route(ME, frame, 0.0) == [SendToNode("charlie", frame)]
    frame = ipv4_frame("10.1.0.5", "10.0.0.1")
    assert r.route("bravo", memoryview(frame), 0.0) == [DeliverToDevice(frame)]


def test_ipv4_no_subnet_gives_net_unknown():
    r = router()
    frame = ipv4_frame("10.0.0.1", "10.99.0.1")
    actions = r.route(ME, frame, 0.0)
    dest, reply = only_send(actions)
    assert dest == "device"
    check_icmp4(reply, frame, 3, 6)
    # From another node the error goes back to that node.
    dest, reply = only_send(r.route("bravo", ipv4_frame("10.1.0.1", "10.99.0.1"), 0.0))
    assert dest == "bravo"


def test_ipv4_unreachable_owner_gives_net_unreachable():
    r = router()
    frame = ipv4_frame("10.0.0.1", "10.4.0.1", b"u" * 1000)
    dest, reply = only_send(r.route(ME, frame, 0.0))
    assert dest == "device"
    check_icmp4(reply, frame, 3, 0)
    assert len(reply) == 14 + 576


def test_ipv4_loop_back_to_source_is_dropped():
    r = router()
    assert r.route("bravo", ipv4_frame("10.1.0.1", "10.1.0.9"), 0.0) == [Dropped(R.DROP_LOOP)]
    assert r.route(ME, ipv4_frame("10.0.0.1", "10.0.0.9"), 0.0) == [Dropped(R.DROP_LOOP)]


def test_ipv4_routing_loop_via_the_source_is_dropped():
    r = router()
    # charlie is reached via bravo; a frame from bravo for charlie would go straight back.
    actions = r.route("bravo", ipv4_frame("10.1.0.1", "10.2.0.1"), 0.0)
    assert actions == [Dropped(R.DROP_ROUTING_LOOP)]


def test_forwarding_off_refuses_transit_only():
    r = router(forwarding="off")
    frame = ipv4_frame("10.1.0.1", "10.3.0.1")
    dest, reply = only_send(r.route("bravo", frame, 0.0))
    assert dest == "bravo"
    check_icmp4(reply, frame, 3, 9)
    frame = ipv4_frame("10.1.0.1", "10.0.0.1")
    assert r.route("bravo", frame, 0.0) == [DeliverToDevice(frame)]
    frame = ipv4_frame("10.0.0.1", "10.3.0.1")
    assert r.route(ME, frame, 0.0) == [SendToNode("delta", frame)]


def test_forwarding_kernel_hands_everything_from_others_to_the_device():
    r = router(forwarding="kernel")
    for frame in (ipv4_frame("10.1.0.1", "10.3.0.1"), b"\x01\x02", arp_request()):
        assert r.route("bravo", frame, 0.0) == [DeliverToDevice(frame)]
    frame = ipv4_frame("10.0.0.1", "10.3.0.1")
    assert r.route(ME, frame, 0.0) == [SendToNode("delta", frame)]


def test_direct_only_refuses_relayed_destinations():
    r = router(direct_only=True)
    frame = ipv4_frame("10.0.0.1", "10.2.0.1")
    dest, reply = only_send(r.route(ME, frame, 0.0))
    assert dest == "device"
    check_icmp4(reply, frame, 3, 9)
    frame = ipv4_frame("10.0.0.1", "10.3.0.1")
    assert r.route(ME, frame, 0.0) == [SendToNode("delta", frame)]


def test_ipv4_too_big_with_df_is_truncated_and_answered_frag_needed():
    r = router(mtus={"bravo": 1000})
    frame = ipv4_frame("10.0.0.1", "10.1.0.5", b"d" * 1200, flags_off=0x4000)
    dest, reply = only_send(r.route(ME, frame, 0.0))
    assert dest == "device"
    check_icmp4(reply, frame[:1000], 3, 4, next_mtu=986)


def test_ipv4_mtu_floor_is_590():
    r = router(mtus={"bravo": 400})
    frame = ipv4_frame("10.0.0.1", "10.1.0.5", b"d" * (590 - 34), flags_off=0x4000)
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame)]
    frame = ipv4_frame("10.0.0.1", "10.1.0.5", b"d" * (591 - 34), flags_off=0x4000)
    dest, reply = only_send(r.route(ME, frame, 0.0))
    check_icmp4(reply, frame[:590], 3, 4, next_mtu=576)


def test_ipv4_too_big_without_df_is_fragmented_to_via():
    r = router(mtus={"bravo": 1000})
    payload = bytes(range(256)) * 5
    frame = ipv4_frame("10.0.0.1", "10.2.0.5", payload)       # charlie, via bravo
    out = sends(r.route(ME, frame, 0.0))
    assert [d for d, _ in out] == ["bravo", "bravo"]
    assert [len(f) for _, f in out] == [14 + 20 + 960, 14 + 20 + 320]
    assert [struct.unpack("!H", f[20:22])[0] for _, f in out] == [0x2000, 120]
    assert all(naive_checksum(f[14:34]) == 0 for _, f in out)
    assert out[0][1][34:] + out[1][1][34:] == payload


def test_ipv4_too_big_with_header_options_is_dropped():
    r = router(mtus={"bravo": 600})
    frame = ipv4_frame("10.0.0.1", "10.1.0.5", b"d" * 800, options=b"\x01\x01\x01\x00")
    assert r.route(ME, frame, 0.0) == [Dropped(R.DROP_BAD_FRAGMENT)]


def test_priority_inheritance_copies_tos():
    r = router(priority_inheritance=True)
    frame = ipv4_frame("10.0.0.1", "10.1.0.5", tos=0xB8)
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame, 0xB8)]
    frame = ipv6_frame("fd00:a::1", "fd00:b::5", tc=0xB8)
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame, 0xB8)]


# --- router mode: IPv6 ---------------------------------------------------------------------

def test_ipv6_unicast():
    r = router()
    frame = ipv6_frame("fd00:a::1", "fd00:d::7")
    assert r.route(ME, frame, 0.0) == [SendToNode("delta", frame)]


@pytest.mark.parametrize("src_node,dst,code,kw", [
    (ME, "fd00:99::1", 3, {}),                                # no subnet: address unreachable
    (ME, "fd00:e::1", 0, {}),                                 # owner unreachable: no route
    ("bravo", "fd00:d::1", 1, {"forwarding": "off"}),         # admin prohibited
    (ME, "fd00:c::1", 1, {"direct_only": True}),              # admin prohibited
])
def test_ipv6_unreachable_codes(src_node, dst, code, kw):
    r = router(**kw)
    frame = ipv6_frame("fd00:a::1", dst, b"v" * 700)
    dest, reply = only_send(r.route(src_node, frame, 0.0))
    assert dest == ("device" if src_node == ME else src_node)
    check_icmp6(reply, frame, 1, code)


def test_ipv6_too_big_is_truncated_and_answered_packet_too_big():
    r = router(mtus={"bravo": 1400})
    frame = ipv6_frame("fd00:a::1", "fd00:b::5", b"w" * 1446)    # 1500 bytes
    dest, reply = only_send(r.route(ME, frame, 0.0))
    assert dest == "device"
    check_icmp6(reply, frame[:1400], 2, 0, mtu=1386)
    # Never below 1294.
    r = router(mtus={"bravo": 1000})
    frame = ipv6_frame("fd00:a::1", "fd00:b::5", b"w" * (1294 - 54))
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame)]
    frame = ipv6_frame("fd00:a::1", "fd00:b::5", b"w" * (1300 - 54))
    dest, reply = only_send(r.route(ME, frame, 0.0))
    check_icmp6(reply, frame[:1294], 2, 0, mtu=1280)


# --- ICMP rate limit ------------------------------------------------------------------------

def test_at_most_three_icmp_messages_per_second():
    r = router()
    frame = ipv4_frame("10.0.0.1", "10.99.0.1")
    counts = []
    for now in (5.0, 5.2, 5.4, 5.9, 6.0, 6.1):
        counts.append(len(sends(r.route(ME, frame, now))))
    assert counts == [1, 1, 1, 0, 1, 1]
    assert r.route(ME, frame, 6.2) != [] and r.route(ME, frame, 6.3) == \
        [Dropped(R.DROP_ICMP_RATELIMIT)]


# --- DecrementTTL ---------------------------------------------------------------------------

def test_decrement_ttl_on_transit_only():
    r = router(decrement_ttl=True)
    frame = ipv4_frame("10.1.0.1", "10.3.0.1", ttl=64)
    dest, out = only_send(r.route("bravo", frame, 0.0))
    assert dest == "delta" and out[22] == 63
    assert naive_checksum(out[14:34]) == 0
    assert out[:22] == frame[:22] and out[26:] == frame[26:]
    # Our own packets and packets for us keep their TTL.
    frame = ipv4_frame("10.0.0.1", "10.3.0.1", ttl=64)
    assert r.route(ME, frame, 0.0) == [SendToNode("delta", frame)]
    frame = ipv4_frame("10.1.0.1", "10.0.0.1", ttl=1)
    assert r.route("bravo", frame, 0.0) == [DeliverToDevice(frame)]


def test_ttl_expiry_answers_time_exceeded():
    r = router(decrement_ttl=True)
    frame = ipv4_frame("10.1.0.1", "10.3.0.1", ttl=1)
    dest, reply = only_send(r.route("bravo", frame, 0.0))
    assert dest == "bravo"
    check_icmp4(reply, frame, 11, 0)
    # The local address for the source is used when the shell can name it.
    g, t = make_mesh()
    r = Router(ME, g, t, decrement_ttl=True, local_address_of=lambda a: ip4("10.0.0.254"))
    dest, reply = only_send(r.route("bravo", frame, 0.0))
    check_icmp4(reply, frame, 11, 0, src=ip4("10.0.0.254"))


def test_expired_time_exceeded_is_not_answered():
    r = router(decrement_ttl=True)
    te = bytes([11, 0, 0, 0, 0, 0, 0, 0]) + b"quoted"
    frame = ipv4_frame("10.1.0.1", "10.3.0.1", te, ttl=1, proto=1)
    assert r.route("bravo", frame, 0.0) == [Dropped(R.DROP_TTL)]


def test_hop_limit_decrement_and_expiry():
    r = router(decrement_ttl=True)
    frame = ipv6_frame("fd00:b::1", "fd00:d::1", hlim=9)
    dest, out = only_send(r.route("bravo", frame, 0.0))
    assert dest == "delta" and out[21] == 8 and out[:21] == frame[:21] and out[22:] == frame[22:]
    frame = ipv6_frame("fd00:b::1", "fd00:d::1", hlim=1)
    dest, reply = only_send(r.route("bravo", frame, 0.0))
    assert dest == "bravo"
    check_icmp6(reply, frame, 3, 0)
    te = bytes([3, 0, 0, 0, 0, 0, 0, 0])
    frame = ipv6_frame("fd00:b::1", "fd00:d::1", te, hlim=1, nxt=58)
    assert r.route("bravo", frame, 0.0) == [Dropped(R.DROP_TTL)]


# --- MSS clamping ---------------------------------------------------------------------------

def test_mss_is_clamped_when_via_asks_for_it():
    r = router(mtus={"bravo": 1400}, bravo_options=V7 | OPTION_CLAMP_MSS)
    frame = tcp_frame()
    dest, out = only_send(r.route(ME, frame, 0.0))
    assert dest == "bravo"
    assert struct.unpack("!H", out[56:58])[0] == 1400 - 34 - 20
    assert tcp_checksum("10.0.0.1", "10.1.0.5", out[34:]) == 0
    frame = tcp_frame(v6=True)
    dest, out = only_send(r.route(ME, frame, 0.0))
    assert struct.unpack("!H", out[76:78])[0] == 1400 - 54 - 20
    assert tcp_checksum("fd00:a::1", "fd00:b::5", out[54:], v6=True) == 0


def test_mss_uses_the_smaller_of_source_and_via_mtu():
    r = router(mtus={"bravo": 1500, ME: 1300}, bravo_options=V7 | OPTION_CLAMP_MSS)
    dest, out = only_send(r.route(ME, tcp_frame(), 0.0))
    assert struct.unpack("!H", out[56:58])[0] == 1300 - 54


def test_mss_is_left_alone_without_clamp_option():
    r = router(mtus={"bravo": 1400})
    frame = tcp_frame()
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame)]


# --- ARP and NDP proxies --------------------------------------------------------------------

def test_arp_request_for_another_node_is_answered_on_the_device():
    r = router()
    req = arp_request("10.0.0.1", "10.2.0.7")
    fake = MAC_A[:5] + bytes([MAC_A[5] ^ 0xFF])
    expected = (b"\xff" * 6 + MAC_A + b"\x08\x06" + bytes.fromhex("0001080006040002") + fake
                + ip4("10.2.0.7") + MAC_A + ip4("10.0.0.1"))
    assert r.route(ME, req, 0.0) == [DeliverToDevice(expected)]


@pytest.mark.parametrize("source,target", [
    (ME, "10.0.0.7"),       # ours
    (ME, "10.77.0.1"),      # unknown
    ("bravo", "10.2.0.7"),  # not from our device
])
def test_arp_requests_that_are_ignored(source, target):
    r = router()
    assert sends(r.route(source, arp_request("10.0.0.1", target), 0.0)) == []


def test_neighbor_solicitation_is_answered_with_advertisement():
    r = router()
    ns = neighbor_solicitation("fd00:c::5")
    dest, na = only_send(r.route(ME, ns, 0.0))
    fake = MAC_A[:5] + bytes([MAC_A[5] ^ 0xFF])
    assert dest == "device"
    assert na[:14] == MAC_A + fake + b"\x86\xdd"
    assert na[22:38] == ip6("fd00:c::5") and na[38:54] == ip6("fd00:a::1")
    assert na[54] == 136 and na[58:62] == b"\x40\0\0\0" and na[78:86] == b"\x02\x01" + fake
    assert icmp6_checksum_ok(na)


@pytest.mark.parametrize("source,kw", [
    (ME, {"target": "fd00:a::5"}),        # ours
    (ME, {"target": "fd00:77::1"}),       # unknown
    (ME, {"target": "fd00:c::5", "bad_sum": True}),
    ("bravo", {"target": "fd00:c::5"}),
])
def test_neighbor_solicitations_that_are_ignored(source, kw):
    r = router()
    assert sends(r.route(source, neighbor_solicitation(**kw), 0.0)) == []


def test_other_ethertypes_and_short_frames_are_dropped():
    r = router()
    assert r.route(ME, eth(0x88CC) + b"lldp", 0.0) == [Dropped(R.DROP_UNKNOWN_TYPE)]
    assert r.route(ME, b"\0" * 13, 0.0) == [Dropped(R.DROP_SHORT)]
    assert r.route(ME, ipv4_frame()[:33], 0.0) == [Dropped(R.DROP_SHORT)]
    assert r.route(ME, ipv6_frame()[:53], 0.0) == [Dropped(R.DROP_SHORT)]


# --- broadcast ------------------------------------------------------------------------------

def bcast_frame():
    return ipv4_frame("10.0.0.1", "255.255.255.255")


def test_mst_broadcast_from_us_goes_to_every_mst_peer():
    r = router(peers=("bravo", "zulu"))
    r.graph.ensure_node("zulu")       # unreachable peers are dropped like any unicast
    frame = bcast_frame()
    assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame)]


def test_mst_broadcast_from_others_reaches_the_device_but_not_the_incoming_side():
    g = Graph(ME, options=V7)
    link(g, ME, "bravo", conn="c1")
    link(g, ME, "foxtrot", conn="c2")
    link(g, "bravo", "delta")
    g.run(0.0)
    t = SubnetTable(g)
    t.add(parse_subnet("255.255.255.255"))
    r = Router(ME, g, t, mst_peers=lambda: ["bravo", "foxtrot"])
    frame = ipv4_frame("10.3.0.1", "255.255.255.255")
    # delta's nexthop is bravo: the copy goes to our device and foxtrot only.
    assert sends(r.route("delta", frame, 0.0)) == [("device", frame), ("foxtrot", frame)]
    assert sends(r.route("foxtrot", frame, 0.0)) == [("device", frame), ("bravo", frame)]


def test_direct_broadcast_only_for_our_own_frames_to_one_hop_nodes():
    r = router(broadcast="direct")
    frame = bcast_frame()
    # bravo (via itself) and delta (direct UDP, via itself); charlie is relayed.
    assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame), ("delta", frame)]
    assert sends(r.route("bravo", frame, 0.0)) == [("device", frame)]


@pytest.mark.parametrize("kw", [{"broadcast": "no"}, {"tunnel_server": True}])
def test_no_broadcast_forwarding(kw):
    r = router(**kw)
    frame = bcast_frame()
    assert sends(r.route(ME, frame, 0.0)) == []
    assert sends(r.route("bravo", frame, 0.0)) == [("device", frame)]


def test_multicast_and_ipv6_broadcast_subnets():
    r = router()
    frame = ipv4_frame("10.0.0.1", "239.1.2.3")
    assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame)]
    frame = ipv6_frame("fd00:a::1", "ff02::1")
    assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame)]


def test_broadcast_decrements_ttl_of_transit_frames():
    r = router(decrement_ttl=True, peers=("bravo",))
    frame = ipv4_frame("10.1.0.1", "255.255.255.255", ttl=5)
    dest, out = only_send(r.route("bravo", frame, 0.0))
    assert dest == "device" and out[22] == 4 and naive_checksum(out[14:34]) == 0


# --- hub mode -------------------------------------------------------------------------------

def test_hub_mode_broadcasts_everything():
    r = router(mode="hub", peers=("bravo",))
    frame = MAC_B + MAC_A + b"\x08\x00" + b"anything at all"
    assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame)]
    assert sends(r.route("bravo", frame, 0.0)) == [("device", frame)]


# --- switch mode ----------------------------------------------------------------------------

MAC_BRAVO = bytes.fromhex("0200000000bb")
MAC_DELTA = bytes.fromhex("0200000000dd")
MAC_CHARLIE = bytes.fromhex("0200000000cc")


def switch(**kw):
    r = router(mode="switch", **kw)
    r.subnets.add(parse_subnet("02:00:00:00:00:bb", "bravo"))
    r.subnets.add(parse_subnet("02:00:00:00:00:dd", "delta"))
    r.subnets.add(parse_subnet("02:00:00:00:00:cc", "charlie"))
    return r


def apply(r, actions):
    """What the meta layer does with the router's subnet actions."""
    for a in actions:
        if isinstance(a, AnnounceSubnet):
            assert r.subnets.add(a.subnet)
        elif isinstance(a, WithdrawSubnet):
            assert r.subnets.delete(a.subnet)


def test_switch_learns_source_macs_and_expires_them():
    r = switch(mac_expire_s=30)
    mine = bytes.fromhex("0200000000a1")
    frame = eth(0x0800, dst=MAC_BRAVO, src=mine) + b"payload"
    actions = r.route(ME, frame, 100.0)
    learnt = parse_subnet("02:00:00:00:00:a1", ME)
    assert actions == [AnnounceSubnet(learnt), SendToNode("bravo", frame)]
    assert learnt.weight == 10
    apply(r, actions)
    assert r.next_deadline() == 110.0
    # Known now: refreshed, not announced again.
    assert r.route(ME, frame, 105.0) == [SendToNode("bravo", frame)]
    assert r.learnt_macs() == {mine: 135.0}
    # Frames for it from elsewhere now reach the device.
    back = eth(0x0800, dst=mine, src=MAC_BRAVO) + b"reply"
    assert r.route("bravo", back, 106.0) == [DeliverToDevice(back)]
    assert r.handle_deadline(110.0) == []
    assert r.next_deadline() == 120.0
    assert r.handle_deadline(130.0) == []
    assert r.next_deadline() == 140.0
    out = r.handle_deadline(140.0)
    assert out == [WithdrawSubnet(learnt)]
    apply(r, out)
    assert r.next_deadline() is None and r.learnt_macs() == {}


def test_switch_does_not_learn_configured_macs_or_frames_from_others():
    r = switch()
    r.subnets.add(parse_subnet("02:00:00:00:00:a2", ME))
    frame = eth(0x0800, dst=MAC_BRAVO, src=bytes.fromhex("0200000000a2")) + b"p"
    assert r.route(ME, frame, 0.0) == [SendToNode("bravo", frame)]
    frame = eth(0x0800, dst=MAC_DELTA, src=bytes.fromhex("0200000000b9")) + b"p"
    assert r.route("bravo", frame, 0.0) == [SendToNode("delta", frame)]
    assert r.next_deadline() is None


def test_switch_unknown_and_broadcast_destinations_are_broadcast():
    r = switch(peers=("bravo",))
    for dst in (b"\xff" * 6, bytes.fromhex("020000000077")):
        frame = eth(0x0800, dst=dst, src=MAC_BRAVO) + b"p"
        assert sends(r.route("bravo", frame, 0.0)) == [("device", frame)]
        frame = eth(0x0800, dst=dst, src=MAC_A) + b"p"
        assert sends(r.route(ME, frame, 0.0)) == [("bravo", frame)]


def test_switch_drops_loops_forwarding_off_and_direct_only():
    r = switch()
    frame = eth(0x0800, dst=MAC_BRAVO, src=MAC_A) + b"p"
    assert r.route("bravo", frame, 0.0) == [Dropped(R.DROP_LOOP)]
    r = switch(forwarding="off")
    frame = eth(0x0800, dst=MAC_DELTA, src=MAC_BRAVO) + b"p"
    assert r.route("bravo", frame, 0.0) == [Dropped(R.DROP_FORWARDING_OFF)]
    r = switch(direct_only=True)
    frame = eth(0x0800, dst=MAC_CHARLIE, src=MAC_A) + b"p"
    assert r.route(ME, frame, 0.0)[-1] == Dropped(R.DROP_DIRECT_ONLY)


def test_switch_too_big_ipv4_with_df_answers_frag_needed():
    r = switch(mtus={"bravo": 1000})
    frame = ipv4_frame("10.0.0.1", "10.0.0.2", b"s" * 1200, flags_off=0x4000,
                       link=eth(0x0800, dst=MAC_BRAVO, src=MAC_A))
    out = r.route(ME, frame, 0.0)
    dest, reply = only_send(out)
    assert dest == "device"
    check_icmp4(reply, frame[:1000], 3, 4, next_mtu=986)


def test_switch_too_big_ipv4_without_df_is_fragmented_and_small_frames_pass():
    r = switch(mtus={"bravo": 700})
    frame = ipv4_frame("10.0.0.1", "10.0.0.2", b"s" * 1000,
                       link=eth(0x0800, dst=MAC_BRAVO, src=MAC_A))
    out = sends(r.route(ME, frame, 0.0))
    # (max(700, 590) - 34) & ~7 = 664
    assert [(d, len(f) - 34) for d, f in out] == [("bravo", 664), ("bravo", 336)]
    # Over via's MTU but not over 576 + header: sent anyway.
    frame = ipv4_frame("10.0.0.1", "10.0.0.2", b"s" * (590 - 34),
                       link=eth(0x0800, dst=MAC_BRAVO, src=MAC_A))
    r = switch(mtus={"bravo": 500})
    assert r.route(ME, frame, 0.0)[-1] == SendToNode("bravo", frame)


def test_switch_too_big_ipv6_and_vlan_tagged_frames():
    r = switch(mtus={"bravo": 1400})
    tag = MAC_BRAVO + MAC_A + b"\x81\x00\x00\x09\x86\xdd"
    frame = ipv6_frame("fd00:a::1", "fd00:a::2", b"t" * 1420, link=tag)
    dest, reply = only_send(r.route(ME, frame, 0.0))
    check_icmp6(reply, frame[:1400], 2, 0, mtu=1400 - 18, ethlen=18)


def test_switch_decrement_ttl_with_vlan_tag():
    r = switch(decrement_ttl=True)
    tag = MAC_DELTA + MAC_BRAVO + b"\x81\x00\x00\x09\x08\x00"
    frame = ipv4_frame("10.0.0.1", "10.0.0.2", ttl=7, link=tag)
    dest, out = only_send(r.route("bravo", frame, 0.0))
    assert dest == "delta" and out[18 + 8] == 6 and naive_checksum(out[18:38]) == 0


def test_switch_to_unreachable_owner_is_dropped():
    r = switch()
    r.subnets.add(parse_subnet("02:00:00:00:00:ee", "echo"))
    frame = eth(0x0800, dst=bytes.fromhex("0200000000ee"), src=MAC_A) + b"p"
    assert r.route(ME, frame, 0.0)[-1] == Dropped(R.DROP_UNREACHABLE)


# --- fast path ------------------------------------------------------------------------------

def test_fast_route_for_plain_unicast():
    r = router(mtus={"bravo": 1400})
    frame = ipv4_frame("10.0.0.1", "10.2.0.9")
    fast = r.fast_route(ME, frame)
    assert fast == FastRoute("charlie", 0x0800, 1400, False)
    assert r.fast_route_key(ME, frame) == (ME, 0x0800, ip4("10.2.0.9"))
    assert fast.accepts(frame)
    assert not fast.accepts(ipv4_frame("10.0.0.1", "10.2.0.9", b"x" * 1400))
    frame6 = ipv6_frame("fd00:a::1", "fd00:b::9")
    fast6 = r.fast_route(ME, frame6)
    assert fast6 == FastRoute("bravo", 0x86DD, 1400, False)
    assert not fast6.accepts(neighbor_solicitation("fd00:b::9"))


def test_fast_route_agrees_with_route_where_it_answers():
    r = router(mtus={"bravo": 1400}, bravo_options=V7 | OPTION_CLAMP_MSS)
    cases = [ipv4_frame("10.0.0.1", d) for d in ("10.1.0.1", "10.2.0.1", "10.3.0.1")]
    cases += [tcp_frame(), ipv4_frame("10.0.0.1", "10.1.0.1", b"x" * 1500)]
    for frame in cases:
        fast = r.fast_route(ME, frame)
        if fast is not None:
            assert r.route(ME, frame, 0.0) == [SendToNode(fast.name, frame)]
    assert r.fast_route(ME, tcp_frame()) is None
    fast = r.fast_route(ME, ipv4_frame("10.0.0.1", "10.1.0.1"))
    assert fast.clamp_mss and not fast.accepts(tcp_frame())
    # Only SYNs carry the MSS option: the rest of a TCP stream takes the fast path.
    ack = bytearray(tcp_frame(options=b""))
    ack[14 + 20 + 13] = 0x10                        # Ethernet, IPv4, TCP flags: ACK
    ack = bytes(ack)
    assert r.fast_route(ME, ack) == FastRoute("bravo", 0x0800, 1400, True)
    assert r.route(ME, ack, 0.0) == [SendToNode("bravo", ack)]


@pytest.mark.parametrize("source,frame,kw", [
    (ME, ipv4_frame("10.0.0.1", "10.0.0.9"), {}),                    # for us
    (ME, ipv4_frame("10.0.0.1", "10.4.0.9"), {}),                    # unreachable
    (ME, ipv4_frame("10.0.0.1", "10.99.0.9"), {}),                   # unknown
    (ME, ipv4_frame("10.0.0.1", "255.255.255.255"), {}),             # broadcast
    ("bravo", ipv4_frame("10.1.0.1", "10.2.0.9"), {}),               # routing loop
    ("bravo", ipv4_frame("10.1.0.1", "10.3.0.9"), {"decrement_ttl": True}),
    ("bravo", ipv4_frame("10.1.0.1", "10.3.0.9"), {"forwarding": "off"}),
    (ME, ipv4_frame("10.0.0.1", "10.2.0.9"), {"direct_only": True}),
    (ME, ipv4_frame("10.0.0.1", "10.1.0.9"), {"priority_inheritance": True}),
    (ME, ipv4_frame("10.0.0.1", "10.1.0.9"), {"mode": "switch"}),
    (ME, arp_request(), {}),
])
def test_fast_route_declines(source, frame, kw):
    assert router(**kw).fast_route(source, frame) is None


def test_arp_for_an_unreachable_nodes_address_is_still_answered():
    # COMPAT: route_arp checks ownership, not reachability.
    r = router()
    reply = only_send(r.route(ME, arp_request("10.0.0.1", "10.4.0.7"), 0.0))
    assert reply[0] == "device" and reply[1][20:22] == b"\x00\x02"


def test_a_learnt_mac_claimed_by_another_node_expires_at_the_next_age_run():
    r = switch(mac_expire_s=600)
    mine = bytes.fromhex("0200000000a3")
    apply(r, r.route(ME, eth(0x0800, dst=MAC_BRAVO, src=mine) + b"p", 0.0))
    r.subnet_added(parse_subnet("02:00:00:00:00:bb", "bravo"))      # some other MAC: no effect
    r.subnet_added(parse_subnet("02:00:00:00:00:a3", "delta"))
    assert r.handle_deadline(5.0) == [] and r.next_deadline() == 10.0
    assert r.handle_deadline(10.0) == [WithdrawSubnet(parse_subnet("02:00:00:00:00:a3", ME))]
