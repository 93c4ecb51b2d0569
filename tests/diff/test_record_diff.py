"""Compiled record layer (tincapp._record) vs the pure-Python reference (tests/reference/record.py).

Random keys, sequence numbers, lengths and batches; the two must agree byte for byte: outputs,
exceptions, and for batches every status, length, seqno, type and payload byte. Destination
batches start with identical random garbage, so a field one side writes and the other does not
shows up as a difference.
"""
import random

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.reference import record as R
from tincapp import accel
from tincapp.datapath.batch import SLOT_NAMES, SLOT_OK, SLOT_SHORT, PacketBatch
from tincapp.errors import DecryptError, WireError

C = accel.record
SLOW = settings(deadline=None, max_examples=100,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

keys = st.one_of(st.binary(min_size=64, max_size=64), st.binary(min_size=32, max_size=32))
seqno32 = st.one_of(st.integers(0, 2**32 - 1), st.sampled_from([0, 1, 2**31, 2**32 - 1]))
seqno64 = st.one_of(seqno32, st.integers(0, 2**64 - 1), st.just(2**64 - 1))
payloads = st.one_of(st.binary(max_size=2000), st.binary(max_size=70))
types = st.integers(0, 255)


def outcome(fn, *args):
    """Result or exception class of fn(*args), to compare the two implementations."""
    try:
        return ("ok", fn(*args))
    except (DecryptError, WireError, ValueError, OverflowError) as e:
        return ("raised", type(e))


def tamper(data, where, bit):
    b = bytearray(data)
    b[where % len(b)] ^= 1 << bit
    return bytes(b)


# --- one record ----------------------------------------------------------------------------

@SLOW
@given(key=keys, seqno=seqno64, data=payloads, where=st.integers(0, 10**6), bit=st.integers(0, 7))
def test_seal_open_verify(key, seqno, data, where, bit):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    sealed = kc.seal(seqno, data)
    assert kr.seal(seqno, data) == sealed
    assert len(sealed) == len(data) + 16
    assert kc.open(seqno, sealed) == kr.open(seqno, sealed) == data
    assert kc.verify(seqno, sealed) is kr.verify(seqno, sealed) is True
    bad = tamper(sealed, where, bit)
    assert outcome(kc.open, seqno, bad) == outcome(kr.open, seqno, bad) == ("raised", DecryptError)
    assert kc.verify(seqno, bad) is kr.verify(seqno, bad) is False


@SLOW
@given(key=keys, seqno=seqno64, junk=st.binary(max_size=80))
def test_open_junk(key, seqno, junk):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    assert outcome(kc.open, seqno, junk) == outcome(kr.open, seqno, junk)
    assert kc.verify(seqno, junk) == kr.verify(seqno, junk)


@SLOW
@given(key=keys, seqno=seqno32, type=types, data=payloads, where=st.integers(0, 10**6),
       bit=st.integers(0, 7), cut=st.integers(0, 25))
def test_datagram(key, seqno, type, data, where, bit, cut):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    dgram = C.seal_datagram(kc, seqno, type, data)
    assert R.seal_datagram(kr, seqno, type, data) == dgram
    assert len(dgram) == len(data) + R.DATAGRAM_OVERHEAD
    assert C.open_datagram(kc, dgram) == R.open_datagram(kr, dgram) == (seqno, type, data)
    assert C.verify_datagram(kc, dgram) is R.verify_datagram(kr, dgram) is True
    for bad in (tamper(dgram, where, bit), dgram[:min(cut, len(dgram) - 1)]):
        assert outcome(C.open_datagram, kc, bad) == outcome(R.open_datagram, kr, bad)
        assert outcome(C.open_datagram, kc, bad)[0] == "raised"
        assert C.verify_datagram(kc, bad) is R.verify_datagram(kr, bad) is False


@SLOW
@given(key=keys, seqno=seqno32, type=types, data=payloads, where=st.integers(0, 10**6),
       bit=st.integers(0, 7), cut=st.integers(0, 20))
def test_stream(key, seqno, type, data, where, bit, cut):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    rec = C.seal_stream(kc, seqno, type, data)
    assert R.seal_stream(kr, seqno, type, data) == rec
    assert int.from_bytes(rec[:2], "big") == len(data)
    body = rec[2:]
    assert C.open_stream(kc, seqno, body) == R.open_stream(kr, seqno, body) == (type, data)
    for bad_seqno, bad in ((seqno, tamper(body, where, bit)), (seqno, body[:min(cut, len(body) - 1)]),
                           ((seqno + 1) % 2**32, body)):
        assert outcome(C.open_stream, kc, bad_seqno, bad) == \
            outcome(R.open_stream, kr, bad_seqno, bad)
        assert outcome(C.open_stream, kc, bad_seqno, bad)[0] == "raised"


@pytest.mark.parametrize("call", [
    lambda m, k: m.seal_datagram(k, 0, 256, b""),
    lambda m, k: m.seal_datagram(k, -1, 0, b""),
    lambda m, k: m.seal_datagram(k, 2**32, 0, b""),
    lambda m, k: m.seal_stream(k, 0, 0, bytes(65536)),
    lambda m, k: m.seal_stream(k, 2**32, 0, b""),
    lambda m, k: m.open_stream(k, 0, bytes(16)),
    lambda m, k: m.open_datagram(k, bytes(20)),
    lambda m, k: k.seal(2**64, b""),
    lambda m, k: k.open(0, bytes(15)),
    lambda m, k: m.RecordKey(bytes(63)),
])
def test_argument_errors_agree(call):
    key = bytes(range(64))
    c = outcome(call, C, C.RecordKey(key))
    r = outcome(call, R, R.RecordKey(key))
    assert c == r and c[0] == "raised"


def test_stream_limit_is_inclusive():
    kc, kr = C.RecordKey(bytes(64)), R.RecordKey(bytes(64))
    assert C.seal_stream(kc, 3, 1, bytes(65535)) == R.seal_stream(kr, 3, 1, bytes(65535))


# --- batches -------------------------------------------------------------------------------

def garbage_batch(capacity, slot_size, seed):
    """A batch whose buffers all hold the same pseudo-random garbage for the same seed."""
    rnd = random.Random(seed)
    b = PacketBatch(capacity, slot_size)
    b.buf[:] = rnd.randbytes(len(b.buf))
    for i in range(capacity):
        b.lengths[i] = rnd.getrandbits(32)
        b.seqnos[i] = rnd.getrandbits(32)
        b.types[i] = rnd.getrandbits(8)
        b.status[i] = rnd.getrandbits(8)
    b.count = rnd.randrange(capacity + 1)
    return b


def clone(b):
    c = PacketBatch(b.capacity, b.slot_size)
    c.buf[:] = b.buf
    c.lengths[:] = b.lengths
    c.seqnos[:] = b.seqnos
    c.types[:] = b.types
    c.status[:] = b.status
    c.count = b.count
    return c


def fields(b):
    return (b.count, list(b.lengths), list(b.seqnos), bytes(b.types), bytes(b.status))


@st.composite
def plain_batches(draw, max_slots=8, max_len=600):
    """A source batch of plaintexts: random types, lengths and statuses (mostly OK)."""
    slot_size = draw(st.integers(1, max_len))
    n = draw(st.integers(0, max_slots))
    b = PacketBatch(max(n, 1), slot_size)
    for _ in range(n):
        data = draw(st.binary(max_size=slot_size))
        i = b.append(data, type=draw(types), seqno=draw(seqno32))
        b.status[i] = draw(st.sampled_from([SLOT_OK] * 6 + list(range(1, 8))))
    return b


@SLOW
@given(key=keys, first=seqno32, src=plain_batches(), extra=st.integers(0, 3),
       dst_slot=st.integers(1, 700), headroom=st.integers(0, 40), seed=st.integers(0, 2**32),
       src_offset=st.sampled_from([0, 0, 1, 14, 30]))
def test_seal_batch(key, first, src, extra, dst_slot, headroom, seed, src_offset):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    dst_c = garbage_batch(src.count + extra or 1, dst_slot, seed)
    dst_r = clone(dst_c)
    src_before = clone(src)
    nxt = C.seal_batch(kc, first, src, dst_c, headroom, src_offset)
    assert R.seal_batch(kr, first, src, dst_r, headroom, src_offset) == nxt
    assert fields(dst_c) == fields(dst_r)
    assert dst_c.buf == dst_r.buf
    assert fields(src) == fields(src_before) and src.buf == src_before.buf
    sealed = [i for i in range(src.count) if dst_c.status[i] == SLOT_OK]
    assert nxt == (first + len(sealed)) % 2**32
    for i in sealed:   # each sealed slot opens back to its source
        rec = bytes(dst_c.view(i)[headroom:])
        assert C.open_datagram(kc, rec) == (dst_c.seqnos[i], src.types[i],
                                            src.get(i)[src_offset:])
    for i in range(src.count):
        if src.status[i] == SLOT_OK and src.lengths[i] < src_offset:
            assert dst_c.status[i] == SLOT_SHORT


@SLOW
@given(key=keys, first=seqno32, src=plain_batches(), headroom=st.integers(0, 40))
def test_seal_batch_in_place(key, first, src, headroom):
    # Headroom past the longest plaintext: the header must not land on unread data (for the
    # overlapping case see test_seal_batch_in_place_overlapping below).
    headroom += max([src.lengths[i] for i in range(src.count)], default=0)
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    bc, br = clone(src), clone(src)
    assert C.seal_batch(kc, first, bc, bc, headroom) == R.seal_batch(kr, first, br, br, headroom)
    assert fields(bc) == fields(br)
    assert bc.buf == br.buf


@st.composite
def record_batches(draw):
    """(key, src batch of datagram records at `offset`, offset): sealed with the reference,
    then damaged at random: statuses, tampered bytes, truncations, handshake-type records."""
    key = draw(keys)
    offset = draw(st.integers(0, 24))
    plain = draw(plain_batches(max_slots=8, max_len=400))
    for i in range(plain.count):
        plain.types[i] = draw(st.sampled_from([0, 1, 5, 127, 128, 129, 255]))
    slot = draw(st.integers(offset + 21, offset + 21 + 450))
    src = PacketBatch(max(plain.count, 1), slot)
    R.seal_batch(R.RecordKey(key), draw(seqno32), plain, src, offset)
    for i in range(src.count):
        action = draw(st.sampled_from(["keep"] * 4 + ["status", "tamper", "cut", "junk"]))
        if action == "status":
            src.status[i] = draw(st.integers(1, 7))
        elif action == "tamper" and src.lengths[i]:
            pos = i * slot + draw(st.integers(0, src.lengths[i] - 1))
            src.buf[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "cut":
            src.lengths[i] = draw(st.integers(0, src.lengths[i]))
        elif action == "junk":
            n = draw(st.integers(0, slot))
            src.buf[i * slot:i * slot + n] = draw(st.binary(min_size=n, max_size=n))
            src.lengths[i] = n
            src.status[i] = SLOT_OK
    return key, src, offset


def check_open_batch_agrees(key, src, offset, dst_slot, start, seed, extra=0, stop=-1):
    kc, kr = C.RecordKey(key), R.RecordKey(key)
    dst_c = garbage_batch(src.count + extra or 1, dst_slot, seed)
    dst_r = clone(dst_c)
    src_before = clone(src)
    stop = C.open_batch(kc, src, dst_c, start, offset, stop)
    assert R.open_batch(kr, src, dst_r, start, offset, stop) == stop
    assert fields(dst_c) == fields(dst_r)
    assert fields(src) == fields(src_before) and src.buf == src_before.buf
    # Payloads equal, and nothing outside them written (a payload that fills its slot
    # exactly must not spill into the next one).
    assert dst_c.buf == dst_r.buf
    return dst_c, stop


@SLOW
@given(rb=record_batches(), shrink=st.integers(-20, 300), start=st.integers(-2, 9),
       seed=st.integers(0, 2**32), last=st.integers(-1, 9))
def test_open_batch(rb, shrink, start, seed, last):
    key, src, offset = rb
    dst_slot = max(1, src.slot_size - offset - 21 - shrink)     # often too small
    dst, stop = check_open_batch_agrees(key, src, offset, dst_slot, start, seed, stop=last)
    limit = src.count if last < 0 else min(last, src.count)
    assert stop <= limit
    for i in range(max(start, 0), stop):
        event(f"slot {SLOT_NAMES.get(dst.status[i])}")
    event("stopped early" if stop < src.count else "ran to the end")
    # The batch stops right after the first authentic handshake-type record.
    handshake = [i for i in range(max(start, 0), stop)
                 if dst.status[i] == SLOT_OK and dst.types[i] >= 128]
    assert handshake == ([stop - 1] if stop < limit or handshake else [])


@SLOW
@given(rb=record_batches(), seed=st.integers(0, 2**32))
def test_open_batch_roomy_destination(rb, seed):
    key, src, offset = rb
    check_open_batch_agrees(key, src, offset, src.slot_size, 0, seed, extra=2)


@SLOW
@given(rb=record_batches(), start=st.integers(-1, 9))
def test_open_batch_in_place(rb, start):
    # src is dst: payloads, statuses and fields agree; the bytes after each payload are
    # scratch (the compiled code decrypts where the ciphertext was), so they are not compared.
    key, src, offset = rb
    bc, br = clone(src), clone(src)
    stop = C.open_batch(C.RecordKey(key), bc, bc, start, offset)
    assert R.open_batch(R.RecordKey(key), br, br, start, offset) == stop
    assert fields(bc) == fields(br)
    for i in range(bc.count):
        if bc.status[i] == SLOT_OK and max(start, 0) <= i < stop:
            assert bc.get(i) == br.get(i)
        else:
            a, b = i * bc.slot_size, (i + 1) * bc.slot_size
            assert bc.buf[a:b] == br.buf[a:b]


def test_open_batch_rejects_small_destination():
    k = C.RecordKey(bytes(64))
    src = PacketBatch(3, 64)
    for _ in range(3):
        src.append(C.seal_datagram(k, 1, 0, b"x"))
    for impl, key in ((C, k), (R, R.RecordKey(bytes(64)))):
        with pytest.raises(ValueError):
            impl.open_batch(key, src, PacketBatch(2, 64))
        with pytest.raises(ValueError):
            impl.seal_batch(key, 0, src, PacketBatch(2, 64))


# --- regressions: bugs these tests found in record.pyx's batch functions -------------------

def exact_fit(m):
    # A record whose data is exactly one destination slot long.
    k = m.RecordKey(bytes(64))
    src = PacketBatch(1, 200)
    src.append(m.seal_datagram(k, 7, 0, b"\xaa" * 100))
    dst = PacketBatch(2, 100)
    dst.buf[:] = b"\x11" * 200
    assert m.open_batch(k, src, dst) == 1
    assert dst.status[0] == SLOT_OK and dst.get(0) == b"\xaa" * 100
    return dst.buf[100]        # first byte of slot 1


def test_open_batch_exact_fit_reference():
    assert exact_fit(R) == 0x11


def test_open_batch_exact_fit_stays_in_its_slot():
    assert exact_fit(C) == 0x11, "slot 1 was overwritten"


def test_seal_batch_in_place_overlapping():
    k = C.RecordKey(bytes(64))
    b = PacketBatch(1, 64)
    b.append(b"hello", type=3)
    assert C.seal_batch(k, 7, b, b, 0) == 8
    assert C.open_datagram(k, b.get(0)) == (7, 3, b"hello")


def test_open_batch_in_place_single():
    k = C.RecordKey(bytes(64))
    b = PacketBatch(2, 200)
    b.append(C.seal_datagram(k, 7, 3, b"hello"))
    assert C.open_batch(k, b, b) == 1
    assert b.status[0] == SLOT_OK and b.get(0) == b"hello"
