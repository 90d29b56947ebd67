#!/usr/bin/env bash
# The ablations on the long recipe (3,900 steps per student, configs/cifar10/student_cpu_long.yaml,
# the 200-epoch MAE teacher, seed 0), measured against the schedule curve's 10-epoch scratch and
# fine-tune students (the long table's seed 0). Each baseline row (all layers, all heads, the
# whole map) is the long table's seed-0 distilled (or copy) student. Step 9 of
# benchmarks/central_result.sh runs the default ones, about 24 minutes a cell on 2 Zen 4 cores:
#   bash benchmarks/ablations_long.sh [name ...]
#       # default: layers heads what_distill copy_layers copy_decay copy_min_lr lambda
#       # (copy_layers: copy with the top layers free; copy_decay: copy without its recipe's
#       # layer-wise lr decay, as distillation's recipe; copy_min_lr: copy with the released copy
#       # recipe's lr floor, a quarter of the peak); features costs nothing (both rows are the
#       # long table's)
#   FINISHED_ONLY=1 bash benchmarks/ablations_long.sh  # train nothing: the cells finished so far
#   PLAN=1 bash benchmarks/ablations_long.sh           # what each cell would do
#   SEEDS=0,1,2 bash benchmarks/ablations_long.sh what_distill  # more seeds (default: 0); the
#       # distilled baseline's seeds 1 and 2 are the long table's
# then: python benchmarks/ablations_report.py --runs runs/ablations-long \
#         --main docs/results/schedule_curve.json --length 10 --out docs/results/ablations_long
#   (the curve's 10-epoch point holds the long table's 3 seeds: each row is measured against the
#   scratch and fine-tune students of its own seeds; benchmarks/central_result_report.sh
#   tabulates each sweep over every seed its cells have)
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(layers heads what_distill copy_layers copy_decay copy_min_lr lambda)
RECIPE=configs/cifar10/student_cpu_long.yaml \
  TEACHER=teachers/cifar10-mae-d128-l4-e200/model.safetensors \
  TABLE="$RUNS/reproduce-cpu-long" OUT="$RUNS/ablations-long" SEEDS="${SEEDS:-0}" REUSE=docs/results/runs \
  bash benchmarks/ablations.sh "${names[@]}"
