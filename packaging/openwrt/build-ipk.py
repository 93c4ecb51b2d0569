#!/usr/bin/env python3
"""Build the OpenWrt package dist/tincapp_VERSION_ARCH.ipk around the static binary.

An .ipk, as OpenWrt's ipkg-build writes it and opkg reads it: a gzip'd tar holding
./debian-binary ("2.0"), ./data.tar.gz (the files, from /) and ./control.tar.gz (control,
conffiles, postinst, prerm). (Older .ipk files are `ar` archives like .deb; opkg reads both,
OpenWrt's build system writes the tar.) Owners are root, times fixed (SOURCE_DATE_EPOCH,
default 0): the same inputs give the same bytes.

Usage: build-ipk.py [--binary dist/tincapp-static] [--arch x86_64] [--version V] [--out dist]
--arch is opkg's architecture name (x86_64, aarch64_generic, aarch64_cortex-a53, ...): opkg
installs a package only for the architectures /etc/opkg.conf lists. Standard library only.
"""
import argparse
import gzip
import io
import os
import platform
import re
import sys
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def read_version():
    with open(os.path.join(ROOT, "tincapp", "version.py")) as f:
        return re.search(r'__version__\s*=\s*"([^"]+)"', f.read()).group(1)


def _gzip_tar(entries, mtime):
    """A .tar.gz of entries: (name, kind, mode, data-or-link-target). Names are ./-relative
    as ipkg-build writes them; directories are listed before what they hold."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, mode, data in entries:
            info = tarfile.TarInfo(name)
            info.mode, info.mtime = mode, mtime
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "link":
                info.type, info.linkname = tarfile.SYMTYPE, data
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    out = io.BytesIO()
    # mtime=0 in the gzip header too, for reproducible bytes
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=mtime, compresslevel=9) as gz:
        gz.write(raw.getvalue())
    return out.getvalue()


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def wrapper(program):
    """/usr/sbin/PROGRAM: runs `tincapp PROGRAM ARGS...` from the same directory (exec: the
    PID procd watches stays the daemon's)."""
    return f'#!/bin/sh\nexec "${{0%/*}}/tincapp" {program} "$@"\n'.encode()


def data_entries(binary):
    files = {
        "usr/sbin/tincapp": ("file", 0o755, _read(binary)),
        # Not symlinks: staticx starts the program under the name of the file it unpacked,
        # so tincapp never sees a link's name. These wrappers pass the program name instead.
        "usr/sbin/tincd": ("file", 0o755, wrapper("tincd")),
        "usr/sbin/tinc": ("file", 0o755, wrapper("tinc")),
        "etc/init.d/tincapp": ("file", 0o755, _read(os.path.join(HERE, "tincapp.init"))),
        # 0600 like OpenWrt's INSTALL_CONF: it may hold keys
        "etc/config/tincapp": ("file", 0o600, _read(os.path.join(HERE, "tincapp.config"))),
        "lib/upgrade/keep.d/tincapp": ("file", 0o644,
                                       _read(os.path.join(HERE, "tincapp.keep"))),
        "etc/tinc": ("dir", 0o755, None),
    }
    dirs = set()
    for name in files:
        parts = name.split("/")
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
    entries = [("./", "dir", 0o755, None)]
    for name in sorted(dirs | set(files)):
        kind, mode, data = files.get(name, ("dir", 0o755, None))
        entries.append((f"./{name}" + ("/" if kind == "dir" else ""), kind, mode, data))
    return entries


def control_text(version, arch, installed_size):
    return (f"Package: tincapp\n"
            f"Version: {version}\n"
            # no libc: the binary carries its own (staticx)
            f"Depends: kmod-tun\n"
            f"Conflicts: tinc\n"
            f"Source: packaging/openwrt\n"
            f"Section: net\n"
            f"Architecture: {arch}\n"
            f"Installed-Size: {installed_size}\n"
            f"Description: tincapp, a mesh VPN daemon that speaks tinc 1.1's protocol "
            f"(one static binary; tincd and tinc are links to it)\n")


def build(binary, arch, version, out_dir, mtime=0):
    data = data_entries(binary)
    installed = sum(len(d) for _, kind, _, d in data if kind == "file")
    control = [
        ("./", "dir", 0o755, None),
        ("./control", "file", 0o644, control_text(version, arch, installed).encode()),
        ("./conffiles", "file", 0o644, b"/etc/config/tincapp\n"),
        ("./postinst", "file", 0o755, _read(os.path.join(HERE, "postinst"))),
        ("./prerm", "file", 0o755, _read(os.path.join(HERE, "prerm"))),
    ]
    outer = [
        ("./debian-binary", "file", 0o644, b"2.0\n"),
        ("./data.tar.gz", "file", 0o644, _gzip_tar(data, mtime)),
        ("./control.tar.gz", "file", 0o644, _gzip_tar(control, mtime)),
    ]
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, f"tincapp_{version}_{arch}.ipk")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(_gzip_tar(outer, mtime))
    os.replace(tmp, path)
    return path


def main(argv):
    p = argparse.ArgumentParser(description="Build the tincapp OpenWrt package.")
    p.add_argument("--binary", default=os.path.join(ROOT, "dist", "tincapp-static"))
    p.add_argument("--arch", default=platform.machine())
    p.add_argument("--version", default=None)
    p.add_argument("--out", default=os.path.join(ROOT, "dist"))
    opts = p.parse_args(argv[1:])
    if not os.path.isfile(opts.binary):
        print(f"build-ipk: {opts.binary} is missing (packaging/static/build.sh makes it)",
              file=sys.stderr)
        return 1
    mtime = int(os.environ.get("SOURCE_DATE_EPOCH", "0"))
    print(build(opts.binary, opts.arch, opts.version or read_version(), opts.out, mtime))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
