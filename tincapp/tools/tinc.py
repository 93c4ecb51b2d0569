"""`tinc`: the command line that configures tinc networks and drives a running daemon
(tincapp.cli has the commands)."""
import sys

from tincapp.cli.commands import main as _main


def main(argv=None):
    return _main(sys.argv if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
