"""Top-1 over training of several students of one schedule, side by side: each run's test-set
evaluations (``val_top1`` at each evaluated epoch of its ``metrics.jsonl``), one column per
epoch, with each student's lead over the first one (e.g. scratch).

The curve's points compare students trained for different lengths; this compares students of
one length at the same moments of their schedule, so it shows when a transfer method's lead
opens and closes (for instance as the learning rate decays).

    python benchmarks/trajectories.py --out docs/results/trajectories_e40 \\
        scratch=docs/results/runs/schedule-curve/e40/scratch/seed0 \\
        finetune=docs/results/runs/schedule-curve/e40/finetune/seed0 ...

writes OUT.json, OUT.md and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from attnxfer.report import figure, table, write_results


def evaluations(run: Path) -> dict[int, float]:
    """``{epoch: val_top1}`` of every evaluation a run logged (the last one of an epoch logged
    twice, e.g. by a resumed run)."""
    metrics = run / "metrics.jsonl"
    if not metrics.is_file():
        raise SystemExit(f"{run}: no metrics.jsonl; give the folder of a trained run")
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    found = {int(r["epoch"]): r["val_top1"] for r in rows if "val_top1" in r and "epoch" in r}
    if not found:
        raise SystemExit(f"{run}: its metrics.jsonl has no evaluation (val_top1) yet")
    return found


def collect(students: list[tuple[str, Path]]) -> dict[str, Any]:
    """Every student's evaluations, on the epochs at which all of them were evaluated."""
    curves = {label: evaluations(run) for label, run in students}
    epochs = sorted(set.intersection(*(set(c) for c in curves.values())))
    if not epochs:
        raise SystemExit("the runs share no evaluated epoch: were they trained on one schedule?")
    return {
        "epochs": epochs,
        "students": [
            {"label": label, "run": str(run), "top1": [curves[label][e] for e in epochs]}
            for label, run in students
        ],
    }


def markdown(r: dict[str, Any]) -> str:
    first = r["students"][0]
    rows = [[s["label"], *(f"{v:.2f}" for v in s["top1"])] for s in r["students"]]
    rows += [
        [
            f"{s['label']} - {first['label']}",
            *(f"{v - b:+.2f}" for v, b in zip(s["top1"], first["top1"], strict=True)),
        ]
        for s in r["students"][1:]
    ]
    lines = [
        "# Top-1 over training, students of one schedule",
        "",
        "Test-set top-1 at each epoch where every student was evaluated (from each run's "
        "`metrics.jsonl`); the last rows: each student's lead over the first.",
        "",
        *table(["epoch", *map(str, r["epochs"])], rows),
        "",
        "Runs: " + "; ".join(f"{s['label']} `{s['run']}`" for s in r["students"]),
        "",
        f"Command: `{r['command']}`",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    with figure(path, 1, 1, figsize=(6, 3.6)) as (_, ax):
        for i, s in enumerate(r["students"]):
            ax.plot(r["epochs"], s["top1"], marker="o", label=s["label"], color=f"C{i}")
        ax.set_xlabel("epoch")
        ax.set_ylabel("CIFAR-10 top-1 (%)")
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("students", nargs="+", help="LABEL=RUN_FOLDER, the first one the baseline")
    p.add_argument("--out", type=Path, required=True, help="write OUT.{json,md,png}")
    args = p.parse_args(argv)
    students = []
    for spec in args.students:
        label, sep, run = spec.partition("=")
        if not sep or not label or not run:
            raise SystemExit(f"{spec!r}: give each student as LABEL=RUN_FOLDER")
        students.append((label, Path(run)))
    record = collect(students)
    argv = sys.argv[1:] if argv is None else argv
    record["command"] = shlex.join(["python", "benchmarks/trajectories.py", *argv])
    write_results(args.out.parent, args.out.name, record, markdown, plot)
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
