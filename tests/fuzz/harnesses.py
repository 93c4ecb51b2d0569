"""Fuzz harnesses: one function per parser that a peer or a file controls.

Each harness takes one input (bytes) and feeds it to the real code. Any exception that is not
a tincapp.errors.TincappError is a finding and escapes (atheris then saves the input); typed
errors are the parsers' way of refusing input and are swallowed here. The harnesses are plain
Python: tests/fuzz/run.py drives them with atheris (coverage-guided), test_fuzz.py replays the
seeds and runs each for a bounded time, bench/fuzz.py runs them for longer.

Inputs that need structure (a record sealed under the session key, a request sent by an
authenticated peer) are decoded from the fuzz bytes with a small op language (see _Ops), so
the fuzzer reaches the code behind the authentication check instead of stopping at it.
"""
import itertools

from tincapp.errors import TincappError
from tincapp.meta import messages
from tincapp.meta.connection import MetaConnection, PeerSettings, State as MetaState
from tincapp.meta.events import ConnectionFailed
from tincapp.sptps import crypto, wire
from tincapp.sptps.session import SptpsSession

KEY_A = crypto.PrivateKey.from_seed(bytes(range(32)))
KEY_B = crypto.PrivateKey.from_seed(bytes(range(100, 132)))
LABEL = b"fuzz"


def counter_rng():
    """Deterministic randomness, so that a saved input replays the same run."""
    n = itertools.count(1)
    return lambda size: next(n).to_bytes(size, "big")


class _Ops:
    """Reads the fuzz input as a sequence of operations: one opcode byte, then a 2-byte length
    and that many bytes of argument (shorter at the end of the input)."""

    def __init__(self, data: bytes):
        self.data = bytes(data)
        self.pos = 0

    def __iter__(self):
        while self.pos < len(self.data):
            op = self.data[self.pos]
            n = int.from_bytes(self.data[self.pos + 1:self.pos + 3].ljust(2, b"\0"), "big")
            arg = self.data[self.pos + 3:self.pos + 3 + n]
            self.pos += 3 + n
            yield op, arg


def encode_ops(*ops) -> bytes:
    """The input that makes _Ops yield `ops` ((opcode, argument) pairs): for seeds."""
    return b"".join(bytes((op,)) + len(arg).to_bytes(2, "big") + arg for op, arg in ops)


def _typed(fn, *args):
    """Call fn; typed errors are a refusal, not a finding."""
    try:
        return fn(*args)
    except TincappError:
        return None


# --- SPTPS -----------------------------------------------------------------------------------

def sptps_pair(datagram):
    a = SptpsSession(initiator=True, datagram=datagram, label=LABEL, my_key=KEY_A,
                     peer_public=KEY_B.public, rng=counter_rng())
    b = SptpsSession(initiator=False, datagram=datagram, label=LABEL, my_key=KEY_B,
                     peer_public=KEY_A.public, rng=counter_rng())
    return a, b


def _deliver(src, dst, datagram, mangle=None):
    """Move src's queued output to dst; return the outputs that were moved."""
    moved = []
    for _type, data in src.pop_outgoing():
        if mangle is not None:
            data = mangle(data)
        moved.append(data)
        if datagram:
            _typed(dst.receive, data)
        elif dst.state.name != "FAILED":
            _typed(dst.receive, data)
    return moved


def sptps_connected(datagram):
    a, b = sptps_pair(datagram)
    a.start()
    b.start()
    while _deliver(a, b, datagram) + _deliver(b, a, datagram):
        pass
    assert a.handshake_done and b.handshake_done
    return a, b


def _sptps_pre(data, datagram):
    """The responder before any handshake: the input is the initiator's stream, or (datagram)
    a sequence of datagrams."""
    _a, b = sptps_pair(datagram)
    b.start()
    if datagram:
        for _op, arg in _Ops(data):
            _typed(b.receive, arg)
            b.pop_outgoing()
    else:
        # Split points come from the input too: a stream parser must not care.
        for _op, arg in _Ops(data):
            if b.state.name == "FAILED":
                break
            _typed(b.receive, arg)
            b.pop_outgoing()


def _sptps_post(data, datagram):
    """A completed session b and its honest peer a; the input drives what reaches b.

    op % 6: 0 raw bytes to b; 1 an application record of type arg[0] % 128 sealed by a;
    2 a handshake record with body arg sealed by a; 3 a starts a rekey; 4 a record sealed
    by a with byte arg[0] flipped (xor arg[1]) and cut to arg[2] bytes if nonzero;
    5 everything b queued goes back to a (a's errors are findings too)."""
    a, b = sptps_connected(datagram)
    for op, arg in _Ops(data):
        op %= 6
        if not datagram and b.state.name == "FAILED":
            break
        if op == 0:
            _typed(b.receive, arg)
        elif op == 1:
            _typed(a.send_record, arg[0] % 128 if arg else 0, bytes(arg[1:]))
            _deliver(a, b, datagram)
        elif op == 2:
            # A handshake record only the peer could seal: the session must judge its body.
            if len(arg) <= wire.MAX_RECORD_DATA:
                _typed(a._queue_handshake, bytes(arg))
            _deliver(a, b, datagram)
        elif op == 3:
            _typed(a.force_kex)
            _deliver(a, b, datagram)
        elif op == 4:
            at, xor, cut = (arg + b"\0\0\0")[:3]
            _typed(a.send_record, 0, bytes(arg[3:]))

            def mangle(rec, at=at, xor=xor, cut=cut):
                rec = bytearray(rec)
                if rec:
                    rec[at % len(rec)] ^= xor
                return bytes(rec[:cut] if cut else rec)
            _deliver(a, b, datagram, mangle)
        else:
            if a.datagram or a.state.name != "FAILED":
                _deliver(b, a, datagram)
            else:
                b.pop_outgoing()


def sptps_stream_pre(data):
    _sptps_pre(data, datagram=False)


def sptps_stream_post(data):
    _sptps_post(data, datagram=False)


def sptps_datagram_pre(data):
    _sptps_pre(data, datagram=True)


def sptps_datagram_post(data):
    _sptps_post(data, datagram=True)
    # verify_datagram is the UDP sender lookup: it must say yes or no, never raise.
    a, b = sptps_connected(True)
    for _op, arg in _Ops(data):
        b.verify_datagram(arg)


# --- the meta protocol -----------------------------------------------------------------------

def meta_parse(data):
    """One request line: parse() refuses with WireError; what it accepts formats again."""
    msg = _typed(messages.parse, bytes(data))
    if msg is not None:
        messages.format(msg)


def _lookup(name):
    keys = {"alice": KEY_A, "bob": KEY_B}
    return PeerSettings(keys[name].public) if name in keys else None


def meta_pair():
    alice = MetaConnection(my_name="alice", my_key=KEY_A, outgoing=True, peer_name="bob",
                           lookup_peer=_lookup, udp_port="655", rng=counter_rng(), now=0.0)
    bob = MetaConnection(my_name="bob", my_key=KEY_B, outgoing=False, lookup_peer=_lookup,
                         udp_port="656", rng=counter_rng(), now=0.0)
    return alice, bob


def _meta_receive(conn, data, now=0.0):
    """MetaConnection.receive promises ConnectionFailed events, never an exception."""
    if conn.state is not MetaState.CLOSED:
        conn.receive(data, now)
    for ev in conn.pop_events():
        if isinstance(ev, ConnectionFailed):
            assert conn.state is MetaState.CLOSED


def meta_connection_pre(data):
    """An incoming connection before authentication: the input is the peer's byte stream."""
    _alice, bob = meta_pair()
    for _op, arg in _Ops(data):
        _meta_receive(bob, arg)
        bob.data_to_send()


def meta_connection_post(data):
    """An active connection; op % 4: 0 raw bytes; 1 a record (request line) sent by the
    authenticated peer; 2 raw bytes after announcing a binary SPTPS_PACKET / PACKET of
    arg[0] bytes; 3 deadlines at time arg[0]."""
    alice, bob = meta_pair()
    alice.start(0.0)
    while True:
        out_a, out_b = alice.data_to_send(), bob.data_to_send()
        if not (out_a or out_b):
            break
        _meta_receive(bob, out_a)
        _meta_receive(alice, out_b)
    assert alice.active and bob.active
    for op, arg in _Ops(data):
        if bob.state is MetaState.CLOSED:
            break
        op %= 4
        if op == 0:
            _meta_receive(bob, arg)
        elif op == 1:
            if len(arg) <= wire.MAX_RECORD_DATA:
                alice._send_record(bytes(arg))
            _meta_receive(bob, alice.data_to_send())
        elif op == 2:
            n = arg[0] if arg else 0
            kind = messages.Request.SPTPS_PACKET if n % 2 else messages.Request.PACKET
            alice._send_record(f"{int(kind)} {n}\n".encode())
            _meta_receive(bob, alice.data_to_send() + bytes(arg[1:]))
        else:
            now = float(arg[0]) if arg else 0.0
            bob.handle_deadline(now)
        _meta_receive(alice, bob.data_to_send())


def mesh_node_requests(data):
    """The node core behind an active connection: each input line that parses is handed to
    request_received as the daemon does (ADD_EDGE, ADD_SUBNET, KEY_CHANGED, REQ_KEY, ...)."""
    from tincapp.meta.events import Activated
    from tincapp.mesh.node import Node
    node = Node("alpha", rng=counter_rng(), now=0.0, options=7 << 24)
    conns = {}
    for i, name in enumerate(("beta", "gamma")):
        conn = conns[name] = object()
        node.connection_opened(conn, outgoing=bool(i), name=name)
        node.connection_activated(conn, Activated(name=name, port="655", peer_weight=10,
                                                  my_weight=10, weight=10, options=7 << 24),
                                  remote_host="127.0.0.2", local_host="127.0.0.1",
                                  my_udp_port="655", now=0.0)
    node.pop_actions()
    now = 0.0
    for k, line in enumerate(bytes(data).split(b"\n")):
        msg = _typed(messages.parse, line)
        if msg is None:
            continue
        conn = conns["beta" if k % 2 == 0 else "gamma"]
        if node.connection_name(conn) is None:
            continue                    # closed by an earlier request
        now += 1.0
        _typed(node.request_received, conn, msg, line, now)
        node.pop_actions()
        _typed(node.handle_deadline, now)
        node.pop_actions()


# --- the UDP tunnel core --------------------------------------------------------------------

def _tunnel_planes():
    """Data planes of a, b and c on a triangle, a and b with a working session."""
    from tincapp.datapath.tunnels import DataPlane, SendToward, SendUdp
    from tincapp.mesh.graph import Graph, SockAddr
    from tincapp.meta.messages import OPTION_PMTU_DISCOVERY
    names = ("a", "b", "c")
    keys_ = {"a": KEY_A, "b": KEY_B, "c": crypto.PrivateKey.from_seed(bytes(range(7, 39)))}
    addr = {n: SockAddr(f"10.0.0.{i + 1}", "655") for i, n in enumerate(names)}
    opts = OPTION_PMTU_DISCOVERY | 7 << 24
    planes = {}
    for me in names:
        g = Graph(me, options=opts)
        for x in names:
            for y in names:
                if x != y:
                    g.add_edge(x, y, address=addr[y], options=opts, weight=10)
        g.run(0.0)
        planes[me] = DataPlane(me, graph=g, has_connection=lambda peer: True,
                               my_key=keys_[me], peer_key=lambda peer: (
                                   keys_[peer].public if peer in keys_ else None),
                               rng=counter_rng(), my_options=opts)

    def pump(now, rounds=30):
        for _ in range(rounds):
            moved = False
            for name in ("a", "c"):          # b's output is judged, not delivered
                for act in planes[name].pop_actions():
                    moved = True
                    if isinstance(act, SendToward) and act.to == "b":
                        text = act.msg if isinstance(act.msg, bytes) else messages.format(act.msg)
                        msg = messages.parse(text)
                        planes["b"].receive_request(msg, text, msg.to_name == "b", now)
                    elif isinstance(act, SendUdp) and act.address == addr["b"]:
                        planes["b"].receive_udp(act.data, addr[name], now)
            for act in planes["b"].pop_actions():
                moved = True
                if isinstance(act, SendToward) and act.to == "a":
                    text = act.msg if isinstance(act.msg, bytes) else messages.format(act.msg)
                    msg = messages.parse(text)
                    planes["a"].receive_request(msg, text, msg.to_name == "a", now)
                elif isinstance(act, SendUdp) and act.address == addr["a"]:
                    planes["a"].receive_udp(act.data, addr["b"], now)
            if not moved:
                return
    planes["a"].try_tx("b", True, 0.0)
    pump(0.0)
    return planes, addr, pump


def tunnels(data):
    """b's UDP tunnel core, keyed with a; op % 6: 0 a raw datagram from a's address; 1 one
    with a's or c's node IDs in front; 2 a request line (REQ_KEY, ANS_KEY, UDP_INFO, MTU_INFO
    ...) as the node core hands it over; 3 raw SPTPS_PACKET bytes; 4 a frame a seals, mangled
    at arg[0] by arg[1]; 5 time passes by arg[0] seconds."""
    from tincapp.datapath.tunnels import SendUdp, node_id
    planes, addr, pump = _tunnel_planes()
    b = planes["b"]
    now = 1.0
    for op, arg in _Ops(data):
        op %= 6
        if op == 0:
            _typed(b.receive_udp, bytes(arg), addr["a"], now)
        elif op == 1:
            ids = (bytes(6) + node_id("a"), node_id("b") + node_id("a"),
                   node_id("b") + node_id("c"), node_id("c") + node_id("a"))
            prefix = ids[arg[0] % 4] if arg else ids[0]
            _typed(b.receive_udp, prefix + bytes(arg[1:]), addr["a" if not arg or arg[0] < 128
                                                                 else "c"], now)
        elif op == 2:
            msg = _typed(messages.parse, bytes(arg))
            if msg is not None:
                _typed(b.receive_request, msg, bytes(arg), getattr(msg, "to_name", None) == "b",
                       now)
        elif op == 3:
            _typed(b.receive_tcp_sptps_packet, bytes(arg), now)
        elif op == 4:
            at, xor = (arg + b"\0\0")[:2]
            planes["a"].send_frame("b", bytes(12) + b"\x08\x00" + bytes(arg[2:]), now)
            for act in planes["a"].pop_actions():
                if isinstance(act, SendUdp) and act.address == addr["b"]:
                    d = bytearray(act.data)
                    d[at % len(d)] ^= xor
                    _typed(b.receive_udp, bytes(d), addr["a"], now)
        else:
            now += arg[0] if arg else 1
            _typed(b.handle_deadline, now)
        _typed(pump, now)


# --- configuration ---------------------------------------------------------------------------

def config_text(data):
    """A tinc.conf or hosts/ file: its lines, and every known variable's value."""
    from tincapp.config import parse, variables
    entries = _typed(parse.parse_bytes, bytes(data), "fuzz.conf")
    for entry in entries or ():
        for in_host_file in (False, True):
            var = _typed(variables.check_variable, entry, in_host_file, "warn")
            if var is not None:
                _typed(variables.parse_value, var, entry)


def subnet(data):
    """A Subnet as ADD_SUBNET or a host file carries it; what parses prints again."""
    from tincapp.mesh.subnets import parse_subnet
    s = _typed(parse_subnet, bytes(data).decode("latin-1"))
    if s is not None:
        str(s)
        parse_subnet(str(s))


HARNESSES = {f.__name__: f for f in (
    sptps_stream_pre, sptps_stream_post, sptps_datagram_pre, sptps_datagram_post,
    meta_parse, meta_connection_pre, meta_connection_post, mesh_node_requests, tunnels,
    config_text, subnet)}
_SINGLE = list(HARNESSES.values())


def every(data):
    """All harnesses in one: the first byte picks one, the rest is its input. For a bounded
    run in one process (atheris's start-up costs seconds per process)."""
    if data:
        _SINGLE[data[0] % len(_SINGLE)](data[1:])


HARNESSES["every"] = every


# --- seeds: valid inputs to start from ------------------------------------------------------

def _initiator_transcript(datagram):
    """What a deterministic initiator sends to complete the handshake with sptps_pair()'s
    responder (both use counter_rng, so the responder's KEX is always the same)."""
    a, b = sptps_pair(datagram)
    a.start()
    b.start()
    sent = []
    while True:
        got = _deliver(a, b, datagram)
        sent += got
        if not (got + _deliver(b, a, datagram)):
            return sent


def node_id_seed():
    from tincapp.datapath.tunnels import node_id
    return node_id("b") + node_id("a") + bytes(30)


def seeds(name):
    """A few valid inputs per harness."""
    if name == "every":
        return [bytes((i,)) + seed for i, f in enumerate(_SINGLE) for seed in seeds(f.__name__)]
    if name in ("sptps_stream_pre", "sptps_datagram_pre"):
        sent = _initiator_transcript(name == "sptps_datagram_pre")
        return [encode_ops(*((0, s) for s in sent)), encode_ops((0, b"".join(sent)))]
    if name in ("sptps_stream_post", "sptps_datagram_post"):
        return [encode_ops((1, b"\x00hello"), (5, b"")),
                encode_ops((3, b""), (5, b""), (1, b"\x05data"), (5, b"")),
                encode_ops((2, b"\x00" * 65), (4, b"\x07\x01\x00abc")),
                encode_ops((0, b"\x00\x05garbage"))]
    if name == "meta_parse":
        return [b"8", b"10 1 alice 10.1.0.0/16#10", b"12 2 alice bob 127.0.0.1 655 0 100",
                b"15 alice bob 1 SGVsbG8", b"0 alice 17.7", b"4 0 0 0 1 700000c"]
    if name == "meta_connection_pre":
        return [encode_ops((0, b"0 alice 17.7\n")), encode_ops((0, b"0 alice 17.3\n")),
                encode_ops((0, b"0 bob 17.7\n"))]
    if name == "meta_connection_post":
        return [encode_ops((1, b"8\n"), (1, b"10 1 alice 10.1.0.0/16\n")),
                encode_ops((2, b"\x05hello")), encode_ops((3, b"\xff")),
                encode_ops((1, b"15 alice bob 1 SGVsbG8\n"))]
    if name == "mesh_node_requests":
        return [b"12 1 beta gamma 127.0.0.3 655 7000000 10\n10 2 gamma 10.2.0.0/16\n"
                b"13 3 beta gamma\n11 4 gamma 10.2.0.0/16\n14 5 beta\n",
                b"15 beta gamma 1 x\n16 gamma beta abc 0 0 0 0\n22 beta gamma 1.2.3.4 655\n"
                b"23 beta gamma 1400\n15 beta alpha 21 abc\n"]
    if name == "tunnels":
        return [encode_ops((4, b"\x00\x00" + bytes(40)), (5, b"\x05")),
                encode_ops((2, b"15 a b 21 " + b"A" * 40), (2, b"16 a b x 0 0 0 0"),
                           (2, b"22 a b 10.0.0.1 655"), (2, b"23 a b 1400")),
                encode_ops((1, b"\x01" + bytes(40)), (3, node_id_seed())),
                encode_ops((0, bytes(60)), (4, b"\x20\x01" + bytes(100)))]
    if name == "config_text":
        return [b"Name = alice\nPort = 655\nSubnet = 10.0.0.0/8\nConnectTo = bob\n",
                b"Address = 1.2.3.4 655\nEd25519PublicKey = "
                + b"A" * 43 + b"\nCompression = 12\n-----BEGIN x\n-----END x\n"]
    if name == "subnet":
        return [b"10.1.0.0/16#10", b"fe80::1/64", b"00:11:22:33:44:55", b"1.2.3.4"]
    raise KeyError(name)
