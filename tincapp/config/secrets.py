"""Configuration files encrypted at rest (configparser-crypt format), and the key that opens them.

Owns: the configuration key and where it comes from, recognising an encrypted file by its
content, encrypting and decrypting one file's bytes, and converting a network directory
between plain and encrypted files (`tinc encrypt-config` / `decrypt-config`). Does not parse
what is inside (parse.py, keys.py do, on the plaintext this module hands them).

Key sources, first match wins:

    --config-key-file=FILE      tincd and tinc option; FILE "-" reads one line from stdin
    TINCAPP_CONFIG_KEY_FILE     environment: path of the key file
    TINCAPP_CONFIG_KEY          environment: the key itself (hex)

A key is 32 random bytes (AES-256), written as 64 hex digits (`tinc generate-config-key`);
32 hex digits (AES-128) and, in files only, the raw 32 bytes are also accepted. Without a
key, plain files work as before; an encrypted file then fails with an error naming the file
and the ways to give a key.

File format (configparser-crypt 1.1.0 / cryptidy 1.2, byte for byte what
cryptidy.symmetric_encryption.encrypt_message_hf writes, with a fixed header):

    MAGIC                       b"#tincapp-configparser-crypt-v1\\n" (31 bytes)
    base64(                     standard alphabet, with padding, no newlines
      nonce      16 bytes       AES-EAX nonce
      tag        16 bytes       AES-EAX tag (authenticates the ciphertext only)
      timestamp  32 bytes       str(unix time) padded PKCS#7-style to 32 ASCII characters
      ciphertext                AES-EAX(key, pickle.dumps(plaintext bytes))
    )

ConfigParserCrypt reads such a file with `header_length = len(MAGIC)`; a file it writes with
its defaults (no header) is also recognised here, by its shape. The same file names as tinc's
are kept: only the content says whether a file is encrypted.

Safety: configparser-crypt's reader runs pickle.loads() on the decrypted bytes, so anyone who
can write the file and knows the key could run code in the daemon. It is never called here:
decryption uses cryptidy's AES primitive, and the payload goes through a restricted
unpickler that accepts a pickle of one str or bytes object and nothing else (no globals,
no reduce, no other opcodes). The 32-byte timestamp is not authenticated by the format; it is
only checked for shape and never used.

Errors are SecretsError subclasses (ConfigError), each naming the file. Not thread-safe.
configparser-crypt's crypto (cryptidy, pycryptodomex) is imported only when a file is
encrypted or decrypted: importing it costs ~80 ms, which plain configurations do not pay.
"""
import base64
import binascii
import io
import logging
import os
import pickle
import pickletools
import stat
import sys
from dataclasses import dataclass

from tincapp.errors import ConfigError
from tincapp.fileio import atomic_write

log = logging.getLogger(__name__)

KEY_FILE_OPTION = "--config-key-file"
KEY_ENV = "TINCAPP_CONFIG_KEY"
KEY_FILE_ENV = "TINCAPP_CONFIG_KEY_FILE"
STDIN_NAME = "-"

MAGIC = b"#tincapp-configparser-crypt-v1\n"
KEY_LEN = 32                        # AES-256; 16 (AES-128) is accepted too
KEY_LENS = (16, 32)                 # what configparser-crypt's aes_key setter accepts
# cryptidy's layout after base64 decoding
NONCE_LEN = 16
TAG_LEN = 16
TIMESTAMP_LEN = 32
HEADER_LEN = NONCE_LEN + TAG_LEN + TIMESTAMP_LEN
MAX_FILE_LEN = 16 * 1024 * 1024     # configuration files are small; refuse to slurp more

HOW_TO_GIVE_A_KEY = (f"give the configuration key with {KEY_FILE_OPTION}=FILE ('-' for "
                     f"stdin), ${KEY_FILE_ENV} or ${KEY_ENV}")

# What pickletools.genops and pickle.Unpickler.load raise on malformed or refused input.
_PICKLE_ERRORS = (pickle.UnpicklingError, ValueError, EOFError, IndexError, KeyError,
                  TypeError, OverflowError, UnicodeDecodeError)

# Opcodes a pickle of one str/bytes object uses (protocols 3-5, as pickle.dumps writes them).
_ALLOWED_OPCODES = frozenset({
    "PROTO", "FRAME", "STOP", "MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT",
    "SHORT_BINBYTES", "BINBYTES", "BINBYTES8", "BYTEARRAY8",
    "SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8",
})


class SecretsError(ConfigError):
    """An encrypted configuration file or the configuration key cannot be used."""


class NoConfigKeyError(SecretsError):
    """A file is encrypted and no configuration key was given."""


class ConfigKeyError(SecretsError):
    """The configuration key source is missing, unreadable or not a key."""


class EncryptedFileError(SecretsError):
    """An encrypted file does not open: wrong key, truncated or altered."""


class UnsafePayloadError(EncryptedFileError):
    """The decrypted payload is not a plain pickled str/bytes (it could run code): refused."""


# ---------------------------------------------------------------------------------------------
# The key

def format_key(key: bytes) -> str:
    """The key file text for key: hex digits and a newline."""
    _check_key_len(key, "<key>")
    return key.hex() + "\n"


def generate_key(rng) -> bytes:
    """A new 32-byte key from rng(32) (callers pass os.urandom)."""
    key = rng(KEY_LEN)
    _check_key_len(key, "<rng>")
    return bytes(key)


def _check_key_len(key: bytes, source: str) -> None:
    if len(key) not in KEY_LENS:
        raise ConfigKeyError(f"a configuration key is 16 or 32 bytes, got {len(key)}", source)


def parse_key(data: bytes, source: str, allow_raw: bool = True) -> bytes:
    """The key in a key file's (or the variable's) bytes: 64 or 32 hex digits, surrounding
    whitespace ignored; with allow_raw also exactly 32 raw bytes."""
    text = data.strip(b" \t\r\n")
    if len(text) in (2 * n for n in KEY_LENS):
        try:
            return binascii.unhexlify(text)     # unlike bytes.fromhex: no inner spaces
        except (binascii.Error, ValueError):
            pass
    if allow_raw and len(data) == KEY_LEN:
        return bytes(data)
    raise ConfigKeyError(f"not a configuration key (expected 64 hex digits, as written by "
                         f"`tinc generate-config-key`; got {len(text)} characters)", source)


class KeySource:
    """Where the configuration key comes from; loads it at most once, when first needed.

    key_file is the --config-key-file value (None: not given), env the environment
    (os.environ if None), stdin a text stream for "-" (sys.stdin if None). load() reads it now
    (tincd does, before detaching); get(path) loads it if needed and names path in the error
    when there is none.
    """

    def __init__(self, key_file=None, env=None, stdin=None):
        env = os.environ if env is None else env
        self._stdin = stdin
        self._key = None
        if key_file is not None:
            self._kind, self._where = "option", os.fspath(key_file)
        elif env.get(KEY_FILE_ENV):
            self._kind, self._where = "env-file", env[KEY_FILE_ENV]
        elif env.get(KEY_ENV):
            self._kind, self._where = "env", env[KEY_ENV]
        else:
            self._kind, self._where = None, None

    @classmethod
    def from_key(cls, key: bytes) -> "KeySource":
        """A source that is just this key (tests, and callers that already hold one)."""
        _check_key_len(key, "<key>")
        src = cls(env={})
        src._kind, src._where, src._key = "given", None, bytes(key)
        return src

    @property
    def configured(self) -> bool:
        """True if a key was given in any of the ways (it may still fail to load)."""
        return self._kind is not None

    @property
    def file(self) -> str | None:
        """The key file's path, if the key comes from a file."""
        if self._kind in ("option", "env-file") and self._where != STDIN_NAME:
            return self._where
        return None

    @property
    def reads_stdin(self) -> bool:
        """True if the key is to be read from stdin (and has not been yet)."""
        return self._kind == "option" and self._where == STDIN_NAME and self._key is None

    @property
    def description(self) -> str:
        if self._kind == "option":
            return "stdin" if self._where == STDIN_NAME else f"key file {self._where}"
        if self._kind == "env-file":
            return f"key file {self._where} (${KEY_FILE_ENV})"
        if self._kind == "env":
            return f"${KEY_ENV}"
        return "given key" if self._kind == "given" else "no key"

    def __repr__(self):
        return f"KeySource({self.description})"          # never the key

    def load(self) -> bytes:
        """The key; ConfigKeyError if its source does not give one, NoConfigKeyError if no
        source was given."""
        if self._key is not None:
            return self._key
        if self._kind is None:
            raise NoConfigKeyError(f"no configuration key given; {HOW_TO_GIVE_A_KEY}")
        if self._kind == "env":
            key = parse_key(self._where.encode("latin-1", "replace"), f"${KEY_ENV}",
                            allow_raw=False)
        elif self._where == STDIN_NAME and self._kind == "option":
            stream = sys.stdin if self._stdin is None else self._stdin
            # One line from the byte stream under sys.stdin when there is one: what follows
            # stays unread for the command (tinc's shell, import, sign).
            line = getattr(stream, "buffer", stream).readline()
            if not line:
                raise ConfigKeyError("no configuration key on stdin (end of file)", "<stdin>")
            if isinstance(line, str):
                line = line.encode("latin-1", "replace")
            key = parse_key(line, "<stdin>", allow_raw=False)
        elif not self._where:
            raise ConfigKeyError(f"empty file name for {KEY_FILE_OPTION}",
                                 KEY_FILE_OPTION if self._kind == "option" else
                                 f"${KEY_FILE_ENV}")
        else:
            key = _read_key_file(self._where)
        self._key = key
        return key

    def get(self, path) -> bytes:
        """The key to open encrypted file path; NoConfigKeyError naming path if none given."""
        if self._kind is None:
            raise NoConfigKeyError(f"file is encrypted and no configuration key was given; "
                                   f"{HOW_TO_GIVE_A_KEY}", path)
        return self.load()


def _read_key_file(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read(4096)
    except OSError as e:
        raise ConfigKeyError(f"cannot read configuration key file: {e.strerror or e}",
                             path) from e
    if stat.S_IMODE(st.st_mode) & 0o077:
        log.warning("insecure file permissions %03o for configuration key file %s",
                    stat.S_IMODE(st.st_mode), path)
    return parse_key(data, path)


def _key_bytes(key, path) -> bytes:
    """key may be a KeySource, raw key bytes or None."""
    if key is None:
        return KeySource(env={}).get(path)
    if isinstance(key, KeySource):
        return key.get(path)
    key = bytes(key)
    _check_key_len(key, "<key>")
    return key


# ---------------------------------------------------------------------------------------------
# One file's bytes

def _bare_container(data: bytes) -> bytes | None:
    """The decoded container if data is a headerless configparser-crypt file, else None.

    Such a file is one base64 string whose bytes 32-64 decode to a padded timestamp; no tinc
    configuration or key file can have that shape ('=' between name and value, spaces,
    newlines and '-' are not in it).
    """
    body = data.rstrip(b"\r\n")
    if len(body) < 4 * ((HEADER_LEN + 3) // 3) or len(body) % 4:
        return None
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(raw) <= HEADER_LEN or _timestamp(raw) is None:
        return None
    return raw


def _timestamp(raw: bytes) -> float | None:
    field = raw[NONCE_LEN + TAG_LEN:HEADER_LEN]
    pad = field[-1] if field else 0
    if not 1 <= pad <= TIMESTAMP_LEN or field[-pad:] != bytes([pad]) * pad:
        return None
    try:
        return float(field[:-pad].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None


def is_encrypted(data: bytes) -> bool:
    """True if data is an encrypted file (ours, a truncated one, or configparser-crypt's)."""
    data = bytes(data)
    if data.startswith(MAGIC):
        return True
    # A file cut inside the magic line is an encrypted file cut short, not a config file.
    if data and MAGIC.startswith(data):
        return True
    return _bare_container(data) is not None


def _crypto():
    """configparser-crypt's own crypto module (cryptidy.symmetric_encryption, as it imports
    it), so files are exactly what configparser-crypt reads and writes."""
    import configparser_crypt
    return configparser_crypt.symmetric_encryption


def encrypt(plaintext: bytes, key, path="<data>") -> bytes:
    """The encrypted file holding plaintext (key: KeySource or key bytes)."""
    symmetric_encryption = _crypto()
    aes_key = _key_bytes(key, path)
    try:
        # COMPAT: configparser-crypt's commit_write() calls exactly this (with header b"").
        return symmetric_encryption.encrypt_message_hf(bytes(plaintext), aes_key,
                                                       header=MAGIC)
    except ValueError as e:
        raise SecretsError(f"cannot encrypt: {e}", path) from e


def decrypt(data: bytes, key, path="<data>") -> bytes:
    """The plaintext of encrypted file data; EncryptedFileError naming path if it does not
    open (wrong key, truncated, altered), UnsafePayloadError if its payload is not a
    pickled str/bytes. Never unpickles anything but str/bytes."""
    data = bytes(data)
    if data.startswith(MAGIC):
        body = data[len(MAGIC):].rstrip(b"\r\n")
        try:
            raw = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise EncryptedFileError("encrypted file is damaged or truncated "
                                     "(its body is not valid base64)", path) from None
    else:
        raw = _bare_container(data)
        if raw is None:
            raise EncryptedFileError("encrypted file is truncated (incomplete header)", path)
    if len(raw) <= HEADER_LEN:
        raise EncryptedFileError(f"encrypted file is truncated ({len(raw)} bytes after "
                                 f"decoding, the header alone is {HEADER_LEN})", path)
    if _timestamp(raw) is None:
        raise EncryptedFileError("encrypted file is damaged (bad timestamp field)", path)
    symmetric_encryption = _crypto()
    aes_key = _key_bytes(key, path)
    nonce, tag = raw[:NONCE_LEN], raw[NONCE_LEN:NONCE_LEN + TAG_LEN]
    try:
        # cryptidy's AES-EAX decrypt+verify, without its pickle.loads() that follows.
        payload = symmetric_encryption.aes_decrypt(aes_key, nonce, tag, raw[HEADER_LEN:])
    except ValueError:
        raise EncryptedFileError("cannot decrypt: wrong configuration key, or the file was "
                                 "altered or truncated", path) from None
    return restricted_loads(payload, path)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that can build no object from a name: every class or function lookup
    (GLOBAL, STACK_GLOBAL, EXT*, and so every REDUCE/BUILD/NEWOBJ target) is refused."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refused to load global {module}.{name}")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("refused persistent id")


def restricted_loads(payload: bytes, path="<data>") -> bytes:
    """The bytes in a pickle of one bytes (or str: UTF-8 encoded) object.

    Opcodes are checked before anything is loaded (only those a str/bytes pickle uses), then
    loading runs with every global refused, and the result must be str/bytes with nothing
    after the pickle. Anything else is an UnsafePayloadError naming path; nothing in the
    payload is ever called.
    """
    payload = bytes(payload)
    try:
        end = 0
        for opcode, _, pos in pickletools.genops(payload):
            if opcode.name not in _ALLOWED_OPCODES:
                raise UnsafePayloadError(f"decrypted payload is not a plain string: pickle "
                                         f"opcode {opcode.name} refused", path)
            end = pos
    except _PICKLE_ERRORS as e:
        raise UnsafePayloadError(f"decrypted payload is not a pickled string: {e}",
                                 path) from None
    stream = io.BytesIO(payload)
    try:
        value = _NoGlobalsUnpickler(stream).load()
    except _PICKLE_ERRORS as e:
        raise UnsafePayloadError(f"decrypted payload refused: {e}", path) from None
    if stream.tell() != len(payload) or end + 1 != len(payload):
        raise UnsafePayloadError("decrypted payload has data after the pickle", path)
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    raise UnsafePayloadError(f"decrypted payload is a {type(value).__name__}, not str/bytes",
                             path)


def plaintext(data: bytes, path, key) -> bytes:
    """What a reader of path should parse: data itself for a plain file, the decrypted
    content for an encrypted one (key: KeySource, key bytes or None)."""
    if is_encrypted(data):
        return decrypt(data, key, path)
    return bytes(data)


def read_bytes(path, key=None) -> bytes:
    """The plaintext of file path (OSError as open() raises it; SecretsError)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return plaintext(data, path, key)


# ---------------------------------------------------------------------------------------------
# A network directory

@dataclass(frozen=True)
class FileChange:
    """One file of a conversion: action is "encrypt", "decrypt" or "skip"; reason says why
    a file is skipped."""
    path: str
    action: str
    reason: str = ""


def network_files(confbase: str, everything: bool, key=None) -> list[str]:
    """The files encrypt-config / decrypt-config convert, existing ones only.

    Secrets: ed25519_key.priv, invitations/ed25519_key.priv, and the file named by
    Ed25519PrivateKeyFile. With everything also tinc.conf, conf.d/*.conf, hosts/NAME for
    valid node names (not scripts) and the invitation files. Scripts (tinc-up, ...), the
    cache and the pid file are never included: they are run or written by other programs.
    """
    from tincapp.config import parse                   # parse imports this module
    from tincapp.config.variables import check_id

    confbase = os.fspath(confbase)
    found = [f"{confbase}/ed25519_key.priv", f"{confbase}/invitations/ed25519_key.priv"]
    try:
        tree = parse.ConfigTree(parse.read_server_files(confbase, key))
        entry = tree.lookup("Ed25519PrivateKeyFile")
    except ConfigError:
        entry = None        # the conversion reports a broken tinc.conf when it gets to it
    if entry is not None:
        value = entry.value
        found.append(value if os.path.isabs(value) else os.path.join(confbase, value))
    if everything:
        found.extend(parse.server_file_names(confbase))
        for name in _listdir(f"{confbase}/hosts"):
            if check_id(name):
                found.append(f"{confbase}/hosts/{name}")
        for name in _listdir(f"{confbase}/invitations"):
            # tinc's invitation files are named by a 24-character cookie hash.
            if len(name) == 24:
                found.append(f"{confbase}/invitations/{name}")
    out = []
    for path in found:
        if path not in out and os.path.lexists(path):
            out.append(path)
    return out


def _listdir(path):
    try:
        return sorted(os.listdir(path))
    except FileNotFoundError:
        return []
    except OSError as e:
        raise SecretsError(f"cannot list directory: {e.strerror or e}", path) from e


def plan_conversion(paths, key, encrypting: bool) -> list[tuple[FileChange, bytes]]:
    """Read and check every file before anything is written: (change, plaintext) per file.

    Files already in the wanted state are skipped (so an interrupted run can be repeated),
    but an encrypted one must still open with key: a wrong key, or files encrypted under
    different keys, fail here and nothing is changed.
    """
    plan = []
    for path in paths:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
            plan.append((FileChange(path, "skip", "not a regular file"), b""))
            continue
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE_LEN + 1)
        except OSError as e:
            raise SecretsError(f"cannot read: {e.strerror or e}", path) from e
        if len(data) > MAX_FILE_LEN:
            raise SecretsError(f"file is larger than {MAX_FILE_LEN} bytes", path)
        if is_encrypted(data):
            clear = decrypt(data, key, path)
            if encrypting:
                plan.append((FileChange(path, "skip", "already encrypted"), clear))
            else:
                plan.append((FileChange(path, "decrypt"), clear))
        elif encrypting:
            plan.append((FileChange(path, "encrypt"), data))
        else:
            plan.append((FileChange(path, "skip", "not encrypted"), data))
    return plan


def replace_file(path, data: bytes) -> None:
    """Atomically replace path by data (fileio.atomic_write) keeping its mode and owner."""
    st = os.lstat(path)
    try:
        atomic_write(path, data, mode=stat.S_IMODE(st.st_mode))
        if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
            # root converting a directory owned by the daemon's user (-U): keep the owner.
            os.chown(path, st.st_uid, st.st_gid)
    except OSError as e:
        raise SecretsError(f"cannot write: {e.strerror or e}", path) from e


def convert_network(confbase: str, key, encrypting: bool, everything: bool = False,
                    on_change=None) -> list[FileChange]:
    """Encrypt (or decrypt) the network directory's files in place; returns what was done.

    Encrypting takes the secrets, or with everything every file network_files() lists;
    decrypting always takes every file (any of them may have been encrypted). Every file is
    checked first (plan_conversion); then each is replaced atomically, the new content
    verified in memory before it replaces the old. Safe to re-run after an interruption.
    on_change(change) is called after each file is written or skipped.
    """
    everything = everything or not encrypting
    key_bytes = _key_bytes(key, confbase)
    plan = plan_conversion(network_files(confbase, everything, key_bytes), key_bytes,
                           encrypting)
    done = []
    for change, clear in plan:
        if change.action == "encrypt":
            data = encrypt(clear, key_bytes, change.path)
            if decrypt(data, key_bytes, change.path) != clear:
                raise SecretsError("encryption did not round-trip; file left unchanged",
                                   change.path)
            replace_file(change.path, data)
        elif change.action == "decrypt":
            replace_file(change.path, clear)
        done.append(change)
        if on_change is not None:
            on_change(change)
    return done


# ---------------------------------------------------------------------------------------------
# Editing a file that may be encrypted (the CLI's get/set/add/del, key generation)

def read_file(path, key=None) -> tuple[bytes, bool]:
    """(plaintext, encrypted) of file path; OSError as open() raises it, SecretsError."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    if is_encrypted(data):
        return decrypt(data, key, path), True
    return data, False


def write_file(path, plaintext: bytes, encrypted: bool, key=None, mode=None,
               default_mode=0o644) -> None:
    """Atomically replace path by plaintext, encrypted first if encrypted (so an edited file
    stays as it was: plain or encrypted). OSError or SecretsError; the old file is then
    untouched."""
    data = encrypt(plaintext, key, os.fspath(path)) if encrypted else bytes(plaintext)
    atomic_write(path, data, mode=mode, default_mode=default_mode)


def append_file(path, data: bytes, key=None, default_mode=0o644) -> None:
    """Append data to path (created plain if missing) by rewriting it atomically, encrypted
    again if it was; a missing final line break is added first. OSError or SecretsError."""
    try:
        old, encrypted = read_file(path, key)
    except FileNotFoundError:
        old, encrypted = b"", False
    if old and not old.endswith(b"\n"):
        old += b"\n"
    write_file(path, old + data, encrypted, key, default_mode=default_mode)
