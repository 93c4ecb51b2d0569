"""sptps_test / sptps_keypair end to end over loopback: ours against ours, against the frozen
binary, and against real tinc 1.1 (TINC_BIN_DIR; skipped with a message where absent)."""
import os
import socket
import subprocess

import pytest

from tests.integration.sptps_tools import (FROZEN, FROZEN_IMPL, LISTENING, OURS, Proc, exchange,
                                           keypair, tinc_impl)
from tincapp import keys

MODES = [pytest.param(False, id="stream"), pytest.param(True, id="datagram")]


@pytest.mark.integration
@pytest.mark.parametrize("datagram", MODES)
def test_ours_against_ours(tmp_path, datagram):
    lst_out, ini_out = exchange(OURS, OURS, str(tmp_path), OURS, datagram)
    assert lst_out.count(b"from tincapp line") == 3
    assert ini_out.count(b"from tincapp line") == 3


def ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.integration
@pytest.mark.skipif(not ipv6_loopback(), reason="no IPv6 loopback here")
@pytest.mark.parametrize("datagram", MODES)
def test_ipv6_only(tmp_path, datagram):
    lst_out, ini_out = exchange(OURS, OURS, str(tmp_path), OURS, datagram, host="::1",
                                extra_args=("-6",))
    assert lst_out.count(b"from tincapp line") == 3
    assert ini_out.count(b"from tincapp line") == 3


@pytest.mark.integration
def test_rekey_and_special_lines(tmp_path):
    # '$' forces a rekey mid-session and sends the line; data keeps flowing under the new keys.
    a_priv, a_pub = keypair(OURS, str(tmp_path), "a")
    b_priv, b_pub = keypair(OURS, str(tmp_path), "b")
    lst = Proc(OURS.cmd("sptps_test", "-s", a_priv, b_pub, "0"))
    ini = None
    try:
        port = int(lst.wait_for(LISTENING).group(1))
        ini = Proc(OURS.cmd("sptps_test", "-s", b_priv, a_pub, "127.0.0.1", str(port)))
        ini.send(b"before\n")
        lst.wait_for(b"before\n", stream="out")
        ini.send(b"$rekey now\n")
        lst.wait_for(b"$rekey now\n", stream="out")
        lst.send(b"after rekey\n")
        ini.wait_for(b"after rekey\n", stream="out")
    finally:
        lst.stop()
        if ini:
            ini.stop()


@pytest.mark.integration
def test_keypair_files(tmp_path):
    priv, pub = keypair(OURS, str(tmp_path), "k")
    assert os.stat(priv).st_mode & 0o777 == 0o600
    key = keys.read_private_key(priv)
    assert keys.read_public_key(pub) == key.public


@pytest.mark.integration
def test_usage_errors():
    r = subprocess.run(OURS.cmd("sptps_test", "only-one-arg"), capture_output=True, timeout=30)
    assert r.returncode == 1 and b"Wrong number of arguments." in r.stderr
    r = subprocess.run(OURS.cmd("sptps_keypair"), capture_output=True, timeout=30)
    assert r.returncode == 1 and b"Usage:" in r.stderr


@pytest.mark.integration
def test_missing_key_file_is_a_clear_error(tmp_path):
    _, pub = keypair(OURS, str(tmp_path), "k")
    missing = str(tmp_path / "nope.priv")
    # Connect to a listener so the program gets as far as reading the keys.
    lst = Proc(OURS.cmd("sptps_test", *keypair(OURS, str(tmp_path), "l")[:1], pub, "0"))
    try:
        port = int(lst.wait_for(LISTENING).group(1))
        r = subprocess.run(OURS.cmd("sptps_test", missing, pub, "127.0.0.1", str(port)),
                           capture_output=True, timeout=30)
        assert r.returncode == 1
        assert missing.encode() in r.stderr and b"does not exist" in r.stderr
    finally:
        lst.stop()


# --- the frozen binary ---------------------------------------------------------------------

frozen = pytest.mark.skipif(not os.path.exists(FROZEN),
                            reason="dist/tincapp not built (the README's build command makes it)")


@pytest.mark.frozen
@frozen
@pytest.mark.parametrize("datagram", MODES)
def test_frozen_binary_against_venv_build(tmp_path, datagram):
    lst_out, ini_out = exchange(FROZEN_IMPL, OURS, str(tmp_path), FROZEN_IMPL, datagram)
    assert lst_out.count(b"from tincapp line") == 3
    assert ini_out.count(b"from frozen line") == 3


@pytest.mark.frozen
@frozen
def test_frozen_binary_multicall_names(tmp_path):
    r = subprocess.run([FROZEN, "--version"], capture_output=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith(b"tincapp ")
    link = tmp_path / "sptps_keypair"
    link.symlink_to(FROZEN)
    r = subprocess.run([str(link), str(tmp_path / "x.priv"), str(tmp_path / "x.pub")],
                       capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert keys.read_public_key(tmp_path / "x.pub") == \
        keys.read_private_key(tmp_path / "x.priv").public


# --- real tinc 1.1 -------------------------------------------------------------------------

TINC = tinc_impl()
needs_tinc = pytest.mark.skipif(
    TINC is None, reason="no real tinc build: set TINC_BIN_DIR to a directory with tinc 1.1's "
                         "sptps_test and sptps_keypair to run the interop tests")


OUR_BUILDS = [pytest.param(OURS, id="venv"),
              pytest.param(FROZEN_IMPL, id="frozen", marks=frozen)]


@pytest.mark.tinc
@needs_tinc
@pytest.mark.parametrize("datagram", MODES)
@pytest.mark.parametrize("we_listen", [True, False], ids=["tincapp-listens", "tinc-listens"])
@pytest.mark.parametrize("keys_by", ["tincapp", "tinc"])
@pytest.mark.parametrize("ours", OUR_BUILDS)
def test_interop_with_tinc(tmp_path, ours, datagram, we_listen, keys_by):
    keys_impl = ours if keys_by == "tincapp" else TINC
    listener, initiator = (ours, TINC) if we_listen else (TINC, ours)
    lst_out, ini_out = exchange(listener, initiator, str(tmp_path), keys_impl, datagram)
    assert lst_out.count(f"from {initiator} line".encode()) == 3
    assert ini_out.count(f"from {listener} line".encode()) == 3



@pytest.mark.integration
@pytest.mark.parametrize("flag", ["-r", "-w"])
def test_readonly_writeonly_and_quit(tmp_path, flag):
    # -r: the initiator ignores its stdin; -w: it does not print what it receives.
    # In both cases the listener's -q ends the session when its stdin closes.
    a_priv, a_pub = keypair(OURS, str(tmp_path), "a")
    b_priv, b_pub = keypair(OURS, str(tmp_path), "b")
    lst = Proc(OURS.cmd("sptps_test", "-q", a_priv, b_pub, "0"))
    ini = None
    try:
        port = int(lst.wait_for(LISTENING).group(1))
        ini = Proc(OURS.cmd("sptps_test", flag, b_priv, a_pub, "127.0.0.1", str(port)))
        ini.send(b"from the initiator\n")
        lst.send(b"to the initiator\n")
        if flag == "-r":
            ini.wait_for(b"to the initiator\n", stream="out")
        else:
            lst.wait_for(b"from the initiator\n", stream="out")
        lst.send(b"last line\n")
        lst.p.stdin.close()                       # EOF: -q ends the listener
        assert lst.p.wait(timeout=15) == 0
        ini.wait_for(b"Connection terminated by peer.")
        ini._pump(0.2)
        lst._pump(0.2)
        if flag == "-r":
            assert b"from the initiator" not in lst.out
        else:
            assert ini.out == b""
    finally:
        lst.stop()
        if ini:
            ini.stop()
