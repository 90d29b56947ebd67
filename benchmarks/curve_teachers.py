"""Schedule curves of several teachers side by side: the share of the scratch-to-fine-tune gap
that copy and distillation recover at each training length, one line per teacher.

Each input is the ``schedule_curve.json`` of one ``attnxfer reproduce --curve`` (same tier and
recipe, another ``--teacher``); every teacher keeps its own scratch and fine-tune rows, since a
scratch student takes its teacher's architecture.

    python benchmarks/curve_teachers.py docs/results/schedule_curve.json \\
        docs/results/schedule_curve_supervised.json --labels "MAE (200 ep),supervised" \\
        --out docs/results/schedule_curve_teachers
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from attnxfer.report import figure, table, write_results

METHODS = ("copy", "distill")


def combine(curves: list[dict[str, Any]], labels: list[str] | None = None) -> dict[str, Any]:
    """One record of every curve's points, labelled by teacher (``labels``, or as each curve
    names its teacher); refuses curves of different tiers, recipes or overrides (their gaps
    would not be comparable)."""
    recipes = {(c["tier"], c["config"], tuple(c["overrides"])) for c in curves}
    if len(recipes) > 1:
        raise SystemExit(f"curves of different recipes cannot share a figure: {sorted(recipes)}")
    if labels is not None and len(labels) != len(curves):
        raise SystemExit(f"--labels has {len(labels)} names for {len(curves)} curves: one each")
    labels = labels or [c.get("teacher_label", "MAE teacher") for c in curves]
    if len(set(labels)) < len(labels):
        raise SystemExit(f"two curves have the same teacher ({labels}): pass each teacher once")
    return {
        "tier": curves[0]["tier"],
        "config": curves[0]["config"],
        "teachers": [
            {
                "label": label,
                "teacher": c["teacher"],
                "seeds": c["seeds"],
                "finished_only": c.get("finished_only", False),
                "points": c["points"],
            }
            for label, c in zip(labels, curves, strict=True)
        ],
        "hardware": sorted({c["hardware"] for c in curves}),
    }


def _cell(point: dict[str, Any], method: str) -> str:
    m = point["methods"].get(method)
    return "" if m is None else f"{m['mean']:.2f}"


def _gap(point: dict[str, Any], method: str) -> str:
    g = point["gap_recovered"].get(method)
    return "" if g is None else f"{g:+.0f}%"


def _ensemble(point: dict[str, Any]) -> str:
    """The fine-tuned + distilled ensemble's top-1 minus fine-tuning's, if evaluated."""
    e = point.get("ensemble_minus_finetune")
    return "" if e is None else f"{e['mean']:+.2f}"


def markdown(r: dict[str, Any]) -> str:
    rows = [
        [
            t["label"],
            f"{p['steps']:,}",
            *(_cell(p, m) for m in ("scratch", "finetune", *METHODS)),
            *(_gap(p, m) for m in METHODS),
            _ensemble(p),
        ]
        for t in r["teachers"]
        for p in t["points"]
    ]
    lines = [
        f"# Gap recovered against training length, per teacher ({r['tier']} tier)",
        "",
        f"Student recipe `{r['config']}`; each teacher with its own scratch and fine-tune rows "
        "(a scratch student has its teacher's architecture). Top-1 on the CIFAR-10 JPEG test set, "
        "means over each curve's seeds; gap: share of the same length's scratch-to-fine-tune gap; "
        "ensemble - fine-tune: the fine-tuned and distilled students' averaged outputs against "
        "the fine-tuned student alone. A blank cell is a run not finished yet.",
        "",
        *table(
            [
                "teacher",
                "steps",
                "scratch",
                "fine-tune",
                *METHODS,
                "copy gap",
                "distill gap",
                "ensemble - fine-tune",
            ],
            rows,
        ),
        "",
        "Curves: "
        + "; ".join(f"{t['label']} `{t['teacher']}` (seeds {t['seeds']})" for t in r["teachers"]),
        "",
        *([f"Command: `{r['command']}`  "] if "command" in r else []),
        f"Hardware: {' / '.join(r['hardware'])}",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    with figure(path, 1, len(METHODS), figsize=(10, 3.6), sharey=True) as (_, axes):
        for ax, method in zip(axes, METHODS, strict=True):
            ax.axhline(100, color="grey", lw=0.8, ls="--")
            ax.axhline(0, color="black", lw=0.8)
            for i, t in enumerate(r["teachers"]):
                have = [p for p in t["points"] if p["gap_recovered"].get(method) is not None]
                ax.plot(
                    [p["steps"] for p in have],
                    [p["gap_recovered"][method] for p in have],
                    marker="o",
                    color=f"C{i}",
                    label=t["label"],
                )
            ax.set_xscale("log")
            steps = sorted({p["steps"] for t in r["teachers"] for p in t["points"]})
            ax.set_xticks(steps, [f"{s:,}" for s in steps])
            ax.minorticks_off()
            ax.set_xlabel("optimiser steps")
            ax.set_title(f"attention {method}", fontsize=10)
            ax.legend(fontsize=8)
        axes[0].set_ylabel("scratch-to-fine-tune gap recovered (%)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("curves", nargs="+", type=Path, help="schedule_curve.json files")
    p.add_argument("--out", type=Path, required=True, help="write OUT.{json,md,png}")
    p.add_argument("--labels", help="comma-separated names of the teachers, one per curve")
    args = p.parse_args()
    missing = [str(c) for c in args.curves if not c.is_file()]
    if missing:
        raise SystemExit(f"no such curve: {', '.join(missing)}; make it with attnxfer reproduce")
    labels = args.labels.split(",") if args.labels else None
    record = combine([json.loads(c.read_text()) for c in args.curves], labels)
    record["command"] = shlex.join(["python", "benchmarks/curve_teachers.py", *sys.argv[1:]])
    write_results(args.out.parent, args.out.name, record, markdown, plot)
    print(markdown(record))


if __name__ == "__main__":
    main()
