#!/usr/bin/env bash
# After a session of benchmarks/central_result.sh (stop it first): keep the records of every
# finished run in docs/results/runs/ (so no later checkout trains them again), and rewrite the
# reports in docs/results/ from the runs finished so far: the schedule curves of both teachers,
# the two-teacher comparison, the long-tier table as far as it has come, each 5-epoch, 40-epoch
# and long-recipe ablation begun in this checkout, each over every seed its cells have (and where
# the long recipe's students attend),
# the gradient probes (benchmarks/grad_probe.sh), the 40-epoch students over their schedule
# (benchmarks/trajectories.py), the teacher's card with its students and the README's table at a
# glance (benchmarks/glance.py).
# Trains nothing; evaluates each ensemble once.
#   bash benchmarks/central_result_report.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
RUNS=${RUNS:-runs}
KEPT=docs/results/runs
SUPERVISED=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors
table=()  # the long table's runs first: with their weights, the 10-epoch ensemble can be evaluated
[ -d "$RUNS/reproduce-cpu-long" ] && table=(--reuse "$RUNS/reproduce-cpu-long")
curve() {  # curve OUT DOCS_STEM SEEDS [--teacher T]: the curve's finished points, into docs/results
  local out=$1 stem=$2 seeds=$3
  shift 3
  attnxfer reproduce --tier cpu-long --curve 0.4,2,5,10,20,40,80 --seeds "$seeds" --out "$out" "$@" \
    "${table[@]}" --reuse "$KEPT" --reuse docs/results/gpu/runs --finished-only
  for ext in md json png; do cp "$out/schedule_curve.$ext" "docs/results/$stem.$ext"; done
}
# the MAE curve over the long table's seeds: its 10-epoch point is the table's (3 seeds), and its
# 40-epoch point gains seeds 1 and 2 as they finish (step 13 of central_result.sh)
curve "$RUNS/schedule-curve" schedule_curve 0,1,2
curve "$RUNS/schedule-curve-supervised" schedule_curve_supervised 0 --teacher "$SUPERVISED"
# the shift rows (step 16 of central_result.sh) over the most seeds (0, then 0-1, then 0-2) whose
# runs have all finished: the long table with the Tiny-ImageNet teacher's rows and the
# corrupted-set evaluation, which needs every run of its seeds (no --finished-only); it trains
# nothing, and evaluates each model once
shift_args=(--tier cpu-long --shift --out "$RUNS/reproduce-cpu-long-shift")
# its own kept records first (the first --reuse wins; see step 16 of central_result.sh)
[ -d "$KEPT/reproduce-cpu-long-shift" ] && shift_args+=(--reuse "$KEPT/reproduce-cpu-long-shift")
shift_args+=(--reuse "$KEPT" --reuse docs/results/gpu/runs)
shift_seeds=
if [ -f teachers/tinyimagenet-mae-d128-l4-e100/model.safetensors ]; then
  for s in 0 0,1 0,1,2; do
    attnxfer reproduce "${shift_args[@]}" --seeds "$s" --plan | tail -n 1 |
      grep -Eq " 0 to resume, 0 to train(;|$)" && shift_seeds=$s
  done
fi
if [ -n "$shift_seeds" ]; then
  attnxfer reproduce "${shift_args[@]}" --seeds "$shift_seeds"
  for ext in md json png; do
    cp "$RUNS/reproduce-cpu-long-shift/results.$ext" "docs/results/reproduce_cpu_long_shift.$ext"
  done
fi
# the long table (3 seeds) as far as it has come; step 6 of central_result.sh writes it whole
if [ -d "$RUNS/reproduce-cpu-long" ]; then
  attnxfer reproduce --tier cpu-long --out "$RUNS/reproduce-cpu-long" --reuse "$KEPT" \
    --reuse docs/results/gpu/runs --finished-only
  for ext in md json png; do
    cp "$RUNS/reproduce-cpu-long/results.$ext" "docs/results/reproduce_cpu_long.$ext"
  done
fi
python benchmarks/curve_teachers.py docs/results/schedule_curve.json \
  docs/results/schedule_curve_supervised.json --labels "MAE (200 ep),supervised" \
  --out docs/results/schedule_curve_teachers
seeds() {  # seeds KIND NAME: the seeds of the sweep's own cells here or kept, e.g. 0,1,2
  local dir found=(0)
  for dir in "$RUNS/ablations-$1/$2"/*/seed*/ "$KEPT/ablations-$1/$2"/*/seed*/; do
    [ -d "$dir" ] && dir=${dir%/} && found+=("${dir##*/seed}")
  done
  printf '%s\n' "${found[@]}" | sort -un | paste -sd, -
}
ablations() {  # ablations KIND EPOCHS: each ablation with a folder under $RUNS/ablations-KIND
  # or kept records under $KEPT/ablations-KIND, run with benchmarks/ablations_KIND.sh, reported
  # against the curve's point at EPOCHS; returns 1 when there is nothing to report
  local kind=$1 epochs=$2 names=() dir name
  for dir in "$RUNS/ablations-$kind"/*/ "$KEPT/ablations-$kind"/*/; do
    name=$(basename "$dir")
    [ -d "$dir" ] && [[ " ${names[*]} " != *" $name "* ]] && names+=("$name")
  done
  # features: both its cells are the long table's, so it has no folder of its own to find
  [ "$kind" = long ] && [[ " ${names[*]} " != *" features "* ]] && names+=(features)
  [ ${#names[@]} -gt 0 ] || return 1
  for name in "${names[@]}"; do  # each over the seeds its own cells have (seed 0 at least)
    RUNS=$RUNS SEEDS=$(seeds "$kind" "$name") FINISHED_ONLY=1 \
      bash "benchmarks/ablations_$kind.sh" "$name" || return 1
  done
  python benchmarks/ablations_report.py --runs "$RUNS/ablations-$kind" \
    --main docs/results/schedule_curve.json --length "$epochs" \
    --out "docs/results/ablations_$kind" --rerun "bash benchmarks/ablations_$kind.sh" || exit 1
}
ablations e5 5 || true
ablations e40 40 || true
if ablations long 10; then
  # where the ablation students attend: the runs here with weights are measured, the report's
  # other rows kept as they were (a checkout with records only adds nothing)
  RUNS=$RUNS bash benchmarks/locality_long.sh > /dev/null ||
    echo "analysis/locality-long not updated (the reason above)"
fi
if compgen -G "$RUNS/grad-probe/*/seed*/metrics.jsonl" > /dev/null; then
  python benchmarks/grad_probe_report.py --runs "$RUNS/grad-probe" > /dev/null
fi
# last, so that the records include what the reports evaluated (the curves' ensembles)
for name in schedule-curve schedule-curve-supervised reproduce-cpu-long reproduce-cpu-long-shift \
  ablations-e5 ablations-e40 ablations-long grad-probe; do
  [ -d "$RUNS/$name" ] && python benchmarks/keep_finished.py "$RUNS/$name" "$KEPT/$name"
done
# the 40-epoch students of seed 0 over their schedule, from the records just kept,
e40=()
for m in scratch finetune copy distill; do
  [ -f "$KEPT/schedule-curve/e40/$m/seed0/metrics.jsonl" ] && e40+=("$m=$KEPT/schedule-curve/e40/$m/seed0")
done
if [ ${#e40[@]} -eq 4 ]; then
  # and copy on distillation's lr recipe (no layer-wise decay; step 14), once it has finished
  nodecay=$KEPT/ablations-e40/copy_decay/layer_decay=null/seed0
  [ -f "$nodecay/summary.json" ] && e40+=("copy, no lr decay=$nodecay")
  python benchmarks/trajectories.py --out docs/results/trajectories_e40 "${e40[@]}" > /dev/null
fi
RUNS=$RUNS bash benchmarks/teacher_card.sh  # from the records just kept
python benchmarks/glance.py --readme README.md  # the README's table, from the reports above
echo "reports written"
