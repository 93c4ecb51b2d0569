"""Ed25519 keys, key file texts and signatures against vectors/ed25519_keys.json."""
import nacl.bindings as na
import pytest

from tests.vectors import load, unhex
from tincapp import b64, keys
from tincapp.sptps import crypto

KEYS = load("ed25519_keys")["keys"]
IDS = [f"key{i}" for i in range(len(KEYS))]
SIGNATURES = [(k, s) for k in KEYS for s in k["signatures"]]
SIG_IDS = [f"key{i}-sig{j}" for i, k in enumerate(KEYS) for j in range(len(k["signatures"]))]


def test_vector_counts():
    assert len(KEYS) == 6 and len(SIGNATURES) == 24


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_key_from_seed(k):
    key = crypto.PrivateKey.from_seed(unhex(k["seed"]))
    assert key.expanded == unhex(k["private_expanded"])
    assert key.public == unhex(k["public"])
    # Cross-check with libsodium's own key generation.
    assert na.crypto_sign_seed_keypair(unhex(k["seed"]))[0] == key.public


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_key_from_expanded_derives_public(k):
    key = crypto.PrivateKey.from_expanded(unhex(k["private_expanded"]))
    assert key.public == unhex(k["public"])
    assert key.expanded == unhex(k["private_expanded"])


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_public_base64_and_hosts_line(k):
    public = unhex(k["public"])
    assert len(k["public_b64_tinc"]) == 43
    assert b64.encode(public) == k["public_b64_tinc"]
    assert b64.decode(k["public_b64_tinc"]) == public
    assert keys.hosts_line(public) == k["hosts_line"]
    assert keys.public_key_from_host_text(k["hosts_line"]) == public


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_private_key_file_byte_exact_both_ways(k):
    key = crypto.PrivateKey.from_seed(unhex(k["seed"]))
    assert keys.format_private_pem(key) == k["private_key_file"]
    parsed = keys.parse_private_pem(k["private_key_file"])
    assert parsed.expanded == unhex(k["private_expanded"])
    assert parsed.public == unhex(k["public"])
    assert keys.format_private_pem(parsed) == k["private_key_file"]


@pytest.mark.parametrize("k", KEYS, ids=IDS)
def test_public_key_pem_both_ways(k):
    public = unhex(k["public"])
    assert keys.format_public_pem(public) == k["public_key_pem"]
    assert keys.parse_public_pem(k["public_key_pem"]) == public
    assert keys.public_key_from_host_text(k["public_key_pem"]) == public


@pytest.mark.parametrize("k,sig", SIGNATURES, ids=SIG_IDS)
def test_signature(k, sig):
    message, signature = unhex(sig["message"]), unhex(sig["signature"])
    # Signing works from the expanded key alone, as it must for keys read from tinc files.
    key = crypto.PrivateKey.from_expanded(unhex(k["private_expanded"]), unhex(k["public"]))
    assert key.sign(message) == signature
    assert crypto.verify(key.public, message, signature)


@pytest.mark.parametrize("k,sig", SIGNATURES, ids=SIG_IDS)
def test_signature_matches_libsodium_seed_signing(k, sig):
    _, sk = na.crypto_sign_seed_keypair(unhex(k["seed"]))
    message = unhex(sig["message"])
    assert na.crypto_sign(message, sk)[:64] == unhex(sig["signature"])


@pytest.mark.parametrize("k,sig", SIGNATURES[::4], ids=SIG_IDS[::4])
def test_verify_rejects_tampering(k, sig):
    public, message, signature = unhex(k["public"]), unhex(sig["message"]), unhex(sig["signature"])
    bad_sig = bytes([signature[0] ^ 1]) + signature[1:]
    assert not crypto.verify(public, message, bad_sig)
    assert not crypto.verify(public, message + b"x", signature)
    other = unhex(KEYS[(KEYS.index(k) + 1) % len(KEYS)]["public"])
    assert not crypto.verify(other, message, signature)


@pytest.mark.parametrize("public,message,signature", [
    (b"", b"m", bytes(64)), (bytes(31), b"m", bytes(64)), (bytes(32), b"m", bytes(63)),
    (None, b"m", bytes(64)), (bytes(32), "str", bytes(64)), (b"\xff" * 32, b"", b"\xff" * 64),
])
def test_verify_never_raises(public, message, signature):
    assert crypto.verify(public, message, signature) is False


def test_repr_hides_key_bytes():
    k = KEYS[1]
    key = crypto.PrivateKey.from_seed(unhex(k["seed"]))
    text = repr(key) + str(key)
    for secret in (k["private_expanded"], k["public"], k["seed"]):
        assert secret[:8] not in text.lower()
    assert k["public_b64_tinc"][:8] not in text
