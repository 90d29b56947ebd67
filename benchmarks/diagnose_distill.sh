#!/usr/bin/env bash
# What limits attention distillation at small scale: one variable at a time, at one fixed
# schedule (the CPU-tier student recipe on all 50,000 CIFAR-10 training images, 2 epochs, 780
# optimiser steps), each a restartable `attnxfer sweep` into runs/diagnosis/<name>/.
#   bash benchmarks/diagnose_distill.sh [name ...]     # default: all, in this order
#   python benchmarks/diagnosis_report.py              # -> docs/results/diagnosis.{md,json}
# SEEDS (default 0), OUT (default runs/diagnosis), MAE and SUPERVISED (teacher files) may be set
# in the environment; SNAPSHOTS (comma-separated teacher files: the long MAE run's encoder after
# more and more epochs, `attnxfer export RUN/checkpoints/step_N DIR`) for the `pretraining` sweeps;
# LONG (the finished long MAE teacher) for the `long_*` sweeps. The supervised teacher is the
# CIFAR-10 ViT in ../shared/data (its MLP is 2x wide, not 4x, so it gets its own scratch and
# fine-tune rows).
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=configs/cifar10/student_cpu.yaml
SCHEDULE="data.train_subset=null optim.epochs=2"
SEEDS=${SEEDS:-0}
OUT=${OUT:-runs/diagnosis}
MAE=${MAE:-teachers/cifar10-mae-d128-l4/model.safetensors}
SUPERVISED=${SUPERVISED:-../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors}
SNAPSHOTS=${SNAPSHOTS:-runs/teachers/mae_long_snapshots/e27/model.safetensors}
LONG=${LONG:-teachers/cifar10-mae-d128-l4-e200/model.safetensors}  # the 200-epoch MAE teacher
FT=optim.layer_decay=0.75  # fine-tune and copy rows, as in the main table
declare -A TITLES=(
  [baseline]="Scratch, fine-tune and distillation from the 10-epoch MAE teacher"
  [weight]="Distillation weight (MAE teacher)"
  [layers]="Which layers are distilled (MAE teacher; first:1 is the reference's end_layer:-3)"
  [supervised]="A supervised teacher (CIFAR-10 ViT, 69.65% top-1, MLP ratio 2)"
)
declare -A SWEEPS=(
  [baseline]="--grid transfer.mode=scratch,distill teacher.source=$MAE"
  [finetune]="--grid teacher.source=$MAE,$SUPERVISED transfer.mode=finetune $FT"
  [weight]="--grid transfer.weight=0.3,1,10 transfer.mode=distill teacher.source=$MAE"
  [layers]="--grid transfer.layers=first:1,first:2,last:2 transfer.mode=distill teacher.source=$MAE"
  [supervised]="--grid transfer.mode=scratch,distill teacher.source=$SUPERVISED"
)
SWEEPS[pretraining]="--grid teacher.source=$SNAPSHOTS transfer.mode=distill"
SWEEPS[pretraining_ft]="--grid teacher.source=$SNAPSHOTS transfer.mode=finetune $FT"
SWEEPS[long_layers]="--grid transfer.layers=first:1,first:2,last:2 transfer.mode=distill teacher.source=$LONG"
SWEEPS[long_weight]="--grid transfer.weight=0.3,1 transfer.mode=distill teacher.source=$LONG"
TITLES[long_layers]="Which layers are distilled (200-epoch MAE teacher)"
TITLES[long_weight]="Distillation weight (200-epoch MAE teacher)"
TITLES[finetune]="Fine-tuning each teacher (layer decay 0.75)"
TITLES[pretraining]="Distillation from the MAE teacher after longer pre-training"
TITLES[pretraining_ft]="Fine-tuning the MAE teacher after longer pre-training"
ORDER=(baseline finetune supervised weight layers pretraining pretraining_ft long_layers long_weight)
names=("$@")
[ ${#names[@]} -eq 0 ] && names=("${ORDER[@]}")
for name in "${names[@]}"; do
  [ -n "${SWEEPS[$name]:-}" ] || { echo "unknown sweep $name: ${ORDER[*]}" >&2; exit 2; }
  # shellcheck disable=SC2086
  attnxfer sweep -c "$RECIPE" --seeds "$SEEDS" --out "$OUT/$name" --title "${TITLES[$name]}" \
    ${SWEEPS[$name]} $SCHEDULE
done
