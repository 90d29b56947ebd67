#!/usr/bin/env bash
# The model card of the 200-epoch CIFAR-10 MAE teacher (teachers/cifar10-mae-d128-l4-e200/)
# with the students trained from it so far: the schedule curve's and the long table's (seed 0),
# each from its committed record in docs/results/runs where there is one. Trains nothing; step 8
# of benchmarks/central_result.sh and benchmarks/central_result_report.sh run it.
#   bash benchmarks/teacher_card.sh      # PLAN=1: only say how many students it would list
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}
KEPT=docs/results/runs
TEACHER=teachers/cifar10-mae-d128-l4-e200
downstream=()
student() {  # student NAME [RUN]: the committed record where there is one, else this checkout's
  local run  # run, else RUN (one trained on a GPU)
  for run in "$KEPT/$1" "$RUNS/$1" "${@:2}"; do
    [ -f "$run/summary.json" ] && { downstream+=(--downstream "$run"); return; }
  done
  return 0  # not trained yet
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
if [ -n "${PLAN:-}" ]; then
  echo "the card: rewritten with the $((${#downstream[@]} / 2)) students finished so far"
elif [ -d "$RUNS/teachers/cifar10_mae_long/teacher" ]; then  # the whole card, from its run
  attnxfer pretrain --card "$RUNS/teachers/cifar10_mae_long" --title cifar10-mae-d128-l4-e200 \
    "${downstream[@]}"
  cp "$RUNS/teachers/cifar10_mae_long/teacher/"{README.md,loss.png} "$TEACHER/"
else  # the run is in another checkout: its card keeps all but the table of students
  attnxfer pretrain --card "$TEACHER" "${downstream[@]}"
fi
