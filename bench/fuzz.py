"""Longer fuzzing runs than the test suite's: every harness of tests/fuzz/harnesses.py (or the
ones named) under atheris for SECONDS each, with a corpus kept between runs.

    .venv/bin/python bench/fuzz.py [--seconds 300] [--corpus DIR] [--jobs N] [HARNESS...]

Findings (crash-* files) land in DIR/findings/; the exit status is 1 if any harness found one.
Replay one with `python -m tests.fuzz.run HARNESS DIR/findings/crash-...`.
"""
import argparse
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.fuzz import harnesses  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("names", nargs="*", metavar="HARNESS", help=", ".join(harnesses.HARNESSES))
    ap.add_argument("--seconds", type=int, default=300, help="per harness (default 300)")
    ap.add_argument("--corpus", default=os.path.join(ROOT, "build", "fuzz-corpus"))
    ap.add_argument("--jobs", type=int, default=1, help="libFuzzer -jobs/-workers")
    args = ap.parse_args()
    names = args.names or [n for n in harnesses.HARNESSES if n != "every"]
    findings = os.path.join(args.corpus, "findings")
    os.makedirs(findings, exist_ok=True)
    failed = []
    for name in names:
        corpus = os.path.join(args.corpus, name)
        if not os.path.isdir(corpus):
            os.makedirs(corpus)
            for i, seed in enumerate(harnesses.seeds(name)):
                with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                    f.write(seed)
        cmd = [sys.executable, "-m", "tests.fuzz.run", name, f"-max_total_time={args.seconds}",
               "-rss_limit_mb=2048", f"-artifact_prefix={findings}/{name}-",
               "-print_final_stats=1", corpus]
        if args.jobs > 1:
            cmd += [f"-jobs={args.jobs}", f"-workers={args.jobs}"]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        stats = [l for l in proc.stderr.splitlines() if l.startswith(("Done", "stat::number"))]
        status = "ok" if proc.returncode == 0 else f"FINDING (status {proc.returncode})"
        print(f"{name:24} {time.monotonic() - t0:6.0f} s  {status}  {' '.join(stats[:2])}")
        if proc.returncode != 0:
            failed.append(name)
            print(proc.stderr[-4000:])
    if failed:
        print(f"findings in: {', '.join(failed)}; inputs in {findings}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
