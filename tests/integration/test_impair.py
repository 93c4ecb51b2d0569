"""The impairment relay (impair.py) does what each command says, checked with plain UDP and TCP
endpoints in namespaces a and b on either side of the relay's namespace r; then two tincapp
daemons ping each other through it, clean and with 5 % UDP loss.

Needs root and network namespaces. Endpoints are sockets this process opens inside the
namespaces (`netns_socket`), so no test needs a helper process but the relay itself.
"""
import os
import shutil
import signal
import socket
import struct
import tempfile
import threading
import time

import pytest

from tests.integration.impair import SO_RCVBUFFORCE, ImpairRelay, RelayError, netns_socket
from tests.integration.netns import Namespaces, netns_unavailable
from tests.integration.test_mesh_netns import Node, wait_until
from tests.integration.test_node_mesh import make_keys
from tincapp import keys

pytestmark = pytest.mark.skipif(netns_unavailable() is not None,
                                reason=netns_unavailable() or "")

A, RA = "192.0.2.1", "192.0.2.254"            # node a, and the relay on a's side
RB, B = "198.51.100.254", "198.51.100.2"      # the relay on b's side, and node b
PA, PB = 7001, 7002                           # a's and b's ports for the plain endpoints
TINC_PORT = 655
CONFIG = {"seed": 7, "links": [
    {"a": {"name": "a", "addr": A, "port": PA, "relay": RA},
     "b": {"name": "b", "addr": B, "port": PB, "relay": RB}},
    # The tinc daemons (same namespaces, port 655): a second link in the same relay.
    {"a": {"name": "ta", "addr": A, "port": TINC_PORT, "relay": RA},
     "b": {"name": "tb", "addr": B, "port": TINC_PORT, "relay": RB}},
]}
PREFIX = bytes(range(1, 13))                  # a stand-in for tinc's 12-byte node-ID prefix


@pytest.fixture(scope="module")
def net():
    ns = Namespaces("a", "r", "b")
    relay = None
    try:
        ns.link("a", f"{A}/24", "r", f"{RA}/24")
        ns.link("r", f"{RB}/24", "b", f"{B}/24")
        relay = ImpairRelay.start(ns["r"], CONFIG)
        yield ns, relay
    finally:
        if relay is not None:
            assert relay.stop() == 0, relay.log()
        ns.close()


@pytest.fixture
def relay(net):
    ns, relay = net
    relay.reset()
    relay.partition(on=False)
    yield relay
    relay.reset()
    relay.partition(on=False)


def udp_in(ns, name, addr, port):
    sock = netns_socket(ns[name])
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 << 20)     # bursts fit
    sock.bind((addr, port))
    return sock


@pytest.fixture
def udp(net, relay):
    """(a's socket, b's socket) bound to the link's node addresses."""
    ns, _ = net
    sa, sb = udp_in(ns, "a", A, PA), udp_in(ns, "b", B, PB)
    yield sa, sb
    sa.close()
    sb.close()


def datagram(i, size=64, prefix=PREFIX):
    body = prefix + struct.pack(">I", i)
    return body + bytes(size - len(body))


def seq(data):
    return struct.unpack(">I", data[12:16])[0]


def send_all(sock, dst, n, size=64):
    for i in range(n):
        sock.sendto(datagram(i, size), dst)


SO_MEMINFO, SK_MEMINFO_DROPS = 55, 8     # linux/sock_diag.h: the socket's own drop counter


def receive_drops(sock):
    """Datagrams the kernel dropped because sock's receive queue was full."""
    return struct.unpack("9I", sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 36))[SK_MEMINFO_DROPS]


def receive_all(sock, idle_s=0.3, limit_s=10.0):
    """[(data, source, arrival time)] until nothing has come for idle_s."""
    out = []
    sock.settimeout(idle_s)
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            data, src = sock.recvfrom(65535)
        except socket.timeout:
            break
        out.append((data, src, time.monotonic()))
    return out


def delta(relay, before, direction, counter):
    return relay.stats(direction)[direction][counter] - before[direction][counter]


def tcp_pair(ns, server_backlog=4):
    """A listener in b at B:PB and a socket in a connected to it through the relay."""
    listener = netns_socket(ns["b"], type=socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((B, PB))
    listener.listen(server_backlog)
    client = netns_socket(ns["a"], type=socket.SOCK_STREAM)
    client.settimeout(3)
    client.connect((RA, PB))
    return listener, client


def recv_exactly(sock, n, timeout=3):
    sock.settimeout(timeout)
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            break
        buf += chunk
    return buf


def test_forwards_udp_and_tcp_as_a_nat(net, relay, udp):
    ns, _ = net
    sa, sb = udp
    before = relay.stats()
    sa.sendto(b"to b", (RA, PB))
    sb.settimeout(2)
    data, src = sb.recvfrom(100)
    assert (data, src) == (b"to b", (RB, PA))       # b sees a at the relay's address
    sb.sendto(b"to a", (RB, PA))
    sa.settimeout(2)
    data, src = sa.recvfrom(100)
    assert (data, src) == (b"to a", (RA, PB))
    assert delta(relay, before, "a>b", "forwarded") == 1
    assert delta(relay, before, "b>a", "forwarded") == 1
    assert delta(relay, before, "a>b", "bytes") == 4

    listener, client = tcp_pair(ns)
    with listener, client:
        listener.settimeout(3)
        server, peer = listener.accept()
        with server:
            assert peer[0] == RB
            client.sendall(b"x" * 100000)
            client.shutdown(socket.SHUT_WR)            # half-close crosses the relay
            assert recv_exactly(server, 100001) == b"x" * 100000
            server.sendall(b"reply")
            server.close()
            assert recv_exactly(client, 6) == b"reply"
    assert delta(relay, before, "a>b", "tcp_accepted") == 1
    assert delta(relay, before, "a>b", "tcp_bytes") == 100000
    assert delta(relay, before, "b>a", "tcp_bytes") == 5


def test_drop_rate_matches(relay, udp):
    sa, sb = udp
    relay.set("a>b", drop=0.2)
    before = relay.stats()
    send_all(sa, (RA, PB), 2000)
    got = receive_all(sb)
    dropped = delta(relay, before, "a>b", "dropped")
    assert len(got) == 2000 - dropped
    assert 300 < dropped < 500, dropped
    # The other direction is untouched.
    send_all(sb, (RB, PA), 200)
    assert len(receive_all(sa)) == 200


def test_duplicates_arrive_twice(relay, udp):
    sa, sb = udp
    relay.set("a>b", duplicate=1.0)
    send_all(sa, (RA, PB), 100)
    got = sorted(seq(d) for d, _, _ in receive_all(sb))
    assert got == sorted(list(range(100)) * 2)
    relay.set("a>b", duplicate=0.3)
    before = relay.stats()
    send_all(sa, (RA, PB), 500)
    got = receive_all(sb)
    dup = delta(relay, before, "a>b", "duplicated")
    assert len(got) == 500 + dup and 100 < dup < 200, dup


def test_reorder_changes_order_but_loses_nothing(relay, udp):
    sa, sb = udp
    relay.set("a>b", reorder=0.3, reorder_gap=3)
    before = relay.stats()
    send_all(sa, (RA, PB), 300)
    got = [seq(d) for d, _, _ in receive_all(sb)]
    assert sorted(got) == list(range(300))
    late = sum(1 for x, y in zip(got, got[1:]) if y < x)
    assert late > 30, got
    assert 60 < delta(relay, before, "a>b", "reordered") < 120
    # A held datagram with nothing after it goes out after reorder_hold_s.
    relay.set("a>b", reorder=1.0, reorder_gap=5, reorder_hold_s=0.2)
    t0 = time.monotonic()
    sa.sendto(datagram(1), (RA, PB))
    sb.settimeout(2)
    sb.recvfrom(100)
    assert 0.15 < time.monotonic() - t0 < 1.0


def test_delay_and_jitter(relay, udp):
    sa, sb = udp
    relay.set("a>b", delay_s=0.2)
    t0 = time.monotonic()
    sa.sendto(datagram(0), (RA, PB))
    sb.settimeout(2)
    sb.recvfrom(100)
    assert 0.18 < time.monotonic() - t0 < 0.6
    t0 = time.monotonic()
    sb.sendto(datagram(0), (RB, PA))                 # b>a is not delayed
    sa.settimeout(2)
    sa.recvfrom(100)
    assert time.monotonic() - t0 < 0.15
    relay.set("a>b", delay_s=0.1, jitter_s=0.05)
    t0 = time.monotonic()
    send_all(sa, (RA, PB), 50)
    got = receive_all(sb)
    assert len(got) == 50
    waits = [t - t0 for _, _, t in got]
    assert min(waits) > 0.045 and max(waits) < 0.4
    assert max(waits) - min(waits) > 0.03           # spread by the jitter


def bit_diff(x, y):
    return [i for i in range(len(x) * 8) if (x[i // 8] ^ y[i // 8]) >> (i % 8) & 1]


def test_corruption_flips_bits_and_can_spare_the_prefix(relay, udp):
    sa, sb = udp
    relay.set("a>b", corrupt=1.0, corrupt_bits=3)          # keep_prefix is the default
    send_all(sa, (RA, PB), 50)
    got = receive_all(sb)
    assert len(got) == 50
    for i, (data, _, _) in enumerate(got):                   # nothing reorders them
        flips = bit_diff(data, datagram(i))
        assert len(flips) == 3 and min(flips) >= 12 * 8, flips
    relay.set("a>b", corrupt=1.0, corrupt_bits=1, keep_prefix=False)
    send_all(sa, (RA, PB), 200)
    got = receive_all(sb)
    assert len(got) == 200
    hit_prefix = sum(1 for data, _, _ in got if data[:12] != PREFIX)
    assert 10 < hit_prefix < 80, hit_prefix          # 12 of 64 bytes: about 37


def test_partition_blocks_both_protocols_and_heals(net, relay, udp):
    ns, _ = net
    sa, sb = udp
    listener, client = tcp_pair(ns)
    with listener, client:
        listener.settimeout(3)
        server, _ = listener.accept()
        with server:
            client.sendall(b"before")
            assert recv_exactly(server, 6) == b"before"
            relay.partition(on=True)
            sa.sendto(b"u1", (RA, PB))
            sb.sendto(b"u2", (RB, PA))
            client.sendall(b"during-a")
            server.sendall(b"during-b")
            late = netns_socket(ns["a"], type=socket.SOCK_STREAM)
            with late:
                late.settimeout(3)
                late.connect((RA, PB))          # accepted by the relay, but held there
                late.sendall(b"late")
                time.sleep(0.4)
                assert receive_all(sb, 0.05) == [] and receive_all(sa, 0.05) == []
                listener.settimeout(0.1)
                with pytest.raises(socket.timeout):
                    listener.accept()
                server.settimeout(0.1)
                with pytest.raises(socket.timeout):
                    server.recv(100)
                client.settimeout(0.1)
                with pytest.raises(socket.timeout):
                    client.recv(100)
                relay.partition(on=False)
                # The connection survived; what was sent during the cut arrives now.
                assert recv_exactly(server, 8) == b"during-a"
                assert recv_exactly(client, 8) == b"during-b"
                listener.settimeout(3)
                joined, _ = listener.accept()
                with joined:
                    assert recv_exactly(joined, 4) == b"late"
            client.sendall(b"after")
            assert recv_exactly(server, 5) == b"after"
    sa.sendto(b"u3", (RA, PB))
    sb.settimeout(2)
    assert sb.recvfrom(100)[0] == b"u3"


def test_kill_tcp_resets_both_ends(net, relay):
    ns, _ = net
    listener, client = tcp_pair(ns)
    with listener, client:
        listener.settimeout(3)
        server, _ = listener.accept()
        with server:
            client.sendall(b"hello")
            assert recv_exactly(server, 5) == b"hello"
            assert relay.kill_tcp() == 1
            for end in (client, server):
                end.settimeout(3)
                with pytest.raises(ConnectionResetError):
                    end.recv(100)
    # partition with tcp="reset" does the same and refuses newcomers while it lasts.
    relay.partition(on=True, tcp="reset")
    late = netns_socket(ns["a"], type=socket.SOCK_STREAM)
    with late:
        late.settimeout(3)
        with pytest.raises(ConnectionResetError):
            late.connect((RA, PB))      # the reset may come before connect() has returned
            late.recv(100)


def test_inject_floods_at_rate_with_source_and_prefix(relay, udp):
    sa, sb = udp
    sa.sendto(datagram(1, size=120), (RA, PB))       # the real datagram the forgeries copy
    assert len(receive_all(sb, 0.2)) == 1
    before = relay.stats()
    relay.inject("a>b", rate=10000, duration_s=0.5)   # returns at once: receive meanwhile
    got = receive_all(sb, 0.3)
    assert len(got) == 5000
    assert delta(relay, before, "a>b", "injected") == 5000
    assert {src for _, src, _ in got} == {(RB, PA)}
    assert all(d[:12] == PREFIX and len(d) == 120 for d, _, _ in got)
    assert len({d for d, _, _ in got}) == 5000       # random bodies
    spread = got[-1][2] - got[0][2]
    assert 0.4 < spread < 0.9, spread                # paced: about 10,000 per second
    # An explicit prefix and size, toward a.
    sent = relay.inject("b>a", rate=1000, count=20, size=40, prefix=b"\0" * 6 + b"z" * 6,
                        wait=True)
    got = receive_all(sa, 0.2)
    assert sent == 20 and len(got) == 20
    assert all(d[:12] == b"\0" * 6 + b"z" * 6 and len(d) == 40 and src == (RA, PB)
               for d, src, _ in got)


def test_replay_injection_and_capture(relay, udp):
    sa, sb = udp
    relay.set("a>b", capture=True)
    relay.capture("a>b", clear=True)
    send_all(sa, (RA, PB), 20)
    assert len(receive_all(sb, 0.2)) == 20
    relay.inject("a>b", rate=2000, count=40, mode="replay", last=20, wait=True)
    got = receive_all(sb, 0.2)
    assert sorted(seq(d) for d, _, _ in got) == sorted(list(range(20)) * 2)
    assert {src for _, src, _ in got} == {(RB, PA)}
    assert relay.capture("a>b")["a>b"]["injected"] == list(range(20)) * 2
    # The replay impairment re-sends real datagrams later; capture names every copy.
    relay.capture("a>b", clear=True)
    relay.set("a>b", replay=1.0, replay_delay_s=0.1, duplicate=0.5)
    send_all(sa, (RA, PB), 30)
    got = receive_all(sb, 0.3)
    cap = relay.capture("a>b")["a>b"]
    assert cap["forwarded"] == list(range(30))
    assert sorted(cap["replayed"]) == list(range(30))
    assert len(got) == 30 + 30 + len(cap["duplicated"])
    assert sorted(seq(d) for d, _, _ in got) == sorted(
        cap["forwarded"] + cap["replayed"] + cap["duplicated"])


def test_commands_are_checked(relay):
    with pytest.raises(RelayError, match="unknown udp parameter"):
        relay.set("a>b", dorp=0.1)
    with pytest.raises(RelayError, match="no direction or link"):
        relay.set("a>c", drop=0.1)
    with pytest.raises(RelayError, match="one direction"):
        relay.inject("a-b", rate=10, count=1)
    assert set(relay.stats("a-b")) == {"a>b", "b>a"}
    assert set(relay.stats()) == {"a>b", "b>a", "ta>tb", "tb>ta"}


def test_relay_exits_on_sigterm_and_when_its_owner_goes():
    config = {"links": [{"a": {"name": "x", "addr": "127.0.0.1", "port": 7101,
                               "relay": "127.0.0.2"},
                         "b": {"name": "y", "addr": "127.0.0.1", "port": 7102,
                               "relay": "127.0.0.3"}}]}
    with Namespaces("solo") as ns:
        relay = ImpairRelay.start(ns["solo"], config)
        control = os.path.join(relay.workdir, "control.sock")
        assert os.path.exists(control)
        relay.proc.send_signal(signal.SIGTERM)
        assert relay.proc.wait(5) == 0
        assert not os.path.exists(control)
        relay.stop()
        assert not os.path.exists(relay.workdir)

        relay = ImpairRelay.start(ns["solo"], config)
        relay.file.close()
        relay.sock.close()                              # the owner hangs up (or dies)
        assert relay.proc.wait(5) == 0
        assert not os.path.exists(relay.workdir)        # the relay cleaned up after it
        relay.stop()

        with pytest.raises(RelayError, match="did not start"):
            ImpairRelay.start(ns["solo"], {"links": [{"a": config["links"][0]["a"],
                                                      "b": config["links"][0]["a"]}]})


def test_unimpaired_forwarding_delivers_every_datagram(net, relay):
    """Every datagram the relay forwards with no impairment arrives; the rate is printed
    (how fast is for bench/, not for a test on a shared machine)."""
    ns, _ = net
    sa, sb = udp_in(ns, "a", A, PA), udp_in(ns, "b", B, PB)
    with sa, sb:
        before = relay.stats()
        stop = time.monotonic() + 1.0
        sent = [0]

        def blast():
            msg = datagram(0, 100)
            while time.monotonic() < stop:
                for _ in range(100):
                    sa.sendto(msg, (RA, PB))
                sent[0] += 100
                time.sleep(0)
        thread = threading.Thread(target=blast)
        thread.start()
        got = receive_all(sb, 0.3, limit_s=5)
        thread.join()
        forwarded = delta(relay, before, "a>b", "forwarded")
        rate = forwarded / (got[-1][2] - got[0][2])
        overflowed = receive_drops(sb)
        print(f"relay forwarded {forwarded} of {sent[0]} datagrams: {rate:.0f}/s"
              f" ({overflowed} overflowed the receiver's queue)")
        # On a busy machine our receiving thread can fall behind; the kernel counts what it
        # then drops, so every forwarded datagram is still accounted for.
        assert forwarded > 0 and len(got) + overflowed == forwarded


# --- two tincapp daemons through the relay -----------------------------------------------------

def test_tincapp_ping_through_relay(net, relay):
    ns, _ = net
    root = tempfile.mkdtemp(prefix="tincapp-impair-")
    nodes = []
    # Each daemon knows the other by the relay's address on its own side.
    own = {"a": A, "b": B}
    relay_side = {"a": RA, "b": RB}
    vpn = {"a": "10.9.0.1", "b": "10.9.0.2"}
    try:
        pubs = make_keys(root, ("a", "b"))
        for n in ("a", "b"):
            base = os.path.join(root, n)
            with open(os.path.join(base, "tinc.conf"), "w") as f:
                f.write(f"Name = {n}\nDeviceType = tun\nInterface = vpn{n}\n"
                        f"AutoConnect = no\nPingInterval = 5\nPingTimeout = 3\n")
                if n == "a":
                    f.write("ConnectTo = b\n")
            up = os.path.join(base, "tinc-up")
            with open(up, "w") as f:
                f.write(f"#!/bin/sh\nip addr add {vpn[n]}/24 dev $INTERFACE\n"
                        "ip link set $INTERFACE up\n")
            os.chmod(up, 0o755)
            for m in ("a", "b"):
                with open(os.path.join(base, "hosts", m), "w") as f:
                    address = own[n] if m == n else relay_side[n]
                    f.write(f"Address = {address}\nPort = {TINC_PORT}\n"
                            f"Subnet = {vpn[m]}/32\n" + keys.hosts_line(pubs[m]))
        for n in ("b", "a"):        # b listens before a's ConnectTo tries it
            nodes.append(Node(ns, root, n, None))
            nodes[-1].start()

        def ping(count, interval="0.1"):
            r = ns.run("a", ["ping", "-n", "-q", "-c", str(count), "-i", interval, "-W", "1",
                             vpn["b"]])
            line = [l for l in r.stdout.splitlines() if "received" in l]
            return int(line[0].split()[3]) if line else 0

        wait_until(lambda: ping(1) == 1, 15, "ping through the relay")
        before = relay.stats("ta-tb")
        assert ping(10) == 10
        after = relay.stats("ta-tb")
        # The pings went over UDP through the relay (not only over the meta connection).
        assert after["ta>tb"]["forwarded"] - before["ta>tb"]["forwarded"] >= 10
        assert after["tb>ta"]["forwarded"] - before["tb>ta"]["forwarded"] >= 10
        assert after["ta>tb"]["tcp_accepted"] >= 1            # the meta connection too

        relay.set("ta-tb", drop=0.05)
        received = ping(40, "0.05")
        assert received >= 30, received               # 5 % each way: about 36 of 40
        after = relay.stats("ta-tb")
        assert after["ta>tb"]["dropped"] + after["tb>ta"]["dropped"] > 0
    finally:
        for node in nodes:
            node.kill()
        if os.environ.get("TINCAPP_KEEP_LOGS"):
            print(f"configuration and logs kept in {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
