#!/usr/bin/env bash
# Build everything from a fresh checkout: the venv with pinned dependencies, the Cython
# extensions (in place), and the one-file binary dist/tincapp. Idempotent: steps whose inputs
# did not change are skipped. Used by `make`, `make test` and CI.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv

log() { printf '==> %s\n' "$*" >&2; }

. packaging/lib.sh      # as_root, apt_install

if ! command -v "$PYTHON" >/dev/null; then apt_install python3; fi
# The namespace tests, the demo and bench_tunnel use iproute2, ping and iperf3 (as root only).
if [ "$(id -u)" = 0 ]; then apt_install iproute2 iputils-ping iperf3; fi
if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
command -v cc >/dev/null || apt_install gcc
# python-lzo (tinc's compression levels 10 and 11) builds against the system's liblzo2.
apt_install liblzo2-dev
"$PYTHON" -c 'import sysconfig, os, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    || apt_install python3-dev

if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing pinned Python packages"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    "$VENV/bin/python" -m pip install -q -r requirements.txt
    echo "$want" > "$stamp"
fi

log "building Cython extensions"
"$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null
if [ ! -x "$VENV/bin/tincapp" ]; then
    # editable install: the venv runs this checkout (and gets the `tincapp` command)
    "$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
fi

if [ "${TINCAPP_SKIP_FREEZE:-0}" != 1 ]; then
    newest_src=$(find tincapp pyx packaging -newer dist/tincapp -type f 2>/dev/null | head -n1 || true)
    if [ ! -x dist/tincapp ] || [ -n "$newest_src" ]; then
        log "freezing dist/tincapp with PyInstaller"
        "$VENV/bin/python" -m PyInstaller --noconfirm --clean --log-level WARN \
            --distpath dist --workpath build/pyinstaller packaging/tincapp.spec
        for name in tincd tinc sptps_test sptps_keypair sptps_speed; do
            ln -sf tincapp "dist/$name"
        done
    fi
fi
image_binary=dist/tincapp
if [ "${TINCAPP_SKIP_FREEZE:-0}" != 1 ] && [ "${TINCAPP_SKIP_STATIC:-0}" != 1 ]; then
    # busybox: the package tests syntax-check the OpenWrt init script with its ash
    apt_install busybox
    bash packaging/static/build.sh                   # dist/tincapp-static (skips if current)
    image_binary=dist/tincapp-static                 # what a router (musl) can run
    ipk=$("$VENV/bin/python" -c 'import platform; from tincapp.version import __version__ as v; print(f"dist/tincapp_{v}_{platform.machine()}.ipk")')
    if [ ! -f "$ipk" ] || [ -n "$(find dist/tincapp-static packaging/openwrt -newer "$ipk" -type f | head -n1)" ]; then
        log "building $ipk"
        "$VENV/bin/python" packaging/openwrt/build-ipk.py >/dev/null
    fi
fi
if [ "${TINCAPP_SKIP_FREEZE:-0}" != 1 ]; then
    # The signed image, again only when its binary, payload, script or key changed.
    stamp=build/image-$(basename "$image_binary").stamp
    arch=$("$VENV/bin/python" -c 'from tincapp.firmware.image import host_arch; print(host_arch())')
    if [ ! -f "$stamp" ] || [ -z "$(ls dist/tincapp-*-"$arch".img 2>/dev/null)" ] || [ -n "$(find \
            "$image_binary" packaging/openwrt packaging/build-image.sh build/firmware-key \
            -newer "$stamp" -type f 2>/dev/null | head -n1)" ]; then
        BINARY=$image_binary TOOL=dist/tincapp bash packaging/build-image.sh
        mkdir -p build && touch "$stamp"
    fi
fi
if [ "${TINCAPP_SKIP_FREEZE:-0}" != 1 ] && [ "${TINCAPP_SKIP_AARCH64:-0}" != 1 ] \
        && [ "$(id -u)" = 0 ] && [ "$(uname -m)" = x86_64 ]; then
    # dist/aarch64/tincapp-static, the aarch64_generic .ipk and .img, built in a Debian
    # arm64 root under qemu (~16 min from nothing, ~7 min after a source change, 3 s if current)
    bash packaging/aarch64/build.sh
fi
log "built: $(ls dist/tincapp 2>/dev/null || echo 'extensions only')"
