# Per-slot status codes of a PacketBatch; the same numbers as tincapp/datapath/batch.py.
cdef enum:
    SLOT_OK = 0
    SLOT_SHORT = 1
    SLOT_BAD_TAG = 2
    SLOT_REPLAYED = 3
    SLOT_FUTURE = 4
    SLOT_TOO_BIG = 5
    SLOT_BAD_TYPE = 6
    SLOT_EMPTY = 7
