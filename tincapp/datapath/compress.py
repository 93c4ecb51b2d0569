"""tinc 1.1's payload compression levels (data-path.md §2.2).

The level is chosen by the receiver (the compression field of its ANS_KEY); the sender
compresses each data record's payload with it and sets PKT_COMPRESSED only when the result is
strictly shorter.

    level 0      none
    level 1-9    zlib compress2 at that level: an RFC 1950 stream (header, deflate, Adler-32)
    level 10     LZO1X-1    raw LZO1X block, no header
    level 11     LZO1X-999  raw LZO1X block (same decoder as level 10)
    level 12     LZ4 LZ4_compress_fast, default acceleration: raw block, no frame, no size

zlib is the standard library's; LZO comes from python-lzo (module `lzo`, linked against the
system liblzo2) and LZ4 from python-lz4 (module `lz4.block`, bundles liblz4). A level whose
library is not installed is left out of SUPPORTED_LEVELS, so the node neither announces it nor
accepts a peer's request for it.

Owns no state. No I/O. The data path calls this per packet, so compress() never raises for a
packet (it returns None and the packet goes uncompressed); decompress() raises
CompressionError, which the caller turns into a receive failure (data-path.md §2.4).
"""
import zlib

from tincapp.datapath.packets import MAXSIZE   # COMPAT: every decompressor's output buffer
from tincapp.errors import TincappError

try:
    import lzo as _lzo
except ImportError:  # python-lzo not installed: levels 10 and 11 are unsupported
    _lzo = None

try:
    import lz4.block as _lz4_block
except ImportError:  # python-lz4 not installed: level 12 is unsupported
    _lz4_block = None

NONE = 0
ZLIB_LEVELS = range(1, 10)
LZO_LO = 10      # LZO1X-1
LZO_HI = 11      # LZO1X-999
LZ4 = 12

SUPPORTED_LEVELS = frozenset(
    [NONE, *ZLIB_LEVELS]
    + ([LZO_LO, LZO_HI] if _lzo is not None else [])
    + ([LZ4] if _lz4_block is not None else [])
)


class CompressionError(TincappError):
    """A compressed payload did not decode (corrupt, too large, empty) or the level is unusable."""


def compress(level, data):
    """Compress a payload for a peer that asked for `level`.

    Returns the compressed bytes, or None when they would not be strictly shorter than `data`
    (or the library failed): the caller then sends `data` uncompressed with PKT_COMPRESSED
    clear, which is always legal. Raises CompressionError only for a level outside
    SUPPORTED_LEVELS (the handshake should never have accepted it).
    """
    if level not in SUPPORTED_LEVELS:
        raise CompressionError(f"compression level {level} is not supported")
    data = bytes(data)
    try:
        if level == NONE:
            # COMPAT: tinc never compresses at level 0 (the bit stays clear).
            return None
        if level in ZLIB_LEVELS:
            out = zlib.compress(data, level)
        elif level == LZO_LO:
            out = _lzo.compress(data, 1, False)      # python-lzo: level 1 = lzo1x_1_compress
        elif level == LZO_HI:
            out = _lzo.compress(data, 9, False)      # any other level = lzo1x_999_compress
        else:
            # DEVIATION: python-lz4 compresses through LZ4_compress_fast_continue on a reset
            # stream, not LZ4_compress_fast_extState as tinc does, so the block can differ from
            # tinc's (occasionally a few bytes longer). Any valid raw block decodes the same.
            out = _lz4_block.compress(data, store_size=False)
    except Exception:  # a library error on one packet: send it uncompressed, as tinc does
        return None
    return out if len(out) < len(data) else None


def decompress(level, data, max_len=MAXSIZE):
    """Decompress a PKT_COMPRESSED payload received from a node whose incoming level is `level`.

    Output longer than `max_len` is an error, as is empty output (tinc's uncompress_packet
    returns the length and treats 0 as failure). Raises CompressionError on any failure.
    """
    if level not in SUPPORTED_LEVELS:
        raise CompressionError(f"compression level {level} is not supported")
    data = bytes(data)
    if level == NONE:
        # COMPAT: tinc copies the payload as it is when PKT_COMPRESSED arrives at level 0.
        out = data
    elif level in ZLIB_LEVELS:
        out = _inflate(data, max_len)
    elif level in (LZO_LO, LZO_HI):
        try:
            # lzo1x_decompress_safe with a max_len buffer: overrun, truncation and trailing
            # input are all errors, as in tinc.
            out = _lzo.decompress(data, False, max_len)
        except _lzo.error as e:
            raise CompressionError(f"bad LZO data: {e}") from e
    else:
        try:
            # LZ4_decompress_safe with a max_len buffer: uncompressed_size is an upper bound.
            out = _lz4_block.decompress(data, uncompressed_size=max_len)
        except _lz4_block.LZ4BlockError as e:
            raise CompressionError(f"bad LZ4 data: {e}") from e
    if not out:
        raise CompressionError("payload decompressed to nothing")
    if len(out) > max_len:
        raise CompressionError(f"payload decompresses to more than {max_len} bytes")
    return out


def _inflate(data, max_len):
    """One complete zlib stream, at most max_len bytes out.

    COMPAT: tinc's inflate(Z_FINISH) succeeds only on Z_STREAM_END (Adler-32 checked) and
    ignores bytes after the end of the stream.
    """
    d = zlib.decompressobj()
    try:
        # One byte of headroom tells "exactly max_len" apart from "more than max_len".
        out = d.decompress(data, max_len + 1)
    except zlib.error as e:
        raise CompressionError(f"bad zlib data: {e}") from e
    if len(out) > max_len:
        raise CompressionError(f"payload decompresses to more than {max_len} bytes")
    if not d.eof:
        raise CompressionError("truncated zlib stream")
    return out
