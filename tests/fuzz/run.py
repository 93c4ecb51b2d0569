"""Run one harness under atheris (libFuzzer): `python -m tests.fuzz.run HARNESS [libFuzzer
options] [CORPUS_DIR...]`, e.g. `-max_total_time=60 -runs=100000`. The harness's seeds are
written to a fresh corpus directory when none is given. A finding ends the run with a non-zero
status, the traceback and a crash-* file holding the input (replay it with
`python -m tests.fuzz.run HARNESS crash-...`)."""
import os
import sys
import tempfile

import logging

import atheris

with atheris.instrument_imports(include=["tincapp"]):
    from tests.fuzz import harnesses


def main(argv):
    if len(argv) < 2 or argv[1] not in harnesses.HARNESSES:
        print(f"usage: {argv[0]} HARNESS [libFuzzer options] [CORPUS_DIR...]\n"
              f"harnesses: {', '.join(harnesses.HARNESSES)}", file=sys.stderr)
        return 2
    name = argv[1]
    args = [argv[0]] + argv[2:]
    if not any(not a.startswith("-") for a in argv[2:]):
        corpus = tempfile.mkdtemp(prefix=f"tincapp-fuzz-{name}-")
        for i, seed in enumerate(harnesses.seeds(name)):
            with open(os.path.join(corpus, f"seed{i}"), "wb") as f:
                f.write(seed)
        args.append(corpus)
    logging.disable(logging.CRITICAL)       # config warnings per input would flood the output
    atheris.Setup(args, harnesses.HARNESSES[name])
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
