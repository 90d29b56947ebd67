#!/usr/bin/env bash
# Distillation between a teacher and a student that differ in token grid or in head count,
# against the same students trained from scratch at the same schedule (the CPU-tier recipe,
# 3 seeds). Each part is one `attnxfer sweep` into runs/cross_mapping/<part>/ (finished cells
# are skipped on a restart); benchmarks/cross_mapping_report.py makes the table.
#   bash benchmarks/cross_mapping.sh [part ...]     # default: grid heads_scratch heads_distill
# TEACHER, RECIPE, SEEDS and OUT may be set in the environment. The default teacher is the
# supervised CIFAR-10 ViT (d128, 4 layers, 4 heads, patch 4) of ../shared/data: a teacher
# whose maps transfer on this recipe at the same grid, so what the mappings keep is visible.
# Cost on a 2-core CPU: about 2 minutes per cell (a cell is one seed of one setting), 24 cells.
set -euo pipefail
cd "$(dirname "$0")/.."
RECIPE=${RECIPE:-configs/cifar10/student_cpu.yaml}
TEACHER=${TEACHER:-../shared/data/vit-checkpoints/vit_d128_l4_h4_p4_cifar10.safetensors}
SEEDS=${SEEDS:-0,1,2}
OUT=${OUT:-runs/cross_mapping}
reuse=()
[ -d "$OUT" ] && reuse+=(--reuse "$OUT")

sweep() {  # sweep PART TITLE ARGS...
  local part=$1 title=$2
  shift 2
  attnxfer sweep -c "$RECIPE" --seeds "$SEEDS" --out "$OUT/$part" --title "$title" \
    "${reuse[@]}" "$@" "teacher.source=$TEACHER"
}

parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(grid heads_scratch heads_distill)
for part in "${parts[@]}"; do
  case $part in
    grid) sweep grid "Student on the teacher's 8x8 patch grid (patch 4) or on a 4x4 one (patch 8)" \
      --grid transfer.mode=scratch,distill --grid 'student.model_args={patch_size: 4}|{patch_size: 8}' ;;
    heads_scratch) sweep heads_scratch "Student with 2 heads (the teacher has 4), from scratch" \
      --grid 'student.model_args={num_heads: 2}' transfer.mode=scratch ;;
    heads_distill) sweep heads_distill \
      "Student with 2 heads distilled from the teacher's 4: head groups averaged, or heads 0 and 2" \
      --grid 'transfer.head_map=average|[0, 2]' transfer.mode=distill 'student.model_args={num_heads: 2}' ;;
    *) echo "unknown part $part: grid heads_scratch heads_distill" >&2; exit 2 ;;
  esac
done
