#!/usr/bin/env bash
# Build dist/tincapp-static: the one-file tincapp that needs no libc on the target.
#
# PyInstaller's one-file binary still loads the build machine's glibc (and libz, liblzo2, ...)
# from the target's /lib, so it does not start on OpenWrt (musl). staticx wraps it: a static
# bootloader carrying those libraries, which it unpacks next to PyInstaller's own archive and
# runs through the bundled ld.so. staticx refuses libraries with an absolute RPATH/RUNPATH, so
# the Python used here must be one whose extensions carry none: Debian's python3, not the
# pyenv Python of .venv. Hence a separate venv (BUILD/venv) and a separate copy of the
# sources (BUILD/src), so the Cython modules built in place for .venv are not overwritten.
#
# Parameters (environment), so the same script serves other architectures when it runs inside
# a root of that architecture (see packaging/README or the aarch64 script):
#   ARCH           target name used for the work directory (default: uname -m)
#   STATIC_PYTHON  the Python to freeze with (default: /usr/bin/python3)
#   STATIC_OUT     the artefact (default: dist/tincapp-static)
#   STATIC_BUILD   work directory (default: build/static-$ARCH)
#   STATICX_FLAGS  staticx options (default: --strip --no-compress)
# Idempotent: nothing is rebuilt when STATIC_OUT is newer than every source.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ARCH=${ARCH:-$(uname -m)}
PYTHON=${STATIC_PYTHON:-/usr/bin/python3}
OUT=${STATIC_OUT:-dist/tincapp-static}
WORK=${STATIC_BUILD:-build/static-$ARCH}
VENV=$WORK/venv
STATICX_FLAGS=${STATICX_FLAGS:---strip --no-compress}

log() { printf '==> [static %s +%ss] %s\n' "$ARCH" "$SECONDS" "$*" >&2; }
. packaging/lib.sh      # as_root, apt_install

newest_src=""
if [ -x "$OUT" ]; then
    newest_src=$(find tincapp pyx setup.py requirements.txt packaging/tincapp.spec \
        packaging/tincapp_entry.py packaging/static -newer "$OUT" -type f \
        ! -name '*.so' ! -name '*.c' ! -path '*/__pycache__/*' 2>/dev/null | head -n1 || true)
    if [ -z "$newest_src" ]; then
        log "$OUT is up to date"
        exit 0
    fi
fi

# python3-dev: Python.h for the Cython modules; liblzo2-dev: python-lzo; patchelf, binutils
# (objcopy, strip) and libc-bin (ldd): the external tools staticx runs.
apt_install python3 python3-venv python3-dev gcc liblzo2-dev patchelf binutils libc-bin

mkdir -p "$WORK" "$(dirname "$OUT")"
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV from $PYTHON"
    "$PYTHON" -m venv "$VENV"
fi
stamp="$VENV/.requirements.sha256"
want=$(cat requirements.txt packaging/static/requirements-static.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    log "installing pinned Python packages into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
    # --no-cache-dir: python-lzo is built from source, and a wheel pip cached after building
    # it with another Python 3.11 (.venv's, whose RUNPATH points into its prefix) would be
    # reused as is; staticx refuses that RUNPATH.
    "$VENV/bin/python" -m pip install -q --no-cache-dir -r requirements.txt \
        -r packaging/static/requirements-static.txt
    echo "$want" > "$stamp"
fi

log "copying the sources to $WORK/src"
rm -rf "$WORK/src"
mkdir -p "$WORK/src/packaging"
cp -a tincapp pyx setup.py "$WORK/src/"
cp -a packaging/tincapp.spec packaging/tincapp_entry.py "$WORK/src/packaging/"
find "$WORK/src" \( -name '*.so' -o -name '__pycache__' -o -name '*.c' \) -prune \
    -exec rm -rf {} +

log "building the Cython extensions for $("$VENV/bin/python" -V)"
(cd "$WORK/src" && "$ROOT/$VENV/bin/python" setup.py -q build_ext --inplace >/dev/null)

log "freezing with PyInstaller (one file)"
# Run from the copy so that `tincapp` resolves to it, with its own extensions.
(cd "$WORK/src" && "$ROOT/$VENV/bin/python" -m PyInstaller --noconfirm --clean \
    --log-level WARN --distpath "$ROOT/$WORK/dist" --workpath "$ROOT/$WORK/pyinstaller" \
    packaging/tincapp.spec)

log "wrapping with staticx"
# --no-compress: staticx's own xz layer halves the start time's worth of work for 20% of the
# file (the PyInstaller archive inside is compressed already): `--version` 0.3 s instead of
# 0.6 s here, 11.9 MB instead of 9.7 MB, but the .ipk (gzip) grows only 0.4 MB and
# OpenWrt's overlay file systems compress what is installed.
# shellcheck disable=SC2086
"$VENV/bin/staticx" $STATICX_FLAGS "$WORK/dist/tincapp" "$OUT.tmp"
chmod 755 "$OUT.tmp"        # staticx writes it through a 0700 temporary file
mv -f "$OUT.tmp" "$OUT"
"$OUT" --version >/dev/null
log "built $OUT ($(stat -c %s "$OUT") bytes)"
