#!/usr/bin/env bash
# The development and CI install: exactly the versions in requirements/dev.txt (hash-checked),
# then the project itself, editable, without resolving anything again.
# Refresh the lock with scripts/lock.sh after changing a dependency in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --require-hashes -r requirements/dev.txt
# Without isolation, so mypyc (mypy, from the lock) compiles the relay where a C compiler and
# the Python headers are at hand; TIDEPOOL_RELAY_BUILD=compiled|pure forces one (see setup.py).
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
