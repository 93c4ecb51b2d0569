"""sptps_keypair PRIVATE_FILE PUBLIC_FILE: write a new Ed25519 key pair in tinc's formats.

Behaves like tinc 1.1's sptps_keypair (same arguments, messages and exit codes), except that
both files are written atomically and the private key file is created with mode 0600.
"""
import getopt
import os
import sys

from tincapp import keys
from tincapp.errors import KeyFileError


def usage(prog):
    sys.stderr.write(
        f"Usage: {prog} [options] private_key_file public_key_file\n\n"
        "Valid options are:\n"
        "  --help  Display this help and exit.\n"
        "\n"
        "Report bugs to tinc@tinc-vpn.org.\n")


def main(argv):
    prog = argv[0]
    try:
        opts, args = getopt.gnu_getopt(argv[1:], "", ["help"])
    except getopt.GetoptError as e:
        sys.stderr.write(f"{prog}: {e}\n")
        usage(prog)
        return 1
    if opts:
        usage(prog)
        return 0
    if len(args) != 2:
        sys.stderr.write("Wrong number of arguments.\n")
        usage(prog)
        return 1
    key = keys.generate_private_key(os.urandom)
    try:
        keys.write_private_key(args[0], key)
        keys.write_public_key(args[1], key.public)
    except KeyFileError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    return 0
