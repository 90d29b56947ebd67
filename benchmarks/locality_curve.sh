#!/usr/bin/env bash
# Where the schedule curve's students attend, at each training length (`attnxfer analyze
# locality`): the 200-epoch MAE teacher, and the seed-0 scratch, distilled, copy and fine-tuned
# students of the curve at 156, 780 and 1,950 steps. Needs the curve's runs with their
# checkpoints (bash benchmarks/central_result.sh, step 2); a missing run is left out. CURVE,
# TEACHER, LABEL (the teacher's name in the report) and OUT may be set, e.g. for the curve from
# the supervised teacher (step 3):
#   bash benchmarks/locality_curve.sh     # -> docs/results/analysis/locality-curve/
#   CURVE=runs/schedule-curve-supervised LABEL="supervised teacher" \
#     TEACHER=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors \
#     OUT=docs/results/analysis/locality-curve-supervised bash benchmarks/locality_curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CURVE=${CURVE:-runs/schedule-curve}
TEACHER=${TEACHER:-teachers/cifar10-mae-d128-l4-e200/model.safetensors}
models=("${LABEL:-MAE 200ep teacher}=$TEACHER")
for method in scratch distill copy finetune; do
  for length in 0.4 2 5; do
    run=$CURVE/e$length/$method/seed0
    [ -f "$run/summary.json" ] && models+=("$method e$length=$run")
  done
done
attnxfer analyze locality "${models[@]}" \
  --data "imagefolder:$HOME/.cache/attnxfer/cifar10-jpeg" --split test --images 512 \
  --out "${OUT:-docs/results/analysis/locality-curve}"
