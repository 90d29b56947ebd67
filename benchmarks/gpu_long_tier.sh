#!/usr/bin/env bash
# The cpu-long recipe (configs/cifar10/student_cpu_long.yaml) on one GPU (run.device=cuda,
# bfloat16 by run.amp=auto): the long table's three seeds and the schedule curve at lengths that
# two CPU cores cannot afford, with the MAE teacher, and the supervised teacher's curve as the
# diagnostic. The students are tiny (0.8 M parameters, 65 tokens), so one process leaves the GPU
# mostly idle: the parts run as parallel processes, each into its own folder, every finished
# student kept. On an H200 with 16 cores (2026-12-04), 7 parts at once took about 200 s per
# 3,900-step student each, so a 40-epoch student (15,600 steps) takes about 800 s.
#   BUDGET=3600 bash benchmarks/gpu_long_tier.sh         # seconds; unfinished parts stop there
# At the budget's end `timeout` sends SIGTERM, and every run still training saves a checkpoint of
# the step it reached: on a machine that keeps runs/ between commands (a warm device), the same
# command again resumes there. The parts
# finished already take their cells from the records in seconds; what is left (2026-12-07): the
# 40-epoch point's seed 1 copy student and seed 2's four, and copy with and without its lr decay
# at 40 epochs on seed 1 (benchmarks/ablations_e40.sh; seed 0 has its records), seven students at
# once. The 80-epoch point (about 1,600 s a student) is left to the CPU script,
# benchmarks/central_result.sh.
# A cell with a committed record (docs/results/runs, docs/results/gpu/runs; trained on any
# machine: the device is no part of a run's identity) is taken, not trained again. Afterwards,
# keep the new records where the reports find them:
#   python benchmarks/keep_finished.py runs/gpu/parts docs/results/gpu/runs
set -uo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/gpu}
PARTS=$RUNS/parts
BUDGET=${BUDGET:-3600}
SUPERVISED=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # each part augments its batches on 2 CPU threads
mkdir -p "$PARTS"
attnxfer prepare cifar10-jpeg || exit 1
kept=()
for k in docs/results/runs docs/results/gpu/runs; do
  if [ -d "$k" ]; then kept+=(--reuse "$k"); fi
done
R=(attnxfer reproduce --tier cpu-long)
G=(run.device=cuda)
part() {  # part NAME ARGS...: one reproduce run in its own folder, its output in NAME.log
  local name=$1
  shift
  timeout "$BUDGET" "${R[@]}" "$@" --out "$PARTS/$name" "${kept[@]}" "${G[@]}" \
    > "$PARTS/$name.log" 2>&1
  echo "$name: rc=$? after ${SECONDS}s"
}
part table-s0 --seeds 0 &
part table-s1 --seeds 1 &
part table-s2 --seeds 2 &
part curve-short --curve 0.4,2,5 --seeds 0 &
part curve-e20 --curve 20 --seeds 0 &
part curve-e40 --curve 40 --seeds 0 &
part curve-supervised --curve 0.4,2,5,10 --seeds 0 --teacher "$SUPERVISED" &
part curve-e40-s1 --curve 40 --seeds 1 --jobs 2 &
part curve-e40-s2 --curve 40 --seeds 2 --jobs 4 &
(
  EXTRA="${G[*]}" RUNS=$PARTS SEEDS=0,1 JOBS=2 timeout "$BUDGET" bash benchmarks/ablations_e40.sh \
    > "$PARTS/ablations-e40.log" 2>&1
  echo "ablations-e40: rc=$? after ${SECONDS}s"
) &
wait
