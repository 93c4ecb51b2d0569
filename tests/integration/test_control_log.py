"""LOG control request (control-and-cli.md 2): a tincapp tincd streams log records to a
subscribed control connection as `18 15 <len>\\n<text>`, up to the subscriber's level even
when that is above the daemon's own (-d3 here)."""
import os
import re
import socket
import subprocess
import sys
import time

import pytest

from tests.integration.test_node_mesh import loopback_daemons, wait_until
from tincapp import control
from tincapp.control import Ctl

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture
def pair():
    with loopback_daemons("tincapp-log-", {"alpha": ["beta"]}, ("alpha", "beta")) as daemons:
        yield daemons


class LogClient:
    def __init__(self, tincd, level, color=0):
        with open(tincd.pidfile) as f:
            pid = control.parse_pidfile(f.read())
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(tincd.pidfile + ".socket")
        self.f = self.sock.makefile("rb")
        self.sock.sendall(control.client_greeting(pid.cookie).encode())
        control.check_server_greeting(self.f.readline().decode(), self.f.readline().decode())
        self.sock.sendall(control.control_request(Ctl.LOG, level, color).encode())

    def records(self):
        while True:
            header = self.f.readline().decode()
            assert re.fullmatch(r"18 15 \d+\n", header), header
            n = int(header.split()[2])
            assert n <= 1024
            yield self.f.read(n).decode()

    def wait_for(self, *needles, timeout=15):
        deadline = time.monotonic() + timeout
        seen = []
        for text in self.records():
            seen.append(text)
            if all(n in text for n in needles):
                return text
            assert time.monotonic() < deadline, seen
        raise AssertionError(seen)

    def close(self):
        self.f.close()
        self.sock.close()


def test_log_streams_records_up_to_the_subscribers_level(pair):
    alpha, beta = pair["alpha"], pair["beta"]
    beta.start()
    alpha.start()
    meta = LogClient(beta, 4)          # above the daemon's -d3: "Got ..." meta lines
    quiet = LogClient(beta, 0)
    colored = LogClient(beta, -1, 1)
    try:
        # RETRY logs at level 0: every subscriber sees it; no reply line precedes records.
        assert beta.request(Ctl.RETRY) == ["18 10 0"]
        text = quiet.wait_for("Got ALRM signal or RETRY request")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO    Got ALRM signal or "
                            r"RETRY request", text), text
        ctext = colored.wait_for("RETRY request")
        assert ctext.startswith("\x1b[90m") and "\x1b[32;1mINFO   \x1b[0m " in ctext
        # A level-4 record (received request contents) reaches only the level-4 subscriber;
        # PINGs flow every PingInterval, DISCONNECT forces a new handshake sooner.
        alpha.request(Ctl.DISCONNECT, "beta")
        alpha.request(Ctl.RETRY)
        meta.wait_for("Got ", " from alpha (", timeout=20)
        assert beta.request(Ctl.STOP) == ["18 0 0"]
        # The quiet subscriber never got a level >= 1 line before the daemon went away.
        rest = []
        try:
            for t in quiet.records():
                rest.append(t)
        except (AssertionError, OSError, ValueError):
            pass
        assert not any(" from alpha (" in t and "Got " in t for t in rest), rest
    finally:
        for c in (meta, quiet, colored):
            c.close()


def test_cli_log_command_prints_records(pair):
    beta = pair["beta"]
    beta.start()
    env = dict(os.environ, PYTHONPATH=ROOT)
    p = subprocess.Popen([sys.executable, "-m", "tincapp", "tinc", "-c", beta.base,
                          f"--pidfile={beta.pidfile}", "log", "1"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        def logged():
            beta.request(Ctl.RETRY)
            return True if b"RETRY request" in (os.read(p.stdout.fileno(), 65536)
                                                if _readable(p.stdout) else b"") else None
        wait_until(logged, 15, "tinc log printed nothing")
    finally:
        beta.request(Ctl.STOP)
        out, err = p.communicate(timeout=15)
    assert p.returncode == 0, err


def _readable(f):
    import select
    return bool(select.select([f], [], [], 0.2)[0])
