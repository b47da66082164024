#!/usr/bin/env bash
# Re-resolve requirements/dev.txt from pyproject.toml (runtime ranges plus the dev extra),
# with hashes, then reinstall from it. Commit the result. Pins already in the lock are kept
# unless they conflict; `scripts/lock.sh --upgrade` moves everything to the newest allowed.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m pip install --quiet "pip-tools==7.7.0"
"$python" -m piptools compile --quiet "$@" --extra dev --generate-hashes --allow-unsafe \
  --strip-extras --no-emit-index-url --no-emit-find-links \
  --output-file requirements/dev.txt pyproject.toml
scripts/install.sh
