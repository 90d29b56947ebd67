#!/usr/bin/env bash
# Every GPU measurement that issue 6 asks for, into docs/results/gpu/ (one H100/H200).
#   bash benchmarks/gpu_suite.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=docs/results/gpu
mkdir -p "$OUT"
PY=${PY:-python}
S="$PY benchmarks/step_cost.py --device cuda --dtype bf16 --steps 20 --warmup 5"
$S --model vit_base_patch16_224 --batch 16 --json $OUT/step_cost_vitb_224_b16.json | tee $OUT/step_cost_vitb_224_b16.txt
$S --model vit_base_patch16_224 --batch 32 --json $OUT/step_cost_vitb_224_b32.json | tee $OUT/step_cost_vitb_224_b32.txt
$S --model vit_large_patch16_224 --batch 16 --json $OUT/step_cost_vitl_224_b16.json | tee $OUT/step_cost_vitl_224_b16.txt
$S --model vit_large_patch16_224 --batch 32 --json $OUT/step_cost_vitl_224_b32.json | tee $OUT/step_cost_vitl_224_b32.txt
$S --model vit_large_patch16_224 --batch 16 --compile --json $OUT/step_cost_vitl_224_b16_compile.json | tee $OUT/step_cost_vitl_224_b16_compile.txt
$S --model vit_base_patch16_224 --img-size 1024 --batch 2 --json $OUT/step_cost_vitb_1024_b2.json | tee $OUT/step_cost_vitb_1024_b2.txt
$S --model vit_base_patch16_224 --img-size 1024 --max-batch --json $OUT/max_batch_vitb_1024.json | tee $OUT/max_batch_vitb_1024.txt
$PY benchmarks/gpu_correctness.py --device cuda --model vit_base_patch16_224 --sizes 224,1024 --out $OUT/correctness_vitb.json | tee $OUT/correctness_vitb.txt
