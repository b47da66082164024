#!/usr/bin/env bash
# Regenerate the committed Python from proto/ (run after editing a .proto file).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
mapfile -t sources < <(cd proto && find tidepool -name '*.proto' | sort)
"$python" -m grpc_tools.protoc -I proto --python_out=. --grpc_python_out=. --pyi_out=. "${sources[@]}"
for dir in $(printf '%s\n' "${sources[@]}" | xargs -n1 dirname | sort -u); do
  touch "$dir/__init__.py"
done
