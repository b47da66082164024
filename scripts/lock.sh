#!/usr/bin/env bash
# Re-resolve requirements/dev.txt from pyproject.toml (runtime ranges plus the dev extra),
# with hashes, then reinstall from it. Commit the result.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-.venv/bin/python}
"$python" -m pip install --quiet "pip-tools==7.7.0"
"$python" -m piptools compile --quiet --upgrade --extra dev --generate-hashes --allow-unsafe \
  --strip-extras --no-emit-index-url --no-emit-find-links \
  --output-file requirements/dev.txt pyproject.toml
scripts/install.sh
