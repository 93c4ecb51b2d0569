"""Our sptps_speed beside tinc 1.1's, line by line.

Runs tincapp.tools.sptps_speed and, when a tinc build is there, tinc's sptps_speed with the
same seconds per test, one after the other (never at once: they would share the CPUs). Prints
a table with both figures and ours/tinc per line. Target: SPTPS/UDP transmit ratio >= 0.5.

tinc is looked up as $TINC_BIN_DIR/sptps_speed (a directory with tinc 1.1's programs, built
from tinc's own source; not part of this project).
Usage:
    python bench/compare_sptps_speed.py [SECONDS_PER_TEST]     # default 2
"""
import os
import re
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIGHLIGHT = "SPTPS/UDP transmit"
TARGET_RATIO = 0.5

OURS = ("import sys; from tincapp.tools.sptps_speed import main; "
        "sys.exit(main(['sptps_speed'] + sys.argv[1:]))")

# "<test> for <duration> seconds: <padding><number> <unit>"
LINE = re.compile(r"^(?P<test>.+?) for \S+ seconds: +(?P<value>[-+\w.]+) (?P<unit>\w*/s)$")
UNIT_SCALE = {"op/s": 1.0, "bit/s": 1.0, "kbit/s": 1e3, "Mbit/s": 1e6, "Gbit/s": 1e9}


def find_tinc():
    bin_dir = os.environ.get("TINC_BIN_DIR")
    if not bin_dir:
        return None
    path = os.path.join(bin_dir, "sptps_speed")
    return path if os.access(path, os.X_OK) else None


def run(cmd, env=None):
    """stderr of cmd, which must exit 0."""
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                          env=env, cwd=REPO)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} exited with {proc.returncode}:\n{proc.stderr}")
    return proc.stderr


def parse(text):
    """[(test, value in op/s or bit/s, unit as printed, value as printed)] in output order."""
    rows = []
    for line in text.splitlines():
        m = LINE.match(line.strip())
        if m:
            unit = m.group("unit")
            value = float(m.group("value"))
            base_unit = "op/s" if unit == "op/s" else "bit/s"
            rows.append((m.group("test"), value * UNIT_SCALE[unit], base_unit,
                         f"{m.group('value')} {unit}"))
    return rows


def main(argv):
    duration = argv[1] if len(argv) > 1 else "2"
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")

    tinc = find_tinc()
    if tinc:
        print(f"running {tinc} {duration} ...", flush=True)
        theirs = dict((row[0], row) for row in parse(run([tinc, duration])))
    else:
        theirs = None
    print(f"running tincapp sptps_speed {duration} ...", flush=True)
    ours = parse(run([sys.executable, "-c", OURS, duration], env=env))
    if len(ours) != 8:
        raise SystemExit(f"expected 8 result lines from tincapp, got {len(ours)}")

    print()
    print(f"{'test (' + duration + ' s each)':<26} {'tincapp':>16} {'tinc':>16} {'ours/tinc':>10}")
    for test, value, _base, shown in ours:
        mark = "  <-- target >= %.1f" % TARGET_RATIO if test == HIGHLIGHT else ""
        if theirs is None:
            print(f"{test:<26} {shown:>16} {'-':>16} {'-':>10}{mark}")
            continue
        _t, tinc_value, _b, tinc_shown = theirs.get(test, (test, 0.0, "", "missing"))
        ratio = value / tinc_value if tinc_value else float("nan")
        if test == HIGHLIGHT:
            mark += ": PASS" if ratio >= TARGET_RATIO else ": BELOW TARGET"
        print(f"{test:<26} {shown:>16} {tinc_shown:>16} {ratio:10.2f}{mark}")
    if theirs is None:
        print(f"\ntinc's sptps_speed was not found (set TINC_BIN_DIR; tried "
              f"{os.environ.get('TINC_BIN_DIR') or DEFAULT_TINC_BIN_DIR}/sptps_speed); "
              f"only our figures are shown.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
