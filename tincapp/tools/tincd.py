"""`tincd`: the node daemon's command line (tinc's src/tincd.c).

Parses tincd's options, loads the configuration (errors end the program with exit status 1
before detaching), sets up logging, detaches unless -D, and runs io.daemon.Daemon. With
--supervise (tincapp's own option) the detached process is io.supervisor instead, which runs
the daemon as its child with the same options and restarts it when it dies.
The configuration key for files encrypted at rest (config/secrets.py) is read before
detaching, from --config-key-file, $TINCAPP_CONFIG_KEY_FILE or $TINCAPP_CONFIG_KEY; a missing,
wrong or unusable key, or an encrypted file that does not open, ends the program with exit
status 1 before anything is set up.
"""
import asyncio
import logging
import logging.handlers
import os
import sys

from tincapp.config import netconf, secrets
from tincapp.errors import ConfigError
from tincapp.io import supervisor
from tincapp.version import __version__

USAGE = """\
Usage: tincd [option]...

  -c, --config=DIR              Read configuration options from DIR.
  -D, --no-detach               Don't fork and detach.
  -d, --debug[=LEVEL]           Increase debug level or set it to LEVEL.
  -n, --net=NETNAME             Connect to net NETNAME.
  -L, --mlock                   Lock tinc into main memory.
      --logfile[=FILENAME]      Write log entries to a logfile.
  -s  --syslog                  Use syslog instead of stderr with --no-detach.
      --pidfile=FILENAME        Write PID and control socket cookie to FILENAME.
      --bypass-security         Disables meta protocol security, for debugging.
  -o, --option[HOST.]KEY=VALUE  Set global/host configuration value.
  -R, --chroot                  chroot to NET dir at startup.
  -U, --user=USER               setuid to given USER at startup.
      --supervise               Run tincd as a child process; restart it when it dies.
      --respawn-threshold=SECONDS  A run shorter than this is a crash (default 60).
      --respawn-timeout=SECONDS    Wait before the first restart, doubled per crash in a
                                   row (default 1, at most 60).
      --respawn-retry=N            Give up after N crashes in a row (default 5; 0: never).
      --config-key-file=FILE    Read the key of encrypted configuration files from
                                FILE ('-': one line from stdin).
      --help                    Display this help and exit.
      --version                 Output version information and exit.

Encrypted configuration (`tinc encrypt-config`): without --config-key-file the key comes
from $TINCAPP_CONFIG_KEY_FILE (a key file) or $TINCAPP_CONFIG_KEY (the key, 64 hex digits).
"""

_LONG_WITH_ARG = {"config": "c", "net": "n", "option": "o", "user": "U", "pidfile": None,
                  "respawn-threshold": None, "respawn-timeout": None, "respawn-retry": None,
                  "config-key-file": None}
_LONG_OPTIONAL = {"debug": "d", "logfile": None}
_LONG_FLAGS = {"no-detach": "D", "mlock": "L", "syslog": "s", "chroot": "R",
               "bypass-security": None, "help": None, "version": None, "supervise": None}
# tincapp's own options: the supervisor consumes them, the daemon it runs never sees them.
_SUPERVISOR_OPTIONS = {"supervise", "respawn-threshold", "respawn-timeout", "respawn-retry"}


class UsageError(Exception):
    pass


class Options:
    def __init__(self):
        self.confbase = None
        self.netname = None
        self.detach = True
        self.debug_level = None
        self.debug_increments = 0
        self.logfile = False          # False: none; None: default path; str: the file
        self.syslog = False
        self.pidfile = None
        self.config_key_file = None   # --config-key-file (None: environment, else none)
        self.options = []
        self.user = None
        self.chroot = False
        self.mlock = False
        self.help = False
        self.version = False
        self.supervise = False
        self.respawn_threshold_s = supervisor.DEFAULT_THRESHOLD_S
        self.respawn_timeout_s = supervisor.DEFAULT_TIMEOUT_S
        self.respawn_retry = supervisor.DEFAULT_RETRY
        self.daemon_args = []         # argv without the supervisor's options, for the child


def parse_args(argv):
    """tincd's getopt_long("c:DLd::n:so:RU:") with its long options."""
    o = Options()
    args = list(argv)
    i = 0
    supervisor_args = set()       # indices into args the supervisor consumed

    def take(name, inline):
        nonlocal i
        if inline is not None:
            return inline
        if i >= len(args):
            raise UsageError(f"option requires an argument -- '{name}'")
        value = args[i]
        i += 1
        return value

    def apply(key, value):
        if key in ("c", "config"):
            o.confbase = value
        elif key in ("n", "net"):
            o.netname = value
        elif key in ("o", "option"):
            o.options.append(value)
        elif key in ("U", "user"):
            o.user = value
        elif key == "pidfile":
            o.pidfile = value
        elif key == "config-key-file":
            o.config_key_file = value
        elif key in ("d", "debug"):
            if value is None:
                o.debug_increments += 1
            else:
                try:
                    o.debug_level = int(value)
                except ValueError:
                    raise UsageError(f"Invalid debug level {value!r}") from None
        elif key == "logfile":
            o.logfile = value if value else None
        elif key in ("D", "no-detach"):
            o.detach = False
        elif key in ("L", "mlock"):
            o.mlock = True
        elif key in ("s", "syslog"):
            o.syslog = True
        elif key in ("R", "chroot"):
            o.chroot = True
        elif key == "bypass-security":
            pass
        elif key == "help":
            o.help = True
        elif key == "version":
            o.version = True
        elif key == "supervise":
            o.supervise = True
        elif key in ("respawn-threshold", "respawn-timeout", "respawn-retry"):
            try:
                number = int(value) if key == "respawn-retry" else float(value)
            except ValueError:
                number = -1
            if not number >= 0 or number == float("inf"):
                raise UsageError(f"Invalid value for --{key}: {value!r}")
            if key == "respawn-threshold":
                o.respawn_threshold_s = number
            elif key == "respawn-timeout":
                o.respawn_timeout_s = number
            else:
                o.respawn_retry = number

    while i < len(args):
        start = i
        arg = args[i]
        i += 1
        if arg == "--":
            break
        if arg.startswith("--"):
            name, eq, inline = arg[2:].partition("=")
            if not eq:
                inline = None
            if name in _SUPERVISOR_OPTIONS:
                supervisor_args.add(start)
            if name in _LONG_WITH_ARG:
                apply(name, take(name, inline))
                if name in _SUPERVISOR_OPTIONS:
                    supervisor_args.update(range(start, i))
            elif name in _LONG_OPTIONAL:
                apply(name, inline)
            elif name in _LONG_FLAGS:
                if inline is not None:
                    raise UsageError(f"option '--{name}' doesn't allow an argument")
                apply(name, None)
            else:
                raise UsageError(f"unrecognized option '{arg}'")
        elif arg.startswith("-") and len(arg) > 1:
            j = 1
            while j < len(arg):
                ch = arg[j]
                rest = arg[j + 1:] or None
                if ch in "cnoU":
                    apply(ch, take(ch, rest))
                    break
                if ch == "d":
                    apply("d", rest)
                    break
                if ch in "DLsR":
                    apply(ch, None)
                    j += 1
                    continue
                raise UsageError(f"invalid option -- '{ch}'")
        else:
            raise UsageError(f"unrecognized argument '{arg}'")
    if i < len(args):
        raise UsageError(f"unrecognized argument '{args[i]}'")
    o.daemon_args = [a for k, a in enumerate(args) if k not in supervisor_args]
    return o


class _TincFormatter(logging.Formatter):
    def format(self, record):
        text = f"{self.formatTime(record, '%Y-%m-%d %H:%M:%S')} tinc: {record.getMessage()}"
        if record.exc_info:
            # An exception that reached the event loop's handler: keep where it came from.
            text += "\n" + self.formatException(record.exc_info)
        return text


def reopen_log_files():
    """COMPAT: tinc's HUP handler reopens its log file (reopenlogger), so that logrotate can
    move it away; the daemon and the supervisor both call this on HUP."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler) and handler.stream is not None:
            handler.acquire()
            try:
                old, handler.stream = handler.stream, handler._open()
                old.close()
            except OSError as e:
                logging.getLogger("tincd").error("Could not reopen log file %s: %s",
                                                 handler.baseFilename, e)
            finally:
                handler.release()


def setup_logging(opts, paths, level):
    root = logging.getLogger()
    root.handlers.clear()
    if opts.logfile is not False:
        handler = logging.FileHandler(opts.logfile or paths.logfile)
        handler.setFormatter(_TincFormatter())
    elif opts.detach or opts.syslog:
        try:
            handler = logging.handlers.SysLogHandler(address="/dev/log")
            handler.setFormatter(logging.Formatter(f"{paths.identname}[%(process)d]: "
                                                   "%(message)s"))
        except OSError:
            handler = logging.FileHandler(paths.logfile)
            handler.setFormatter(_TincFormatter())
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_TincFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if level >= 5 else logging.INFO)


def detach():
    """Double fork, new session, stdio to /dev/null (tinc's daemon())."""
    if os.fork() > 0:
        os._exit(0)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    fd = os.open(os.devnull, os.O_RDWR)
    for target in (0, 1, 2):
        os.dup2(fd, target)
    if fd > 2:
        os.close(fd)


def drop_privileges(user):
    """-U USER: tinc's drop_privs(), after the sockets and the PID file are set up."""
    import pwd
    pw = pwd.getpwnam(user)
    os.initgroups(user, pw.pw_gid)
    os.setgid(pw.pw_gid)
    os.setuid(pw.pw_uid)


def supervise(opts):
    """--supervise: run tincd with the same options (minus the supervisor's) as a child,
    restart it per the respawn options; the configuration was checked before detaching."""
    args = list(opts.daemon_args)
    if opts.detach:
        # The supervisor detached already; the daemon stays its child and logs where a
        # detached tincd would (a log file when one was given, syslog otherwise).
        args.insert(0, "-D")
        if opts.logfile is False and not opts.syslog:
            args.insert(1, "--syslog")
    policy = supervisor.RespawnPolicy(opts.respawn_threshold_s, opts.respawn_timeout_s,
                                      opts.respawn_retry)
    logging.getLogger("tincd").info(
        "Supervising tincd (respawn threshold %g s, timeout %g s, retry %d)",
        policy.threshold_s, policy.timeout_s, policy.retry)
    return supervisor.Supervisor(supervisor.daemon_command(args), policy,
                                 on_hup=reopen_log_files).run()


async def _run(daemon, user):
    from tincapp.io.daemon import DaemonError
    try:
        await daemon.setup()
    except DaemonError as e:
        logging.getLogger("tincd").error("%s", e)
        return 1
    try:
        if user:
            drop_privileges(user)
        await daemon.wait_stopped()
    finally:
        await daemon.shutdown()
    return 0


def main(argv):
    prog = os.path.basename(argv[0]) if argv else "tincd"
    try:
        opts = parse_args(argv[1:])
    except UsageError as e:
        print(f"{prog}: {e}\nTry `{prog} --help' for more information.", file=sys.stderr)
        return 1
    if opts.help:
        sys.stdout.write(USAGE)
        return 0
    if opts.version:
        print(f"tinc version 1.1 (tincapp {__version__})\nProtocol 17.7")
        return 0
    if opts.mlock:
        print(f"{prog}: warning: --mlock is not supported by tincapp; continuing",
              file=sys.stderr)
    if opts.chroot:
        print(f"{prog}: --chroot is not supported by tincapp", file=sys.stderr)
        return 1
    if opts.user:
        import pwd
        try:
            pwd.getpwnam(opts.user)
        except KeyError:
            print(f"{prog}: unknown user {opts.user}", file=sys.stderr)
            return 1
    logging.basicConfig(stream=sys.stderr, format="%(message)s", level=logging.WARNING)
    if opts.supervise and opts.config_key_file == secrets.STDIN_NAME:
        # Each restarted daemon reads the key again, and stdin is gone by then.
        print(f"{prog}: --config-key-file=- cannot be used with --supervise; use a key file "
              f"or ${secrets.KEY_ENV}", file=sys.stderr)
        return 1
    try:
        config_key = secrets.KeySource(opts.config_key_file)
        if config_key.configured:
            # Now, not at the first encrypted file: stdin is gone after detaching, and a bad
            # key must stop the start even if only a later reload would need it.
            config_key.load()
        paths = netconf.resolve_paths(opts.confbase, opts.netname, pidfile=opts.pidfile,
                                      logfile=opts.logfile or None, config_key=config_key)
        config = netconf.load_network(paths, opts.options, unknown="warn")
    except (ConfigError, ValueError) as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return 1
    level = opts.debug_level if opts.debug_level is not None else (config.log_level or 0)
    level += opts.debug_increments
    if opts.detach:
        detach()
    setup_logging(opts, paths, level)
    if opts.supervise:
        return supervise(opts)
    logging.getLogger("tincd").info("tincd %s (tincapp) starting, debug level %d",
                                    "1.1", level)
    from tincapp.io.daemon import Daemon
    daemon = Daemon(config, debug_level=level, options=tuple(opts.options))
    try:
        return asyncio.run(_run(daemon, opts.user))
    except KeyboardInterrupt:
        return 0
