"""Properties of tinc base64: round trips, lengths, and agreement with a bit-level model."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tincapp import b64
from tincapp.errors import Base64Error

STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
URL = STD[:62] + "-_"


def model_encode(data, alphabet):
    """LSB-first: the whole input is one little-endian integer, emitted 6 bits at a time."""
    v = int.from_bytes(data, "little")
    n_chars = (8 * len(data) + 5) // 6
    return "".join(alphabet[(v >> (6 * i)) & 63] for i in range(n_chars))


@given(st.binary(max_size=300), st.booleans())
def test_round_trip(data, urlsafe):
    assert b64.decode(b64.encode(data, urlsafe=urlsafe)) == data


@given(st.binary(max_size=300), st.booleans())
def test_length_is_ceil_4n_over_3(data, urlsafe):
    n = len(data)
    assert len(b64.encode(data, urlsafe=urlsafe)) == -(-4 * n // 3)


@given(st.binary(max_size=300))
def test_matches_bit_model(data):
    assert b64.encode(data) == model_encode(data, STD)
    assert b64.encode(data, urlsafe=True) == model_encode(data, URL)


@given(st.text(alphabet=STD + "-_", max_size=200))
def test_any_alphabet_text_decodes_to_the_expected_length(text):
    n = len(text)
    assert len(b64.decode(text)) == n // 4 * 3 + (0, 0, 1, 2)[n % 4]


@given(st.text(alphabet=STD + "-_", max_size=100),
       st.characters(blacklist_characters=STD + "-_\0"),
       st.text(alphabet=STD, max_size=20))
def test_invalid_character_anywhere_is_an_error(head, bad, tail):
    with pytest.raises(Base64Error):
        b64.decode(head + bad + tail)
