"""sptps_speed: the SPTPS benchmark of tinc 1.1, run against our own crypto and SptpsSession.

Same tests in the same order, the same lines on stderr (tinc's field widths), the same clock
(process CPU time) and the same rate arithmetic as tinc's sptps_speed, so the two programs'
output can be compared line by line (bench/compare_sptps_speed.py does). Usage:

    sptps_speed [SECONDS]        # seconds per test, default 10

This is a shell tool: it owns two AF_UNIX socket pairs and reads the clock; all protocol work
is done by SptpsSession, fed with the bytes read from the sockets.
"""
import os
import re
import select
import socket
import sys
import time

from tincapp.errors import TincappError
from tincapp.sptps import crypto
from tincapp.sptps.session import SptpsSession, State

DEFAULT_DURATION_S = 10.0
LABEL = b"sptps_speed"          # 11 bytes, no trailing NUL (as tinc passes it)
RECORD_LEN = 1451               # application bytes per record in the transmit tests
SIGNED_LEN = 256                # bytes signed and verified in the Ed25519 tests
RECV_LEN = 4096                 # tinc's receive buffer

# C's atof(): the longest leading decimal float, 0.0 if there is none.
_ATOF = re.compile(r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|inf(?:inity)?|nan)",
                   re.IGNORECASE)


def _atof(text):
    m = _ATOF.match(text)
    return float(m.group(0)) if m else 0.0


class _Clock:
    """tinc's clock_start()/clock_countto() pair over process CPU time (CLOCK_PROCESS_CPUTIME_ID).

    Loop as `while clock.running(): work()`: every call reads the clock, exactly like tinc's
    loop condition, and counts one more iteration while time is left. The hot transmit loops
    inline the same steps to save a method call per record.
    """

    def __init__(self, duration_s):
        self.duration_s = duration_s
        self.count = 0
        self.rate = 0.0
        self._start = time.process_time()

    def running(self):
        elapsed = time.process_time() - self._start
        if elapsed < self.duration_s:
            self.count += 1
            return True
        # COMPAT: rate = iterations / CPU seconds; tinc divides by zero (nan) if no time passed.
        self.rate = self.count / elapsed if elapsed > 0 else float("nan")
        return False


def _print(text, err):
    err.write(text)
    err.flush()


def _bits_line(rate):
    """The transmit result: one record each way per iteration in tinc's arithmetic."""
    rate *= 2 * RECORD_LEN * 8
    if rate > 1e9:
        return "%14.2f Gbit/s\n" % (rate / 1e9)
    if rate > 1e6:
        return "%14.2f Mbit/s\n" % (rate / 1e6)
    if rate > 1e3:
        return "%14.2f kbit/s\n" % (rate / 1e3)
    # DEVIATION: tinc prints nothing at all (not even the newline) below 1 kbit/s.
    return "%14.2f bit/s\n" % rate


class _Pair:
    """An initiator and a responder session joined by one socket pair; the sockets are ours."""

    def __init__(self, socks, datagram, key1, key2):
        self.socks = socks
        self.datagram = datagram
        self.key1 = key1
        self.key2 = key2
        self._poll = select.poll()
        for s in socks:
            self._poll.register(s.fileno(), select.POLLIN)
        self.sessions = None

    def _session(self, initiator):
        mine, peer = (self.key1, self.key2) if initiator else (self.key2, self.key1)
        return SptpsSession(initiator=initiator, datagram=self.datagram, label=LABEL,
                            my_key=mine, peer_public=peer.public, rng=os.urandom)

    @staticmethod
    def _flush(session, sock):
        for _type, data in session.pop_outgoing():
            sock.send(data)

    def handshake(self):
        """Start both sessions and shuttle records until neither socket has anything to read
        (tinc's poll loop). Raises if the handshake did not complete."""
        s1, s2 = self._session(True), self._session(False)
        a, b = self.socks
        s1.start()
        self._flush(s1, a)
        s2.start()
        self._flush(s2, b)
        by_fd = {a.fileno(): (a, s1), b.fileno(): (b, s2)}
        while True:
            ready = self._poll.poll(0)
            if not ready:
                break
            for fd, _events in ready:
                sock, session = by_fd[fd]
                session.receive(sock.recv(RECV_LEN))
                self._flush(session, sock)
        if s1.state is not State.IDLE or s2.state is not State.IDLE:
            raise TincappError(f"handshake did not complete: {s1!r}, {s2!r}")
        self.sessions = (s1, s2)

    def transmit(self, duration_s, payload):
        """One record per iteration: sealed by the initiator, sent through the socket, received
        from the socket and opened (authenticated, replay-checked) by the responder.
        Returns the iteration rate."""
        s1, s2 = self.sessions
        a, b = self.socks
        first_in_seqno = s2.in_seqno
        rbuf = bytearray(RECV_LEN)
        rview = memoryview(rbuf)
        # Bound methods looked up once: this loop is what the benchmark measures.
        seal = s1.seal_record
        send = a.send
        recv_into = b.recv_into
        receive = s2.receive_datagram if self.datagram else s2.receive
        clock = time.process_time
        count = 0
        start = clock()
        while True:
            elapsed = clock() - start
            if elapsed >= duration_s:
                break
            count += 1
            send(seal(0, payload))
            n = recv_into(rbuf)
            receive(rview[:n])
        rview.release()
        # Outside the timing: take in a stream record still partly in the socket, then check
        # that the receiver authenticated exactly one record per iteration.
        while any(fd == b.fileno() for fd, _events in self._poll.poll(0)):
            receive(b.recv(RECV_LEN))
        opened = (s2.in_seqno - first_in_seqno) & 0xFFFFFFFF
        if opened != count & 0xFFFFFFFF:
            raise TincappError(f"{count} records sent but {opened} received")
        # seal_record() leaves a KEX in pop_outgoing() once REKEY_AFTER_RECORDS (2**31) records
        # went out under one key: hours at these rates, so the loop does not drain it per record.
        if s1.pop_outgoing():
            raise TincappError("an automatic rekey started during the transmit test")
        return count / elapsed if elapsed > 0 else float("nan")


def _auth_test(pair, duration_s):
    clock = _Clock(duration_s)
    while clock.running():
        pair.handshake()
    return clock.rate


def run(duration_s, err):
    """All eight tests; writes tinc's lines to `err`. Returns the exit status."""
    buf1 = os.urandom(4096)
    dur = "%g" % duration_s     # C's %lg

    _print(f"Generating keys for {dur} seconds: ", err)
    clock = _Clock(duration_s)
    while clock.running():
        crypto.PrivateKey.from_seed(os.urandom(crypto.SEED_LEN))
    _print("%17.2f op/s\n" % clock.rate, err)

    key1 = crypto.PrivateKey.from_seed(os.urandom(crypto.SEED_LEN))
    key2 = crypto.PrivateKey.from_seed(os.urandom(crypto.SEED_LEN))
    message = buf1[:SIGNED_LEN]

    _print(f"Ed25519 sign for {dur} seconds: ", err)
    clock = _Clock(duration_s)
    while clock.running():
        signature = key1.sign(message)
    _print("%20.2f op/s\n" % clock.rate, err)

    signature = key1.sign(message)
    _print(f"Ed25519 verify for {dur} seconds: ", err)
    clock = _Clock(duration_s)
    while clock.running():
        if not crypto.verify(key1.public, message, signature):
            _print("Signature verification failed\n", err)
            return 1
    _print("%18.2f op/s\n" % clock.rate, err)

    # Each iteration: a fresh ephemeral key (as a KEX makes) and its secret with a fixed peer.
    ecdh1 = crypto.EcdhKey.from_seed(os.urandom(crypto.SEED_LEN))
    _print(f"ECDH for {dur} seconds: ", err)
    clock = _Clock(duration_s)
    while clock.running():
        ecdh2 = crypto.EcdhKey.from_seed(os.urandom(crypto.SEED_LEN))
        ecdh2.shared_secret(ecdh1.public)
    _print("%28.2f op/s\n" % clock.rate, err)

    payload = buf1[:RECORD_LEN]
    for name, kind, datagram in (("TCP", socket.SOCK_STREAM, False),
                                 ("UDP", socket.SOCK_DGRAM, True)):
        socks = socket.socketpair(socket.AF_UNIX, kind)
        try:
            pair = _Pair(socks, datagram, key1, key2)
            _print(f"SPTPS/{name} authenticate for {dur} seconds: ", err)
            rate = _auth_test(pair, duration_s)
            # COMPAT: tinc counts both sides' handshakes, hence twice the iteration rate.
            _print("%10.2f op/s\n" % (rate * 2), err)

            pair.handshake()
            _print(f"SPTPS/{name} transmit for {dur} seconds: ", err)
            _print(_bits_line(pair.transmit(duration_s, payload)), err)
        finally:
            for s in socks:
                s.close()
    return 0


def main(argv):
    """argv[0] is the program name; argv[1], if given, the seconds per test (C atof rules)."""
    duration_s = _atof(argv[1]) if len(argv) > 1 else DEFAULT_DURATION_S
    err = sys.stderr
    try:
        return run(duration_s, err)
    except TincappError as e:
        _print(f"\n{argv[0] if argv else 'sptps_speed'}: {e}\n", err)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
