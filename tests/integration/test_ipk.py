"""The OpenWrt package: structure, contents and modes of the .ipk, busybox `ash -n` on its
scripts, and the procd init script run under busybox ash against stand-ins for OpenWrt's
shell library (config_*, procd_*), so that what it asks procd to run is checked too.

The structure tests build a package around a small stand-in binary (fast); the artefact
dist/tincapp_VERSION_ARCH.ipk is checked as well when it has been built.
"""
import gzip
import importlib.util
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile

import pytest

from tincapp.openwrt import parse_uci
from tincapp.version import __version__

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OPENWRT = os.path.join(REPO, "packaging", "openwrt")
INIT = os.path.join(OPENWRT, "tincapp.init")
BUSYBOX = shutil.which("busybox")
needs_busybox = pytest.mark.skipif(BUSYBOX is None,
                                   reason="busybox is not installed (apt-get install busybox)")


def load_builder():
    spec = importlib.util.spec_from_file_location("build_ipk",
                                                  os.path.join(OPENWRT, "build-ipk.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def members(blob):
    """[(TarInfo, bytes or None)] of a .tar.gz, in archive order."""
    assert blob[:2] == b"\x1f\x8b", "not gzip"
    out = []
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
        for info in tar.getmembers():
            data = tar.extractfile(info).read() if info.isfile() else None
            out.append((info, data))
    return out


def unpack_ipk(path):
    outer = members(open(path, "rb").read())
    return outer, {i.name: d for i, d in outer}


@pytest.fixture(scope="module")
def ipk(tmp_path_factory):
    d = tmp_path_factory.mktemp("ipk")
    binary = d / "tincapp-static"
    binary.write_bytes(b"\x7fELF stand-in")
    path = load_builder().build(str(binary), "x86_64", "9.8.7", str(d / "out"))
    return path, binary.read_bytes()


def check_package(path, binary, version, arch):
    assert os.path.basename(path) == f"tincapp_{version}_{arch}.ipk"
    outer, files = unpack_ipk(path)
    # ipkg-build's layout: a gzip'd tar of exactly these three, in this order.
    assert [i.name for i, _ in outer] == ["./debian-binary", "./data.tar.gz",
                                          "./control.tar.gz"]
    assert files["./debian-binary"] == b"2.0\n"

    control = {i.name: (i, d) for i, d in members(files["./control.tar.gz"])}
    assert set(control) == {".", "./control", "./conffiles", "./postinst", "./prerm"}
    fields = dict(line.split(": ", 1)
                  for line in control["./control"][1].decode().splitlines())
    assert fields["Package"] == "tincapp"
    assert fields["Version"] == version and fields["Architecture"] == arch
    assert "kmod-tun" in fields["Depends"] and "libc" not in fields["Depends"]
    assert int(fields["Installed-Size"]) >= len(binary)
    assert control["./conffiles"][1] == b"/etc/config/tincapp\n"
    for script in ("./postinst", "./prerm"):
        assert control[script][0].mode == 0o755

    data = {i.name: (i, d) for i, d in members(files["./data.tar.gz"])}
    listing = {name: (info.type, info.mode, info.linkname or None)
               for name, (info, _) in data.items()}
    assert listing == {
        ".": (tarfile.DIRTYPE, 0o755, None),
        "./etc": (tarfile.DIRTYPE, 0o755, None),
        "./etc/config": (tarfile.DIRTYPE, 0o755, None),
        "./etc/config/tincapp": (tarfile.REGTYPE, 0o600, None),
        "./etc/init.d": (tarfile.DIRTYPE, 0o755, None),
        "./etc/init.d/tincapp": (tarfile.REGTYPE, 0o755, None),
        "./etc/tinc": (tarfile.DIRTYPE, 0o755, None),
        "./lib": (tarfile.DIRTYPE, 0o755, None),
        "./lib/upgrade": (tarfile.DIRTYPE, 0o755, None),
        "./lib/upgrade/keep.d": (tarfile.DIRTYPE, 0o755, None),
        "./lib/upgrade/keep.d/tincapp": (tarfile.REGTYPE, 0o644, None),
        "./usr": (tarfile.DIRTYPE, 0o755, None),
        "./usr/sbin": (tarfile.DIRTYPE, 0o755, None),
        "./usr/sbin/tincapp": (tarfile.REGTYPE, 0o755, None),
        "./usr/sbin/tincd": (tarfile.REGTYPE, 0o755, None),
        "./usr/sbin/tinc": (tarfile.REGTYPE, 0o755, None),
    }
    assert all(i.uid == 0 and i.gid == 0 for i, _ in data.values())
    assert data["./usr/sbin/tincapp"][1] == binary
    assert data["./etc/init.d/tincapp"][1] == open(INIT, "rb").read()
    # sysupgrade keeps the keys (/etc/tinc/NET) and the UCI file
    assert data["./lib/upgrade/keep.d/tincapp"][1].decode().split() == [
        "/etc/tinc/", "/etc/config/tincapp"]
    sections = parse_uci(data["./etc/config/tincapp"][1].decode())
    assert [s.type for s in sections] == ["tincapp", "tinc-net", "tinc-host"]
    return data


def test_ipk_structure_contents_and_modes(ipk):
    path, binary = ipk
    check_package(path, binary, "9.8.7", "x86_64")


def test_ipk_is_reproducible(ipk, tmp_path):
    path, binary = ipk
    (tmp_path / "b").write_bytes(binary)
    again = load_builder().build(str(tmp_path / "b"), "x86_64", "9.8.7", str(tmp_path))
    assert open(again, "rb").read() == open(path, "rb").read()


def test_dist_artefact(tmp_path):
    arch = platform.machine()
    path = os.path.join(REPO, "dist", f"tincapp_{__version__}_{arch}.ipk")
    static = os.path.join(REPO, "dist", "tincapp-static")
    if not os.path.exists(path) or not os.path.exists(static):
        pytest.skip("dist/tincapp-static or its .ipk not built (the README's build command "
                    "makes them)")
    data = check_package(path, open(static, "rb").read(), __version__, arch)
    # Installed (here: unpacked below tmp_path), tincd and tinc run as those programs.
    for name, (info, blob) in data.items():
        target = tmp_path / name
        if info.isdir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.write_bytes(blob)
            target.chmod(info.mode)
    sbin = tmp_path / "usr" / "sbin"
    r = subprocess.run([str(sbin / "tincd"), "--version"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("tinc version 1.1 (tincapp "), r
    r = subprocess.run([str(sbin / "tinc"), "--help"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "Usage: tinc " in r.stdout, r


def test_wrappers_pass_the_program_name(ipk, tmp_path):
    """/usr/sbin/tincd runs `tincapp tincd ARGS` from its own directory (here a stand-in
    tincapp that prints its arguments)."""
    path, _ = ipk
    _, files = unpack_ipk(path)
    data = {i.name: d for i, d in members(files["./data.tar.gz"])}
    (tmp_path / "tincapp").write_text('#!/bin/sh\nprintf "%s|" "$@"\n')
    (tmp_path / "tincapp").chmod(0o755)
    for program in ("tincd", "tinc"):
        (tmp_path / program).write_bytes(data[f"./usr/sbin/{program}"])
        (tmp_path / program).chmod(0o755)
        r = subprocess.run([str(tmp_path / program), "-n", "a b"], capture_output=True,
                           text=True, timeout=10)
        assert r.stdout == f"{program}|-n|a b|"


def test_init_script_declares_procd_service():
    text = open(INIT).read()
    assert text.startswith("#!/bin/sh /etc/rc.common\n")
    for needle in ("USE_PROCD=1", "procd_set_param respawn", "procd_add_reload_trigger tincapp",
                   "procd_set_param file", "procd_set_param stderr 1", " -D ", "--supervise"):
        assert needle in text, needle


@needs_busybox
@pytest.mark.parametrize("script", ["tincapp.init", "postinst", "prerm"])
def test_scripts_pass_busybox_ash_syntax_check(script, tmp_path):
    path = os.path.join(OPENWRT, script)
    r = subprocess.run([BUSYBOX, "ash", "-n", path], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 0, r.stderr
    # The check can fail: the same script with an unclosed `if` is refused.
    broken = tmp_path / script
    broken.write_text(open(path).read() + "\nif true; then\n")
    assert subprocess.run([BUSYBOX, "ash", "-n", str(broken)], capture_output=True,
                          timeout=10).returncode != 0


# Stand-ins for OpenWrt's /lib/functions.sh and /lib/functions/procd.sh: config_load runs the
# UCI file as shell (config/option/list define variables, as `uci export` output does on
# OpenWrt); procd_* print what would be sent to procd.
SHIM = r"""
LIST_SEP=" "
config() { CONFIG_SECTION="$2"; eval "CONFIG_${2}_TYPE=\$1"
	CONFIG_SECTIONS="$CONFIG_SECTIONS $2"; }
option() { eval "CONFIG_${CONFIG_SECTION}_$1=\$2"; }
list() { local v; eval "v=\"\${CONFIG_${CONFIG_SECTION}_$1}\""
	if [ -n "$v" ]; then v="$v$LIST_SEP$2"; else v="$2"; fi
	eval "CONFIG_${CONFIG_SECTION}_$1=\$v"; }
package() { :; }
config_load() { CONFIG_SECTIONS=""; . "$CONFIG_FILE"; }
config_get() { local _g; eval "_g=\"\${CONFIG_${2}_${3}}\""; eval "$1=\"\${_g:-\$4}\""; }
config_get_bool() { local _b; config_get _b "$2" "$3"
	case "$_b" in 1|on|true|yes|enabled) _b=1;; 0|off|false|no|disabled) _b=0;; *) _b="$4";;
	esac; eval "$1=\$_b"; }
config_foreach() { local f="$1" t="$2" s ty
	for s in $CONFIG_SECTIONS; do eval "ty=\$CONFIG_${s}_TYPE"
		if [ "$ty" = "$t" ]; then "$f" "$s"; fi; done; }
procd_open_instance() { echo "open $1"; }
procd_set_param() { echo "set $*"; }
procd_append_param() { echo "append $*"; }
procd_close_instance() { echo "close"; }
procd_add_reload_trigger() { echo "trigger $*"; }
"""

UCI = """\
config tincapp 'service'
	option tmpdir '{tmp}/unpack'
	option respawn_retry '7'

config tinc-net 'vpn'
	option enabled '1'
	option Name 'alpha'
	option debug '3'
	option syslog '1'
	list ConnectTo 'beta'

config tinc-net 'off'
	option enabled '0'

config tinc-host 'beta'
	option enabled '1'
	option net 'vpn'
	option Ed25519PublicKey 'KEY'
	option Address '192.0.2.2'
"""


@needs_busybox
def test_init_script_starts_one_procd_instance_per_enabled_net(tmp_path):
    (tmp_path / "tincapp").write_text(UCI.format(tmp=tmp_path))
    wrapper = tmp_path / "tincapp-bin"
    # stands for /usr/sbin/tincapp: logs its arguments, runs `tincapp openwrt ARGS`
    calls = tmp_path / "calls"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {calls}\n[ "$1" = openwrt ] || exit 0\n'
                       f'shift\nexec {sys.executable} -m tincapp.openwrt "$@"\n')
    wrapper.chmod(0o755)
    script = (SHIM + f". {INIT}\n"
              f"TINCAPP={wrapper}\nCONFIG_FILE={tmp_path}/tincapp\nRUN_DIR={tmp_path}/run\n"
              f"ETC_DIR={tmp_path}/etc\nPID_DIR={tmp_path}\n"
              "start() { start_service; }\n")

    def ash(commands):
        r = subprocess.run([BUSYBOX, "ash", "-c", script + commands], capture_output=True,
                           text=True, timeout=60, cwd=REPO,
                           env={**os.environ, "PYTHONPATH": REPO})
        assert r.returncode == 0, r.stderr
        return r

    r = ash("start_service && service_triggers\n")
    run = tmp_path / "run" / "vpn"
    assert r.stdout.splitlines() == [
        "open vpn",
        f"set command {wrapper} tincd -D -c {run} -n vpn "
        f"--pidfile={tmp_path}/tinc.vpn.pid",
        "append command --debug=3",
        "append command --syslog",
        f"set env TMPDIR={tmp_path}/unpack",
        "append command --supervise --respawn-threshold=60 --respawn-timeout=5 "
        "--respawn-retry=7",
        "set stdout 1",
        "set stderr 1",
        f"set file {tmp_path}/tincapp {run}/tinc.conf",
        "set term_timeout 10",
        "close",
        "trigger tincapp",
    ]
    # tincapp openwrt wrote the network directory the instance points at.
    assert (run / "tinc.conf").read_text() == "ConnectTo = beta\nName = alpha\n"
    assert (run / "hosts" / "beta").read_text() == \
        "Address = 192.0.2.2\nEd25519PublicKey = KEY\n"
    assert not (tmp_path / "run" / "off").exists()
    assert (tmp_path / "unpack").is_dir()

    # reload: start again (procd restarts what changed), then RELOAD over the control socket
    calls.write_text("")
    ash("reload_service >/dev/null\n")
    run_dir = tmp_path / "run"
    assert calls.read_text().splitlines() == [
        f"openwrt --config {tmp_path}/tincapp --etc {tmp_path}/etc --run {run_dir}",
        f"tinc -c {run_dir}/vpn --pidfile={tmp_path}/tinc.vpn.pid reload"]


@needs_busybox
def test_init_script_runs_the_upgraded_slot_after_recovering(tmp_path):
    """Installed from a firmware image: the instance runs the binary in the slot `current`
    names (the link resolved), and `upgrade --recover` ran before anything else."""
    (tmp_path / "tincapp").write_text(UCI.format(tmp=tmp_path))
    calls = tmp_path / "calls"
    slot = tmp_path / "opt" / "slots" / "b"
    slot.mkdir(parents=True)
    binary = slot / "tincapp"
    binary.write_text(f'#!/bin/sh\necho "$0 $*" >> {calls}\n[ "$1" = openwrt ] || exit 0\n'
                      f'shift\nexec {sys.executable} -m tincapp.openwrt "$@"\n')
    binary.chmod(0o755)
    (tmp_path / "opt" / "current").symlink_to("slots/b")
    script = (SHIM + f". {INIT}\n"
              f"UPGRADE_ROOT={tmp_path}/opt\nCONFIG_FILE={tmp_path}/tincapp\n"
              f"RUN_DIR={tmp_path}/run\nETC_DIR={tmp_path}/etc\nPID_DIR={tmp_path}\n"
              "start_service\n")
    r = subprocess.run([BUSYBOX, "ash", "-c", script], capture_output=True, text=True,
                       timeout=60, cwd=REPO, env={**os.environ, "PYTHONPATH": REPO})
    assert r.returncode == 0, r.stderr
    run = tmp_path / "run" / "vpn"
    assert f"set command {binary} tincd -D -c {run} -n vpn " \
           f"--pidfile={tmp_path}/tinc.vpn.pid" in r.stdout.splitlines()
    assert calls.read_text().splitlines() == [
        f"{tmp_path}/opt/current/tincapp upgrade --root {tmp_path}/opt --recover --no-restart",
        f"{binary} openwrt --config {tmp_path}/tincapp --etc {tmp_path}/etc "
        f"--run {tmp_path}/run"]


def test_dist_image_carries_the_static_binary_and_the_package_scripts(tmp_path):
    """dist/tincapp-VERSION-ARCH.img (the README's build command makes it): signed by the key
    in dist/trusted-keys, it holds what an OpenWrt router runs, and any altered copy fails
    `tincapp image verify`."""
    from tincapp.firmware import image as img
    path = os.path.join(REPO, "dist", f"tincapp-{__version__}-{img.host_arch()}.img")
    static = os.path.join(REPO, "dist", "tincapp-static")
    if not os.path.exists(path) or not os.path.exists(static):
        pytest.skip("dist/tincapp-static or its image not built (the README's build command "
                    "makes them)")
    keys_dir = os.path.join(REPO, "dist", "trusted-keys")
    members = {}

    def sink(member):
        members[member.name] = io.BytesIO()
        return members[member.name]
    with open(path, "rb") as f:
        head = img.read_head(f, path)
        img.check_signature(head, img.load_trusted_keys(keys_dir), path)
        img.stream_members(f, head, sink, source=path)
    with open(static, "rb") as f:
        assert members["tincapp"].getvalue() == f.read()
    with open(INIT, "rb") as f:
        assert members["etc/init.d/tincapp"].getvalue() == f.read()

    def verify(image):
        return subprocess.run([sys.executable, "-m", "tincapp", "image", "verify", "--keys",
                               keys_dir, str(image)], capture_output=True, text=True,
                              timeout=120, cwd=REPO, stdin=subprocess.DEVNULL)
    assert verify(path).returncode == 0
    data = bytearray(open(path, "rb").read())
    data[len(head.raw) + 1000] ^= 1                  # one bit inside the binary
    altered = tmp_path / "altered.img"
    altered.write_bytes(bytes(data))
    r = verify(altered)
    assert r.returncode != 0 and "does not match its SHA-256" in r.stderr, r.stderr
