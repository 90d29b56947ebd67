#!/usr/bin/env bash
# The paper's ablations at small scale: each is one `attnxfer sweep` over the CPU-tier student
# recipe with the committed CIFAR-10 MAE teacher (3 seeds). Each writes results.{json,md,png}
# into runs/ablations/<name>/; restart the script and finished cells are skipped. RECIPE, TEACHER,
# SEEDS, OUT (the folder instead of runs/ablations) and TABLE (the main table's runs to reuse)
# may be set in the environment, and EXTRA: overrides added to every cell (e.g. a training length),
# REUSE: more folders of finished runs to take cells from (space-separated), and FINISHED_ONLY=1:
# train nothing, tabulate the cells finished so far (`attnxfer sweep --finished-only`), PLAN=1:
# run nothing, list what each cell would do (`attnxfer sweep --plan`), and JOBS=N: train N cells
# at a time, each on its share of the cores (`attnxfer sweep --jobs N`).
#   bash benchmarks/ablations.sh [name ...]      # default: all of them, in this order
#   RECIPE=configs/cifar10/student_cpu_long.yaml TEACHER=teachers/cifar10-mae-d128-l4-e200/model.safetensors \
#     TABLE=runs/reproduce-cpu-long OUT=runs/ablations-long SEEDS=0 bash benchmarks/ablations.sh layers
#                                                # the same on the long tier (about 20 min a cell)
#   ... EXTRA="data.train_subset=null optim.epochs=5 optim.warmup_epochs=0.5" ...
#                                                # the schedule curve's 5-epoch length instead
# A cell identical to a finished run of `attnxfer reproduce` (TABLE, default runs/reproduce-cpu)
# or of another ablation is taken from it, not trained again (`attnxfer sweep --reuse`): the
# baseline row of each ablation (every layer, every head, lambda 3, the full map) is the main
# table's run.
# Cost on a 2-core CPU: about 2 minutes per cell (a cell is one seed of one setting).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-configs/cifar10/student_cpu.yaml}
TEACHER=${TEACHER:-teachers/cifar10-mae-d128-l4/model.safetensors}
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-runs/ablations}
TABLE=${TABLE:-runs/reproduce-cpu}
EXTRA=${EXTRA:-}
[ -n "${FINISHED_ONLY:-}" ] && EXTRA="$EXTRA --finished-only"
[ -n "${PLAN:-}" ] && EXTRA="$EXTRA --plan"
COPY_DECAY=0.75  # the layer-wise lr decay of the copy rows of the main table (as the reference)
COPY_RECIPE=optim.layer_decay=$COPY_DECAY
# the released copy recipe's cosine ends at a minimum lr of a quarter of its peak (2e-3 of 8e-3);
# the tiers' copy rows end at the shared recipe's 1e-6. A quarter of the CIFAR recipes' lr 1e-3:
COPY_MIN_LR=2.5e-4
reuse=()
for dir in "$TABLE" "$OUT" ${REUSE:-}; do
  [ -d "$dir" ] && reuse+=(--reuse "$dir")
done
declare -A TITLES=(
  [what_copy]="What is copied: the teacher Q, K or V against its whole map"
  [what_distill]="What is distilled: the teacher Q, K or V against its whole map"
  [layers]="Which layers are distilled (4-layer student): the first k or the last k"
  [copy_layers]="Which layers are copied (4-layer student): the first k"
  [copy_decay]="Copy with and without the layer-wise lr decay ($COPY_DECAY) that its recipe shares with fine-tuning"
  [copy_min_lr]="Copy's minimum lr: the tiers' 1e-6 against the released copy recipe's quarter of the peak ($COPY_MIN_LR)"
  [average]="Copying averaged teacher maps: over examples, query tokens or heads"
  [heads]="How many heads are distilled (of 4 per layer)"
  [lambda]="Distillation weight lambda"
  [features]="Attention distillation against feature (residual stream) distillation"
)
declare -A SWEEPS=(
  [what_copy]="--grid transfer.mode=copy,copy_q,copy_k,copy_v $COPY_RECIPE"
  [what_distill]="--grid transfer.mode=distill,distill_q,distill_k,distill_v"
  [layers]="--grid transfer.layers=first:1,first:2,first:3,last:1,last:2,last:3,all transfer.mode=distill"
  [copy_layers]="--grid transfer.layers=first:1,first:2,first:3,all transfer.mode=copy $COPY_RECIPE"
  # a diagnosis, not one of the paper's ablations: copy on distillation's lr recipe (no decay),
  # so that copy and distillation differ only in how the maps are transferred
  [copy_decay]="--grid optim.layer_decay=$COPY_DECAY,null transfer.mode=copy"
  # also a diagnosis: the copy rows with the one part of the released copy recipe's schedule
  # they leave out, its lr floor (the 1e-6 row is the main table's copy student)
  [copy_min_lr]="--grid optim.min_lr=1e-6,$COPY_MIN_LR transfer.mode=copy $COPY_RECIPE"
  # the averaging ablations need the materialised maps: every row on the eager path
  [average]="--grid transfer.average=null,examples,queries,heads transfer.mode=copy transfer.impl=eager $COPY_RECIPE"
  [heads]="--grid transfer.heads=1,2,3,all transfer.mode=distill"
  [lambda]="--grid transfer.weight=0.3,1,3,10 transfer.mode=distill"
  [features]="--grid transfer.mode=distill,feature_distill"
)
ORDER=(what_copy what_distill layers copy_layers copy_decay copy_min_lr average heads lambda features)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${SWEEPS[$name]:-}" ] || { echo "unknown ablation $name: ${ORDER[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086
  attnxfer sweep -c "$RECIPE" --seeds "$SEEDS" --out "$OUT/$name" --jobs "${JOBS:-1}" \
    --title "${TITLES[$name]}" "${reuse[@]}" ${SWEEPS[$name]} "teacher.source=$TEACHER" $EXTRA
done
