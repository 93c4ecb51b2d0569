"""Run pairs of sptps_test programs (ours, our frozen binary, real tinc's) over loopback.

An implementation is a command prefix: ours is [python, -m, tincapp], the frozen binary is
[dist/tincapp], tinc's is [TINC_BIN_DIR]. Each test starts a listener, waits for its
"Listening on PORT..." line, starts an initiator, pushes data through both directions and reads
it back from the other side's stdout. Every process is killed at the end.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FROZEN = os.path.join(REPO, "dist", "tincapp")


class Impl:
    """How to run one implementation's sptps_* programs."""

    def __init__(self, name, prefix=None, bin_dir=None):
        self.name = name
        self.prefix = prefix
        self.bin_dir = bin_dir

    def cmd(self, program, *args):
        if self.bin_dir:
            return [os.path.join(self.bin_dir, program), *args]
        return [*self.prefix, program, *args]

    def __repr__(self):
        return self.name


OURS = Impl("tincapp", prefix=[sys.executable, "-m", "tincapp"])
FROZEN_IMPL = Impl("frozen", prefix=[FROZEN])


def tinc_impl():
    """Real tinc's programs from TINC_BIN_DIR, or None."""
    d = os.environ.get("TINC_BIN_DIR")
    if d and os.path.exists(os.path.join(d, "sptps_test")):
        return Impl(f"tinc({os.path.basename(d.rstrip('/'))})", bin_dir=d)
    return None


def keypair(impl, directory, name):
    priv = os.path.join(directory, f"{name}.priv")
    pub = os.path.join(directory, f"{name}.pub")
    subprocess.run(impl.cmd("sptps_keypair", priv, pub), check=True, timeout=30,
                   stdin=subprocess.DEVNULL)
    return priv, pub


class Proc:
    """A running sptps_test with non-blocking reads of its stdout and stderr."""

    def __init__(self, argv):
        self.argv = argv
        # Own session: stop() kills the whole group. The frozen binary is a bootloader that
        # forks the real program, and killing only the bootloader would orphan it.
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        self.out = b""
        self.err = b""

    def _pump(self, timeout):
        fds = [f for f in (self.p.stdout, self.p.stderr) if f and not f.closed]
        ready, _, _ = select.select(fds, [], [], timeout)
        for f in ready:
            chunk = os.read(f.fileno(), 65536)
            if f is self.p.stdout:
                self.out += chunk
            else:
                self.err += chunk
        return bool(ready)

    def wait_for(self, what, stream="err", timeout=15):
        """Read until `what` (bytes or compiled regex) shows up; return the match."""
        deadline = time.monotonic() + timeout
        while True:
            buf = self.err if stream == "err" else self.out
            if isinstance(what, bytes):
                if what in buf:
                    return what
            else:
                m = what.search(buf)
                if m:
                    return m
            left = deadline - time.monotonic()
            if left <= 0 or (self.p.poll() is not None and not self._pump(0)):
                raise AssertionError(
                    f"{self.argv[0]}... never printed {what!r} on std{stream}; "
                    f"exit={self.p.poll()} stdout={self.out[-300:]!r} stderr={self.err[-600:]!r}")
            self._pump(min(left, 0.2))

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait(timeout=10)
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            try:
                f.close()
            except OSError:
                pass


LISTENING = re.compile(rb"Listening on (\d+)\.\.\.")
# tinc 1.1pre18 prints only "Listening..." (no port), so exchange() chooses the port itself.
LISTENING_ANY = re.compile(rb"Listening( on \d+)?\.\.\.")


def free_port(datagram, host="127.0.0.1"):
    kind = socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def exchange(listener_impl, initiator_impl, keys_dir, keys_impl, datagram, lines=3,
             extra_args=(), host="127.0.0.1"):
    """Run one session; return (listener stdout, initiator stdout). Raises on failure."""
    a_priv, a_pub = keypair(keys_impl, keys_dir, "a")
    b_priv, b_pub = keypair(keys_impl, keys_dir, "b")
    mode = ["-d"] if datagram else []
    port = free_port(datagram, host)
    listener = Proc(listener_impl.cmd("sptps_test", *mode, *extra_args, a_priv, b_pub,
                                      str(port)))
    initiator = None
    try:
        listener.wait_for(LISTENING_ANY)
        initiator = Proc(initiator_impl.cmd("sptps_test", *mode, *extra_args, b_priv, a_pub,
                                            host, str(port)))
        to_listener = [f"from {initiator_impl} line {i}\n".encode() for i in range(lines)]
        to_initiator = [f"from {listener_impl} line {i}\n".encode() for i in range(lines)]
        # Both programs read stdin only once the handshake is done; write one line at a time
        # and wait for it so that each read() is one record (as with a person typing).
        for a, b in zip(to_listener, to_initiator):
            initiator.send(a)
            listener.wait_for(a, stream="out")
            listener.send(b)
            initiator.wait_for(b, stream="out")
        return listener.out, initiator.out
    finally:
        listener.stop()
        if initiator:
            initiator.stop()
