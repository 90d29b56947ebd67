"""Are two results tables the same within seed noise? Per row: both means, the difference and
Welch's t statistic over the per-seed values.

    python benchmarks/compare_tables.py BEFORE.json AFTER.json [--out OUT.md]

Takes the ``results.json`` of ``attnxfer reproduce`` or ``attnxfer sweep`` (rows with ``runs``,
the per-seed values). |t| below about 2.8 (two-sided 5% with 4 degrees of freedom, 3 seeds each)
is within seed noise.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path


def _label(row: dict) -> str:
    return row.get("method") or ", ".join(
        f"{k}={v}" for k, v in row.items() if k not in ("mean", "std", "runs") and "." in k
    )


def welch_t(a: list[float], b: list[float]) -> float:
    """Welch's t of mean(b) - mean(a); infinite when both are constant and differ."""
    se = math.sqrt(statistics.variance(a) / len(a) + statistics.variance(b) / len(b))
    diff = statistics.mean(b) - statistics.mean(a)
    return diff / se if se else (0.0 if diff == 0 else math.copysign(math.inf, diff))


def compare(before: dict, after: dict) -> list[dict]:
    theirs = {_label(r): r for r in after["rows"]}
    out = []
    for row in before["rows"]:
        other = theirs.get(_label(row))
        if other is None or len(row["runs"]) < 2 or len(other["runs"]) < 2:
            continue
        out.append(
            {
                "row": _label(row),
                "before": row["mean"],
                "before_std": row["std"],
                "after": other["mean"],
                "after_std": other["std"],
                "difference": other["mean"] - row["mean"],
                "t": welch_t(row["runs"], other["runs"]),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("before")
    p.add_argument("after")
    p.add_argument("--out", help="also write this markdown file")
    p.add_argument("--title", default="Two results tables, row by row")
    args = p.parse_args(argv)
    rows = compare(*(json.loads(Path(f).read_text()) for f in (args.before, args.after)))
    given = sys.argv[1:] if argv is None else argv
    command = "python " + shlex.join(["benchmarks/compare_tables.py", *given])
    lines = [
        f"# {args.title}",
        "",
        f"Command: `{command}`. Welch's t over the per-seed values; |t| below about 2.8 "
        "(two-sided 5%, 4 degrees of freedom for 3 seeds each) is within seed noise.",
        "",
        f"| row | before ({args.before}) | after ({args.after}) | difference | Welch t |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['row']} | {r['before']:.2f} ± {r['before_std']:.2f} | "
            f"{r['after']:.2f} ± {r['after_std']:.2f} | {r['difference']:+.2f} | {r['t']:+.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
