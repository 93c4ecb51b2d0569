"""tinc base64 against vectors/base64.json (captured from tinc 1.1's b64encode/b64decode)."""
import pytest

from tests.vectors import load, unhex
from tincapp import b64
from tincapp.errors import Base64Error, KeyFileError

VECTORS = load("base64")
ENCODE = VECTORS["encode"]
DECODE = VECTORS["decode"]

# Written out independently of tincapp.b64, to classify the vectors' "return 0" cases.
_VALID = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/-_")


def _has_invalid_char(text):
    return any(c not in _VALID for c in text.split("\0", 1)[0])


def test_vector_counts():
    assert len(ENCODE) == 14 and len(DECODE) == 23


@pytest.mark.parametrize("case", ENCODE, ids=lambda c: f"raw{len(c['raw']) // 2}")
def test_encode(case):
    raw = unhex(case["raw"])
    assert b64.encode(raw) == case["text"]
    assert b64.encode(raw, urlsafe=True) == case["text_urlsafe"]
    assert len(case["text"]) == case["encode_return"]
    assert b64.encoded_len(len(raw)) == case["encode_return"]


@pytest.mark.parametrize("case", ENCODE, ids=lambda c: f"raw{len(c['raw']) // 2}")
def test_decode_of_encode_vectors(case):
    raw = unhex(case["raw"])
    assert b64.decode(case["text"]) == raw
    assert b64.decode(case["text_urlsafe"]) == raw


@pytest.mark.parametrize("case", DECODE, ids=lambda c: repr(c["text"]))
def test_decode(case):
    text = case["text"]
    expected = unhex(case["bytes"])
    assert len(expected) == case["return"]
    if case["return"] == 0 and _has_invalid_char(text):
        # tinc's 0 here means "invalid": we raise.
        with pytest.raises(Base64Error):
            b64.decode(text)
        with pytest.raises(Base64Error):
            b64.decode(text.encode("latin-1"))
    else:
        # Either real data, or tinc's 0 meaning "valid but empty" ("" and a lone character).
        assert b64.decode(text) == expected
        assert b64.decode(text.encode("latin-1")) == expected


def test_return_zero_cases_cover_both_interpretations():
    zeros = [c["text"] for c in DECODE if c["return"] == 0]
    assert any(_has_invalid_char(t) for t in zeros)
    assert any(not _has_invalid_char(t) for t in zeros)


def test_base64_error_is_a_key_file_error():
    assert issubclass(Base64Error, KeyFileError)


@pytest.mark.parametrize("raw,text", [
    ("00", "AA"), ("0001", "AEA"), ("ff", "/D"), ("4d616e", "NFmb"), ("000102feff", "AEgA+/P"),
])
def test_spec_examples(raw, text):
    assert b64.encode(unhex(raw)) == text
    assert b64.decode(text) == unhex(raw)


def test_decode_stops_at_nul():
    assert b64.decode("AAAA\0!!!!") == bytes(3)
    assert b64.decode(b"AAAA\0!!!!") == bytes(3)
    assert b64.decode("\0AAAA") == b""


@pytest.mark.parametrize("text", ["AA\u00e9A", "AAA\u212a", b"AA\xffA", "AAAA=", " AAAA"])
def test_decode_rejects_non_alphabet(text):
    with pytest.raises(Base64Error):
        b64.decode(text)


def test_urlsafe_encode_differs_only_in_two_characters():
    raw = bytes(range(256))
    std, url = b64.encode(raw), b64.encode(raw, urlsafe=True)
    assert std != url
    assert std.translate(str.maketrans("+/", "-_")) == url
