#!/usr/bin/env bash
# The GPU measurements (one H100/H200), most important first, into docs/results/gpu/:
#   bash benchmarks/gpu_suite.sh             # about 7 minutes
#   FULL=1 bash benchmarks/gpu_suite.sh      # every configuration, 3 rounds: about an hour
# step_cost.py runs each configuration in its own process (its peak memory alone), about 20 s a
# process for ViT-L at 224 px on an H200 (2026-12-04), so the default times the configurations
# that answer the questions (fine-tuning, copy and distillation, auto against eager) in 2 rounds;
# each measurement has its own time limit, and one cut short leaves the others.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT_DIR:-docs/results/gpu}
mkdir -p "$OUT"
PY=${PY:-python}
if [ -n "${FULL:-}" ]; then
  ONLY=() ROUNDS=3
else
  ONLY=(--only copy,copy:eager,distill,distill:eager) ROUNDS=2
fi
S=($PY benchmarks/step_cost.py --device cuda --dtype bf16 --steps 20 --warmup 5 --rounds $ROUNDS)
measure() {  # measure LIMIT_S NAME ARGS...
  local limit=$1 name=$2
  shift 2
  timeout "$limit" "$@" --json "$OUT/$name.json" | tee "$OUT/$name.txt"
}
timeout 120 $PY benchmarks/gpu_correctness.py --device cuda --model vit_base_patch16_224 \
  --sizes 224,1024 --out "$OUT/correctness_vitb.json" | tee "$OUT/correctness_vitb.txt"
measure 150 step_cost_vitb_224_b32 "${S[@]}" "${ONLY[@]}" --model vit_base_patch16_224 --batch 32
measure 200 step_cost_vitl_224_b16 "${S[@]}" "${ONLY[@]}" --model vit_large_patch16_224 --batch 16
measure 150 max_batch_vitb_1024 "${S[@]}" --model vit_base_patch16_224 --img-size 1024 --max-batch
if [ -n "${FULL:-}" ]; then
  measure 900 step_cost_vitb_224_b16 "${S[@]}" --model vit_base_patch16_224 --batch 16
  measure 900 step_cost_vitl_224_b32 "${S[@]}" --model vit_large_patch16_224 --batch 32
  measure 900 step_cost_vitl_224_b16_compile "${S[@]}" --model vit_large_patch16_224 --batch 16 \
    --compile
  measure 900 step_cost_vitb_1024_b2 "${S[@]}" --model vit_base_patch16_224 --img-size 1024 \
    --batch 2
fi
