"""`tincapp tincd --supervise`: the respawn policy with a hand-fed run time, then the real
thing on loopback: a SIGKILLed daemon comes back, a crash loop ends the supervisor, `tinc stop`
and SIGTERM end both, SIGHUP reaches the daemon, and without -D the supervisor detaches. No
root needed."""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
from tincapp import control
from tincapp.control import Ctl
from tincapp.errors import WireError
from tincapp.io.supervisor import Decision, RespawnPolicy, daemon_command
from tincapp.tools import tincd


# --- the policy, no processes ------------------------------------------------------------

def test_policy_clean_exit_or_stop_ends_without_restart():
    p = RespawnPolicy()
    assert p.child_exited(1.0, 0, stop_requested=False).restart is False
    d = p.child_exited(1.0, -signal.SIGTERM, stop_requested=True)
    assert d == Decision(False, 0.0, "tincd stopped (killed by SIGTERM)")


def test_policy_backoff_doubles_then_gives_up_after_retry_quick_crashes():
    p = RespawnPolicy(threshold_s=60, timeout_s=1, retry=5)
    delays = [p.child_exited(2.0, -9, False) for _ in range(5)]
    assert [d.delay_s for d in delays] == [1, 2, 4, 8, 16]
    assert all(d.restart for d in delays)
    assert "killed by SIGKILL" in delays[0].reason
    last = p.child_exited(2.0, 3, False)
    assert not last.restart
    assert "crash loop: 6 crashes in a row" in last.reason and "exit status 3" in last.reason


def test_policy_long_run_resets_the_crash_count_and_backoff():
    p = RespawnPolicy(threshold_s=60, timeout_s=1, retry=2)
    p.child_exited(1.0, 1, False)
    assert p.child_exited(1.0, 1, False).delay_s == 2
    after_long_run = p.child_exited(3600.0, 1, False)
    assert after_long_run.restart and after_long_run.delay_s == 1 and p.crashes == 0
    assert p.child_exited(1.0, 1, False).restart
    assert p.child_exited(1.0, 1, False).restart
    assert not p.child_exited(1.0, 1, False).restart


def test_policy_retry_zero_never_gives_up_and_backoff_is_capped():
    p = RespawnPolicy(threshold_s=60, timeout_s=1, retry=0, max_backoff_s=60)
    decisions = [p.child_exited(0.5, -11, False) for _ in range(50)]
    assert all(d.restart for d in decisions)
    assert decisions[-1].delay_s == 60


def test_supervisor_options_are_kept_from_the_daemon():
    o = tincd.parse_args(["-D", "--supervise", "-c", "/x", "--respawn-retry", "3",
                          "--respawn-timeout=0.5", "-o", "Port=1", "--respawn-threshold=10"])
    assert o.supervise and o.respawn_retry == 3 and o.respawn_timeout_s == 0.5
    assert o.respawn_threshold_s == 10
    assert o.daemon_args == ["-D", "-c", "/x", "-o", "Port=1"]
    assert daemon_command(o.daemon_args)[-5:] == ["-D", "-c", "/x", "-o", "Port=1"]
    for bad in (["--respawn-retry=-1"], ["--respawn-timeout=x"], ["--respawn-threshold=nan"]):
        with pytest.raises(tincd.UsageError):
            tincd.parse_args(bad)


# --- the supervisor as a process ---------------------------------------------------------

class Supervised(Tincd):
    """alpha run as `tincd -D ... --supervise` plus `extra`; self.proc is the supervisor."""

    extra = ()
    binary = None        # a frozen tincapp to run instead of `python -m tincapp`

    def command(self, argv):
        if self.binary is not None:
            argv = [self.binary, "tincd"] + argv[4:]       # after python -m tincapp tincd
        return argv + ["--supervise", *self.extra]

    def daemon_pid(self):
        with open(self.pidfile) as f:
            return control.parse_pidfile(f.read()).pid

    def wait_answering(self, timeout, old_pid=None):
        def up():
            try:
                pid = self.daemon_pid()
                return pid != old_pid and self.request(Ctl.DUMP_NODES) != []
            except (ValueError, WireError) as e:     # PID file being written, old socket
                return repr(e)
        try:
            wait_until(up, timeout, "daemon not back")
        except AssertionError as e:
            raise AssertionError(f"{e}; log: {self.read_log(2000)}") from None
        return self.daemon_pid()


@pytest.fixture
def node():
    root = tempfile.mkdtemp(prefix="tincapp-supervise-")
    make_network(root, {"alpha": free_tcp_port()}, {}, names=("alpha",))
    d = Supervised(root, "alpha")
    try:
        yield d
    finally:
        pid = None
        try:
            pid = d.daemon_pid()
        except (OSError, ValueError):
            pass
        d.kill()
        if pid is not None:            # never leave a daemon behind a killed supervisor
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(root, ignore_errors=True)


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_killed_daemon_comes_back_and_sighup_reaches_it(node):
    node.extra = ("--respawn-timeout=0.2",)
    node.start()
    first = node.daemon_pid()
    assert first != node.proc.pid

    node.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: "Got HUP signal" in node.read_log(), 5, "HUP not forwarded")

    os.kill(first, signal.SIGKILL)
    t0 = time.monotonic()
    second = node.wait_answering(10, old_pid=first)
    assert time.monotonic() - t0 < 8          # 0.2 s backoff plus a Python start-up
    assert gone(first) and node.proc.poll() is None
    log = node.read_log()
    assert "tincd died after" in log and "killed by SIGKILL" in log and "restart #1" in log

    # `tinc stop` goes to the daemon through its control socket; both end with status 0.
    cli = subprocess.run([sys.executable, "-m", "tincapp", "tinc", "-c", node.base,
                          f"--pidfile={node.pidfile}", "stop"],
                         capture_output=True, text=True, timeout=20)
    assert cli.returncode == 0, cli.stderr
    assert node.proc.wait(10) == 0
    assert gone(second)
    assert "Supervisor: tincd exited cleanly" in node.read_log()


def test_crash_loop_gives_up_with_non_zero_status(node):
    node.extra = ("--respawn-timeout=0.1", "--respawn-retry=2", "--respawn-threshold=60")
    node.start()
    pid = node.daemon_pid()
    for _ in range(2):
        os.kill(pid, signal.SIGKILL)
        pid = node.wait_answering(10, old_pid=pid)
    os.kill(pid, signal.SIGKILL)
    assert node.proc.wait(10) == 128 + signal.SIGKILL
    log = node.read_log()
    assert "crash loop: 3 crashes in a row" in log and "giving up" in log
    assert log.count("Supervisor started tincd") == 3


def test_sigterm_to_the_supervisor_stops_both(node):
    node.start()
    pid = node.daemon_pid()
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(10) == 0
    assert gone(pid)
    assert "Got signal or STOP request, terminating" in node.read_log()
    assert not os.path.exists(node.pidfile)


def test_without_no_detach_the_supervisor_detaches(node):
    logfile = os.path.join(node.base, "stderr.log")      # where Supervised.read_log looks
    launcher = subprocess.run(
        [sys.executable, "-m", "tincapp", "tincd", "--supervise", "--respawn-timeout=0.2",
         "-c", node.base, f"--pidfile={node.pidfile}", f"--logfile={logfile}", "-d3"],
        capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert launcher.returncode == 0, launcher.stderr
    wait_until(lambda: node.request(Ctl.DUMP_NODES) != [], 15, "detached daemon not up")
    first = node.daemon_pid()
    with open(f"/proc/{first}/stat") as f:
        supervisor_pid = int(f.read().rsplit(")", 1)[1].split()[1])
    with open(f"/proc/{supervisor_pid}/cmdline", "rb") as f:
        assert b"--supervise" in f.read()
    try:
        os.kill(first, signal.SIGKILL)
        second = node.wait_answering(10, old_pid=first)
        with open(logfile) as f:
            assert "killed by SIGKILL" in f.read()
        # Log rotation: after HUP the supervisor writes to the new file.
        os.rename(logfile, logfile + ".1")
        os.kill(supervisor_pid, signal.SIGHUP)
        wait_until(lambda: "Got HUP signal" in open(logfile + ".1").read(), 5, "no HUP")
        os.kill(second, signal.SIGKILL)
        node.wait_answering(10, old_pid=second)
        wait_until(lambda: os.path.exists(logfile) and "restart #2" in open(logfile).read(),
                   5, "supervisor did not reopen its log file")
        os.kill(supervisor_pid, signal.SIGTERM)
        wait_until(lambda: gone(supervisor_pid), 10, "detached supervisor did not stop")
    finally:
        if not gone(supervisor_pid):
            os.kill(supervisor_pid, signal.SIGKILL)


FROZEN = os.environ.get("TINCAPP_BINARY")


@pytest.mark.skipif(not FROZEN, reason="set TINCAPP_BINARY to a PyInstaller-built tincapp")
def test_frozen_binary_supervises_its_own_copy(node):
    """The onefile binary runs the daemon as `BINARY tincd ...`; PyInstaller's bootloader is
    in between the test and the supervisor, and signals still reach the daemon exactly once."""
    node.binary = FROZEN
    node.extra = ("--respawn-timeout=0.2",)
    node.start()
    first = node.daemon_pid()
    os.kill(first, signal.SIGKILL)
    second = node.wait_answering(30, old_pid=first)
    node.proc.send_signal(signal.SIGHUP)            # to the bootloader, which forwards it
    wait_until(lambda: "Got HUP signal" in node.read_log(), 5, "HUP not forwarded")
    time.sleep(0.5)
    assert node.read_log().count("Got HUP signal") == 1
    cli = subprocess.run([FROZEN, "tinc", "-c", node.base, f"--pidfile={node.pidfile}",
                          "stop"], capture_output=True, text=True, timeout=20)
    assert cli.returncode == 0, cli.stderr
    assert node.proc.wait(10) == 0
    assert gone(second)
