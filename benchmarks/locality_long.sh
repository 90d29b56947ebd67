#!/usr/bin/env bash
# Where the long recipe's students attend (`attnxfer analyze locality`): the 200-epoch MAE
# teacher; the long table's seed-0 students (3,900 steps: fine-tune, copy, distill, feature
# distillation); the schedule curve's 7,800-step students; and every long-recipe ablation cell
# (runs/ablations-long, 3,900 steps) trained so far. Each must have finished and hold its
# weights: a run kept only as a record, unfinished or not trained, is left out here, and its row
# in the committed report is kept as it was measured (`analyze locality --update`), so a checkout
# that has the weights of some runs only adds or re-measures those. The report's per-head table
# shows which heads a partial transfer (transfer.heads) leaves free.
#   bash benchmarks/locality_long.sh     # -> docs/results/analysis/locality-long/
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
models=("MAE 200ep teacher=teachers/cifar10-mae-d128-l4-e200/model.safetensors")
add() {  # add LABEL RUN: when the run has finished and holds its weights
  if [ -f "$2/summary.json" ] && [ -d "$2/checkpoints" ]; then models+=("$1=$2"); fi
}
add "scratch 3900" "$RUNS/reproduce-cpu-long/scratch/seed0"
for method in finetune copy distill feature_distill; do
  add "$method 3900" "$RUNS/reproduce-cpu-long/cifar10_mae/$method/seed0"
done
for method in scratch finetune copy distill; do
  add "$method 7800" "$RUNS/schedule-curve/e20/$method/seed0"
done
for run in "$RUNS"/ablations-long/*/*/seed0; do  # labelled e.g. "heads/heads:1 3900"
  [ -L "$run" ] && continue  # a cell taken from another run (the table's): listed above
  cell=${run%/seed0}
  sweep=${cell%/*}
  name=${cell##*/}
  add "${sweep##*/}/${name//=/:} 3900" "$run"
done
attnxfer analyze locality "${models[@]}" \
  --data "imagefolder:$HOME/.cache/attnxfer/cifar10-jpeg" --split test --images 512 \
  --out "${OUT:-docs/results/analysis/locality-long}" --update
