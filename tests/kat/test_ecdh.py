"""tinc's Ed25519-based ECDH against vectors/ecdh.json."""
import nacl.bindings as na
import pytest

from tests.vectors import load, unhex
from tincapp.errors import HandshakeError
from tincapp.sptps import crypto

CASES = load("ecdh")["cases"]
IDS = [f"case{i}" for i in range(len(CASES))]


def test_vector_count():
    assert len(CASES) == 5


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_public_values(case):
    assert crypto.EcdhKey.from_seed(unhex(case["seed_a"])).public == unhex(case["public_a"])
    assert crypto.EcdhKey.from_seed(unhex(case["seed_b"])).public == unhex(case["public_b"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_private_expanded_like_ed25519(case):
    for side in "ab":
        key = crypto.PrivateKey.from_seed(unhex(case[f"seed_{side}"]))
        assert key.expanded == unhex(case[f"private_{side}_expanded"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shared_secret_both_directions(case):
    a = crypto.EcdhKey.from_seed(unhex(case["seed_a"]))
    b = crypto.EcdhKey.from_seed(unhex(case["seed_b"]))
    assert a.shared_secret(unhex(case["public_b"])) == unhex(case["shared"])
    assert b.shared_secret(unhex(case["public_a"])) == unhex(case["shared"])


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_shared_secret_matches_spec_formula(case):
    # sptps.md 2.3: X25519(priv[0:32], Montgomery form of the peer's Edwards point).
    scalar = unhex(case["private_a_expanded"])[:32]
    u = na.crypto_sign_ed25519_pk_to_curve25519(unhex(case["public_b"]))
    assert na.crypto_scalarmult(scalar, u) == unhex(case["shared"])


@pytest.mark.parametrize("peer", [
    bytes(32),                          # y = 0: a point of order 4
    b"\x01" + bytes(31),                # the identity
    b"\xec" + b"\xff" * 30 + b"\x7f",   # y = p - 1: order 2
    b"\xff" * 32,                       # non-canonical encoding
])
def test_rejected_peer_point_is_handshake_error(peer):
    key = crypto.EcdhKey.from_seed(unhex(CASES[0]["seed_a"]))
    with pytest.raises(HandshakeError, match="ECDH"):
        key.shared_secret(peer)


@pytest.mark.parametrize("peer", [b"", bytes(31), bytes(33), None])
def test_wrong_length_peer_point_is_handshake_error(peer):
    key = crypto.EcdhKey.from_seed(unhex(CASES[0]["seed_a"]))
    with pytest.raises(HandshakeError):
        key.shared_secret(peer)


def test_repr_hides_key_bytes():
    key = crypto.EcdhKey.from_seed(unhex(CASES[0]["seed_a"]))
    assert CASES[0]["public_a"][:8] not in repr(key)
    assert CASES[0]["private_a_expanded"][:8] not in repr(key)
