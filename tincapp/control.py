"""The control protocol (spec control-and-cli.md 1-2), sans-I/O: the PID file line, the cookie
handshake and CONTROL requests, for both ends (the daemon's ControlServerConnection and the CLI's
client helpers). Text lines, no SPTPS.

    client -> daemon   0 ^<cookie> 0
    daemon -> client   0 <daemon name> 17.7
    daemon -> client   4 0 <pid>
    client -> daemon   18 <type> [args]          (any number)
    daemon -> client   18 <type> ...             (replies; dumps end with a bare "18 <type>")

No I/O, no clock. Not thread-safe. The daemon turns ControlRequest events into actions and
sends replies through reply()/end_dump().
"""
import enum
import hmac
import re
from dataclasses import dataclass

from tincapp.errors import WireError

PROT_MAJOR = 17
PROT_MINOR = 7
ID = 0
ACK = 4
CONTROL = 18
CONTROL_VERSION = 0
COOKIE_LEN = 64                      # hex characters (32 random bytes)
MAX_LINE = 4096


class Ctl(enum.IntEnum):
    """Control request types (tinc's REQ_* in control_common.h)."""
    STOP = 0
    RELOAD = 1
    RESTART = 2
    DUMP_NODES = 3
    DUMP_EDGES = 4
    DUMP_SUBNETS = 5
    DUMP_CONNECTIONS = 6
    DUMP_GRAPH = 7
    PURGE = 8
    SET_DEBUG = 9
    RETRY = 10
    CONNECT = 11
    DISCONNECT = 12
    DUMP_TRAFFIC = 13
    PCAP = 14
    LOG = 15
    # tincapp's own, far from tinc's numbers (real tincd answers "18 100 -1").
    DUMP_TUNNELS = 100


INVALID = -1                          # "18 -1": not implemented / unknown


# --- PID file -----------------------------------------------------------------------------

#  <pid> <cookie: 64 uppercase hex> <address> port <port>\n
_PIDFILE = re.compile(r"^(\d+) ([0-9A-Fa-f]{64}) (\S+) port (\S+)\s*$")


@dataclass(frozen=True)
class PidFile:
    pid: int
    cookie: str
    address: str
    port: str

    def format(self):
        return f"{self.pid} {self.cookie} {self.address} port {self.port}\n"


def make_cookie(rng):
    """A fresh cookie: 32 random bytes as 64 uppercase hex digits (rng(n) -> bytes)."""
    return rng(32).hex().upper()


def parse_pidfile(text, source="pid file"):
    m = _PIDFILE.match(text.split("\n", 1)[0])
    if not m:
        raise WireError(f"{source}: not a tinc PID file line: {text[:80]!r}")
    return PidFile(int(m.group(1)), m.group(2), m.group(3), m.group(4))


# --- the daemon's side of one control connection ------------------------------------------

class State(enum.Enum):
    AWAIT_ID = 1          # the client's "0 ^cookie 0"
    READY = 2             # CONTROL requests
    CLOSED = 3


@dataclass(frozen=True)
class ControlRequest:
    type: int             # a Ctl value, or another number (answered with 18 -1 by the daemon)
    args: tuple


class ControlServerConnection:
    """One control client. Feed it lines with receive_line(); it returns ControlRequest events
    (after the handshake) and queues reply lines. A wrong cookie or a non-CONTROL request
    closes it (closed == True), like tinc, without a message."""

    def __init__(self, cookie, daemon_name, pid):
        self._cookie = cookie
        self._name = daemon_name
        self._pid = pid
        self.state = State.AWAIT_ID
        self._out = []

    @property
    def closed(self):
        return self.state is State.CLOSED

    def lines_to_send(self):
        out, self._out = self._out, []
        return out

    def reply(self, *fields):
        """Queue "18 <fields...>"."""
        self._out.append(" ".join(str(f) for f in (CONTROL, *fields)) + "\n")

    def reply_line(self, line):
        """Queue a reply line formatted elsewhere (the dump lines of mesh.graph_dot)."""
        if not line.startswith(f"{CONTROL} "):
            raise ValueError(f"not a control reply: {line[:40]!r}")
        self._out.append(line.rstrip("\n") + "\n")

    def end_dump(self, type):
        self.reply(int(type))

    def receive_line(self, line):
        """Called for each line from the client (without its newline)."""
        if self.state is State.CLOSED:
            return []
        if len(line) > MAX_LINE:
            self.state = State.CLOSED
            return []
        fields = line.split()
        if self.state is State.AWAIT_ID:
            # COMPAT: "0 ^<cookie> <version>"; tinc treats a bad cookie like a bad name.
            if (len(fields) < 2 or fields[0] != str(ID) or not fields[1].startswith("^")
                    or not hmac.compare_digest(fields[1][1:].encode(), self._cookie.encode())):
                self.state = State.CLOSED
                return []
            self._out.append(f"{ID} {self._name} {PROT_MAJOR}.{PROT_MINOR}\n")
            self._out.append(f"{ACK} {CONTROL_VERSION} {self._pid}\n")
            self.state = State.READY
            return []
        if not fields or fields[0] != str(CONTROL):
            self.state = State.CLOSED
            return []
        try:
            type = int(fields[1])
        except (IndexError, ValueError):
            self.reply(INVALID)
            return []
        return [ControlRequest(type, tuple(fields[2:]))]

    def close(self):
        self.state = State.CLOSED


# --- LOG streaming (spec control-and-cli.md 2, tinc's logger.c) -----------------------------

DEBUG_UNSET = -1                      # "the daemon's current level"
DEBUG_SCARY_THINGS = 10
LOG_TEXT_MAX = 1023                   # COMPAT: logger.c formats into char[1024]; the CLI
                                      # rejects longer frames

_SGR = {"red": "\x1b[31;1m", "green": "\x1b[32;1m", "yellow": "\x1b[33;1m",
        "blue": "\x1b[34;1m", "magenta": "\x1b[35;1m", "cyan": "\x1b[36;1m",
        "white": "\x1b[37;1m", "gray": "\x1b[90m", "reset": "\x1b[0m"}
# COMPAT: logger.c's priorities[] (syslog priority -> name, colour).
PRIORITY_DISPLAY = {"EMERGENCY": "magenta", "ALERT": "magenta", "CRITICAL": "magenta",
                    "ERROR": "red", "WARNING": "yellow", "NOTICE": "cyan", "INFO": "green",
                    "DEBUG": "blue"}


def parse_log_request(args):
    """(level, color) from the arguments of "18 15 <level> <color>". COMPAT: sscanf leaves
    missing or malformed numbers at 0; the level is clamped to -1..10."""
    def num(i):
        try:
            return int(args[i])
        except (IndexError, ValueError):
            return 0
    level = max(DEBUG_UNSET, min(DEBUG_SCARY_THINGS, num(0)))
    return level, bool(num(1))


def format_log_text(when, priority, message, color):
    """logger.c's format_pretty: "<YYYY-mm-dd HH:MM:SS> <PRIORITY padded to 7> <message>",
    with ANSI colours when asked; `when` is already formatted by the caller (no clock here)."""
    c = PRIORITY_DISPLAY.get(priority, "white")
    if color:
        text = f"{_SGR['gray']}{when} {_SGR[c]}{priority:<7}{_SGR['reset']} {message}"
    else:
        text = f"{when} {priority:<7} {message}"
    return text.encode("utf-8", "replace")[:LOG_TEXT_MAX]


def log_frame(text):
    """One streamed log record:  18 15 <len>\n<len bytes, no newline>."""
    return f"{CONTROL} {int(Ctl.LOG)} {len(text)}\n".encode() + text


# --- the client's side ----------------------------------------------------------------------

def client_greeting(cookie):
    return f"{ID} ^{cookie} {CONTROL_VERSION}\n"


def check_server_greeting(first, second):
    """(daemon name, pid) from the daemon's two handshake lines, or WireError."""
    f1, f2 = first.split(), second.split()
    if len(f1) < 2 or f1[0] != str(ID):
        raise WireError(f"unexpected greeting from the daemon: {first.strip()!r}")
    if len(f2) != 3 or f2[0] != str(ACK) or f2[1] != str(CONTROL_VERSION):
        raise WireError(f"unexpected control protocol reply: {second.strip()!r}")
    try:
        return f1[1], int(f2[2])
    except ValueError:
        raise WireError(f"bad PID in control reply: {second.strip()!r}") from None


def control_request(type, *args):
    return " ".join(str(x) for x in (CONTROL, int(type), *args)) + "\n"
