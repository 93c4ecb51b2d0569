"""dist/tincapp-static runs with no libc at all: inside an empty chroot.

The chroot holds the binary (/tincapp), an empty /tmp (where staticx and PyInstaller unpack)
and a mounted /proc (both bootloaders open /proc/self/exe); nothing else, no /lib, no /dev,
no /etc. It shares the network namespace, so a program inside talks to one outside over
loopback. Checked: --version, sptps_keypair, sptps_test in stream and datagram mode in both
directions against the venv build outside, and a tincd inside that meshes with a tincd
outside; TMPDIR moves the unpack location, and nothing is left unpacked after an exit.

Needs root (chroot, mount). The binary is built by packaging/static/build.sh when missing.
"""
import os
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from tests.integration.sptps_tools import OURS, Impl, exchange
from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
from tincapp import control, keys
from tincapp.firmware import health

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STATIC = os.path.join(REPO, "dist", "tincapp-static")
BUILD = os.path.join(REPO, "packaging", "static", "build.sh")
CHROOT = shutil.which("chroot") or "/usr/sbin/chroot"

pytestmark = [pytest.mark.integration, pytest.mark.frozen,
              pytest.mark.skipif(os.geteuid() != 0, reason="the empty chroot needs root")]


def elf_interpreter(path):
    """The PT_INTERP of a 64-bit little-endian ELF file, or None: a static binary has none."""
    with open(path, "rb") as f:
        head = f.read(64)
        assert head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1, "not ELF64 LE"
        phoff, = struct.unpack_from("<Q", head, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", head, 0x36)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            p_type, _flags, p_offset, _vaddr, _paddr, p_filesz = struct.unpack(
                "<IIQQQQ", f.read(40))
            if p_type == 3:                                      # PT_INTERP
                f.seek(p_offset)
                return f.read(p_filesz).rstrip(b"\0").decode()
    return None


@pytest.fixture(scope="module")
def static_binary():
    if not os.path.exists(STATIC):
        if not shutil.which("dpkg") and not shutil.which("patchelf"):
            pytest.skip("dist/tincapp-static is missing and its build tools (Debian's "
                        "python3, patchelf) cannot be installed here")
        r = subprocess.run(["bash", BUILD], capture_output=True, text=True, timeout=1800,
                           stdin=subprocess.DEVNULL)
        assert r.returncode == 0, f"packaging/static/build.sh failed:\n{r.stderr[-3000:]}"
    return STATIC


class Chroot:
    """An empty root holding only /tincapp, /tmp and a mounted /proc."""

    def __init__(self, binary):
        self.root = tempfile.mkdtemp(prefix="tincapp-chroot-")
        shutil.copy(binary, os.path.join(self.root, "tincapp"))
        os.chmod(os.path.join(self.root, "tincapp"), 0o755)
        os.mkdir(os.path.join(self.root, "tmp"))
        os.chmod(os.path.join(self.root, "tmp"), 0o1777)
        os.mkdir(os.path.join(self.root, "proc"))
        subprocess.run(["mount", "-t", "proc", "proc", os.path.join(self.root, "proc")],
                       check=True, timeout=10)

    def path(self, inside):
        return os.path.join(self.root, inside.lstrip("/"))

    def inside(self, outside):
        """An argument with the paths under the root renamed as the chroot sees them
        (`--pidfile=ROOT/x` becomes `--pidfile=/x`)."""
        return outside.replace(self.root + "/", "/")

    def argv(self, *args, env=None):
        # env -i: nothing of the test's environment (PATH, LD_*, PYTHON*) leaks in.
        return ["env", "-i", *(f"{k}={v}" for k, v in (env or {}).items()),
                CHROOT, self.root, "/tincapp", *(self.inside(a) for a in args)]

    def run(self, *args, env=None, timeout=60):
        return subprocess.run(self.argv(*args, env=env), capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    def tree(self):
        """Every path in the root except under /proc, relative to the root."""
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel = os.path.relpath(dirpath, self.root)
            if rel == "proc":
                dirnames[:] = []
                continue
            for n in dirnames + filenames:
                found.append(os.path.normpath(os.path.join(rel, n)))
        return sorted(found)

    def close(self):
        proc = os.path.join(self.root, "proc")
        if subprocess.run(["umount", proc], capture_output=True, timeout=10).returncode:
            subprocess.run(["umount", "-l", proc], capture_output=True, timeout=10)
        if not os.path.ismount(proc):
            shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def chroot(static_binary):
    c = Chroot(static_binary)
    try:
        yield c
    finally:
        c.close()


class ChrootImpl(Impl):
    """sptps_* programs of the static binary in the chroot, for sptps_tools.exchange()."""

    def __init__(self, chroot):
        super().__init__("static")
        self.chroot = chroot

    def cmd(self, program, *args):
        return self.chroot.argv(program, *args)


def test_binary_has_no_interpreter(static_binary):
    assert elf_interpreter(static_binary) is None
    # The normal build does need the build machine's loader: the difference is the point.
    normal = os.path.join(REPO, "dist", "tincapp")
    if os.path.exists(normal):
        assert elf_interpreter(normal)


def check_version_and_keypair(chroot):
    """`--version` and `sptps_keypair` of the binary in an empty chroot, which holds nothing
    else afterwards; returns how long `--version` took."""
    assert chroot.tree() == ["proc", "tincapp", "tmp"]
    start = time.monotonic()
    r = chroot.run("--version")
    elapsed = time.monotonic() - start
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().startswith("tincapp ")

    r = chroot.run("sptps_keypair", "/tmp/k.priv", "/tmp/k.pub")
    assert r.returncode == 0, r.stderr
    key = keys.read_private_key(chroot.path("/tmp/k.priv"))
    assert keys.read_public_key(chroot.path("/tmp/k.pub")) == key.public
    assert os.stat(chroot.path("/tmp/k.priv")).st_mode & 0o777 == 0o600
    # Both bootloaders removed what they unpacked.
    assert chroot.tree() == ["proc", "tincapp", "tmp", "tmp/k.priv", "tmp/k.pub"]
    return elapsed


def test_version_and_keypair_in_empty_chroot(chroot):
    print(f"--version: {check_version_and_keypair(chroot):.2f} s")


@pytest.mark.parametrize("datagram", [False, True], ids=["stream", "datagram"])
@pytest.mark.parametrize("static_listens", [True, False], ids=["static-listens",
                                                                "static-connects"])
def test_sptps_test_against_venv_build(chroot, datagram, static_listens):
    static = ChrootImpl(chroot)
    keys_dir = chroot.path("/tmp")
    listener, initiator = (static, OURS) if static_listens else (OURS, static)
    lst_out, ini_out = exchange(listener, initiator, keys_dir, OURS, datagram)
    assert lst_out.count(f"from {initiator} line".encode()) == 3
    assert ini_out.count(f"from {listener} line".encode()) == 3


class ChrootTincd(Tincd):
    """test_node_mesh's daemon, run by the static binary inside the chroot."""

    def __init__(self, chroot, root, name, env):
        super().__init__(root, name)
        self.chroot = chroot
        self.env = env

    def command(self, argv):
        # argv is [python, -m, tincapp, tincd, ...]: keep the program and its arguments.
        return self.chroot.argv(*argv[3:], env=self.env)


def test_tincd_in_chroot_meshes_with_normal_node(chroot):
    net = chroot.path("/net")
    os.mkdir(net)
    os.mkdir(chroot.path("/unpack"))
    names = ("inside", "outside")
    ports = {n: free_tcp_port() for n in names}
    make_network(net, ports, {"inside": ["outside"]}, names=names)
    with open(os.path.join(net, "inside", "tinc.conf"), "a") as f:
        f.write("DeviceType = dummy\n")               # no /dev/net/tun in the chroot
    with open(os.path.join(net, "outside", "tinc.conf"), "a") as f:
        f.write("DeviceType = dummy\n")
    # TMPDIR moves both unpack locations (staticx's and PyInstaller's) out of /tmp.
    inside = ChrootTincd(chroot, net, "inside", env={"TMPDIR": "/unpack"})
    outside = Tincd(net, "outside")
    try:
        outside.start()
        inside.start()
        expected = (["inside", "outside"], [("inside", "outside"), ("outside", "inside")])

        def agree():
            views = [d.view()[:2] for d in (inside, outside)]
            return True if all(v == expected for v in views) else views
        wait_until(agree, 15, "the chrooted node and the normal node do not form a mesh")

        unpacked = sorted(os.listdir(chroot.path("/unpack")))
        assert any(n.startswith("staticx-") for n in unpacked), unpacked
        assert os.listdir(chroot.path("/tmp")) == []

        # SIGTERM to the outermost bootloader reaches the daemon, which exits cleanly and
        # the bootloaders then remove what they unpacked.
        inside.proc.send_signal(signal.SIGTERM)
        assert inside.proc.wait(15) == 0, inside.read_log(2000)
        assert os.listdir(chroot.path("/unpack")) == []
        assert not os.path.exists(inside.pidfile)
        wait_until(lambda: outside.view()[0] == ["outside"] or outside.view(), 10,
                   "the normal node did not notice the chrooted node leave")
    finally:
        inside.kill()
        outside.kill()


class StaticTincd(Tincd):
    """A node run by dist/tincapp-static directly (no chroot)."""

    def command(self, argv):
        return [STATIC, *argv[3:]]


def test_upgrade_health_check_sees_the_static_binary_behind_its_unpacked_copy(static_binary,
                                                                               tmp_path):
    """staticx runs an unpacked copy from $TMPDIR; the upgrade's health check must still see
    which installed file (which A/B slot) the daemon was started from."""
    ports = {"solo": free_tcp_port()}
    make_network(str(tmp_path), ports, {}, names=("solo",))
    with open(tmp_path / "solo" / "tinc.conf", "a") as f:
        f.write("DeviceType = dummy\n")
    node = StaticTincd(str(tmp_path), "solo")
    try:
        node.start()
        with open(node.pidfile) as f:
            pid = control.parse_pidfile(f.read()).pid
        assert "/staticx-" in os.readlink(f"/proc/{pid}/exe")
        assert health._process_exe(pid) == os.path.realpath(STATIC)
        # TERM reaches the daemon through both bootloaders (a SIGKILL would orphan it).
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(15) == 0, node.read_log(2000)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        node.kill()
