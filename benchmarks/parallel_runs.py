"""Several runs at once on one machine: ``attnxfer sweep --jobs N`` against one run at a time.

The same cells (seeds 0..K-1 of one recipe, trained for a short length) are trained by
``attnxfer sweep --jobs J`` for each J of ``--jobs`` (default 1 and 2), each time into a fresh
folder, interleaved in rounds (benchmarks/rounds.py). A sweep's wall time is the whole command:
process start-up, data loading, training and the final evaluation of every cell. The report gives,
per setting, the median wall time and the optimiser steps per second of all cells together, and
the speed-up of each setting over the first (median of the per-round ratios, min-max).

On a 2-core CPU, ``--jobs 2`` runs two 1-thread trainings side by side; whether that beats one
2-thread training at a time depends on how well one small model's step uses two threads:

    python benchmarks/parallel_runs.py --rounds 2 --out docs/results/parallel_runs_cpu
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rounds import fmt, interleave, ratio

from attnxfer.report import cpu_name
from attnxfer.reproduce import METHOD_OVERRIDES

#: the long recipe cut to 150 optimiser steps a cell (19,200 images, one pass)
SHORT = ["data.train_subset=19200", "optim.epochs=1", "optim.warmup_epochs=0.1"]


def sweep_seconds(args, jobs: int, out: Path) -> float:
    """Wall time of one ``attnxfer sweep --jobs JOBS`` over the cells, into ``out``."""
    cmd = [
        sys.executable,
        "-m",
        "attnxfer",
        "sweep",
        "-c",
        args.config,
        "--grid",
        f"run.seed={','.join(str(s) for s in range(args.cells))}",
        "--jobs",
        str(jobs),
        "--out",
        str(out),
        f"teacher.source={args.teacher}",
        *METHOD_OVERRIDES[args.mode],
        *args.overrides,
    ]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{shlex.join(cmd)} failed:\n{done.stderr[-2000:]}")
    if len(list(out.rglob("summary.json"))) != args.cells:
        sys.exit(f"{out}: not every one of the {args.cells} cells finished")
    return seconds


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default="configs/cifar10/student_cpu_long.yaml")
    p.add_argument("--teacher", default="teachers/cifar10-mae-d128-l4-e200/model.safetensors")
    p.add_argument("--mode", default="distill", choices=sorted(METHOD_OVERRIDES))
    p.add_argument("--cells", type=int, default=2, help="cells per sweep (seeds 0..K-1)")
    p.add_argument("--jobs", default="1,2", help="--jobs settings; the first is the base")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--out", help="write OUT.json and OUT.md")
    p.add_argument(
        "overrides",
        nargs="*",
        default=SHORT,
        help=f"section.key=value for every cell (default: {' '.join(SHORT)})",
    )
    args = p.parse_args(argv)
    settings = [int(j) for j in args.jobs.split(",")]
    hardware = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# {args.cells} cells of {args.config} ({args.mode}) on {hardware}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folders = (Path(tmp) / str(i) for i in itertools.count())
        values = interleave(
            {f"jobs {j}": (lambda j=j: sweep_seconds(args, j, next(folders))) for j in settings},
            args.rounds,
        )
        summaries = (Path(tmp) / "0").rglob("summary.json")
        steps = sum(json.loads(path.read_text())["steps"] for path in summaries)
    base = f"jobs {settings[0]}"
    rows = []
    for name, seconds in values.items():
        median = statistics.median(seconds)
        rows.append(
            {
                "jobs": int(name.split()[1]),
                "seconds": seconds,
                "median_seconds": median,
                "steps_per_second": steps / median,
                # the base's time over this one's: above 1 is faster
                "speedup": ratio(values, base, name),
            }
        )
    command = "python benchmarks/parallel_runs.py " + shlex.join(argv or sys.argv[1:])
    lines = [
        f"# {args.cells} runs at a time or one after another (`attnxfer sweep --jobs`)",
        "",
        f"Each sweep trains {args.cells} `{args.mode}` cells of `{args.config}` "
        f"({steps // args.cells} optimiser steps each; overrides "
        f"`{' '.join(args.overrides)}`), from start-up to the last cell's final evaluation.",
        "",
        "| --jobs | wall time, median (s) | steps/s, all cells | speed-up over "
        f"--jobs {settings[0]} (min-max) |",
        "|---|---|---|---|",
        *(
            f"| {r['jobs']} | {r['median_seconds']:.1f} | {r['steps_per_second']:.2f} | "
            f"{fmt(r['speedup'])} |"
            for r in rows
        ),
        "",
        f"Hardware: {hardware}; nothing else running. {args.rounds} rounds, the settings "
        "interleaved in each.  ",
        f"Command: `{command}`",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        report = {"config": args.config, "mode": args.mode, "cells": args.cells, "rows": rows}
        report.update(overrides=args.overrides, hardware=hardware, command=command)
        Path(f"{args.out}.json").write_text(json.dumps(report, indent=1) + "\n")
        Path(f"{args.out}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
