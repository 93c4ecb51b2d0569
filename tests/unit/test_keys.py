"""Key files: tinc's read_pem rules, hosts-file lookup, atomic writes, disable_old_keys."""
import logging
import os
import stat

import pytest

from tincapp import b64, keys
from tincapp.errors import KeyFileError
from tincapp.sptps.crypto import PrivateKey, verify

KEY = PrivateKey.from_seed(bytes(range(32)))
OTHER = PrivateKey.from_seed(bytes(range(1, 33)))
PRIV_BEGIN = "-----BEGIN ED25519 PRIVATE KEY-----\n"
PRIV_END = "-----END ED25519 PRIVATE KEY-----\n"
PUB_BEGIN = "-----BEGIN ED25519 PUBLIC KEY-----\n"
PUB_END = "-----END ED25519 PUBLIC KEY-----\n"


def _private_text(body_lines, begin=PRIV_BEGIN, end=PRIV_END):
    return begin + "".join(line + "\n" for line in body_lines) + end


def _body_lines(key=KEY, public=None):
    body = key.expanded + (key.public if public is None else public)
    return [b64.encode(body[:48]), b64.encode(body[48:])]


def _same_key(a, b):
    return a.expanded == b.expanded and a.public == b.public


@pytest.fixture
def umask():
    """Set a umask for one test and restore the old one afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)
    yield os.umask
    os.umask(saved)


# ---- parsing private keys -----------------------------------------------------------------

def test_private_pem_round_trip():
    text = keys.format_private_pem(KEY)
    assert text == _private_text(_body_lines())
    assert _same_key(keys.parse_private_pem(text), KEY)


def test_private_pem_skips_leading_lines_and_accepts_crlf():
    text = "junk\n# comment\n" + _private_text(_body_lines()).replace("\n", "\r\n")
    assert _same_key(keys.parse_private_pem(text), KEY)


def test_private_pem_first_block_wins():
    text = _private_text(_body_lines(KEY)) + _private_text(_body_lines(OTHER))
    assert _same_key(keys.parse_private_pem(text), KEY)


def test_private_pem_begin_is_a_prefix_match():
    # COMPAT: tinc compares "-----BEGIN " + type as a prefix only.
    text = _private_text(_body_lines(), begin="-----BEGIN ED25519 PRIVATE KEY whatever\n")
    assert _same_key(keys.parse_private_pem(text), KEY)


def test_private_pem_other_block_types_are_skipped():
    text = keys.format_public_pem(OTHER.public) + keys.format_private_pem(KEY)
    assert _same_key(keys.parse_private_pem(text), KEY)


def test_each_line_is_decoded_on_its_own():
    body = KEY.expanded + KEY.public
    # Lines cut at any multiple of 3 bytes work: each line is its own base64 text.
    lines = [b64.encode(body[i:i + 3 * n]) for i, n in zip((0, 9, 48), (3, 13, 16))]
    assert _same_key(keys.parse_private_pem(_private_text(lines)), KEY)
    # Re-wrapping the continuous text at 63 characters is not the same thing.
    text = b64.encode(body)
    with pytest.raises(KeyFileError):
        keys.parse_private_pem(_private_text([text[:63], text[63:]]))


@pytest.mark.parametrize("lines,match", [
    (lambda l: [l[0]], "too little"),                                # 48 bytes
    (lambda l: [l[0], l[1][:-4]], "too little"),                     # 93 bytes
    (lambda l: [l[0], l[1], "AAAA"], "too much"),                    # 99 bytes
    (lambda l: [l[0] + "AAAA", l[1]], "too much"),
    (lambda l: [l[0], "", l[1]], "invalid base64"),                  # empty line decodes to 0
    (lambda l: [l[0], "A", l[1]], "invalid base64"),                 # one char decodes to 0
    (lambda l: [l[0][:10] + "=" + l[0][11:], l[1]], "invalid base64"),
    (lambda l: [l[0][:10] + " " + l[0][11:], l[1]], "invalid base64"),
])
def test_malformed_private_body(lines, match):
    with pytest.raises(KeyFileError, match=match):
        keys.parse_private_pem(_private_text(lines(_body_lines())), source="keyfile")


def test_malformed_error_names_source_and_line():
    lines = _body_lines()
    text = _private_text([lines[0], lines[1][:5] + "*" + lines[1][6:]])
    with pytest.raises(KeyFileError, match=r"^my\.priv:3: invalid base64"):
        keys.parse_private_pem(text, source="my.priv")


def test_missing_end_line():
    # DEVIATION: tinc would accept this (body complete); we call the file truncated.
    text = PRIV_BEGIN + "".join(line + "\n" for line in _body_lines())
    with pytest.raises(KeyFileError, match="no -----END"):
        keys.parse_private_pem(text)


def test_missing_begin_line():
    with pytest.raises(KeyFileError, match="no -----BEGIN ED25519 PRIVATE KEY"):
        keys.parse_private_pem("".join(line + "\n" for line in _body_lines()) + PRIV_END)
    with pytest.raises(KeyFileError):
        keys.parse_private_pem("")


def test_mismatched_public_half():
    text = _private_text(_body_lines(KEY, public=OTHER.public))
    with pytest.raises(KeyFileError, match="does not match"):
        keys.parse_private_pem(text)


def test_disabled_block_is_not_read():
    text = "".join("#" + line for line in keys.format_private_pem(KEY).splitlines(True))
    with pytest.raises(KeyFileError, match="no -----BEGIN"):
        keys.parse_private_pem(text)


# ---- public keys and hosts files ----------------------------------------------------------

def test_public_pem_round_trip_and_errors():
    text = keys.format_public_pem(KEY.public)
    assert text == PUB_BEGIN + b64.encode(KEY.public) + "\n" + PUB_END
    assert keys.parse_public_pem(text) == KEY.public
    with pytest.raises(KeyFileError, match="too little"):
        keys.parse_public_pem(PUB_BEGIN + b64.encode(KEY.public[:30]) + "\n" + PUB_END)
    with pytest.raises(ValueError):
        keys.format_public_pem(bytes(31))


@pytest.mark.parametrize("line", [
    "Ed25519PublicKey = {k}", "ed25519publickey {k}", "ED25519PUBLICKEY={k}",
    "Ed25519PublicKey\t=\t{k}\t ", "Ed25519PublicKey = {k}\r", "Ed25519PublicKey   {k}",
])
def test_host_text_variable_syntax(line):
    text = "Address = 192.0.2.1\n" + line.format(k=b64.encode(KEY.public)) + "\nPort = 655\n"
    assert keys.public_key_from_host_text(text) == KEY.public


def test_host_text_first_variable_wins_and_comments_are_skipped():
    text = (f"#Ed25519PublicKey = {b64.encode(OTHER.public)}\n"
            f"Ed25519PublicKey = {b64.encode(KEY.public)}\n"
            f"Ed25519PublicKey = {b64.encode(OTHER.public)}\n")
    assert keys.public_key_from_host_text(text) == KEY.public


def test_host_text_variable_beats_pem_block():
    text = keys.format_public_pem(OTHER.public) + keys.hosts_line(KEY.public)
    assert keys.public_key_from_host_text(text) == KEY.public


def test_host_text_falls_back_to_pem_block():
    text = "Subnet = 10.0.0.0/24\n\n" + keys.format_public_pem(KEY.public) + "Port = 655\n"
    assert keys.public_key_from_host_text(text) == KEY.public


@pytest.mark.parametrize("value,match", [
    (lambda k: k[:-1], "invalid size 42"),
    (lambda k: k + "A", "invalid size 44"),
    (lambda k: k[:-1] + "=", "invalid format"),
], ids=["short", "long", "bad-char"])
def test_host_text_invalid_value_is_an_error_without_fallback(value, match):
    good = b64.encode(KEY.public)
    text = f"Ed25519PublicKey = {value(good)}\n" + keys.format_public_pem(KEY.public)
    with pytest.raises(KeyFileError, match=match):
        keys.public_key_from_host_text(text, source="hosts/alpha")


def test_host_text_without_key():
    with pytest.raises(KeyFileError, match="hosts/alpha: no Ed25519 public key"):
        keys.public_key_from_host_text("Address = 192.0.2.1\n", source="hosts/alpha")


def test_host_text_variable_without_value_is_an_error():
    text = "Address\n" + keys.hosts_line(KEY.public)
    with pytest.raises(KeyFileError, match=r"hosts/alpha:1: no value"):
        keys.public_key_from_host_text(text, source="hosts/alpha")


def test_host_text_indented_hash_is_not_a_comment():
    text = f" #Ed25519PublicKey = {b64.encode(OTHER.public)}\n" + keys.hosts_line(KEY.public)
    assert keys.public_key_from_host_text(text) == KEY.public


# ---- disable_old_keys ---------------------------------------------------------------------

def test_disable_old_keys_hosts_file():
    line = keys.hosts_line(KEY.public)
    pem = keys.format_public_pem(KEY.public)
    text = ("Address = 192.0.2.1\n" + line + "Ed25519PublicKeyFile = /x\n" + pem
            + "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
            + "ed25519publickey\tabc\r\nSubnet = 10.0.0.0/8\nEd25519PublicKey")
    expected = ("Address = 192.0.2.1\n#" + line + "Ed25519PublicKeyFile = /x\n"
                + "".join("#" + x for x in pem.splitlines(True))
                + "-----BEGIN RSA PUBLIC KEY-----\nAAAA\n-----END RSA PUBLIC KEY-----\n"
                + "#ed25519publickey\tabc\r\nSubnet = 10.0.0.0/8\n#Ed25519PublicKey")
    assert keys.disable_old_keys(text) == expected
    with pytest.raises(KeyFileError):
        keys.public_key_from_host_text(keys.disable_old_keys(text))


def test_disable_old_keys_private_file_then_append():
    old = keys.format_private_pem(OTHER)
    disabled = keys.disable_old_keys(old)
    assert disabled == "".join("#" + x for x in old.splitlines(True))
    assert _same_key(keys.parse_private_pem(disabled + keys.format_private_pem(KEY)), KEY)


def test_disable_old_keys_leaves_other_text_alone():
    text = "Name = a\r\n\n#x\nEd25519PublicKeys = 1\n"
    assert keys.disable_old_keys(text) == text
    assert keys.disable_old_keys("") == ""


# ---- files --------------------------------------------------------------------------------

def test_write_and_read_private_key(tmp_path):
    path = tmp_path / "ed25519_key.priv"
    keys.write_private_key(path, KEY)
    assert path.read_text() == keys.format_private_pem(KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same_key(keys.read_private_key(path), KEY)
    assert os.listdir(tmp_path) == ["ed25519_key.priv"]


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o277])
def test_private_key_mode_is_0600_whatever_the_umask(tmp_path, umask, mask):
    umask(mask)
    path = tmp_path / "k.priv"
    keys.write_private_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_private_key_file_is_never_readable_by_others(tmp_path, umask, monkeypatch):
    umask(0)
    seen = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *args, **kwargs):
        fd = real_open(path, flags, mode, *args, **kwargs)
        if flags & os.O_CREAT:
            seen.append((flags & os.O_EXCL, stat.S_IMODE(os.fstat(fd).st_mode)))
        return fd

    monkeypatch.setattr(os, "open", spy)
    keys.write_private_key(tmp_path / "k.priv", KEY)
    assert seen == [(os.O_EXCL, 0o600)]


def test_private_key_overwrite_replaces_mode(tmp_path):
    path = tmp_path / "k.priv"
    path.write_text("old")
    path.chmod(0o644)
    keys.write_private_key(path, KEY)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _same_key(keys.read_private_key(path), KEY)
    assert os.listdir(tmp_path) == ["k.priv"]


def test_failed_write_leaves_old_file_and_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "k.priv"
    keys.write_private_key(path, OTHER)

    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(KeyFileError, match="k.priv"):
        keys.write_private_key(path, KEY)
    assert os.listdir(tmp_path) == ["k.priv"]
    assert _same_key(keys.read_private_key(path), OTHER)


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(KeyFileError, match="nodir"):
        keys.write_private_key(tmp_path / "nodir" / "k.priv", KEY)


def test_write_and_read_public_key(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "k.pub"
    keys.write_public_key(path, KEY.public)
    assert path.read_text() == keys.format_public_pem(KEY.public)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert keys.read_public_key(path) == KEY.public
    assert os.listdir(tmp_path) == ["k.pub"]


def test_read_public_key_from_hosts_file(tmp_path):
    path = tmp_path / "alpha"
    path.write_text("Address = 192.0.2.1\n" + keys.hosts_line(KEY.public))
    assert keys.read_public_key(path) == KEY.public


def test_missing_file_names_the_file(tmp_path):
    path = tmp_path / "absent.priv"
    with pytest.raises(KeyFileError, match="absent.priv.*does not exist"):
        keys.read_private_key(path)
    with pytest.raises(KeyFileError, match="absent.priv"):
        keys.read_public_key(path)


def test_unreadable_file_names_the_file(tmp_path):
    # A directory cannot be read even by root, unlike a chmod 000 file.
    with pytest.raises(KeyFileError, match=str(tmp_path)):
        keys.read_private_key(tmp_path)


def test_malformed_file_names_file_and_line(tmp_path):
    path = tmp_path / "bad.priv"
    path.write_text(_private_text([_body_lines()[0], "!!!!"]))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"bad\.priv:3:"):
        keys.read_private_key(path)


def test_wrong_length_file_names_the_file(tmp_path):
    path = tmp_path / "short.priv"
    path.write_text(_private_text(_body_lines()[:1]))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match=r"short\.priv.*too little"):
        keys.read_private_key(path)


def test_non_ascii_bytes_are_invalid_not_a_crash(tmp_path):
    path = tmp_path / "k.priv"
    lines = _body_lines()
    path.write_bytes(_private_text(lines).encode().replace(lines[1][:2].encode(), b"\xc3\xa9"))
    path.chmod(0o600)
    with pytest.raises(KeyFileError, match="invalid base64"):
        keys.read_private_key(path)


def test_insecure_permissions_warn_but_load(tmp_path, caplog):
    path = tmp_path / "k.priv"
    keys.write_private_key(path, KEY)
    path.chmod(0o640)
    with caplog.at_level(logging.WARNING, logger="tincapp.keys"):
        assert _same_key(keys.read_private_key(path), KEY)
    assert any("insecure" in r.message and "k.priv" in r.message for r in caplog.records)
    caplog.clear()
    path.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="tincapp.keys"):
        keys.read_private_key(path)
    assert not caplog.records


# ---- generation ---------------------------------------------------------------------------

def test_generate_uses_rng():
    calls = []

    def rng(n):
        calls.append(n)
        return bytes(range(n))

    assert _same_key(keys.generate_private_key(rng), KEY)
    assert calls == [32]


def test_generate_rejects_short_rng():
    with pytest.raises(ValueError):
        keys.generate_private_key(lambda n: bytes(n - 1))


def test_generate_random_round_trip(tmp_path):
    key = keys.generate_private_key(os.urandom)
    other = keys.generate_private_key(os.urandom)
    assert key.public != other.public
    keys.write_private_key(tmp_path / "k", key)
    read = keys.read_private_key(tmp_path / "k")
    assert _same_key(read, key)
    assert verify(key.public, b"hello", read.sign(b"hello"))
