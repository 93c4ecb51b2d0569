"""tinc's own base64 (src/utils.c b64encode_tinc / b64decode_tinc).

Owns the alphabets and the exact encoder/decoder semantics. It is NOT RFC 4648: bits are
taken least-significant first and there is no padding, so the stdlib `base64` module must never
be used for anything tinc reads or writes. Pure functions, no I/O.

Layout of one group (3 bytes -> 4 characters, first character = lowest 6 bits):

    v = b0 | b1 << 8 | b2 << 16
    text = A[v & 63] A[(v >> 6) & 63] A[(v >> 12) & 63] A[(v >> 18) & 63]

A final group of 2 bytes gives 3 characters, of 1 byte gives 2 characters.
"""
from tincapp.errors import Base64Error

STANDARD_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
URLSAFE_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

# COMPAT: the decoder accepts both alphabets at once: '+' and '-' are 62, '/' and '_' are 63.
# Keyed by code point so str and bytes input share one table.
_DECODE = {ord(c): i for i, c in enumerate(STANDARD_ALPHABET)}
_DECODE.update({ord(c): i for i, c in enumerate(URLSAFE_ALPHABET)})


def encoded_len(n: int) -> int:
    """Length of the encoding of n bytes: ceil(4n/3), no padding."""
    return (4 * n + 2) // 3


def encode(data: bytes, urlsafe: bool = False) -> str:
    """Encode bytes as tinc base64 (standard alphabet unless urlsafe)."""
    alphabet = URLSAFE_ALPHABET if urlsafe else STANDARD_ALPHABET
    data = bytes(data)
    out = []
    full = len(data) - len(data) % 3
    for i in range(0, full, 3):
        v = data[i] | data[i + 1] << 8 | data[i + 2] << 16
        out.append(alphabet[v & 63] + alphabet[(v >> 6) & 63]
                   + alphabet[(v >> 12) & 63] + alphabet[v >> 18])
    tail = len(data) - full
    if tail == 2:
        v = data[full] | data[full + 1] << 8
        out.append(alphabet[v & 63] + alphabet[(v >> 6) & 63] + alphabet[v >> 12])
    elif tail == 1:
        v = data[full]
        out.append(alphabet[v & 63] + alphabet[v >> 6])
    return "".join(out)


def decode(text) -> bytes:
    """Decode tinc base64 (either alphabet) from str or bytes.

    Raises Base64Error for any character outside both alphabets (tinc returns 0 for the
    whole decode then). Everything else that tinc's decoder tolerates is tolerated here.
    """
    if isinstance(text, str):
        codes = [ord(c) for c in text]
    else:
        codes = bytes(text)
    # COMPAT: decoding stops at the first NUL, as tinc walks a C string.
    try:
        codes = codes[:codes.index(0)]
    except ValueError:
        pass
    digits = []
    for pos, code in enumerate(codes):
        d = _DECODE.get(code)
        if d is None:
            shown = chr(code) if isinstance(text, str) else f"\\x{code:02x}"
            raise Base64Error(f"invalid base64 character {shown!r} at offset {pos}")
        digits.append(d)
    out = bytearray()
    full = len(digits) - len(digits) % 4
    for i in range(0, full, 4):
        v = digits[i] | digits[i + 1] << 6 | digits[i + 2] << 12 | digits[i + 3] << 18
        out += bytes((v & 0xFF, (v >> 8) & 0xFF, v >> 16))
    tail = len(digits) - full
    # COMPAT: the unused high bits of a short final group are not checked (tinc keeps only the
    # low 8 or 16 bits, so "/w" decodes to 3f and "//" to ff without error), and a trailing
    # single character (length = 1 mod 4) is silently dropped.
    if tail == 3:
        v = digits[full] | digits[full + 1] << 6 | digits[full + 2] << 12
        out += bytes((v & 0xFF, (v >> 8) & 0xFF))
    elif tail == 2:
        v = digits[full] | digits[full + 1] << 6
        out.append(v & 0xFF)
    return bytes(out)
