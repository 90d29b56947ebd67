#!/usr/bin/env bash
# The paper's map analyses on the small-scale CIFAR-10 models (after `attnxfer reproduce --tier
# cpu --out runs/reproduce-cpu`): JS divergence of each model's attention maps to the MAE
# teacher's, layer by layer, with four head pairings; attention pictures of the same models on
# CIFAR-10 test images and on ImageNet photos (read at the models' 32 px).
#   bash benchmarks/analysis_cifar.sh [OUT]        # default docs/results/analysis
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-docs/results/analysis}
T=teachers/cifar10-mae-d128-l4/model.safetensors
R=runs/reproduce-cpu/cifar10_mae
CIFAR=imagefolder:$HOME/.cache/attnxfer/cifar10-jpeg
attnxfer prepare cifar10-jpeg
attnxfer prepare imagenet-sample
# copy-Q and copy-K students (seed 0, the main table's copy recipe), as the paper compares them
# too: taken from `bash benchmarks/ablations.sh what_copy` when it ran, trained otherwise;
# COPY_QK=0 leaves them out (4 minutes less)
EXTRA=()
if [ "${COPY_QK:-1}" = 1 ]; then
  reuse=()
  [ -d runs/ablations ] && reuse=(--reuse runs/ablations)
  attnxfer sweep -c configs/cifar10/student_cpu.yaml --grid transfer.mode=copy_q,copy_k \
    --seeds 0 --out runs/analysis-students "${reuse[@]}" optim.layer_decay=0.75 teacher.source=$T
  EXTRA=("copy-Q=runs/analysis-students/mode=copy_q/seed0" "copy-K=runs/analysis-students/mode=copy_k/seed0")
fi
attnxfer analyze similarity \
  "random init=random:$T" "scratch=runs/reproduce-cpu/scratch/seed0" "fine-tuned=$R/finetune/seed0" \
  "distilled=$R/distill/seed0" "${EXTRA[@]}" \
  --reference "MAE teacher=$T" --data "$CIFAR" --split test --images 512 --out "$OUT/similarity"
attnxfer analyze maps "random init=random:$T" "teacher=$T" "scratch=runs/reproduce-cpu/scratch/seed0" \
  "fine-tuned=$R/finetune/seed0" "distilled=$R/distill/seed0" \
  --data "$CIFAR" --split test --images 3 --queries 27,0 --out "$OUT/maps-cifar10"
attnxfer analyze maps "random init=random:$T" "teacher=$T" "scratch=runs/reproduce-cpu/scratch/seed0" \
  "fine-tuned=$R/finetune/seed0" "distilled=$R/distill/seed0" \
  --data "imagefolder:$HOME/.cache/attnxfer/imagenet-sample" --split val --images 3 --queries 27 \
  --out "$OUT/maps-photos"
attnxfer analyze count --out "$OUT/count"
