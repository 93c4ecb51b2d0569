"""Record layer throughput: the one-record API and the batch API beside raw libsodium.

Prints seal and open throughput for 1400-byte records through
  (a) the one-record API: RecordKey.seal/open and seal_datagram/open_datagram,
  (b) the batch API: seal_batch/open_batch over PacketBatches of 1, 32 and 64 slots,
  (c) the baseline, measured in the same run: raw_seal_loop, libsodium's ChaCha20 + Poly1305
      over the same 1400 bytes with no framing and no Python per record,
and the ratio batch/raw per batch size. Target: ratio >= 0.8 at batch 64.

Each figure is the best of 3 runs of ~0.6 s (time.perf_counter); the rounds are interleaved
over all cases so that the baseline and the rest share the machine load. Usage:
    python bench/bench_record.py [SECONDS_PER_RUN [ROUNDS]]
"""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tincapp.accel import record  # noqa: E402  (compiled tincapp._record)
from tincapp.datapath.batch import SLOT_OK, PacketBatch  # noqa: E402

RECORD_LEN = 1400
BATCH_SIZES = (1, 32, 64)
TARGET_RATIO = 0.8
TARGET_BATCH = 64
RUNS = 3


def calibrate(run, run_s):
    """How many calls of run(n) take about run_s seconds."""
    n = 1
    while True:                                  # grow until a run takes 50 ms
        t = time.perf_counter()
        run(n)
        elapsed = time.perf_counter() - t
        if elapsed >= 0.05:
            return max(1, int(n * run_s / elapsed))
        n *= 4


def measure(cases, run_s, rounds):
    """Best records/s of each (name, run, records_per_call) over `rounds` rounds. Rounds go over
    all cases in turn, so the baseline and the figures beside it see the same machine load."""
    calls = [calibrate(run, run_s) for _name, run, _per_call in cases]
    best = [0.0] * len(cases)
    for _ in range(rounds):
        for i, (_name, run, per_call) in enumerate(cases):
            t = time.perf_counter()
            run(calls[i])
            best[i] = max(best[i], calls[i] * per_call / (time.perf_counter() - t))
    return best


def one_record_cases(key, plaintext):
    ct = key.seal(1, plaintext)
    dgram = record.seal_datagram(key, 1, 0, plaintext)

    def key_seal(n):
        seal = key.seal
        for i in range(n):
            seal(i, plaintext)

    def key_open(n):
        open_ = key.open
        for _ in range(n):
            open_(1, ct)

    def dgram_seal(n):
        seal = record.seal_datagram
        for i in range(n):
            seal(key, i & 0xFFFFFFFF, 0, plaintext)

    def dgram_open(n):
        open_ = record.open_datagram
        for _ in range(n):
            open_(key, dgram)

    return [("RecordKey.seal", key_seal), ("RecordKey.open", key_open),
            ("seal_datagram", dgram_seal), ("open_datagram", dgram_open)]


def batch_cases(key, plaintext, size):
    src = PacketBatch(size)
    for _ in range(size):
        src.append(plaintext)
    sealed = PacketBatch(size)
    opened = PacketBatch(size)
    record.seal_batch(key, 0, src, sealed)
    record.open_batch(key, sealed, opened)
    if any(sealed.status[i] != SLOT_OK or opened.status[i] != SLOT_OK
           or opened.get(i) != plaintext for i in range(size)):
        raise SystemExit(f"batch of {size}: seal/open round trip failed")

    def seal(n):
        seal_batch = record.seal_batch
        seqno = 0
        for _ in range(n):
            seqno = seal_batch(key, seqno, src, sealed) & 0xFFFFFFFF

    def open_(n):
        open_batch = record.open_batch
        for _ in range(n):
            open_batch(key, sealed, opened)

    return seal, open_


def line(name, rate, extra=""):
    mb = rate * RECORD_LEN / 1e6
    print(f"  {name:<24} {mb:9.1f} MB/s {rate:12.0f} rec/s{extra}")


def main(argv):
    run_s = float(argv[1]) if len(argv) > 1 else 0.6
    rounds = int(argv[2]) if len(argv) > 2 else RUNS
    key = record.RecordKey(os.urandom(64))
    plaintext = os.urandom(RECORD_LEN)
    raw_buf = bytearray(plaintext)
    raw_key = os.urandom(32)

    cases = [("raw_seal_loop", lambda n: record.raw_seal_loop(raw_key, raw_buf, n), 1)]
    cases += [(name, run, 1) for name, run in one_record_cases(key, plaintext)]
    for size in BATCH_SIZES:
        seal, open_ = batch_cases(key, plaintext, size)
        cases += [(f"seal_batch x{size}", seal, size), (f"open_batch x{size}", open_, size)]

    print(f"SPTPS record layer, {RECORD_LEN}-byte records, best of {rounds} x ~{run_s:g} s "
          f"(rounds interleaved; measuring {len(cases)} cases)...", flush=True)
    rates = dict(zip((name for name, _run, _n in cases), measure(cases, run_s, rounds)))
    raw = rates["raw_seal_loop"]

    print("baseline (c): raw libsodium ChaCha20+Poly1305, same size, no framing, no Python")
    line("raw_seal_loop", raw)
    print("one-record API (a)")
    for name, _run in one_record_cases(key, plaintext):
        line(name, rates[name], f"   ratio/raw {rates[name] / raw:5.2f}")
    print("batch API (b)")
    for size in BATCH_SIZES:
        for what in ("seal_batch", "open_batch"):
            ratio = rates[f"{what} x{size}"] / raw
            verdict = ""
            if size == TARGET_BATCH:
                verdict = "  PASS" if ratio >= TARGET_RATIO else "  BELOW TARGET"
                verdict += f" (target >= {TARGET_RATIO})"
            line(f"{what} x{size}", rates[f"{what} x{size}"],
                 f"   ratio/raw {ratio:5.2f}{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
