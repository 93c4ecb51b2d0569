"""The data plane end to end: four nodes in network namespaces with real TUN/TAP devices carry
pings and TCP streams between every pair, in router mode and in switch mode, over the three
kinds of path tinc has: direct UDP, relayed via a third node, and TCP (meta connection) when
UDP does not get through; and path MTU discovery settles on the underlay's MTU.

Underlay (each letter a namespace; r is an IP router, f a TCP forwarder, neither a VPN node):

    a ---------- b ---------- r ---------- c ----------- f ------------ d
      192.0.2/24   .0/25        .128/25      198.18.0/24   203.0.113/24
      MTU 1500     198.51.100   198.51.100   MTU 1500      MTU 1500   (TCP forwarder in f:
                   MTU 1500     MTU 1400                   203.0.113.254:655 -> c:655)

- a-b: direct UDP, PMTU 1500 - 20 (IP) - 8 (UDP) - 21 (SPTPS) - 12 (node IDs) = 1439.
- b-c: direct UDP through r; the 1400 MTU hop is c's own link but one hop away from b. c's
  kernel knows the path MTU (1339 for tinc) from its interface; b has to discover it (its
  probes with DF set are refused by r with ICMP "fragmentation needed", then by its own
  kernel with EMSGSIZE). test_dataplane checks the direction the kernel tells (c -> b);
  test_pmtu_stays_at_path_mtu the discovered one (b -> c) and that it stays.
- a-c: no IP connectivity between them; b relays their meta and data traffic.
- c-d: d's only way out is f, where tests/integration/tcp_forwarder.py forwards TCP port 655
  to c; nothing answers UDP there (d's probes to 203.0.113.254 and c's to the forwarder's
  address 198.18.0.254 go nowhere, f does not route), so all of d's data goes over its meta
  connection to c (PACKET / SPTPS_PACKET) and from there on as c sends it.
- b-d, a-d: relayed, the last hop over TCP.

ConnectTo: a -> b, c -> b, d -> c (via the forwarder); AutoConnect = no keeps it that way.
Router mode: DeviceType = tun, Subnet = 10.9.0.N/32 per node, tinc-up gives the tun
10.9.0.N/24. Switch mode: DeviceType = tap, Mode = switch, the same addresses on the taps.

With TINC_BIN_DIR set (a tinc 1.1 build), further variants run the reference tincd as d (the
node behind the TCP-only path) or as b (the relay); without it they are skipped.
Needs root and network namespaces. Daemons run with -d3; a failing test prints the tail of
each daemon's log (TINCAPP_KEEP_LOGS=1 keeps the configuration and logs).
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from tests.integration import vpn
from tests.integration.netns import Namespaces, ip, netns_unavailable
from tests.integration.test_mesh_netns import Node
from tests.integration.test_node_mesh import make_keys
from tincapp import keys
from tincapp.control import Ctl

pytestmark = pytest.mark.skipif(netns_unavailable() is not None,
                                reason=netns_unavailable() or "")

TINC_BIN_DIR = os.environ.get("TINC_BIN_DIR")
NAMES = ("a", "b", "c", "d")
VPN = {n: f"10.9.0.{i + 1}" for i, n in enumerate(NAMES)}
CONNECT_TO = {"a": ("b", "192.0.2.2"), "c": ("b", "198.51.100.2"), "d": ("c", "203.0.113.254")}
FORWARDER = ("203.0.113.254", 655, "198.18.0.3", 655)
SLOW_LINK_MTU = 1400
# Direct UDP pairs and the PMTU each must settle on (SPTPS over IPv4: 61 bytes overhead).
PATH_MTU = {("a", "b"): 1500 - 61, ("b", "a"): 1500 - 61,
            ("b", "c"): SLOW_LINK_MTU - 61, ("c", "b"): SLOW_LINK_MTU - 61}
# Those where the sender's kernel knows the path MTU from its own interface.
LOCAL_MTU = (("a", "b"), ("b", "a"), ("c", "b"))
TCP_ONLY = (("c", "d"), ("d", "c"))
RELAYED = {("a", "c"): "b", ("c", "a"): "b", ("a", "d"): "b", ("b", "d"): "c",
           ("d", "a"): "c", ("d", "b"): "c"}
REACHABLE_LIMIT_S = 20
FIRST_PING_LIMIT_S = 15
PMTU_LIMIT_S = 30          # from the daemons' start until every direct pair is settled
STREAM_BYTES = 512 * 1024


def write_configs(root, mode):
    pubs = make_keys(root, NAMES)
    for name in NAMES:
        base = os.path.join(root, name)
        with open(os.path.join(base, "tinc.conf"), "w") as f:
            f.write(f"Name = {name}\n"
                    f"DeviceType = {'tun' if mode == 'router' else 'tap'}\n"
                    f"Mode = {mode}\nInterface = vpn{name}\nAutoConnect = no\n"
                    "PingInterval = 5\nPingTimeout = 3\nMaxTimeout = 5\n")
            if name in CONNECT_TO:
                f.write(f"ConnectTo = {CONNECT_TO[name][0]}\n")
        for script, body in (("tinc-up", f"ip addr add {VPN[name]}/24 dev $INTERFACE\n"
                                         "ip link set $INTERFACE up\n"),
                             ("tinc-down", "ip link set $INTERFACE down\n")):
            path = os.path.join(base, script)
            with open(path, "w") as f:
                f.write("#!/bin/sh\n" + body)
            os.chmod(path, 0o755)
        for other in NAMES:
            with open(os.path.join(base, "hosts", other), "w") as f:
                # Addresses only where this node connects: the rest it learns from the edges.
                if CONNECT_TO.get(name, (None,))[0] == other:
                    f.write(f"Address = {CONNECT_TO[name][1]}\n")
                if mode == "router":
                    f.write(f"Subnet = {VPN[other]}/32\n")
                f.write(keys.hosts_line(pubs[other]))


class Network:
    """Namespaces, underlay, forwarder and the four daemons; `close()` removes everything."""

    def __init__(self, mode, real):
        self.mode = mode
        self.root = tempfile.mkdtemp(prefix="tincapp-dp-")
        self.procs = []
        self.nodes = {}
        self.exit_status = {}
        self.ns = Namespaces(*NAMES, "r", "f")
        try:
            ns = self.ns
            vpn.veth(ns, "a", "192.0.2.1/24", "b", "192.0.2.2/24")
            vpn.veth(ns, "b", "198.51.100.2/25", "r", "198.51.100.1/25")
            vpn.veth(ns, "r", "198.51.100.129/25", "c", "198.51.100.130/25", mtu=SLOW_LINK_MTU)
            ns.run("r", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
            ip("-n", ns["b"], "route", "add", "198.51.100.128/25", "via", "198.51.100.1")
            ip("-n", ns["c"], "route", "add", "198.51.100.0/25", "via", "198.51.100.129")
            vpn.veth(ns, "c", "198.18.0.3/24", "f", "198.18.0.254/24")
            vpn.veth(ns, "d", "203.0.113.4/24", "f", "203.0.113.254/24")
            fwd = subprocess.Popen(
                ns.cmd("f", [sys.executable, os.path.join(os.path.dirname(__file__),
                                                          "tcp_forwarder.py"),
                             *map(str, FORWARDER)]),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            self.procs.append(fwd)
            if fwd.stdout.readline().strip() != "ready":
                raise AssertionError(f"forwarder: {fwd.stderr.read()}")
            write_configs(self.root, mode)
            self.nodes = {n: Node(ns, self.root, n, None, real=(n == real)) for n in NAMES}
            for n in NAMES:
                self.nodes[n].start()
        except BaseException:
            self.close()
            raise

    def dump(self, name):
        return vpn.parse_nodes(self.nodes[name].request(Ctl.DUMP_NODES))

    def background_ping(self, src, dst):
        p = subprocess.Popen(self.ns.cmd(src, ["ping", "-n", "-q", "-i", "0.2", VPN[dst]]),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)

    def logs(self, tail=4000):
        return vpn.log_tails(self.nodes, tail)

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        # SIGTERM: the daemons shut down as they would in use (tinc-down runs); a daemon still
        # there after 10 s is killed, and says so (exit status -9) in `exit_status`.
        for node in self.nodes.values():
            node.kill(signal.SIGTERM)
            if node.proc is not None:
                self.exit_status[node.name] = node.proc.returncode
        self.ns.close()
        if os.environ.get("TINCAPP_KEEP_LOGS"):
            print(f"configuration and logs kept in {self.root}")
        else:
            shutil.rmtree(self.root, ignore_errors=True)


class PmtuWatch(threading.Thread):
    """Polls the direct pairs' dumps; records when each first shows udp_confirmed and
    pmtu == minmtu == maxmtu == the expected path MTU."""

    def __init__(self, net, t0, pairs):
        super().__init__(daemon=True)
        self.net = net
        self.t0 = t0
        self.pairs = {pair: PATH_MTU[pair] for pair in pairs}
        self.settled = {}
        self.last = {}
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set() and len(self.settled) < len(self.pairs):
            for src in {s for s, _ in self.pairs}:
                try:
                    dump = self.net.dump(src)
                except (OSError, ValueError):
                    continue
                for (s, d), want in self.pairs.items():
                    if s != src or (s, d) in self.settled or d not in dump:
                        continue
                    e = dump[d]
                    self.last[s, d] = (hex(e["status"]), e["pmtu"], e["minmtu"], e["maxmtu"])
                    if (e["status"] & vpn.STATUS_UDP_CONFIRMED
                            and e["pmtu"] == e["minmtu"] == e["maxmtu"] == want):
                        self.settled[s, d] = time.monotonic() - self.t0
            self.stop.wait(0.25)


@pytest.fixture
def network():
    made = []

    def make(mode, real):
        made.append(Network(mode, real))
        return made[0]
    yield make
    for net in made:
        net.close()
        left = set(net.ns.names.values()) & set(
            l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                 text=True).stdout.splitlines() if l.strip())
        assert not left, f"namespaces left behind: {left}"
        assert all(rc == 0 for rc in net.exit_status.values()), (
            f"daemons did not exit cleanly on SIGTERM: {net.exit_status}\n{net.logs(1500)}")


def wait_reachable(net):
    deadline = time.monotonic() + REACHABLE_LIMIT_S
    while True:
        views = {}
        for n in NAMES:
            try:
                views[n] = {k for k, v in net.dump(n).items()
                            if v["status"] & vpn.STATUS_REACHABLE}
            except (OSError, ValueError) as e:
                views[n] = e
        if all(v == set(NAMES) for v in views.values()):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not all nodes reachable within {REACHABLE_LIMIT_S} s: "
                                 f"{views}")
        time.sleep(0.2)


VARIANTS = [pytest.param(mode, real, id=f"{mode}-{'tincapp' if real is None else 'real-' + real}",
                         marks=() if real is None else pytest.mark.skipif(
                             not TINC_BIN_DIR, reason="TINC_BIN_DIR not set: no reference "
                             "tinc 1.1 build to run as one of the nodes"))
            for mode in ("router", "switch") for real in (None, "d", "b")]


@pytest.mark.parametrize("mode,real", VARIANTS)
def test_dataplane(network, mode, real):
    t_start = time.monotonic()
    net = network(mode, real)
    try:
        check(net, mode, real, t_start)
    except BaseException:
        print(net.logs())       # shown by pytest for the failed test
        raise


def check(net, mode, real, t_start):
    ns = net.ns
    # Timed from the daemons' start: tinc keeps tunnels to its neighbours up (and their PMTU
    # discovered) without traffic, so this may settle before the first ping.
    watch = PmtuWatch(net, t_start, LOCAL_MTU)
    watch.start()
    wait_reachable(net)
    t_meta = time.monotonic() - t_start

    # PMTU discovery runs while there is traffic: keep some going over every direct and
    # TCP-only link while the rest of the checks run.
    for s, d in (("a", "b"), ("b", "c"), ("c", "b"), ("d", "c")):
        net.background_ping(s, d)

    report = [f"{mode}, real tincd: {real or 'none'}; meta level whole after {t_meta:.1f} s"]
    pairs = [(s, d) for s in NAMES for d in NAMES if s != d]
    failures = []
    for s, d in pairs:
        first = vpn.wait_ping(ns, s, VPN[d], FIRST_PING_LIMIT_S)
        if first is None:
            failures.append(f"ping {s} -> {d}: no reply within {FIRST_PING_LIMIT_S} s")
            continue
        p = vpn.ping(ns, s, VPN[d])
        report.append(f"ping {s} -> {d}: first reply after {first:.2f} s, "
                      f"{p.received}/{p.sent}, avg RTT {p.rtt_ms} ms")
        if p.received != p.sent or p.duplicates:
            failures.append(f"ping {s} -> {d}: {p.received}/{p.sent} answered, "
                            f"{p.duplicates} duplicates")
    assert not failures, "\n".join(report + failures)

    for i, (s, d) in enumerate(pairs):
        took = vpn.tcp_stream(ns, s, d, VPN[d], 5001 + i, STREAM_BYTES)
        report.append(f"TCP {s} -> {d}: {STREAM_BYTES} bytes intact in {took:.2f} s")

    watch.join(max(0.0, PMTU_LIMIT_S - (time.monotonic() - watch.t0)))
    watch.stop.set()
    for pair, t in sorted(watch.settled.items()):
        report.append(f"PMTU {pair[0]} -> {pair[1]} settled at {PATH_MTU[pair]} after "
                      f"{t:.1f} s from the start")
    print("\n".join(report))
    assert set(watch.settled) == set(LOCAL_MTU), (
        f"PMTU not settled within {PMTU_LIMIT_S} s: settled {watch.settled}, last seen "
        f"(status, pmtu, minmtu, maxmtu) {watch.last}")

    dumps = {n: net.dump(n) for n in NAMES}
    for s, d in TCP_ONLY:
        assert not dumps[s][d]["status"] & vpn.STATUS_UDP_CONFIRMED, (s, d, dumps[s][d])
    for (s, d), relay in RELAYED.items():
        e = dumps[s][d]
        assert e["nexthop"] == relay and not e["status"] & vpn.STATUS_UDP_CONFIRMED, (s, d, e)
    # The relayed pairs still talk after all that (the TCP-only one included).
    for s, d in (("a", "c"), ("c", "a"), ("d", "c"), ("c", "d"), ("a", "d"), ("d", "a")):
        p = vpn.ping(ns, s, VPN[d], count=3)
        assert p.received == p.sent and not p.duplicates, f"ping {s} -> {d} at the end: {p}"

    # tincapp's own view of the tunnels (a is always a tincapp node).
    a = net.nodes["a"]
    out = subprocess.run(a.cli("dump", "tunnels", real=False), capture_output=True, text=True,
                         timeout=20)
    lines = {l.split()[0]: l for l in out.stdout.splitlines()}
    assert out.returncode == 0 and lines["b"].startswith("b key valid udp pmtu 1439 "), out
    assert lines["c"].startswith("c key valid tcp "), out         # relayed: no UDP of its own
    info = subprocess.run(a.cli("info", "b", real=False), capture_output=True, text=True,
                          timeout=20).stdout
    assert "\nTunnel:       key valid, UDP, " in info, info


def underlay_fragments(net, name):
    """IP fragments the kernel created in namespace `name` so far (/proc/net/snmp)."""
    lines = [l.split() for l in net.ns.run(name, ["cat", "/proc/net/snmp"]).stdout.splitlines()
             if l.startswith("Ip:")]
    return int(dict(zip(lines[0], lines[1]))["FragCreates"])


@pytest.mark.parametrize("real", [v.values[1] for v in VARIANTS if v.values[0] == "router"],
                         ids=[v.id.split("-", 1)[1] for v in VARIANTS
                              if v.values[0] == "router"])
def test_pmtu_stays_at_path_mtu(network, real):
    """Path MTU discovery finds the MTU of a hop beyond the first (b -> c, r's 1400 MTU link)
    and, once settled, every direct pair stays there: after discovery tinc probes maxmtu + 1
    every PingInterval to notice increases; with DF set, and the socket refusing datagrams
    over the known path MTU, that probe never arrives while the path is unchanged. Only small
    pings cross the VPN here, so no IP fragment may appear on the underlay either."""
    if real is not None and not TINC_BIN_DIR:
        pytest.skip("TINC_BIN_DIR not set: no reference tinc 1.1 build")
    t_start = time.monotonic()
    net = network("router", real)
    try:
        watch = PmtuWatch(net, t_start, PATH_MTU)
        watch.start()
        wait_reachable(net)
        for s, d in (("a", "b"), ("b", "c")):
            net.background_ping(s, d)
        watch.join(PMTU_LIMIT_S)
        watch.stop.set()
        # Two PingIntervals (5 s) and a little: at least two rounds of maxmtu + 1 probes.
        time.sleep(12)
        dumps = {n: net.dump(n) for n in ("a", "b", "c")}
        seen = {(s, d): (dumps[s][d]["status"], dumps[s][d]["pmtu"],
                         dumps[s][d]["minmtu"], dumps[s][d]["maxmtu"]) for s, d in PATH_MTU}
        frags = {n: underlay_fragments(net, n) for n in ("a", "b", "r", "c")}
        settled = {f"{s}->{d}": round(t, 1) for (s, d), t in watch.settled.items()}
        print(f"router, real tincd: {real or 'none'}; PMTU settled (s from start): {settled}; "
              f"12 s later (status, pmtu, minmtu, maxmtu): {seen}; underlay fragments "
              f"created: {frags}")
        assert set(watch.settled) == set(PATH_MTU), (
            f"PMTU not settled within {PMTU_LIMIT_S} s: {watch.last}")
        assert all(pmtu == minmtu == maxmtu == PATH_MTU[pair]
                   and status & vpn.STATUS_UDP_CONFIRMED
                   for pair, (status, pmtu, minmtu, maxmtu) in seen.items()), (
            f"PMTU moved away from the path MTU: {seen}")
        assert not any(frags.values()), f"UDP datagrams fragmented on the underlay: {frags}"
    except BaseException:
        print(net.logs())
        raise
