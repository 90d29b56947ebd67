#!/usr/bin/env bash
# The central result at small scale, end to end, in the order that gives evidence soonest; every
# step is restartable and skipped once done, so run it again (each session) until it prints
# "all done":
#   setsid nohup bash benchmarks/central_result.sh >> runs/central_result.log 2>&1 &
#   JOBS=2 setsid nohup bash benchmarks/central_result.sh ...   # two students at a time
#   STEPS=13,16 setsid nohup bash benchmarks/central_result.sh ...   # only steps 13 and 16
#   kill -TERM -- -PID    # stop it (PID: the script's, the leader of its own process group
#                         # under setsid): each student in training saves the step it reached,
#                         # and the next start resumes from there
# 1. the long CIFAR-10 MAE teacher (configs/cifar10/mae_teacher_long.yaml, 200 epochs), then
#    its copy in teachers/cifar10-mae-d128-l4-e200/
# 2. the schedule curve's shorter lengths, 0.4, 2 and 5 epochs, seed 0 (the first evidence)
# 3. the same curve with the supervised CIFAR-10 ViT of ../shared/data as teacher (a diagnostic:
#    a teacher whose maps suit the task), 0.4, 2 and 5 epochs, seed 0
# 4. which layers are distilled, at the curve's 5-epoch length (1,950 steps), seed 0: the test of
#    the locality reading (the MAE teacher's top-layer maps are the ones fine-tuning leaves); then
#    the distillation weight lambda at the same length (0.3, 1, 3, 10): the loss is summed over
#    layers, so distilling every layer pulls harder than distilling one
# 5. the long-tier table, seed 0 (every row of the main table, 3,900 steps per student), then
#    the schedule curve at 0.4, 2, 5 and 10 epochs, seed 0 (10 epochs taken from the table)
# 6. the long-tier table's seeds 1 and 2
# 7. the schedule curve to 20 epochs (7,800 steps), seed 0
# 8. the teacher's model card, with the students of the curve and of the table (seed 0)
# 9. the ablations that matter most on the long recipe, seed 0: layers, heads, Q/K/V distilled,
#    copy with the top layers free, copy without its layer-wise lr decay, copy with the released
#    copy recipe's lr floor (a quarter of the peak), lambda (benchmarks/ablations_long.sh)
# 10. the distilled student at lambda 0.3 and 3 again, logging the gradients of its two losses
#    apart (benchmarks/grad_probe.sh): does the distillation loss hold back the task's?
# 11. the schedule curve's 40-epoch point (15,600 steps, about 1.5 h a student), seed 0: does
#    distillation's share of the gap keep growing with the schedule (-21%, 0%, 29%, 47% at 2, 5,
#    10 and 20 epochs)?
# 12. the supervised teacher's curve to 10 epochs (3,900 steps, about 15 minutes a student),
#    seed 0: how far distillation gets at the long table's length from maps that suit the task
#    (29%, 67%, 77% at 156, 780 and 1,950 steps)
# 13. the 40-epoch point's seeds 1 and 2 (about 1-2.5 h a student): does the ensemble's lead
#    over fine-tuning (+0.33 on seed 0) hold, and how far does distillation's share spread?
# 14. copy without its recipe's layer-wise lr decay at the 40-epoch length, seeds 0 and 1
#    (benchmarks/ablations_e40.sh): is copy below scratch at 40 epochs (-11% of the gap over
#    seeds 0 and 1) because of the decay, which cost it 3.38 points at 10 epochs? (Without it:
#    +35% of the gap over seeds 0 and 1, 3.55 and 4.33 points above the decayed copy.)
# 15. the schedule curve's 80-epoch point (31,200 steps, about 2-4.5 h a student), seed 0: the
#    curve has not levelled off at 40 epochs (distillation -2%, ..., 47%, 64% of the gap): does it
#    go on rising toward fine-tuning, and does copy stay below scratch?
# 16. the long Tiny-ImageNet teacher and the table's distribution-shift rows
# A teacher that has not finished resumes from its checkpoint in runs/ or, on a machine without
# one, from the checkpoint an earlier machine carried (benchmarks/carry.sh).
# Steps 2, 3, 5, 6, 7, 11, 12, 13, 15 and 16 are `attnxfer reproduce` runs and steps 4, 9, 10 and 14 `attnxfer sweep`
# runs: each finished student is kept.
# PLAN=1 runs nothing: every step lists what it would do with each of its runs (finished, taken
# from a kept record, resumed, or to train, with its command: `--plan`), and the teachers to make:
#   PLAN=1 bash benchmarks/central_result.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}
TEACHER=teachers/cifar10-mae-d128-l4-e200
SHIFT_TEACHER=teachers/tinyimagenet-mae-d128-l4-e100
TABLE=$RUNS/reproduce-cpu-long
# the shift rows apart: their report evaluates the fine-tuned and distilled students of both
# teachers on corrupted sets, so it trains its own of the table's where only records are kept
SHIFT_TABLE=$RUNS/reproduce-cpu-long-shift
CURVE=$RUNS/schedule-curve
SUPERVISED=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors
# records of runs finished in earlier checkouts, taken, not trained again; after a session (with
# this script stopped), keep the new ones and rewrite the reports in docs/results/:
#   bash benchmarks/central_result_report.sh
# docs/results/gpu/runs: those trained on a GPU (benchmarks/gpu_long_tier.sh); a cell with a
# record in both is taken from the first
KEPT=docs/results/runs
kept=()
for k in "$KEPT" docs/results/gpu/runs; do
  if [ -d "$k" ]; then kept+=(--reuse "$k"); fi
done
# JOBS=2: two students at a time, each on its share of the cores (`--jobs`; on 2 cores, faster
# than one at a time: benchmarks/parallel_runs.py); benchmarks/ablations.sh reads JOBS and PLAN
opts=(--jobs "${JOBS:-1}")
[ -n "${PLAN:-}" ] && opts+=(--plan)

teacher() {  # teacher CONFIG RUN FOLDER: pre-train (or resume) once, then copy RUN/teacher
  local config=$1 run=$2 folder=$3
  [ -f "$folder/model.safetensors" ] && return
  local carried=docs/results/carried/${run#"$RUNS"/}
  if [ -n "${PLAN:-}" ]; then
    local from=
    [ ! -d "$carried" ] || from=", from the checkpoint carried in $carried"
    echo "teacher $folder: to pre-train$from (attnxfer pretrain --method mae -c $config --resume auto)"
    return
  fi
  if [ ! -f "$run/summary.json" ]; then
    # a checkpoint carried from an earlier machine (benchmarks/carry.sh), where $run has none
    if [ -d "$carried" ] && [ "$RUNS" = runs ]; then
      bash benchmarks/carry.sh --restore "$run"
    fi
    attnxfer pretrain --method mae -c "$config" --resume auto
  fi
  mkdir -p "$folder"
  cp -r "$run/teacher/." "$folder/"
  echo "teacher copied to $folder"
}

step() {  # step N TITLE: whether step N is to run (announcing it when it is)
  [ -z "${STEPS:-}" ] || [[ ",$STEPS," == *",$1,"* ]] || return 1
  echo "== $(date -u +%H:%M) $1. $2"
}

if step 1 "CIFAR-10 MAE teacher, 200 epochs"; then
  teacher configs/cifar10/mae_teacher_long.yaml "$RUNS/teachers/cifar10_mae_long" "$TEACHER"
fi
if step 2 "schedule curve, 0.4, 2 and 5 epochs, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5 --seeds 0 --out "$CURVE" "${kept[@]}" "${opts[@]}"
fi
if step 3 "schedule curve from the supervised teacher, 0.4, 2 and 5 epochs, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5 --seeds 0 --teacher "$SUPERVISED" \
    --out "$CURVE-supervised" "${kept[@]}" "${opts[@]}"
fi
if step 4 "which layers are distilled, and the weight lambda, at 1,950 steps, seed 0"; then
  RUNS=$RUNS bash benchmarks/ablations_e5.sh layers lambda
fi
table=()  # the 10-epoch point is the table's seed 0 (under PLAN=1 the table may not exist yet)
if step 5 "long-tier table, seed 0, and the schedule curve to 10 epochs"; then
  attnxfer reproduce --tier cpu-long --seeds 0 --out "$TABLE" "${kept[@]}" "${opts[@]}"
  [ ! -d "$TABLE" ] || table=(--reuse "$TABLE")
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5,10 --seeds 0 --out "$CURVE" "${table[@]}" \
    "${kept[@]}" "${opts[@]}"
fi
if step 6 "long-tier table, seeds 0-2"; then
  attnxfer reproduce --tier cpu-long --out "$TABLE" "${kept[@]}" "${opts[@]}"
fi
[ ! -d "$TABLE" ] || table=(--reuse "$TABLE")
if step 7 "the schedule curve to 20 epochs, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5,10,20 --seeds 0 --out "$CURVE" "${table[@]}" \
    "${kept[@]}" "${opts[@]}"
fi
if step 8 "the teacher's card, with the curve's students and the table's (seed 0)"; then
  RUNS=$RUNS bash benchmarks/teacher_card.sh
fi
if step 9 "ablations on the long recipe, seed 0"; then
  RUNS=$RUNS bash benchmarks/ablations_long.sh
fi
if step 10 "the gradients of the task and distillation losses, lambda 0.3 and 3, seed 0"; then
  RUNS=$RUNS bash benchmarks/grad_probe.sh
fi
if step 11 "the schedule curve to 40 epochs, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5,10,20,40 --seeds 0 --out "$CURVE" "${table[@]}" \
    "${kept[@]}" "${opts[@]}"
fi
if step 12 "the supervised teacher's curve to 10 epochs, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5,10 --seeds 0 --teacher "$SUPERVISED" \
    --out "$CURVE-supervised" "${kept[@]}" "${opts[@]}"
fi
if step 13 "the schedule curve's 40-epoch point, seeds 1 and 2"; then
  attnxfer reproduce --tier cpu-long --curve 40 --seeds 1,2 --out "$CURVE" "${kept[@]}" "${opts[@]}"
fi
if step 14 "copy without its layer-wise lr decay at 40 epochs, seeds 0 and 1"; then
  SEEDS=0,1 RUNS=$RUNS bash benchmarks/ablations_e40.sh
fi
if step 15 "the schedule curve's 80-epoch point, seed 0"; then
  attnxfer reproduce --tier cpu-long --curve 80 --seeds 0 --out "$CURVE" "${kept[@]}" "${opts[@]}"
fi
if step 16 "Tiny-ImageNet MAE teacher, 100 epochs, and the shift rows"; then
  [ -n "${PLAN:-}" ] || attnxfer prepare tiny-imagenet
  teacher configs/tinyimagenet/mae_teacher_long.yaml "$RUNS/teachers/tinyimagenet_mae_long" "$SHIFT_TEACHER"
  if [ -n "${PLAN:-}" ] && [ ! -f "$SHIFT_TEACHER/model.safetensors" ]; then
    echo "the shift rows: planned once the Tiny-ImageNet teacher exists"
  else
    # its own kept records first (the first --reuse wins): the table's fine-tuned and distilled
    # students it trained again, with their corrupted-set top-1, before the table's weightless ones
    own=()
    [ -d "$KEPT/reproduce-cpu-long-shift" ] && own=(--reuse "$KEPT/reproduce-cpu-long-shift")
    # seed 0's rows first: a first shift table a third of the way in (each run's corrupted-set
    # top-1 and ensemble are recorded as soon as it finishes, so stopping between is safe)
    for seeds in 0 0,1,2; do
      attnxfer reproduce --tier cpu-long --shift --seeds "$seeds" --out "$SHIFT_TABLE" "${own[@]}" \
        "${kept[@]}" "${opts[@]}"
    done
    RUNS=$RUNS bash benchmarks/teacher_card.sh  # the Tiny-ImageNet teacher's card, with its students
  fi
fi
echo "== $(date -u +%H:%M) all done"
