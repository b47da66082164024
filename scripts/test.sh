#!/usr/bin/env bash
# The test command: generated-code check, lint, types, then the whole test suite.
# Expects the project installed in .venv (see README); PYTHON overrides the interpreter.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
step() { echo "== $*"; }
fail() { echo "FAILED: $*" >&2; exit 1; }

step "generated code is up to date"
PYTHON=$python scripts/check_proto.sh || fail "generated code is stale"
step "ruff"
"$python" -m ruff check . || fail "ruff check"
"$python" -m ruff format --check . || fail "ruff format (run: ruff format .)"
step "mypy"
"$python" -m mypy || fail "mypy"
step "pytest"
"$python" -m pytest --durations=20 "$@"
status=$?
if [ "$status" -eq 5 ]; then
  fail "pytest collected no tests"
fi
exit "$status"
