"""The `tinc` command: global options (tincctl.c parse_options), the command table, the
interactive shell, and exit codes (0 success, 1 failure, as tinc).

tincapp adds the global option --config-key-file (the key of files encrypted at rest, see
config/secrets.py; also $TINCAPP_CONFIG_KEY_FILE / $TINCAPP_CONFIG_KEY), loaded only when a
command meets an encrypted file, and the commands generate-config-key, encrypt-config and
decrypt-config."""
import getopt
import os
import shlex
import sys

from tincapp.cli import invite, join, offline, online
from tincapp.cli.common import CliError, err, make_ctx
from tincapp.cli.ctlclient import Client
from tincapp.config import secrets
from tincapp.version import __version__

PROT_MAJOR, PROT_MINOR = 17, 7

USAGE = """\
Usage: {0} [options] command

Valid options are:
  -b, --batch             Don't ask for anything (non-interactive mode).
  -c, --config=DIR        Read configuration options from DIR.
  -n, --net=NETNAME       Connect to net NETNAME.
      --pidfile=FILENAME  Read control cookie from FILENAME.
      --force             Force some commands to work despite warnings.
      --config-key-file=FILE  Key of encrypted configuration files ('-': read a line
                          from stdin); else $TINCAPP_CONFIG_KEY_FILE or $TINCAPP_CONFIG_KEY.
      --help              Display this help and exit.
      --version           Output version information and exit.

Valid commands are:
  init [name]                Create initial configuration files.
  get VARIABLE               Print current value of VARIABLE
  set VARIABLE VALUE         Set VARIABLE to VALUE
  add VARIABLE VALUE         Add VARIABLE with the given VALUE
  del VARIABLE [VALUE]       Remove VARIABLE [only ones with watching VALUE]
  start [tincd options]      Start tincd.
  stop                       Stop tincd.
  restart [tincd options]    Restart tincd.
  reload                     Partially reload configuration of running tincd.
  pid                        Show PID of currently running tincd.
  generate-keys              Generate a new Ed25519 public/private key pair.
  generate-ed25519-keys      Generate a new Ed25519 public/private key pair.
  dump                       Dump a list of one of the following things:
    [reachable] nodes        - all known nodes in the VPN
    edges                    - all known connections in the VPN
    subnets                  - all known subnets in the VPN
    connections              - all meta connections with ourself
    [di]graph                - graph of the VPN in dotty format
    invitations              - outstanding invitations
  info NODE|SUBNET|ADDRESS   Give information about a particular NODE, SUBNET or ADDRESS.
  purge                      Purge unreachable nodes
  debug N                    Set debug level
  retry                      Retry all outgoing connections
  disconnect NODE            Close meta connection with NODE
  pcap [snaplen]             Dump traffic in pcap format [up to snaplen bytes per packet]
  log [level]                Dump log output [up to the specified level]
  export                     Export host configuration of local node to standard output
  export-all                 Export all host configuration files to standard output
  import                     Import host configuration file(s) from standard input
  exchange                   Same as export followed by import
  exchange-all               Same as export-all followed by import
  invite NODE [...]          Generate an invitation for NODE
  join INVITATION            Join a VPN using an INVITATION
  network [NETNAME]          List all known networks, or switch to the one named NETNAME.
  fsck                       Check the configuration files for problems.
  sign [FILE]                Generate a signed version of a file.
  verify NODE [FILE]         Verify that a file was signed by the given NODE.
  generate-config-key [FILE] Generate a key for encrypted configuration files.
  encrypt-config [--all]     Encrypt the private keys (--all: every config file) in place.
  decrypt-config             Decrypt every encrypted configuration file in place.

Report bugs to tinc@tinc-vpn.org.
"""

VERSION = f"""\
tinc version {__version__} (tincapp, protocol {PROT_MAJOR}.{PROT_MINOR})
Features:

tincapp is a reimplementation of tinc 1.1; tinc is
Copyright (C) 1998-2018 Ivo Timmermans, Guus Sliepen and others.
"""

NOT_IMPLEMENTED = ("top", "generate-rsa-keys")


class Session:
    """One invocation (or one interactive shell): the context and its control connection."""

    def __init__(self, ctx, program, config_key=None):
        self.ctx = ctx
        self.program = program
        self.client = Client(ctx)
        # Loaded when first needed, so a command that meets no encrypted file never asks.
        self.config_key = config_key if config_key is not None else secrets.KeySource()

    def try_help(self):
        return CliError(f"Try `{self.program} --help' for more information.")

    def run(self, argv):
        """Run one command (argv[0] = command word); returns the exit code."""
        word = argv[0].lower()
        args = argv[1:]
        ctx, client, key = self.ctx, self.client, self.config_key
        table = {
            "start": lambda: online.cmd_start(ctx, args, client),
            "stop": lambda: online.cmd_stop(ctx, args, client),
            "restart": lambda: online.cmd_restart(ctx, args, client),
            "reload": lambda: online.cmd_reload(ctx, args, client),
            "dump": lambda: online.cmd_dump(ctx, args, client),
            "list": lambda: online.cmd_dump(ctx, args, client),
            "purge": lambda: online.cmd_purge(ctx, args, client),
            "debug": lambda: online.cmd_debug(ctx, args, client),
            "retry": lambda: online.cmd_retry(ctx, args, client),
            "connect": lambda: online.cmd_connect(ctx, args, client),
            "disconnect": lambda: online.cmd_disconnect(ctx, args, client),
            "pcap": lambda: online.cmd_pcap(ctx, args, client),
            "log": lambda: online.cmd_log(ctx, args, client),
            "pid": lambda: online.cmd_pid(ctx, args, client),
            "info": lambda: online.cmd_info(ctx, args, client),
            "config": lambda: offline.cmd_config(ctx, argv, Client, key),
            "add": lambda: offline.cmd_config(ctx, argv, Client, key),
            "del": lambda: offline.cmd_config(ctx, argv, Client, key),
            "get": lambda: offline.cmd_config(ctx, argv, Client, key),
            "set": lambda: offline.cmd_config(ctx, argv, Client, key),
            "init": lambda: offline.cmd_init(ctx, args),
            "generate-keys": lambda: offline.cmd_generate_ed25519_keys(ctx, args, key),
            "generate-ed25519-keys": lambda: offline.cmd_generate_ed25519_keys(ctx, args, key),
            "help": lambda: self.usage(),
            "version": lambda: self.version(args),
            "export": lambda: offline.cmd_export(ctx, args, key),
            "export-all": lambda: offline.cmd_export_all(ctx, args, key),
            "import": lambda: offline.cmd_import(ctx, args),
            "exchange": lambda: offline.cmd_exchange(ctx, args, key),
            "exchange-all": lambda: offline.cmd_exchange_all(ctx, args, key),
            "network": lambda: offline.cmd_network(ctx, args, self.switch_network),
            "fsck": lambda: offline.cmd_fsck(ctx, args, key),
            "sign": lambda: offline.cmd_sign(ctx, args, key=key),
            "verify": lambda: offline.cmd_verify(ctx, args, key),
            "generate-config-key": lambda: offline.cmd_generate_config_key(ctx, args),
            "encrypt-config": lambda: offline.cmd_encrypt_config(ctx, args, Client, key),
            "decrypt-config": lambda: offline.cmd_decrypt_config(ctx, args, Client, key),
            "edit": lambda: invite.cmd_edit(ctx, args, client),
            "invite": lambda: invite.cmd_invite(ctx, args, client, config_key=key),
            "join": lambda: join.cmd_join(ctx, args),
        }
        if word in NOT_IMPLEMENTED:
            err(f"The command `{argv[0]}' is not implemented by tincapp yet.")
            return 1
        command = table.get(word)
        if command is None:
            err(f"Unknown command `{argv[0]}'.")
            err(f"Try `{self.program} --help' for more information.")
            return 1
        try:
            return command()
        except CliError as e:
            if e.message:
                err(e.message.replace("`tinc --help'", f"`{self.program} --help'"))
            return e.code
        finally:
            sys.stdout.flush()

    def usage(self):
        sys.stdout.write(USAGE.format(self.program))
        return 0

    def version(self, args):
        if args:
            raise CliError("Too many arguments!")
        sys.stdout.write(VERSION)
        return 0

    def switch_network(self, name):
        if name != "." and (not name or name.startswith(".")
                            or any(c in name for c in "/\\")
                            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)):
            raise CliError("Invalid character in netname!")
        if name != "." and any(c in name for c in " $%<>:`\"|?*"):
            err("Warning: unsafe character in netname!")
        self.client.close()
        old = self.ctx
        self.ctx = make_ctx(old.program, None, None if name == "." else name, None, old.force,
                            old.tty, old.option_args, env={**os.environ, "NETNAME": "."})
        self.client = Client(self.ctx)
        return 0

    def shell(self):
        """tinc's interactive shell, without readline: one command per line."""
        result = 0
        while True:
            if self.ctx.tty:
                sys.stderr.write(f"{'tinc.' + self.ctx.netname if self.ctx.netname else 'tinc'}> ")
                sys.stderr.flush()
            line = sys.stdin.readline()
            if not line:
                break
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if not words:
                continue
            if words[0].lower() in ("exit", "quit"):
                break
            result = self.run(words)
        return result


_LONG_WITH_ARG = ("config", "net", "pidfile", "config-key-file")


def _expand_config_prefix(args):
    """args with every abbreviation of --config spelled out.

    COMPAT: tinc takes any prefix of --config ("--conf DIR"); tincapp's --config-key-file
    makes such prefixes ambiguous to getopt, so they are expanded here first (only in the
    options before the command word, as getopt would see them).
    """
    out = list(args)
    i = 0
    while i < len(out):
        arg = out[i]
        if arg == "--" or not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, _ = arg[2:].partition("=")
            if name and "config".startswith(name):
                out[i] = "--config" + arg[2 + len(name):]
                name = "config"
            takes = [n for n in _LONG_WITH_ARG if n == name] or \
                [n for n in _LONG_WITH_ARG if n.startswith(name)]
            if not eq and len(takes) == 1:
                i += 1              # the option's argument, whatever it looks like
        else:
            for j, ch in enumerate(arg[1:], 1):
                if ch in "cn":
                    if j == len(arg) - 1:
                        i += 1      # "-c DIR": DIR is the next word
                    break
        i += 1
    return out


def parse_args(argv):
    """(options dict, index of the command) like getopt_long("+bc:n:"); CliError if bad."""
    program = argv[0] if argv else "tinc"
    try:
        opts, rest = getopt.getopt(_expand_config_prefix(argv[1:]), "bc:n:",
                                   ["batch", "config=", "net=", "help", "version",
                                    "pidfile=", "force", "config-key-file="])
    except getopt.GetoptError as e:
        if e.opt and len(e.opt) == 1 and "requires argument" in e.msg:
            err(f"{program}: option requires an argument -- '{e.opt}'")
        elif e.opt and len(e.opt) == 1:
            err(f"{program}: invalid option -- '{e.opt}'")
        elif "requires argument" in e.msg:
            err(f"{program}: option '--{e.opt}' requires an argument")
        else:
            err(f"{program}: unrecognized option '--{e.opt}'")
        raise CliError(f"Try `{program} --help' for more information.") from None
    o = {"batch": False, "config": None, "net": None, "help": False, "version": False,
         "pidfile": None, "force": False, "config-key-file": None}
    for name, value in opts:
        if name in ("-b", "--batch"):
            o["batch"] = True
        elif name in ("-c", "--config"):
            o["config"] = value
        elif name in ("-n", "--net"):
            o["net"] = value
        elif name == "--pidfile":
            o["pidfile"] = value
        elif name == "--config-key-file":
            o["config-key-file"] = value
        else:
            o[name.lstrip("-")] = True
    return o, len(argv) - len(rest)


def main(argv=None):
    argv = list(sys.argv if argv is None else argv)
    program = argv[0] if argv else "tinc"
    try:
        o, optind = parse_args(argv)
        tty = not o["batch"] and _isatty(sys.stdin) and _isatty(sys.stdout)
        ctx = make_ctx(program, o["config"], o["net"], o["pidfile"], o["force"], tty,
                       argv[1:optind])
    except CliError as e:
        if e.message:
            err(e.message)
        return e.code
    config_key = secrets.KeySource(o["config-key-file"])
    if config_key.reads_stdin and optind >= len(argv) and not (o["help"] or o["version"]):
        # The shell reads commands from stdin: take the key's line first, not mid-session.
        try:
            config_key.load()
        except secrets.SecretsError as e:
            err(str(e))
            return 1
    session = Session(ctx, program, config_key)
    if o["version"]:
        sys.stdout.write(VERSION)
        return 0
    if o["help"]:
        return session.usage()
    try:
        if optind >= len(argv):
            return session.shell()
        return session.run(argv[optind:])
    finally:
        session.client.close()


def _isatty(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
