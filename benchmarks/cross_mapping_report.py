"""The table of benchmarks/cross_mapping.sh: each student (the teacher's grid and heads, a
coarser grid, fewer heads), from scratch and distilled, with distillation's gain over scratch.

    python benchmarks/cross_mapping_report.py [--runs runs/cross_mapping] [--out docs/results]

writes OUT/cross_mapping.{json,md}.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from attnxfer.report import hardware, pm, summarise, table, write_results

#: (student, how it is trained, sweep part, the row's grid values in that part's results, as
#: written on the command line)
ROWS = [
    (
        "teacher's grid and heads (8x8, 4 heads)",
        "scratch",
        "grid",
        {"transfer.mode": "scratch", "student.model_args": "{patch_size: 4}"},
    ),
    (
        "teacher's grid and heads (8x8, 4 heads)",
        "distill (index pairing, same grid)",
        "grid",
        {"transfer.mode": "distill", "student.model_args": "{patch_size: 4}"},
    ),
    (
        "coarser grid (patch 8: 4x4)",
        "scratch",
        "grid",
        {"transfer.mode": "scratch", "student.model_args": "{patch_size: 8}"},
    ),
    (
        "coarser grid (patch 8: 4x4)",
        "distill (maps resampled 8x8 -> 4x4)",
        "grid",
        {"transfer.mode": "distill", "student.model_args": "{patch_size: 8}"},
    ),
    ("half the heads (2)", "scratch", "heads_scratch", {"student.model_args": "{num_heads: 2}"}),
    (
        "half the heads (2)",
        "distill (head_map=average: teacher heads 0+1, 2+3)",
        "heads_distill",
        {"transfer.head_map": "average"},
    ),
    (
        "half the heads (2)",
        "distill (head_map=[0, 2])",
        "heads_distill",
        {"transfer.head_map": "[0, 2]"},
    ),
]


def collect(runs: Path) -> tuple[list[dict], list[dict]]:
    rows, sources = [], []
    for student, how, part, setting in ROWS:
        path = runs / part / "results.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        match = next(
            (r for r in result["rows"] if all(r.get(k) == v for k, v in setting.items())), None
        )
        if match is None:
            continue
        rows.append({"student": student, "how": how, **summarise(match["runs"])})
        if result not in sources:
            sources.append(result)
    return rows, sources


def markdown(record: dict) -> str:
    rows = record["rows"]
    lines = [
        "# Distillation across token grids and head counts (CIFAR-10, 2-core CPU)",
        "",
        "Teacher: the supervised CIFAR-10 ViT (d128, 4 layers, 4 heads, patch 4, 32 px). Each",
        "student has the teacher's architecture but for the change named, and is trained by the",
        "CPU-tier recipe (configs/cifar10/student_cpu.yaml: 10,000 images x 2 epochs, 156 steps);",
        "top-1 on the 10,000 test images, mean ± std over the seeds listed.",
        "",
        *table(
            ["student", "trained", "top-1", "per seed", "gain over its scratch"],
            [
                [
                    r["student"],
                    r["how"],
                    pm(r),
                    ", ".join(f"{v:.2f}" for v in r["runs"]),
                    "" if r["gain_over_scratch"] is None else f"{r['gain_over_scratch']:+.2f}",
                ]
                for r in rows
            ],
        ),
        "",
        "Commands: `bash benchmarks/cross_mapping.sh`, then "
        "`python benchmarks/cross_mapping_report.py`.",
        "",
        *(f"- `{s['command']}`" for s in record["sweeps"]),
        "",
        f"Hardware: {record['hardware']}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/cross_mapping"))
    parser.add_argument("--out", type=Path, default=Path("docs/results"))
    args = parser.parse_args(argv)
    rows, sources = collect(args.runs)
    if not rows:
        raise SystemExit(f"no finished sweeps under {args.runs}: run benchmarks/cross_mapping.sh")
    scratch = {r["student"]: r["mean"] for r in rows if r["how"] == "scratch"}
    for r in rows:
        base = scratch.get(r["student"])
        r["gain_over_scratch"] = (
            None if base is None or r["how"] == "scratch" else round(r["mean"] - base, 2)
        )
    record = {"rows": rows, "sweeps": sources, "hardware": hardware()}
    write_results(args.out, "cross_mapping", record, markdown)
    print(markdown(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
