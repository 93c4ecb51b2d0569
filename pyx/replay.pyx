# cython: language_level=3
"""SPTPS datagram replay window: tinc 1.1's sptps_check_seqno(), exactly (sptps.md 5.3).

Owns one session's receive-side sequence state: `inseqno` (next expected number), the `late`
bitmap, the far-future counter and the `received` statistic. It decides; it does not decrypt,
log or count drops (the caller turns a status into a counter). The check must run only on
datagrams that have already been authenticated, so forged packets never move the window.

Reference implementation with the same API: tests/reference/replay.py.
No I/O. Not thread-safe: one window belongs to one session, driven by one thread.
Only tincapp.accel imports this module.
"""
cimport cython
from libc.stdint cimport uint8_t, uint32_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset
from cpython.bytes cimport PyBytes_FromStringAndSize

from slotstatus cimport *

# The window covers 8 * size sequence numbers and that product is 32-bit in tinc
# (`s->replaywin * 8`); keep it from wrapping.
MAX_SIZE = (1 << 29) - 1


# Bitmap layout, W = size in bytes, N = 8*W numbers. Number s lives in bit (s % 8) of byte
# (s / 8) % W; 1 = "not received yet" (late), 0 = received or outside the window.
#
#      byte:    0          1                 (s/8)%W                 W-1
#            +--------+--------+-- ... --+-----------+-- ... --+--------+
#   late[]:  |76543210|76543210|         |7 6 5 4 3 2|         |76543210|
#            +--------+--------+-- ... --+-----^-----+-- ... --+--------+
#                                              bit s%8
#
# The buffer is circular: it describes the N numbers [inseqno - N, inseqno). The byte that
# holds inseqno also holds numbers N behind it, so a gap ahead of inseqno is written over the
# oldest bits. A gap [a, b) is at most N - 1 numbers long, so in linear byte numbers it spans
# at most W + 1 bytes; when it spans exactly W + 1, the first and last (partial) bytes are the
# same circular byte, which is why partial bytes are OR-ed rather than assigned:
#
#   linear bytes:   a/8            a/8+1 ...  (b-1)/8 - 1      (b-1)/8
#                 [ 1 1 1 . . . ] [ full bytes: memset ff ] [ . . . . 1 1 ]
#                   head mask       may wrap past byte W-1     tail mask


cdef inline uint8_t _bit(uint32_t s) noexcept nogil:
    return <uint8_t>(1 << (s & 7))


@cython.final
cdef class ReplayWindow:
    """tinc's replay window of `size_bytes` bytes (8 * size_bytes sequence numbers); 0 disables
    the check. check() and accept_batch() return/write SLOT_OK, SLOT_REPLAYED or SLOT_FUTURE."""

    cdef readonly uint32_t size          # W, bytes (tinc: replaywin)
    cdef readonly uint32_t farfuture     # far-future datagrams since the last acceptance
    cdef readonly uint32_t received      # accepted datagrams (tinc's statistic)
    cdef public uint32_t inseqno         # next expected number; the session sets it (handshake)
    cdef uint8_t* _late                  # W bytes, NULL when W == 0

    def __cinit__(self, size_bytes):
        if not 0 <= size_bytes <= MAX_SIZE:
            raise ValueError(f"replay window size must be 0..{MAX_SIZE} bytes, not {size_bytes}")
        self.size = size_bytes
        if self.size:
            self._late = <uint8_t*>calloc(self.size, 1)    # all 0: nothing is late
            if self._late == NULL:
                raise MemoryError()

    def __dealloc__(self):
        free(self._late)

    @property
    def late(self):
        """The bitmap, `size` bytes; bit s%8 of byte (s/8)%size set = number s still missing."""
        if self.size == 0:
            return b""
        return PyBytes_FromStringAndSize(<char*>self._late, self.size)

    def __repr__(self):
        return (f"<ReplayWindow size={self.size} inseqno={self.inseqno} "
                f"farfuture={self.farfuture} received={self.received}>")

    def check(self, uint32_t seqno, bint update=True):
        """Status for authenticated datagram `seqno`. update=False only looks (tinc's
        sptps_verify_datagram); update=True changes state exactly as sptps_check_seqno."""
        return self._check(seqno, update)

    def accept_batch(self, batch, Py_ssize_t start=0, Py_ssize_t stop=-1):
        """Run check(seqno, update=True) over slots [start, stop) (stop < 0: batch.count) whose
        status is SLOT_OK, in order; rejected slots get SLOT_REPLAYED or SLOT_FUTURE.
        Returns how many slots were accepted."""
        cdef const uint32_t[::1] seqnos = batch.seqnos
        cdef uint8_t[::1] status = batch.status
        cdef Py_ssize_t count = batch.count
        cdef Py_ssize_t i
        cdef Py_ssize_t accepted = 0
        cdef int rc
        if count > status.shape[0] or count > seqnos.shape[0]:
            raise ValueError(f"batch.count {count} exceeds its capacity")
        if stop < 0 or stop > count:
            stop = count
        if start < 0:
            start = 0
        with nogil:  # seqnos/status pinned by the typed memoryviews; self is held by the caller
            for i in range(start, stop):
                if status[i] != SLOT_OK:
                    continue
                rc = self._check(seqnos[i], True)
                if rc == SLOT_OK:
                    accepted += 1
                else:
                    status[i] = <uint8_t>rc
        return accepted

    # --- the check ---------------------------------------------------------------------------

    cdef inline int _check(self, uint32_t seqno, bint update) noexcept nogil:
        # COMPAT: sptps_check_seqno() line by line; all arithmetic is uint32_t, so the window
        # bounds wrap at 2^32 exactly as tinc's do (which makes out-of-order delivery near the
        # wrap look "far future"; the vectors pin that).
        cdef uint32_t w = self.size
        cdef uint32_t n = w * 8                   # numbers covered by the window
        cdef bint drop
        if w:
            if seqno != self.inseqno:
                if seqno >= self.inseqno + n:
                    # Far future. Drop the first W/4 in a row so that one stray packet cannot
                    # make us give up a whole window; after that assume we lost them.
                    drop = self.farfuture < (w >> 2)     # compared BEFORE incrementing
                    if update:
                        self.farfuture += 1
                    if drop:
                        return SLOT_FUTURE
                    if update:
                        # Resynchronise: every number in the new window counts as missing,
                        # even ones received before (tinc's "Lost N packets").
                        memset(self._late, 0xff, w)
                elif seqno < self.inseqno:
                    # Past: too old for the bitmap, or its bit says already received.
                    if ((self.inseqno >= n and seqno < self.inseqno - n)
                            or not (self._late[(seqno >> 3) % w] & _bit(seqno))):
                        return SLOT_REPLAYED
                elif update:
                    # inseqno < seqno < inseqno + n: everything skipped is now late.
                    self._mark_late(self.inseqno, seqno)
            if update:
                self._late[(seqno >> 3) % w] &= ~_bit(seqno)
                self.farfuture = 0
        if update:
            if seqno >= self.inseqno:
                self.inseqno = seqno + 1
            if self.inseqno == 0:
                self.received = 0
            else:
                self.received += 1
        return SLOT_OK

    cdef inline void _mark_late(self, uint32_t a, uint32_t b) noexcept nogil:
        # Set the late bits of numbers [a, b), a < b, b - a < 8W, with byte operations.
        # DEVIATION: tinc loops with `int i`, which is undefined behaviour once numbers pass
        # 2^31 (negative i / 8 and i % 8); we use the spec's unsigned arithmetic throughout.
        # Callers guarantee a < b without wrapping (b < a + 8W did not wrap), so the linear
        # byte numbers a/8 .. (b-1)/8 are consecutive integers.
        cdef uint32_t w = self.size
        cdef uint32_t first = a >> 3
        cdef uint32_t last = (b - 1) >> 3
        cdef uint8_t head = <uint8_t>(0xff << (a & 7))          # bits a%8 .. 7
        cdef uint8_t tail = <uint8_t>(0xff >> (7 - ((b - 1) & 7)))   # bits 0 .. (b-1)%8
        cdef uint32_t full, pos, run
        if first == last:
            self._late[first % w] |= head & tail
            return
        self._late[first % w] |= head
        self._late[last % w] |= tail
        # Whole bytes strictly between: at most W - 1 of them, so no circular byte twice.
        full = last - first - 1
        pos = (first + 1) % w
        while full:
            run = w - pos if full > w - pos else full     # up to the end of the buffer
            memset(self._late + pos, 0xff, run)
            full -= run
            pos = 0
