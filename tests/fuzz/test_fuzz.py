"""Bounded fuzzing of the harnesses in tests/fuzz/harnesses.py.

Each harness first replays its seeds in-process (so a broken harness fails fast, also without
atheris); then all of them run under atheris in one subprocess (the `every` harness, which
picks one per input) for TINCAPP_FUZZ_SECONDS seconds, 20 by default. A finding fails the test
with libFuzzer's report and the path of the saved input. Longer runs, one harness per
process: bench/fuzz.py.
"""
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.fuzz import harnesses

FUZZ_SECONDS = int(os.environ.get("TINCAPP_FUZZ_SECONDS", "20"))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NAMES = sorted(harnesses.HARNESSES)


@pytest.mark.parametrize("name", NAMES)
def test_seeds(name):
    for seed in harnesses.seeds(name):
        harnesses.HARNESSES[name](seed)


def test_post_handshake_seeds_reach_the_session():
    """The pre-handshake seeds complete a handshake, so mutations start beyond it."""
    for datagram in (False, True):
        sent = harnesses._initiator_transcript(datagram)
        _a, b = harnesses.sptps_pair(datagram)
        b.start()
        for data in sent:
            b.receive(data)
        assert b.handshake_done


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris not installed")
def test_atheris_bounded(tmp_path):
    name = "every"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.fuzz.run", name, f"-max_total_time={FUZZ_SECONDS}",
         "-rss_limit_mb=1024", f"-artifact_prefix={tmp_path}/", "-print_final_stats=1"],
        cwd=ROOT, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60)
    crashes = [p for p in os.listdir(tmp_path) if p.startswith(("crash-", "timeout-", "oom-"))]
    assert proc.returncode == 0 and not crashes, (
        f"finding in {name}, input saved in {tmp_path}: {crashes}\n{proc.stderr[-6000:]}")
    assert "Done" in proc.stderr, proc.stderr[-2000:]
