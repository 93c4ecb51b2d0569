# cython: language_level=3
"""The data path's per-packet steps over a burst, so the steady state runs no Python per packet.

The shell (tincapp/io/dataplane.py) reads a burst, calls these to sort it, and hands whole
groups to the batch APIs of tincapp._record (seal/open) and tincapp._batchio (send/write).
Routing decisions are not made here: `cache` dicts filled by the router's slow path map a
destination address (4 bytes IPv4, 16 bytes IPv6, as found in the packet) to a small int.

Slots are PacketBatch slots; a packet of slot i starts `offset` bytes into it and ends at
lengths[i]. Only slots with status OK are looked at. Not thread-safe.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.dict cimport PyDict_GetItem
from cpython.object cimport PyObject
from libc.stdint cimport int32_t, uint8_t, uint32_t
from libc.string cimport memcmp, memcpy

from slotstatus cimport *

cdef enum:
    _IPPROTO_IPIP = 4
    _IPPROTO_TCP = 6
    _TCP_SYN = 0x02
    _PREFIX_LEN = 12


cdef inline object _dst_key(const uint8_t* p, size_t n):
    """The destination address of the IP packet at p as bytes, or None if it is not a whole
    IPv4/IPv6 header."""
    cdef uint8_t v = p[0] >> 4
    if v == 4 and n >= 20:
        return PyBytes_FromStringAndSize(<const char*>p + 16, 4)
    if v == 6 and n >= 40:
        return PyBytes_FromStringAndSize(<const char*>p + 24, 16)
    return None


cdef inline bint _needs_clamping(const uint8_t* p, size_t n) noexcept:
    """A TCP SYN (the only segments carrying an MSS option) or IP-in-IP: MSS clamping needs
    the router's slow path for it."""
    cdef size_t ihl
    if p[0] >> 4 == 4:
        if p[9] == _IPPROTO_IPIP:
            return True
        if p[9] != _IPPROTO_TCP:
            return False
        ihl = (p[0] & 15) * 4
        return n < ihl + 14 or (p[ihl + 13] & _TCP_SYN) != 0
    if p[6] != _IPPROTO_TCP:
        return False
    return n < 54 or (p[53] & _TCP_SYN) != 0


def classify_tx(batch, size_t offset, dict cache not None, int32_t[::1] targets,
                list hits=None):
    """For each OK slot, the value `cache` holds for its destination address, or -1 (slow path:
    no entry, not IPv4/IPv6, or a TCP SYN / IP-in-IP packet, which the router's MSS clamping
    may change: whether it does depends on the node it goes through). Sets the record type of
    every slot to 0 (a plain router-mode packet). Returns the number of -1 slots; `hits`, if
    given, is cleared and gets each value found, once, in order of first appearance."""
    cdef uint8_t[::1] buf = batch.buf
    cdef uint32_t[::1] lens = batch.lengths
    cdef uint8_t[::1] types = batch.types
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i, count = batch.count, slow = 0
    cdef const uint8_t* p
    cdef size_t n
    cdef PyObject* hit
    cdef int32_t value, last = -1
    if targets.shape[0] < count:
        raise ValueError("targets is shorter than the batch")
    if hits is not None:
        del hits[:]
    for i in range(count):
        targets[i] = -1
        types[i] = 0
        if status[i] != SLOT_OK or lens[i] <= offset:
            slow += status[i] == SLOT_OK
            continue
        p = &buf[i * stride] + offset
        n = lens[i] - offset
        key = _dst_key(p, n)
        if key is None or _needs_clamping(p, n):
            slow += 1
            continue
        hit = PyDict_GetItem(cache, key)
        if hit == NULL:
            slow += 1
            continue
        value = <int32_t><object>hit
        targets[i] = value
        if hits is not None and value != last:
            last = value                  # runs to one destination are the common case
            if value not in hits:
                hits.append(value)
    return slow


def select_slots(batch, const int32_t[::1] targets, int32_t value, uint8_t[::1] saved,
                 size_t max_len):
    """Keep status OK only for the OK slots whose target is `value` and whose length is at most
    max_len; the others become EMPTY. The previous statuses go to `saved` (restore_status puts
    them back). Returns how many slots were selected."""
    cdef uint8_t[::1] status = batch.status
    cdef uint32_t[::1] lens = batch.lengths
    cdef Py_ssize_t i, count = batch.count, selected = 0
    for i in range(count):
        saved[i] = status[i]
        if status[i] == SLOT_OK and targets[i] == value and lens[i] <= max_len:
            selected += 1
        else:
            status[i] = SLOT_EMPTY
    return selected


def restore_status(batch, const uint8_t[::1] saved):
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t i
    for i in range(batch.count):
        status[i] = saved[i]


def mark_done(batch, int32_t[::1] targets, int32_t value, const uint8_t[::1] sent):
    """After a group went out: its slots get target -2 if `sent` (the sealed batch's status)
    says OK, so that only what is left is handed to the slow path."""
    cdef Py_ssize_t i
    for i in range(batch.count):
        if targets[i] == value and sent[i] == SLOT_OK:
            targets[i] = -2


def set_prefix(batch, const uint8_t[::1] prefix, Py_ssize_t start=0, Py_ssize_t stop=-1):
    """Write the 12-byte node-ID prefix at the start of every OK slot in [start, stop);
    returns the number of bytes in those slots."""
    cdef uint8_t[::1] buf = batch.buf
    cdef uint32_t[::1] lens = batch.lengths
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i
    cdef size_t total = 0
    if prefix.shape[0] != _PREFIX_LEN:
        raise ValueError("a node-ID prefix is 12 bytes")
    if stop < 0 or stop > batch.count:
        stop = batch.count
    for i in range(max(start, 0), stop):
        if status[i] == SLOT_OK and lens[i] >= _PREFIX_LEN:
            memcpy(&buf[i * stride], &prefix[0], _PREFIX_LEN)
            total += lens[i]
    return total


def check_prefix(batch, Py_ssize_t start, Py_ssize_t stop, const uint8_t[::1] expected):
    """True if every OK slot in [start, stop) starts with the 12 bytes `expected` (a zero
    destination ID and the sender's ID: a datagram straight from its originator to us)."""
    cdef uint8_t[::1] buf = batch.buf
    cdef uint32_t[::1] lens = batch.lengths
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i
    if expected.shape[0] != _PREFIX_LEN:
        raise ValueError("a node-ID prefix is 12 bytes")
    for i in range(start, stop):
        if status[i] != SLOT_OK:
            continue
        if lens[i] < _PREFIX_LEN or memcmp(&buf[i * stride], &expected[0], _PREFIX_LEN) != 0:
            return False
    return True


def classify_rx(batch, Py_ssize_t start, Py_ssize_t stop, dict local not None,
                int32_t[::1] flags):
    """For the opened records in OK slots [start, stop) (payload at the slot start): flags[i]
    = 1 if it is a plain router-mode packet (type 0) whose destination is in `local` (ours:
    straight to the device) and that MSS clamping leaves alone (not a TCP SYN or IP-in-IP:
    tinc clamps those on the way to its own device too), else 0 (slow path). Returns (fast
    slots, their bytes, the longest of them)."""
    cdef uint8_t[::1] buf = batch.buf
    cdef uint32_t[::1] lens = batch.lengths
    cdef uint8_t[::1] types = batch.types
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i, fast = 0
    cdef size_t total = 0, longest = 0
    for i in range(start, stop):
        flags[i] = 0
        if status[i] != SLOT_OK or types[i] != 0 or lens[i] == 0:
            continue
        key = _dst_key(&buf[i * stride], lens[i])
        if (key is None or _needs_clamping(&buf[i * stride], lens[i])
                or PyDict_GetItem(local, key) == NULL):
            continue
        flags[i] = 1
        fast += 1
        total += lens[i]
        # only the records handled here: the slow path counts the others (probes included)
        if lens[i] > longest:
            longest = lens[i]
    return fast, total, longest


def keep_flagged(batch, Py_ssize_t start, Py_ssize_t stop, const int32_t[::1] flags):
    """Status EMPTY for the slots in [start, stop) whose flag is 0 (already handled)."""
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t i
    for i in range(start, stop):
        if flags[i] == 0:
            status[i] = SLOT_EMPTY


def common_prefix(batch, Py_ssize_t start, Py_ssize_t stop):
    """(prefix, longest): the 12-byte node-ID prefix shared by every OK slot in [start, stop)
    and the longest such slot, or (None, 0) if they differ or none is OK (a run of datagrams
    that one peer relays from one originator to one destination)."""
    cdef uint8_t[::1] buf = batch.buf
    cdef uint32_t[::1] lens = batch.lengths
    cdef uint8_t[::1] status = batch.status
    cdef Py_ssize_t stride = batch.slot_size
    cdef Py_ssize_t i, first = -1
    cdef size_t longest = 0
    for i in range(start, stop):
        if status[i] != SLOT_OK:
            continue
        if lens[i] < _PREFIX_LEN:
            return None, 0
        if first < 0:
            first = i
        elif memcmp(&buf[i * stride], &buf[first * stride], _PREFIX_LEN) != 0:
            return None, 0
        if lens[i] > longest:
            longest = lens[i]
    if first < 0:
        return None, 0
    return PyBytes_FromStringAndSize(<const char*>&buf[first * stride], _PREFIX_LEN), longest
