"""The real tinc 1.1 build the comparison tests use (TINC_BIN_DIR), and its version."""
import functools
import os
import re
import subprocess

TINC_BIN_DIR = os.environ.get("TINC_BIN_DIR")


@functools.lru_cache(maxsize=None)
def cli_version():
    """The version word of $TINC_BIN_DIR/tinc (e.g. '1.1pre18' or '1.1pre18-242-g940d15c4')."""
    if not TINC_BIN_DIR:
        return None
    out = subprocess.run([os.path.join(TINC_BIN_DIR, "tinc"), "--version"],
                         capture_output=True, text=True, timeout=30).stdout
    m = re.search(r"tinc version (\S+)", out)
    return m.group(1) if m else None


def cli_is_old_release():
    """True for the 1.1pre18 release itself, whose CLI prints differently from the 1.1 head
    (e.g. `get Subnet` says "Malformed subnet definition", export lacks a final newline).
    Its daemon and wire protocol are what interop tests check; the CLI spec follows head."""
    return cli_version() == "1.1pre18"


OLD_CLI_REASON = ("the reference CLI is the 1.1pre18 release, whose output differs from the "
                  "1.1 head's; CLI output is compared against the 1.1 head")
