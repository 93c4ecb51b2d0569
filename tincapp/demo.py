"""The README's main job, for now: two sptps_test processes talk SPTPS over loopback.

Uses the frozen binary dist/tincapp when it exists (that is what `make` builds), otherwise this
Python. For stream (TCP) and datagram (UDP) mode: make two key pairs with sptps_keypair, start a
listener and an initiator, send lines both ways, force a rekey with sptps_test's '$' line, send
again, and print what happened. TODO(#4): the mesh demo on network namespaces replaces this.
"""
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FROZEN = os.path.join(ROOT, "dist", "tincapp")


def command():
    if os.path.exists(FROZEN):
        return [FROZEN]
    return [sys.executable, "-m", "tincapp"]


class Program:
    def __init__(self, argv):
        # Own session: stop() kills the whole group (the frozen binary's bootloader forks
        # the real program; killing the bootloader alone would leave it running).
        self.p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, start_new_session=True)
        self.streams = {"out": b"", "err": b""}

    def wait_for(self, pattern, stream, timeout=10.0):
        deadline = time.monotonic() + timeout
        while not re.search(pattern, self.streams[stream]):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"timed out waiting for {pattern!r}: "
                                   f"{self.streams['err'][-400:].decode(errors='replace')}")
            ready, _, _ = select.select([self.p.stdout, self.p.stderr], [], [], left)
            for f in ready:
                key = "out" if f is self.p.stdout else "err"
                self.streams[key] += os.read(f.fileno(), 65536)

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def stop(self):
        try:
            os.killpg(self.p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.p.wait()
        for f in (self.p.stdin, self.p.stdout, self.p.stderr):
            f.close()


def run_mode(cmd, tmp, datagram):
    mode = ["-d"] if datagram else []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM if datagram else socket.SOCK_STREAM) \
            as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    k = {n: (os.path.join(tmp, f"{n}.priv"), os.path.join(tmp, f"{n}.pub")) for n in "ab"}
    alice = Program(cmd + ["sptps_test", "-s", *mode, k["a"][0], k["b"][1], str(port)])
    bob = None
    try:
        alice.wait_for(rb"Listening", "err")
        started = time.monotonic()
        bob = Program(cmd + ["sptps_test", "-s", *mode, k["b"][0], k["a"][1], "127.0.0.1",
                             str(port)])
        rounds = []
        for i in range(3):
            t0 = time.monotonic()
            bob.send(f"ping {i} from bob\n".encode())
            alice.wait_for(rf"ping {i} from bob".encode(), "out")
            alice.send(f"pong {i} from alice\n".encode())
            bob.wait_for(rf"pong {i} from alice".encode(), "out")
            rounds.append(time.monotonic() - t0)
        t0 = time.monotonic()
        bob.send(b"$rekey\n")                       # forces a new key exchange, then sends
        alice.wait_for(rb"\$rekey", "out")
        alice.send(b"after the rekey\n")
        bob.wait_for(rb"after the rekey", "out")
        rekey_s = time.monotonic() - t0
        return {"mode": "datagram/UDP" if datagram else "stream/TCP", "port": port,
                "first_round_ms": rounds[0] * 1e3, "round_ms": min(rounds[1:]) * 1e3,
                "rekey_round_ms": rekey_s * 1e3, "total_s": time.monotonic() - started}
    finally:
        alice.stop()
        if bob:
            bob.stop()


def main():
    cmd = command()
    print(f"tincapp demo: SPTPS between two sptps_test processes on loopback, using "
          f"{' '.join(cmd)}")
    with tempfile.TemporaryDirectory(prefix="tincapp-demo-") as tmp:
        for name in "ab":
            subprocess.run(cmd + ["sptps_keypair", os.path.join(tmp, f"{name}.priv"),
                                  os.path.join(tmp, f"{name}.pub")], check=True)
        results = [run_mode(cmd, tmp, datagram) for datagram in (False, True)]
    print(f"\n{'mode':<14}{'port':>7}{'handshake+1st round':>22}{'round trip':>13}"
          f"{'rekey round':>14}")
    for r in results:
        print(f"{r['mode']:<14}{r['port']:>7}{r['first_round_ms']:>19.1f} ms"
              f"{r['round_ms']:>10.2f} ms{r['rekey_round_ms']:>11.2f} ms")
    print("\nBoth sessions: handshake, 3 exchanges each way, a forced rekey, data under the new "
          "keys: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
