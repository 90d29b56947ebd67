"""Runs of one recipe trained on two machines, side by side: every finished run under ``--a``
with an identical run under ``--b`` (same resolved config; the device is no part of a run's
identity, :func:`attnxfer.sweep.run_identity`), with the top-1 of each, the processor and
precision each trained in, and the difference. Shows how far a result depends on where it ran
(float32 on a CPU against bfloat16 on a GPU, the same seed and data order):

    python benchmarks/same_recipe.py --a docs/results/runs --b docs/results/gpu/runs \
        --out docs/results/gpu/same_recipe
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from attnxfer.report import PRECISION, table
from attnxfer.sweep import finished_runs


def _where(summary: dict) -> str:
    hardware = summary.get("hardware") or "processor not recorded"
    return f"{hardware}, {PRECISION.get(summary.get('amp'), 'precision not recorded')}"


def pairs(a: Path, b: Path) -> list[dict]:
    found_b = finished_runs([b])
    rows = []
    for identity, run_a in sorted(finished_runs([a]).items(), key=lambda kv: str(kv[1])):
        run_b = found_b.get(identity)
        if run_b is None:
            continue
        sa, sb = (json.loads((r / "summary.json").read_text()) for r in (run_a, run_b))
        rows.append(
            {
                "a": str(run_a.relative_to(a)),
                "b": str(run_b.relative_to(b)),
                "steps": sa["steps"],
                "top1_a": sa["val_top1"],
                "top1_b": sb["val_top1"],
                "difference": sb["val_top1"] - sa["val_top1"],
                "trained_a": _where(sa),
                "trained_b": _where(sb),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="folder of finished runs (or records)")
    p.add_argument("--b", type=Path, required=True, help="another such folder")
    p.add_argument("--out", type=Path, help="write OUT.md and OUT.json")
    args = p.parse_args()
    rows = pairs(args.a, args.b)
    if not rows:
        raise SystemExit(f"no run under {args.a} has an identical run under {args.b}")
    diffs = [abs(r["difference"]) for r in rows]
    summary = {
        "pairs": len(rows),
        "mean_abs_difference": statistics.fmean(diffs),
        "max_abs_difference": max(diffs),
    }
    machines_a = sorted({r["trained_a"] for r in rows})
    machines_b = sorted({r["trained_b"] for r in rows})
    lines = [
        "# One recipe, two machines",
        "",
        f"A: `{args.a}` ({'; '.join(machines_a)}). B: `{args.b}` ({'; '.join(machines_b)}). "
        "Each row is one run and its identical twin (same resolved config, seed and data order); "
        "top-1 on the CIFAR-10 JPEG test set.",
        "",
        *table(
            ["run", "steps", "top-1 A", "top-1 B", "B - A"],
            [
                [
                    r["a"],
                    r["steps"],
                    f"{r['top1_a']:.2f}",
                    f"{r['top1_b']:.2f}",
                    f"{r['difference']:+.2f}",
                ]
                for r in rows
            ],
        ),
        "",
        f"{summary['pairs']} pairs: mean |B - A| {summary['mean_abs_difference']:.2f} points, "
        f"largest {summary['max_abs_difference']:.2f}.",
        "",
        f"Command: `python benchmarks/same_recipe.py --a {args.a} --b {args.b}"
        + (f" --out {args.out}`" if args.out else "`"),
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.with_suffix(".md").write_text(text)
        args.out.with_suffix(".json").write_text(
            json.dumps({**summary, "a": str(args.a), "b": str(args.b), "rows": rows}, indent=1)
        )


if __name__ == "__main__":
    main()
