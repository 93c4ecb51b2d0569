"""The `tincapp` command, also a multi-call program.

Called through a link named tincd, tinc, sptps_test, sptps_keypair or sptps_speed it behaves as
that program; `tincapp PROGRAM ARGS...` does the same. Programs are imported only when run, so
`tincapp --version` stays fast.
"""
import importlib
import os
import sys

from tincapp.version import __version__

# program name -> module with main(argv) -> int
PROGRAMS = {
    "sptps_test": "tincapp.tools.sptps_test",
    "sptps_keypair": "tincapp.tools.sptps_keypair",
    "sptps_speed": "tincapp.tools.sptps_speed",
    "tincd": "tincapp.tools.tincd",
    "tinc": "tincapp.tools.tinc",
    "image": "tincapp.firmware.cli",
    "upgrade": "tincapp.firmware.cli",
    "openwrt": "tincapp.openwrt",
}

USAGE = f"""\
Usage: tincapp PROGRAM [ARGS...]
       tincapp --version | --help

tincapp {__version__}: a mesh VPN daemon that speaks tinc 1.1's protocol.
Programs: {', '.join(PROGRAMS)}.
Each program also runs when tincapp is called through a link of that name.
"""


def program_argv(name):
    """The argv that runs program `name` with this same tincapp: the frozen multi-call binary
    (as is when called through a link of that name, else with the name as its first argument)
    or this Python's `-m tincapp NAME`."""
    if getattr(sys, "frozen", False):
        exe = sys.executable
        return [exe] if os.path.basename(exe) == name else [exe, name]
    return [sys.executable, "-m", "tincapp", name]


def run_program(name, argv):
    module = PROGRAMS[name]
    if module is None:
        print(f"{name}: not available in tincapp {__version__} yet", file=sys.stderr)
        return 2
    return importlib.import_module(module).main(argv)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    name = os.path.basename(argv[0]) if argv else "tincapp"
    if name in PROGRAMS:
        return run_program(name, argv)
    args = argv[1:]
    if not args or args[0] in ("-h", "--help", "help"):
        sys.stdout.write(USAGE)
        return 0 if args else 1
    if args[0] in ("--version", "-V", "version"):
        print(f"tincapp {__version__}")
        return 0
    if args[0] in PROGRAMS:
        return run_program(args[0], args)
    print(f"tincapp: unknown program '{args[0]}'\n", file=sys.stderr)
    sys.stderr.write(USAGE)
    return 1


if __name__ == "__main__":
    sys.exit(main())
