#!/usr/bin/env bash
# The development and CI install: exactly the versions in requirements/dev.txt (hash-checked),
# then the project itself, editable, without resolving anything again.
# Refresh the lock with scripts/lock.sh after changing a dependency in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --require-hashes -r requirements/dev.txt
"$venv/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
