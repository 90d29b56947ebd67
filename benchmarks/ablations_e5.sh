#!/usr/bin/env bash
# The ablations at the schedule curve's 5-epoch length (1,950 steps per student, the long tier's
# recipe and 200-epoch MAE teacher, seed 0), measured against the curve's own scratch and
# fine-tune students at that length. Step 4 of benchmarks/central_result.sh runs `layers` and
# `lambda`:
#   bash benchmarks/ablations_e5.sh [name ...]      # default: layers; restartable
#   FINISHED_ONLY=1 bash benchmarks/ablations_e5.sh  # train nothing: the cells finished so far
#   SEEDS=0,1 bash benchmarks/ablations_e5.sh lambda  # more seeds (default: 0)
# then: python benchmarks/ablations_report.py --runs runs/ablations-e5 \
#         --main docs/results/schedule_curve.json --length 5 --out docs/results/ablations_e5
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(layers)
RECIPE=configs/cifar10/student_cpu_long.yaml \
  TEACHER=teachers/cifar10-mae-d128-l4-e200/model.safetensors \
  TABLE="$RUNS/schedule-curve" OUT="$RUNS/ablations-e5" SEEDS="${SEEDS:-0}" REUSE=docs/results/runs \
  EXTRA="data.train_subset=null optim.epochs=5 optim.warmup_epochs=0.5" \
  bash benchmarks/ablations.sh "${names[@]}"
