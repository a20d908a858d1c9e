#!/usr/bin/env bash
# Generate the Python code of protos/qu/v1/*.proto (importable as qu.v1) into OUT (default protos/gen).
# CI generates into a temporary directory and fails on any difference from protos/gen (make protos-check).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(realpath -m "${1:-$here/gen}")"
python="${PYTHON:-$here/../.venv/bin/python}"
rm -rf "$out"
mkdir -p "$out"
(cd "$here" && "$python" -m grpc_tools.protoc -I . --python_out="$out" --pyi_out="$out" qu/v1/*.proto)
printf '"""Generated from protos/qu/v1: do not edit; run protos/generate.sh."""\n' > "$out/qu/__init__.py"
cp "$out/qu/__init__.py" "$out/qu/v1/__init__.py"
