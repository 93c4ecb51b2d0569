"""The control protocol core: PID file line, cookie handshake, request framing."""
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tincapp import control
from tincapp.errors import WireError

COOKIE = "9F3C" + "0" * 58 + "A1"


def conn():
    return control.ControlServerConnection(COOKIE, "alice", 12345)


def test_pidfile_round_trip_and_cookie_format():
    n = itertools.count()
    cookie = control.make_cookie(lambda k: bytes(next(n) % 256 for _ in range(k)))
    assert len(cookie) == 64 and cookie == cookie.upper()
    pf = control.PidFile(12345, cookie, "127.0.0.1", "655")
    assert pf.format() == f"12345 {cookie} 127.0.0.1 port 655\n"
    assert control.parse_pidfile(pf.format()) == pf


@pytest.mark.parametrize("text", ["", "abc", "12 short 127.0.0.1 port 655",
                                  f"x {COOKIE} 127.0.0.1 port 655",
                                  f"12 {COOKIE} 127.0.0.1 655"])
def test_bad_pidfile(text):
    with pytest.raises(WireError, match="pid file"):
        control.parse_pidfile(text)


def test_handshake_then_requests():
    c = conn()
    assert c.receive_line(control.client_greeting(COOKIE).strip()) == []
    first, second = c.lines_to_send()
    assert (first, second) == ("0 alice 17.7\n", "4 0 12345\n")
    assert control.check_server_greeting(first, second) == ("alice", 12345)
    req, = c.receive_line("18 3 extra")
    assert req == control.ControlRequest(control.Ctl.DUMP_NODES, ("extra",))
    c.reply(control.Ctl.DUMP_NODES, "alice", "...")
    c.end_dump(control.Ctl.DUMP_NODES)
    assert c.lines_to_send() == ["18 3 alice ...\n", "18 3\n"]


@pytest.mark.parametrize("greeting", ["0 ^" + "0" * 64 + " 0", "0 " + COOKIE + " 0", "1 ^" +
                                      COOKIE + " 0", "", "0"])
def test_wrong_cookie_closes_silently(greeting):
    c = conn()
    assert c.receive_line(greeting) == []
    assert c.closed and c.lines_to_send() == []


def test_non_control_request_closes_and_bad_type_is_invalid():
    c = conn()
    c.receive_line(f"0 ^{COOKIE} 0")
    c.lines_to_send()
    assert c.receive_line("18 x") == [] and c.lines_to_send() == ["18 -1\n"]
    assert not c.closed
    assert c.receive_line("8 ping") == [] and c.closed


def test_client_side_rejects_bad_greetings():
    with pytest.raises(WireError):
        control.check_server_greeting("1 alice 17.7", "4 0 1")
    with pytest.raises(WireError):
        control.check_server_greeting("0 alice 17.7", "4 1 1")


@given(st.lists(st.text(max_size=200), max_size=20))
def test_random_lines_never_raise(lines):
    c = conn()
    for line in lines:
        c.receive_line(line)


# --- LOG streaming ---------------------------------------------------------------------------

def test_log_request_arguments_are_clamped_like_sscanf():
    from tincapp.control import parse_log_request
    assert parse_log_request(("5", "1")) == (5, True)
    assert parse_log_request(("-7", "0")) == (-1, False)
    assert parse_log_request(("99",)) == (10, False)
    assert parse_log_request(("x", "y")) == (0, False)


def test_log_text_and_frame():
    from tincapp.control import format_log_text, log_frame
    text = format_log_text("2026-01-02 03:04:05", "INFO", "hello", False)
    assert text == b"2026-01-02 03:04:05 INFO    hello"
    assert log_frame(text) == b"18 15 33\n" + text
    colored = format_log_text("2026-01-02 03:04:05", "ERROR", "bad", True)
    assert colored == b"\x1b[90m2026-01-02 03:04:05 \x1b[31;1mERROR  \x1b[0m bad"
    # COMPAT: logger.c's 1024-byte buffer; the CLI refuses longer frames.
    assert len(format_log_text("t", "DEBUG", "x" * 5000, False)) == 1023
