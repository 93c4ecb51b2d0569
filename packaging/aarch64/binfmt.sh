#!/usr/bin/env bash
# Make this kernel run aarch64 ELF files through qemu-aarch64-static, and undo it again.
#
#   binfmt.sh register    print what was changed ("mount", "entry", both or nothing) on stdout
#   binfmt.sh unregister CHANGES   undo exactly CHANGES (what `register` printed)
#   binfmt.sh status      exit 0 when aarch64 binaries run here
#
# The entry is registered with the F ("fix binary") flag: the kernel opens the interpreter
# once, at registration, so it also serves programs inside a chroot that has no
# /usr/bin/qemu-aarch64-static (the arm64 build root, the empty-chroot smoke tests). It is
# named tincapp-aarch64 so that it never replaces an entry someone else owns; when such an
# entry (e.g. binfmt-support's qemu-aarch64 with F) is already enabled, nothing is changed.
# Needs root. Used by packaging/aarch64/build.sh and tests/integration/test_aarch64.py.
set -euo pipefail
BINFMT=/proc/sys/fs/binfmt_misc
NAME=tincapp-aarch64
QEMU=${QEMU_AARCH64:-/usr/bin/qemu-aarch64-static}
# ELF64, little endian, ET_EXEC or ET_DYN (mask 0xfe), e_machine EM_AARCH64 (0xb7):
# the same magic and mask as qemu's own binfmt configuration.
MAGIC='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
MASK='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

# An enabled entry for aarch64 with the F flag (ours or another), or nothing.
usable_entry() {
    [ -f "$BINFMT/status" ] || return 1
    local f
    for f in "$BINFMT"/*; do
        case ${f##*/} in register|status) continue ;; esac
        grep -qx enabled "$f" 2>/dev/null || continue
        grep -q '^magic 7f454c460201010000000000000000000200b700' "$f" || continue
        grep -q '^flags: .*F' "$f" || continue
        echo "${f##*/}"
        return 0
    done
    return 1
}

case ${1:-} in
register)
    changes=()
    if [ ! -f "$BINFMT/status" ]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT"
        changes+=(mount)
    fi
    if ! usable_entry >/dev/null; then
        [ -x "$QEMU" ] || { echo "$QEMU missing (apt-get install qemu-user-static)" >&2; exit 1; }
        # A stale entry of ours (e.g. without F from an older script) goes first.
        [ -e "$BINFMT/$NAME" ] && echo -1 > "$BINFMT/$NAME"
        printf ':%s:M::%s:%s:%s:F\n' "$NAME" "$MAGIC" "$MASK" "$QEMU" > "$BINFMT/register"
        changes+=(entry)
    fi
    echo "${changes[*]:-}"
    ;;
unregister)
    shift
    for change in "$@"; do
        case $change in
        entry) [ -e "$BINFMT/$NAME" ] && echo -1 > "$BINFMT/$NAME" ;;
        esac
    done
    for change in "$@"; do
        # Only when nothing else got registered meanwhile.
        if [ "$change" = mount ] && [ -z "$(ls "$BINFMT" | grep -vx -e register -e status)" ]; then
            umount "$BINFMT"
        fi
    done
    ;;
status)
    usable_entry >/dev/null
    ;;
*)
    echo "usage: $0 register | unregister CHANGES... | status" >&2
    exit 2
    ;;
esac
