"""Nothing a peer sends may kill or wedge a running `tincapp tincd`: garbage on a fresh meta
connection, garbage requests from an authenticated peer, UDP garbage behind valid-looking node
IDs, and garbage on the control socket. After each, the daemon answers its control socket and
its log shows no Python traceback (an exception that escaped into the event loop). Loopback
only, no root."""
import os
import random
import shutil
import socket
import tempfile
import time

import pytest

from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
from tincapp import control, keys
from tincapp.control import Ctl
from tincapp.datapath.tunnels import node_id
from tincapp.meta.connection import MetaConnection, PeerSettings

NAMES = ("alpha", "beta")


@pytest.fixture
def alpha():
    """alpha running; beta's keys exist but beta is played by the test."""
    root = tempfile.mkdtemp(prefix="tincapp-robust-")
    ports = {n: free_tcp_port() for n in NAMES}
    make_network(root, ports, {}, names=NAMES)
    d = Tincd(root, "alpha")
    d.port = ports["alpha"]
    d.root = root
    d.start()
    try:
        yield d
    finally:
        d.kill()
        shutil.rmtree(root, ignore_errors=True)


def assert_healthy(d):
    assert d.proc.poll() is None, d.read_log(3000)
    assert any(l.split()[2] == "alpha" for l in d.request(Ctl.DUMP_NODES))
    log = d.read_log()
    for bad in ("Traceback", "Fatal error", "Exception in callback", "exception was never",
                "Unhandled exception"):
        assert bad not in log, log[-4000:]


def meta_as_beta(d, udp_port="1"):
    """A MetaConnection playing beta over a real socket to alpha, run to activation."""
    beta_key = keys.read_private_key(os.path.join(d.root, "beta", "ed25519_key.priv"))
    alpha_pub = keys.read_private_key(os.path.join(d.base, "ed25519_key.priv")).public
    conn = MetaConnection(my_name="beta", my_key=beta_key, outgoing=True, peer_name="alpha",
                          lookup_peer=lambda n: PeerSettings(alpha_pub) if n == "alpha" else None,
                          udp_port=udp_port, rng=os.urandom, now=time.monotonic())
    sock = socket.create_connection(("127.0.0.1", d.port), timeout=5)
    conn.start(time.monotonic())
    deadline = time.monotonic() + 10
    while not conn.active:
        assert time.monotonic() < deadline, "no activation"
        sock.sendall(conn.data_to_send())
        data = sock.recv(65536)
        assert data, d.read_log(2000)
        conn.receive(data, time.monotonic())
        conn.pop_events()
    sock.sendall(conn.data_to_send())
    return conn, sock


# Requests that parse (or nearly) but carry hostile values; tinc's numbers for each.
HOSTILE_REQUESTS = [
    b"8", b"9", b"10 1 alpha 10.9.0.1/32", b"10 2 beta 0.0.0.0/0#-5", b"10 3 gamma ::/0",
    b"10 4 beta 00:00:00:00:00:00", b"11 5 alpha 10.9.0.1/32", b"11 6 nobody 1.2.3.4",
    b"12 7 beta gamma 127.0.0.1 655 0 -1", b"12 8 beta alpha 127.0.0.1 0 ffffffff 1",
    b"12 9 gamma beta ::1 65535 0 2147483647 ::1 1", b"13 10 alpha beta", b"13 11 beta x",
    b"14 12 alpha", b"14 13 nobody", b"15 beta alpha", b"15 beta alpha 1 AAAA",
    b"15 beta alpha 2 ////", b"15 beta alpha 3", b"15 beta alpha 21 " + b"A" * 100,
    b"15 beta nobody 1 x", b"15 beta beta 1 x", b"15 alpha beta 1 x",
    b"16 beta alpha x 0 0 0 0", b"16 beta alpha " + b"A" * 200 + b" 0 0 0 0 1.2.3.4 655",
    b"16 alpha beta x 0 0 0 0", b"16 beta nobody x 0 0 0 0",
    b"17 0", b"17 -1", b"17 999999999", b"21 0", b"21 10", b"21 99999",
    b"22 beta alpha 1.2.3.4 655", b"22 beta alpha ::1 0", b"22 nobody alpha 1.2.3.4 1",
    b"23 beta alpha 0", b"23 beta alpha -1", b"23 beta alpha 99999999",
    b"24", b"4 0 0 0 0", b"0 beta 17.7", b"99 x", b"\xff\xfe\x00", b"",
]


def test_authenticated_peer_sending_hostile_requests(alpha):
    conn, sock = meta_as_beta(alpha)
    try:
        closed_before = 0
        for line in HOSTILE_REQUESTS:
            conn._send_record(line + b"\n")
            sock.sendall(conn.data_to_send())
            time.sleep(0.02)
            # Some requests rightly end the connection (the daemon parks the socket unread,
            # so no EOF comes): carry on with a new one.
            closes = alpha.read_log().count("Closing connection with beta")
            if closes > closed_before:
                closed_before = closes
                sock.close()
                conn, sock = meta_as_beta(alpha)
        time.sleep(0.5)
    finally:
        sock.close()
    assert_healthy(alpha)
    # The requests reached the node core (not just the connection's parser).
    log = alpha.read_log()
    for seen in ("Got DEL_EDGE from beta", "Got KEY_CHANGED from beta",
                 "Got ANS_KEY from beta", "Closing connection with beta"):
        assert seen in log, log[-3000:]
    assert log.count("Connection with beta") >= 2, log[-5000:]   # reconnected after closing


def test_garbage_on_fresh_meta_connections(alpha):
    rng = random.Random(5)
    payloads = [b"\n" * 10, b"0 beta 17.7\n" + rng.randbytes(300),
                b"0 alpha 17.7\n", b"0 beta 1.0\n", b"x" * 5000, b"0 " + b"A" * 2000 + b"\n",
                rng.randbytes(2000)]
    for data in payloads:
        with socket.create_connection(("127.0.0.1", alpha.port), timeout=5) as s:
            s.settimeout(0.3)       # a tarpitted or still-waiting socket never answers
            try:
                s.sendall(data)
                s.recv(100)
            except OSError:
                pass
    assert_healthy(alpha)


def test_udp_garbage_with_valid_node_ids(alpha):
    rng = random.Random(7)
    me, beta, gamma = node_id("alpha"), node_id("beta"), node_id("gamma")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(2000):
            prefix = rng.choice([me + beta, bytes(6) + beta, beta + beta, gamma + beta,
                                 me + me, b""])
            body = rng.randbytes(rng.choice([0, 1, 12, 21, 100, 1500]))
            s.sendto(prefix + body, ("127.0.0.1", alpha.port))
    time.sleep(0.5)
    assert_healthy(alpha)


def send_control(path, data):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(path)
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
        except OSError:
            pass


def test_control_socket_overlong_line(alpha):
    send_control(alpha.pidfile + ".socket", b"x" * 70000 + b"\n")
    time.sleep(0.3)
    assert_healthy(alpha)


def test_control_socket_garbage(alpha):
    path = alpha.pidfile + ".socket"
    with open(alpha.pidfile) as f:
        cookie = control.parse_pidfile(f.read()).cookie
    sessions = [b"junk\n", b"\xff" * 100 + b"\n", b"0 ^wrong 0\n",
                control.client_greeting(cookie).encode()
                + b"18\n18 x\n18 99999999999999999999\n18 15 a b\n18 9 -5\n18 12\n"
                  b"18 -1\n18 1 2 3\n\xff\xfe\n"]
    for data in sessions:
        send_control(path, data)
    wait_until(lambda: alpha.request(Ctl.DUMP_NODES) != [], 5, "control socket dead")
    assert_healthy(alpha)


def test_peer_announcing_an_out_of_range_udp_port(alpha):
    """beta's ACK says UDP port 99999; once the UDP tunnel has keys, alpha sends MTU probes
    there. The test plays beta's data plane with tincapp's own tunnel core."""
    from tincapp.datapath.tunnels import DataPlane, SendToward, SendUdp
    from tincapp.mesh.graph import Graph, SockAddr
    from tincapp.meta import messages
    from tincapp.meta.events import RequestReceived
    conn, sock = meta_as_beta(alpha, udp_port="99999")
    beta_key = keys.read_private_key(os.path.join(alpha.root, "beta", "ed25519_key.priv"))
    alpha_pub = keys.read_private_key(os.path.join(alpha.base, "ed25519_key.priv")).public
    opts = messages.OPTION_PMTU_DISCOVERY | 7 << 24
    g = Graph("beta", options=opts)
    g.add_edge("beta", "alpha", address=SockAddr("127.0.0.1", str(alpha.port)), options=opts,
               weight=10)
    g.add_edge("alpha", "beta", address=SockAddr("127.0.0.1", "99999"), options=opts,
               weight=10)
    g.run(time.monotonic())
    plane = DataPlane("beta", graph=g, has_connection=lambda n: n == "alpha",
                      my_key=beta_key, peer_key=lambda n: alpha_pub if n == "alpha" else None,
                      rng=os.urandom, my_options=opts)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    sock.settimeout(0.05)
    try:
        # Our edge, so that alpha sees beta reachable (a real node sends it on activation).
        conn._send_record(b"12 1a2b beta alpha 127.0.0.1 %d %x 10\n" % (alpha.port, opts))
        sock.sendall(conn.data_to_send())
        wait_until(lambda: "Node beta became reachable" in alpha.read_log(), 5,
                   "beta not reachable")
        plane.try_tx("alpha", True, time.monotonic())
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            now = time.monotonic()
            for act in plane.pop_actions():
                if isinstance(act, SendToward):
                    text = act.msg if isinstance(act.msg, bytes) else messages.format(act.msg)
                    conn._send_record(text + b"\n")
                elif isinstance(act, SendUdp):
                    udp.sendto(act.data, ("127.0.0.1", alpha.port))
            sock.sendall(conn.data_to_send())
            try:
                data = sock.recv(65536)
            except TimeoutError:
                data = None
            if data:
                conn.receive(data, now)
                for ev in conn.pop_events():
                    if isinstance(ev, RequestReceived) and isinstance(
                            ev.msg, (messages.ReqKeyBase, messages.AnsKey)):
                        plane.receive_request(ev.msg, ev.line, ev.msg.to_name == "beta", now)
            try:
                while True:
                    d, (h, p) = udp.recvfrom(65536)
                    plane.receive_udp(d, SockAddr(h, str(p)), now)
            except BlockingIOError:
                pass
            if (plane.next_deadline() or now + 1) <= now:
                plane.handle_deadline(now)
            if "Exception in callback" in alpha.read_log() or "Fatal error" in alpha.read_log():
                break
        assert plane.tunnel("alpha").validkey, alpha.read_log(3000)
    finally:
        udp.close()
        sock.close()
    assert_healthy(alpha)
