"""`tinc` commands that talk to a daemon: against a fake daemon (a thread serving the control
socket through tincapp.control.ControlServerConnection with canned dump lines), and, with
TINC_BIN_DIR set, against real tinc 1.1 (real `tinc` on the fake daemon must print what ours
prints; ours on a real tincd must print what real `tinc` prints)."""
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.tincref import OLD_CLI_REASON, cli_is_old_release
from tincapp import control, keys
from tincapp.control import ControlServerConnection, Ctl, PidFile

pytestmark = pytest.mark.integration

TINC_BIN_DIR = os.environ.get("TINC_BIN_DIR")
needs_tinc = pytest.mark.skipif(
    not TINC_BIN_DIR, reason="TINC_BIN_DIR not set: no real tinc 1.1 to compare with")
# Output comparisons need the 1.1 head's CLI (see tests/tincref.py).
same_cli_output = pytest.mark.skipif(cli_is_old_release(), reason=OLD_CLI_REASON)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

COOKIE = "0123456789ABCDEF" * 4
NODES = [
    "18 3 alice 2bd806c97f0e MYSELF port 655 0 0 0 0 700000c 58 alice alice 0 1518 1518 1518 "
    "1700000000 -1 0 0 0 0",
    "18 3 bob 0416a26ba554 192.0.2.7 port 655 0 0 0 0 700000c d2 bob bob 1 1451 1451 1518 "
    "1700000100 1234 10 1000 20 2000",
    "18 3 carol 8a6d4a0e1d3e 198.51.100.9 port 655 0 0 0 0 700000c 52 bob bob 2 1518 0 1518 "
    "1700000200 -1 0 0 0 0",
    "18 3 dave 4f2c1f6a33b0 unknown port unknown 0 0 0 0 0 0 - - 0 1518 0 1518 0 -1 0 0 0 0",
]
EDGES = [
    "18 4 alice bob 192.0.2.7 port 655 10.0.0.1 port 655 700000c 41",
    "18 4 bob alice 192.0.2.1 port 655 unspec port unspec 700000c 41",
    "18 4 bob carol 198.51.100.9 port 655 unspec port unspec 700000c 1200",
    "18 4 carol bob 192.0.2.7 port 655 unspec port unspec 700000c 1200",
]
SUBNETS = [
    "18 5 10.1.0.0/16 alice", "18 5 10.2.0.0/16#5 bob", "18 5 10.2.3.4 carol",
    "18 5 fd00::/64 bob", "18 5 02:00:00:00:00:01 carol", "18 5 ff:ff:ff:ff:ff:ff (broadcast)",
]
CONNECTIONS = [
    "18 6 bob 192.0.2.7 port 655 700000c 7 c2",
    "18 6 <control> localhost port unix 0 9 200",
]
LOG_LINES = [b"first log line", b"second: with \xff byte"]


class FakeDaemon:
    """A control-socket server in a thread; records every ControlRequest."""

    def __init__(self, directory):
        self.pidfile = os.path.join(directory, "tinc.test.pid")
        self.socket_path = os.path.join(directory, "tinc.test.socket")
        self.requests = []
        self.debug = 0
        self.stopped = threading.Event()
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.socket_path)
        self.listener.listen(8)
        with open(self.pidfile, "w") as f:
            f.write(PidFile(os.getpid(), COOKIE, "127.0.0.1", "655").format())
        self.threads = [threading.Thread(target=self._accept, daemon=True)]
        self.threads[0].start()

    def close(self):
        self.listener.close()
        try:
            socket.socket(socket.AF_UNIX).connect(self.socket_path)
        except OSError:
            pass
        for t in self.threads:
            t.join(5)

    def _accept(self):
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            t = threading.Thread(target=self._serve, args=(sock,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, sock):
        conn = ControlServerConnection(COOKIE, "alice", os.getpid())
        buf = b""
        with sock:
            sock.settimeout(10)
            while not conn.closed:
                try:
                    data = sock.recv(4096)
                except OSError:
                    return
                if not data:
                    return
                buf += data
                while b"\n" in buf and not conn.closed:
                    line, buf = buf.split(b"\n", 1)
                    for req in conn.receive_line(line.decode("latin-1")):
                        self.requests.append(req)
                        raw = self._answer(conn, req)
                        if raw is not None:
                            self._send(sock, "".join(conn.lines_to_send()).encode() + raw)
                            return
                    if not self._send(sock, "".join(conn.lines_to_send()).encode()):
                        return
                    if self.stopped.is_set():
                        return

    @staticmethod
    def _send(sock, data):
        # The CLI may leave without reading the reply (e.g. the RELOAD after `tinc set`).
        try:
            sock.sendall(data)
            return True
        except OSError:
            return False

    def _answer(self, conn, req):
        """Queue the reply; bytes returned are sent raw, then the connection closes."""
        dumps = {Ctl.DUMP_NODES: NODES, Ctl.DUMP_EDGES: EDGES, Ctl.DUMP_SUBNETS: SUBNETS,
                 Ctl.DUMP_CONNECTIONS: CONNECTIONS}
        if req.type in dumps:
            for line in dumps[req.type]:
                conn._out.append(line + "\n")
            conn.end_dump(req.type)
        elif req.type == Ctl.STOP:
            conn.reply(int(Ctl.STOP), 0)
            self.stopped.set()
        elif req.type in (Ctl.RELOAD, Ctl.PURGE, Ctl.RETRY):
            conn.reply(req.type, 0)
        elif req.type == Ctl.SET_DEBUG:
            conn.reply(req.type, self.debug)
            if int(req.args[0]) >= 0:
                self.debug = int(req.args[0])
        elif req.type == Ctl.DISCONNECT:
            conn.reply(req.type, 0 if req.args and req.args[0] == "bob" else -2)
        elif req.type == Ctl.LOG:
            return b"".join(b"18 15 %d\n%s" % (len(m), m) for m in LOG_LINES)
        else:
            conn.reply(control.INVALID)
        return None


@pytest.fixture
def fake(tmp_path):
    d = FakeDaemon(str(tmp_path))
    yield d
    d.close()


def ours(*args, stdin=b"", env=None):
    cmd = [sys.executable, "-m", "tincapp", "tinc", *args]
    e = dict(os.environ, PYTHONPATH=ROOT, **(env or {}))
    p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=60, env=e)
    return p.returncode, p.stdout, p.stderr.decode()


def real(*args, stdin=b""):
    p = subprocess.run([os.path.join(TINC_BIN_DIR, "tinc"), *args], input=stdin,
                       capture_output=True, timeout=60)
    return p.returncode, p.stdout, p.stderr.decode()


def ctl(daemon, tmp_path):
    return ["-c", str(tmp_path), "--pidfile", daemon.pidfile]


# --- ours against the fake daemon --------------------------------------------------------------

def test_dump_nodes(fake, tmp_path):
    code, out, err = ours(*ctl(fake, tmp_path), "dump", "nodes")
    assert (code, err) == (0, "")
    lines = out.decode().splitlines()
    assert lines[1] == ("bob id 0416a26ba554 at 192.0.2.7 port 655 cipher 0 digest 0 "
                        "maclength 0 compression 0 options 700000c status 00d2 nexthop bob "
                        "via bob distance 1 pmtu 1451 (min 1451 max 1518) rx 10 1000 tx 20 2000 "
                        "rtt 1.234")
    assert len(lines) == 4
    assert [r.type for r in fake.requests] == [Ctl.DUMP_NODES]


def test_dump_other_kinds(fake, tmp_path):
    c = ctl(fake, tmp_path)
    out = ours(*c, "dump", "reachable", "nodes")[1].decode().splitlines()
    assert [line.split()[0] for line in out] == ["alice", "bob", "carol"]
    out = ours(*c, "list", "edges")[1].decode().splitlines()
    assert out[0] == ("alice to bob at 192.0.2.7 port 655 local 10.0.0.1 port 655 "
                      "options 700000c weight 41")
    out = ours(*c, "dump", "subnets")[1].decode().splitlines()
    assert out[1] == "10.2.0.0/16#5 owner bob" and out[-1] == \
        "ff:ff:ff:ff:ff:ff owner (broadcast)"
    out = ours(*c, "dump", "connections")[1].decode().splitlines()
    assert out == ["bob at 192.0.2.7 port 655 options 700000c socket 7 status c2",
                   "<control> at localhost port unix options 0 socket 9 status 200"]
    graph = ours(*c, "dump", "graph")[1].decode()
    assert graph.startswith('graph {\n "alice" [label = "alice", color = "green", '
                            'style = "filled"];\n')
    assert ' "bob" -- "alice" [w = 1599.438965, weight = 1599.438965];\n' in graph
    assert graph.endswith("}\n")
    assert ours(*c, "dump", "digraph")[1].decode().count(" -> ") == 4


def test_dump_errors(fake, tmp_path):
    c = ctl(fake, tmp_path)
    code, _, err = ours(*c, "dump", "foo")
    assert (code, err) == (1, "Unknown dump type 'foo'.\nTry `tinc --help' for more "
                              "information.\n")
    code, _, err = ours(*c, "dump", "reachable", "edges")
    assert (code, err.splitlines()[0]) == (1, "`reachable' only supported for nodes.")
    code, _, err = ours(*c, "dump")
    assert (code, err.splitlines()[0]) == (1, "Invalid number of arguments.")


def test_info(fake, tmp_path):
    c = ctl(fake, tmp_path)
    code, out, err = ours(*c, "info", "bob", env={"TZ": "UTC"})
    assert (code, err) == (0, "")
    assert out.decode() == (
        "Node:         bob\nNode ID:      0416a26ba554\nAddress:      192.0.2.7 port 655\n"
        "Online since: 2023-11-14 22:15:00\nStatus:       validkey reachable sptps "
        "udp_confirmed\nOptions:      pmtu_discovery clamp_mss\nProtocol:     17.7\n"
        "Reachability: directly with UDP\nPMTU:         1451\nRTT:          1.234\n"
        "RX:           10 packets  1000 bytes\nTX:           20 packets  2000 bytes\n"
        "Edges:        alice carol\nSubnets:      10.2.0.0/16#5 fd00::/64\n")
    assert ours(*c, "info", "10.2.3.4")[1] == b"Subnet: 10.2.0.0/16#5\nOwner:  bob\n" \
        b"Subnet: 10.2.3.4\nOwner:  carol\n"
    assert ours(*c, "info", "10.2.0.0/16")[1] == b"Subnet: 10.2.0.0/16#5\nOwner:  bob\n"
    assert ours(*c, "info", "zed")[2] == "Unknown node zed.\n"
    assert ours(*c, "info", "10.9.0.0/16")[2] == "Unknown subnet 10.9.0.0/16.\n"
    assert ours(*c, "info", "10.9.0.1")[2] == "Unknown address 10.9.0.1.\n"
    assert ours(*c, "info", "1.2.3.4.5")[2] == "Could not parse subnet or address '1.2.3.4.5'.\n"
    assert ours(*c, "info", "a-b")[2] == "Argument is not a node name, subnet or address.\n"


def test_simple_requests(fake, tmp_path):
    c = ctl(fake, tmp_path)
    assert ours(*c, "reload")[0] == 0
    assert ours(*c, "purge")[0] == 0
    assert ours(*c, "retry")[0] == 0
    assert ours(*c, "debug", "5")[2] == "Old level 0, new level 5.\n"
    assert ours(*c, "debug", "-1")[2] == "Old level 5, new level -1.\n"
    assert ours(*c, "disconnect", "bob")[0] == 0
    assert ours(*c, "disconnect", "zed")[1:] == (b"", "Could not disconnect zed.\n")
    assert ours(*c, "connect", "bob")[2] == "Could not connect to bob.\n"
    assert ours(*c, "connect", "a-b")[2] == "Invalid name for node.\n"
    assert ours(*c, "pid") == (0, f"{os.getpid()}\n".encode(), "")
    assert ours(*c, "get", "Port") == (0, b"655\n", "")
    assert [r.type for r in fake.requests] == [
        Ctl.RELOAD, Ctl.PURGE, Ctl.RETRY, Ctl.SET_DEBUG, Ctl.SET_DEBUG, Ctl.DISCONNECT,
        Ctl.DISCONNECT, Ctl.CONNECT]


def test_config_change_sends_reload(fake, tmp_path):
    (tmp_path / "tinc.conf").write_text("Name = alice\n")
    assert ours(*ctl(fake, tmp_path), "set", "Mode", "switch")[0] == 0
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.type for r in fake.requests] == [Ctl.RELOAD]


def test_log_streams_until_close(fake, tmp_path):
    code, out, _ = ours(*ctl(fake, tmp_path), "log", "3")
    assert (code, out) == (0, b"first log line\nsecond: with \xff byte\n")
    assert fake.requests[0].args == ("3", "0")


def test_stop(fake, tmp_path):
    assert ours(*ctl(fake, tmp_path), "stop") == (0, b"", "")
    assert fake.requests[0].type == Ctl.STOP


def test_wrong_cookie_and_stale_pidfile(fake, tmp_path):
    with open(fake.pidfile, "w") as f:
        f.write(PidFile(os.getpid(), "F" * 64, "127.0.0.1", "655").format())
    code, _, err = ours(*ctl(fake, tmp_path), "reload")
    assert (code, err) == (1, "Cannot read greeting from control socket: Success\n")
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(fake.pidfile, "w") as f:
        f.write(PidFile(dead.pid, COOKIE, "127.0.0.1", "655").format())
    code, _, err = ours(*ctl(fake, tmp_path), "dump", "nodes")
    assert (code, err) == (1, f"Could not find tincd running at pid {dead.pid}\n")
    assert not os.path.exists(fake.pidfile)       # COMPAT: tinc removes stale files
    assert not os.path.exists(fake.socket_path)


def test_no_daemon(tmp_path):
    code, _, err = ours("-c", str(tmp_path), "--pidfile", str(tmp_path / "x.pid"), "reload")
    assert (code, err) == (1, f"Could not open pid file {tmp_path}/x.pid: "
                              f"No such file or directory\n")


def test_dump_invitations(tmp_path):
    inv = tmp_path / "invitations"
    inv.mkdir()
    (inv / "ed25519_key.priv").write_text("x")
    (inv / ("A" * 24)).write_text("Name = carol\nConnectTo = alice\n")
    (inv / ("B" * 24)).write_text("bogus\n")
    code, out, err = ours("-c", str(tmp_path), "dump", "invitations")
    assert (code, out) == (0, b"A" * 24 + b" carol\n")
    assert err == f"Invalid invitation file {inv}/{'B' * 24}\n"


def test_start_spawns_tincd_and_waits(tmp_path):
    # A stand-in tincd: writes the PID file and reports success over the umbilical.
    script = tmp_path / "fake-tincd"
    script.write_text(
        "#!" + sys.executable + "\n"
        "import os, sys\n"
        "fd = int(os.environ['TINC_UMBILICAL'].split()[0])\n"
        "open(sys.argv[sys.argv.index('--pidfile') + 1], 'w').write('1 ' + 'A' * 64 + "
        "' 127.0.0.1 port 655\\n')\n"
        "os.write(fd, b'started with ' + ' '.join(sys.argv[1:]).encode() + b'\\n\\0')\n")
    script.chmod(0o755)
    pidfile = str(tmp_path / "t.pid")
    code, _, err = ours("-c", str(tmp_path), "--pidfile", pidfile, "start", "-d3",
                        env={"TINCAPP_TINCD": str(script)})
    assert code == 0
    assert err == f"started with -c {tmp_path} --pidfile {pidfile} -d3\n"
    script.write_text("#!/bin/sh\necho no config >&2\nexit 1\n")
    os.unlink(pidfile)
    code, _, err = ours("-c", str(tmp_path), "--pidfile", pidfile, "start",
                        env={"TINCAPP_TINCD": str(script)})
    assert (code, err) == (1, f"no config\nError starting {script}\n")


# --- real tinc against the fake daemon: same output as ours --------------------------------------

COMPARED = [["dump", "nodes"], ["dump", "reachable", "nodes"], ["dump", "edges"],
            ["dump", "subnets"], ["dump", "connections"], ["dump", "graph"],
            ["dump", "digraph"], ["info", "alice"], ["info", "bob"], ["info", "carol"],
            ["info", "dave"], ["info", "10.2.3.4"], ["info", "10.2.0.0/16#5"],
            ["info", "fd00::1"], ["info", "02:00:00:00:00:01"], ["info", "zed"], ["pid"],
            ["get", "Port"], ["purge"], ["connect", "bob"], ["disconnect", "zed"], ["log"]]


@needs_tinc
@same_cli_output
@pytest.mark.parametrize("args", COMPARED, ids=" ".join)
def test_real_tinc_prints_the_same_on_the_fake(fake, tmp_path, args):
    env_tz = {"TZ": os.environ.get("TZ", "UTC")}
    mine = ours(*ctl(fake, tmp_path), *args, env=env_tz)
    old = os.environ.get("TZ")
    os.environ["TZ"] = env_tz["TZ"]
    try:
        theirs = real(*ctl(fake, tmp_path), *args)
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
    assert mine == theirs


# --- ours against a real tincd -------------------------------------------------------------------

@pytest.fixture
def real_tincd(tmp_path):
    if not TINC_BIN_DIR:
        pytest.skip("TINC_BIN_DIR not set: no real tincd to drive")
    conf = tmp_path / "net"
    code, _, err = ours("-b", "-c", str(conf), "init", "alice")
    assert code == 0, err
    for args in (["set", "DeviceType", "dummy"], ["set", "Port", "0"],
                 ["add", "BindToAddress", "127.0.0.1"], ["add", "Subnet", "10.1.0.0/16"],
                 ["add", "Subnet", "10.2.0.1#5"], ["add", "ConnectTo", "bob"]):
        assert ours("-c", str(conf), *args)[0] == 0
    (conf / "hosts" / "bob").write_text("Address = 127.0.0.1 9\nSubnet = 10.3.0.0/16\n")
    (conf / "tinc-up").unlink()
    pidfile = str(tmp_path / "tincd.pid")
    log = open(tmp_path / "tincd.log", "wb")
    proc = subprocess.Popen([os.path.join(TINC_BIN_DIR, "tincd"), "-c", str(conf), "-D",
                             "--pidfile", pidfile], stdout=log, stderr=log)
    deadline = time.monotonic() + 10
    while not os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.exists(pidfile), (tmp_path / "tincd.log").read_text()
    yield ["-c", str(conf), "--pidfile", pidfile], proc
    if proc.poll() is None:
        proc.terminate()
    proc.wait(10)
    log.close()


@needs_tinc
@same_cli_output
def test_ours_prints_like_real_tinc_on_a_real_tincd(real_tincd):
    c, proc = real_tincd
    for args in COMPARED[:-1]:
        if args[0] in ("purge",):
            continue
        assert ours(*c, *args) == real(*c, *args), args
    assert ours(*c, "reload") == (0, b"", "")
    assert ours(*c, "debug", "2") == (0, b"", "Old level 0, new level 2.\n")
    assert ours(*c, "pid")[1] == f"{proc.pid}\n".encode()
    assert ours(*c, "stop") == (0, b"", "")
    assert proc.wait(10) == 0
    assert ours(*c, "pid")[0] == 1


@needs_tinc
def test_real_tinc_joins_with_our_invitation(real_tincd, tmp_path):
    c, proc = real_tincd
    conf = c[1]
    port = ours(*c, "get", "Port")[1].decode().strip()
    assert ours("-c", conf, "set", "Port", port)[0] == 0
    assert ours("-c", conf, "add", "Address", "127.0.0.1")[0] == 0
    code, out, err = ours("-b", *c, "invite", "carol")
    assert code == 0, err
    url = out.decode().strip()
    assert url.startswith(f"127.0.0.1:{port}/")
    joined = tmp_path / "joined"
    code, _, err = real("-b", "-c", str(joined), "join", url)
    assert code == 0, err
    assert (joined / "tinc.conf").read_text().startswith("Name = carol\n")
    assert "Ed25519PublicKey" in open(os.path.join(conf, "hosts", "carol")).read()


def test_start_and_stop_our_tincd(tmp_path):
    try:
        import tincapp.tools.tincd  # noqa: F401
    except ImportError:
        pytest.skip("tincapp.tools.tincd is not available in this tree")
    conf = str(tmp_path / "net")
    assert ours("-b", "-c", conf, "init", "alice")[0] == 0
    for args in (["set", "DeviceType", "dummy"], ["set", "Port", "0"],
                 ["add", "BindToAddress", "127.0.0.1"]):
        assert ours("-c", conf, *args)[0] == 0
    os.unlink(os.path.join(conf, "tinc-up"))
    pidfile = str(tmp_path / "t.pid")
    c = ["-c", conf, "--pidfile", pidfile]
    # The daemon outlives `tinc start -D` and keeps its stdio: give it a file, not a pipe.
    with open(tmp_path / "start.log", "wb") as log:
        p = subprocess.run([sys.executable, "-m", "tincapp", "tinc", *c, "start", "-D"],
                           stdout=log, stderr=log, timeout=60,
                           env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.returncode == 0, (tmp_path / "start.log").read_text()
        code, out, _ = ours(*c, "dump", "nodes")
        assert code == 0 and out.startswith(b"alice id ") and b" at MYSELF port " in out
        assert ours(*c, "start")[2].startswith("A tincd is already running with pid ")
    finally:
        stopped = ours(*c, "stop")[0] == 0
        if not stopped and os.path.exists(pidfile):
            os.kill(int(open(pidfile).read().split()[0]), 15)
    assert stopped
    deadline = time.monotonic() + 10
    while os.path.exists(pidfile) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert ours(*c, "pid")[0] == 1


@needs_tinc
@pytest.mark.parametrize("inviter", ["real", "ours"])
def test_we_join_a_real_tincd(real_tincd, tmp_path, inviter):
    c, proc = real_tincd
    conf = c[1]
    port = ours(*c, "get", "Port")[1].decode().strip()
    assert ours("-c", conf, "set", "Port", port)[0] == 0
    assert ours("-c", conf, "add", "Address", "127.0.0.1")[0] == 0
    assert ours("-c", conf, "set", "Mode", "switch")[0] == 0
    invite = real if inviter == "real" else ours
    code, out, err = invite("-b", *c, "invite", "dave")
    assert code == 0, err
    joined = tmp_path / "joined"
    code, _, err = ours("-b", "-c", str(joined), "join", out.decode().strip())
    assert code == 0, err
    assert err.endswith("Invitation successfully accepted.\n")
    assert (joined / "tinc.conf").read_text() == "Name = dave\nConnectTo = alice\nMode = switch\n"
    mine = keys.read_private_key(joined / "ed25519_key.priv")
    assert keys.read_public_key(joined / "hosts" / "dave") == mine.public
    assert keys.read_public_key(os.path.join(conf, "hosts", "dave")) == mine.public
    assert keys.read_public_key(joined / "hosts" / "alice") == \
        keys.read_private_key(os.path.join(conf, "ed25519_key.priv")).public
    # the invitation is used up
    code, _, err = ours("-b", "-c", str(tmp_path / "again"), "join", out.decode().strip())
    assert code == 1
