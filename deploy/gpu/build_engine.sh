#!/usr/bin/env bash
# Step 3 of the GPU student: build the TensorRT-LLM engine with trtllm-build, sized for search queries.
#
#   deploy/gpu/build_engine.sh CKPT_DIR ENGINE_DIR
#
# Sizes (override by environment; keep triton_models/qu_student_trtllm_preprocess/config.pbtxt in step):
#   MAX_BATCH_SIZE=128  sequences in flight at once (in-flight batching fills the slots every step)
#   MAX_INPUT_LEN=512   system prompt (~300 tokens, estimated from its 1.3k characters) + the query
#   MAX_SEQ_LEN=768     prompt + answer: leaves 256 tokens for the compact JSON answer (~200 for a full one)
#   MAX_NUM_TOKENS=8192 tokens per engine step: several fresh prompts at once (KV reuse skips the shared prefix)
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 CKPT_DIR ENGINE_DIR" >&2
  exit 2
fi
ckpt_dir=$1
engine_dir=$2
max_batch_size=${MAX_BATCH_SIZE:-128}
max_input_len=${MAX_INPUT_LEN:-512}
max_seq_len=${MAX_SEQ_LEN:-768}
max_num_tokens=${MAX_NUM_TOKENS:-8192}

if [[ ! -f "$ckpt_dir/config.json" ]]; then
  echo "$ckpt_dir has no config.json: run deploy/gpu/convert_checkpoint.sh first" >&2
  exit 1
fi
if (( max_seq_len <= max_input_len )); then
  echo "MAX_SEQ_LEN ($max_seq_len) must exceed MAX_INPUT_LEN ($max_input_len): the difference is the answer budget" >&2
  exit 1
fi

# Refuse a quantized checkpoint: FP8 was measured to cost recall (docs/gpu-student.md), so an FP8 engine never
# ships by accident.
python3 - "$ckpt_dir/config.json" <<'PY'
import json
import sys

config = json.load(open(sys.argv[1]))
quant = config.get("quantization") or {}
algos = {quant.get("quant_algo"), quant.get("kv_cache_quant_algo")} - {None}
if algos or config.get("dtype") not in ("bfloat16", "float16"):
    sys.exit(f"{sys.argv[1]}: dtype {config.get('dtype')!r}, quantization {sorted(map(str, algos))}: "
             "the student ships in BF16/FP16 without quantization")
PY

# Paged KV cache: newer trtllm-build spells it --kv_cache_type paged, older ones --paged_kv_cache enable.
if trtllm-build --help | grep -q -- '--kv_cache_type'; then
  kv_cache=(--kv_cache_type paged)
else
  kv_cache=(--paged_kv_cache enable)
fi

# --use_paged_context_fmha: needed for KV-cache reuse of the shared system prompt (enable_kv_cache_reuse in the
# engine's config.pbtxt). --remove_input_padding: needed for in-flight batching.
trtllm-build \
  --checkpoint_dir "$ckpt_dir" \
  --output_dir "$engine_dir" \
  --gemm_plugin bfloat16 \
  --gpt_attention_plugin bfloat16 \
  "${kv_cache[@]}" \
  --use_paged_context_fmha enable \
  --remove_input_padding enable \
  --max_beam_width 1 \
  --max_batch_size "$max_batch_size" \
  --max_input_len "$max_input_len" \
  --max_seq_len "$max_seq_len" \
  --max_num_tokens "$max_num_tokens"
echo "engine in $engine_dir (max_batch_size=$max_batch_size max_input_len=$max_input_len max_seq_len=$max_seq_len)"
