# Shell helpers shared by the packaging scripts; sourced, after the caller has defined log().

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# apt_install PKG...: install those Debian packages that are missing, and nothing when none
# is. APT_NO_RECOMMENDS=1 leaves recommended packages out.
apt_install() {
    local missing=() options=()
    for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "${APT_NO_RECOMMENDS:-0}" = 1 ] && options+=(--no-install-recommends)
    log "installing Debian packages: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${options[@]}" \
        "${missing[@]}" >/dev/null
}
