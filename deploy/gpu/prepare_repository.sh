#!/usr/bin/env bash
# The GPU Triton pod's init step: the TensorRT-LLM engine for STUDENT_VERSION on this pod's GPU model, built once
# and kept on the engines volume (engines are per GPU model and take minutes to build), then the deployable
# model repository filled from the templates (steps 2-4 of docs/gpu-student.md).
#
#   STUDENT_VERSION=... MERGED_DIR=... ENGINES_DIR=... REPOSITORY_DIR=... deploy/gpu/prepare_repository.sh
#
# MERGED_DIR: the merged checkpoint (deploy/gpu/merge_adapter.py's --out), also the tokenizer.
# An engine is built under a temporary name and renamed into place: a pod that starts meanwhile builds its own
# or finds a whole one, never half of one.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
: "${STUDENT_VERSION:?set STUDENT_VERSION, the version every annotation will name}"
: "${MERGED_DIR:?set MERGED_DIR to the merged student checkpoint}"
: "${ENGINES_DIR:?set ENGINES_DIR to the engines volume}"
: "${REPOSITORY_DIR:?set REPOSITORY_DIR to the model repository Triton serves}"

gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1 | tr -c 'A-Za-z0-9.\n' '-')
if [[ -z "$gpu" ]]; then
  echo "nvidia-smi names no GPU: this step must run on the GPU the engine will serve on" >&2
  exit 1
fi
engine_dir="$ENGINES_DIR/$STUDENT_VERSION/$gpu"
if [[ -f "$engine_dir/rank0.engine" ]]; then
  echo "engine for $STUDENT_VERSION on $gpu found at $engine_dir"
else
  echo "building the engine for $STUDENT_VERSION on $gpu into $engine_dir"
  mkdir -p "$ENGINES_DIR/$STUDENT_VERSION"
  work=$(mktemp -d "$ENGINES_DIR/$STUDENT_VERSION/.build.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  "$here/convert_checkpoint.sh" "$MERGED_DIR" "$work/ckpt"
  "$here/build_engine.sh" "$work/ckpt" "$work/engine"
  mv -T "$work/engine" "$engine_dir"
fi
python3 "$here/fill_templates.py" --out "$REPOSITORY_DIR" --engine-dir "$engine_dir" \
  --tokenizer-dir "$MERGED_DIR" --version "$STUDENT_VERSION"
