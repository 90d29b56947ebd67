#!/usr/bin/env bash
# Carry unfinished runs from one machine to the next. A run longer than a session (the long MAE
# teachers) resumes with `--resume auto` from its newest checkpoint, but that checkpoint lives in
# runs/, which a fresh machine does not have. This keeps each run's newest good checkpoint (weights
# and optimiser state), its config.yaml and metrics.jsonl under docs/results/carried/, at the
# run's path below runs/, to be committed:
#   bash benchmarks/carry.sh runs/teachers/tinyimagenet_mae_long
# and puts them back where the run resumes from them (benchmarks/central_result.sh does this
# itself before it resumes a teacher):
#   bash benchmarks/carry.sh --restore runs/teachers/tinyimagenet_mae_long
# A restore never replaces a checkpoint: a run that has one here is left as it is. Once the run
# has finished, delete its carried folder (git rm -r); its records are kept as any run's are.
# Paths are relative to the folder it runs in: the repository's root.
set -euo pipefail
CARRIED=${CARRIED:-docs/results/carried}

die() { echo "carry: $*" >&2; exit 1; }

newest() {  # the newest checkpoint of run $1 that finished writing (meta.json is written last)
  local ckpt
  for ckpt in $(ls -d "$1"/checkpoints/step_* 2>/dev/null | sort -r); do
    if [ -f "$ckpt/meta.json" ]; then echo "$ckpt"; return; fi
  done
}

restore=
if [ "${1:-}" = --restore ]; then restore=1; shift; fi
[ $# -gt 0 ] || die "give the run folders to carry, e.g. runs/teachers/tinyimagenet_mae_long"
for run in "$@"; do
  run=${run%/}
  case $run in runs/*) ;; *) die "$run: give a run below runs/ (its path there is kept)" ;; esac
  kept=$CARRIED/${run#runs/}
  if [ -n "$restore" ]; then
    [ -d "$kept" ] || die "$kept: nothing carried for $run"
    if [ -n "$(newest "$run")" ]; then
      echo "carry: $run has a checkpoint of its own ($(newest "$run")): left as it is"
      continue
    fi
    mkdir -p "$run"
    cp -r "$kept/." "$run/"
    echo "carry: restored $(newest "$run")"
    continue
  fi
  [ ! -f "$run/summary.json" ] || die "$run has finished: keep its records, not a checkpoint"
  ckpt=$(newest "$run")
  [ -n "$ckpt" ] || die "$run holds no finished checkpoint to carry"
  tmp=$(mktemp -d "${TMPDIR:-/tmp}/carry.XXXXXX")
  mkdir -p "$tmp/checkpoints"
  cp "$run/config.yaml" "$tmp/"
  [ ! -f "$run/metrics.jsonl" ] || cp "$run/metrics.jsonl" "$tmp/"
  cp -r "$ckpt" "$tmp/checkpoints/"
  rm -rf "$kept"  # the previous carry of this run: replaced whole, so one checkpoint is kept
  mkdir -p "$(dirname "$kept")"
  mv "$tmp" "$kept"
  chmod 755 "$kept"
  echo "carry: kept $ckpt in $kept ($(du -sh "$kept" | cut -f1))"
done
