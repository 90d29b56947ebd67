#!/usr/bin/env bash
# The ablations at the schedule curve's 40-epoch length (15,600 steps per student, the long
# tier's recipe and 200-epoch MAE teacher, seed 0), measured against the curve's own scratch and
# fine-tune students at that length. Step 14 of benchmarks/central_result.sh runs `copy_decay`
# (seeds 0 and 1): is copy's place below scratch at 40 epochs (-11% of the gap over seeds 0 and
# 1) its recipe's layer-wise lr decay, which cost it 3.38 points at 10 epochs? The decayed row
# is the curve's own copy student.
#   bash benchmarks/ablations_e40.sh [name ...]      # default: copy_decay; restartable
#   FINISHED_ONLY=1 bash benchmarks/ablations_e40.sh  # train nothing: the cells finished so far
#   SEEDS=0,1 bash benchmarks/ablations_e40.sh copy_decay  # more seeds (default: 0)
#   PLAN=1 bash benchmarks/ablations_e40.sh           # what each cell would do
#   EXTRA=run.device=cuda bash benchmarks/ablations_e40.sh  # more overrides for every cell
# Cells are taken from the records of runs finished elsewhere (docs/results/runs, and
# docs/results/gpu/runs: benchmarks/gpu_long_tier.sh trains this sweep too).
# then: python benchmarks/ablations_report.py --runs runs/ablations-e40 \
#         --main docs/results/schedule_curve.json --length 40 --out docs/results/ablations_e40
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(copy_decay)
RECIPE=configs/cifar10/student_cpu_long.yaml \
  TEACHER=teachers/cifar10-mae-d128-l4-e200/model.safetensors \
  TABLE="$RUNS/schedule-curve" OUT="$RUNS/ablations-e40" SEEDS="${SEEDS:-0}" \
  REUSE="docs/results/runs docs/results/gpu/runs" \
  EXTRA="data.train_subset=null optim.epochs=40 optim.warmup_epochs=4.0 ${EXTRA:-}" \
  bash benchmarks/ablations.sh "${names[@]}"
