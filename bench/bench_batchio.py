"""UDP loopback throughput: batchio.send_burst/recv_burst beside plain Python socket loops.

Each case moves B datagrams of PAYLOAD_LEN bytes from one IPv4 loopback socket to another and
receives them, B per round:
  (a) batchio: send_burst (per-slot addresses) then recv_burst, at B = 1, 32 and 64,
      and send_to_one (one destination) at B = 64, without and with UDP GSO (gso=True:
      runs of up to 46 datagrams of 1400 bytes per UDP_SEGMENT super-datagram), and GSO
      sending to a UDP_GRO socket read with UdpGroReceiver (on loopback the runs stay
      coalesced all the way, so this is the best case for GRO),
  (b) the baseline, measured in the same run: a Python loop of socket.sendto, then a loop of
      socket.recvfrom, at B = 1 and 64.
Prints packets/s, payload Gbit/s, the time split between the send and receive side, and the
ratio to the Python baseline. On loopback the kernel delivers during the send call, so the
send side includes the receiving stack's work; both columns are per packet.

Each figure is the best of 3 runs of ~0.4 s (time.perf_counter), rounds interleaved over all
cases so the baseline and the rest share the machine load. Usage:
    python bench/bench_batchio.py [SECONDS_PER_RUN [ROUNDS]]
"""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tincapp.accel import batchio  # noqa: E402  (compiled tincapp._batchio)
from tincapp.datapath.batch import PacketBatch  # noqa: E402

PAYLOAD_LEN = 1400
BATCH_SIZES = (1, 32, 64)
RUNS = 3
UDP_GRO = 104      # <netinet/udp.h>


def sockets(gro=False):
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if gro:
        rx.setsockopt(socket.SOL_UDP, UDP_GRO, 1)
    rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    rx.bind(("127.0.0.1", 0))
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)
    tx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx.setblocking(False)
    return tx, rx


class Timer:
    """Seconds spent sending and receiving, summed over a run."""

    def __init__(self):
        self.send_s = self.recv_s = 0.0


def batchio_case(tx, rx, size, one_dest=False, gso=False, gro=False):
    out = PacketBatch(size)
    for _ in range(size):
        out.append(bytes(PAYLOAD_LEN))
    dest = batchio.UdpAddresses(size)
    dest.set_all(*rx.getsockname())
    host, port = rx.getsockname()
    got = PacketBatch(size)
    src = batchio.UdpAddresses(size)
    txfd, rxfd = tx.fileno(), rx.fileno()
    send_burst, send_to_one, recv_burst = batchio.send_burst, batchio.send_to_one, \
        batchio.recv_burst
    if gro:
        recv_burst = batchio.UdpGroReceiver(size).receive
    clock = time.perf_counter

    def run(rounds, timer):
        for _ in range(rounds):
            t0 = clock()
            if one_dest:
                sent, err = send_to_one(txfd, out, host, port, gso=gso)
            else:
                sent, err = send_burst(txfd, out, dest)
            t1 = clock()
            got.count = 0
            n = 0
            while n < sent:
                n += recv_burst(rxfd, got, src)
            t2 = clock()
            timer.send_s += t1 - t0
            timer.recv_s += t2 - t1
            if err:
                raise OSError(err, os.strerror(err))
    return run


def python_case(tx, rx, size):
    payload = bytes(PAYLOAD_LEN)
    addr = rx.getsockname()
    sendto, recvfrom = tx.sendto, rx.recvfrom
    clock = time.perf_counter

    def run(rounds, timer):
        for _ in range(rounds):
            t0 = clock()
            for _ in range(size):
                sendto(payload, addr)
            t1 = clock()
            for _ in range(size):
                recvfrom(2048)
            t2 = clock()
            timer.send_s += t1 - t0
            timer.recv_s += t2 - t1
    return run


def calibrate(run, run_s):
    """How many rounds of run take about run_s seconds."""
    n = 1
    while True:
        timer = Timer()
        t = time.perf_counter()
        run(n, timer)
        elapsed = time.perf_counter() - t
        if elapsed >= 0.05:
            return max(1, int(n * run_s / elapsed))
        n *= 4


def measure(cases, run_s, rounds):
    """Best (packets/s, send µs/packet, recv µs/packet) of each case over `rounds` rounds."""
    calls = [calibrate(run, run_s) for _name, _size, run in cases]
    best = [(0.0, 0.0, 0.0)] * len(cases)
    for _ in range(rounds):
        for i, (_name, size, run) in enumerate(cases):
            timer = Timer()
            t = time.perf_counter()
            run(calls[i], timer)
            packets = calls[i] * size
            pps = packets / (time.perf_counter() - t)
            if pps > best[i][0]:
                best[i] = (pps, timer.send_s / packets * 1e6, timer.recv_s / packets * 1e6)
    return best


def main(argv):
    run_s = float(argv[1]) if len(argv) > 1 else 0.4
    rounds = int(argv[2]) if len(argv) > 2 else RUNS
    tx, rx = sockets()
    gro_tx, gro_rx = sockets(gro=True)
    try:
        cases = [(f"python sendto/recvfrom B={b}", b, python_case(tx, rx, b)) for b in (1, 64)]
        cases += [(f"batchio send_burst/recv_burst B={b}", b, batchio_case(tx, rx, b))
                  for b in BATCH_SIZES]
        cases.append(("batchio send_to_one/recv_burst B=64", 64,
                      batchio_case(tx, rx, 64, one_dest=True)))
        cases.append(("batchio send_to_one(gso)/recv_burst B=64", 64,
                      batchio_case(tx, rx, 64, one_dest=True, gso=True)))
        cases.append(("batchio send_to_one(gso)/UdpGroReceiver B=64", 64,
                      batchio_case(gro_tx, gro_rx, 64, one_dest=True, gso=True, gro=True)))
        results = measure(cases, run_s, rounds)
    finally:
        for s in (tx, rx, gro_tx, gro_rx):
            s.close()
    baseline = results[1][0]          # Python at B=64: the better of the two Python loops
    print(f"UDP loopback, IPv4, {PAYLOAD_LEN}-byte datagrams, best of {rounds} x {run_s} s")
    print(f"{'case':46s} {'packets/s':>11s} {'Gbit/s':>7s} {'send µs':>8s} {'recv µs':>8s}"
          f" {'vs python':>9s}")
    for (name, _size, _run), (pps, send_us, recv_us) in zip(cases, results):
        gbit = pps * PAYLOAD_LEN * 8 / 1e9
        print(f"{name:46s} {pps:11,.0f} {gbit:7.2f} {send_us:8.2f} {recv_us:8.2f}"
              f" {pps / baseline:8.2f}x")


if __name__ == "__main__":
    main(sys.argv)
