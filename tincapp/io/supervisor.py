"""`tincd --supervise`: run the daemon as a child process and restart it when it dies.

Owns the child process, the signals sent to the supervisor (forwarded to the child) and the
respawn decision. The daemon keeps its own PID file and control socket, so `tinc` talks to the
daemon, never to the supervisor. The decision itself is RespawnPolicy, which takes the child's
run time and exit status and holds no clock, so its rules are tested without sleeping.

Respawn rules (procd's `respawn threshold timeout retry`, plus exponential backoff):
  - a daemon that ran less than `threshold_s` crashed; a longer run resets the crash count;
  - after more than `retry` crashes in a row the supervisor gives up (retry 0: never);
  - the n-th crash in a row waits timeout_s * 2**(n-1) before the restart, capped at
    MAX_BACKOFF_S;
  - exit status 0 (after `tinc stop`, SIGTERM or SIGINT) ends the supervisor too, as does any
    exit after a terminating signal was forwarded.

Single-threaded: every signal the supervisor handles is blocked and collected with
sigtimedwait(), so there are no asynchronous handlers and no races with waitpid().
"""
import logging
import os
import signal
import time
from dataclasses import dataclass

from tincapp.__main__ import program_argv

log = logging.getLogger("tincd.supervisor")

# DEVIATION from procd's defaults (3600 s, 5 s, 5 retries): a VPN node should come back within
# a second, not five, and a daemon that stayed up for a minute had its tunnels up, so a later
# crash is worth restarting for however long it ran before. Five quick crashes in a row with
# 1+2+4+8+16 s between them is a crash loop (bad config, a broken device, a deterministic crash)
# that ~30 s of retrying will not fix.
DEFAULT_THRESHOLD_S = 60.0
DEFAULT_TIMEOUT_S = 1.0
DEFAULT_RETRY = 5
MAX_BACKOFF_S = 60.0

# Forwarded to the daemon as they are. TERM/INT/QUIT also end the supervisor once the daemon
# has exited; HUP (reload), ALRM (retry), USR1/USR2 (tinc's dumps) and WINCH just pass.
TERMINATING = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)
FORWARDED = TERMINATING + (signal.SIGHUP, signal.SIGALRM, signal.SIGUSR1, signal.SIGUSR2,
                           signal.SIGWINCH)


def describe_status(code: int) -> str:
    """A child's os.waitstatus_to_exitcode() value in words."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}"
    return f"exit status {code}"


@dataclass(frozen=True)
class Decision:
    restart: bool
    delay_s: float      # how long to wait before the restart (0 when not restarting)
    reason: str         # one line for the log


class RespawnPolicy:
    """Decides, each time the daemon exits, whether and when to start it again. No clock."""

    def __init__(self, threshold_s=DEFAULT_THRESHOLD_S, timeout_s=DEFAULT_TIMEOUT_S,
                 retry=DEFAULT_RETRY, max_backoff_s=MAX_BACKOFF_S):
        if threshold_s < 0 or timeout_s < 0 or retry < 0:
            raise ValueError("respawn threshold, timeout and retry must not be negative")
        self.threshold_s = float(threshold_s)
        self.timeout_s = float(timeout_s)
        self.retry = int(retry)
        self.max_backoff_s = float(max_backoff_s)
        self.crashes = 0          # consecutive runs shorter than threshold_s
        self.restarts = 0         # restarts so far, for the log

    def child_exited(self, runtime_s: float, code: int, stop_requested: bool) -> Decision:
        """Called when the daemon exited after `runtime_s` seconds with `code`
        (os.waitstatus_to_exitcode: negative for a signal)."""
        status = describe_status(code)
        if stop_requested:
            return Decision(False, 0.0, f"tincd stopped ({status})")
        if code == 0:
            return Decision(False, 0.0, "tincd exited cleanly")
        # COMPAT (procd instance_exit): a short run counts, a long one resets the count.
        if runtime_s < self.threshold_s:
            self.crashes += 1
        else:
            self.crashes = 0
        if self.retry > 0 and self.crashes > self.retry:
            return Decision(False, 0.0,
                            f"tincd is in a crash loop: {self.crashes} crashes in a row, each "
                            f"within {self.threshold_s:g} s of its start, the last after "
                            f"{runtime_s:.1f} s ({status}); giving up")
        delay = min(self.timeout_s * 2 ** max(self.crashes - 1, 0), self.max_backoff_s)
        self.restarts += 1
        return Decision(True, delay,
                        f"tincd died after {runtime_s:.1f} s ({status}); restart "
                        f"#{self.restarts} in {delay:g} s"
                        + (f" (crash {self.crashes} of at most {self.retry})"
                           if self.retry and self.crashes else ""))


def daemon_command(child_args) -> list:
    """The argv that runs `tincd child_args` with this same program."""
    return program_argv("tincd") + list(child_args)


def exit_code_for(code: int) -> int:
    """The supervisor's own exit status for a daemon's final status: the shell's 128+N for a
    signal."""
    return 128 - code if code < 0 else code


class Supervisor:
    """Runs `argv` (a full command) until it ends for good. Blocks; returns an exit status."""

    def __init__(self, argv, policy: RespawnPolicy, on_hup=None):
        self.argv = list(argv)
        self.policy = policy
        self.on_hup = on_hup            # HUP is forwarded to the daemon after this ran
        self.pid = None
        self.stop_requested = False
        self._handled = set(FORWARDED) | {signal.SIGCHLD}

    def run(self) -> int:
        old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, self._handled)
        try:
            return self._loop()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)

    def _spawn(self):
        # Its own session and process group: a terminal's ^C reaches only the supervisor (which
        # forwards it once), and after a crash the whole group can be cleaned up (a onefile
        # bootloader that forked the real daemon, scripts). A frozen supervisor's child finds
        # the unpacked program through the environment PyInstaller set and runs in the spawned
        # process itself, so the PID we wait for is the daemon's own.
        self.pid = os.posix_spawn(self.argv[0], self.argv, os.environ, setsid=True,
                                  setsigmask=(), setsigdef=(signal.SIGPIPE, signal.SIGXFSZ))
        log.info("Supervisor started tincd as process %d", self.pid)

    def _loop(self) -> int:
        try:
            self._spawn()
        except OSError as e:
            log.error("Supervisor: could not start tincd (%s): %s", self.argv[0], e)
            return 1
        started = time.monotonic()
        while True:
            code = self._wait_child()
            runtime = time.monotonic() - started
            self._reap_group(code)
            decision = self.policy.child_exited(runtime, code, self.stop_requested)
            if not decision.restart:
                (log.info if code == 0 or self.stop_requested else log.error)(
                    "Supervisor: %s", decision.reason)
                return 0 if self.stop_requested and code in (0, -signal.SIGTERM,
                                                             -signal.SIGINT) \
                    else exit_code_for(code)
            log.warning("Supervisor: %s", decision.reason)
            if not self._backoff(decision.delay_s):
                log.info("Supervisor: stopped while waiting to restart tincd")
                return 0
            try:
                self._spawn()
            except OSError as e:     # the binary went away (an upgrade?): nothing to run
                log.error("Supervisor: could not restart tincd (%s): %s; giving up",
                          self.argv[0], e)
                return 1
            started = time.monotonic()

    def _reap_group(self, code):
        """Called when the daemon process was reaped: kill what is left of its process group
        after an abnormal end (the onefile bootloader's child, scripts of a dead daemon)."""
        pid, self.pid = self.pid, None
        if code != 0:
            try:
                os.killpg(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

    def _wait_child(self) -> int:
        """Forward signals until the child exits; return its waitstatus_to_exitcode()."""
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid == self.pid:
                return os.waitstatus_to_exitcode(status)
            # The timeout only guards against a lost SIGCHLD; signals return at once.
            info = signal.sigtimedwait(self._handled, 1.0)
            if info is None or info.si_signo == signal.SIGCHLD:
                continue
            sig = signal.Signals(info.si_signo)
            if sig in TERMINATING:
                self.stop_requested = True
            elif sig == signal.SIGHUP and self.on_hup is not None:
                self.on_hup()
            log.debug("Supervisor: forwarding %s to tincd (process %d)", sig.name, self.pid)
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def _backoff(self, delay_s) -> bool:
        """Wait before a restart. False if a terminating signal arrived meanwhile; SIGALRM
        (tinc's "retry now") cuts the wait short; other signals have no daemon to go to."""
        deadline = time.monotonic() + delay_s
        while (left := deadline - time.monotonic()) > 0:
            info = signal.sigtimedwait(self._handled, left)
            if info is None:
                break
            sig = info.si_signo
            if sig in TERMINATING:
                self.stop_requested = True
                return False
            if sig == signal.SIGALRM:
                log.info("Supervisor: got ALRM, restarting tincd now")
                break
            if sig != signal.SIGCHLD:
                log.info("Supervisor: %s dropped, tincd is not running",
                         signal.Signals(sig).name)
        return True
