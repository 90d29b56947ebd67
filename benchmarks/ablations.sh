#!/usr/bin/env bash
# The paper's ablations at small scale: each is one `attnxfer sweep` over the CPU-tier student
# recipe with the committed CIFAR-10 MAE teacher (3 seeds). Each writes results.{json,md,png}
# into runs/ablations/<name>/; restart the script and finished cells are skipped.
#   bash benchmarks/ablations.sh [name ...]      # default: all of them
# Cost on a 2-core CPU: about 2 minutes per cell (a cell is one seed of one setting).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=configs/cifar10/student_cpu.yaml
TEACHER=teachers/cifar10-mae-d128-l4/model.safetensors
SEEDS=${SEEDS:-0,1,2}
run() {  # name, then sweep arguments
  local name=$1; shift
  attnxfer sweep -c "$RECIPE" --seeds "$SEEDS" --out "runs/ablations/$name" --title "$name" \
    "$@" "teacher.source=$TEACHER"
}
declare -A SWEEPS=(
  # which layers (4-layer student): only the first k or only the last k layers
  [layers]="--grid transfer.layers=first:1,first:2,first:3,last:1,last:2,last:3,all transfer.mode=distill"
  # how many heads (of 4)
  [heads]="--grid transfer.heads=1,2,3,4 transfer.mode=distill"
  # what is transferred: Q, K, V against the full map, by copy and by distillation
  [what]="--grid transfer.mode=copy,copy_q,copy_k,copy_v,distill,distill_q,distill_k,distill_v"
  # teacher maps averaged over examples / query tokens / heads before transfer (eager path)
  [average]="--grid transfer.average=null,examples,queries,heads transfer.mode=copy transfer.impl=eager"
  # distillation weight lambda; feature distillation beside attention distillation
  [lambda]="--grid transfer.weight=0.3,1,3,10 transfer.mode=distill"
  [features]="--grid transfer.mode=distill,feature_distill"
)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=(layers heads what average lambda features)
for name in "${names[@]}"; do
  [ -n "${SWEEPS[$name]:-}" ] || { echo "unknown ablation $name: ${!SWEEPS[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086
  run "$name" ${SWEEPS[$name]}
done
