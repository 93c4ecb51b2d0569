"""tincapp.tools.sptps_speed prints tinc's eight result lines, in tinc's order and format.

Runs the real tool for 0.05 s per test (about half a second in all, over AF_UNIX socket pairs):
the brief asks for the whole program end to end, not a sans-I/O core.
"""
import re

import pytest

from tincapp.tools import sptps_speed

# (prefix, C format of the figure, units allowed); the figure must fill tinc's field width.
EXPECTED = [
    ("Generating keys", "%17.2f", ("op/s",)),
    ("Ed25519 sign", "%20.2f", ("op/s",)),
    ("Ed25519 verify", "%18.2f", ("op/s",)),
    ("ECDH", "%28.2f", ("op/s",)),
    ("SPTPS/TCP authenticate", "%10.2f", ("op/s",)),
    ("SPTPS/TCP transmit", "%14.2f", ("Gbit/s", "Mbit/s", "kbit/s")),
    ("SPTPS/UDP authenticate", "%10.2f", ("op/s",)),
    ("SPTPS/UDP transmit", "%14.2f", ("Gbit/s", "Mbit/s", "kbit/s")),
]


def test_eight_lines_in_tinc_format(capsys):
    assert sptps_speed.main(["sptps_speed", "0.05"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == len(EXPECTED), captured.err
    for line, (name, fmt, units) in zip(lines, EXPECTED):
        prefix = f"{name} for 0.05 seconds: "
        assert line.startswith(prefix), line
        m = re.fullmatch(r" *(\d+\.\d\d) (\S+)", line[len(prefix):])
        assert m, line
        value, unit = m.groups()
        assert float(value) > 0, line
        assert unit in units, line
        assert line == prefix + fmt % float(value) + " " + unit, "field width differs from tinc"


@pytest.mark.parametrize("text, value", [
    ("10", 10.0), ("0.05", 0.05), ("2s", 2.0), ("  1e-1", 0.1), (".5", 0.5), ("abc", 0.0),
    ("", 0.0),
])
def test_duration_parsed_like_atof(text, value):
    assert sptps_speed._atof(text) == value

