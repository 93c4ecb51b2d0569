# cython: language_level=3
"""SPTPS record layer: tinc's ChaCha20-Poly1305 and the stream/datagram framing, one record at a
time and over PacketBatch bursts.

The cipher (sptps.md 2.1) is not a stock AEAD: for key K (first 32 bytes of the 64-byte SPTPS
key) and nonce N = seqno as 8 big-endian bytes, the Poly1305 key is ChaCha20 block 0 (first 32
bytes), the data is XORed with the keystream from block 1, and the tag covers the ciphertext
only. Reference implementation with the same API: tests/reference/record.py.

No I/O. Only tincapp.accel imports this module.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy, memmove

from sodium cimport sodium_api_t, load_sodium
from slotstatus cimport *

from tincapp.errors import DecryptError, WireError

cdef sodium_api_t S
load_sodium(&S)

cdef enum:
    _TAG_LEN = 16
    _KEY_LEN = 32

TAG_LEN = _TAG_LEN
DATAGRAM_HEADER_LEN = 4          # seqno
STREAM_HEADER_LEN = 2            # len
DATAGRAM_OVERHEAD = 4 + 1 + _TAG_LEN   # seqno, type, tag (tinc's SPTPS_DATAGRAM_OVERHEAD)
STREAM_OVERHEAD = 2 + 1 + _TAG_LEN     # len, type, tag
MAX_STREAM_DATA = 65535


cdef inline void _nonce(uint8_t* n, uint64_t seqno) noexcept nogil:
    # The 64-bit nonce of original ChaCha20: the sequence number, big-endian.
    cdef int i
    for i in range(8):
        n[7 - i] = <uint8_t>(seqno >> (8 * i))


cdef inline void _put_be32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 24); p[1] = <uint8_t>(v >> 16); p[2] = <uint8_t>(v >> 8); p[3] = <uint8_t>v


cdef inline uint32_t _get_be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline void _seal(const uint8_t* key, uint64_t seqno, const uint8_t* src, size_t n,
                       uint8_t* dst) noexcept nogil:
    # dst receives n ciphertext bytes then the 16-byte tag; dst may equal src.
    cdef uint8_t nonce[8]
    cdef uint8_t otk[64]
    _nonce(nonce, seqno)
    S.crypto_stream_chacha20(otk, 32, nonce, key)
    S.crypto_stream_chacha20_xor_ic(dst, src, n, nonce, 1, key)
    S.crypto_onetimeauth_poly1305(dst + n, dst, n, otk)
    S.sodium_memzero(otk, 32)


cdef inline int _open(const uint8_t* key, uint64_t seqno, const uint8_t* src, size_t n,
                      uint8_t* dst) noexcept nogil:
    # src holds n ciphertext bytes then the tag; dst receives n plaintext bytes (may equal src).
    # Returns 0 if authentic, -1 if not (dst untouched then). Tag check before decryption.
    cdef uint8_t nonce[8]
    cdef uint8_t otk[64]
    cdef uint8_t tag[_TAG_LEN]
    cdef int bad
    _nonce(nonce, seqno)
    S.crypto_stream_chacha20(otk, 32, nonce, key)
    S.crypto_onetimeauth_poly1305(tag, src, n, otk)
    S.sodium_memzero(otk, 32)
    bad = S.crypto_verify_16(tag, src + n)     # constant time
    if bad != 0:
        return -1
    S.crypto_stream_chacha20_xor_ic(dst, src, n, nonce, 1, key)
    return 0


cdef inline int _open_split(const uint8_t* key, uint64_t seqno, const uint8_t* src, size_t n,
                            uint8_t* type_out, uint8_t* data_out) noexcept nogil:
    # Like _open for a record whose plaintext is type | data, but the type goes to *type_out
    # and the n - 1 data bytes to data_out, which must not overlap src. Writes exactly n - 1
    # bytes there (a payload that fills its slot exactly stays inside it) and moves nothing.
    cdef uint8_t nonce[8]
    cdef uint8_t otk[64]
    cdef uint8_t tag[_TAG_LEN]
    cdef uint8_t first[64]
    cdef size_t head = n if n < 64 else 64
    _nonce(nonce, seqno)
    S.crypto_stream_chacha20(otk, 32, nonce, key)
    S.crypto_onetimeauth_poly1305(tag, src, n, otk)
    S.sodium_memzero(otk, 32)
    if S.crypto_verify_16(tag, src + n) != 0:
        return -1
    # keystream block 1 covers type and the first 63 data bytes; block 2 on, the rest
    S.crypto_stream_chacha20_xor_ic(first, src, head, nonce, 1, key)
    type_out[0] = first[0]
    memcpy(data_out, first + 1, head - 1)
    if n > 64:
        S.crypto_stream_chacha20_xor_ic(data_out + 63, src + 64, n - 64, nonce, 2, key)
    S.sodium_memzero(first, 64)
    return 0


cdef class RecordKey:
    """One direction's 64-byte SPTPS key. Only the first 32 bytes key the cipher (sptps.md 2.1)."""
    cdef uint8_t key[_KEY_LEN]

    def __cinit__(self, key):
        cdef const uint8_t[::1] k = key
        if k.shape[0] != 64 and k.shape[0] != 32:
            raise ValueError(f"an SPTPS key is 64 bytes, not {k.shape[0]}")
        memcpy(self.key, &k[0], _KEY_LEN)

    def __dealloc__(self):
        S.sodium_memzero(self.key, _KEY_LEN)

    def seal(self, uint64_t seqno, plaintext):
        """ciphertext || tag for `plaintext` under nonce `seqno`."""
        cdef const uint8_t[::1] pt = plaintext
        cdef size_t n = pt.shape[0]
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n + _TAG_LEN)
        cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
        with nogil:  # pt pinned by the memoryview, out owned here
            _seal(self.key, seqno, &pt[0] if n else o, n, o)
        return out

    def open(self, uint64_t seqno, data):
        """Plaintext of ciphertext || tag, or DecryptError."""
        cdef const uint8_t[::1] d = data
        cdef size_t n
        if d.shape[0] < _TAG_LEN:
            raise DecryptError(f"record of {d.shape[0]} bytes is shorter than its tag")
        n = d.shape[0] - _TAG_LEN
        cdef bytes out = PyBytes_FromStringAndSize(NULL, n)
        cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
        cdef int rc
        with nogil:  # d pinned by the memoryview, out owned here
            rc = _open(self.key, seqno, &d[0], n, o)
        if rc != 0:
            raise DecryptError("failed to decrypt and verify record")
        return out

    def verify(self, uint64_t seqno, data):
        """True iff ciphertext || tag is authentic; decrypts nothing, changes nothing."""
        cdef const uint8_t[::1] d = data
        cdef uint8_t nonce[8]
        cdef uint8_t otk[64]
        cdef uint8_t tag[_TAG_LEN]
        cdef size_t n
        if d.shape[0] < _TAG_LEN:
            return False
        n = d.shape[0] - _TAG_LEN
        with nogil:  # d pinned by the memoryview
            _nonce(nonce, seqno)
            S.crypto_stream_chacha20(otk, 32, nonce, self.key)
            S.crypto_onetimeauth_poly1305(tag, &d[0], n, otk)
            S.sodium_memzero(otk, 32)
        return S.crypto_verify_16(tag, &d[n]) == 0


# --- one record --------------------------------------------------------------------------

#  datagram record:  seqno:4 (clear) | E(type:1 | data) | tag:16
def seal_datagram(RecordKey key not None, uint32_t seqno, uint8_t type, data):
    cdef const uint8_t[::1] d = data
    cdef size_t n = d.shape[0]
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 21)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    _put_be32(o, seqno)
    o[4] = type
    if n:
        memcpy(o + 5, &d[0], n)
    with nogil:  # out owned here
        _seal(key.key, seqno, o + 4, n + 1, o + 4)
    return out


def open_datagram(RecordKey key not None, datagram):
    """(seqno, type, data) of an encrypted datagram record; WireError if short, DecryptError
    if forged. No replay check here: the session does it after authentication."""
    cdef const uint8_t[::1] d = datagram
    cdef size_t n = d.shape[0]
    if n < 21:
        raise WireError(f"received short packet ({n} bytes)")
    cdef uint32_t seqno = _get_be32(&d[0])
    cdef bytes pt = PyBytes_FromStringAndSize(NULL, n - 20)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(pt)
    cdef int rc
    with nogil:  # d pinned by the memoryview, pt owned here
        rc = _open(key.key, seqno, &d[4], n - 20, p)
    if rc != 0:
        raise DecryptError("failed to decrypt and verify packet")
    return seqno, p[0], pt[1:]


def verify_datagram(RecordKey key not None, datagram):
    """True iff the datagram record is authentic under `key` (tinc's sptps_verify_datagram
    without the replay part). Changes nothing."""
    cdef const uint8_t[::1] d = datagram
    if d.shape[0] < 21:
        return False
    return key.verify(_get_be32(&d[0]), d[4:])


#  stream record:  len:2 (clear, length of data) | E(type:1 | data) | tag:16
def seal_stream(RecordKey key not None, uint32_t seqno, uint8_t type, data):
    cdef const uint8_t[::1] d = data
    cdef size_t n = d.shape[0]
    if n > 65535:
        raise ValueError(f"a stream record carries at most 65535 bytes, not {n}")
    cdef bytes out = PyBytes_FromStringAndSize(NULL, n + 19)
    cdef uint8_t* o = <uint8_t*>PyBytes_AS_STRING(out)
    o[0] = <uint8_t>(n >> 8)
    o[1] = <uint8_t>n
    o[2] = type
    if n:
        memcpy(o + 3, &d[0], n)
    with nogil:  # out owned here
        _seal(key.key, seqno, o + 2, n + 1, o + 2)
    return out


def open_stream(RecordKey key not None, uint32_t seqno, body):
    """(type, data) of an encrypted stream record's body (everything after the length)."""
    cdef const uint8_t[::1] b = body
    cdef size_t n = b.shape[0]
    if n < 17:
        raise WireError(f"stream record body of {n} bytes is too short")
    cdef bytes pt = PyBytes_FromStringAndSize(NULL, n - 16)
    cdef uint8_t* p = <uint8_t*>PyBytes_AS_STRING(pt)
    cdef int rc
    with nogil:  # b pinned by the memoryview, pt owned here
        rc = _open(key.key, seqno, &b[0], n - 16, p)
    if rc != 0:
        raise DecryptError("failed to decrypt and verify record")
    return p[0], pt[1:]


# --- batches -----------------------------------------------------------------------------

def seal_batch(RecordKey key not None, uint32_t first_seqno, src, dst, size_t headroom=0,
               size_t src_offset=0):
    """Seal every OK slot of `src` (type in src.types, data in the slot from `src_offset` to
    its length) as a datagram record into the same slot of `dst`, after `headroom` bytes the
    caller fills (tinc's node IDs). Sequence numbers run from first_seqno, one per sealed slot;
    returns the next one. dst.status: OK, TOO_BIG (record does not fit the slot), SHORT (the
    slot is shorter than src_offset), EMPTY (src slot was not OK)."""
    cdef const uint8_t[::1] sbuf = src.buf
    cdef const uint32_t[::1] slen = src.lengths
    cdef const uint8_t[::1] stype = src.types
    cdef const uint8_t[::1] sstat = src.status
    cdef uint8_t[::1] dbuf = dst.buf
    cdef uint32_t[::1] dlen = dst.lengths
    cdef uint32_t[::1] dseq = dst.seqnos
    cdef uint8_t[::1] dtype = dst.types
    cdef uint8_t[::1] dstat = dst.status
    cdef Py_ssize_t count = src.count
    cdef Py_ssize_t sstride = src.slot_size, dstride = dst.slot_size
    cdef Py_ssize_t i
    cdef size_t n
    cdef uint32_t seqno = first_seqno
    cdef uint8_t* o
    if count > dst.capacity:
        raise ValueError("destination batch has fewer slots than the source")
    with nogil:  # all buffers pinned by the typed memoryviews above
        for i in range(count):
            if sstat[i] != SLOT_OK:
                dstat[i] = SLOT_EMPTY
                dlen[i] = 0
                continue
            if slen[i] < src_offset:
                dstat[i] = SLOT_SHORT
                dlen[i] = 0
                continue
            n = slen[i] - src_offset
            if headroom + n + 21 > <size_t>dstride:
                dstat[i] = SLOT_TOO_BIG
                dlen[i] = 0
                continue
            o = &dbuf[i * dstride] + headroom
            # data first: in place (src is dst) the header would overwrite unread data
            if n:
                memmove(o + 5, &sbuf[i * sstride] + src_offset, n)
            _put_be32(o, seqno)
            o[4] = stype[i]
            _seal(key.key, seqno, o + 4, n + 1, o + 4)
            dlen[i] = <uint32_t>(headroom + n + 21)
            dseq[i] = seqno
            dtype[i] = stype[i]
            dstat[i] = SLOT_OK
            seqno += 1
    dst.count = count
    return seqno


def open_batch(RecordKey key not None, src, dst, Py_ssize_t start=0, size_t offset=0,
               Py_ssize_t stop=-1):
    """Open the datagram records in src slots [start, stop) (stop -1: src.count; slots from
    stop on are left alone), each found `offset` bytes
    into its slot, into the same slots of dst: payload at the start of the slot, type in
    dst.types, seqno in dst.seqnos, status OK / SHORT / BAD_TAG / TOO_BIG / EMPTY.
    Stops after the first authentic record whose type is >= 128 (a handshake record may change
    the receive key) and returns the index after it; otherwise returns stop.
    No replay check: run the replay window over the OK slots afterwards."""
    cdef const uint8_t[::1] sbuf = src.buf
    cdef const uint32_t[::1] slen = src.lengths
    cdef const uint8_t[::1] sstat = src.status
    cdef uint8_t[::1] dbuf = dst.buf
    cdef uint32_t[::1] dlen = dst.lengths
    cdef uint32_t[::1] dseq = dst.seqnos
    cdef uint8_t[::1] dtype = dst.types
    cdef uint8_t[::1] dstat = dst.status
    cdef Py_ssize_t count = src.count
    cdef Py_ssize_t sstride = src.slot_size, dstride = dst.slot_size
    cdef Py_ssize_t i
    cdef size_t n, reclen
    cdef uint32_t seqno
    cdef const uint8_t* rec
    cdef uint8_t* o
    cdef uint8_t* pt
    cdef bint in_place = src is dst
    if count > dst.capacity:
        raise ValueError("destination batch has fewer slots than the source")
    if start < 0:
        start = 0
    if stop < 0 or stop > count:
        stop = count
    with nogil:  # all buffers pinned by the typed memoryviews above
        for i in range(start, stop):
            reclen = slen[i]               # read before dlen[i] is written: src may be dst
            dlen[i] = 0
            if sstat[i] != SLOT_OK:
                dstat[i] = SLOT_EMPTY
                continue
            if reclen < offset + 21:
                dstat[i] = SLOT_SHORT
                continue
            n = reclen - offset - 20           # type + data
            if n - 1 > <size_t>dstride:
                dstat[i] = SLOT_TOO_BIG
                continue
            rec = &sbuf[i * sstride] + offset
            seqno = _get_be32(rec)
            dseq[i] = seqno
            o = &dbuf[i * dstride]
            if in_place:
                # decrypt where the ciphertext is (libsodium allows exactly equal buffers,
                # not shifted overlapping ones), then move the data to the slot start
                pt = <uint8_t*>rec + 4
                if _open(key.key, seqno, rec + 4, n, pt) != 0:
                    dstat[i] = SLOT_BAD_TAG
                    continue
                dtype[i] = pt[0]
                memmove(o, pt + 1, n - 1)
            elif _open_split(key.key, seqno, rec + 4, n, &dtype[i], o) != 0:
                dstat[i] = SLOT_BAD_TAG
                continue
            dlen[i] = <uint32_t>(n - 1)
            dstat[i] = SLOT_OK
            if dtype[i] >= 128:
                stop = i + 1
                break
    dst.count = count
    return stop


def raw_seal_loop(key, buf, Py_ssize_t iterations):
    """Benchmark baseline: libsodium's ChaCha20 (Poly1305 key + data) and Poly1305 over `buf`,
    in place, `iterations` times, with no framing and no Python in the loop."""
    cdef const uint8_t[::1] k = key
    cdef uint8_t[::1] b = buf
    cdef uint8_t nonce[8]
    cdef uint8_t otk[64]
    cdef uint8_t tag[16]
    cdef Py_ssize_t i
    cdef size_t n = b.shape[0]
    if k.shape[0] < 32:
        raise ValueError("key must be at least 32 bytes")
    with nogil:  # k and b pinned by the typed memoryviews
        for i in range(iterations):
            _nonce(nonce, <uint64_t>i)
            S.crypto_stream_chacha20(otk, 32, nonce, &k[0])
            S.crypto_stream_chacha20_xor_ic(&b[0], &b[0], n, nonce, 1, &k[0])
            S.crypto_onetimeauth_poly1305(tag, &b[0], n, otk)
    return iterations
