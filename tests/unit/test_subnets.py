"""Subnets: tinc's text format (str2net/net2str), ordering and lookup rules (src/subnet*.c)."""
import ipaddress
import socket

import pytest

from tincapp.errors import WireError
from tincapp.mesh.graph import Graph
from tincapp.mesh.subnets import (DEFAULT_BROADCAST_SUBNETS, Subnet, SubnetTable, SubnetType,
                                  format_ipv6, parse_subnet)

V7 = 0x700000C


def ip4(text):
    return ipaddress.IPv4Address(text).packed


def ip6(text):
    return ipaddress.IPv6Address(text).packed


# --- text format --------------------------------------------------------------------------

@pytest.mark.parametrize("text, canonical, stype, prefix, weight", [
    ("10.0.0.0/8", "10.0.0.0/8", SubnetType.IPV4, 8, 10),
    ("10.1.2.3", "10.1.2.3", SubnetType.IPV4, 32, 10),
    ("10.1.2.3/32", "10.1.2.3", SubnetType.IPV4, 32, 10),
    ("10.0.0.0/8#5", "10.0.0.0/8#5", SubnetType.IPV4, 8, 5),
    ("10.0.0.0/8#10", "10.0.0.0/8", SubnetType.IPV4, 8, 10),
    ("0.0.0.0/0", "0.0.0.0/0", SubnetType.IPV4, 0, 10),
    ("fd00::/8", "fd00::/8", SubnetType.IPV6, 8, 10),
    ("FD00:0:0:0:0:0:0:1", "fd00::1", SubnetType.IPV6, 128, 10),
    ("2001:db8:0:0:1:0:0:1/128", "2001:db8::1:0:0:1", SubnetType.IPV6, 128, 10),
    ("::ffff:10.0.0.1", "::ffff:10.0.0.1", SubnetType.IPV6, 128, 10),
    ("::1.2.3.4#7", "::1.2.3.4#7", SubnetType.IPV6, 128, 7),
    ("02:00:00:00:00:01", "02:00:00:00:00:01", SubnetType.MAC, 48, 10),
    ("2:0:0:0:0:A1#20", "02:00:00:00:00:a1#20", SubnetType.MAC, 48, 20),
    # sscanf leniencies tinc inherits
    ("10.0.0.0/ 8", "10.0.0.0/8", SubnetType.IPV4, 8, 10),
    ("10.0.0.0/+8#-3", "10.0.0.0/8#-3", SubnetType.IPV4, 8, -3),
    ("10.0.0.0/4294967304", "10.0.0.0/8", SubnetType.IPV4, 8, 10),   # %d wraps to 32 bits
    ("100:0:0:0:0:1ff", "00:00:00:00:00:ff", SubnetType.MAC, 48, 10),  # parts cut to a byte
    ("-1:0x2:0X:0:0:0", "ff:02:00:00:00:00", SubnetType.MAC, 48, 10),
])
def test_parse_and_format(text, canonical, stype, prefix, weight):
    s = Subnet.parse(text, owner="bob")
    assert (s.type, s.prefixlength, s.weight, s.owner) == (stype, prefix, weight, "bob")
    assert str(s) == canonical
    assert Subnet.parse(str(s), owner="bob") == s


@pytest.mark.parametrize("text", [
    "", "hello", "10.0.0.0/33", "::/129", "10.0.0.0/-1", "10.0.0.0/", "10.0.0.0/8#",
    "10.0.0.0/8#x", "10.0.0.0/8#5x", "10.0.0.0/8 ", "010.0.0.1", "10.0.0", "10.0.0.256",
    "1.2.3.4.5", "fe80::1%eth0", "[fe80::1]", "1::2::3", "02:00:00:00:00:01/48",
    "02:00:00:00:00", "02:00:00:00:00:01:02", "10.0.0.0#5/8", " 10.0.0.0",
    "10.0.0.0/8#99999999999999999999x",
])
def test_parse_rejects(text):
    with pytest.raises(WireError):
        Subnet.parse(text)


def test_text_is_cut_at_63_characters_like_tincs_buffer():
    assert str(parse_subnet("10.0.0.0/8#" + "0" * 51 + "7")) == "10.0.0.0/8#7"
    assert str(parse_subnet("10.0.0.0/8#" + "0" * 52 + "7")) == "10.0.0.0/8#0"


def test_host_bits_are_kept_and_only_checked_on_request():
    s = parse_subnet("10.1.2.3/8")
    assert str(s) == "10.1.2.3/8"
    assert not s.is_canonical()
    assert parse_subnet("10.0.0.0/8").is_canonical()
    assert parse_subnet("fd00::1/64").is_canonical() is False
    assert parse_subnet("02:00:00:00:00:01").is_canonical()


def test_script_variables():
    s = parse_subnet("10.0.0.0/8#5")
    assert (s.text_without_weight(), s.weight_text()) == ("10.0.0.0/8", "5")
    s = parse_subnet("fd00::1")
    assert (s.text_without_weight(), s.weight_text()) == ("fd00::1", "")


@pytest.mark.parametrize("text", [
    "::", "::1", "1::", "1:0:0:1:0:0:0:1", "::1.2.3.4", "::ffff:1.2.3.4", "::0.0.0.1",
    "1:2:3:4:5:6:7:8", "0:0:1:0:0:0:1:0", "::ffff:0:1.2.3.4", "0:0:0:0:0:1:0:0", "fe80::",
    "::fffe:1.2.3.4", "1:0:0:0:0:0:0:0",
])
def test_ipv6_text_matches_the_c_library(text):
    raw = socket.inet_pton(socket.AF_INET6, text)
    assert format_ipv6(raw) == socket.inet_ntop(socket.AF_INET6, raw)


# --- ordering and lookup ------------------------------------------------------------------

def mesh(*reachable):
    g = Graph("alice", options=V7)
    for name in reachable:
        g.add_edge("alice", name, options=V7, weight=10)
        g.add_edge(name, "alice", options=V7, weight=10)
    g.run(now=1.0)
    return g


def table(g, *entries):
    t = SubnetTable(g)
    for text, owner in entries:
        assert t.add(parse_subnet(text, owner))
    return t


def test_dump_order_is_type_then_longest_prefix_then_address_weight_owner():
    t = table(mesh(), *[(s, None) for s in DEFAULT_BROADCAST_SUBNETS],
              ("10.0.0.0/8", "bob"), ("10.1.0.0/16#5", "carol"), ("10.1.0.0/16", "bob"),
              ("10.1.0.0/16", "alice"), ("fd00::/16", "bob"), ("02:00:00:00:00:01", "bob"))
    assert [f"{s} {s.owner}" for s in t] == [
        "02:00:00:00:00:01 bob", "ff:ff:ff:ff:ff:ff None",
        "255.255.255.255 None", "10.1.0.0/16#5 carol", "10.1.0.0/16 alice", "10.1.0.0/16 bob",
        "10.0.0.0/8 bob", "224.0.0.0/4 None",
        "fd00::/16 bob", "ff00::/8 None"]


def test_longest_prefix_wins():
    t = table(mesh("bob", "carol"), ("10.0.0.0/8", "bob"), ("10.1.0.0/16", "carol"))
    assert t.lookup_ipv4(ip4("10.1.2.3")).owner == "carol"
    assert t.lookup_ipv4(ip4("10.2.2.3")).owner == "bob"
    assert t.lookup_ipv4(ip4("11.0.0.1")) is None


def test_lower_weight_wins_among_equal_prefixes_then_owner_name():
    t = table(mesh("bob", "carol", "dave"), ("10.0.0.0/8#20", "bob"), ("10.0.0.0/8#5", "dave"),
              ("10.0.0.0/8#5", "carol"))
    assert t.lookup_ipv4(ip4("10.9.9.9")).owner == "carol"


def test_unreachable_owners_are_skipped_and_the_last_match_is_the_fallback():
    g = mesh("bob")
    t = table(g, ("10.1.0.0/16", "carol"), ("10.0.0.0/8", "bob"), ("10.0.0.0/8#50", "dave"))
    assert t.lookup_ipv4(ip4("10.1.0.1")).owner == "bob"
    # Nothing reachable matches 10.1/16 on its own: the last match in order (unreachable
    # owner) is returned, and the router then answers "network unreachable".
    t2 = table(mesh(), ("10.1.0.0/16", "carol"), ("10.0.0.0/8", "dave"))
    assert t2.lookup_ipv4(ip4("10.1.0.1")).owner == "dave"


def test_broadcast_subnets_match_without_owner():
    t = table(mesh(), *[(s, None) for s in DEFAULT_BROADCAST_SUBNETS])
    assert t.lookup_ipv4(ip4("255.255.255.255")).owner is None
    assert t.lookup_ipv4(ip4("239.1.2.3")).owner is None
    assert t.lookup_ipv6(ip6("ff02::1")).owner is None
    assert t.lookup_mac(bytes.fromhex("ffffffffffff")).owner is None
    assert t.lookup_mac(bytes.fromhex("ffffffffff00")) is None


def test_ipv6_and_mac_lookup():
    t = table(mesh("bob", "carol"), ("fd00::/16", "bob"), ("fd00:1::/32", "carol"),
              ("02:00:00:00:00:01", "bob"))
    assert t.lookup_ipv6(ip6("fd00:1::5")).owner == "carol"
    assert t.lookup_ipv6(ip6("fd00:2::5")).owner == "bob"
    assert t.lookup_ipv6(ip6("fe80::1")) is None
    assert t.lookup_mac(bytes.fromhex("020000000001")).owner == "bob"
    assert t.lookup_mac(bytes.fromhex("020000000002")) is None
    # IPv4 lookups never see IPv6 or MAC subnets.
    assert t.lookup_ipv4(bytes(4)) is None


def test_cache_follows_graph_runs():
    g = Graph("alice", options=V7)
    g.add_edge("alice", "bob", options=V7)
    g.add_edge("bob", "alice", options=V7)
    g.add_edge("alice", "carol", options=V7)
    g.add_edge("carol", "alice", options=V7)
    g.run(now=1.0)
    t = table(g, ("10.0.0.0/8#5", "bob"), ("10.0.0.0/8#7", "carol"))
    assert t.lookup_ipv4(ip4("10.0.0.1")).owner == "bob"
    g.del_edge("bob", "alice")
    g.run(now=2.0)
    assert t.lookup_ipv4(ip4("10.0.0.1")).owner == "carol"


def test_cache_follows_changes():
    t = table(mesh("bob", "carol"), ("10.0.0.0/8", "bob"))
    assert t.lookup_ipv4(ip4("10.0.0.1")).owner == "bob"
    t.add(parse_subnet("10.0.0.1", "carol"))            # host route: its own entry flushed
    assert t.lookup_ipv4(ip4("10.0.0.1")).owner == "carol"
    t.add(parse_subnet("10.0.0.0/24", "carol"))         # other prefixes flush the family
    assert t.lookup_ipv4(ip4("10.0.0.2")).owner == "carol"
    assert t.delete(parse_subnet("10.0.0.0/24", "carol"))
    assert t.lookup_ipv4(ip4("10.0.0.2")).owner == "bob"
    assert t.delete(parse_subnet("10.0.0.1", "carol"))
    assert t.lookup_ipv4(ip4("10.0.0.1")).owner == "bob"
    t.add(parse_subnet("fd00::1", "carol"))
    t.add(parse_subnet("fd00::/16", "bob"))
    assert t.lookup_ipv6(ip6("fd00::2")).owner == "bob"
    t.add(parse_subnet("fd00::/64", "carol"))
    assert t.lookup_ipv6(ip6("fd00::2")).owner == "carol"


def test_mac_cache_is_shared_between_owner_and_global_lookups():
    # COMPAT: learn_mac asks "is this MAC ours?" through the same cache the router fills.
    g = mesh("bob")
    t = table(g, ("02:00:00:00:00:01", "bob"))
    mac = bytes.fromhex("020000000001")
    assert t.lookup_mac(mac).owner == "bob"
    assert t.lookup_mac(mac, owner="alice").owner == "bob"     # cached global answer
    t.flush_cache()
    assert t.lookup_mac(mac, owner="alice") is None


def test_add_delete_and_owner_views():
    t = table(mesh("bob"), ("10.0.0.0/8", "bob"), ("fd00::/16", "bob"), ("10.0.0.0/8#5", "bob"))
    assert not t.add(parse_subnet("10.0.0.0/8", "bob"))          # already known
    assert [str(s) for s in t.owned_by("bob")] == ["10.0.0.0/8#5", "10.0.0.0/8", "fd00::/16"]
    assert t.lookup("bob", parse_subnet("10.0.0.0/8")) == parse_subnet("10.0.0.0/8", "bob")
    assert t.lookup("bob", parse_subnet("10.0.0.0/8#6")) is None  # weight is identity
    assert t.lookup("carol", parse_subnet("10.0.0.0/8")) is None
    assert not t.delete(parse_subnet("10.0.0.0/8", "carol"))
    assert [str(s) for s in t.delete_owner("bob")] == ["10.0.0.0/8#5", "10.0.0.0/8", "fd00::/16"]
    assert len(t) == 0 and t.owned_by("bob") == []


def test_owned_subnet_equal_to_a_broadcast_one_is_not_indexed():
    # COMPAT: tinc's compare ignores the owner when one side has none; the global tree refuses
    # the duplicate, so the node's copy is neither dumped nor looked up.
    t = table(mesh("bob"), ("255.255.255.255", None))
    assert t.add(parse_subnet("255.255.255.255", "bob"))
    assert [s.owner for s in t] == [None]
    assert t.owned_by("bob") == [parse_subnet("255.255.255.255", "bob")]
    assert t.lookup_ipv4(ip4("255.255.255.255")).owner is None
    assert t.delete(parse_subnet("255.255.255.255", "bob"))
    assert [s.owner for s in t] == [None]


def test_match_edges():
    s = parse_subnet("10.1.2.128/25")
    assert s.matches(ip4("10.1.2.255")) and not s.matches(ip4("10.1.2.127"))
    assert parse_subnet("0.0.0.0/0").matches(ip4("1.2.3.4"))
    assert parse_subnet("fd00::/7").matches(ip6("fdff::1"))
    assert not parse_subnet("fd00::/8").matches(ip6("fc00::1"))
