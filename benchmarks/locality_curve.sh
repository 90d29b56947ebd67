#!/usr/bin/env bash
# Where the schedule curve's students attend, at each training length (`attnxfer analyze
# locality`): the 200-epoch MAE teacher, and the seed-0 scratch, distilled, copy and fine-tuned
# students of the curve at 156, 780 and 1,950 steps (0.4, 2 and 5 epochs). Needs the curve's runs
# with their weights (bash benchmarks/central_result.sh, step 2); a run unfinished or kept only as
# a record is left out. CURVE, TEACHER, LABEL (the teacher's name in the report), LENGTHS (the
# curve's points, in epochs) and OUT may be set, e.g. for the curve from the supervised teacher
# (steps 3 and 12):
#   bash benchmarks/locality_curve.sh     # -> docs/results/analysis/locality-curve/
#   CURVE=runs/schedule-curve-supervised LABEL="supervised teacher" \
#     TEACHER=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors \
#     LENGTHS="0.4 2 5 10" OUT=docs/results/analysis/locality-curve-supervised \
#     bash benchmarks/locality_curve.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CURVE=${CURVE:-runs/schedule-curve}
TEACHER=${TEACHER:-teachers/cifar10-mae-d128-l4-e200/model.safetensors}
models=("${LABEL:-MAE 200ep teacher}=$TEACHER")
for method in scratch distill copy finetune; do
  for length in ${LENGTHS:-0.4 2 5}; do
    run=$CURVE/e$length/$method/seed0
    if [ -f "$run/summary.json" ] && [ -d "$run/checkpoints" ]; then
      models+=("$method e$length=$run")
    fi
  done
done
attnxfer analyze locality "${models[@]}" \
  --data "imagefolder:$HOME/.cache/attnxfer/cifar10-jpeg" --split test --images 512 \
  --out "${OUT:-docs/results/analysis/locality-curve}"
