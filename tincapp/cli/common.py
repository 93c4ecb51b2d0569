"""Global options, the network's paths, errors and file helpers shared by the CLI commands.

Messages and exit codes copy tincctl.c: an error prints one line to stderr and the command
returns 1. Every file the CLI changes is rewritten atomically (temporary file + rename), so a
failed command never leaves a half-written configuration file.
"""
import os
import sys
from dataclasses import dataclass, field

from tincapp.config import netconf, secrets

# Overrides of tinc's compiled-in CONFDIR/LOCALSTATEDIR; used by tests and relocated installs.
CONFDIR_ENV = "TINCAPP_CONFDIR"
LOCALSTATEDIR_ENV = "TINCAPP_LOCALSTATEDIR"


class CliError(Exception):
    """A command failed; message (if any) goes to stderr, the exit code is code."""

    def __init__(self, message="", code=1):
        super().__init__(message)
        self.message = message
        self.code = code


@dataclass
class Ctx:
    """What the global options decided, shared by every command of one invocation."""
    program: str                       # argv[0] as given (fsck prints it in hints)
    confbase: str
    confbase_given: bool
    netname: str | None
    confdir: str
    pidfile: str
    control_socket: str
    force: bool = False
    tty: bool = True
    option_args: list = field(default_factory=list)   # global options as given (for start)
    name: str | None = None            # our node name once known

    @property
    def tinc_conf(self):
        return f"{self.confbase}/tinc.conf"

    @property
    def hosts_dir(self):
        return f"{self.confbase}/hosts"

    def host_file(self, name):
        return f"{self.hosts_dir}/{name}"


def make_ctx(program, confbase, netname, pidfile, force, tty, option_args, env=None):
    """tinc's make_names(false) for the CLI."""
    env = os.environ if env is None else env
    confdir = env.get(CONFDIR_ENV, netconf.DEFAULT_CONFDIR)
    localstatedir = env.get(LOCALSTATEDIR_ENV, netconf.DEFAULT_LOCALSTATEDIR)
    if netname is None:
        netname = env.get("NETNAME")
    if netname in ("", "."):
        netname = None
    # COMPAT: tincctl's own check: no '/' or '\\', no leading '.'.
    if netname is not None and (any(c in netname for c in "/\\") or netname.startswith(".")):
        raise CliError("Invalid character in netname!")
    paths = netconf.resolve_paths(confbase, netname or ".", env={}, confdir=confdir,
                                  localstatedir=localstatedir, pidfile=pidfile, daemon=False)
    # COMPAT: tincctl keeps -c DIR as given (relative paths stay relative in messages).
    return Ctx(program=program, confbase=confbase if confbase is not None else paths.confbase,
               confbase_given=confbase is not None,
               netname=netname, confdir=confdir, pidfile=paths.pidfile,
               control_socket=paths.control_socket, force=force, tty=tty,
               option_args=list(option_args))


def err(message):
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def out_bytes(data):
    """Write raw bytes to stdout (file contents keep their exact bytes)."""
    sys.stdout.flush()
    buf = getattr(sys.stdout, "buffer", None)
    if buf is None:
        sys.stdout.write(data.decode("latin-1"))
    else:
        buf.write(data)
        buf.flush()


def read_stdin_bytes():
    buf = getattr(sys.stdin, "buffer", None)
    return buf.read() if buf is not None else sys.stdin.read().encode("latin-1")


def strerror(e):
    return e.strerror or str(e)


def fgets_lines(data):
    """Lines of bytes as fgets() returns them (split at b'\\n', each keeping it)."""
    parts = data.split(b"\n")
    lines = [p + b"\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def split_config_line(line):
    """tincctl's liberal parsing of one line: (variable, value), value rstripped of \\t\\r\\n ."""
    text = line.rstrip(b"\n") if isinstance(line, bytes) else line
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    n = len(text)
    for i, ch in enumerate(text):
        if ch in "\t =":
            n = i
            break
    value = text[n:].lstrip("\t ")
    if value.startswith("="):
        value = value[1:].lstrip("\t ")
    return text[:n], value.rstrip("\t\r\n ")


def replace_name(value):
    """tinc's replace_name(): $VAR / $HOST expansion, then check_id; None if invalid."""
    try:
        return netconf.expand_name(value)
    except ValueError as e:
        err(f"Invalid name for myself: {e}")
        return None


def get_my_name(ctx, verbose=True, key=None):
    """tincctl's get_my_name(): the first Name in tinc.conf (expanded), or None. An encrypted
    tinc.conf is read with `key` (a secrets.KeySource); CliError if that fails."""
    try:
        data = secrets.read_bytes(ctx.tinc_conf, key)
    except secrets.SecretsError as e:
        raise CliError(str(e)) from None
    except OSError as e:
        if verbose:
            err(f"Could not open {ctx.tinc_conf}: {strerror(e)}")
        return None
    for line in fgets_lines(data):
        var, value = split_config_line(line)
        if not value:
            continue
        if var.lower() == "name":
            return replace_name(value)
    if verbose:
        err(f"Could not find Name in {ctx.tinc_conf}.")
    return None


def need_name(ctx, key=None):
    if ctx.name is None:
        ctx.name = get_my_name(ctx, True, key)
        if ctx.name is None:
            raise CliError()
    return ctx.name


