"""Plain-Python reference of tincapp._record (pyx/record.pyx), same API minus raw_seal_loop.

ChaCha20 (original Bernstein variant: 64-bit block counter, 64-bit nonce) and Poly1305 are
written out here from their definitions, so this module shares no code with libsodium and a
match with the compiled module is a real cross-check. Slow (pure Python); tests only.

tinc's record cipher (sptps.md 2.1), for key K = first 32 bytes and N = seqno as 8 big-endian
bytes: Poly1305 key = first 32 bytes of ChaCha20 block 0; ciphertext = plaintext XOR keystream
from block 1; tag = Poly1305 over the ciphertext only; output = ciphertext || tag.
No I/O.
"""
import hmac
import struct

from tincapp.datapath.batch import (SLOT_BAD_TAG, SLOT_EMPTY, SLOT_OK, SLOT_SHORT,
                                    SLOT_TOO_BIG)
from tincapp.errors import DecryptError, WireError

TAG_LEN = 16
DATAGRAM_HEADER_LEN = 4          # seqno
STREAM_HEADER_LEN = 2            # len
DATAGRAM_OVERHEAD = 4 + 1 + TAG_LEN    # seqno, type, tag
STREAM_OVERHEAD = 2 + 1 + TAG_LEN      # len, type, tag
MAX_STREAM_DATA = 65535

_M32 = 0xFFFFFFFF


def _uint(value, bits, what):
    # Mirrors Cython's conversion to uintN_t: out-of-range values raise OverflowError.
    if not 0 <= value < (1 << bits):
        raise OverflowError(f"{what} {value} does not fit in uint{bits}_t")
    return value


# --- ChaCha20, original variant ----------------------------------------------------------------
#
#  state words:  0..3 "expand 32-byte k" | 4..11 key | 12,13 block counter (LE 64-bit)
#                | 14,15 nonce (8 bytes as two LE words)

_SIGMA = struct.unpack("<4I", b"expand 32-byte k")


def _rotl(v, c):
    return ((v << c) & _M32) | (v >> (32 - c))


def _quarter(x, a, b, c, d):
    x[a] = (x[a] + x[b]) & _M32; x[d] = _rotl(x[d] ^ x[a], 16)
    x[c] = (x[c] + x[d]) & _M32; x[b] = _rotl(x[b] ^ x[c], 12)
    x[a] = (x[a] + x[b]) & _M32; x[d] = _rotl(x[d] ^ x[a], 8)
    x[c] = (x[c] + x[d]) & _M32; x[b] = _rotl(x[b] ^ x[c], 7)


def chacha20_block(key32, nonce8, counter):
    """One 64-byte keystream block of original ChaCha20 (20 rounds)."""
    state = [*_SIGMA, *struct.unpack("<8I", key32),
             counter & _M32, (counter >> 32) & _M32, *struct.unpack("<2I", nonce8)]
    x = list(state)
    for _ in range(10):
        _quarter(x, 0, 4, 8, 12); _quarter(x, 1, 5, 9, 13)      # columns
        _quarter(x, 2, 6, 10, 14); _quarter(x, 3, 7, 11, 15)
        _quarter(x, 0, 5, 10, 15); _quarter(x, 1, 6, 11, 12)    # diagonals
        _quarter(x, 2, 7, 8, 13); _quarter(x, 3, 4, 9, 14)
    return struct.pack("<16I", *((x[i] + state[i]) & _M32 for i in range(16)))


def chacha20_xor(key32, nonce8, counter, data):
    """data XOR the keystream starting at block `counter`."""
    n = len(data)
    if n == 0:
        return b""
    stream = b"".join(chacha20_block(key32, nonce8, counter + i) for i in range((n + 63) // 64))
    x = int.from_bytes(data, "little") ^ int.from_bytes(stream[:n], "little")
    return x.to_bytes(n, "little")


# --- Poly1305 ----------------------------------------------------------------------------------

_P1305 = (1 << 130) - 5
_CLAMP = 0x0FFFFFFC0FFFFFFC0FFFFFFC0FFFFFFF


def poly1305(otk32, msg):
    """16-byte Poly1305 tag of msg under one-time key otk32 (r clamped, s added mod 2^128)."""
    r = int.from_bytes(otk32[:16], "little") & _CLAMP
    s = int.from_bytes(otk32[16:32], "little")
    acc = 0
    for i in range(0, len(msg), 16):
        block = msg[i:i + 16] + b"\x01"      # each block gets a high 1 byte, short last one too
        acc = (acc + int.from_bytes(block, "little")) * r % _P1305
    return ((acc + s) & ((1 << 128) - 1)).to_bytes(16, "little")


# --- tinc's record cipher ----------------------------------------------------------------------

def _nonce(seqno):
    return seqno.to_bytes(8, "big")


def _seal(key32, seqno, plaintext):
    nonce = _nonce(seqno)
    otk = chacha20_block(key32, nonce, 0)[:32]
    ct = chacha20_xor(key32, nonce, 1, plaintext)
    return ct + poly1305(otk, ct)


def _open(key32, seqno, data):
    # data = ciphertext || tag, len >= 16. None if the tag is wrong. Tag check first.
    nonce = _nonce(seqno)
    ct, tag = data[:-TAG_LEN], data[-TAG_LEN:]
    otk = chacha20_block(key32, nonce, 0)[:32]
    if not hmac.compare_digest(poly1305(otk, ct), tag):
        return None
    return chacha20_xor(key32, nonce, 1, ct)


class RecordKey:
    """One direction's 64-byte SPTPS key. Only the first 32 bytes key the cipher."""

    def __init__(self, key):
        key = bytes(memoryview(key))
        if len(key) not in (32, 64):
            raise ValueError(f"an SPTPS key is 64 bytes, not {len(key)}")
        self._key = key[:32]

    def seal(self, seqno, plaintext):
        return _seal(self._key, _uint(seqno, 64, "seqno"), bytes(plaintext))

    def open(self, seqno, data):
        data = bytes(data)
        seqno = _uint(seqno, 64, "seqno")
        if len(data) < TAG_LEN:
            raise DecryptError(f"record of {len(data)} bytes is shorter than its tag")
        pt = _open(self._key, seqno, data)
        if pt is None:
            raise DecryptError("failed to decrypt and verify record")
        return pt

    def verify(self, seqno, data):
        data = bytes(data)
        seqno = _uint(seqno, 64, "seqno")
        if len(data) < TAG_LEN:
            return False
        nonce = _nonce(seqno)
        otk = chacha20_block(self._key, nonce, 0)[:32]
        return hmac.compare_digest(poly1305(otk, data[:-TAG_LEN]), data[-TAG_LEN:])


def _key(key):
    if not isinstance(key, RecordKey):
        raise TypeError("key must be a (reference) RecordKey")
    return key


# --- one record ------------------------------------------------------------------------------

#  datagram record:  seqno:4 (clear) | E(type:1 | data) | tag:16
def seal_datagram(key, seqno, type, data):
    seqno = _uint(seqno, 32, "seqno")
    type = _uint(type, 8, "type")
    return seqno.to_bytes(4, "big") + _seal(_key(key)._key, seqno, bytes([type]) + bytes(data))


def open_datagram(key, datagram):
    d = bytes(datagram)
    if len(d) < DATAGRAM_OVERHEAD:
        raise WireError(f"received short packet ({len(d)} bytes)")
    seqno = int.from_bytes(d[:4], "big")
    pt = _open(_key(key)._key, seqno, d[4:])
    if pt is None:
        raise DecryptError("failed to decrypt and verify packet")
    return seqno, pt[0], pt[1:]


def verify_datagram(key, datagram):
    d = bytes(datagram)
    if len(d) < DATAGRAM_OVERHEAD:
        return False
    return _key(key).verify(int.from_bytes(d[:4], "big"), d[4:])


#  stream record:  len:2 (clear, length of data) | E(type:1 | data) | tag:16
def seal_stream(key, seqno, type, data):
    seqno = _uint(seqno, 32, "seqno")
    type = _uint(type, 8, "type")
    data = bytes(data)
    if len(data) > MAX_STREAM_DATA:
        raise ValueError(f"a stream record carries at most 65535 bytes, not {len(data)}")
    return len(data).to_bytes(2, "big") + _seal(_key(key)._key, seqno, bytes([type]) + data)


def open_stream(key, seqno, body):
    seqno = _uint(seqno, 32, "seqno")
    b = bytes(body)
    if len(b) < 1 + TAG_LEN:
        raise WireError(f"stream record body of {len(b)} bytes is too short")
    pt = _open(_key(key)._key, seqno, b)
    if pt is None:
        raise DecryptError("failed to decrypt and verify record")
    return pt[0], pt[1:]


# --- batches -----------------------------------------------------------------------------------

def seal_batch(key, first_seqno, src, dst, headroom=0, src_offset=0):
    """Seal every OK slot of src (data from src_offset to its length) as a datagram record
    into the same slot of dst after `headroom` bytes; seqnos from first_seqno, one per sealed
    slot; returns the next one. dst.status: OK, TOO_BIG, SHORT (slot shorter than
    src_offset), EMPTY (src slot not OK); dst.lengths = 0 for all but OK."""
    key = _key(key)
    seqno = _uint(first_seqno, 32, "first_seqno")
    headroom = _uint(headroom, 64, "headroom")
    src_offset = _uint(src_offset, 64, "src_offset")
    count = src.count
    if count > dst.capacity:
        raise ValueError("destination batch has fewer slots than the source")
    for i in range(count):
        if src.status[i] != SLOT_OK:
            dst.status[i] = SLOT_EMPTY
            dst.lengths[i] = 0
            continue
        if src.lengths[i] < src_offset:
            dst.status[i] = SLOT_SHORT
            dst.lengths[i] = 0
            continue
        n = src.lengths[i] - src_offset
        if headroom + n + DATAGRAM_OVERHEAD > dst.slot_size:
            dst.status[i] = SLOT_TOO_BIG
            dst.lengths[i] = 0
            continue
        first = i * src.slot_size + src_offset
        data = bytes(src.buf[first:first + n])
        record = seal_datagram(key, seqno, src.types[i], data)
        start = i * dst.slot_size + headroom
        dst.buf[start:start + len(record)] = record
        dst.lengths[i] = headroom + len(record)
        dst.seqnos[i] = seqno
        dst.types[i] = src.types[i]
        dst.status[i] = SLOT_OK
        seqno = (seqno + 1) & _M32
    dst.count = count
    return seqno


def open_batch(key, src, dst, start=0, offset=0, stop=-1):
    """Open the datagram records in src slots [start, stop) (stop -1: src.count), each
    `offset` bytes into its
    slot, into the same slots of dst: payload at the slot start, type/seqno in dst.types/seqnos,
    status OK / SHORT / BAD_TAG / TOO_BIG / EMPTY. dst.lengths[i] = 0 unless OK; dst.seqnos[i]
    is written once the record is long enough and fits (OK and BAD_TAG), dst.types[i] only for
    OK. Stops after the first authentic record of type >= 128 and returns the index after it;
    otherwise returns stop. Slots outside [start, stop) are not touched."""
    key = _key(key)
    offset = _uint(offset, 64, "offset")
    count = src.count
    if count > dst.capacity:
        raise ValueError("destination batch has fewer slots than the source")
    start = max(start, 0)
    if stop < 0 or stop > count:
        stop = count
    for i in range(start, stop):
        slot_len = src.lengths[i]
        status = src.status[i]
        dst.lengths[i] = 0
        if status != SLOT_OK:
            dst.status[i] = SLOT_EMPTY
            continue
        if slot_len < offset + DATAGRAM_OVERHEAD:
            dst.status[i] = SLOT_SHORT
            continue
        data_len = slot_len - offset - DATAGRAM_OVERHEAD
        if data_len > dst.slot_size:
            dst.status[i] = SLOT_TOO_BIG
            continue
        rec_start = i * src.slot_size + offset
        record = bytes(src.buf[rec_start:rec_start + slot_len - offset])
        seqno = int.from_bytes(record[:4], "big")
        dst.seqnos[i] = seqno
        pt = _open(key._key, seqno, record[4:])
        if pt is None:
            dst.status[i] = SLOT_BAD_TAG
            continue
        d0 = i * dst.slot_size
        dst.types[i] = pt[0]
        dst.buf[d0:d0 + data_len] = pt[1:]
        dst.lengths[i] = data_len
        dst.status[i] = SLOT_OK
        if pt[0] >= 128:        # a handshake record may change the receive key
            stop = i + 1
            break
    dst.count = count
    return stop
