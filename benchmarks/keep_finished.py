"""Copy the records of finished runs (``config.yaml``, ``summary.json``, ``metrics.jsonl``; no
checkpoints) from a folder of runs into a folder that is committed, keeping their relative paths,
so that a later checkout can take them with ``--reuse`` instead of training them again:

    python benchmarks/keep_finished.py runs/schedule-curve docs/results/runs/schedule-curve

Runs that are links to other runs (reused cells) and unfinished runs are skipped; records that
are already there are left as they are.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

RECORDS = ("config.yaml", "summary.json", "metrics.jsonl")


def keep(src: Path, dest: Path) -> list[Path]:
    kept = []
    for summary in sorted(src.rglob("summary.json")):
        run = summary.parent
        if any(p.is_symlink() for p in [run, *run.parents] if p.is_relative_to(src)):
            continue
        if not (run / "config.yaml").is_file():
            continue
        target = dest / run.relative_to(src)
        if (target / "summary.json").is_file():
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORDS:
            if (run / name).is_file():
                shutil.copy2(run / name, target / name)
        kept.append(target)
    return kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of runs (e.g. runs/schedule-curve)")
    parser.add_argument("dest", type=Path, help="committed folder of their records")
    args = parser.parse_args()
    for target in keep(args.src, args.dest):
        print(f"kept {target}")


if __name__ == "__main__":
    main()
