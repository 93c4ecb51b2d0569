"""Meta protocol properties: every valid message survives format -> parse unchanged; no input
makes the parsers raise anything but WireError; a connection turns any bytes into events, never
exceptions; subnet addresses agree with the C library's inet_pton/inet_ntop."""
import itertools
import re
import socket

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tincapp.errors import WireError
from tincapp.meta import messages as m
from tincapp.meta.connection import MetaConnection, PeerSettings, State
from tincapp.mesh.subnets import Subnet, SubnetType, parse_subnet
from tincapp.sptps import crypto

names = st.from_regex(r"[A-Za-z0-9_]{1,16}", fullmatch=True)
# A text field: Latin-1 characters except ASCII whitespace and NUL.
token_chars = st.characters(min_codepoint=0x21, max_codepoint=0xFF)
tokens = st.text(token_chars, min_size=1, max_size=24)
int32 = st.integers(m.INT32_MIN, m.INT32_MAX)
uint32 = st.integers(0, m.UINT32_MAX)


@st.composite
def subnets(draw):
    kind = draw(st.sampled_from(SubnetType))
    size = {SubnetType.MAC: 6, SubnetType.IPV4: 4, SubnetType.IPV6: 16}[kind]
    address = draw(st.binary(min_size=size, max_size=size)
                   | st.lists(st.sampled_from([0, 0, 0, 0xFF, 1]), min_size=size,
                              max_size=size).map(bytes))
    prefix = 48 if kind is SubnetType.MAC else draw(
        st.integers(0, 32 if kind is SubnetType.IPV4 else 128))
    weight = draw(st.just(10) | int32)
    return Subnet(kind, address, prefix, weight)


def pair_of_names():
    return st.tuples(names, names).filter(lambda p: p[0] != p[1])


messages = st.one_of(
    st.builds(m.Id, names, st.integers(0, 99), st.none() | st.integers(0, 999)),
    st.builds(m.Id, st.sampled_from("^?").flatmap(lambda c: tokens.map(lambda t: c + t)),
              st.integers(0, 99), st.none() | st.integers(0, 999)),
    st.builds(m.Ack, tokens, int32, uint32),
    st.builds(m.Termreq), st.builds(m.Ping), st.builds(m.Pong),
    st.builds(m.AddSubnet, uint32, names, subnets()),
    st.builds(m.DelSubnet, uint32, names, subnets()),
    pair_of_names().flatmap(lambda p: st.builds(
        m.AddEdge, uint32, st.just(p[0]), st.just(p[1]), tokens, tokens, uint32, int32)),
    pair_of_names().flatmap(lambda p: st.builds(
        m.AddEdge, uint32, st.just(p[0]), st.just(p[1]), tokens, tokens, uint32, int32,
        tokens, tokens)),
    pair_of_names().flatmap(lambda p: st.builds(m.DelEdge, uint32, st.just(p[0]),
                                                st.just(p[1]))),
    st.builds(m.KeyChanged, uint32, tokens),
    st.builds(m.ReqKeyLegacy, names, names),
    st.builds(m.ReqPubkey, names, names),
    st.builds(m.ReqSptpsStart, names, names, st.just("") | tokens),
    st.builds(m.AnsPubkey, names, names, st.just("") | tokens),
    st.builds(m.ReqKeySptpsPacket, names, names, st.just("") | tokens),
    st.builds(m.ReqKeyOther, names, names,
              int32.filter(lambda n: n not in (0, 15, 19, 20, 21)), st.just("") | tokens),
    st.builds(m.AnsKey, names, names, tokens, int32, int32,
              st.integers(-(1 << 63), (1 << 64) - 1), int32),
    st.builds(m.AnsKey, names, names, tokens, int32, int32, st.just(-1), int32, tokens),
    st.builds(m.AnsKey, names, names, tokens, int32, int32, st.just(-1), int32, tokens, tokens),
    st.builds(m.Packet, st.integers(0, m.INT16_MAX)),
    st.builds(m.SptpsPacket, st.integers(0, m.INT16_MAX)),
    st.builds(m.UdpInfo, names, names, tokens, tokens),
    st.builds(m.MtuInfo, names, names, st.integers(m.MIN_MTU_INFO, m.INT32_MAX)),
)


@given(messages)
def test_format_parse_round_trip(msg):
    line = m.format(msg)
    assert b"\n" not in line and b"\0" not in line
    assert m.parse(line) == msg
    assert m.parse(line + b"\n") == msg
    assert m.format(m.parse(line)) == line


@given(st.binary(max_size=200))
def test_random_bytes_raise_only_wire_error(data):
    try:
        m.parse(data)
    except WireError:
        pass


# Lines that start like a request and continue with plausible fields reach deeper checks than
# random bytes do.
fields = st.one_of(names, tokens, int32.map(str), uint32.map(lambda n: f"{n:x}"),
                   st.sampled_from(["-1", "", "10.0.0.1/8#5", "::1", "0:1:2:3:4:5", "x" * 2050,
                                    "17.7", "17", "15", "19", "20", "21", "99999999999"]))


@given(st.integers(0, 25), st.lists(fields, max_size=10),
       st.sampled_from([" ", "  ", "\t", " \r"]))
def test_plausible_lines_raise_only_wire_error(number, parts, sep):
    line = sep.join([str(number)] + parts).encode("latin-1")
    try:
        msg = m.parse(line)
    except WireError:
        return
    # What parses formats to text that parses to the same message.
    assert m.parse(m.format(msg)) == msg


# --- subnet text in ADD_SUBNET against the C library ------------------------------------------

# Six colon-separated hex numbers read as a MAC (sscanf %hx, any digit count): tinc tries that
# before inet_pton.
_MAC_RE = re.compile(r"([0-9A-Fa-f]+:){5}[0-9A-Fa-f]+\Z")
hex_groups = st.text("0123456789abcdefABCDEF", max_size=5)


@st.composite
def address_like(draw):
    """Strings near the IPv4/IPv6 grammars, valid and not."""
    groups = draw(st.lists(hex_groups, min_size=0, max_size=9))
    text = ":".join(groups)
    if draw(st.booleans()):
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + "::" + text[cut:]
    if draw(st.booleans()):
        quad = ".".join(str(draw(st.integers(0, 300) | st.sampled_from([0, 1, 255])))
                        for _ in range(draw(st.integers(3, 5))))
        text = quad if draw(st.booleans()) else text + ":" + quad
    return text


@given(address_like() | st.text("0123456789abcdef:.", max_size=45))
def test_address_parsing_agrees_with_inet_pton(text):
    assume(not _MAC_RE.match(text))
    expected = None
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            expected = socket.inet_pton(family, text)
            break
        except OSError:
            pass
    try:
        got = parse_subnet(text).address
    except WireError:
        got = None
    assert got == expected


@given(st.binary(min_size=16, max_size=16)
       | st.lists(st.sampled_from([0, 0, 0, 0, 0xFF, 1]), min_size=16, max_size=16).map(bytes))
def test_ipv6_subnet_text_matches_the_c_library(packed):
    msg = m.AddSubnet(1, "x", Subnet(SubnetType.IPV6, packed, 128))
    assert m.format(msg) == b"10 1 x " + socket.inet_ntop(socket.AF_INET6, packed).encode()


# --- a connection never raises on input -----------------------------------------------------------

KEY_A = crypto.PrivateKey.from_seed(bytes(32))
KEY_B = crypto.PrivateKey.from_seed(bytes([1]) * 32)


def make_pair():
    n = itertools.count(1)
    rng = lambda size: next(n).to_bytes(size, "big")  # noqa: E731
    keys = {"alice": KEY_A.public, "bob": KEY_B.public}
    find = lambda name: PeerSettings(keys[name]) if name in keys else None  # noqa: E731
    a = MetaConnection(my_name="alice", my_key=KEY_A, outgoing=True, peer_name="bob",
                       lookup_peer=find, udp_port="655", rng=rng, now=0.0)
    b = MetaConnection(my_name="bob", my_key=KEY_B, outgoing=False, lookup_peer=find,
                       udp_port="655", rng=rng, now=0.0)
    return a, b


def pump(a, b, steps):
    for _ in range(steps):
        moved = False
        for src, dst in ((a, b), (b, a)):
            data = src.data_to_send()
            if data and dst.state is not State.CLOSED:
                dst.receive(data, 0.0)
                moved = True
        if not moved:
            break


@settings(max_examples=150)
@given(st.integers(0, 6), st.binary(max_size=300), st.sampled_from(["alice", "bob"]))
def test_connection_turns_any_bytes_into_events(steps, garbage, victim):
    a, b = make_pair()
    a.start(0.0)
    pump(a, b, steps)
    target = a if victim == "alice" else b
    if target.state is State.CLOSED:
        return
    target.receive(garbage, 0.0)
    target.handle_deadline(1e9)
    events = target.pop_events()
    assert target.state is State.CLOSED or all(
        type(e).__name__ in ("RequestReceived", "PacketReceived", "SptpsPacketReceived",
                             "PongReceived", "Activated") for e in events)
