#!/usr/bin/env bash
# Does the attention-distillation loss hold back what the task loss teaches? The long recipe's
# distilled student (3,900 steps, the 200-epoch MAE teacher, seed 0) at lambda 3 (the paper's) and
# lambda 0.3 (the lighter pull that ended 2.1 points higher), trained again with
# run.grad_probe_every=50: every 50 steps the run logs the norm of the task loss's gradient, of the
# weighted distillation loss's, and their cosine, measured apart on one batch, for the whole
# student and for each block. The probe does not change training (tests/test_engine.py), so each
# run ends where the ablation's cell did (it does: 69.69 and 67.59). About 25 minutes a run on
# 2 Zen 4 cores; restart it and finished runs are skipped.
#   bash benchmarks/grad_probe.sh [weight ...]        # default: 0.3 3
#   PLAN=1 bash benchmarks/grad_probe.sh              # what each run would do
#   python benchmarks/grad_probe_report.py            # docs/results/grad_probe.{md,json,png}
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-runs}
weights=("$@")
[ ${#weights[@]} -eq 0 ] && weights=(0.3 3)
grid=$(IFS=,; echo "${weights[*]}")
EXTRA=${EXTRA:-}
# records kept by benchmarks/central_result_report.sh: taken, not trained again
[ -d docs/results/runs ] && EXTRA="$EXTRA --reuse docs/results/runs"
[ -n "${PLAN:-}" ] && EXTRA="$EXTRA --plan"
# shellcheck disable=SC2086
attnxfer sweep -c configs/cifar10/student_cpu_long.yaml --seeds 0 --out "$RUNS/grad-probe" \
  --title "Gradient of the task loss and of the distillation loss, by distillation weight" \
  --grid "transfer.weight=$grid" transfer.mode=distill run.grad_probe_every=50 \
  teacher.source=teachers/cifar10-mae-d128-l4-e200/model.safetensors $EXTRA
