"""`tincapp upgrade` with real builds: dist/tincapp is the good payload, a wrapper script that
fails (or crash-loops) is the bad one. A small shell service stands in for procd (restart =
stop + start `ROOT/current/tincapp tincd -D` under a respawning loop). Proves: a healthy
upgrade commits; a failing or crash-looping build rolls back by itself and the old version
runs again; refused images change nothing; a kill at any step leaves `current` at a complete
slot and --recover brings back a consistent, running installation. Loopback only, root not
needed. Slow-ish (real daemons start): about a minute.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from tincapp import keys
from tincapp.firmware import health
from tincapp.firmware import image as img
from tincapp.firmware.slots import Slots
from tincapp.firmware.upgrade import STEPS

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DIST_BINARY = os.path.join(REPO, "dist", "tincapp")

SERVICE = r"""#!/bin/sh
# Test stand-in for the procd service: ACTION is restart or stop.
D=$(dirname "$0")
stop() {
    # The supervisor leads its own process group (setsid): end the group, daemon included,
    # even if the daemon has not written its PID file yet.
    if [ -f "$D/supervisor.pid" ]; then
        pgid=$(cat "$D/supervisor.pid")
        kill -TERM "-$pgid" 2>/dev/null
        i=0
        while kill -0 "-$pgid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
        kill -KILL "-$pgid" 2>/dev/null
        rm -f "$D/supervisor.pid"
    fi
}
case "$1" in
stop) stop ;;
restart)
    stop
    # procd's respawn: run the daemon again whenever it exits.
    setsid sh -c 'while :; do "$0/current/tincapp" tincd -D -c "$1" --pidfile="$2"; sleep 0.5; done' \
        "$D/root" "$D/net" "$D/tincd.pid" >>"$D/daemon.log" 2>&1 </dev/null &
    echo $! > "$D/supervisor.pid"
    ;;
*) echo "usage: $0 restart|stop" >&2; exit 2 ;;
esac
"""

FAILING = "#!/bin/sh\necho 'broken build: exits at once' >&2\nexit 1\n"
# Comes up, answers, then dies after 3 s: the service keeps respawning it.
CRASHING = '#!/bin/sh\nexec timeout 3 "$(dirname "$0")/tincapp.real" "$@"\n'


@pytest.fixture(scope="module")
def binary():
    if not os.access(DIST_BINARY, os.X_OK):
        done = subprocess.run(["bash", os.path.join(REPO, "packaging", "bootstrap.sh")],
                              cwd=REPO)
        if done.returncode != 0 or not os.access(DIST_BINARY, os.X_OK):
            pytest.skip("dist/tincapp could not be built")
    return DIST_BINARY


class Rig:
    """A device: trusted keys, a network directory, the service, images."""

    def __init__(self, d, binary):
        self.d = d
        self.binary = binary
        self.root = os.path.join(d, "root")
        self.net = os.path.join(d, "net")
        self.pidfile = os.path.join(d, "tincd.pid")
        self.service = os.path.join(d, "service.sh")
        with open(self.service, "w") as f:
            f.write(SERVICE)
        os.chmod(self.service, 0o755)
        self.key = keys.generate_private_key(os.urandom)
        keys.write_private_key(os.path.join(d, "sign.priv"), self.key)
        os.makedirs(os.path.join(d, "trusted"))
        keys.write_public_key(os.path.join(d, "trusted", "release.pub"), self.key.public)
        os.makedirs(os.path.join(self.net, "hosts"))
        node = keys.generate_private_key(os.urandom)
        keys.write_private_key(os.path.join(self.net, "ed25519_key.priv"), node)
        with open(os.path.join(self.net, "tinc.conf"), "w") as f:
            f.write("Name = alpha\nDeviceType = dummy\nBindToAddress = 127.0.0.1\n"
                    "AutoConnect = no\n")
        with open(os.path.join(self.net, "hosts", "alpha"), "w") as f:
            f.write("Port = 0\nSubnet = 10.77.0.1/32\n" + keys.hosts_line(node.public))
        self.slots = Slots(self.root)

    def image(self, version, script=None, name=None, key="own"):
        path = os.path.join(self.d, name or f"tincapp-{version}.img")
        if script is None:
            sources = [img.Source("tincapp", self.binary, "binary", 0o755)]
        else:
            wrapper = os.path.join(self.d, f"wrapper-{version}")
            with open(wrapper, "w") as f:
                f.write(script)
            sources = [img.Source("tincapp", wrapper, "binary", 0o755),
                       img.Source("tincapp.real", self.binary, "data", 0o755)]
        img.build(path, sources, version=version, arch="x86_64",
                  key=self.key if key == "own" else key)
        return path

    def upgrade(self, *args, kill_at=None, settle=1, timeout=20):
        env = dict(os.environ, TINCAPP_ARCH="x86_64", PYTHONPATH=REPO)
        env.pop("TINCAPP_UPGRADE_KILL_AT", None)
        if kill_at:
            env["TINCAPP_UPGRADE_KILL_AT"] = kill_at
        argv = [sys.executable, "-m", "tincapp", "upgrade", "--root", self.root,
                "--keys", os.path.join(self.d, "trusted"), "--service", self.service,
                "-c", self.net, "--pidfile", self.pidfile, "--timeout", str(timeout),
                "--settle", str(settle), *args]
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    def running(self):
        """(version slot of the running daemon's executable, its PID), waiting for it."""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                pid, _, _ = health.probe(self.pidfile)
                exe = os.path.realpath(f"/proc/{pid}/exe")
                for slot in ("a", "b"):
                    if exe.startswith(os.path.realpath(self.slots.slot_dir(slot)) + "/"):
                        return slot, pid
            except (OSError, ValueError):
                pass
            time.sleep(0.2)
        raise AssertionError("no daemon of ours is answering")

    def assert_consistent(self):
        """current points at a complete slot; nothing half-written is left in use."""
        current = self.slots.current()
        assert current is not None, "no current slot"
        assert self.slots.check_slot(current) is None, self.slots.check_slot(current)
        return current

    def stop(self):
        subprocess.run([self.service, "stop"], timeout=60)
        # Anything still running from our slots (e.g. a respawned child): end it by PID.
        mine = os.path.realpath(self.root) + "/"
        for pid in os.listdir("/proc"):
            if pid.isdigit():
                try:
                    exe = os.path.realpath(f"/proc/{pid}/exe")
                except OSError:
                    continue
                if exe.startswith(mine):
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except OSError:
                        pass


@pytest.fixture
def rig(tmp_path, binary):
    r = Rig(str(tmp_path), binary)
    yield r
    r.stop()


def install_v1(rig):
    done = rig.upgrade(rig.image("1.0.0"))
    assert done.returncode == 0, done.stderr
    assert rig.slots.current() == "a" and rig.running()[0] == "a"


def test_upgrade_then_failing_build_rolls_back(rig):
    install_v1(rig)
    done = rig.upgrade(rig.image("1.1.0"))
    assert done.returncode == 0, done.stderr
    assert "health check passed" in done.stderr
    assert rig.slots.current() == "b" and rig.running()[0] == "b"
    assert rig.slots.read_state()["last_good"] == "b"

    bad = rig.image("1.2.0", FAILING)
    done = rig.upgrade(bad, timeout=5)
    assert done.returncode == 1
    assert "tincapp: upgrade failed: version 1.2.0 failed its health check (not healthy " \
           "within 5s" in done.stderr
    assert "rolled back to 1.1.0 in slot b" in done.stderr
    assert rig.slots.current() == "b" and rig.running()[0] == "b"
    state = rig.slots.read_state()
    assert state["pending"] is None and state["last_good"] == "b"
    assert state["last_result"]["result"].startswith("rolled back to 1.1.0")
    assert rig.slots.version("a") == "1.2.0"      # the failed build stays inactive


def test_crash_looping_build_rolls_back(rig):
    install_v1(rig)
    done = rig.upgrade(rig.image("1.1.0", CRASHING), settle=5, timeout=30)
    assert done.returncode == 1, done.stderr
    assert "health check (daemon crashed during the trial: PID" in done.stderr \
        or "crash loop" in done.stderr, done.stderr
    assert rig.slots.current() == "a" and rig.running()[0] == "a"


def test_refused_images_change_nothing(rig):
    install_v1(rig)
    before = (os.readlink(os.path.join(rig.root, "current")), rig.slots.read_state(),
              sorted(os.listdir(os.path.join(rig.root, "slots"))), rig.running())
    good = rig.image("1.1.0")
    data = open(good, "rb").read()
    cases = {
        "unsigned": (rig.image("1.1.0", name="u.img", key=None), "image is not signed"),
        "other key": (rig.image("1.1.0", name="o.img",
                                key=keys.generate_private_key(os.urandom)),
                      "signed by an untrusted key"),
        "truncated": (data[:len(data) // 2], "image truncated in member 'tincapp'"),
        "flipped": (data[:-100] + bytes([data[-100] ^ 1]) + data[-99:],
                    "member 'tincapp' does not match its SHA-256"),
        "downgrade": (rig.image("0.9.0"), "older than the installed 1.0.0"),
    }
    arch = os.path.join(rig.d, "arm.img")
    img.build(arch, [img.Source("tincapp", rig.binary, "binary", 0o755)], version="1.1.0",
              arch="aarch64_generic", key=rig.key)
    cases["wrong arch"] = (arch, "image is for architecture aarch64_generic, this machine "
                                 "is x86_64")
    for what, (source, message) in cases.items():
        if isinstance(source, bytes):
            path = os.path.join(rig.d, f"{what}.img")
            with open(path, "wb") as f:
                f.write(source)
            source = path
        done = rig.upgrade(source)
        assert done.returncode == 1, what
        assert "tincapp: upgrade refused: " in done.stderr and message in done.stderr, \
            (what, done.stderr)
        after = (os.readlink(os.path.join(rig.root, "current")), rig.slots.read_state(),
                 sorted(os.listdir(os.path.join(rig.root, "slots"))), rig.running())
        assert after == before, what


def test_health_check_needs_the_configured_peer(rig, tmp_path):
    """With ConnectTo in tinc.conf the new version must reach that peer."""
    install_v1(rig)
    # A peer node run from this checkout.
    beta = tmp_path / "beta"
    (beta / "hosts").mkdir(parents=True)
    bkey = keys.generate_private_key(os.urandom)
    keys.write_private_key(beta / "ed25519_key.priv", bkey)
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (beta / "tinc.conf").write_text("Name = beta\nDeviceType = dummy\nBindToAddress = 127.0.0.1\n"
                                    f"Port = {port}\nAutoConnect = no\n")
    beta_host = f"Address = 127.0.0.1\nPort = {port}\nSubnet = 10.77.0.2/32\n" \
        + keys.hosts_line(bkey.public)
    (beta / "hosts" / "beta").write_text(beta_host)
    (beta / "hosts" / "alpha").write_text(open(os.path.join(rig.net, "hosts", "alpha")).read())
    with open(os.path.join(rig.net, "hosts", "beta"), "w") as f:
        f.write(beta_host)
    with open(os.path.join(rig.net, "tinc.conf"), "a") as f:
        f.write("ConnectTo = beta\n")

    # Peer down: the check fails and the upgrade rolls back.
    done = rig.upgrade(rig.image("1.1.0"), timeout=6)
    assert done.returncode == 1
    assert "0 of 1 required peers reachable" in done.stderr, done.stderr
    assert rig.slots.current() == "a"

    log = open(beta / "log", "wb")
    peer = subprocess.Popen([sys.executable, "-m", "tincapp", "tincd", "-D", "-c", str(beta),
                             f"--pidfile={beta}/pid"], stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL, env=dict(os.environ, PYTHONPATH=REPO))
    try:
        done = rig.upgrade(rig.image("1.2.0"), timeout=30)
        assert done.returncode == 0, done.stderr
        assert "peers reachable: beta" in done.stderr
        assert rig.slots.current() == "b"
    finally:
        peer.terminate()
        peer.wait(10)
        log.close()


def test_kill_at_every_step_leaves_a_consistent_bootable_slot(rig):
    install_v1(rig)
    steps = [s for s in STEPS if s not in ("rolled-back", "committed")] + ["committed"]
    for step in steps:
        done = rig.upgrade(rig.image("1.1.0"), kill_at=step)
        assert done.returncode == -signal.SIGKILL, (step, done.stderr)
        assert f"TINCAPP_UPGRADE_KILL_AT={step}" in done.stderr
        # Right after the kill: current is a complete slot (what the router would boot).
        rig.assert_consistent()
        assert not any(name.endswith(".new") for name in os.listdir(
            os.path.join(rig.root, "slots"))) or step in ("prepared", "writing")
        done = rig.upgrade("--recover")
        assert done.returncode == 0, (step, done.stderr)
        current = rig.assert_consistent()
        state = rig.slots.read_state()
        assert state["pending"] is None and state["last_good"] == current, step
        # No half-written slot is left: staging is gone, any other slot is complete.
        for slot in os.listdir(os.path.join(rig.root, "slots")):
            assert slot in ("a", "b") and rig.slots.check_slot(slot) is None, (step, slot)
        want = "b" if step == "committed" else "a"
        assert current == want, step
        assert rig.slots.version(current) == ("1.1.0" if want == "b" else "1.0.0")
        assert rig.running()[0] == want, step
    # Killed after switching back from a failing build, before restarting the old version.
    done = rig.upgrade(rig.image("1.2.0", FAILING), kill_at="rolled-back", timeout=3)
    assert done.returncode == -signal.SIGKILL, done.stderr
    assert rig.assert_consistent() == "b"
    done = rig.upgrade("--recover")
    assert done.returncode == 0, done.stderr
    assert rig.assert_consistent() == "b" and rig.running()[0] == "b"
    assert rig.slots.read_state()["pending"] is None
