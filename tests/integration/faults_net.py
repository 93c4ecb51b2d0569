"""Helpers for the fault-injection scenarios (test_faults.py): the two networks they run on,
and the instruments that measure them while faults are on.

Networks (each node in its own namespace; VPN addresses 10.9.0.N/24 on a tun, Subnet /32):
  - `Mesh`: a, b, c, d on one bridge (namespace "sw"), ConnectTo a->c, a->d, b->c, b->d,
    AutoConnect off: a and b have no meta connection but share the segment, so their data
    goes over direct UDP. `crash("b")` cuts b's only link and SIGKILLs it (no FIN or RST
    reaches anyone).
  - `Pair`: a and b on either side of the impairment relay (impair.py, namespace "r"), a
    ConnectTo b: their meta connection (TCP) and UDP both cross the relay, link "a-b".
Instruments:
  - `PingMonitor`: `ping -D` in the background; every reply with its wall-clock time, DUP!
    count, largest gap between replies in a window, first reply after a moment.
  - `RestartWatch`: polls every tincapp node's DUMP_TUNNELS (restart counts and the age of the
    last restart: restart times to 0.1 s) and every node's log for tinc's "restarting SPTPS"
    lines (timed by the poll, works for the reference tincd too).
  - `cpu_seconds(node)`: user + system CPU of a daemon so far (/proc).
Everything started here is stopped by the `close()` of the object that started it.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

from tests.integration import vpn
from tests.integration.impair import ImpairRelay
from tests.integration.netns import Namespaces
from tests.integration.test_mesh_netns import Node
from tests.integration.test_node_mesh import make_keys
from tincapp import control, keys
from tincapp.control import Ctl
from tincapp.errors import TincappError

VPN = {n: f"10.9.0.{i + 1}" for i, n in enumerate("abcd")}
# tinc's wording (and tincapp's): "Failed to decode ... from NAME (HOST), restarting SPTPS",
# "Crossed REQ_SPTPS_START with NAME (HOST), restarting SPTPS", "No key from NAME after ...".
RESTART_LINE = re.compile(r"(?:from|with) (\S+) \(.*\), restarting SPTPS|No key from (\S+) after")


def write_node(root, name, pubs, conf, hosts, connect_to=()):
    """Configuration of node `name` under root: tinc.conf (Name, tun device, AutoConnect off,
    plus the lines in `conf`), tinc-up/down, a host file per node in `pubs` with the address
    `hosts[other]` gives (None: none) and its Subnet."""
    base = os.path.join(root, name)
    os.makedirs(os.path.join(base, "hosts"), exist_ok=True)
    with open(os.path.join(base, "tinc.conf"), "w") as f:
        f.write(f"Name = {name}\nDeviceType = tun\nInterface = vpn{name}\nAutoConnect = no\n")
        for line in conf:
            f.write(line + "\n")
        for peer in connect_to:
            f.write(f"ConnectTo = {peer}\n")
    for script, body in (("tinc-up", f"ip addr add {VPN[name]}/24 dev $INTERFACE\n"
                                     "ip link set $INTERFACE up\n"),
                         ("tinc-down", "ip link set $INTERFACE down\n")):
        path = os.path.join(base, script)
        with open(path, "w") as f:
            f.write("#!/bin/sh\n" + body)
        os.chmod(path, 0o755)
    for other, pub in pubs.items():
        with open(os.path.join(base, "hosts", other), "w") as f:
            address = hosts.get(other)
            if address:
                f.write(f"Address = {address}\nPort = 655\n")
            f.write(f"Subnet = {VPN[other]}/32\n" + keys.hosts_line(pub))


class Net:
    """Namespaces, daemons and background processes; close() removes them all."""

    def __init__(self, names):
        self.root = tempfile.mkdtemp(prefix="tincapp-faults-")
        self.ns = Namespaces(*names)
        self.nodes = {}
        self.procs = []
        self.closers = []

    def popen(self, where, argv, **kw):
        kw.setdefault("stdout", subprocess.DEVNULL)
        kw.setdefault("stderr", subprocess.DEVNULL)
        p = subprocess.Popen(self.ns.cmd(where, argv), stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def logs(self, tail=3000):
        return vpn.log_tails(self.nodes, tail)

    def close(self):
        for closer in reversed(self.closers):
            try:
                closer()
            except Exception:
                pass
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
        for node in self.nodes.values():
            node.kill()
        self.ns.close()
        if os.environ.get("TINCAPP_KEEP_LOGS"):
            print(f"configuration and logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class Mesh(Net):
    """a, b, c, d on one bridge; ConnectTo a->c, a->d, b->c, b->d; `real` names the nodes
    that run the reference tincd."""
    NAMES = ("a", "b", "c", "d")
    ADDR = {n: f"192.0.2.{i + 1}" for i, n in enumerate(NAMES)}
    CONNECT_TO = {"a": ("c", "d"), "b": ("c", "d")}

    def __init__(self, conf=(), real=()):
        super().__init__(self.NAMES + ("sw",))
        try:
            self.ns.bridge("sw")
            self.devs = {n: self.ns.port(n, f"{self.ADDR[n]}/24", "sw") for n in self.NAMES}
            pubs = make_keys(self.root, self.NAMES)
            for n in self.NAMES:
                hosts = {p: self.ADDR[p] for p in self.CONNECT_TO.get(n, ())}
                write_node(self.root, n, pubs, conf, hosts, self.CONNECT_TO.get(n, ()))
            self.nodes = {n: Node(self.ns, self.root, n, self.devs[n], real=n in real)
                          for n in self.NAMES}
            for n in ("c", "d", "a", "b"):          # listeners first
                self.nodes[n].start()
        except BaseException:
            self.close()
            raise

    def crash(self, name):
        """Cable cut (b's only link), then SIGKILL."""
        self.nodes[name].crash()

    def cable(self, name, up):
        self.ns.set_link(name, self.devs[name], up)


class Pair(Net):
    """a (192.0.2.1) -- relay r -- b (198.51.100.2); a ConnectTo b. Both daemons' meta TCP and
    UDP cross the relay, link "a-b" (directions "a>b", "b>a")."""
    A, RA, RB, B = "192.0.2.1", "192.0.2.254", "198.51.100.254", "198.51.100.2"

    def __init__(self, conf=(), real=(), seed=1):
        super().__init__(("a", "r", "b"))
        try:
            self.ns.link("a", f"{self.A}/24", "r", f"{self.RA}/24")
            self.ns.link("r", f"{self.RB}/24", "b", f"{self.B}/24")
            self.relay = ImpairRelay.start(self.ns["r"], {"seed": seed, "links": [
                {"a": {"name": "a", "addr": self.A, "port": 655, "relay": self.RA},
                 "b": {"name": "b", "addr": self.B, "port": 655, "relay": self.RB}}]})
            self.closers.append(self.relay.stop)
            pubs = make_keys(self.root, ("a", "b"))
            # Each knows the other at the relay's address on its own side.
            write_node(self.root, "a", pubs, conf, {"b": self.RA}, ("b",))
            write_node(self.root, "b", pubs, conf, {"a": self.RB})
            self.nodes = {n: Node(self.ns, self.root, n, None, real=n in real) for n in "ab"}
            for n in ("b", "a"):
                self.nodes[n].start()
        except BaseException:
            self.close()
            raise


# --- instruments -----------------------------------------------------------------------------

class PingMonitor:
    """`ping -D -i INTERVAL` from namespace src to dst in the background."""
    REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+).*?( \(DUP!\))?$")

    def __init__(self, net, src, dst, interval=0.2):
        self.path = os.path.join(net.root, f"ping-{src}-{dst}-{time.monotonic_ns()}.out")
        self.out = open(self.path, "w")
        self.started = time.time()
        self.proc = net.popen(src, ["ping", "-n", "-D", "-i", str(interval), "-W", "1",
                                    VPN[dst]], stdout=self.out)
        net.closers.append(self.stop)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self.out.closed:
            self.out.close()

    def parse(self):
        """(replies [(time, seq)], duplicates [(time, seq)], transmitted or None)"""
        if not self.out.closed:
            self.out.flush()
        replies, dups, sent = [], [], None
        with open(self.path) as f:
            for line in f:
                m = self.REPLY.match(line.rstrip("\n"))
                if m:
                    (dups if m.group(3) else replies).append((float(m.group(1)),
                                                              int(m.group(2))))
                m = re.search(r"(\d+) packets transmitted", line)
                if m:
                    sent = int(m.group(1))
        return replies, dups, sent

    def first_reply_after(self, t0, timeout):
        """Seconds from t0 (wall clock) to the first reply sent after t0, waiting up to
        `timeout` for it; None if none came."""
        deadline = time.monotonic() + timeout
        while True:
            later = [t for t, _ in self.parse()[0] if t > t0]
            if later:
                return later[0] - t0
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def max_gap(self, t0, t1):
        """The longest time without a reply within [t0, t1] (the window's edges count)."""
        times = [t0] + sorted(t for t, _ in self.parse()[0] if t0 <= t <= t1) + [t1]
        return max(b - a for a, b in zip(times, times[1:]))

    def counts(self, t0, t1):
        """(replies, duplicates) received within [t0, t1]."""
        replies, dups, _ = self.parse()
        return (sum(1 for t, _ in replies if t0 <= t <= t1),
                sum(1 for t, _ in dups if t0 <= t <= t1))


def tunnel_dump(node):
    """{peer: {"restarts": n, "age": s or None, "key": ..., "reason": ..., "suppressed": n,
    "errors": n, "kinds": ...}} from tincapp's DUMP_TUNNELS (control request 100)."""
    with open(node.pidfile) as f:
        pid = control.parse_pidfile(f.read())
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(node.pidfile + ".socket")
        f = s.makefile("rw", newline="\n")
        f.write(control.client_greeting(pid.cookie))
        f.flush()
        control.check_server_greeting(f.readline(), f.readline())
        f.write(control.control_request(Ctl.DUMP_TUNNELS))
        f.flush()
        out = {}
        while True:
            line = f.readline()
            if not line:
                raise OSError("control connection closed")
            t = line.rstrip("\n").split(" ", 14)
            if len(t) == 2:
                return out
            out[t[2]] = {"key": t[3], "restarts": int(t[4]),
                         "age": None if t[5] == "-" else float(t[5]),
                         "errors": int(t[6]), "replayed": int(t[7]), "late": int(t[8]),
                         "suppressed": int(t[9]), "grace": int(t[10]), "udp": t[11] == "1",
                         "kinds": t[13], "reason": None if t[14] == "-" else t[14]}


def daemon_pid(node):
    with open(node.pidfile) as f:
        return control.parse_pidfile(f.read()).pid


def cpu_seconds(node):
    """User + system CPU seconds the daemon has used so far."""
    with open(f"/proc/{daemon_pid(node)}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RestartWatch(threading.Thread):
    """Restarts per (observer, peer): the `restarts` counter of tincapp nodes' DUMP_TUNNELS
    (`counts`, summed over daemon lifetimes), and tinc's "restarting SPTPS" lines in every
    node's log (`logged`: times to the poll interval; works for the reference tincd too)."""

    def __init__(self, net, poll_s=0.25):
        super().__init__(daemon=True)
        self.net, self.poll_s = net, poll_s
        self.counts = {}            # (observer, peer) -> restarts, over daemon lifetimes
        self._seen = {}             # (observer, peer) -> (daemon pid, counter last seen)
        self.logged = {}            # (observer, peer) -> [time]
        self.log_lines = {}         # (observer, peer) -> [line]
        self.offsets = {n: self._size(node) for n, node in net.nodes.items()}
        self.halt = threading.Event()
        net.closers.append(self.stop)

    @staticmethod
    def _size(node):
        try:
            return os.path.getsize(os.path.join(node.base, "stderr.log"))
        except OSError:
            return 0

    def stop(self):
        self.halt.set()
        if self.is_alive():
            self.join(5)

    def run(self):
        while not self.halt.is_set():
            self.poll()
            self.halt.wait(self.poll_s)
        self.poll()

    def poll(self):
        now = time.time()
        for name, node in self.net.nodes.items():
            self._read_log(name, node, now)
            if node.real or node.proc is None or node.proc.poll() is not None:
                continue
            try:
                dump, pid = tunnel_dump(node), daemon_pid(node)
            except (OSError, ValueError, TincappError):
                continue            # a daemon starting or stopping: its socket half there
            for peer, t in dump.items():
                key = (name, peer)
                old_pid, old = self._seen.get(key, (pid, 0))
                if old_pid != pid:
                    old = 0                 # a fresh daemon counts from 0
                self.counts[key] = self.counts.get(key, 0) + max(0, t["restarts"] - old)
                self._seen[key] = (pid, t["restarts"])

    def _read_log(self, name, node, now):
        path = os.path.join(node.base, "stderr.log")
        try:
            with open(path, "rb") as f:
                f.seek(self.offsets.get(name, 0))
                data = f.read()
        except OSError:
            return
        end = data.rfind(b"\n") + 1
        self.offsets[name] = self.offsets.get(name, 0) + end
        for line in data[:end].decode(errors="replace").splitlines():
            m = RESTART_LINE.search(line)
            if m:
                key = (name, m.group(1) or m.group(2))
                self.logged.setdefault(key, []).append(now)
                self.log_lines.setdefault(key, []).append(line.strip())

    def closest(self):
        """((observer, peer), seconds) of the two closest restart lines of any one observer
        about one peer, or None. Each time is late by up to poll_s."""
        best = None
        for key, times in self.logged.items():
            for x, y in zip(times, times[1:]):
                if best is None or y - x < best[1]:
                    best = (key, y - x)
        return best

    def summary(self):
        keys = sorted(set(self.counts) | set(self.logged))
        return ", ".join(f"{o}->{p}: {self.counts.get((o, p), '-')} restarts (dump) / "
                         f"{len(self.logged.get((o, p), []))} lines (log)"
                         for o, p in keys
                         if self.counts.get((o, p)) or self.logged.get((o, p)))
