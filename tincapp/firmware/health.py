"""The post-upgrade health check: is the new daemon up, answering, reaching its peers, and
staying up?

Talks to the daemon the way `tinc` does: PID file -> control socket -> cookie handshake ->
DUMP_NODES. Polls with a real clock (this is shell code, run once per upgrade).
"""
import os
import socket
import time
from dataclasses import dataclass

from tincapp import control
from tincapp.config import netconf
from tincapp.config import parse, secrets
from tincapp.control import Ctl
from tincapp.errors import WireError

STATUS_REACHABLE = 0x10
POLL_S = 0.25


@dataclass
class HealthResult:
    ok: bool
    reason: str
    pid: int = 0


def configured_peers(confbase, key=None) -> int:
    """How many ConnectTo lines the server config in confbase has (tinc.conf and conf.d,
    decrypted with `key` (a secrets.KeySource; default: the environment's) where encrypted).
    ConfigError when it cannot be read."""
    entries = parse.read_server_files(confbase, key if key is not None else secrets.KeySource())
    return sum(1 for e in entries if parse.ascii_lower(e.name) == "connectto")


def _process_exe(pid):
    """The program file process pid was started from. A staticx binary (the static variant
    routers run) executes an unpacked copy in $TMPDIR; its bootloader names the original in
    the environment it passes on."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = dict(v.split(b"=", 1) for v in f.read().split(b"\0") if b"=" in v)
    except OSError:
        return None
    bundle, original = env.get(b"STATICX_BUNDLE_DIR"), env.get(b"STATICX_PROG_PATH")
    if bundle and original and exe.startswith(os.fsdecode(bundle) + os.sep):
        exe = os.fsdecode(original)
    return os.path.realpath(exe)


def probe(pidfile, timeout_s=3.0):
    """(pid, daemon name, reachable peer names) from a running daemon, or OSError/WireError."""
    with open(pidfile, encoding="latin-1") as f:
        pid = control.parse_pidfile(f.read(), pidfile)
    try:
        os.kill(pid.pid, 0)
    except PermissionError:
        pass                      # alive, owned by another user; the socket decides
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        s.connect(netconf.control_socket_for(pidfile))
        f = s.makefile("rw", encoding="latin-1", newline="\n")
        f.write(control.client_greeting(pid.cookie))
        f.flush()
        name, _ = control.check_server_greeting(f.readline(), f.readline())
        f.write(control.control_request(Ctl.DUMP_NODES))
        f.flush()
        peers = []
        while True:
            line = f.readline()
            if not line:
                raise WireError("control connection closed during the node dump")
            t = line.split()
            if t == [str(control.CONTROL), str(int(Ctl.DUMP_NODES))]:
                break
            if len(t) < 13:
                raise WireError(f"unexpected node dump line {line.strip()!r}")
            if t[2] != name and int(t[12], 16) & STATUS_REACHABLE:
                peers.append(t[2])
    return pid.pid, name, peers


def wait_healthy(pidfile, *, timeout_s, settle_s, min_peers=0, slot_dir=None, crash_limit=3,
                 clock=time.monotonic, sleep=time.sleep, log=None) -> HealthResult:
    """Wait until the daemon answers on its control socket with at least min_peers reachable
    peers, then stays so for settle_s with the same PID.

    Fails when timeout_s passes first, when the PID changes during the settle time, or when
    more than crash_limit different PIDs were seen (the service manager keeps respawning a
    crashing daemon). With slot_dir, the daemon's executable must lie inside it (so a daemon
    of the old version still running does not count).
    """
    deadline = clock() + timeout_s
    pids = []
    ready_since = None
    last = "no PID file yet"
    while True:
        now = clock()
        try:
            pid, _, peers = probe(pidfile)
        except (OSError, WireError, ValueError) as e:
            pid, peers = None, None
            last = f"daemon not answering: {e}"
        if pid is not None:
            if slot_dir is not None:
                exe = _process_exe(pid)
                if exe is not None and not exe.startswith(os.path.realpath(slot_dir) + os.sep):
                    last = f"PID {pid} runs {exe}, not the new version"
                    pid = None
            if pid is not None and pid not in pids:
                pids.append(pid)
                if ready_since is not None:
                    return HealthResult(False, f"daemon restarted during the trial "
                                               f"(PID {pids[-2]} -> {pid}): crash loop", pid)
                if len(pids) > crash_limit:
                    return HealthResult(False, f"daemon restarted {len(pids) - 1} times: "
                                               f"crash loop", pid)
        elif ready_since is not None:
            return HealthResult(False, f"daemon crashed during the trial: PID {pids[-1]} "
                                       f"gone ({last})")
        if pid is not None:
            if len(peers) >= min_peers:
                if ready_since is None:
                    ready_since = now
                    if log:
                        log(f"daemon PID {pid} answers, peers reachable: "
                            f"{', '.join(peers) or 'none needed'}")
                if now - ready_since >= settle_s:
                    return HealthResult(True, f"PID {pid} healthy for {settle_s:g}s, "
                                              f"{len(peers)} peer(s) reachable", pid)
            else:
                last = f"{len(peers)} of {min_peers} required peers reachable"
                ready_since = None        # a peer may drop for a moment; the deadline decides
        if now >= deadline:
            return HealthResult(False, f"not healthy within {timeout_s:g}s: {last}",
                                pids[-1] if pids else 0)
        sleep(POLL_S)
