"""Compiled replay window (tincapp._replay) vs the per-bit reference (tests/reference/replay.py).

Random sequence-number streams: near-in-order with jitter, duplicates, big jumps, starts near
the 2^32 wrap, window sizes 0..128 bytes (including sizes that are not powers of two, which
tinc allows). After every step both windows must agree on the decision and on the whole state.
"""
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.reference import replay as reference
from tincapp import accel
from tincapp.datapath.batch import SLOT_OK, PacketBatch

Compiled = accel.replay.ReplayWindow
Reference = reference.ReplayWindow
M32 = 2**32 - 1
SIZES = [0, 1, 2, 3, 7, 16, 32, 64, 128]


def state(w):
    return w.inseqno, w.farfuture, w.received, w.late


def pair(size, inseqno):
    c, r = Compiled(size), Reference(size)
    c.inseqno = r.inseqno = inseqno
    return c, r


@st.composite
def streams(draw):
    """(size, initial inseqno, seqnos): a sender counter advancing mostly in order, with
    jitter within about a window, duplicates of earlier numbers, and occasional big jumps."""
    size = draw(st.sampled_from(SIZES))
    n = 8 * size
    start = draw(st.one_of(st.sampled_from([0, 2, 2**31 - 5, M32 - n - 3, M32 - 40, M32]),
                           st.integers(0, M32)))
    counter = start
    sent = []
    for _ in range(draw(st.integers(1, 120))):
        kind = draw(st.sampled_from(["next"] * 4 + ["jitter"] * 3 + ["dup", "jump", "wrap"]))
        if kind == "next":
            counter = (counter + draw(st.integers(1, 3))) & M32
            s = counter
        elif kind == "jitter":
            s = (counter + draw(st.integers(-n - 9, n + 9))) & M32
        elif kind == "dup" and sent:
            s = draw(st.sampled_from(sent[-20:]))
        elif kind == "jump":
            counter = (counter + draw(st.integers(-3 * n - 10**6, 3 * n + 10**6))) & M32
            s = counter
        else:
            s = (M32 - draw(st.integers(-n - 9, n + 9))) & M32
        sent.append(s)
    return size, start, sent


@settings(max_examples=400, deadline=None)
@given(streams())
def test_step_by_step(stream):
    size, start, seqnos = stream
    c, r = pair(size, start)
    for s in seqnos:
        before = state(c)
        assert c.check(s, update=False) == r.check(s, update=False)
        assert state(c) == state(r) == before
        assert c.check(s) == r.check(s), f"seqno {s}"
        assert state(c) == state(r), f"after seqno {s}"


@settings(max_examples=300, deadline=None)
@given(streams(), st.data())
def test_accept_batch(stream, data):
    size, start, seqnos = stream
    c, r, step = Compiled(size), Reference(size), Reference(size)
    c.inseqno = r.inseqno = step.inseqno = start
    batch_c = PacketBatch(len(seqnos), slot_size=1)
    for s in seqnos:
        batch_c.append(b"", seqno=s)
    # Some slots already failed earlier stages (bad tag, short...): they must be skipped.
    for i in range(len(seqnos)):
        batch_c.status[i] = data.draw(st.sampled_from([SLOT_OK] * 5 + [1, 2, 5, 6, 7]))
    lo = data.draw(st.integers(-1, len(seqnos)))
    hi = data.draw(st.integers(-1, len(seqnos) + 2))
    batch_r = PacketBatch(len(seqnos), slot_size=1)
    batch_r.seqnos[:] = batch_c.seqnos
    batch_r.status[:] = batch_c.status
    batch_r.count = batch_c.count
    expected = bytearray(batch_c.status)
    n_ok = 0
    for i in range(max(lo, 0), len(seqnos) if hi < 0 else min(hi, len(seqnos))):
        if expected[i] == SLOT_OK:
            expected[i] = step.check(seqnos[i])
            n_ok += expected[i] == SLOT_OK
    assert c.accept_batch(batch_c, lo, hi) == r.accept_batch(batch_r, lo, hi) == n_ok
    assert batch_c.status == batch_r.status == expected
    assert state(c) == state(r) == state(step)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16])
def test_every_gap_exhaustively(size):
    """Every gap start (bit offset) and length inside the window, from clean and from
    random bitmaps, at low numbers and just below the 32-bit wrap."""
    n = 8 * size
    rnd = random.Random(size)
    bases = list(range(0, 2 * n + 9)) + [2**31 - 17 + k for k in range(17)] + \
        [M32 - 2 * n - k for k in range(9)]
    for base, gap in itertools.product(bases, range(1, n)):
        c, r = pair(size, base)
        # a random history first, so that the OR into existing bits is exercised
        for s in rnd.sample(range(max(0, base - n), base), min(3, base)):
            c.check(s), r.check(s)
        for s in (base, base + 1 + gap, base + 1 + gap - rnd.randrange(gap + 1)):
            assert c.check(s) == r.check(s)
            assert state(c) == state(r), (base, gap, s)


@pytest.mark.parametrize("size", [1, 2, 16, 128])
def test_far_future_resync_and_wrap(size):
    n = 8 * size
    for start in (0, 5, 2**31, M32 - n + 1, M32 - 2, M32):
        c, r = pair(size, start)
        seqnos = [start, start + 1] + [start + 10 * n] * (size // 4 + 2) + \
                 [start + 10 * n - k for k in range(n + 2)] + [start + 1, start]
        for s in seqnos:
            s &= M32
            assert c.check(s) == r.check(s)
            assert state(c) == state(r)


def test_size_limits_and_types():
    for impl in (Compiled, Reference):
        with pytest.raises(ValueError):
            impl(-1)
        with pytest.raises(ValueError):
            impl(1 << 29)
        w = impl(4)
        with pytest.raises(OverflowError):
            w.check(2**32)
        with pytest.raises(OverflowError):
            w.check(-1)
        with pytest.raises(OverflowError):
            w.inseqno = 2**32
        w.inseqno = 7
        assert (w.size, w.inseqno, w.farfuture, w.received, w.late) == (4, 7, 0, 0, bytes(4))
        assert impl(0).late == b""
