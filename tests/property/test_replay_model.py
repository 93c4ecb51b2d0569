"""The compiled replay window against a set-based model of "which numbers were accepted".

Model semantics (tinc's window, sptps.md 5.3, restated without a bitmap). With N = 8 * size
and `next` = one past the highest accepted number:

* size 0: the check is off; everything is accepted, `next` still tracks the maximum.
* s == next, or next < s < next + N (in order, or a gap ahead): always accepted.
* s >= next + N (far future): dropped while fewer than size // 4 far-future numbers arrived
  since the last acceptance; then accepted, and the window jumps to end at s.
* s < next: accepted iff it is still inside the window (s >= next - N) and was never accepted.
  Numbers below the initial `next` (set by the first handshake) count as already accepted.
* Any acceptance resets the far-future count; a rejection as replayed leaves it alone.

So: in-order numbers are always accepted, and no number is accepted twice while it is within
the window. The model tracks the exact accepted set (pruned below the window), so it predicts
every decision. Domain: numbers stay below 2^32 - 3N, where `next + N` cannot wrap; tinc's
wrapped bounds near 2^32 are pinned by the vectors and tests/diff instead.
"""
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (RuleBasedStateMachine, initialize, invariant, precondition,
                                 rule)

from tincapp import accel
from tincapp.datapath.batch import SLOT_FUTURE, SLOT_OK, SLOT_REPLAYED, PacketBatch

SIZES = [0, 1, 2, 3, 16, 32, 64, 128]


class AcceptedSetModel:
    def __init__(self, size, next_seqno):
        self.size = size
        self.n = 8 * size
        self.next = next_seqno
        self.accepted = set(range(max(0, next_seqno - self.n), next_seqno))
        self.far = 0

    def decide(self, s):
        """SLOT_OK / SLOT_REPLAYED / SLOT_FUTURE for s, without changing anything."""
        if self.size == 0:
            return SLOT_OK
        if s >= self.next + self.n:
            return SLOT_FUTURE if self.far < self.size // 4 else SLOT_OK
        if s < self.next and (s < self.next - self.n or s in self.accepted):
            return SLOT_REPLAYED
        return SLOT_OK

    def offer(self, s):
        status = self.decide(s)
        if status == SLOT_FUTURE:
            self.far += 1
        elif status == SLOT_OK:
            self.far = 0
            self.accepted.add(s)
            self.next = max(self.next, s + 1)
            if len(self.accepted) > 4 * self.n + 64:
                low = self.next - self.n
                self.accepted = {x for x in self.accepted if x >= low}
        return status


class ReplayWindowMachine(RuleBasedStateMachine):
    @initialize(size=st.sampled_from(SIZES),
                start=st.one_of(st.sampled_from([0, 2, 1000]), st.integers(0, 2**31)))
    def setup(self, size, start):
        self.window = accel.replay.ReplayWindow(size)
        self.window.inseqno = start          # as the session does after the first handshake
        self.model = AcceptedSetModel(size, start)
        self.limit = 2**32 - 3 * 8 * size - 2
        self.recent = []

    def offer(self, s):
        s = min(max(s, 0), self.limit)
        seen_in_window = s in self.model.accepted and s >= self.model.next - self.model.n
        in_order = s == self.model.next
        expected = self.model.offer(s)
        got = self.window.check(s)
        assert got == expected, f"seqno {s}: window {got}, model {expected}"
        if in_order:
            assert got == SLOT_OK, "an in-order number must always be accepted"
        if seen_in_window and self.model.size:
            assert got != SLOT_OK, "a number inside the window was accepted twice"
        self.recent = (self.recent + [s])[-32:]

    @rule(step=st.integers(0, 3))
    def in_order(self, step):
        for _ in range(step + 1):
            self.offer(self.model.next)

    @rule(d=st.integers(-300, 300))
    def jitter(self, d):
        self.offer(self.model.next + d * max(1, self.model.n) // 64 + d % 3)

    @precondition(lambda self: self.recent)
    @rule(data=st.data())
    def duplicate(self, data):
        self.offer(data.draw(st.sampled_from(self.recent)))

    @rule(k=st.integers(1, 20), repeat=st.integers(1, 40))
    def far_jump(self, k, repeat):
        target = self.model.next + k * max(1, self.model.n) + k
        for _ in range(repeat):
            self.offer(target)

    @rule(d=st.integers(-2000, 2000))
    def verify_only(self, d):
        s = min(max(self.model.next + d, 0), self.limit)
        before = (self.window.inseqno, self.window.farfuture, self.window.late)
        assert self.window.check(s, update=False) == self.model.decide(s)
        assert (self.window.inseqno, self.window.farfuture, self.window.late) == before

    @rule(offsets=st.lists(st.integers(-200, 200), min_size=1, max_size=64),
          skipped=st.sets(st.integers(0, 63)))
    def batch(self, offsets, skipped):
        b = PacketBatch(len(offsets), slot_size=1)
        expected = []
        base = self.model.next
        for i, d in enumerate(offsets):
            s = min(max(base + d, 0), self.limit)
            b.append(b"", seqno=s)
            if i in skipped:
                b.status[i] = 2                      # failed an earlier stage: untouched
                expected.append(2)
            else:
                expected.append(self.model.offer(s))
        accepted = self.window.accept_batch(b)
        assert list(b.status) == expected
        assert accepted == expected.count(SLOT_OK)

    @invariant()
    def same_position(self):
        if hasattr(self, "model"):
            assert self.window.inseqno == self.model.next
            assert self.window.farfuture == (self.model.far if self.model.size else 0)


ReplayWindowMachine.TestCase.settings = settings(max_examples=300, stateful_step_count=60,
                                                 deadline=None)
test_replay_window_model = ReplayWindowMachine.TestCase
