"""Configuration encrypted at rest (tincapp.config.secrets): key sources, the configparser-crypt
file format both ways, refusal of wrong keys, damaged files and crafted pickles, transparent
reading by the config/key readers, in-place conversion of a network directory, and the CLI
commands generate-config-key / encrypt-config / decrypt-config."""
import base64
import hashlib
import io
import os
import pickle
import stat
import sys
import time

import configparser_crypt       # imported here, not in the first test (it takes ~80 ms)
import pytest

from tincapp import keys
from tincapp.cli import offline
from tincapp.cli.commands import main
from tincapp.config import parse, secrets
from tincapp.config.netconf import load_host_config, load_network, resolve_paths
from tincapp.errors import ConfigError

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
# pycryptodomex loads its C bindings (through cffi) at the first cipher use, ~60 ms: pay it
# at import, not in whichever test runs first.
secrets.decrypt(secrets.encrypt(b"warm-up", KEY), KEY)
ALICE = keys.generate_private_key(lambda n: b"\x01" * n)
BOB = keys.generate_private_key(lambda n: b"\x02" * n)


def encrypted_payload(payload: bytes, key=KEY) -> bytes:
    """A correctly encrypted file whose decrypted payload is `payload` as is (not pickled by
    us): built from cryptidy's primitives, as an attacker who knows the key could."""
    from cryptidy import aes_encryption, padding
    nonce, tag, ciphertext = aes_encryption.aes_encrypt(payload, key)
    stamp = padding.pad(str(time.time())).encode()
    return secrets.MAGIC + base64.b64encode(nonce + tag + stamp + ciphertext)


class Evil:
    """Unpickling this runs `touch PATH`."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


# --- keys ------------------------------------------------------------------------------------

def test_parse_key_forms():
    assert secrets.parse_key(KEY.hex().encode() + b"\n", "f") == KEY
    assert secrets.parse_key(KEY[:16].hex().upper().encode(), "f") == KEY[:16]
    assert secrets.parse_key(KEY, "f") == KEY                       # raw 32 bytes (files)
    with pytest.raises(secrets.ConfigKeyError, match="f: not a configuration key"):
        secrets.parse_key(KEY, "f", allow_raw=False)
    for bad in (b"", b"abc", KEY.hex()[:-1].encode(), b"zz" * 32, KEY.hex().encode() * 2,
                b"00 " * 21 + b"0"):
        with pytest.raises(secrets.ConfigKeyError):
            secrets.parse_key(bad, "f")
    assert secrets.format_key(KEY) == KEY.hex() + "\n"
    assert len(secrets.generate_key(os.urandom)) == 32


def test_key_sources_and_precedence(tmp_path):
    kf = tmp_path / "k"
    kf.write_text(KEY.hex() + "\n")
    of = tmp_path / "other"
    of.write_text(OTHER_KEY.hex())
    env = {secrets.KEY_FILE_ENV: str(of), secrets.KEY_ENV: "00" * 32}
    assert secrets.KeySource(str(kf), env=env).load() == KEY           # option first
    assert secrets.KeySource(env=env).load() == OTHER_KEY              # then the env file
    assert secrets.KeySource(env={secrets.KEY_ENV: KEY.hex()}).load() == KEY
    stdin = io.StringIO(KEY.hex() + "\nnext command\n")
    src = secrets.KeySource("-", env=env, stdin=stdin)
    assert src.load() == KEY and src.load() == KEY
    assert stdin.readline() == "next command\n"          # one line only: the shell keeps the rest
    assert KEY.hex() not in repr(src) and "stdin" in repr(src)
    assert not secrets.KeySource(env={}).configured
    with pytest.raises(secrets.ConfigKeyError, match="no configuration key on stdin"):
        secrets.KeySource("-", stdin=io.StringIO("")).load()
    with pytest.raises(secrets.ConfigKeyError, match=f"{tmp_path}/missing: cannot read"):
        secrets.KeySource(str(tmp_path / "missing")).load()
    with pytest.raises(secrets.ConfigKeyError, match=r"\$TINCAPP_CONFIG_KEY"):
        secrets.KeySource(env={secrets.KEY_ENV: "not hex"}).load()


def test_no_key_error_names_the_file_and_the_ways_to_give_one():
    data = secrets.encrypt(b"Name = alice\n", KEY)
    with pytest.raises(secrets.NoConfigKeyError) as e:
        secrets.plaintext(data, "/net/tinc.conf", secrets.KeySource(env={}))
    assert isinstance(e.value, ConfigError)
    message = str(e.value)
    assert message.startswith("/net/tinc.conf: ")
    for way in ("--config-key-file", "TINCAPP_CONFIG_KEY_FILE", "TINCAPP_CONFIG_KEY"):
        assert way in message


# --- format ----------------------------------------------------------------------------------

def test_round_trip_any_bytes_and_fresh_nonce():
    for text in (b"", b"Name = alice\n", bytes(range(256)) * 3):
        a, b = secrets.encrypt(text, KEY), secrets.encrypt(text, KEY)
        assert a != b                                   # new nonce each time
        assert a.startswith(secrets.MAGIC) and secrets.is_encrypted(a)
        assert secrets.decrypt(a, KEY) == text
        assert secrets.decrypt(a, secrets.KeySource.from_key(KEY)) == text


def test_plain_tinc_files_are_not_taken_for_encrypted():
    samples = [b"", b"Name = alice\n", b"Name=alice", b"#comment\n",
               keys.format_private_pem(ALICE).encode(), keys.hosts_line(ALICE.public).encode(),
               keys.hosts_line(ALICE.public).replace(" = ", "=").encode()]
    for data in samples:
        assert not secrets.is_encrypted(data), data
        assert secrets.plaintext(data, "f", None) == data      # no key needed


def test_configparser_crypt_interoperates_both_ways():
    ConfigParserCrypt = configparser_crypt.ConfigParserCrypt
    # A file configparser-crypt writes with its defaults (no header) is read here ...
    writer = ConfigParserCrypt()
    writer.aes_key = KEY
    writer["net"] = {"Name": "alice"}
    buf = io.BytesIO()
    writer.write_encrypted(buf)
    assert secrets.is_encrypted(buf.getvalue())
    assert secrets.decrypt(buf.getvalue(), KEY) == b"[net]\nName = alice\n\n"
    # ... and a file written here is read by configparser-crypt (header = our magic line).
    ours = secrets.encrypt(b"[net]\nName = bob\n", KEY)
    reader = ConfigParserCrypt()
    reader.aes_key = KEY
    reader.header_length = len(secrets.MAGIC)
    reader._read_encrypted(io.BytesIO(ours), "ours", None)
    assert reader["net"]["Name"] == "bob"


def test_wrong_key_is_refused_naming_the_file():
    data = secrets.encrypt(b"Name = alice\n", KEY)
    with pytest.raises(secrets.EncryptedFileError, match="^/x/tinc.conf: cannot decrypt: wrong"):
        secrets.decrypt(data, OTHER_KEY, "/x/tinc.conf")


def test_every_truncation_is_an_error_not_a_plain_file():
    data = secrets.encrypt(keys.format_private_pem(ALICE).encode(), KEY)
    # Every cut in the magic line and the header, then every 5th byte of the body.
    for n in [*range(1, 140), *range(140, len(data), 5)]:
        cut = data[:n]
        assert secrets.is_encrypted(cut), n
        with pytest.raises(secrets.EncryptedFileError, match="^priv: "):
            secrets.decrypt(cut, KEY, "priv")


def test_tampering_anywhere_authenticated_is_detected():
    data = secrets.encrypt(b"Name = alice\nPort = 655\n", KEY)
    raw = bytearray(base64.b64decode(data[len(secrets.MAGIC):]))
    stamp = slice(secrets.NONCE_LEN + secrets.TAG_LEN, secrets.HEADER_LEN)
    for i in range(len(raw)):
        if stamp.start <= i < stamp.stop:
            continue            # the timestamp is outside the MAC (see the module docstring)
        bad = bytearray(raw)
        bad[i] ^= 0x01
        with pytest.raises(secrets.EncryptedFileError):
            secrets.decrypt(secrets.MAGIC + base64.b64encode(bytes(bad)), KEY, "f")
    # A damaged timestamp field fails its shape check.
    bad = bytearray(raw)
    bad[stamp.stop - 1] = 0
    with pytest.raises(secrets.EncryptedFileError, match="timestamp"):
        secrets.decrypt(secrets.MAGIC + base64.b64encode(bytes(bad)), KEY, "f")
    with pytest.raises(secrets.EncryptedFileError, match="base64"):
        secrets.decrypt(data[:-3] + b"!" + data[-2:], KEY, "f")


# --- the restricted unpickler ------------------------------------------------------------------

def test_crafted_pickle_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(Evil(marker))
    # The payload really is dangerous: a plain pickle.loads (what configparser-crypt's reader
    # does) runs it.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Evil(probe)))
    assert probe.exists()
    data = encrypted_payload(evil)
    with pytest.raises(secrets.UnsafePayloadError,
                       match=f"^{tmp_path}/tinc.conf: decrypted payload is not a plain string"):
        secrets.decrypt(data, KEY, f"{tmp_path}/tinc.conf")
    # Through the readers the daemon uses, too.
    (tmp_path / "tinc.conf").write_bytes(data)
    (tmp_path / "ed25519_key.priv").write_bytes(data)
    with pytest.raises(secrets.UnsafePayloadError):
        parse.read_file(tmp_path / "tinc.conf", KEY)
    with pytest.raises(secrets.UnsafePayloadError):
        keys.read_private_key(tmp_path / "ed25519_key.priv", KEY)
    # The second layer alone (no opcode check) refuses it as well.
    with pytest.raises(pickle.UnpicklingError, match="refused to load global"):
        secrets._NoGlobalsUnpickler(io.BytesIO(evil)).load()
    assert not marker.exists()


def test_only_a_pickled_str_or_bytes_is_accepted():
    assert secrets.restricted_loads(pickle.dumps(b"abc")) == b"abc"
    assert secrets.restricted_loads(pickle.dumps("h\xe9")) == "h\xe9".encode()
    for proto in (3, 4, 5):
        assert secrets.restricted_loads(pickle.dumps(b"x" * 300, protocol=proto)) == b"x" * 300
    for value in (1, [b"a"], {"a": b"b"}, (b"a",), None, 1.5):
        with pytest.raises(secrets.UnsafePayloadError):
            secrets.restricted_loads(pickle.dumps(value))
    for junk in (b"", b"raw bytes", pickle.dumps(b"a")[:-1], pickle.dumps(b"a") + b"X",
                 pickle.dumps(b"a", protocol=0), pickle.dumps(b"a", protocol=2)):
        with pytest.raises(secrets.UnsafePayloadError):
            secrets.restricted_loads(junk)
    # A right-key file whose payload is not a pickle at all (cryptidy's raw fallback).
    with pytest.raises(secrets.UnsafePayloadError):
        secrets.decrypt(encrypted_payload(b"Name = alice\n"), KEY, "f")


# --- readers ---------------------------------------------------------------------------------

def make_net(base, encrypt=None):
    """A network directory for alice; files named in encrypt are written encrypted."""
    os.makedirs(base / "hosts")
    os.makedirs(base / "conf.d")
    files = {
        "tinc.conf": b"Name = alice\nConnectTo = bob\n",
        "conf.d/extra.conf": b"PingInterval = 7\n",
        "hosts/alice": b"Port = 6550\nSubnet = 10.0.0.1/32\n" + keys.hosts_line(
            ALICE.public).encode(),
        "hosts/bob": b"Address = 192.0.2.2\n" + keys.hosts_line(BOB.public).encode(),
        "ed25519_key.priv": keys.format_private_pem(ALICE).encode(),
        "tinc-up": b"#!/bin/sh\n",
    }
    for name, data in files.items():
        if encrypt and name in encrypt:
            data = secrets.encrypt(data, KEY)
        (base / name).write_bytes(data)
    os.chmod(base / "ed25519_key.priv", 0o600)
    os.chmod(base / "tinc-up", 0o755)
    return files


def snapshot(base):
    out = {}
    for root, _, names in os.walk(base):
        for n in names:
            p = os.path.join(root, n)
            st = os.stat(p)
            with open(p, "rb") as f:
                out[os.path.relpath(p, base)] = (hashlib.sha256(f.read()).hexdigest(),
                                                 stat.S_IMODE(st.st_mode))
    return out


ALL = ("tinc.conf", "conf.d/extra.conf", "hosts/alice", "hosts/bob", "ed25519_key.priv")


def test_daemon_config_loads_from_encrypted_files(tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt=ALL)
    paths = resolve_paths(str(base), env={}, localstatedir=str(tmp_path),
                          config_key=secrets.KeySource.from_key(KEY))
    cfg = load_network(paths)
    assert (cfg.name, cfg.port, cfg.connect_to, cfg.ping_interval_s) == ("alice", 6550,
                                                                          ("bob",), 7)
    assert cfg.private_key.public == ALICE.public
    assert cfg.load_host("bob").ed25519_public_key == BOB.public     # later reads keep the key
    assert load_host_config(paths, "bob").addresses[0].host == "192.0.2.2"


def test_without_key_plain_works_and_encrypted_fails_naming_the_file(tmp_path):
    base = tmp_path / "net"
    make_net(base)
    paths = resolve_paths(str(base), env={}, localstatedir=str(tmp_path))
    assert load_network(paths).name == "alice"
    (base / "ed25519_key.priv").write_bytes(
        secrets.encrypt(keys.format_private_pem(ALICE).encode(), KEY))
    with pytest.raises(secrets.NoConfigKeyError, match=f"^{base}/ed25519_key.priv: file is "
                                                       f"encrypted"):
        load_network(paths)
    wrong = resolve_paths(str(base), env={}, localstatedir=str(tmp_path),
                          config_key=secrets.KeySource.from_key(OTHER_KEY))
    with pytest.raises(secrets.EncryptedFileError, match=f"^{base}/ed25519_key.priv: "):
        load_network(wrong)


# --- converting a network directory ----------------------------------------------------------

def test_encrypt_secrets_only(tmp_path):
    base = tmp_path / "net"
    make_net(base)
    done = secrets.convert_network(str(base), KEY, encrypting=True)
    assert [(c.path, c.action) for c in done] == [(f"{base}/ed25519_key.priv", "encrypt")]
    assert secrets.is_encrypted((base / "ed25519_key.priv").read_bytes())
    assert not secrets.is_encrypted((base / "tinc.conf").read_bytes())
    assert stat.S_IMODE(os.stat(base / "ed25519_key.priv").st_mode) == 0o600


def test_encrypt_all_is_idempotent_and_decrypt_round_trips(tmp_path):
    base = tmp_path / "net"
    make_net(base)
    before = snapshot(base)
    # As after a secrets-only run, or one interrupted after the first file: the encrypted
    # file is checked with the key and skipped, the rest is converted.
    secrets.replace_file(str(base / "ed25519_key.priv"),
                         secrets.encrypt((base / "ed25519_key.priv").read_bytes(), KEY))
    done = secrets.convert_network(str(base), KEY, encrypting=True, everything=True)
    actions = {os.path.relpath(c.path, base): c.action for c in done}
    assert actions == {"ed25519_key.priv": "skip", "tinc.conf": "encrypt",
                       "conf.d/extra.conf": "encrypt", "hosts/alice": "encrypt",
                       "hosts/bob": "encrypt"}
    assert (base / "tinc-up").read_bytes() == b"#!/bin/sh\n"        # scripts never
    middle = snapshot(base)
    assert all(middle[k][1] == before[k][1] for k in before)         # modes kept
    done = secrets.convert_network(str(base), KEY, encrypting=True, everything=True)
    assert {c.action for c in done} == {"skip"} and snapshot(base) == middle
    secrets.convert_network(str(base), KEY, encrypting=False)
    assert snapshot(base) == before                                  # byte-identical
    assert not list(base.rglob(".*.tmp"))


def test_wrong_or_mixed_keys_change_nothing(tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt=("hosts/bob",))
    before = snapshot(base)
    with pytest.raises(secrets.EncryptedFileError, match=f"^{base}/hosts/bob: "):
        secrets.convert_network(str(base), OTHER_KEY, encrypting=True, everything=True)
    with pytest.raises(secrets.EncryptedFileError):
        secrets.convert_network(str(base), OTHER_KEY, encrypting=False)
    assert snapshot(base) == before


def test_truncated_file_stops_conversion_before_any_write(tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt=ALL)
    data = (base / "hosts" / "bob").read_bytes()
    (base / "hosts" / "bob").write_bytes(data[:len(data) // 2])
    before = snapshot(base)
    with pytest.raises(secrets.EncryptedFileError, match="hosts/bob: "):
        secrets.convert_network(str(base), KEY, encrypting=False)
    assert snapshot(base) == before


# --- CLI -------------------------------------------------------------------------------------

@pytest.fixture
def cli_env(monkeypatch, tmp_path):
    monkeypatch.setenv("TINCAPP_CONFDIR", str(tmp_path / "confdir"))
    monkeypatch.setenv("TINCAPP_LOCALSTATEDIR", str(tmp_path / "var"))
    for var in ("NETNAME", secrets.KEY_ENV, secrets.KEY_FILE_ENV):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(offline, "_try_bind", lambda port: True)


def tinc(capsysbinary, *args, stdin=""):
    capsysbinary.readouterr()
    old = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        code = main(["tinc", "-b", *args])
    finally:
        sys.stdin = old
    cap = capsysbinary.readouterr()
    return code, cap.out, cap.err.decode()


def test_cli_generate_encrypt_edit_decrypt(cli_env, capsysbinary, tmp_path):
    base = tmp_path / "net"
    make_net(base)
    before = snapshot(base)
    keyfile = str(tmp_path / "net.key")
    code, _, err = tinc(capsysbinary, "-c", str(base), "generate-config-key", keyfile)
    assert code == 0 and stat.S_IMODE(os.stat(keyfile).st_mode) == 0o600
    assert len(secrets.KeySource(keyfile).load()) == 32
    code, _, err = tinc(capsysbinary, "-c", str(base), "generate-config-key", keyfile)
    assert code == 1 and "already exists" in err

    code, _, err = tinc(capsysbinary, "-c", str(base), "encrypt-config", "--all")
    assert code == 1 and "needs the configuration key" in err and snapshot(base) == before

    code, _, err = tinc(capsysbinary, "-c", str(base), f"--config-key-file={keyfile}",
                        "encrypt-config", "--all")
    assert code == 0, err
    assert "5 files encrypted, 0 skipped." in err
    assert secrets.is_encrypted((base / "tinc.conf").read_bytes())

    # Reading without the key: a clear error naming the file.
    code, out, err = tinc(capsysbinary, "-c", str(base), "get", "Name")
    assert code == 1 and f"{base}/tinc.conf: file is encrypted" in err
    # With the key (here from the environment): get, and set writes back encrypted.
    os.environ[secrets.KEY_FILE_ENV] = keyfile
    code, out, err = tinc(capsysbinary, "-c", str(base), "get", "Name")
    assert (code, out) == (0, b"alice\n"), err
    code, out, err = tinc(capsysbinary, "-c", str(base), "set", "Port", "7000")
    assert code == 0, err
    data = (base / "hosts" / "alice").read_bytes()
    assert secrets.is_encrypted(data)
    assert b"Port = 7000\n" in secrets.decrypt(data, secrets.KeySource(keyfile))
    code, out, err = tinc(capsysbinary, "-c", str(base), "set", "Port", "6550")
    code, out, err = tinc(capsysbinary, "-c", str(base), "export")
    assert code == 0 and out.startswith(b"Name = alice\nPort = 6550\n")

    del os.environ[secrets.KEY_FILE_ENV]
    code, _, err = tinc(capsysbinary, "-c", str(base), "--config-key-file=-", "decrypt-config",
                        stdin=OTHER_KEY.hex() + "\n")
    assert code == 1 and "wrong configuration key" in err
    code, _, err = tinc(capsysbinary, "-c", str(base), "--config-key-file", "-",
                        "decrypt-config", stdin=open(keyfile).read())
    assert code == 0, err
    assert snapshot(base) == before


def test_cli_conf_prefix_still_means_config(cli_env, capsysbinary, tmp_path):
    base = tmp_path / "net"
    make_net(base)
    for spelling in (["--conf", str(base)], [f"--conf={base}"], ["--c", str(base)],
                     ["-c", "/nowhere", "--conf", str(base)],
                     ["--config", "/nowhere", "--co", str(base)]):
        code, out, err = tinc(capsysbinary, *spelling, "get", "Name")
        assert (code, out) == (0, b"alice\n"), (spelling, err)


def test_cli_shell_takes_the_key_line_first(cli_env, capsysbinary, tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt=ALL)
    code, out, err = tinc(capsysbinary, "-c", str(base), "--config-key-file=-",
                          stdin=f"{KEY.hex()}\nget Name\nget bob.Address\n")
    assert (code, out) == (0, b"alice\n192.0.2.2\n"), err
    code, out, err = tinc(capsysbinary, "-c", str(base), "--config-key-file=-",
                          stdin=f"{OTHER_KEY.hex()}\nget Name\n")
    assert code == 1 and out == b"" and "wrong configuration key" in err


def test_tincd_key_option(capsys):
    from tincapp.tools import tincd
    assert tincd.parse_args(["--config-key-file=/k"]).config_key_file == "/k"
    assert tincd.parse_args(["-D", "--config-key-file", "-"]).config_key_file == "-"
    assert "--config-key-file=FILE" in tincd.USAGE and secrets.KEY_ENV in tincd.USAGE
    # A supervised daemon is restarted after stdin is gone: refused up front.
    assert tincd.main(["tincd", "--supervise", "--config-key-file=-", "-c", "/nonexistent"]) == 1
    assert "cannot be used with --supervise" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_conversion_keeps_owner_and_mode(tmp_path):
    base = tmp_path / "net"
    make_net(base)
    os.chown(base / "ed25519_key.priv", 65534, 65534)
    os.chmod(base / "hosts" / "bob", 0o640)
    secrets.convert_network(str(base), KEY, encrypting=True, everything=True)
    st = os.stat(base / "ed25519_key.priv")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o600)
    assert stat.S_IMODE(os.stat(base / "hosts" / "bob").st_mode) == 0o640


def test_append_keeps_an_encrypted_file_encrypted_and_a_plain_one_plain(tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt={"hosts/bob"})
    src = secrets.KeySource.from_key(KEY)
    secrets.append_file(base / "hosts" / "bob", b"Port = 655\n", src)
    data = (base / "hosts" / "bob").read_bytes()
    assert secrets.is_encrypted(data)
    assert secrets.decrypt(data, src).endswith(b"\nPort = 655\n")
    with pytest.raises(secrets.SecretsError):             # no key: refused, file unchanged
        secrets.append_file(base / "hosts" / "bob", b"X = 1\n", secrets.KeySource(env={}))
    assert (base / "hosts" / "bob").read_bytes() == data
    secrets.append_file(base / "hosts" / "carol", b"Address = 192.0.2.3\n")
    assert (base / "hosts" / "carol").read_bytes() == b"Address = 192.0.2.3\n"


def test_cli_invite_reads_an_encrypted_network(cli_env, capsysbinary, tmp_path):
    base = tmp_path / "net"
    make_net(base, encrypt={"tinc.conf", "hosts/alice"})
    (base / "hosts" / "alice").write_bytes(secrets.encrypt(
        b"Address = 192.0.2.1\nPort = 6550\n" + keys.hosts_line(ALICE.public).encode(), KEY))
    os.environ[secrets.KEY_ENV] = KEY.hex()
    try:
        code, out, err = tinc(capsysbinary, "-c", str(base), "invite", "carol")
    finally:
        del os.environ[secrets.KEY_ENV]
    assert code == 0, err
    assert out.startswith(b"192.0.2.1:6550/"), out
