"""Benchmark and sizing study for the replay window (pyx/replay.pyx).

  .venv/bin/python bench/bench_replay.py [--quick]

(a) Cost per packet of ReplayWindow.accept_batch, compiled vs the per-bit reference
    (tests/reference/replay.py), for in-order and reordered traffic, at window sizes
    16..1024 bytes, batches of 64; plus batch sizes 1 and 32 and the bare loop as baseline.
(b) Drop rate of GOOD packets (each sent exactly once, none forged) under reordering models
    typical of batched multi-queue sending, and the cost of a far-future resync after an
    outage, per window size. Ends with a recommended default window size.

Run from the repository root after `python setup.py build_ext --inplace`.
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.reference.replay import ReplayWindow as ReferenceWindow  # noqa: E402
from tincapp import accel  # noqa: E402
from tincapp.datapath.batch import SLOT_FUTURE, SLOT_OK, SLOT_REPLAYED, PacketBatch  # noqa: E402

CompiledWindow = accel.replay.ReplayWindow
SIZES = [16, 32, 64, 128, 256, 1024]
BURST = 64
QUICK = "--quick" in sys.argv


# --- traffic models: each returns the order in which seqnos 0..total-1 arrive -----------------
#
# The sender numbers packets 0, 1, 2, ... and hands them to its queues in bursts of BURST
# consecutive numbers (burst k = numbers [64k, 64k+64)). Nothing is lost or duplicated unless a
# model says so, so every rejection counted below is a good packet thrown away.

def in_order(total, rnd):
    return list(range(total))


def two_queues_interleaved(total, rnd):
    """2 TX queues; burst k goes to queue k % 2. The two queues flush their current bursts
    at the same time and the wire interleaves them packet by packet at random (each queue's
    own packets stay in order). Max displacement ~ 1-2 bursts."""
    out = []
    for pair_start in range(0, total, 2 * BURST):
        a = list(range(pair_start, min(pair_start + BURST, total)))
        b = list(range(pair_start + BURST, min(pair_start + 2 * BURST, total)))
        if rnd.random() < 0.5:
            a, b = b, a                       # either queue may start first
        while a or b:
            src = a if (a and (not b or rnd.random() < 0.5)) else b
            out.append(src.pop(0))
    return out


def lagging_queue(lag_bursts):
    def model(total, rnd):
        """2 TX queues, burst k on queue k % 2; queue 1 runs `lag` bursts behind queue 0
        (e.g. its CPU is busy): burst k arrives at time k + lag if on queue 1, else k."""
        nb = (total + BURST - 1) // BURST
        order = sorted(range(nb), key=lambda k: (k + (lag_bursts if k % 2 else 0), k % 2))
        return [s for k in order for s in range(k * BURST, min((k + 1) * BURST, total))]
    model.__doc__ = f"2 queues, queue 1 lags by {lag_bursts} bursts"
    return model


def random_burst_delay(queues, max_delay):
    def model(total, rnd):
        """`queues` TX queues; every burst is delayed by a uniform random 0..max_delay burst
        times (queue scheduling), whole bursts stay in order internally; each queue is FIFO."""
        nb = (total + BURST - 1) // BURST
        ready = [0.0] * queues
        arrival = []
        for k in range(nb):
            q = k % queues
            t = max(k + rnd.uniform(0, max_delay), ready[q])   # a queue never overtakes itself
            ready[q] = t
            arrival.append((t, k))
        arrival.sort()
        return [s for _, k in arrival for s in range(k * BURST, min((k + 1) * BURST, total))]
    return model


def outage(lost):
    def model(total, rnd):
        """In order, but `lost` consecutive packets vanish mid-stream (a link outage while the
        sender keeps sending). The lost ones are not counted; the question is how many GOOD
        packets after the outage are dropped as 'far future' before the window resyncs."""
        mid = total // 4
        return list(range(mid)) + list(range(mid + lost, total + lost))
    return model


REORDER_MODELS = [
    ("2 queues, packet-interleaved flushes", two_queues_interleaved),
    ("2 queues, queue 1 lags 1 burst", lagging_queue(1)),
    ("2 queues, queue 1 lags 2 bursts", lagging_queue(2)),
    ("2 queues, queue 1 lags 4 bursts", lagging_queue(4)),
    ("2 queues, queue 1 lags 8 bursts", lagging_queue(8)),
    ("4 queues, random burst delay 0..3", random_burst_delay(4, 3)),
    ("8 queues, random burst delay 0..8", random_burst_delay(8, 8)),
    ("stress: 4 queues, random delay 0..16", random_burst_delay(4, 16)),
]
OUTAGE_MODELS = [(f"outage of {n} packets", outage(n)) for n in (100, 1000, 5000, 20000)]


# --- (a) cost per packet --------------------------------------------------------------------

def make_batches(order, batch_size):
    batches = []
    for i in range(0, len(order) - batch_size + 1, batch_size):
        b = PacketBatch(batch_size, slot_size=1)
        for s in order[i:i + batch_size]:
            b.append(b"", seqno=s)
        batches.append(b)
    return batches


def time_accept(window_cls, size, batches, repeat):
    """Best-of-`repeat` packets/s of accept_batch over `batches` (statuses reset each time)."""
    zero = bytes(batches[0].capacity)
    best = float("inf")
    for _ in range(repeat):
        w = window_cls(size)
        t0 = time.perf_counter()
        for b in batches:
            b.status[:] = zero
            w.accept_batch(b)
        best = min(best, time.perf_counter() - t0)
    return len(batches) * batches[0].capacity / best


def time_loop_only(batches, repeat):
    zero = bytes(batches[0].capacity)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches:
            b.status[:] = zero
        best = min(best, time.perf_counter() - t0)
    return len(batches) * batches[0].capacity / best


def fmt_rate(pps):
    return f"{pps / 1e6:7.2f} M/s" if pps >= 1e6 else f"{pps / 1e3:7.1f} k/s"


def bench_cost():
    rnd = random.Random(1)
    n_fast = 200_000 if QUICK else 2_000_000
    n_slow = 20_000 if QUICK else 100_000
    traffic = {"in-order": in_order, "reordered": random_burst_delay(4, 3)}
    print("(a) accept_batch cost per packet, batches of 64 (best of 7 compiled, 3 reference)")
    base = time_loop_only(make_batches(list(range(n_fast)), 64), 7)
    print(f"    baseline: Python loop resetting statuses, no check: {fmt_rate(base)} "
          f"({1e9 / base:5.1f} ns/pkt)")
    print(f"    {'size':>6} {'traffic':>10} | {'compiled':>11} {'ns/pkt':>7} | "
          f"{'reference':>11} {'ns/pkt':>7} | speedup")
    for size in SIZES:
        for name, model in traffic.items():
            fast = make_batches(model(n_fast, rnd), 64)
            slow = make_batches(model(n_slow, rnd), 64)
            c = time_accept(CompiledWindow, size, fast, 7)
            r = time_accept(ReferenceWindow, size, slow, 3)
            print(f"    {size:>5}B {name:>10} | {fmt_rate(c)} {1e9 / c:7.1f} | "
                  f"{fmt_rate(r)} {1e9 / r:7.0f} | {c / r:6.0f}x")
    print("    compiled, size 16, in-order, by batch size:")
    for bs in (1, 32, 64, 1024):
        batches = make_batches(list(range(n_fast // (8 if bs == 1 else 1))), bs)
        c = time_accept(CompiledWindow, 16, batches, 7)
        print(f"      batch {bs:>2}: {fmt_rate(c)} ({1e9 / c:6.1f} ns/pkt)")
    w = CompiledWindow(16)
    check = w.check
    n = n_fast // 4
    t0 = time.perf_counter()
    for s in range(n):
        check(s)
    dt = time.perf_counter() - t0
    print(f"      check() per call from Python: {1e9 * dt / n:6.1f} ns")


# --- (b) drop rates -------------------------------------------------------------------------

def drop_stats(size, order):
    """(good packets rejected as replayed, as far-future) feeding `order` through a window."""
    w = CompiledWindow(size)
    replayed = future = 0
    for i in range(0, len(order), BURST):
        b = PacketBatch(BURST, slot_size=1)
        for s in order[i:i + BURST]:
            b.append(b"", seqno=s)
        w.accept_batch(b)
        for j in range(b.count):
            replayed += b.status[j] == SLOT_REPLAYED
            future += b.status[j] == SLOT_FUTURE
    return replayed, future


def bench_drops():
    total = 64 * 512 if QUICK else 64 * 4096
    runs = 2 if QUICK else 5
    print()
    print(f"(b) GOOD packets dropped (% of {total} sent, mean of {runs} random runs; "
          f"bursts of {BURST})")
    print(f"    {'model':<40}" + "".join(f"{str(s) + 'B':>9}" for s in SIZES))
    print(f"    {'window covers (packets)':<40}" + "".join(f"{8 * s:>9}" for s in SIZES))
    table = {}
    for name, model in REORDER_MODELS:
        row = []
        for size in SIZES:
            dropped = 0
            for run in range(runs):
                order = model(total, random.Random(run))
                assert sorted(order) == list(range(total))     # a permutation: nothing lost
                r, f = drop_stats(size, order)
                dropped += r + f
            row.append(100.0 * dropped / (runs * total))
        table[name] = row
        print(f"    {name:<40}" + "".join(f"{x:>8.3f}%" for x in row))
    print(f"    {'far-future resync after an outage':<40}   (good packets dropped, count)")
    for name, model in OUTAGE_MODELS:
        order = model(total, None)
        row = [sum(drop_stats(size, order)) for size in SIZES]
        table[name] = row
        print(f"    {name:<40}" + "".join(f"{x:>9}" for x in row))
    return table


def recommend(table):
    print()
    print("Recommendation")
    rows = [table[name] for name, _ in REORDER_MODELS]
    clean = [s for k, s in enumerate(SIZES) if all(row[k] == 0.0 for row in rows)]
    moderate = [table[name] for name, _ in REORDER_MODELS[:-1]]      # all but the stress row
    clean_moderate = [s for k, s in enumerate(SIZES)
                      if all(row[k] == 0.0 for row in moderate)]
    pick = clean[0] if clean else SIZES[-1]
    at16 = max(row[0] for row in rows)
    resync = {s: table[OUTAGE_MODELS[-1][0]][k] for k, s in enumerate(SIZES)}
    print(f"    zero good-packet drops in every model except the stress one from "
          f"{clean_moderate[0] if clean_moderate else '-'} bytes; in every model from "
          f"{clean[0] if clean else '-'} bytes")
    print(f"    recommended default ReplayWindow: {pick} bytes ({8 * pick} packets)")
    print(
        f"    Justification: tinc's 16 bytes (128 packets) is two 64-packet bursts: it survives\n"
        f"    two queues that interleave or lag by up to 2 bursts, but loses up to {at16:.0f}% of\n"
        f"    good packets once one queue lags 4 bursts or 4-8 queues are scheduled a few\n"
        f"    bursts apart. {pick} bytes ({8 * pick} packets) absorbs every modelled pattern,\n"
        f"    including stalls of ~16 bursts (at 10 Gbit/s of 1400-byte frames, 1024 packets\n"
        f"    are ~1.1 ms; a scheduler tick is 1-4 ms), for {pick} bytes of memory per peer and\n"
        f"    the same O(1) cost per packet (table a). The price of a bigger window is the\n"
        f"    far-future resync: after more than {8 * pick} consecutive packets are lost it drops\n"
        f"    size/4 = {resync[pick]} good packets (16 bytes: {resync[16]}, 1024 bytes: "
        f"{resync[1024]}),\n"
        f"    which at these rates is well under a millisecond, so going much larger buys\n"
        f"    nothing the models need. The window is local to the receiver, so any size is\n"
        f"    wire-compatible with real tinc.")


def main():
    bench_cost()
    table = bench_drops()
    recommend(table)


if __name__ == "__main__":
    main()
