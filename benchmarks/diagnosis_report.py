"""One table from the sweeps of benchmarks/diagnose_distill.sh: each row's top-1 and its share
of its own teacher's scratch-to-fine-tune gap.

    python benchmarks/diagnosis_report.py [--runs runs/diagnosis] [--out docs/results/diagnosis]

A row's gap share is ``(top1 - scratch) / (finetune - scratch)`` with the scratch and fine-tune
rows of the same teacher (the supervised teacher's architecture differs from the MAE one's, so
each teacher has its own scratch and fine-tune rows).
"""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path

from attnxfer import AttnxferError
from attnxfer.export import read_card

ORDER = (
    "baseline",
    "finetune",
    "supervised",
    "weight",
    "layers",
    "pretraining",
    "pretraining_ft",
    "long_layers",
    "long_weight",
)


def _teacher(row: dict, result: dict) -> str:
    """``supervised``, or ``mae`` with its pre-training epochs when its model.json tells them
    (``mae 10ep``; ``mae 27/200ep`` for a snapshot of a longer run): every MAE teacher has its
    own fine-tune row, all share the scratch row."""
    source = row.get("teacher.source") or next(
        (f.split("=", 1)[1] for f in result["fixed"] if f.startswith("teacher.source=")), ""
    )
    if "vit-checkpoints" in source:
        return "supervised"
    if not source:
        return "mae"
    sidecar = Path(source).with_suffix(".json")  # a weights file with its own JSON
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    made = None
    if sidecar.is_file():
        made = json.loads(sidecar.read_text()).get("pretrain", {})
    else:
        with contextlib.suppress(AttnxferError):
            made = read_card(folder).get("pretrain", {})
    if made is not None:
        epochs, schedule = made.get("epochs"), made.get("of_epochs")
        if epochs is not None and schedule not in (None, epochs):
            return f"mae {epochs}/{schedule}ep"  # a snapshot taken during a longer schedule
        if epochs is not None:
            return f"mae {epochs}ep"
    return "mae"


def _family(teacher: str) -> str:
    return teacher.split()[0]


def collect(runs: Path) -> list[dict]:
    rows = []
    for name in ORDER:
        path = runs / name / "results.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        fixed = dict(f.split("=", 1) for f in result["fixed"])
        for row in result["rows"]:
            setting = {k: v for k, v in row.items() if k in result["grid"]}
            mode = setting.get("transfer.mode") or fixed.get("transfer.mode")
            varied = ", ".join(
                f"{k.split('.')[-1]}={v}" for k, v in setting.items() if k != "teacher.source"
            )
            rows.append(
                {
                    "sweep": name,
                    "teacher": _teacher(row, result),
                    "mode": mode,
                    "setting": varied or "-",
                    "mean": row["mean"],
                    "std": row["std"],
                    "runs": row["runs"],
                    "train_seconds": result["train_seconds"],
                    "hardware": result["hardware"],
                }
            )
    return rows


def add_gap_shares(rows: list[dict]) -> None:
    """A scratch student depends on the teacher's architecture only: one scratch row per family
    (MAE, supervised); the fine-tune row is each teacher's own."""
    for teacher in dict.fromkeys(r["teacher"] for r in rows):
        mine = [r for r in rows if r["teacher"] == teacher]
        family = [r for r in rows if _family(r["teacher"]) == _family(teacher)]
        scratch = next((r["mean"] for r in family if r["mode"] == "scratch"), None)
        finetune = next((r["mean"] for r in mine if r["mode"] == "finetune"), None)
        for r in mine:
            if scratch is not None and finetune is not None and finetune != scratch:
                r["gap_percent"] = 100 * (r["mean"] - scratch) / (finetune - scratch)


def markdown(rows: list[dict], command: str) -> str:
    lines = [
        "# What limits attention distillation at small scale",
        "",
        "CIFAR-10 (JPEG copies), the CPU-tier student recipe on all 50,000 training images for 2 "
        "epochs (780 optimiser steps), one variable at a time. Gap: share of the same teacher's "
        "scratch-to-fine-tune gap.",
        "",
        "| teacher | mode | setting | top-1 (mean ± std) | seeds | gap |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = f"{r['gap_percent']:.0f}%" if "gap_percent" in r else "-"
        lines.append(
            f"| {r['teacher']} | {r['mode']} | {r['setting']} | {r['mean']:.2f} ± {r['std']:.2f} "
            f"| {len(r['runs'])} | {gap} |"
        )
    hardware = sorted({r["hardware"] for r in rows})
    minutes = sum({r["sweep"]: r["train_seconds"] for r in rows}.values()) / 60  # per sweep
    lines += [
        "",
        "Commands: `bash benchmarks/diagnose_distill.sh`, then `" + command + "`.  ",
        f"Hardware: {'; '.join(hardware)}. Training time of all runs: {minutes:.0f} min.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/diagnosis")
    p.add_argument("--out", default="docs/results/diagnosis")
    args = p.parse_args(argv)
    rows = collect(Path(args.runs))
    if not rows:
        raise SystemExit(f"no sweep results under {args.runs}: run benchmarks/diagnose_distill.sh")
    add_gap_shares(rows)
    command = "python benchmarks/diagnosis_report.py"
    Path(f"{args.out}.md").write_text(markdown(rows, command))
    Path(f"{args.out}.json").write_text(json.dumps({"rows": rows}, indent=1))
    print(markdown(rows, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
