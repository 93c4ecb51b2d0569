"""The A/B upgrade: verify, write the inactive slot, switch, start, health-check, commit or
roll back.

Steps, in order (each one is a point where the process may die; recover() handles all):

    verified    the image is checked completely; nothing written yet
    prepared    state.json says pending (step "writing"); the staging directory is next
    writing     half of the binary is in the staging directory
    written     the inactive slot is complete (state step "written"); current unchanged
    switching   state step "trial" written; the link is next
    switched    current -> new slot
    started     the service command restarted the daemon (new version)
    healthy     the health check passed; commit is next
    committed   state: last_good = new slot, nothing pending
  on failure:
    rolled-back current -> old slot again; the old version is restarted next

TINCAPP_UPGRADE_KILL_AT=STEP makes the process SIGKILL itself at STEP (tests use it to prove
that an interruption anywhere leaves a consistent, bootable installation).
"""
import os
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Optional

from tincapp.config import netconf
from tincapp.errors import ConfigError
from tincapp.firmware import health
from tincapp.firmware import image as img
from tincapp.firmware.slots import Slots, SlotError, other

STEPS = ("verified", "prepared", "writing", "written", "switching", "switched", "started",
         "healthy", "committed", "rolled-back")
KILL_ENV = "TINCAPP_UPGRADE_KILL_AT"
SERVICE_ENV = "TINCAPP_SERVICE_CMD"
DEFAULT_SERVICE = "/etc/init.d/tincapp"
SERVICE_TIMEOUT_S = 120


class UpgradeFailed(img.ImageError):
    """The new version was installed but failed; the old one runs again."""


class Service:
    """The pluggable start/stop hook: `COMMAND restart` (on OpenWrt /etc/init.d/tincapp).

    The command is split like a shell would (no shell runs it); TINCAPP_SLOT_DIR tells it
    which slot is current.
    """

    def __init__(self, command, timeout_s=SERVICE_TIMEOUT_S):
        self.argv = shlex.split(command)
        if not self.argv:
            raise SlotError("empty service command")
        self.timeout_s = timeout_s

    def run(self, action, slot_dir):
        env = dict(os.environ, TINCAPP_SLOT_DIR=slot_dir)
        try:
            done = subprocess.run(self.argv + [action], env=env, stdin=subprocess.DEVNULL,
                                  timeout=self.timeout_s)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"service command {' '.join(self.argv)} {action} failed: {e}"
        if done.returncode != 0:
            return f"service command {' '.join(self.argv)} {action} exited with {done.returncode}"
        return None


@dataclass
class Options:
    arch: Optional[str] = None            # None: do not check (verify --any-arch)
    allow_downgrade: bool = False
    service: Optional[Service] = None     # None: do not restart, no health check
    pidfile: Optional[str] = None
    confbase: Optional[str] = None
    timeout_s: float = 60.0
    settle_s: float = 10.0
    min_peers: Optional[int] = None       # None: 1 if tinc.conf has ConnectTo lines, else 0
    crash_limit: int = 3


def _default_log(message):
    print(f"tincapp upgrade: {message}", file=sys.stderr, flush=True)


class Upgrader:
    def __init__(self, slots: Slots, trusted: dict, options: Options, log=_default_log,
                 progress=None):
        self.slots = slots
        self.trusted = trusted
        self.opts = options
        self.log = log
        self.progress = progress

    def step(self, name):
        """Called when the upgrade reaches step `name` (see the module docstring)."""
        if os.environ.get(KILL_ENV) == name:
            self.log(f"{KILL_ENV}={name}: killing myself")
            os.kill(os.getpid(), signal.SIGKILL)

    # --- recovery ------------------------------------------------------------------------------

    def recover(self, restart=True):
        """Finish or undo an interrupted upgrade (the caller holds the lock)."""
        actions, needs_restart = self.slots.recover(self.trusted)
        for a in actions:
            self.log(a)
        current = self.slots.current()
        if needs_restart and restart and self.opts.service and current:
            error = self.opts.service.run("restart", self.slots.slot_dir(current))
            if error:
                self.log(error)
        return actions

    # --- upgrade -------------------------------------------------------------------------------

    def install(self, image_path):
        """Install image_path into the inactive slot and make it current, or raise."""
        slots = self.slots
        self.recover()
        old = slots.current()
        installed = slots.version(old)
        head = img.verify_file(image_path, self.trusted, arch=self.opts.arch,
                               installed_version=installed,
                               allow_downgrade=self.opts.allow_downgrade)
        version = head.manifest.version
        self.log(f"{image_path}: verified, version {version} for {head.manifest.arch}")
        self.step("verified")

        new = other(old) if old else "a"
        state = slots.read_state()
        state["pending"] = {"slot": new, "from": old, "version": version, "step": "writing",
                            "started": int(time.time())}
        slots.write_state(state)
        self.step("prepared")
        try:
            slots.write_slot(new, image_path, head, self.step, self.progress)
        except BaseException:
            slots.discard_staging()
            state["pending"] = None
            slots.write_state(state)
            raise
        state["pending"]["step"] = "written"
        slots.write_state(state)
        self.log(f"slot {new} written")
        self.step("written")

        state["pending"]["step"] = "trial"
        slots.write_state(state)
        self.step("switching")
        slots.switch(new)
        self.log(f"current -> slot {new} ({version})")
        self.step("switched")

        if self.opts.service is None:
            self.log("no service command: not restarted, no health check")
            return self._commit(state, new, version, "installed (not restarted)")
        error = self.opts.service.run("restart", slots.slot_dir(new))
        self.step("started")
        if error is None:
            result = self._health(new)
            error = None if result.ok else result.reason
            if result.ok:
                self.log(f"health check passed: {result.reason}")
        if error is None:
            self.step("healthy")
            return self._commit(state, new, version, "installed")
        self.log(f"health check failed: {error}")
        if old is None:
            # A first installation has nothing to go back to; it stays current.
            self._commit(state, new, version, f"installed, but unhealthy: {error}")
            raise UpgradeFailed(f"version {version} is unhealthy ({error}) and there is no "
                                f"previous version to roll back to")
        return self._rollback(state, old, new, version, error)

    def _health(self, slot):
        opts = self.opts
        min_peers = opts.min_peers
        if min_peers is None and opts.confbase:
            try:
                min_peers = 1 if health.configured_peers(opts.confbase) else 0
            except (OSError, ConfigError) as e:
                min_peers = 1          # a node we cannot read may well have peers: check
                self.log(f"cannot count ConnectTo in {opts.confbase} ({e}); requiring a "
                         f"reachable peer (--min-peers sets the number)")
        min_peers = min_peers or 0
        pidfile = self._pidfile()
        self.log(f"health check: waiting up to {opts.timeout_s:g}s for {pidfile} "
                 f"({min_peers} peer(s) required, {opts.settle_s:g}s settle time)")
        return health.wait_healthy(pidfile, timeout_s=opts.timeout_s, settle_s=opts.settle_s,
                                   min_peers=min_peers, slot_dir=self.slots.slot_dir(slot),
                                   crash_limit=opts.crash_limit, log=self.log)

    def _pidfile(self):
        if self.opts.pidfile is not None:
            return self.opts.pidfile
        return netconf.resolve_paths(self.opts.confbase).pidfile

    def _commit(self, state, slot, version, result):
        state["pending"] = None
        state["last_good"] = slot
        state["last_result"] = {"version": version, "result": result, "at": int(time.time())}
        self.slots.write_state(state)
        self.step("committed")
        self.log(f"version {version} in slot {slot}: {result}")
        return state["last_result"]

    def _rollback(self, state, old, new, version, reason):
        slots = self.slots
        slots.switch(old)
        self.step("rolled-back")
        old_version = slots.version(old)
        self.log(f"rolled back: current -> slot {old} ({old_version})")
        error = self.opts.service.run("restart", slots.slot_dir(old))
        if error:
            self.log(f"restarting the old version: {error}")
        else:
            # Wait for the old version, so the operator learns whether it runs again.
            result = health.wait_healthy(
                self._pidfile(), timeout_s=self.opts.timeout_s, settle_s=0,
                slot_dir=slots.slot_dir(old), crash_limit=self.opts.crash_limit)
            self.log(f"old version {'runs again' if result.ok else 'NOT healthy either'}: "
                     f"{result.reason}")
        state["pending"] = None
        state["last_good"] = old
        state["last_result"] = {"version": version, "at": int(time.time()),
                                "result": f"rolled back to {old_version}: {reason}"}
        slots.write_state(state)
        raise UpgradeFailed(f"version {version} failed its health check ({reason}); "
                            f"rolled back to {old_version} in slot {old}")
