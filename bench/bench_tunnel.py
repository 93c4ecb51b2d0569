"""Tunnel throughput: two nodes in two network namespaces joined by one veth pair.

For each implementation: `tinc init` both nodes (Mode router, a /32 Subnet each, tinc-up puts
the VPN address on $INTERFACE), exchange host files with `tinc export`, start both `tincd -D`,
wait until each reaches the other, then measure through the tunnel:
  * TCP throughput with iperf3 (DURATION s, STREAMS parallel streams),
  * ping RTT min/avg over the VPN addresses,
  * each daemon's CPU seconds during the iperf3 run (utime+stime from /proc/PID/stat, summed
    over the daemon's process group: the frozen binary's bootloader forks the real daemon) and
    its resident set size after the run (the group member with the largest VmRSS),
and the same iperf3/ping over the bare veth for the ceiling. Prints the figures, the
tunnel/veth ratio, and tincapp/tinc when both ran.

Implementations: ours (dist/tincapp if built, else this Python's -m tincapp) or --tincd/--tinc;
and, when env TINC_BIN_DIR is set, also $TINC_BIN_DIR/tincd + tinc in the same run. Needs root;
installs Debian's iperf3 when missing. Everything is removed afterwards, also on Ctrl-C.
Usage:
    sudo .venv/bin/python bench/bench_tunnel.py [--duration S] [--streams N] [--json FILE]
"""
import argparse
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tincapp.demo import DemoError, command, have_iperf3, run, wait_for_line  # noqa: E402

UNDERLAY = {"a": "192.0.2.1", "b": "192.0.2.2"}         # TEST-NET-1, inside our namespaces
VPN_ADDR = {"a": "10.43.0.1", "b": "10.43.0.2"}
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def group_members(pgid):
    """PIDs of the processes in process group `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid:          # fields[0] is state; pgrp is 3rd after comm
                pids.append(int(entry))
    return pids


def cpu_seconds(pgid):
    """utime+stime of every process in the group, in seconds."""
    total = 0
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])   # utime, stime (14th, 15th of stat)
    return total / CLK_TCK


def rss_mib(pgid):
    """Resident set of the group's largest member: the daemon, not a bootloader."""
    best = 0
    for pid in group_members(pgid):
        try:
            with open(f"/proc/{pid}/statm") as f:
                best = max(best, int(f.read().split()[1]) * PAGE)
        except OSError:
            continue
    return best / (1 << 20)


class Bench:
    """The two namespaces, their veth, config dirs and processes; close() removes them all."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.ns = {n: f"tincbench-{tag}-{n}" for n in "ab"}
        self.created, self.procs = [], []
        self.tmp = tempfile.mkdtemp(prefix="tincapp-bench-")

    def setup(self):
        for n in "ab":
            run(["ip", "netns", "add", self.ns[n]])
            self.created.append(self.ns[n])
            run(["ip", "-n", self.ns[n], "link", "set", "lo", "up"])
        run(["ip", "-n", self.ns["a"], "link", "add", "veth-a", "type", "veth", "peer",
             "name", "veth-b", "netns", self.ns["b"]])
        for n in "ab":
            run(["ip", "-n", self.ns[n], "addr", "add", f"{UNDERLAY[n]}/24", "dev", f"veth-{n}"])
            run(["ip", "-n", self.ns[n], "link", "set", f"veth-{n}", "up"])

    def in_ns(self, n, argv):
        return ["ip", "netns", "exec", self.ns[n], *argv]

    def spawn(self, n, argv, **kw):
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(self.in_ns(n, argv), start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def stop(self, procs):
        for p in procs:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
            if p.stdout:
                p.stdout.close()
            self.procs.remove(p)

    def close(self):
        for p in list(self.procs):
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
        self.procs = []
        for ns in self.created:
            for pid in run(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run(["ip", "netns", "del", ns], check=False)
        self.created = []
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- measurements ----------------------------------------------------------------------

    def ping(self, dst_addr, count):
        out = run(self.in_ns("a", ["ping", "-q", "-c", str(count), "-i", "0.05", "-W", "2",
                                   dst_addr]), check=False).stdout
        m = re.search(r"= ([\d.]+)/([\d.]+)/", out)
        return (float(m.group(1)), float(m.group(2))) if m else (None, None)

    def iperf3(self, dst_addr, seconds, streams, during=None):
        """Received bits/s from a to b; `during` (a callable) runs right before and after the
        client, its two results returned alongside."""
        server = self.spawn("b", ["iperf3", "-s", "-1", "--forceflush", "-B", dst_addr],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for_line(server, b"listening", 10, "iperf3 server")
            before = during() if during else None
            out = run(self.in_ns("a", ["iperf3", "-J", "-c", dst_addr, "-t", str(seconds),
                                       "-P", str(streams)]),
                      timeout=seconds + 60, check=False).stdout
            after = during() if during else None
        finally:
            self.stop([server])
        try:
            end = json.loads(out)["end"]
        except (ValueError, KeyError) as e:
            raise DemoError(f"iperf3 to {dst_addr} failed: {out[-400:]}") from e
        return (end["sum_received"]["bits_per_second"],
                end["sum_sent"].get("retransmits"), before, after)

    # -- one implementation ----------------------------------------------------------------

    def run_pair(self, label, tincd, tinc, args):
        base = {n: os.path.join(self.tmp, f"run{len(os.listdir(self.tmp))}", n)
                for n in "ab"}
        os.makedirs(os.path.dirname(base["a"]))
        pid = {n: os.path.join(base[n], "tincd.pid") for n in "ab"}

        def cli(n, *a):
            return run(self.in_ns(n, tinc + ["-c", base[n], f"--pidfile={pid[n]}", *a]),
                       timeout=15).stdout

        for n in "ab":
            cli(n, "init", n)
            with open(os.path.join(base[n], "tinc.conf"), "a") as f:
                f.write("Mode = router\nAutoConnect = no\n"
                        + ("ConnectTo = b\n" if n == "a" else ""))
            with open(os.path.join(base[n], "hosts", n), "a") as f:
                f.write(f"Subnet = {VPN_ADDR[n]}/32\nAddress = {UNDERLAY[n]}\n")
            up = os.path.join(base[n], "tinc-up")
            with open(up, "w") as f:
                f.write(f"#!/bin/sh\nip addr add {VPN_ADDR[n]}/24 dev $INTERFACE\n"
                        "ip link set $INTERFACE up\n")
            os.chmod(up, 0o755)
        exported = {n: "".join(l for l in cli(n, "export").splitlines(keepends=True)
                               if not re.match(r"\s*Name\s*=", l)) for n in "ab"}
        for n, other in (("a", "b"), ("b", "a")):
            with open(os.path.join(base[n], "hosts", other), "w") as f:
                f.write(exported[other])
        daemons = {}
        for n in "ab":
            log = open(os.path.join(base[n], "stderr.log"), "wb")
            daemons[n] = self.spawn(n, tincd + ["-D", f"-d{args.debug}", "-c", base[n],
                                                f"--pidfile={pid[n]}",
                                                f"--logfile={os.path.join(base[n], 'log')}"],
                                    stdout=log, stderr=log)
            log.close()
        try:
            deadline = time.monotonic() + 30
            while run(self.in_ns("a", ["ping", "-c1", "-W1", VPN_ADDR["b"]]),
                      check=False).returncode:
                if time.monotonic() > deadline or any(p.poll() is not None
                                                      for p in daemons.values()):
                    tails = "\n".join(f"--- {n}: {f} ---\n" + tail(os.path.join(base[n], f))
                                      for n in "ab" for f in ("log", "stderr.log"))
                    raise DemoError(f"{label}: no ping reply through the tunnel in 30 s\n"
                                    + tails)
            self.ping(VPN_ADDR["b"], 5)                  # settle: UDP confirmed, PMTU
            rtt = self.ping(VPN_ADDR["b"], args.pings)
            bps, retr, before, after = self.iperf3(
                VPN_ADDR["b"], args.duration, args.streams,
                during=lambda: {n: cpu_seconds(p.pid) for n, p in daemons.items()})
            cpu = {n: after[n] - before[n] for n in "ab"}
            rss = {n: rss_mib(p.pid) for n, p in daemons.items()}
        finally:
            self.stop(list(daemons.values()))
        return {"label": label, "bps": bps, "retransmits": retr, "rtt_ms": rtt,
                "cpu_s": cpu, "rss_mib": rss, "seconds": args.duration}

    def run_veth(self, args):
        rtt = self.ping(UNDERLAY["b"], args.pings)
        bps, retr, _, _ = self.iperf3(UNDERLAY["b"], args.duration, args.streams)
        return {"label": "bare veth", "bps": bps, "retransmits": retr, "rtt_ms": rtt,
                "seconds": args.duration}


def tail(path, lines=10):
    try:
        with open(path, errors="replace") as f:
            return "\n".join(f.read().splitlines()[-lines:])
    except OSError:
        return "(none)"


def report(results, streams):
    print(f"\nTCP through the tunnel vs the bare veth ({streams} stream(s), iperf3)")
    cols = ("", "throughput", "ping min/avg", "CPU s a/b", "CPU % a/b", "RSS MiB a/b",
            "retransmits")
    rows = []
    for r in results:
        rtt = (f"{r['rtt_ms'][0]:.3f}/{r['rtt_ms'][1]:.3f} ms" if r["rtt_ms"][0] is not None
               else "no reply")
        row = [r["label"], f"{r['bps'] / 1e9:.3f} Gbit/s", rtt]
        if "cpu_s" in r:
            c, m, t = r["cpu_s"], r["rss_mib"], r["seconds"]
            row += [f"{c['a']:.2f}/{c['b']:.2f}",
                    f"{100 * c['a'] / t:.0f}/{100 * c['b'] / t:.0f}",
                    f"{m['a']:.1f}/{m['b']:.1f}"]
        else:
            row += ["-", "-", "-"]
        row.append("-" if r["retransmits"] is None else str(r["retransmits"]))
        rows.append(row)
    widths = [max(len(row[i]) for row in rows + [cols]) for i in range(len(cols))]
    for row in [cols] + rows:
        print("  " + row[0].ljust(widths[0]) + "".join(
            cell.rjust(w + 3) for cell, w in zip(row[1:], widths[1:])))
    veth = results[-1]
    print()
    for r in results[:-1]:
        print(f"  {r['label']} / bare veth: throughput {r['bps'] / veth['bps']:.3f}")
    if len(results) == 3:
        a, b = results[0], results[1]

        def per_gbit(r, n):
            return r["cpu_s"][n] / r["seconds"] / (r["bps"] / 1e9)
        print(f"  {a['label']} / {b['label']}: throughput {a['bps'] / b['bps']:.2f}, "
              "CPU per Gbit/s " + ", ".join(
                  f"{n} {per_gbit(a, n) / max(per_gbit(b, n), 1e-9):.2f}" for n in "ab"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tincd", help="daemon command (default: ours)")
    parser.add_argument("--tinc", help="CLI command (default: ours)")
    parser.add_argument("--label", default=None, help="name of that implementation in the "
                        "report (default: tincapp, or the --tincd command)")
    parser.add_argument("--duration", type=int, default=10, help="seconds per iperf3 run")
    parser.add_argument("--streams", type=int, default=1, help="parallel TCP streams")
    parser.add_argument("--pings", type=int, default=20, help="pings per RTT measurement")
    parser.add_argument("--debug", type=int, default=0, help="tincd -d N (default 0)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_tunnel needs root (network namespaces, TUN devices): "
              "sudo .venv/bin/python bench/bench_tunnel.py", file=sys.stderr)
        return 2
    if not have_iperf3(install=True):
        print("bench_tunnel needs iperf3 (apt-get install iperf3)", file=sys.stderr)
        return 2
    ours = command() if not (args.tincd and args.tinc) else []
    tincd = shlex.split(args.tincd) if args.tincd else ours + ["tincd"]
    tinc = shlex.split(args.tinc) if args.tinc else ours + ["tinc"]
    impls = [(args.label or ("tincapp" if not args.tincd else os.path.basename(tincd[0])),
              tincd, tinc)]
    bindir = os.environ.get("TINC_BIN_DIR")
    if bindir:
        impls.append(("tinc (TINC_BIN_DIR)", [os.path.join(bindir, "tincd")],
                      [os.path.join(bindir, "tinc")]))

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    bench = None
    try:
        bench = Bench()
        bench.setup()
        results = []
        for label, d, c in impls:
            print(f"measuring {label}: {shlex.join(d)} ...", flush=True)
            results.append(bench.run_pair(label, d, c, args))
        print("measuring the bare veth ...", flush=True)
        results.append(bench.run_veth(args))
        report(results, args.streams)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(results, f, indent=1)
        return 0
    except DemoError as e:
        print(f"bench_tunnel: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if bench:
            bench.close()


if __name__ == "__main__":
    sys.exit(main())
