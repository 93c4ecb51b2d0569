"""Meta-protocol request texts: spec examples parse and format back byte for byte; malformed
variants of every request raise WireError naming the request; subnet text is tinc's."""
import socket

import pytest

from tincapp.errors import WireError
from tincapp.mesh.subnets import Subnet, SubnetType, parse_subnet
from tincapp.meta import messages as m

# Examples from spec/meta-protocol.md (base64 shortened where the spec elides it).
SPEC_EXAMPLES = [
    (b"0 alice 17.7", m.Id("alice", 17, 7)),
    (b"4 655 23 700000c", m.Ack("655", 23, 0x700000C)),
    (b"7", m.Termreq()),
    (b"8", m.Ping()),
    (b"9", m.Pong()),
    (b"10 3fa1c2d9 bob 10.2.0.0/16",
     m.AddSubnet(0x3FA1C2D9, "bob", Subnet(SubnetType.IPV4, bytes([10, 2, 0, 0]), 16))),
    (b"11 82c4 bob 10.2.0.0/16#5",
     m.DelSubnet(0x82C4, "bob", Subnet(SubnetType.IPV4, bytes([10, 2, 0, 0]), 16, 5))),
    (b"12 6b8b4567 alice bob 198.51.100.7 655 700000c 41 192.168.1.10 655",
     m.AddEdge(0x6B8B4567, "alice", "bob", "198.51.100.7", "655", 0x700000C, 41,
               "192.168.1.10", "655")),
    (b"12 6b8b4567 alice bob 198.51.100.7 655 700000c 41",
     m.AddEdge(0x6B8B4567, "alice", "bob", "198.51.100.7", "655", 0x700000C, 41)),
    (b"12 1 alice bob unspec unspec 0 10", m.AddEdge(1, "alice", "bob", "unspec", "unspec", 0, 10)),
    (b"13 327b23c6 alice bob", m.DelEdge(0x327B23C6, "alice", "bob")),
    (b"14 1b2c3d4e carol", m.KeyChanged(0x1B2C3D4E, "carol")),
    (b"15 alice bob 15 AAAAAAIAkq", m.ReqSptpsStart("alice", "bob", "AAAAAAIAkq")),
    (b"15 alice bob 19", m.ReqPubkey("alice", "bob")),
    (b"15 alice bob 20 " + b"A" * 43, m.AnsPubkey("alice", "bob", "A" * 43)),
    (b"15 alice bob 21 AAAABA", m.ReqKeySptpsPacket("alice", "bob", "AAAABA")),
    (b"15 alice bob", m.ReqKeyLegacy("alice", "bob")),
    (b"15 alice bob 99 whatever", m.ReqKeyOther("alice", "bob", 99, "whatever")),
    (b"16 bob alice AAAAAAIA -1 -1 -1 0", m.AnsKey.sptps("bob", "alice", "AAAAAAIA", 0)),
    (b"16 bob alice AAAAAAIA -1 -1 -1 0 203.0.113.5 655",
     m.AnsKey("bob", "alice", "AAAAAAIA", -1, -1, -1, 0, "203.0.113.5", "655")),
    (b"17 1514", m.Packet(1514)),
    (b"21 1551", m.SptpsPacket(1551)),
    (b"22 carol alice 203.0.113.9 655", m.UdpInfo("carol", "alice", "203.0.113.9", "655")),
    (b"23 carol alice 1451", m.MtuInfo("carol", "alice", 1451)),
]


@pytest.mark.parametrize("line,msg", SPEC_EXAMPLES, ids=[e[0][:20].decode() for e in SPEC_EXAMPLES])
def test_spec_example_round_trip(line, msg):
    assert m.parse(line) == msg
    assert m.format(msg) == line
    assert m.parse(line + b"\n") == msg          # one trailing newline is tolerated


def test_every_handled_request_number_has_an_example():
    covered = {msg.request for _, msg in SPEC_EXAMPLES}
    refused = {m.Request.METAKEY, m.Request.CHALLENGE, m.Request.CHAL_REPLY, m.Request.STATUS,
               m.Request.ERROR, m.Request.CONTROL, m.Request.REQ_PUBKEY, m.Request.ANS_PUBKEY}
    assert covered | refused == set(m.Request)


def test_request_numbers_are_tincs():
    assert [r.value for r in m.Request] == list(range(24))
    assert m.Request.SPTPS_PACKET == 21 and m.Request.MTU_INFO == 23


def test_the_classes_are_distinct():
    # DEL_SUBNET must not pass for ADD_SUBNET in an isinstance dispatch, nor SPTPS_PACKET
    # for PACKET.
    assert not isinstance(m.parse(b"11 1 bob 10.0.0.1"), m.AddSubnet)
    assert not isinstance(m.parse(b"21 20"), m.Packet)


def test_extra_fields_are_ignored_like_sscanf():
    assert m.parse(b"8 extra") == m.Ping()
    assert m.parse(b"14 1 carol extra fields") == m.KeyChanged(1, "carol")
    assert m.parse(b"13 1 a b c") == m.DelEdge(1, "a", "b")
    edge = m.parse(b"12 1 a b 1.2.3.4 655 c 10 5.6.7.8 655 more")
    assert edge.local_address == "5.6.7.8"


def test_text_is_cut_at_nul_like_a_c_string():
    assert m.parse(b"8\0garbage") == m.Ping()
    assert m.request_text(b"14 1 carol\0x\n") == b"14 1 carol\0x"[:10]
    assert m.request_text(b"8\n") == b"8"
    assert m.request_text(b"8\n\n") == b"8\n"      # only one newline is stripped


def test_any_ascii_whitespace_separates_fields():
    assert m.parse(b"13\t1  a\r\x0bb") == m.DelEdge(1, "a", "b")


def test_nonce_any_hex():
    assert m.parse(b"14 ABCDEF carol").nonce == 0xABCDEF
    assert m.parse(b"14 0000000000000001 carol").nonce == 1   # skipped with %*x in tinc
    assert m.format(m.KeyChanged(0, "x")) == b"14 0 x"


def test_new_nonce_uses_the_injected_rng():
    assert m.new_nonce(lambda n: b"\x00\x00\x82\xc4"[:n]) == 0x82C4
    assert m.format(m.DelEdge(m.new_nonce(lambda n: b"\xff" * n), "a", "b")) == b"13 ffffffff a b"


def test_id_forms():
    assert m.parse(b"0 alice 17") == m.Id("alice", 17, None)
    assert m.format(m.Id("alice", 17, None)) == b"0 alice 17"
    # COMPAT: %2d.%3d stops after two digits and ignores the rest.
    assert m.parse(b"0 alice 170.7") == m.Id("alice", 17, None)
    assert m.parse(b"0 alice 17.7.1") == m.Id("alice", 17, 7)
    control = m.parse(b"0 ^" + b"AB" * 32 + b" 0")
    assert control.is_control and control.major == 0 and control.minor is None
    invite = m.parse(b"0 ?" + b"k" * 43 + b" 17.7")
    assert invite.is_invitation and not invite.is_control


def test_ack_minor_and_options():
    ack = m.parse(b"4 655 23 700000c")
    assert ack.minor == 7
    assert ack.options & m.OPTION_PMTU_DISCOVERY and ack.options & m.OPTION_CLAMP_MSS
    assert m.parse(b"4 tinc 0 1").port == "tinc"          # ports are text


def test_req_key_subtypes():
    assert isinstance(m.parse(b"15 a b 0"), m.ReqKeyLegacy)       # "0" reads as no subtype
    assert m.parse(b"15 a b 15") == m.ReqSptpsStart("a", "b")     # missing argument: parses
    assert m.format(m.ReqSptpsStart("a", "b")) == b"15 a b 15"
    assert m.parse(b"15 a b 19 ignored") == m.ReqPubkey("a", "b")
    assert m.parse(b"15 a b 22 x") == m.ReqKeyOther("a", "b", 22, "x")
    assert m.parse(b"15 a b -3") == m.ReqKeyOther("a", "b", -3)
    # COMPAT: %2048s truncates the final argument; it is not an error.
    long = m.parse(b"15 a b 21 " + b"A" * 2052)
    assert long.argument == "A" * 2048


def test_ans_key_address_without_port():
    msg = m.parse(b"16 a b k -1 -1 -1 0 1.2.3.4")
    assert msg.address == "1.2.3.4" and msg.port is None
    assert m.format(msg) == b"16 a b k -1 -1 -1 0 1.2.3.4"


def test_packet_zero_length_parses():
    assert m.parse(b"17 0") == m.Packet(0)
    assert m.parse(b"21 0") == m.SptpsPacket(0)


def test_mtu_info_keeps_large_values():
    # The receiver clamps to 1518; the text keeps what was sent.
    assert m.parse(b"23 a b 9000").mtu == 9000


def test_key_changed_name_is_not_checked():
    # COMPAT: key_changed_h does not call check_id.
    assert m.parse(b"14 1 not-a-name").name == "not-a-name"


def test_latin1_round_trip_of_unknown_addresses():
    line = b"22 a b \xe9t\xe9 p\xff"
    assert m.format(m.parse(line)) == line


def test_check_id():
    assert m.check_id("a_B9")
    for bad in ("", "a-b", "a b", "\xe9", "a.b", None, "a\n"):
        assert not m.check_id(bad)


MALFORMED = [
    # (line, request name or text the message must contain)
    (b"", "bogus data"),
    (b"abc", "bogus data"),
    (b" ", "bogus data"),
    (b"8junk", "bogus data"),
    (b"-1", "bogus data"),
    (b"24", "unknown request 24"),
    (b"99999999999999999999", "unknown request"),
    (b"1 xyz", "METAKEY"),
    (b"2 xyz", "CHALLENGE"),
    (b"3 xyz", "CHAL_REPLY"),
    (b"5 0 x", "STATUS"),
    (b"6 0 x", "ERROR"),
    (b"18 1", "CONTROL"),
    (b"19", "REQ_PUBKEY"),
    (b"20 key", "ANS_PUBKEY"),
    (b"0", "ID"),
    (b"0 alice", "ID"),
    (b"0 al-ice 17.7", "ID: invalid name"),
    (b"0 alice x.7", "ID"),
    (b"0 alice .7", "ID"),
    (b"0 " + b"a" * 2049 + b" 17.7", "ID"),
    (b"4", "ACK"),
    (b"4 655", "ACK"),
    (b"4 655 23", "ACK"),
    (b"4 655 x 700000c", "ACK: weight"),
    (b"4 655 23 xyz", "ACK: options"),
    (b"4 655 23 1ffffffff", "ACK: options"),
    (b"4 655 23 -1", "ACK: options"),
    (b"4 655 99999999999 c", "ACK: weight"),
    (b"10", "ADD_SUBNET"),
    (b"10 zz bob 10.0.0.0/8", "ADD_SUBNET: nonce"),
    (b"10 1 bob", "ADD_SUBNET"),
    (b"10 1 b-b 10.0.0.0/8", "ADD_SUBNET: invalid name"),
    (b"10 1 bob 10.0.0.0/33", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.256", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 010.0.0.1", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 00:11:22:33:44:55/8", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 00:11:22:33:44", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.0/8#x", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.0/8#", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.0/-1", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.0/8x", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob fe80::1%eth0", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob fe80::/129", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 1:2:3:4:5:6:7:8:9", "ADD_SUBNET: invalid subnet"),
    (b"10 1 bob 10.0.0.0#5/8", "ADD_SUBNET: invalid subnet"),
    (b"11 1 bob", "DEL_SUBNET"),
    (b"11 -1 bob 10.0.0.1", "DEL_SUBNET: nonce"),
    (b"11 1 bob! 10.0.0.1", "DEL_SUBNET: invalid name"),
    (b"11 1 bob nonsense", "DEL_SUBNET: invalid subnet"),
    (b"12", "ADD_EDGE"),
    (b"12 1 a b 1.2.3.4 655 c", "ADD_EDGE"),
    (b"12 1 a b 1.2.3.4 655 c 10 5.6.7.8", "ADD_EDGE: 7 fields"),
    (b"12 1 a a 1.2.3.4 655 c 10", "ADD_EDGE: edge from a to itself"),
    (b"12 1 a b- 1.2.3.4 655 c 10", "ADD_EDGE: invalid name"),
    (b"12 1 a b 1.2.3.4 655 cx 10", "ADD_EDGE: options"),
    (b"12 1 a b 1.2.3.4 655 c w", "ADD_EDGE: weight"),
    (b"12 x a b 1.2.3.4 655 c 10", "ADD_EDGE: nonce"),
    (b"13 1 a", "DEL_EDGE"),
    (b"13 1 a a", "DEL_EDGE: edge from a to itself"),
    (b"13 x a b", "DEL_EDGE: nonce"),
    (b"13 1 a b-", "DEL_EDGE: invalid name"),
    (b"14", "KEY_CHANGED"),
    (b"14 1", "KEY_CHANGED"),
    (b"14 g carol", "KEY_CHANGED: nonce"),
    (b"15", "REQ_KEY"),
    (b"15 a", "REQ_KEY"),
    (b"15 a b- 15 x", "REQ_KEY: invalid name"),
    (b"15 a! b", "REQ_KEY: invalid name"),
    (b"15 a b x", "REQ_KEY: subtype"),
    (b"16 a b k -1 -1 -1", "ANS_KEY"),
    (b"16 a b k x -1 -1 0", "ANS_KEY: cipher"),
    (b"16 a b k -1 -1 -1 z", "ANS_KEY: compression"),
    (b"16 a! b k -1 -1 -1 0", "ANS_KEY: invalid name"),
    (b"17", "PACKET"),
    (b"17 -1", "PACKET: length"),
    (b"17 x", "PACKET: length"),
    (b"17 40000", "PACKET: length"),
    (b"21", "SPTPS_PACKET"),
    (b"21 -5", "SPTPS_PACKET: length"),
    (b"21 1.5", "SPTPS_PACKET: length"),
    (b"22 a b 1.2.3.4", "UDP_INFO"),
    (b"22 a b- 1.2.3.4 655", "UDP_INFO: invalid name"),
    (b"23 a b 511", "MTU_INFO: mtu"),
    (b"23 a b -1", "MTU_INFO: mtu"),
    (b"23 a b", "MTU_INFO"),
    (b"23 a b x", "MTU_INFO: mtu"),
    (b"23 a- b 1500", "MTU_INFO: invalid name"),
]


@pytest.mark.parametrize("line,needle", MALFORMED, ids=[repr(x[0][:30]) for x in MALFORMED])
def test_malformed_raises_wire_error(line, needle):
    with pytest.raises(WireError) as info:
        m.parse(line)
    assert needle in str(info.value)


def test_malformed_covers_every_request():
    names = {needle.split(":")[0] for _, needle in MALFORMED}
    handled = {r.name for r in m.Request} - {"TERMREQ", "PING", "PONG"}
    assert handled <= names


@pytest.mark.parametrize("build", [
    lambda: m.AddEdge(1, "a", "a", "x", "1", 0, 0),
    lambda: m.AddEdge(1, "a", "b", "x", "1", 0, 0, local_address="y"),
    lambda: m.AddEdge(1, "a", "b", "x y", "1", 0, 0),
    lambda: m.AddEdge(-1, "a", "b", "x", "1", 0, 0),
    lambda: m.Ack("655", 1, 1 << 32),
    lambda: m.Ack("", 1, 1),
    lambda: m.ReqKeyOther("a", "b", 15, "x"),
    lambda: m.ReqSptpsStart("a", "b", "x" * 2049),
    lambda: m.Id("a b"),
    lambda: m.MtuInfo("a", "b", 100),
    lambda: m.Packet(-1),
    lambda: m.AnsKey("a", "b", "k", -1, -1, -1, 0, None, "655"),
    lambda: m.KeyChanged(1, "tab\tbed"),
    lambda: m.UdpInfo("a", "b", "x\u0100", "1"),
    lambda: m.AddSubnet(1, "bob", "10.0.0.0/8"),
    lambda: m.AddSubnet(1, "b b", parse_subnet("10.0.0.0/8")),
])
def test_invalid_construction_is_refused(build):
    with pytest.raises(WireError):
        build()


# --- subnet text inside ADD_SUBNET (the codec itself is mesh/subnets.py's) ----------------------

def test_subnet_carries_the_owner():
    msg = m.parse(b"10 1 bob 10.0.0.0/8")
    assert msg.subnet.owner == "bob"
    assert msg == m.AddSubnet(1, "bob", parse_subnet("10.0.0.0/8"))
    with pytest.raises(WireError):
        m.AddSubnet(1, "bob", parse_subnet("10.0.0.0/8", owner="carol"))


CANONICAL_SUBNETS = ["10.1.0.0/16", "10.1.2.3", "fd00::/64", "fd00::1#5", "02:00:00:00:00:01",
                     "0.0.0.0/0", "::/0", "::1", "::", "::ffff:1.2.3.4", "::1.2.3.4",
                     "1::", "1:0:0:1::1", "10.0.0.0/8#-3", "ff:ff:ff:ff:ff:ff#0"]


@pytest.mark.parametrize("text", CANONICAL_SUBNETS)
def test_canonical_subnet_round_trip(text):
    line = b"11 5 bob " + text.encode()
    assert m.format(m.parse(line)) == line


@pytest.mark.parametrize("text,canonical", [
    ("10.1.2.3/32", "10.1.2.3"),
    ("10.1.2.3#10", "10.1.2.3"),
    ("fd00::1/128", "fd00::1"),
    ("FD00:0:0::1", "fd00::1"),
    ("0:1a:2b:3c:4d:5e", "00:1a:2b:3c:4d:5e"),
    ("10.0.0.0/+8", "10.0.0.0/8"),
    ("0:0:0:0:0:ffff:102:304", "::ffff:1.2.3.4"),
    ("10.1.2.3/24", "10.1.2.3/24"),      # host bits are not checked on the wire
])
def test_subnet_canonicalisation(text, canonical):
    assert m.format(m.parse(b"10 1 bob " + text.encode())) == b"10 1 bob " + canonical.encode()


def test_ipv6_text_matches_glibc_on_edge_cases():
    cases = ["::", "::1", "1::", "::ffff:0.0.0.0", "::0.0.0.2", "::2:0", "0:0:1::",
             "1:0:0:2:0:0:0:3", "1:0:0:2:0:0:3:4", "ffff::", "::ffff:0:1.2.3.4", "1:2:3:4:5:6:7:8",
             "::1:0:0:0", "0:0:0:0:0:1:0:0"]
    for text in cases:
        packed = socket.inet_pton(socket.AF_INET6, text)
        subnet = Subnet(SubnetType.IPV6, packed, 128)
        assert m.format(m.AddSubnet(1, "x", subnet)) == \
            b"10 1 x " + socket.inet_ntop(socket.AF_INET6, packed).encode(), text
