#!/usr/bin/env bash
# Fail when the committed generated Python differs from what proto/ generates now.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mapfile -t sources < <(cd proto && find tidepool -name '*.proto' | sort)
"$python" -m grpc_tools.protoc -I proto --python_out="$scratch" --grpc_python_out="$scratch" \
  --pyi_out="$scratch" "${sources[@]}"
stale=0
while IFS= read -r generated; do
  committed=${generated#"$scratch"/}
  if ! cmp -s "$generated" "$committed"; then
    echo "stale generated code: $committed (run scripts/gen_proto.sh and commit)" >&2
    stale=1
  fi
done < <(find "$scratch" -name '*_pb2*' -type f | sort)
exit $stale
