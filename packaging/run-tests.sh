#!/usr/bin/env bash
# Run the whole test suite against the built tree (call packaging/bootstrap.sh first).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONHASHSEED=0
# The supervisor's one-file test runs the binary the build just froze.
if [ -z "${TINCAPP_BINARY:-}" ] && [ -x dist/tincapp ]; then export TINCAPP_BINARY="$PWD/dist/tincapp"; fi
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
rc=$?
# pytest's 5 means "no tests collected": that is a failure for us too.
exit $rc
