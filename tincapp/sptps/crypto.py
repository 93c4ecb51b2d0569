"""SPTPS handshake crypto: SHA-512, HMAC-SHA-512, tinc's PRF, Ed25519 with tinc's expanded
keys, and tinc's Ed25519-based ECDH (spec sptps.md section 2).

Owns the mapping of tinc's (orlp ed25519) primitives onto libsodium. Only libsodium, through
nacl.bindings, so the process holds one crypto library (PyNaCl's bundled libsodium, which the
compiled record layer also uses). No I/O, no clock, no global randomness: seeds come in as
bytes. The record cipher is not here (tincapp/sptps/record.py and pyx/record.pyx own it).
Stateless apart from immutable key objects; safe to share between threads.
"""
import nacl.bindings as _na
import nacl.exceptions as _nacl_exc

from tincapp.errors import HandshakeError

PUBLIC_LEN = 32
SEED_LEN = 32
EXPANDED_LEN = 64
SIGNATURE_LEN = 64
SHARED_LEN = 32
SHA512_LEN = 64
_HMAC_BLOCK_LEN = 128

# HMAC pads: byte-wise XOR tables, so padding a 128-byte key is one bytes.translate().
_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def sha512(data) -> bytes:
    """SHA-512 of data (64 bytes).

    Why libsodium and not hashlib: measured here, hashlib is about 2x faster per call (~1.6 us
    vs ~3 us for 64-200 bytes), but a handshake makes ~20 hash calls, so the difference is
    ~30 us per handshake next to ~4 Ed25519/X25519 scalar multiplications. That is not worth
    a second crypto library (OpenSSL, possibly FIPS-restricted) in the process.
    """
    return _na.crypto_hash_sha512(bytes(data))


def hmac_sha512(key, data) -> bytes:
    """Standard HMAC-SHA-512 (RFC 2104): block 128 bytes, keys longer than a block hashed."""
    # libsodium's crypto_auth_hmacsha512 is not exposed by nacl.bindings, hence built here.
    key = bytes(key)
    if len(key) > _HMAC_BLOCK_LEN:
        key = sha512(key)
    key = key.ljust(_HMAC_BLOCK_LEN, b"\0")
    inner = sha512(key.translate(_IPAD) + bytes(data))
    return sha512(key.translate(_OPAD) + inner)


def prf(secret, seed, outlen: int) -> bytes:
    """tinc's key-expansion PRF (src/nolegacy/prf.c), outlen bytes.

    COMPAT: not TLS's P_hash. The chain starts from 64 zero bytes, not from the seed, and the
    seed is appended to the chain value in both HMAC calls:
        A = 0^64;  loop: A = HMAC(secret, A || seed);  out ||= HMAC(secret, A || seed)
    """
    if outlen < 0:
        raise ValueError("PRF output length must not be negative")
    secret = bytes(secret)
    seed = bytes(seed)
    chain = bytes(SHA512_LEN)
    out = bytearray()
    while len(out) < outlen:
        chain = hmac_sha512(secret, chain + seed)
        out += hmac_sha512(secret, chain + seed)
    return bytes(out[:outlen])


def _check_len(name, value, length) -> bytes:
    value = bytes(value)
    if len(value) != length:
        raise ValueError(f"{name} must be {length} bytes, got {len(value)}")
    return value


def expand_seed(seed32) -> bytes:
    """The 64-byte expanded key tinc stores: clamped h[0:32] || h[32:64], h = SHA-512(seed)."""
    h = bytearray(sha512(_check_len("Ed25519 seed", seed32, SEED_LEN)))
    h[0] &= 248
    h[31] &= 63
    h[31] |= 64
    return bytes(h)


def public_from_expanded(expanded64) -> bytes:
    """The public key a·B for the scalar a = expanded64[0:32]."""
    expanded64 = _check_len("expanded Ed25519 key", expanded64, EXPANDED_LEN)
    # Reduce a mod L first: B has order L, so a·B == (a mod L)·B for any a, and the noclamp
    # base multiplication is then defined for every input (it masks bit 255 otherwise).
    a_red = _na.crypto_core_ed25519_scalar_reduce(expanded64[:32] + bytes(32))
    try:
        return _na.crypto_scalarmult_ed25519_base_noclamp(a_red)
    except _nacl_exc.RuntimeError as e:
        # Only a scalar of 0 mod L gets here; clamping makes that impossible for tinc's keys.
        raise ValueError("expanded Ed25519 key has a zero scalar (mod L)") from e


class PrivateKey:
    """A long-term Ed25519 key in tinc's form: the 64-byte expanded key plus the public key.

    tinc never stores the seed, so signing works from the expanded key (spec sptps.md 2.2).
    Immutable.
    """

    __slots__ = ("_expanded", "_public")

    def __init__(self, expanded64: bytes, public32: bytes):
        # Use from_seed / from_expanded; this trusts that public32 belongs to expanded64.
        self._expanded = _check_len("expanded Ed25519 key", expanded64, EXPANDED_LEN)
        self._public = _check_len("Ed25519 public key", public32, PUBLIC_LEN)

    @classmethod
    def from_seed(cls, seed32) -> "PrivateKey":
        """The key tinc's ed25519_create_keypair makes from 32 random bytes."""
        expanded = expand_seed(seed32)
        return cls(expanded, public_from_expanded(expanded))

    @classmethod
    def from_expanded(cls, expanded64, public32=None) -> "PrivateKey":
        """A key as read from a tinc private key file; the public half derived when None.

        A given public32 is taken as is (tinc does not check it either); keys.py compares it
        with public_from_expanded() when reading files.
        """
        if public32 is None:
            public32 = public_from_expanded(expanded64)
        return cls(expanded64, public32)

    @property
    def expanded(self) -> bytes:
        return self._expanded

    @property
    def public(self) -> bytes:
        return self._public

    def sign(self, message) -> bytes:
        """Deterministic 64-byte Ed25519 signature R || S, as orlp's ed25519_sign computes it."""
        message = bytes(message)
        a, prefix = self._expanded[:32], self._expanded[32:]
        reduce = _na.crypto_core_ed25519_scalar_reduce
        r = reduce(sha512(prefix + message))
        # Fails only if r == 0 mod L, i.e. a SHA-512 output that is a multiple of L: never seen.
        big_r = _na.crypto_scalarmult_ed25519_base_noclamp(r)
        k = reduce(sha512(big_r + self._public + message))
        a_red = reduce(a + bytes(32))
        s = _na.crypto_core_ed25519_scalar_add(_na.crypto_core_ed25519_scalar_mul(k, a_red), r)
        return big_r + s

    def __repr__(self) -> str:
        return "<PrivateKey (key bytes not shown)>"


def verify(public32, message, signature) -> bool:
    """True if signature is a valid Ed25519 signature of message under public32.

    Never raises: wrong types or lengths are simply invalid. libsodium is stricter than orlp on
    malformed points and non-canonical S, which only affects crafted signatures (sptps.md 2.2).
    """
    try:
        public32 = bytes(public32)
        signature = bytes(signature)
        message = bytes(message)
    except (TypeError, ValueError):
        return False
    # nacl.bindings.crypto_sign_open does not check the key length itself: C would read past
    # a short buffer, so both lengths are checked here first.
    if len(public32) != PUBLIC_LEN or len(signature) != SIGNATURE_LEN:
        return False
    try:
        _na.crypto_sign_open(signature + message, public32)
    except _nacl_exc.CryptoError:  # BadSignatureError and friends
        return False
    return True


class EcdhKey:
    """One side's ephemeral key for one KEX (tinc's ecdh_generate_public / ecdh_compute_shared).

    The public value is an Ed25519 point; the shared secret is X25519 of our clamped scalar
    with the peer's point converted to Montgomery form. Use once per KEX, then drop.
    """

    __slots__ = ("_scalar", "_public")

    def __init__(self, scalar32: bytes, public32: bytes):
        self._scalar = _check_len("ECDH scalar", scalar32, 32)
        self._public = _check_len("ECDH public value", public32, PUBLIC_LEN)

    @classmethod
    def from_seed(cls, seed32) -> "EcdhKey":
        """The ephemeral key tinc makes from 32 random bytes (an Ed25519 key pair)."""
        key = PrivateKey.from_seed(seed32)
        return cls(key.expanded[:32], key.public)

    @property
    def public(self) -> bytes:
        """The 32 bytes sent in the KEX record (a compressed Edwards point)."""
        return self._public

    def shared_secret(self, peer_public32) -> bytes:
        """The 32-byte shared secret with the peer's KEX public value.

        Raises HandshakeError if libsodium rejects the peer's point or the result. tinc itself
        never rejects (orlp does no checks), but honest tinc peers always pass these checks.
        """
        try:
            peer = bytes(peer_public32)
        except (TypeError, ValueError) as e:
            raise HandshakeError(f"peer's ECDH public value is not bytes: {e}") from e
        if len(peer) != PUBLIC_LEN:
            raise HandshakeError(
                f"peer's ECDH public value is {len(peer)} bytes, expected {PUBLIC_LEN}")
        try:
            peer_u = _na.crypto_sign_ed25519_pk_to_curve25519(peer)
        except _nacl_exc.CryptoError as e:
            raise HandshakeError(
                "peer's ECDH public value is not an acceptable Ed25519 point (not on the "
                "curve, small order or outside the prime-order subgroup)") from e
        try:
            return _na.crypto_scalarmult(self._scalar, peer_u)
        except _nacl_exc.CryptoError as e:
            raise HandshakeError("ECDH shared secret is all zero (peer sent a weak point)") from e

    def __repr__(self) -> str:
        return "<EcdhKey (key bytes not shown)>"
