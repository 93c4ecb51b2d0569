"""`tincapp tincd` on a network directory encrypted at rest (tinc encrypt-config --all): it runs
with the configuration key from a file and from the environment, forms a connection with a
plain node on loopback, reloads, answers `tinc dump nodes`; with a wrong key or no key it
refuses to start and changes nothing; decrypt-config gives back the exact original files."""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from tests.integration.test_node_mesh import Tincd, free_tcp_port, make_network, wait_until
from tincapp.config import secrets

NAMES = ("alpha", "beta")
KEY = bytes(range(32))
WRONG_KEY = bytes(range(1, 33))


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in (secrets.KEY_ENV, secrets.KEY_FILE_ENV, "NETNAME")}
    env.update(extra)
    return env


class KeyedTincd(Tincd):
    """A daemon started with extra arguments and environment variables (through env(1))."""

    def __init__(self, root, name, args=(), env=()):
        super().__init__(root, name)
        self.args, self.env = list(args), dict(env)

    def command(self, argv):
        unset = ["-u", secrets.KEY_ENV, "-u", secrets.KEY_FILE_ENV]
        return (["env", *unset, *(f"{k}={v}" for k, v in self.env.items())]
                + argv + self.args)


def tinc(base, *args, env=None, stdin=None):
    return subprocess.run([sys.executable, "-m", "tincapp", "tinc", "-b", "-c", base,
                           f"--pidfile={base}/pid", *args], capture_output=True, text=True,
                          env=env if env is not None else clean_env(), input=stdin,
                          timeout=30)


RUNTIME = ("pid", "pid.socket", "stderr.log")


def snapshot(base):
    """Content hash and mode of every configuration file (not the daemon's run-time files)."""
    out = {}
    for root, dirs, names in os.walk(base):
        dirs[:] = [d for d in dirs if d != "cache"]
        for n in names:
            p = os.path.join(root, n)
            if root == base and n in RUNTIME:
                continue
            with open(p, "rb") as f:
                out[os.path.relpath(p, base)] = (hashlib.sha256(f.read()).hexdigest(),
                                                 os.stat(p).st_mode)
    return out


@pytest.fixture
def network():
    root = tempfile.mkdtemp(prefix="tincapp-enc-")
    ports = {n: free_tcp_port() for n in NAMES}
    make_network(root, ports, {"alpha": ["beta"]}, names=NAMES)
    keydir = os.path.join(root, "keys")
    os.mkdir(keydir, 0o700)
    daemons = []
    try:
        yield root, keydir, daemons
    finally:
        for d in daemons:
            d.kill()
        shutil.rmtree(root, ignore_errors=True)


def write_key(path, key):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.format_key(key))


def start_refused(base, args=(), env=None):
    """Run tincd expected to refuse: (exit code, stderr)."""
    p = subprocess.run([sys.executable, "-m", "tincapp", "tincd", "-D", "-c", base,
                        f"--pidfile={base}/pid", *args], capture_output=True, text=True,
                       env=env if env is not None else clean_env(), stdin=subprocess.DEVNULL,
                       timeout=30)
    return p.returncode, p.stderr


def test_encrypted_network_runs_with_key_from_file_and_env(network):
    root, keydir, daemons = network
    alpha = os.path.join(root, "alpha")
    keyfile = os.path.join(keydir, "alpha.key")
    write_key(keyfile, KEY)
    before = snapshot(alpha)

    r = tinc(alpha, f"--config-key-file={keyfile}", "encrypt-config", "--all")
    assert r.returncode == 0, r.stderr
    for name in ("tinc.conf", "ed25519_key.priv", "hosts/alpha", "hosts/beta"):
        with open(os.path.join(alpha, name), "rb") as f:
            assert f.read().startswith(secrets.MAGIC), name
    encrypted = snapshot(alpha)

    # No key, and a wrong key: the daemon does not start, says why, and touches nothing.
    code, err = start_refused(alpha)
    assert code != 0 and f"{alpha}/tinc.conf: file is encrypted" in err
    assert "--config-key-file" in err
    wrong = os.path.join(keydir, "wrong.key")
    write_key(wrong, WRONG_KEY)
    code, err = start_refused(alpha, [f"--config-key-file={wrong}"])
    assert code != 0 and "wrong configuration key" in err and f"{alpha}/tinc.conf" in err
    code, err = start_refused(alpha, env=clean_env(**{secrets.KEY_ENV: WRONG_KEY.hex()}))
    assert code != 0 and "wrong configuration key" in err
    code, err = start_refused(alpha, [f"--config-key-file={keydir}/missing"])
    assert code != 0 and f"{keydir}/missing: cannot read configuration key file" in err
    assert snapshot(alpha) == encrypted
    assert not os.path.exists(os.path.join(alpha, "pid"))

    beta = Tincd(root, "beta")
    daemons.append(beta)
    beta.start()

    def alpha_sees_beta():
        r = tinc(alpha, "dump", "reachable", "nodes")
        return True if r.returncode == 0 and "beta" in r.stdout else (r.stdout, r.stderr)

    for how in ("file", "env"):
        if how == "file":
            d = KeyedTincd(root, "alpha", [f"--config-key-file={keyfile}"])
        else:
            d = KeyedTincd(root, "alpha", env={secrets.KEY_ENV: KEY.hex()})
        daemons.append(d)
        d.start()
        wait_until(alpha_sees_beta, 15, f"alpha ({how} key) does not reach beta")
        # A reload rereads the encrypted files with the key the daemon started with.
        r = tinc(alpha, "reload")
        assert r.returncode == 0, r.stderr
        wait_until(alpha_sees_beta, 10, f"alpha ({how} key) lost beta after reload")
        assert d.proc.poll() is None
        d.kill()
        assert "file is encrypted" not in d.read_log()
    assert snapshot(alpha) == encrypted

    # decrypt-config gives back every file byte for byte (and mode for mode).
    r = tinc(alpha, "--config-key-file=-", "decrypt-config", stdin=KEY.hex() + "\n")
    assert r.returncode == 0, r.stderr
    assert snapshot(alpha) == before


def test_encrypt_config_refuses_while_the_daemon_runs(network):
    root, keydir, daemons = network
    beta = os.path.join(root, "beta")
    keyfile = os.path.join(keydir, "beta.key")
    write_key(keyfile, KEY)
    d = Tincd(root, "beta")
    daemons.append(d)
    d.start()
    before = snapshot(beta)
    r = tinc(beta, f"--config-key-file={keyfile}", "encrypt-config")
    assert r.returncode == 1 and "A tincd is running" in r.stderr
    assert snapshot(beta) == before
