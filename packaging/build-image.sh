#!/usr/bin/env bash
# Build the signed firmware image dist/tincapp-VERSION-ARCH.img from dist/tincapp (run
# packaging/bootstrap.sh first), and check it with the same binary's `image verify`.
#
# Signing key: $TINCAPP_SIGNING_KEY (a release key, tinc's ED25519 PRIVATE KEY format) or a
# build-time key generated once into build/firmware-key/ (gitignored, never committed). Its
# public half is copied to dist/trusted-keys/, the directory a device needs in
# /etc/tincapp/trusted-keys/ to accept the image.
#
# Payload: the binary, and the OpenWrt package's default UCI config and init script (the
# init script runs the binary from the A/B slot and recovers an interrupted upgrade).
#
# Environment: VERSION, BINARY (default dist/tincapp), ARCH (default: this machine's OpenWrt arch),
# TINCAPP_SIGNING_KEY, OUT_DIR (default dist), TOOL (the tincapp that builds and verifies;
# default BINARY itself, e.g. ".venv/bin/python -m tincapp" for a cross-built BINARY).
set -euo pipefail
cd "$(dirname "$0")/.."
log() { printf '==> %s\n' "$*" >&2; }

BINARY=${BINARY:-dist/tincapp}
OUT_DIR=${OUT_DIR:-dist}
KEY=${TINCAPP_SIGNING_KEY:-build/firmware-key/image-signing.priv}
[ -x "$BINARY" ] || { echo "$BINARY missing: run packaging/bootstrap.sh first" >&2; exit 1; }
read -r -a TOOL <<< "${TOOL:-$BINARY}"

if [ ! -f "$KEY" ]; then
    [ -z "${TINCAPP_SIGNING_KEY:-}" ] || { echo "$KEY does not exist" >&2; exit 1; }
    log "generating a build-time signing key in build/firmware-key/"
    "${TOOL[@]}" image keygen --out-dir build/firmware-key >/dev/null
fi
pub="${KEY%.priv}.pub"
[ -f "$pub" ] || { echo "$pub (public half of $KEY) missing" >&2; exit 1; }
mkdir -p "$OUT_DIR/trusted-keys"
cp "$pub" "$OUT_DIR/trusted-keys/$(basename "$pub")"

config=packaging/openwrt/tincapp.config
init=packaging/openwrt/tincapp.init
arch_args=()
[ -n "${ARCH:-}" ] && arch_args+=(--arch "$ARCH")
# VERSION: default what `BINARY --version` prints (set it for a binary this machine cannot run).
[ -n "${VERSION:-}" ] && arch_args+=(--image-version "$VERSION")

log "building the firmware image (config: $config, init: $init)"
out=$("${TOOL[@]}" image build --binary "$BINARY" --sign-key "$KEY" --config "$config" \
        --init "$init" --out-dir "$OUT_DIR" ${arch_args[@]+"${arch_args[@]}"})
echo "$out"
image=${out%%:*}
"${TOOL[@]}" image verify --keys "$OUT_DIR/trusted-keys" "$image" >/dev/null
log "built and verified: $image"
