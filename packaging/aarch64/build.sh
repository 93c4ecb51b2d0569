#!/usr/bin/env bash
# Build the aarch64 artefacts: dist/aarch64/tincapp-static, dist/tincapp_VERSION_aarch64_generic.ipk
# and the signed image dist/tincapp-VERSION-aarch64_generic.img.
#
# The binary is built by the same packaging/static/build.sh as the host's, run inside a Debian
# arm64 root (build/aarch64-root, made once with debootstrap, bookworm like the host) whose
# programs this x86_64 machine runs through qemu-user-static: binfmt_misc gets an entry for
# aarch64 ELF files for the duration of the script (packaging/aarch64/binfmt.sh), removed
# again at exit, as is the /proc mount inside the root. The package and the image
# only wrap the binary, so they are made on the host (.venv, from packaging/bootstrap.sh).
#
# Cached between runs: the root itself (with the Debian packages), the arm64 venv inside it
# (rebuilt when requirements change) and the binary (rebuilt when a source is newer).
# Needs root (debootstrap, chroot, mount, binfmt_misc).
#
# Environment: AARCH64_ROOT (default build/aarch64-root), DEBIAN_MIRROR
# (default http://deb.debian.org/debian), SUITE (default: the host's, bookworm).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
ROOTFS=${AARCH64_ROOT:-build/aarch64-root}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=${SUITE:-$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")}
OUT=dist/aarch64/tincapp-static
OPKG_ARCH=aarch64_generic
SRC=/tincapp                      # the sources' copy, inside the root
# Debian packages of the root: what packaging/static/build.sh installs with apt, plus scons
# and musl-tools for staticx, which has no aarch64 wheel on PyPI and so is built from its
# sdist: scons builds its bootloader, with musl-gcc as the x86_64 wheel's is (BOOTLOADER_CC).
PACKAGES=(python3 python3-venv python3-dev gcc libc6-dev liblzo2-dev patchelf binutils libc-bin
          ca-certificates scons musl-tools)

log() { printf '==> [aarch64 +%ss] %s\n' "$SECONDS" "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "$0: needs root (debootstrap, chroot, mount, binfmt_misc)" >&2; exit 1; }

. packaging/lib.sh      # as_root, apt_install

# Everything mounted under PATH, deepest first.
mounts_under() {
    local dir
    dir=$(readlink -f "$1")
    awk -v d="$dir" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts | sort -r
}
umount_under() {
    local m
    for m in $(mounts_under "$1"); do umount "$m" 2>/dev/null || umount -l "$m"; done
}

binfmt_changes=""
cleanup() {
    local rc=$?
    [ -d "$ROOTFS" ] && umount_under "$ROOTFS"
    [ -d "$ROOTFS.new" ] && umount_under "$ROOTFS.new"
    # shellcheck disable=SC2086
    bash packaging/aarch64/binfmt.sh unregister $binfmt_changes
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --no-install-recommends: binfmt-support would register qemu for good
APT_NO_RECOMMENDS=1 apt_install debootstrap qemu-user-static
# Mounts a previous, killed run may have left (kill -9 skips the trap).
[ -d "$ROOTFS" ] && umount_under "$ROOTFS"
binfmt_changes=$(bash packaging/aarch64/binfmt.sh register)
[ -n "$binfmt_changes" ] && log "binfmt_misc: registered ($binfmt_changes), undone at exit"

if [ ! -f "$ROOTFS/.tincapp-root" ]; then
    # Made in ROOTFS.new and renamed when complete: an interrupted run leaves no half root.
    log "debootstrap $SUITE arm64 into $ROOTFS"
    [ -d "$ROOTFS.new" ] && umount_under "$ROOTFS.new"
    rm -rf "$ROOTFS.new"
    mkdir -p "$(dirname "$ROOTFS")"
    debootstrap --arch=arm64 --variant=minbase --foreign \
        --include="$(IFS=,; echo "${PACKAGES[*]}")" "$SUITE" "$ROOTFS.new" "$MIRROR" >/dev/null
    log "debootstrap second stage (emulated)"
    chroot "$ROOTFS.new" /debootstrap/debootstrap --second-stage >/dev/null
    umount_under "$ROOTFS.new"
    echo "$SUITE" > "$ROOTFS.new/.tincapp-root"
    [ -d "$ROOTFS" ] && umount_under "$ROOTFS"
    rm -rf "$ROOTFS"
    mv "$ROOTFS.new" "$ROOTFS"
fi
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"          # pip inside needs DNS
# pip inside trusts what the host trusts (a site's TLS-inspecting proxy CA, say): the host's
# bundle, beside the root's own.
HOST_CA=${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}
cp "$HOST_CA" "$ROOTFS/etc/ssl/certs/host-ca-certificates.crt"

log "copying the sources to $ROOTFS$SRC"
mkdir -p "$ROOTFS$SRC/packaging"
rm -rf "${ROOTFS:?}$SRC/tincapp" "$ROOTFS$SRC/pyx" "$ROOTFS$SRC/packaging/static"
# cp -a keeps the times: static/build.sh skips the build when no source is newer than its output.
cp -a tincapp pyx setup.py "$ROOTFS$SRC/"
cp -a packaging/tincapp.spec packaging/tincapp_entry.py packaging/lib.sh packaging/static \
    "$ROOTFS$SRC/packaging/"
# (Only in the copies: build/ beside them holds the cached venv, whose .so files must stay.)
find "$ROOTFS$SRC/tincapp" "$ROOTFS$SRC/pyx" \( -name '*.so' -o -name '__pycache__' -o -name '*.c' \) \
    -prune -exec rm -rf {} +
# requirements.txt without the test-only tools: atheris has no aarch64 wheel (it would need
# clang and libFuzzer), and neither it, pytest nor hypothesis goes into the binary.
grep -viE '^(atheris|pytest|hypothesis)([=<> ]|$)' requirements.txt > "$ROOTFS$SRC/requirements.txt.new"
if cmp -s "$ROOTFS$SRC/requirements.txt.new" "$ROOTFS$SRC/requirements.txt"; then
    rm "$ROOTFS$SRC/requirements.txt.new"
else
    touch -r requirements.txt "$ROOTFS$SRC/requirements.txt.new"
    mv "$ROOTFS$SRC/requirements.txt.new" "$ROOTFS$SRC/requirements.txt"
fi

# /proc only: the root has its own /dev/null, /dev/urandom, ... (debootstrap makes them), and
# no bind mount of the host's /dev means a `rm -rf build` after a kill -9 cannot reach it.
mount -t proc proc "$ROOTFS/proc"
in_root() {
    chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        HOME=/root LANG=C.UTF-8 PIP_CERT=/etc/ssl/certs/host-ca-certificates.crt \
        SSL_CERT_FILE=/etc/ssl/certs/host-ca-certificates.crt "$@"
}
# A root made by an older version of this script may lack packages added to the list since.
missing=()
for pkg in "${PACKAGES[@]}"; do in_root dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing into the root: ${missing[*]}"
    in_root apt-get update -qq
    in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
fi
log "building $OUT inside the arm64 root (emulated)"
in_root ARCH=aarch64 STATIC_OUT=dist/tincapp-static STATIC_BUILD=build/static-aarch64 \
    BOOTLOADER_CC=musl-gcc PIP_DISABLE_PIP_VERSION_CHECK=1 bash "$SRC/packaging/static/build.sh"
umount_under "$ROOTFS"

mkdir -p "$(dirname "$OUT")"
if ! cmp -s "$ROOTFS$SRC/dist/tincapp-static" "$OUT"; then
    cp "$ROOTFS$SRC/dist/tincapp-static" "$OUT.tmp"
    mv -f "$OUT.tmp" "$OUT"
fi
log "$OUT: $(stat -c %s "$OUT") bytes"

# The package and the image: made by the host's tools around the aarch64 binary.
PY=.venv/bin/python
[ -x "$PY" ] || { echo "$PY missing: run packaging/bootstrap.sh first" >&2; exit 1; }
VERSION=$("$PY" -c 'from tincapp.version import __version__ as v; print(v)')
ipk=dist/tincapp_${VERSION}_${OPKG_ARCH}.ipk
if [ ! -f "$ipk" ] || [ -n "$(find "$OUT" packaging/openwrt -newer "$ipk" -type f | head -n1)" ]; then
    log "building $ipk"
    "$PY" packaging/openwrt/build-ipk.py --arch "$OPKG_ARCH" --binary "$OUT" --out dist >/dev/null
fi
img=dist/tincapp-${VERSION}-${OPKG_ARCH}.img
if [ ! -f "$img" ] || [ -n "$(find "$OUT" packaging/openwrt -newer "$img" -type f | head -n1)" ]; then
    log "building $img"
    BINARY=$OUT ARCH=$OPKG_ARCH VERSION=$VERSION TOOL="$PY -m tincapp" OUT_DIR=dist \
        bash packaging/build-image.sh >/dev/null
fi
log "built: $OUT $ipk $img"
