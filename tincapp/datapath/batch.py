"""PacketBatch: a burst of packets in preallocated buffers, the unit of every data-path API.

A batch owns one bytearray cut into `capacity` slots of `slot_size` bytes, plus per-slot arrays:
`lengths` (bytes used in the slot), `seqnos` (SPTPS sequence number), `types` (SPTPS record
type) and `status` (one of the SLOT_* values below). Compiled code reads and writes these
buffers directly; nothing allocates a Python object per packet. A single packet is a batch of
one. Not thread-safe.
"""
from array import array

# Per-slot status. pyx/slotstatus.pxd holds the same numbers for compiled code
# (tests/unit/test_batch.py checks they agree).
SLOT_OK = 0          # slot holds a good packet/record
SLOT_SHORT = 1       # too short to be a record
SLOT_BAD_TAG = 2     # failed authentication ("Failed to decrypt and verify packet")
SLOT_REPLAYED = 3    # authentic, but late or already received
SLOT_FUTURE = 4      # authentic, but too far ahead of the window (dropped)
SLOT_TOO_BIG = 5     # the result does not fit in the destination slot
SLOT_BAD_TYPE = 6    # record type the receiver does not accept
SLOT_EMPTY = 7       # nothing in this slot / skipped

SLOT_NAMES = {
    SLOT_OK: "ok", SLOT_SHORT: "short", SLOT_BAD_TAG: "bad tag", SLOT_REPLAYED: "replayed",
    SLOT_FUTURE: "future", SLOT_TOO_BIG: "too big", SLOT_BAD_TYPE: "bad type",
    SLOT_EMPTY: "empty",
}

DEFAULT_SLOT_SIZE = 2048   # an Ethernet frame (1518) plus SPTPS and UDP framing, rounded up


class PacketBatch:
    """Fixed-capacity packet slots. `count` says how many leading slots are in use."""

    __slots__ = ("capacity", "slot_size", "count", "buf", "lengths", "seqnos", "types",
                 "status")

    def __init__(self, capacity, slot_size=DEFAULT_SLOT_SIZE):
        if capacity < 1 or slot_size < 1:
            raise ValueError("a batch needs at least one slot of at least one byte")
        self.capacity = capacity
        self.slot_size = slot_size
        self.count = 0
        self.buf = bytearray(capacity * slot_size)
        self.lengths = array("I", bytes(4 * capacity))
        self.seqnos = array("I", bytes(4 * capacity))
        self.types = bytearray(capacity)
        self.status = bytearray(capacity)

    def clear(self):
        self.count = 0

    def append(self, data, type=0, seqno=0):
        """Copy `data` into the next free slot and return its index."""
        i = self.count
        if i >= self.capacity:
            raise IndexError("batch is full")
        if len(data) > self.slot_size:
            raise ValueError(f"{len(data)} bytes do not fit a {self.slot_size}-byte slot")
        start = i * self.slot_size
        self.buf[start:start + len(data)] = data
        self.lengths[i] = len(data)
        self.types[i] = type
        self.seqnos[i] = seqno
        self.status[i] = SLOT_OK
        self.count = i + 1
        return i

    def view(self, i):
        """A zero-copy view of slot i's bytes (valid until the slot is rewritten)."""
        start = i * self.slot_size
        return memoryview(self.buf)[start:start + self.lengths[i]]

    def get(self, i):
        return bytes(self.view(i))

    def __len__(self):
        return self.count

    def __repr__(self):
        return f"<PacketBatch {self.count}/{self.capacity} x {self.slot_size}B>"
