"""The CLI's end of the control socket (tincctl.c connect_tincd, sendline, recvline).

Reads the PID file, checks the process is alive, connects to the UNIX socket next to the PID
file and does the cookie handshake with tincapp.control's helpers. Messages copy tinc's.
Not thread-safe; one connection per Client.
"""
import errno
import os
import socket

from tincapp import control
from tincapp.cli.common import err, strerror
from tincapp.errors import WireError

RECV_TIMEOUT_S = 30.0
MAX_LINE = 4096


class Client:
    def __init__(self, ctx):
        self.ctx = ctx
        self.sock = None
        self.pid = 0
        self.daemon_name = None
        self._buf = b""

    # --- connection ---------------------------------------------------------------------

    def read_pidfile(self):
        """tinc's read_pidfile(): PidFile or None (with the reason as an OSError or text)."""
        with open(self.ctx.pidfile, "r", encoding="latin-1") as f:
            return control.parse_pidfile(f.read(), self.ctx.pidfile)

    def connect(self, verbose=True):
        """tinc's connect_tincd(verbose): True when the handshake completed."""
        if self.sock is not None:
            return True
        try:
            pidfile = self.read_pidfile()
        except OSError as e:
            if verbose:
                err(f"Could not open pid file {self.ctx.pidfile}: {strerror(e)}")
            return False
        except WireError:
            if verbose:
                err(f"Could not open pid file {self.ctx.pidfile}: invalid contents")
            return False
        self.pid = pidfile.pid
        if self.pid == 0 or not _alive(self.pid):
            err(f"Could not find tincd running at pid {self.pid}")
            # COMPAT: clean up the stale socket and pid file.
            for path in (self.ctx.pidfile, self.ctx.control_socket):
                try:
                    os.unlink(path)
                except OSError:
                    pass
            return False
        path = self.ctx.control_socket
        if len(os.fsencode(path)) >= 108:
            err(f"UNIX socket filename {path} is too long!")
            return False
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(RECV_TIMEOUT_S)
            sock.connect(path)
        except OSError as e:
            if verbose:
                err(f"Cannot connect to UNIX socket {path}: {strerror(e)}")
            sock.close()
            return False
        self.sock = sock
        self._buf = b""
        self.send(control.client_greeting(pidfile.cookie).rstrip("\n"))
        first = self.recvline()
        if first is None or not _greeting_ok(first):
            if verbose:
                err("Cannot read greeting from control socket: Success")
            self.close()
            return False
        second = self.recvline()
        try:
            if second is None:
                raise WireError("no reply")
            self.daemon_name, self.pid = control.check_server_greeting(first, second)
        except WireError:
            if verbose:
                err("Could not fully establish control socket connection")
            self.close()
            return False
        return True

    def close(self):
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self._buf = b""

    # --- lines ----------------------------------------------------------------------------

    def send(self, line):
        """tinc's sendline(): False if the connection is gone."""
        try:
            self.sock.sendall((line + "\n").encode("latin-1"))
            return True
        except (OSError, AttributeError):
            return False

    def request(self, *fields):
        return self.send(" ".join(str(f) for f in (control.CONTROL, *fields)))

    def _fill(self, enough):
        """Read from the socket until enough(buffer) holds; False at EOF / error / timeout."""
        if self.sock is None:
            return False
        while not enough(self._buf):
            try:
                data = self.sock.recv(65536)
            except InterruptedError:
                continue
            except OSError:
                return False
            if not data:
                return False
            self._buf += data
        return True

    def recvline(self):
        """The next line without its newline, or None at EOF / error / timeout."""
        if not self._fill(lambda buf: b"\n" in buf):
            return None
        line, _, self._buf = self._buf.partition(b"\n")
        if len(line) >= MAX_LINE:
            return None
        return line.decode("latin-1")

    def recvdata(self, n):
        if not self._fill(lambda buf: len(buf) >= n):
            return None
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def recv_framed(self, req, max_len):
        """The payload of one streamed "18 <req> <len>" + len bytes record (LOG, PCAP), or
        None when the stream ends or breaks the framing."""
        line = self.recvline()
        if line is None:
            return None
        t = line.split()
        try:
            code, got, n = int(t[0]), int(t[1]), int(t[2])
        except (IndexError, ValueError):
            return None
        if code != control.CONTROL or got != req or not 0 <= n <= max_len:
            return None
        return self.recvdata(n)

    def lines(self):
        """Lines until EOF (the dump parsers stop at their terminator)."""
        while True:
            line = self.recvline()
            if line is None:
                return
            yield line

    def result(self, req):
        """Read "18 <req> <result>": the result as int, or None if the reply is not that."""
        line = self.recvline()
        if line is None:
            return None
        fields = line.split()
        try:
            code, got, value = int(fields[0]), int(fields[1]), int(fields[2])
        except (IndexError, ValueError):
            return None
        if code != control.CONTROL or got != int(req):
            return None
        return value


def _greeting_ok(line):
    # COMPAT: sscanf("%d %4095s %d") == 3 and code == 0.
    fields = line.split()
    try:
        return len(fields) >= 3 and int(fields[0]) == 0 and _c_int(fields[2])
    except ValueError:
        return False


def _c_int(text):
    digits = text.lstrip("+-")
    return bool(digits) and digits[0].isdigit()


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError as e:
        return e.errno != errno.ESRCH
    return True
