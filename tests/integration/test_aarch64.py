"""dist/aarch64/tincapp-static passes the empty-chroot smoke tests, run under qemu-user.

The same checks as test_static_binary, on the binary packaging/aarch64/build.sh builds in a
Debian arm64 root: --version, sptps_keypair, sptps_test in stream and datagram mode in both
directions against the (x86_64) venv build outside, and a tincd inside the empty chroot that
meshes with a normal node outside. The chroot holds no qemu: binfmt_misc's entry is
registered with the F flag (packaging/aarch64/binfmt.sh), so the kernel runs every aarch64
ELF file, including the ones both bootloaders unpack and exec, through the interpreter it
opened at registration. The entry (and the binfmt_misc mount) is removed after the module if
this module added it.

Needs root, qemu-user-static and the artefact; skips otherwise (building it takes a long
time under emulation, so this module does not start the build itself).
"""
import io
import os
import struct
import subprocess
import tarfile

import pytest

from tests.integration.sptps_tools import OURS, exchange
from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
# The empty chroot and the programs run in it, as for the host's static binary.
from tests.integration.test_static_binary import (
    Chroot, ChrootImpl, ChrootTincd, check_version_and_keypair, elf_interpreter)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BINARY = os.path.join(REPO, "dist", "aarch64", "tincapp-static")
BINFMT = os.path.join(REPO, "packaging", "aarch64", "binfmt.sh")
QEMU = "/usr/bin/qemu-aarch64-static"
EM_AARCH64 = 0xB7

pytestmark = [
    pytest.mark.integration, pytest.mark.frozen,
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="binfmt_misc and the empty chroot need root"),
    pytest.mark.skipif(not os.path.exists(BINARY),
                       reason="dist/aarch64/tincapp-static missing: run packaging/aarch64/build.sh"),
    pytest.mark.skipif(not os.path.exists(QEMU),
                       reason=f"{QEMU} missing: apt-get install qemu-user-static"),
]


def elf_machine(path):
    with open(path, "rb") as f:
        head = f.read(20)
    assert head[:4] == b"\x7fELF", "not ELF"
    return struct.unpack_from("<H", head, 18)[0]


@pytest.fixture(scope="module")
def binfmt():
    """aarch64 ELF files run here (through qemu) for the duration of the module."""
    r = subprocess.run(["bash", BINFMT, "register"], capture_output=True, text=True,
                       timeout=30, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        pytest.skip(f"cannot register qemu-aarch64 in binfmt_misc: {r.stderr.strip()}")
    changes = r.stdout.split()
    try:
        yield
    finally:
        subprocess.run(["bash", BINFMT, "unregister", *changes], timeout=30,
                       stdin=subprocess.DEVNULL)


@pytest.fixture
def chroot(binfmt):
    c = Chroot(BINARY)
    try:
        yield c
    finally:
        c.close()


def test_binary_is_static_aarch64():
    assert elf_machine(BINARY) == EM_AARCH64
    assert elf_interpreter(BINARY) is None


def test_version_and_keypair_in_empty_chroot(chroot):
    print(f"--version under qemu: {check_version_and_keypair(chroot):.2f} s")


@pytest.mark.parametrize("datagram", [False, True], ids=["stream", "datagram"])
@pytest.mark.parametrize("aarch64_listens", [True, False], ids=["aarch64-listens",
                                                                 "aarch64-connects"])
def test_sptps_test_against_venv_build(chroot, datagram, aarch64_listens):
    emulated = ChrootImpl(chroot)
    listener, initiator = (emulated, OURS) if aarch64_listens else (OURS, emulated)
    lst_out, ini_out = exchange(listener, initiator, chroot.path("/tmp"), OURS, datagram)
    assert lst_out.count(f"from {initiator} line".encode()) == 3
    assert ini_out.count(f"from {listener} line".encode()) == 3


def test_tincd_in_chroot_meshes_with_normal_node(chroot):
    net = chroot.path("/net")
    os.mkdir(net)
    names = ("inside", "outside")
    make_network(net, {n: free_tcp_port() for n in names}, {"inside": ["outside"]},
                 names=names)
    for name in names:
        with open(os.path.join(net, name, "tinc.conf"), "a") as f:
            f.write("DeviceType = dummy\n")           # no /dev/net/tun in the chroot
    inside = ChrootTincd(chroot, net, "inside", env={})
    outside = Tincd(net, "outside")
    try:
        outside.start()
        inside.start()
        expected = (["inside", "outside"], [("inside", "outside"), ("outside", "inside")])

        def agree():
            views = [d.view()[:2] for d in (inside, outside)]
            return True if all(v == expected for v in views) else views
        wait_until(agree, 30, "the emulated node and the normal node do not form a mesh")

        inside.proc.terminate()
        assert inside.proc.wait(30) == 0, inside.read_log(2000)
        assert os.listdir(chroot.path("/tmp")) == []      # both bootloaders cleaned up
        assert not os.path.exists(inside.pidfile)
    finally:
        inside.kill()
        outside.kill()


@pytest.mark.parametrize("kind", ["ipk", "img"])
def test_package_and_image_are_for_aarch64(kind):
    """The .ipk and the signed image build.sh makes around the binary (host tools)."""
    from tincapp.version import __version__ as version
    if kind == "ipk":
        path = os.path.join(REPO, "dist", f"tincapp_{version}_aarch64_generic.ipk")
    else:
        path = os.path.join(REPO, "dist", f"tincapp-{version}-aarch64_generic.img")
    if not os.path.exists(path):
        pytest.skip(f"{os.path.relpath(path, REPO)} missing: run packaging/aarch64/build.sh")
    if kind == "ipk":
        with tarfile.open(path, "r:gz") as outer:
            control = tarfile.open(fileobj=io.BytesIO(
                outer.extractfile("./control.tar.gz").read()), mode="r:gz")
            text = control.extractfile("./control").read().decode()
            assert "Architecture: aarch64_generic\n" in text
            data = tarfile.open(fileobj=io.BytesIO(
                outer.extractfile("./data.tar.gz").read()), mode="r:gz")
            packed = data.extractfile("./usr/sbin/tincapp").read()
        with open(BINARY, "rb") as f:
            assert packed == f.read()
    else:
        python = os.path.join(REPO, ".venv", "bin", "python")
        r = subprocess.run([python, "-m", "tincapp", "image", "verify", "--keys",
                            os.path.join(REPO, "dist", "trusted-keys"), "--arch",
                            "aarch64_generic", path], capture_output=True, text=True,
                           timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert "aarch64_generic" in r.stdout
