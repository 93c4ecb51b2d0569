"""The README's demo (`python -m tincapp.demo`) end to end, as root: three namespaces, three
daemons with TUN devices, the mesh, pings over the VPN across every pair, a throughput test, the
status table; and nothing left behind afterwards, also when interrupted with SIGINT.

Runs our programs (this checkout's `-m tincapp tincd` / `tinc`); with TINCAPP_DEMO_USE_TINC=1
and TINC_BIN_DIR set, the reference tinc 1.1 instead (to check the demo itself)."""
import os
import re
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.netns import netns_unavailable

pytestmark = pytest.mark.skipif(netns_unavailable() is not None,
                                reason=netns_unavailable() or "")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NODES = ("alpha", "beta", "gamma")


def programs():
    if os.environ.get("TINCAPP_DEMO_USE_TINC") == "1":
        bindir = os.environ.get("TINC_BIN_DIR")
        if not bindir:
            pytest.skip("TINCAPP_DEMO_USE_TINC=1 needs TINC_BIN_DIR")
        return [os.path.join(bindir, "tincd")], [os.path.join(bindir, "tinc")]
    ours = [sys.executable, "-m", "tincapp"]
    return ours + ["tincd"], ours + ["tinc"]


def demo_argv(*extra):
    tincd, tinc = programs()
    return [sys.executable, "-m", "tincapp.demo", "--tincd", shlex.join(tincd),
            "--tinc", shlex.join(tinc), *extra]


def leftovers():
    """Demo namespaces and daemons of the demo that still exist."""
    ns = [l.split()[0] for l in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                                text=True).stdout.splitlines()
          if l.startswith("tincdemo-")]
    procs = subprocess.run(["pgrep", "-af", "tincapp-demo-"], capture_output=True,
                           text=True).stdout.splitlines()
    return ns, procs


def test_demo_quick():
    before = leftovers()
    p = subprocess.run(demo_argv("--quick"), capture_output=True, text=True, timeout=240,
                       cwd=ROOT, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stdout + p.stderr
    out = p.stdout
    # One table row per ordered pair: "from to reachable nexthop via dist path ... ping"
    rows = {}
    for line in out.splitlines():
        t = line.split()
        if len(t) > 2 and t[0] in NODES and t[1] in NODES:
            rows[t[0], t[1]] = line
    assert set(rows) == {(a, b) for a in NODES for b in NODES if a != b}, out
    for (a, b), line in rows.items():
        t = line.split()
        assert t[2] == "yes", line                          # reachable
        # alpha and gamma only meet through beta
        assert t[3] == ("beta" if {a, b} == {"alpha", "gamma"} else b), line
        assert re.search(r"\d+\.\d+/\d+\.\d+ ms$", line), line       # ping min/avg, no loss
    assert "every node has the same" in out, out
    assert re.search(r"alpha -> gamma .*: [\d.]+ [MG]bit/s", out), out
    assert "All three nodes reach each other and every ping was answered." in out
    assert leftovers() == before


def test_demo_interrupted_leaves_nothing_behind():
    before = leftovers()
    p = subprocess.Popen(demo_argv("--quick"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, stdin=subprocess.DEVNULL)
    try:
        out = ""
        deadline = time.monotonic() + 60
        while "start three tincd -D" not in out or not out.endswith("ok\n"):
            assert time.monotonic() < deadline and p.poll() is None, out + p.stderr.read()
            out += p.stdout.readline()
        time.sleep(0.5)             # daemons running, the mesh forming
        p.send_signal(signal.SIGINT)
        rest, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 130, out + rest + err
    assert "cleaning up" in rest and "interrupted" in err
    assert leftovers() == before
