#!/usr/bin/env bash
# Where the CIFAR-10 teachers and the students of the diagnosis attend, layer by layer
# (`attnxfer analyze locality`): the teachers, a random init, a student from scratch, students
# distilled from the 200-epoch MAE teacher and from the supervised one, and both teachers
# fine-tuned. The students are the seed-0 runs of benchmarks/diagnose_distill.sh (run it first).
#   bash benchmarks/locality.sh          # -> docs/results/analysis/locality-cifar10/
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs/diagnosis}
MAE10=teachers/cifar10-mae-d128-l4/model.safetensors
MAE200=teachers/cifar10-mae-d128-l4-e200/model.safetensors
SUPERVISED=../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors
attnxfer analyze locality \
  "random init=random:$MAE200" \
  "MAE 10ep teacher=$MAE10" \
  "MAE 200ep teacher=$MAE200" \
  "supervised teacher=$SUPERVISED" \
  "scratch student=$RUNS/baseline/mode=scratch/seed0" \
  "distilled from MAE 200ep=$RUNS/pretraining/source=teachers_cifar10-mae-d128-l4-e200_model.safetensors/seed0" \
  "distilled from supervised=$RUNS/supervised/mode=distill/seed0" \
  "MAE 200ep fine-tuned=$RUNS/pretraining_ft/source=teachers_cifar10-mae-d128-l4-e200_model.safetensors/seed0" \
  "supervised fine-tuned=$RUNS/finetune/source=.._shared_data_vit-checkpoints_vit_d128_l4_h4_p4_cifar10.safetensors/seed0" \
  --data "imagefolder:$HOME/.cache/attnxfer/cifar10-jpeg" --split test --images 512 \
  --out "${OUT:-docs/results/analysis/locality-cifar10}"
