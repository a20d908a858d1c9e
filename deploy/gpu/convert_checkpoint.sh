#!/usr/bin/env bash
# Step 2 of the GPU student: the merged HF checkpoint -> a TensorRT-LLM checkpoint, in BF16, for one GPU.
#
#   TRTLLM_DIR=/path/to/TensorRT-LLM deploy/gpu/convert_checkpoint.sh MERGED_DIR CKPT_DIR
#
# TRTLLM_DIR is a TensorRT-LLM source checkout at the tag of the installed tensorrt_llm (the tensorrtllm
# Triton container ships both). Run it inside that container, on the GPU host.
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: TRTLLM_DIR=... $0 MERGED_DIR CKPT_DIR" >&2
  exit 2
fi
merged_dir=$1
ckpt_dir=$2
: "${TRTLLM_DIR:?set TRTLLM_DIR to a TensorRT-LLM checkout matching the installed tensorrt_llm}"

if [[ ! -f "$merged_dir/config.json" ]]; then
  echo "$merged_dir has no config.json: run deploy/gpu/merge_adapter.py first" >&2
  exit 1
fi
# The llama example moved between releases; take the one this checkout has.
convert=""
for candidate in "$TRTLLM_DIR/examples/llama/convert_checkpoint.py" \
                 "$TRTLLM_DIR/examples/models/core/llama/convert_checkpoint.py"; do
  if [[ -f "$candidate" ]]; then
    convert=$candidate
    break
  fi
done
if [[ -z "$convert" ]]; then
  echo "no llama convert_checkpoint.py under $TRTLLM_DIR/examples" >&2
  exit 1
fi

# BF16, no quantization flags: FP8 (--use_fp8 / --fp8_kv_cache) cost recall in the source system's measurement,
# so the student ships unquantized (docs/gpu-student.md).
python3 "$convert" \
  --model_dir "$merged_dir" \
  --output_dir "$ckpt_dir" \
  --dtype bfloat16 \
  --tp_size 1 \
  --pp_size 1
echo "TensorRT-LLM checkpoint in $ckpt_dir"
