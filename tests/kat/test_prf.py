"""SHA-512, HMAC-SHA-512 and tinc's PRF against vectors/prf.json and the stdlib."""
import hashlib
import hmac

import pytest

from tests.vectors import load, unhex
from tincapp.sptps import crypto

CASES = load("prf")["cases"]


def test_vector_count():
    assert len(CASES) == 10


@pytest.mark.parametrize("case", CASES, ids=[c["note"] for c in CASES])
def test_prf(case):
    out = crypto.prf(unhex(case["secret"]), unhex(case["seed"]), case["outlen"])
    assert len(out) == case["outlen"]
    assert out == unhex(case["output"])


def test_shorter_output_is_a_prefix():
    case = CASES[0]
    secret, seed = unhex(case["secret"]), unhex(case["seed"])
    assert crypto.prf(secret, seed, 100) == unhex(case["output"])[:100]
    assert crypto.prf(secret, seed, 0) == b""


def test_prf_is_not_tls_p_hash():
    # TLS P_hash starts the chain from the seed; tinc starts it from 64 zero bytes.
    case = CASES[0]
    secret, seed = unhex(case["secret"]), unhex(case["seed"])
    a1 = hmac.new(secret, seed, hashlib.sha512).digest()
    tls_block1 = hmac.new(secret, a1 + seed, hashlib.sha512).digest()
    assert crypto.prf(secret, seed, 64) != tls_block1


@pytest.mark.parametrize("data_len", [0, 1, 111, 127, 128, 129, 1000])
def test_sha512_matches_hashlib(data_len):
    data = bytes(range(256)) * 4
    assert crypto.sha512(data[:data_len]) == hashlib.sha512(data[:data_len]).digest()


@pytest.mark.parametrize("key_len", [0, 1, 32, 64, 127, 128, 129, 200, 300])
@pytest.mark.parametrize("data_len", [0, 1, 64, 200])
def test_hmac_sha512_matches_stdlib(key_len, data_len):
    key = bytes((7 * i + 3) & 0xFF for i in range(key_len))
    data = bytes((5 * i + 1) & 0xFF for i in range(data_len))
    assert crypto.hmac_sha512(key, data) == hmac.new(key, data, hashlib.sha512).digest()
