"""The README's main demo: a three-node tinc mesh in network namespaces, with real TUN devices.

    alpha ──── beta ──── gamma        (two separate veth links; beta does not forward IP)

alpha and gamma cannot reach each other at the IP level, so everything between them, the meta
protocol and the VPN packets, is relayed by beta. The demo makes the namespaces, generates keys
with `tinc init`, exchanges host files with `tinc export`, starts three `tincd -D` in the
background, waits until the mesh forms, pings across every pair of VPN addresses, measures the
throughput through the tunnel (iperf3, or a small built-in TCP sender/receiver without it),
prints what each node knows (nodes, edges, subnets, data path per peer) and tears everything
down again, also on Ctrl-C or an error.

Works with any tinc-compatible pair of programs (`--tincd`, `--tinc`); by default the frozen
dist/tincapp when built, else this Python's `-m tincapp`. Needs root: network namespaces and
TUN devices.
"""
import argparse
import json
import os
import re
import select
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROZEN = os.path.join(ROOT, "dist", "tincapp")

NODES = ("alpha", "beta", "gamma")
VPN_ADDR = {"alpha": "10.42.0.1", "beta": "10.42.0.2", "gamma": "10.42.0.3"}
# The underlay: documentation prefixes (TEST-NET-2 and -3), only ever inside our namespaces.
LINKS = (("alpha", "198.51.100.1", "beta", "198.51.100.2"),
         ("beta", "203.0.113.2", "gamma", "203.0.113.3"))
CONNECT_TO = {"alpha": ["beta"], "gamma": ["beta"]}
EDGES = {("alpha", "beta"), ("beta", "alpha"), ("beta", "gamma"), ("gamma", "beta")}
STATUS_VALIDKEY = 0x02
STATUS_REACHABLE = 0x10
STATUS_UDP_CONFIRMED = 0x80
MESH_TIMEOUT_S = 30
PAIRS = [(a, b) for a in NODES for b in NODES if a != b]


def frozen_is_stale():
    """True when a source file changed after dist/tincapp was built (bootstrap.sh's test)."""
    built = os.path.getmtime(FROZEN)
    for top in ("tincapp", "pyx", "packaging"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            if any(os.path.getmtime(os.path.join(dirpath, f)) > built for f in files
                   if not f.endswith((".pyc", ".c"))):
                return True
    return False


def command():
    """How to run our programs: the frozen binary if `make` built it (and it is not older
    than the sources), else this Python."""
    if os.path.exists(FROZEN):
        if not frozen_is_stale():
            return [FROZEN]
        print("note: dist/tincapp is older than the sources (`make build` refreshes it); "
              "using this Python's -m tincapp instead", file=sys.stderr)
    return [sys.executable, "-m", "tincapp"]


class DemoError(Exception):
    """Something did not happen; the message says what, for the user."""


def run(argv, timeout=30, check=True):
    p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise DemoError(f"`{shlex.join(argv)}` failed ({p.returncode}): "
                        f"{(p.stderr or p.stdout).strip()[-600:]}")
    return p


def addresses(name):
    """This node's underlay addresses, in the order of LINKS."""
    return [addr for a, addr_a, b, addr_b in LINKS
            for n, addr in ((a, addr_a), (b, addr_b)) if n == name]


class Lab:
    """The namespaces, configuration directories and processes of one run; `close()` removes
    all of it, whatever state the run got to."""

    def __init__(self, tincd, tinc, debug=2):
        self.tincd, self.tinc, self.debug = tincd, tinc, debug
        tag = uuid.uuid4().hex[:6]
        self.ns = {n: f"tincdemo-{tag}-{n}" for n in NODES}
        self.created = []
        self.procs = []
        self.tmp = tempfile.mkdtemp(prefix="tincapp-demo-")
        self.base = {n: os.path.join(self.tmp, n) for n in NODES}

    def in_ns(self, node, argv):
        return ["ip", "netns", "exec", self.ns[node], *argv]

    def cli(self, node, *args, timeout=15, check=True):
        argv = self.tinc + ["-c", self.base[node], f"--pidfile={self.pidfile(node)}", *args]
        return run(self.in_ns(node, argv), timeout=timeout, check=check).stdout

    def pidfile(self, node):
        return os.path.join(self.base[node], "tincd.pid")

    def logfile(self, node):
        return os.path.join(self.base[node], "tincd.log")

    def spawn(self, node, argv, **kw):
        """A background process in `node`'s namespace, in its own session: close() kills the
        whole group (the frozen binary's bootloader forks the real program)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.in_ns(node, argv), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    # -- setting up ------------------------------------------------------------------------

    def make_namespaces(self):
        for n in NODES:
            run(["ip", "netns", "add", self.ns[n]])
            self.created.append(self.ns[n])
            run(["ip", "-n", self.ns[n], "link", "set", "lo", "up"])
        for a, addr_a, b, addr_b in LINKS:
            va, vb = f"{a}-{b}"[:15], f"{b}-{a}"[:15]
            # Created in a's namespace directly: no name clash with the host's devices.
            run(["ip", "-n", self.ns[a], "link", "add", va, "type", "veth", "peer", "name", vb,
                 "netns", self.ns[b]])
            for ns, dev, addr in ((a, va, addr_a), (b, vb, addr_b)):
                run(["ip", "-n", self.ns[ns], "addr", "add", f"{addr}/24", "dev", dev])
                run(["ip", "-n", self.ns[ns], "link", "set", dev, "up"])
        # A new namespace has ip_forward = 0, so beta does not route between its two links:
        # alpha and gamma only meet through the VPN. Say so explicitly all the same.
        run(["ip", "netns", "exec", self.ns["beta"], "sysctl", "-qw",
             "net.ipv4.ip_forward=0"])

    def configure(self):
        """`tinc init` per node, our settings, then every node gets every host file by
        `tinc export`, as users exchange them."""
        for n in NODES:
            os.makedirs(os.path.dirname(self.base[n]), exist_ok=True)
            # In the namespace: init checks that port 655 is free there, which it is.
            self.cli(n, "init", n)
            with open(os.path.join(self.base[n], "tinc.conf"), "a") as f:
                f.write("Mode = router\n"
                        # Only the ConnectTo's below: keep the drawn topology.
                        "AutoConnect = no\n")
                for peer in CONNECT_TO.get(n, ()):
                    f.write(f"ConnectTo = {peer}\n")
            with open(os.path.join(self.base[n], "hosts", n), "a") as f:
                f.write(f"Subnet = {VPN_ADDR[n]}/32\n")
                for addr in addresses(n):
                    f.write(f"Address = {addr}\n")
            up = os.path.join(self.base[n], "tinc-up")
            with open(up, "w") as f:
                f.write("#!/bin/sh\n"
                        f"ip addr add {VPN_ADDR[n]}/24 dev $INTERFACE\n"
                        "ip link set $INTERFACE up\n")
            os.chmod(up, 0o755)
        exported = {}
        for n in NODES:
            # `export` prints "Name = NODE" and then the host file, as `import` reads it.
            lines = self.cli(n, "export").splitlines(keepends=True)
            exported[n] = "".join(l for l in lines if not re.match(r"\s*Name\s*=", l))
        for n in NODES:
            for other in NODES:
                if other != n:
                    with open(os.path.join(self.base[n], "hosts", other), "w") as f:
                        f.write(exported[other])

    def start(self):
        for n in NODES:
            log = open(os.path.join(self.base[n], "stderr.log"), "wb")
            self.spawn(n, self.tincd + ["-D", f"-d{self.debug}", "-c", self.base[n],
                                        f"--pidfile={self.pidfile(n)}",
                                        f"--logfile={self.logfile(n)}"],
                       stdout=log, stderr=log)
            log.close()

    # -- observing -------------------------------------------------------------------------

    def check_alive(self):
        for n, p in zip(NODES, self.procs):
            if p.poll() is not None:
                raise DemoError(f"tincd of {n} exited with status {p.returncode}")

    def view(self, node):
        """(nodes, edges, subnets) as `tinc dump` prints them for `node`, parsed."""
        nodes = {}
        for line in self.cli(node, "dump", "nodes", timeout=10).splitlines():
            t = line.split()
            f = {key: t[t.index(key) + 1] for key in ("status", "nexthop", "via", "distance",
                                                       "pmtu", "rtt") if key in t}
            nodes[t[0]] = {"status": int(f["status"], 16), "nexthop": f["nexthop"],
                           "via": f["via"], "distance": int(f["distance"]),
                           "pmtu": int(f["pmtu"]), "minmtu": int(t[t.index("(min") + 1]),
                           "udp_rtt_ms": float(f["rtt"]) if "rtt" in f else None,
                           "host": t[t.index("at") + 1]}
        # FROM to TO at ADDR port P local ADDR port P options X weight W
        edges = {(t[0], t[2]): int(t[-1])
                 for t in map(str.split, self.cli(node, "dump", "edges").splitlines())}
        # SUBNET owner OWNER
        subnets = [tuple(t[::2]) for t in map(str.split,
                                               self.cli(node, "dump", "subnets").splitlines())]
        return nodes, edges, subnets

    def mesh_state(self):
        """What is still missing before the mesh is complete, per node ({} when done)."""
        missing = {}
        for n in NODES:
            try:
                nodes, edges, _ = self.view(n)
            except (DemoError, subprocess.TimeoutExpired, ValueError, IndexError) as e:
                missing[n] = f"no answer on its control socket ({str(e)[-200:]})"
                continue
            unreachable = [m for m in NODES if not nodes.get(m, {}).get("status", 0)
                           & STATUS_REACHABLE]
            lacking = sorted(EDGES - set(edges))
            what = []
            if unreachable:
                what.append(f"does not reach {', '.join(unreachable)}")
            if lacking:
                what.append("lacks edges " + ", ".join(f"{a}->{b}" for a, b in lacking))
            if what:
                missing[n] = "; ".join(what)
        return missing

    def wait_for_mesh(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            self.check_alive()
            missing = self.mesh_state()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise DemoError(f"the mesh did not form within {timeout} s:\n" + "\n".join(
                    f"  {n} {what}" for n, what in missing.items()))
            time.sleep(0.3)

    def log_tails(self, lines=15):
        out = []
        for n in NODES:
            for name in ("tincd.log", "stderr.log"):
                path = os.path.join(self.base[n], name)
                try:
                    with open(path, errors="replace") as f:
                        tail = f.read().splitlines()[-lines:]
                except OSError:
                    continue
                if tail:
                    out.append(f"--- {n}: last lines of {name} ---")
                    out.extend(tail)
        return "\n".join(out)

    # -- traffic ---------------------------------------------------------------------------

    def ping(self, src, dst, count, warmup=10):
        """(received, sent, min ms, avg ms) of `count` pings over the VPN. Warms up first
        (up to `warmup` s): the first packets to a peer wait for the node-to-node key
        exchange."""
        deadline = time.monotonic() + warmup
        while run(self.in_ns(src, ["ping", "-c1", "-W1", VPN_ADDR[dst]]), check=False) \
                .returncode != 0:
            if time.monotonic() > deadline:
                return 0, count, None, None
        out = run(self.in_ns(src, ["ping", "-q", "-c", str(count), "-i", "0.2", "-W", "2",
                                   VPN_ADDR[dst]]), check=False).stdout
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/", out)
        return (int(m.group(2)) if m else 0, count,
                float(rtt.group(1)) if rtt else None, float(rtt.group(2)) if rtt else None)

    def throughput(self, src, dst, seconds, use_iperf3):
        """Bits per second of one TCP stream from src to dst through the tunnel, and the tool
        that measured it."""
        if use_iperf3:
            return self._iperf3(src, dst, seconds), "iperf3"
        return self._builtin(src, dst, seconds), "built-in TCP sender/receiver"

    def _iperf3(self, src, dst, seconds):
        server = self.spawn(dst, ["iperf3", "-s", "-1", "--forceflush", "-B", VPN_ADDR[dst]],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        wait_for_line(server, b"listening", 10, "iperf3 server")
        out = run(self.in_ns(src, ["iperf3", "-J", "-c", VPN_ADDR[dst], "-t", str(seconds)]),
                  timeout=seconds + 30, check=False).stdout
        try:
            return json.loads(out)["end"]["sum_received"]["bits_per_second"]
        except (ValueError, KeyError) as e:
            raise DemoError(f"iperf3 {src} -> {dst} failed: {out[-400:]}") from e

    def _builtin(self, src, dst, seconds):
        sink = self.spawn(dst, [sys.executable, "-m", "tincapp.demo", "--tcp-sink",
                                VPN_ADDR[dst]], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for_line(sink, b"ready", 10, "built-in TCP receiver")
        run(self.in_ns(src, [sys.executable, "-m", "tincapp.demo", "--tcp-source",
                             VPN_ADDR[dst], str(seconds)]), timeout=seconds + 30)
        out, _ = sink.communicate(timeout=30)
        received, elapsed = map(float, out.split()[-2:])
        return received * 8 / elapsed

    # -- tearing down ----------------------------------------------------------------------

    def close(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 3
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for ns in self.created:
            # Whatever still runs in a namespace (a stuck daemon, a child of one) goes too.
            pids = run(["ip", "netns", "pids", ns], check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
            if p.stdout:
                p.stdout.close()
        for ns in self.created:
            run(["ip", "netns", "del", ns], check=False)
        self.created = []
        shutil.rmtree(self.tmp, ignore_errors=True)


def wait_for_line(proc, word, timeout, what):
    """Read proc's output until a line containing `word` (so the server is ready)."""
    deadline = time.monotonic() + timeout
    buf = b""
    while word not in buf.lower():
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            raise DemoError(f"{what} did not start: {buf.decode(errors='replace')[-300:]}")
        if select.select([proc.stdout], [], [], min(left, 0.2))[0]:
            buf += os.read(proc.stdout.fileno(), 4096)


def tcp_sink(addr):
    """Internal (`--tcp-sink ADDR`): accept one connection, read to EOF, print bytes and
    seconds."""
    with socket.create_server((addr, 5201)) as srv:
        print("ready", flush=True)
        conn, _ = srv.accept()
        with conn:
            total, t0 = 0, None
            while True:
                data = conn.recv(1 << 16)
                if t0 is None:
                    t0 = time.monotonic()
                if not data:
                    break
                total += len(data)
    print(total, time.monotonic() - t0, flush=True)
    return 0


def tcp_source(addr, seconds):
    """Internal (`--tcp-source ADDR SECONDS`): send as fast as possible for SECONDS."""
    chunk = b"\0" * (1 << 16)
    with socket.create_connection((addr, 5201), timeout=10) as s:
        end = time.monotonic() + float(seconds)
        while time.monotonic() < end:
            s.sendall(chunk)
    return 0


def have_iperf3(install):
    """iperf3 on PATH, installing Debian's package when missing (we are root here)."""
    if shutil.which("iperf3"):
        return True
    if not install or not shutil.which("apt-get"):
        return False
    step("installing iperf3 (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "iperf3"]):
        try:
            if subprocess.run(argv, env=env, capture_output=True, timeout=300).returncode:
                break
        except subprocess.TimeoutExpired:
            break
    ok = bool(shutil.which("iperf3"))
    done("ok" if ok else "not available, using the built-in sender/receiver")
    return ok


def data_path(view, peer):
    """How a node's packets reach `peer`, in the words of `tinc info`'s Reachability."""
    n = view.get(peer)
    if n is None or not n["status"] & STATUS_REACHABLE:
        return "unreachable"
    if n["via"] != peer:
        return f"indirect via {n['via']}"
    if not n["status"] & STATUS_VALIDKEY:
        return "no key exchanged yet"
    if n["status"] & STATUS_UDP_CONFIRMED or n["minmtu"] > 0:
        return "UDP, direct"
    if n["nexthop"] == peer:
        return "TCP, direct"
    hop = view.get(n["nexthop"], {})
    proto = "UDP" if hop.get("status", 0) & STATUS_UDP_CONFIRMED else "TCP"
    return f"{proto}, relayed by {n['nexthop']}"


def step(what):
    print(f"  {what} ".ljust(46, "."), end=" ", flush=True)


def done(result="ok"):
    print(result, flush=True)


def fmt_bps(bps):
    return f"{bps / 1e9:.2f} Gbit/s" if bps >= 1e9 else f"{bps / 1e6:.0f} Mbit/s"


def print_report(views, pings, tput):
    print("\nWhat each node sees (tinc dump nodes), and ping over the VPN")
    head = (f"  {'from':<7}{'to':<7}{'reachable':<11}{'nexthop':<9}{'via':<7}{'dist':>4}  "
            f"{'data path':<20}{'udp rtt':>9}  {'ping min/avg':>15}")
    print(head)
    print("  " + "-" * (len(head) - 2))
    for a, b in PAIRS:
        n = views[a][0].get(b, {"status": 0, "nexthop": "-", "via": "-", "distance": 0,
                                "udp_rtt_ms": None})
        rx, tx, mn, avg = pings[a, b]
        ping = (f"{mn:.2f}/{avg:.2f} ms" if rx else "no reply") + ("" if rx == tx else
                                                                  f" ({tx - rx} lost)")
        udp_rtt = f"{n['udp_rtt_ms']:.2f} ms" if n["udp_rtt_ms"] is not None else "-"
        print(f"  {a:<7}{b:<7}{'yes' if n['status'] & STATUS_REACHABLE else 'NO':<11}"
              f"{n['nexthop']:<9}{n['via']:<7}{n['distance']:>4}  {data_path(views[a][0], b):<20}"
              f"{udp_rtt:>9}  {ping:>15}")
    print("  (udp rtt: the daemon's own UDP probe round trip; ping: ICMP over the VPN)")
    edges = {n: views[n][1] for n in NODES}
    subnets = {n: sorted(views[n][2]) for n in NODES}
    agree = all(e == edges["alpha"] for e in edges.values()) and \
        all(s == subnets["alpha"] for s in subnets.values())
    print(f"\nEdges and subnets ({'every node has the same' if agree else 'as alpha sees them'}"
          ": tinc dump edges / dump subnets)")
    edge_text = [f"{a} -> {b} (weight {w})" for (a, b), w in sorted(edges["alpha"].items())]
    subnet_text = [f"{s:<20} {owner}" for s, owner in subnets["alpha"] if owner in NODES]
    broadcast = len(subnets["alpha"]) - len(subnet_text)
    if broadcast:
        subnet_text.append(f"(and {broadcast} broadcast subnets)")
    for i in range(max(len(edge_text), len(subnet_text))):
        left = edge_text[i] if i < len(edge_text) else ""
        right = subnet_text[i] if i < len(subnet_text) else ""
        print(f"  {left:<34}{right}")
    print("\nThroughput through the tunnel (one TCP stream)")
    if not tput:
        print("  not measured: the pings failed")
    for (a, b), (bps, tool, seconds) in tput.items():
        path = data_path(views[a][0], b)
        print(f"  {a} -> {b} ({path}): {fmt_bps(bps)}   [{tool}, {seconds} s]")


def demo(args):
    ours = command() if not (args.tincd and args.tinc) else []
    tincd = shlex.split(args.tincd) if args.tincd else ours + ["tincd"]
    tinc = shlex.split(args.tinc) if args.tinc else ours + ["tinc"]
    count = 3 if args.quick else 5
    seconds = 1 if args.quick else 3
    print("tincapp demo: a three-node mesh VPN in network namespaces\n")
    print(f"  tincd: {shlex.join(tincd)}\n  tinc:  {shlex.join(tinc)}\n")
    (a, aa, b, ba, ), (_, bg, g, ga) = LINKS
    print(f"  alpha {aa} ── {ba} beta {bg} ── {ga} gamma")
    print("  alpha and gamma have no IP route to each other: beta relays between them.")
    print("  VPN (Mode = router): " + ", ".join(f"{n} {VPN_ADDR[n]}" for n in NODES) + "\n")
    use_iperf3 = not args.no_iperf3 and have_iperf3(install=True)
    lab = Lab(tincd, tinc, debug=args.debug)
    ok = False
    try:
        step("namespaces and veth links")
        lab.make_namespaces()
        done()
        step("keys and host files (tinc init, export)")
        lab.configure()
        done()
        step("start three tincd -D")
        t0 = time.monotonic()
        lab.start()
        done(f"ok (logs in {lab.tmp})" if args.keep else "ok")
        step("wait until the mesh forms")
        try:
            lab.wait_for_mesh(args.timeout)
        except DemoError:
            done("FAILED")
            raise
        done(f"ok after {time.monotonic() - t0:.1f} s")
        step(f"ping every pair ({count} pings each)")
        pings, failed = {}, []
        for a, b in PAIRS:
            # Once one pair got no answer at all, do not wait as long for the others.
            pings[a, b] = lab.ping(a, b, count, warmup=2 if failed else 10)
            if pings[a, b][0] < count:
                failed.append(f"{a}->{b}")
        done("ok" if not failed else f"FAILED: {', '.join(failed)}")
        tput = {}
        for a, b in ([] if failed else [("alpha", "gamma")] if args.quick
                     else [("alpha", "beta"), ("alpha", "gamma")]):
            step(f"throughput {a} -> {b}")
            bps, tool = lab.throughput(a, b, seconds, use_iperf3)
            tput[a, b] = (bps, tool, seconds)
            done(fmt_bps(bps))
        lab.check_alive()
        views = {n: lab.view(n) for n in NODES}
        print_report(views, pings, tput)
        reachable = all(views[a][0].get(b, {}).get("status", 0) & STATUS_REACHABLE
                        for a, b in PAIRS)
        ok = reachable and not failed
        print("\n" + ("All three nodes reach each other and every ping was answered."
                      if ok else "Not everything worked: see the table above."))
        if args.keep:
            print("\nKept running. Try, in another shell:")
            for n in NODES:
                print(f"  sudo ip netns exec {lab.ns[n]} "
                      f"{shlex.join(tinc + ['-c', lab.base[n], '--pidfile=' + lab.pidfile(n)])}"
                      " dump nodes")
            print(f"  sudo ip netns exec {lab.ns['alpha']} ping {VPN_ADDR['gamma']}")
            try:
                input("Press Enter (or Ctrl-C) to tear it all down. ")
            except EOFError:
                pass
    except DemoError as e:
        print(f"\nERROR: {e}\n\n{lab.log_tails()}", file=sys.stderr)
    finally:
        # A second Ctrl-C must not leave half of it behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\n  cleaning up (processes, namespaces, files) ...", end=" ", flush=True)
        lab.close()
        print("done")
        signal.signal(signal.SIGINT, signal.default_int_handler)
    return 0 if ok else 1


def needs_root():
    if os.geteuid() != 0:
        return "it needs root: it creates network namespaces and TUN devices."
    for tool in ("ip", "ping"):
        if not shutil.which(tool):
            return f"it needs `{tool}` (Debian: apt-get install iproute2 iputils-ping)."
    if not os.path.exists("/dev/net/tun"):
        return "it needs /dev/net/tun (TUN devices)."
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m tincapp.demo", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tincd", help="daemon command line (default: dist/tincapp tincd if "
                        "built, else this Python's -m tincapp tincd)")
    parser.add_argument("--tinc", help="CLI command line (default likewise)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer pings, one 1 s throughput test (for tests)")
    parser.add_argument("--keep", action="store_true",
                        help="leave the mesh running until Enter is pressed")
    parser.add_argument("--no-iperf3", action="store_true",
                        help="use the built-in TCP sender/receiver instead of iperf3")
    parser.add_argument("--debug", type=int, default=2, metavar="N", help="tincd -d N")
    parser.add_argument("--timeout", type=float, default=MESH_TIMEOUT_S,
                        help=f"seconds to wait for the mesh (default {MESH_TIMEOUT_S})")
    parser.add_argument("--tcp-sink", nargs=1, help=argparse.SUPPRESS)
    parser.add_argument("--tcp-source", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tcp_sink:
        return tcp_sink(*args.tcp_sink)
    if args.tcp_source:
        return tcp_source(*args.tcp_source)
    why = needs_root()
    if why:
        print(f"tincapp demo: {why}\nRun it as root:  sudo make   or   "
              f"sudo .venv/bin/python -m tincapp.demo", file=sys.stderr)
        return 2
    # SIGTERM (and SIGHUP) tear down like Ctrl-C does.
    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)
    try:
        return demo(args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
