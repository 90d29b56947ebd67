"""Keep the records of finished runs (config, summary, metrics and the results recorded beside
them; no checkpoints) in a folder that is committed, keeping their relative paths, so that a
later checkout takes them with ``--reuse`` instead of training them again
(:func:`attnxfer.sweep.keep_records`):

    python benchmarks/keep_finished.py runs/schedule-curve docs/results/runs/schedule-curve
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnxfer.sweep import keep_records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", type=Path, help="folder of runs (e.g. runs/schedule-curve)")
    parser.add_argument("dest", type=Path, help="committed folder of their records")
    args = parser.parse_args()
    for target in keep_records(args.src, args.dest):
        print(f"kept {target}")


if __name__ == "__main__":
    main()
