"""Plain-Python reference of tincapp._replay.ReplayWindow (pyx/replay.pyx), same API.

Written to be obviously correct rather than fast: a transliteration of tinc 1.1's
sptps_check_seqno() (sptps.md 5.3) with one bit per loop iteration and every 32-bit operation
masked explicitly. Tests run the same cases against this and the compiled module.
No I/O. Not thread-safe.
"""
from tincapp.datapath.batch import SLOT_FUTURE, SLOT_OK, SLOT_REPLAYED

MASK32 = 0xFFFFFFFF
MAX_SIZE = (1 << 29) - 1


def _u32(value, what):
    # Mirrors Cython's conversion to uint32_t: out-of-range values raise OverflowError.
    if not 0 <= value <= MASK32:
        raise OverflowError(f"{what} {value} does not fit in uint32_t")
    return value


class ReplayWindow:
    """tinc's replay window of `size_bytes` bytes; 0 disables the check."""

    def __init__(self, size_bytes):
        if not 0 <= size_bytes <= MAX_SIZE:
            raise ValueError(f"replay window size must be 0..{MAX_SIZE} bytes, not {size_bytes}")
        self._size = size_bytes
        self._late = bytearray(size_bytes)     # all 0: nothing is late
        self._farfuture = 0
        self._received = 0
        self._inseqno = 0

    size = property(lambda self: self._size)
    farfuture = property(lambda self: self._farfuture)
    received = property(lambda self: self._received)
    late = property(lambda self: bytes(self._late))

    @property
    def inseqno(self):
        return self._inseqno

    @inseqno.setter
    def inseqno(self, value):
        self._inseqno = _u32(value, "inseqno")

    def __repr__(self):
        return (f"<ReplayWindow size={self._size} inseqno={self._inseqno} "
                f"farfuture={self._farfuture} received={self._received} (reference)>")

    # --- bit helpers: number s is bit s % 8 of byte (s // 8) % size -------------------------

    def _is_late(self, s):
        return bool(self._late[(s // 8) % self._size] & (1 << (s % 8)))

    def _set_late(self, s):
        self._late[(s // 8) % self._size] |= 1 << (s % 8)

    def _clear_late(self, s):
        self._late[(s // 8) % self._size] &= ~(1 << (s % 8)) & 0xFF

    # --- the check ----------------------------------------------------------------------------

    def check(self, seqno, update=True):
        s = _u32(seqno, "seqno")
        w = self._size
        n = 8 * w
        if w:
            if s != self._inseqno:
                if s >= (self._inseqno + n) & MASK32:
                    drop = self._farfuture < w // 4
                    if update:
                        self._farfuture = (self._farfuture + 1) & MASK32
                    if drop:
                        return SLOT_FUTURE
                    if update:
                        for i in range(w):
                            self._late[i] = 0xFF
                elif s < self._inseqno:
                    too_old = self._inseqno >= n and s < ((self._inseqno - n) & MASK32)
                    if too_old or not self._is_late(s):
                        return SLOT_REPLAYED
                elif update:
                    i = self._inseqno
                    while i != s:
                        self._set_late(i)
                        i = (i + 1) & MASK32
            if update:
                self._clear_late(s)
                self._farfuture = 0
        if update:
            if s >= self._inseqno:
                self._inseqno = (s + 1) & MASK32
            if self._inseqno == 0:
                self._received = 0
            else:
                self._received = (self._received + 1) & MASK32
        return SLOT_OK

    def accept_batch(self, batch, start=0, stop=-1):
        count = batch.count
        if stop < 0 or stop > count:
            stop = count
        start = max(start, 0)
        accepted = 0
        for i in range(start, stop):
            if batch.status[i] != SLOT_OK:
                continue
            rc = self.check(batch.seqnos[i], True)
            if rc == SLOT_OK:
                accepted += 1
            else:
                batch.status[i] = rc
        return accepted
