"""Three `tincapp tincd -D` processes on loopback form a mesh on the meta level: every node's
control socket dumps the same nodes, edges and subnets; a killed node disappears from the
others; restarted, it rejoins. No root needed (no device, no data plane)."""
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from tincapp import control, keys
from tincapp.control import Ctl
from tincapp.errors import WireError
from tincapp.mesh.subnets import DEFAULT_BROADCAST_SUBNETS

NAMES = ("alpha", "beta", "gamma")
PING_TIMEOUT_S = 2


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_keys(root, names):
    """root/NAME/hosts/ and a fresh ed25519_key.priv for each name; {name: public key}."""
    pubs = {}
    for name in names:
        base = os.path.join(root, name)
        os.makedirs(os.path.join(base, "hosts"), exist_ok=True)
        key = keys.generate_private_key(os.urandom)
        keys.write_private_key(os.path.join(base, "ed25519_key.priv"), key)
        pubs[name] = key.public
    return pubs


def make_network(root, ports, connect_to, names=NAMES, auto_connect=()):
    """A confbase per node; every confbase holds every node's host file. AutoConnect is off
    except on the nodes named in `auto_connect`, so the meta graph is exactly `connect_to`."""
    pubs = make_keys(root, names)
    for i, name in enumerate(names):
        base = os.path.join(root, name)
        with open(os.path.join(base, "tinc.conf"), "w") as f:
            f.write(f"Name = {name}\nBindToAddress = 127.0.0.1\n"
                    f"PingInterval = 5\nPingTimeout = {PING_TIMEOUT_S}\nMaxTimeout = 5\n"
                    f"AutoConnect = {'yes' if name in auto_connect else 'no'}\n")
            for peer in connect_to.get(name, ()):
                f.write(f"ConnectTo = {peer}\n")
        for j, other in enumerate(names):
            with open(os.path.join(base, "hosts", other), "w") as f:
                f.write(f"Address = 127.0.0.1\nPort = {ports[other]}\n"
                        f"Subnet = 10.9.0.{j + 1}/32\n" + keys.hosts_line(pubs[other]))


TINC_BIN_DIR = os.environ.get("TINC_BIN_DIR")


class Tincd:
    def __init__(self, root, name, real=False):
        self.real = real
        self.name = name
        self.base = os.path.join(root, name)
        self.pidfile = os.path.join(self.base, "pid")
        self.proc = None
        self.log = None

    def start(self):
        self.log = open(os.path.join(self.base, "stderr.log"), "ab")
        prog = ([os.path.join(TINC_BIN_DIR, "tincd")] if self.real
                else [sys.executable, "-m", "tincapp", "tincd"])
        self.proc = subprocess.Popen(
            self.command(prog + ["-D", "-d3", "-c", self.base, f"--pidfile={self.pidfile}"]),
            stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited: {self.read_log(3000)}")
            try:
                self.request(Ctl.DUMP_NODES)
                return
            except (OSError, ValueError, WireError):
                time.sleep(0.1)        # no socket yet, or a killed predecessor's PID file
        raise AssertionError(f"{self.name} did not start: {self.read_log(3000)}")

    def command(self, argv):
        """How argv is run (test_mesh_netns runs it inside a namespace)."""
        return argv

    def read_log(self, tail=None):
        """The daemon's whole log, or its last `tail` characters (for error messages)."""
        with open(os.path.join(self.base, "stderr.log"), "rb") as f:
            text = f.read().decode(errors="replace")
        return text[-tail:] if tail else text

    def request(self, type, *args):
        """One control request; the reply lines (dumps: up to the terminator)."""
        with open(self.pidfile) as f:
            pid = control.parse_pidfile(f.read())
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5)
            s.connect(self.pidfile + ".socket")
            f = s.makefile("rw", newline="\n")
            f.write(control.client_greeting(pid.cookie))
            f.flush()
            control.check_server_greeting(f.readline(), f.readline())
            f.write(control.control_request(type, *args))
            f.flush()
            lines = []
            while True:
                line = f.readline()
                if not line:
                    raise OSError("control connection closed")
                fields = line.split()
                if fields == ["18", str(int(type))]:
                    return lines
                lines.append(line.rstrip("\n"))
                if type not in (Ctl.DUMP_NODES, Ctl.DUMP_EDGES, Ctl.DUMP_SUBNETS,
                                Ctl.DUMP_CONNECTIONS):
                    return lines

    def view(self):
        nodes = sorted(l.split()[2] for l in self.request(Ctl.DUMP_NODES)
                       if int(l.split()[12], 16) & 0x10)        # reachable
        edges = sorted(tuple(l.split()[2:4]) for l in self.request(Ctl.DUMP_EDGES))
        subnets = sorted(tuple(l.split()[2:4]) for l in self.request(Ctl.DUMP_SUBNETS))
        return nodes, edges, subnets

    def kill(self, sig=signal.SIGKILL):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.log is not None:
            self.log.close()
            self.log = None


class Daemons(dict):
    topology = None


def wait_until(check, timeout, what):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last is True:
                return
        except OSError as e:
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: {last}")


LINE = {"alpha": ["beta"], "beta": ["gamma"]}
RING = {"alpha": ["beta", "gamma"], "beta": ["gamma", "alpha"], "gamma": ["alpha", "beta"]}


@contextlib.contextmanager
def loopback_daemons(prefix, connect_to, names=NAMES):
    """A network of NAMES on loopback with meta links `connect_to`; yields {name: Tincd} for
    `names` (not started), and kills them and removes everything afterwards."""
    root = tempfile.mkdtemp(prefix=prefix)
    make_network(root, {n: free_tcp_port() for n in NAMES}, connect_to)
    daemons = {n: Tincd(root, n) for n in names}
    try:
        yield daemons
    finally:
        for d in daemons.values():
            d.kill()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=[LINE], ids=["line"])
def mesh(request):
    """The daemons of a network; request.param is a topology, or (topology, names of nodes
    run by the reference tincd from TINC_BIN_DIR, with DeviceType = dummy)."""
    topology, real = request.param if isinstance(request.param, tuple) else (request.param, ())
    root = tempfile.mkdtemp(prefix="tincapp-mesh-")
    ports = {n: free_tcp_port() for n in NAMES}
    make_network(root, ports, topology)
    for name in real:
        with open(os.path.join(root, name, "tinc.conf"), "a") as f:
            f.write("DeviceType = dummy\n")
    daemons = Daemons((n, Tincd(root, n, real=n in real)) for n in NAMES)
    daemons.topology = topology
    try:
        yield daemons
    finally:
        for d in daemons.values():
            d.kill()
        shutil.rmtree(root, ignore_errors=True)


def full_view(names, topology):
    links = [{a, b} for a, peers in topology.items() for b in peers]
    edges = sorted((a, b) for a in names for b in names if a != b and {a, b} in links)
    subnets = sorted([(f"10.9.0.{NAMES.index(n) + 1}", n) for n in names]
                     + [(s, "(broadcast)") for s in DEFAULT_BROADCAST_SUBNETS])
    return sorted(names), edges, subnets


@pytest.mark.parametrize("mesh", [LINE, RING], ids=["line", "ring"], indirect=True)
def test_three_nodes_agree_then_one_dies_and_rejoins(mesh):
    """In the ring every node also connects to every other: duplicate connections collide
    and one of each pair must win on both sides."""
    topology = mesh.topology
    for d in mesh.values():
        d.start()
    expected = full_view(NAMES, topology)

    def all_agree():
        views = {n: d.view() for n, d in mesh.items()}
        return True if all(v == expected for v in views.values()) else views
    wait_until(all_agree, 10, "nodes do not agree on the full graph")

    # Control requests the daemon answers.
    alpha = mesh["alpha"]
    conns = alpha.request(Ctl.DUMP_CONNECTIONS)
    assert any(l.split()[2] == "beta" for l in conns)
    assert any(l.split()[2] == "<control>" for l in conns)
    assert alpha.request(Ctl.SET_DEBUG, -1) == ["18 9 3"]
    assert alpha.request(Ctl.DUMP_GRAPH) == ["18 -1"]
    assert alpha.request(Ctl.RELOAD) == ["18 1 0"]
    alpha.proc.send_signal(signal.SIGHUP)
    alpha.proc.send_signal(signal.SIGALRM)
    wait_until(all_agree, 5, "nodes disagree after reload")

    # gamma dies: alpha and beta drop it (edges beta<->gamma gone, gamma unreachable).
    mesh["gamma"].kill()

    def gamma_gone():
        for n in ("alpha", "beta"):
            nodes, edges, _ = mesh[n].view()
            if "gamma" in nodes or any("gamma" in e for e in edges):
                return (n, nodes, edges)
        return True
    wait_until(gamma_gone, PING_TIMEOUT_S + 5, "gamma was not removed")

    # gamma comes back (beta reconnects to it with its back-off; RETRY makes it immediate).
    mesh["gamma"].start()
    mesh["beta"].request(Ctl.RETRY)
    wait_until(all_agree, 15, "gamma did not rejoin")

    # STOP ends a daemon cleanly and removes its PID file and control socket.
    assert mesh["alpha"].request(Ctl.STOP) == ["18 0 0"]
    assert mesh["alpha"].proc.wait(10) == 0
    assert not os.path.exists(mesh["alpha"].pidfile)
    assert not os.path.exists(mesh["alpha"].pidfile + ".socket")


SCRIPT = """#!/bin/sh
echo "$0 NAME=$NAME NODE=$NODE SUBNET=$SUBNET WEIGHT=$WEIGHT REMOTEADDRESS=$REMOTEADDRESS" \\
    >> "{log}"
"""


def test_scripts_detach_and_ping_timeout(mesh):
    alpha, beta = mesh["alpha"], mesh["beta"]
    script_log = os.path.join(alpha.base, "scripts.log")
    for name in ("tinc-up", "tinc-down", "host-up", "host-down", "subnet-up", "subnet-down",
                 "hosts/beta-up", "hosts/beta-down"):
        path = os.path.join(alpha.base, name)
        with open(path, "w") as f:
            f.write(SCRIPT.format(log=script_log))
        os.chmod(path, 0o755)
    alpha.start()
    # beta detaches: the command returns at once and the PID file names the daemon.
    subprocess.run([sys.executable, "-m", "tincapp", "tincd", "-c", beta.base,
                    f"--pidfile={beta.pidfile}", f"--logfile={beta.base}/log"],
                   check=True, timeout=20, stdin=subprocess.DEVNULL)
    wait_until(lambda: os.path.exists(beta.pidfile), 10, "detached beta wrote no PID file")
    with open(beta.pidfile) as f:
        beta_pid = control.parse_pidfile(f.read()).pid
    try:
        assert beta_pid != os.getpid()
        wait_until(lambda: alpha.view()[0] == ["alpha", "beta"] or alpha.view(), 15,
                   "beta never became reachable")

        # A frozen beta answers no PING: alpha drops it after PingInterval + PingTimeout.
        os.kill(beta_pid, signal.SIGSTOP)
        wait_until(lambda: alpha.view()[0] == ["alpha"] or alpha.view(), 5 + PING_TIMEOUT_S + 4,
                   "frozen beta was not dropped")
        os.kill(beta_pid, signal.SIGCONT)
    finally:
        os.kill(beta_pid, signal.SIGCONT)
        os.kill(beta_pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(beta.pidfile), 10, "beta left its PID file")
    assert alpha.request(Ctl.STOP) == ["18 0 0"]
    alpha.proc.wait(10)
    with open(script_log) as f:
        lines = [l.split() for l in f]
    seen = [os.path.relpath(l[0], alpha.base) for l in lines]
    assert seen[:2] == ["tinc-up", "subnet-up"]
    assert "NODE=alpha" in lines[1] and "SUBNET=10.9.0.1" in lines[1]
    i = seen.index("host-up")
    assert seen[i:i + 3] == ["host-up", "hosts/beta-up", "subnet-up"]
    assert "NODE=beta" in lines[i] and "REMOTEADDRESS=127.0.0.1" in lines[i]
    j = seen.index("host-down")
    assert seen[j:j + 3] == ["host-down", "hosts/beta-down", "subnet-down"]
    assert seen[-2:] == ["subnet-down", "tinc-down"]


@pytest.mark.skipif(not TINC_BIN_DIR, reason="TINC_BIN_DIR not set: no reference tincd")
@pytest.mark.parametrize("mesh", [(LINE, ("beta",)), (LINE, ("alpha", "gamma"))],
                         ids=["real-middle", "real-ends"], indirect=True)
def test_mixed_mesh_with_reference_tincd(mesh):
    """Reference tincd and tincapp in one line: both forward each other's edges and subnets,
    and agree on the graph; the middle node dies and comes back."""
    for d in mesh.values():
        d.start()
    expected = full_view(NAMES, mesh.topology)

    def all_agree():
        views = {n: d.view() for n, d in mesh.items()}
        return True if all(v == expected for v in views.values()) else views
    wait_until(all_agree, 15, "nodes do not agree on the full graph")

    mesh["beta"].kill()

    def alone():
        # Each end drops its own edges to beta; the far side's edges stay known (but
        # unreachable) until a purge, as in tinc.
        views = {n: mesh[n].view()[:2] for n in ("alpha", "gamma")}
        ok = all(nodes == [n] and not any(n in e for e in edges)
                 for n, (nodes, edges) in views.items())
        return True if ok else views
    wait_until(alone, PING_TIMEOUT_S + 5, "the ends still see beta")
    for n in ("alpha", "gamma"):
        # Not on the reference tincd: its purge frees the node its ConnectTo entry still
        # points to, and the RETRY below then ends it.
        if not mesh[n].real:
            assert mesh[n].request(Ctl.PURGE) == ["18 8 0"]
            assert mesh[n].view()[1] == []

    mesh["beta"].start()
    mesh["alpha"].request(Ctl.RETRY)
    wait_until(all_agree, 15, "beta did not rejoin")
