#!/usr/bin/env bash
# The model cards of the long recipe's MAE teachers with the students trained from them so far,
# each from its committed record in docs/results/runs where there is one:
# - teachers/cifar10-mae-d128-l4-e200 (200 epochs on CIFAR-10): the schedule curve's students and
#   the long table's (seed 0);
# - teachers/tinyimagenet-mae-d128-l4-e100 (100 epochs on Tiny-ImageNet, the same images seen),
#   once it exists: the long table's shift rows (seed 0), its fine-tuned student first.
# Trains nothing; steps 8 and 16 of benchmarks/central_result.sh and
# benchmarks/central_result_report.sh run it.
#   bash benchmarks/teacher_card.sh      # PLAN=1: only say how many students each card would list
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}
KEPT=docs/results/runs
downstream=()
student() {  # student NAME [RUN]: the committed record where there is one, else this checkout's
  local run  # run, else RUN (one trained on a GPU)
  for run in "$KEPT/$1" "$RUNS/$1" "${@:2}"; do
    [ -f "$run/summary.json" ] && { downstream+=(--downstream "$run"); return; }
  done
  return 0  # not trained yet
}
card() {  # card FOLDER RUN: rewrite FOLDER's card with the students in $downstream
  local folder=$1 run=$2
  if [ -n "${PLAN:-}" ]; then
    echo "the card of $folder: rewritten with the $((${#downstream[@]} / 2)) students finished so far"
  elif [ -d "$run/teacher" ]; then  # the whole card, from its run
    attnxfer pretrain --card "$run" --title "$(basename "$folder")" "${downstream[@]}"
    cp "$run/teacher/"{README.md,loss.png} "$folder/"
  elif [ ${#downstream[@]} -gt 0 ]; then  # the run is in another checkout: all but the table
    attnxfer pretrain --card "$folder" "${downstream[@]}"  # of students is kept as it is
  fi
}

for e in e0.4 e2 e5; do
  for m in scratch finetune copy distill; do student "schedule-curve/$e/$m/seed0"; done
done
student reproduce-cpu-long/scratch/seed0
for m in finetune copy distill feature_distill; do
  student "reproduce-cpu-long/cifar10_mae/$m/seed0"
done
student schedule-curve/e20/scratch/seed0 docs/results/gpu/runs/curve-e20/e20/scratch/seed0
for m in finetune copy distill; do student "schedule-curve/e20/$m/seed0"; done
for m in scratch finetune copy distill; do student "schedule-curve/e40/$m/seed0"; done
card teachers/cifar10-mae-d128-l4-e200 "$RUNS/teachers/cifar10_mae_long"

SHIFT=teachers/tinyimagenet-mae-d128-l4-e100
if [ -f "$SHIFT/model.safetensors" ]; then
  downstream=()
  for m in finetune copy distill; do student "reproduce-cpu-long-shift/tiny_mae/$m/seed0"; done
  card "$SHIFT" "$RUNS/teachers/tinyimagenet_mae_long"
fi
