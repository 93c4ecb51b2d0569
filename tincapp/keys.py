"""tinc's Ed25519 key files: the private key PEM, the public key PEM, hosts-file key lines.

Owns the on-disk formats of src/ed25519/ecdsa.c and ecdsagen.c and the key lookup rules of
src/keys.c (spec keys-and-files.md section 2), plus atomic writing of key files. Does not own
the general configuration parser (tincapp/config/) and does not follow Ed25519PublicKeyFile
or Ed25519PrivateKeyFile indirections: callers resolve paths. Every error is a KeyFileError
naming the file (and line, where there is one), except that a key file encrypted at rest
(config/secrets.py) that cannot be opened raises secrets.SecretsError, also naming the file.

Private key file (96 bytes = expanded private key || public key, 48 bytes per line):

    -----BEGIN ED25519 PRIVATE KEY-----
    <64 characters of tinc base64>
    <64 characters of tinc base64>
    -----END ED25519 PRIVATE KEY-----
"""
import logging
import os
import stat

from tincapp import b64, fileio
from tincapp.config import secrets
from tincapp.config.parse import parse_text
from tincapp.errors import Base64Error, ConfigError, KeyFileError
from tincapp.sptps.crypto import PrivateKey, public_from_expanded

log = logging.getLogger(__name__)

PRIVATE_PEM_TYPE = "ED25519 PRIVATE KEY"
PUBLIC_PEM_TYPE = "ED25519 PUBLIC KEY"
PRIVATE_BODY_LEN = 96           # expanded private key (64) || public key (32)
PUBLIC_LEN = 32
PUBLIC_B64_LEN = 43             # b64.encoded_len(PUBLIC_LEN); tinc refuses any other length
PEM_CHUNK_LEN = 48              # raw bytes per PEM line -> 64 characters
PUBLIC_KEY_VARIABLE = "Ed25519PublicKey"
PRIVATE_FILE_MODE = 0o600
PUBLIC_FILE_MODE = 0o666        # before the umask, like tinc's fopen(..., "w")

_BEGIN = "-----BEGIN "
_END = "-----END "

# tinc compares names with strcasecmp/strncasecmp: ASCII case only. str.lower() would also
# fold e.g. the Kelvin sign to 'k'.
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _ascii_ieq(a: str, b: str) -> bool:
    return a.translate(_ASCII_LOWER) == b.translate(_ASCII_LOWER)


# ---------------------------------------------------------------------------------------------
# Text formats

def _lines(text: str):
    """Lines as fgets() returns them: split at '\\n' only, each keeping its '\\n'.

    str.splitlines() would also split at '\\r', '\\x0b', '\\x1c' and others, which tinc does
    not.
    """
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _format_pem(pem_type: str, body: bytes) -> str:
    out = [f"-----BEGIN {pem_type}-----\n"]
    # Lines must break at multiples of 3 bytes: tinc decodes each line on its own.
    for i in range(0, len(body), PEM_CHUNK_LEN):
        out.append(b64.encode(body[i:i + PEM_CHUNK_LEN]) + "\n")
    out.append(f"-----END {pem_type}-----\n")
    return "".join(out)


def _read_pem(text: str, pem_type: str, size: int, source: str) -> bytes:
    """tinc's read_pem(): the body of the first block of pem_type, exactly size bytes."""
    in_block = False
    body = bytearray()
    begin_lineno = 0
    for lineno, line in enumerate(_lines(text), 1):
        if not in_block:
            # COMPAT: prefix comparison only; the trailing "-----" of the BEGIN line is not
            # checked, so "-----BEGIN ED25519 PRIVATE KEYS" also starts a block.
            if line.startswith(_BEGIN) and line[len(_BEGIN):].startswith(pem_type):
                in_block = True
                begin_lineno = lineno
            continue
        if line.startswith(_END):
            break
        # COMPAT: the line ends at the first '\r' or '\n' (strcspn), even mid-line.
        cut = len(line)
        for ch in "\r\n":
            pos = line.find(ch)
            if pos != -1:
                cut = min(cut, pos)
        try:
            chunk = b64.decode(line[:cut])
        except Base64Error as e:
            raise KeyFileError(f"{source}:{lineno}: invalid base64 data in PEM block: {e}") from e
        # COMPAT: a line that decodes to nothing (empty, or a single character) is an error.
        if not chunk:
            raise KeyFileError(f"{source}:{lineno}: invalid base64 data in PEM block")
        if len(body) + len(chunk) > size:
            raise KeyFileError(
                f"{source}:{lineno}: too much base64 data in {pem_type} block "
                f"(expected {size} bytes)")
        body += chunk
    else:
        if not in_block:
            raise KeyFileError(f"{source}: no -----BEGIN {pem_type}----- block found")
        # DEVIATION: tinc accepts a block cut off before its END line if the body is
        # complete; a key file without its END line is treated as truncated here.
        raise KeyFileError(
            f"{source}:{begin_lineno}: {pem_type} block has no -----END line "
            f"(file truncated?)")
    if len(body) != size:
        raise KeyFileError(
            f"{source}:{begin_lineno}: too little base64 data in {pem_type} block "
            f"({len(body)} bytes, expected {size})")
    return bytes(body)


def format_private_pem(key: PrivateKey) -> str:
    """The exact text of tinc's ed25519_key.priv for key."""
    return _format_pem(PRIVATE_PEM_TYPE, key.expanded + key.public)


def parse_private_pem(text: str, source: str = "<private key>") -> PrivateKey:
    """The private key in the first ED25519 PRIVATE KEY block of text (tinc's read_pem rules).

    source names the text in error messages (read_private_key passes the path).
    """
    body = _read_pem(text, PRIVATE_PEM_TYPE, PRIVATE_BODY_LEN, source)
    expanded, public = body[:64], body[64:]
    try:
        derived = public_from_expanded(expanded)
    except ValueError as e:
        raise KeyFileError(f"{source}: invalid Ed25519 private key: {e}") from e
    # DEVIATION: tinc uses the stored public half as is. A mismatch would make every signature
    # we send fail at the peer, so refuse the file instead of failing later, per connection.
    if derived != public:
        raise KeyFileError(
            f"{source}: the public half of the Ed25519 private key does not match its "
            f"private half (corrupted or hand-edited file)")
    return PrivateKey.from_expanded(expanded, public)


def format_public_pem(public: bytes) -> str:
    """A PEM public key file, as sptps_keypair writes it."""
    return _format_pem(PUBLIC_PEM_TYPE, _check_public(public))


def parse_public_pem(text: str, source: str = "<public key>") -> bytes:
    """The 32-byte key in the first ED25519 PUBLIC KEY block of text."""
    return _read_pem(text, PUBLIC_PEM_TYPE, PUBLIC_LEN, source)


def _check_public(public) -> bytes:
    public = bytes(public)
    if len(public) != PUBLIC_LEN:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_LEN} bytes, got {len(public)}")
    return public


def hosts_line(public: bytes) -> str:
    """The line `tinc` writes into a hosts file for a public key, with its newline."""
    return f"{PUBLIC_KEY_VARIABLE} = {b64.encode(_check_public(public))}\n"


def public_key_from_b64(value: str, source: str = "<public key>") -> bytes:
    """tinc's ecdsa_set_base64_public_key: exactly 43 characters decoding to 32 bytes."""
    if len(value) != PUBLIC_B64_LEN:
        raise KeyFileError(
            f"{source}: invalid size {len(value)} for an Ed25519 public key "
            f"(expected {PUBLIC_B64_LEN} base64 characters)")
    try:
        public = b64.decode(value)
    except Base64Error as e:
        raise KeyFileError(f"{source}: invalid format of Ed25519 public key: {e}") from e
    if len(public) != PUBLIC_LEN:
        # A NUL inside the value stops the decoder early.
        raise KeyFileError(
            f"{source}: invalid format of Ed25519 public key (decodes to {len(public)} bytes)")
    return public


def public_key_from_host_text(text: str, source: str = "<hosts file>") -> bytes:
    """The Ed25519 public key of a hosts file (or of a PEM public key file).

    tinc's order (src/keys.c read_ecdsa_public_key): the first Ed25519PublicKey variable if
    there is one (an invalid value is an error, with no fallback), else the first
    ED25519 PUBLIC KEY PEM block.
    """
    try:
        entries = parse_text(text, source)
    except ConfigError as e:
        raise KeyFileError(str(e)) from e
    for entry in entries:
        if _ascii_ieq(entry.name, PUBLIC_KEY_VARIABLE):
            return public_key_from_b64(entry.value, f"{source}:{entry.line}")
    if not any(line.startswith(_BEGIN + PUBLIC_PEM_TYPE) for line in _lines(text)):
        raise KeyFileError(
            f"{source}: no Ed25519 public key (neither {PUBLIC_KEY_VARIABLE} nor a "
            f"-----BEGIN {PUBLIC_PEM_TYPE}----- block)")
    return parse_public_pem(text, source)


def disable_old_keys(text: str) -> str:
    """Comment out old Ed25519 keys, as `tinc generate-ed25519-keys` does before appending.

    Prefixes '#' to every line of each ED25519 PEM block (private or public) and to every
    Ed25519PublicKey line; everything else is returned unchanged, byte for byte.
    """
    out = []
    in_block = False
    for line in _lines(text):
        if not in_block and line.startswith(_BEGIN) and " ED25519 " in line:
            in_block = True
        # COMPAT: tinc tests buf[16] with strchr(" \t=", ...), which also matches the string's
        # terminating NUL: a bare "Ed25519PublicKey" as the last, unterminated line counts.
        tail = line[16:17]
        is_key_line = _ascii_ieq(line[:16], PUBLIC_KEY_VARIABLE) and (tail == "" or tail in " \t=")
        out.append("#" + line if in_block or is_key_line else line)
        if in_block and line.startswith(_END):
            in_block = False
    return "".join(out)


# ---------------------------------------------------------------------------------------------
# Files

def _read_text(path, what: str, key=None):
    """(text, fstat result) of a key file, decrypted if it is encrypted (key: a
    secrets.KeySource, key bytes or None); bytes map 1:1 to characters (latin-1)."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: {what} file does not exist") from e
    except IsADirectoryError as e:
        raise KeyFileError(f"{path}: {what} file is a directory") from e
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read {what} file: {e.strerror or e}") from e
    data = secrets.plaintext(data, os.fspath(path), key)
    # latin-1 keeps every byte as one character: non-ASCII bytes then fail base64 decoding
    # or are skipped with the line, as in tinc, instead of raising UnicodeDecodeError.
    return data.decode("latin-1"), st


def read_private_key(path, key=None) -> PrivateKey:
    """Read tinc's ed25519_key.priv (or any file holding an ED25519 PRIVATE KEY block),
    plain or encrypted at rest (key: the configuration key, see config/secrets.py)."""
    text, st = _read_text(path, "Ed25519 private key", key)
    # COMPAT: tinc warns about (st_mode & ~0100700) and carries on.
    if stat.S_IMODE(st.st_mode) & ~0o700:
        log.warning("insecure file permissions %03o for Ed25519 private key file %s",
                    stat.S_IMODE(st.st_mode), path)
    return parse_private_pem(text, str(path))


def read_public_key(path, key=None) -> bytes:
    """Read a public key from a PEM public key file or a tinc hosts file (plain or
    encrypted at rest)."""
    text, _ = _read_text(path, "Ed25519 public key", key)
    return public_key_from_host_text(text, str(path))


def _atomic_write(path, data: bytes, mode: int, exact_mode: bool) -> None:
    """Replace path by a file holding data (fileio.atomic_write: readers see the old or the
    new file; a private key gets exactly `mode` before it holds anything)."""
    try:
        fileio.atomic_write(path, data, mode=mode if exact_mode else None, default_mode=mode)
    except OSError as e:
        raise KeyFileError(f"{os.fspath(path)}: cannot write key file: {e.strerror or e}") from e


def write_private_key(path, key: PrivateKey) -> None:
    """Atomically write key as tinc's private key file, mode 0600 from creation."""
    _atomic_write(path, format_private_pem(key).encode("ascii"), PRIVATE_FILE_MODE,
                  exact_mode=True)


def write_public_key(path, public: bytes) -> None:
    """Atomically write a PEM public key file (mode 0666 minus the umask, like tinc)."""
    _atomic_write(path, format_public_pem(public).encode("ascii"), PUBLIC_FILE_MODE,
                  exact_mode=False)


def generate_private_key(rng) -> PrivateKey:
    """A new key from 32 bytes of rng(32) (callers pass os.urandom)."""
    seed = rng(32)
    if len(seed) != 32:
        raise ValueError(f"rng(32) returned {len(seed)} bytes")
    return PrivateKey.from_seed(seed)
