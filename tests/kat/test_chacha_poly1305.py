"""chacha_poly1305.json: tinc's record cipher (sptps.md 2.1), for the compiled record layer and
the pure-Python reference (which shares no code with libsodium)."""
import pytest

from tests.reference import record as reference
from tests.vectors import load
from tincapp import accel
from tincapp.errors import DecryptError

IMPLS = {"reference": reference, "compiled": accel.record}
CASES = load("chacha_poly1305.json")["cases"]
IDS = [f"seq{c['seqno']}-len{c['plaintext_len']}" for c in CASES]


@pytest.fixture(params=sorted(IMPLS), ids=sorted(IMPLS))
def impl(request):
    return IMPLS[request.param]


def unpack(case):
    return (bytes.fromhex(case["key"]), case["seqno"], bytes.fromhex(case["plaintext"]),
            bytes.fromhex(case["output"]))


def flip(data, i):
    b = bytearray(data)
    b[i] ^= 0x01
    return bytes(b)


def test_case_count_and_shape():
    assert len(CASES) == 36
    for c in CASES:
        assert bytes.fromhex(c["nonce_be64"]) == c["seqno"].to_bytes(8, "big")
        assert c["output"] == c["ciphertext"] + c["tag"]
        assert len(c["plaintext"]) == 2 * c["plaintext_len"]


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_seal(impl, case):
    key, seqno, pt, out = unpack(case)
    assert impl.RecordKey(key).seal(seqno, pt) == out
    # Only the first 32 key bytes matter (sptps.md 2.1).
    assert impl.RecordKey(key[:32] + bytes(32)).seal(seqno, pt) == out
    assert impl.RecordKey(key[:32]).seal(seqno, pt) == out


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_open_round_trip(impl, case):
    key, seqno, pt, out = unpack(case)
    k = impl.RecordKey(key)
    assert k.open(seqno, out) == pt
    assert k.open(seqno, bytearray(out)) == pt
    assert k.verify(seqno, out) is True


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tampering_rejected(impl, case):
    key, seqno, pt, out = unpack(case)
    k = impl.RecordKey(key)
    bad = [flip(out, len(out) - 1), flip(out, len(out) - 16)]        # tag, first/last byte
    if pt:
        bad += [flip(out, 0), flip(out, len(pt) - 1)]                   # ciphertext
    for data in bad:
        with pytest.raises(DecryptError):
            k.open(seqno, data)
        assert k.verify(seqno, data) is False
    other = seqno ^ 1                                                   # wrong nonce
    with pytest.raises(DecryptError):
        k.open(other, out)
    assert k.verify(other, out) is False
    wrong_key = impl.RecordKey(flip(key, 0))
    with pytest.raises(DecryptError):
        wrong_key.open(seqno, out)
    with pytest.raises(DecryptError):                                   # shorter than a tag
        k.open(seqno, out[:15])
    assert k.verify(seqno, out[:15]) is False
    if pt:                                                              # truncated ciphertext
        with pytest.raises(DecryptError):
            k.open(seqno, out[1:])


# Datagram/stream records carry type || data, so only non-empty plaintexts with a 32-bit
# seqno can be framed.
FRAMED = [(i, c) for i, c in zip(IDS, CASES) if c["seqno"] < 2**32 and c["plaintext_len"]]


@pytest.mark.parametrize("case", [c for _, c in FRAMED], ids=[i for i, _ in FRAMED])
def test_datagram_and_stream_framing_use_the_cipher(impl, case):
    # Take the vector's plaintext as type || data.
    key, seqno, pt, out = unpack(case)
    k = impl.RecordKey(key)
    record = impl.seal_datagram(k, seqno, pt[0], pt[1:])
    assert record == seqno.to_bytes(4, "big") + out
    assert impl.open_datagram(k, record) == (seqno, pt[0], pt[1:])
    assert impl.verify_datagram(k, record) is True
    assert impl.verify_datagram(k, flip(record, 3)) is False        # seqno is the nonce
    with pytest.raises(DecryptError):
        impl.open_datagram(k, flip(record, 3))
    stream = impl.seal_stream(k, seqno, pt[0], pt[1:])
    assert stream == (len(pt) - 1).to_bytes(2, "big") + out
    assert impl.open_stream(k, seqno, stream[2:]) == (pt[0], pt[1:])
