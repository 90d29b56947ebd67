"""The README's results-at-a-glance table, written from the committed reports.

One column per training length of the MAE teacher's schedule curve
(docs/results/schedule_curve.json): top-1 of scratch, fine-tune, distillation and copy, the
share of the scratch-to-fine-tune gap each transfer recovers, the ensemble of the fine-tuned
and distilled students against fine-tuning alone, and copy without its recipe's layer-wise lr
decay where an ablation report has that cell at one of the curve's lengths
(docs/results/ablations_long.json, ablations_e40.json). The paper's numbers sit in the last
column. With ``--readme`` the table replaces what stands between the README's two markers, so
that its numbers are the reports' and nobody copies them by hand:

    python benchmarks/glance.py --readme README.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnxfer.report import gap_recovered
from attnxfer.reproduce import PAPER

START = "<!-- glance: written by `python benchmarks/glance.py --readme README.md` -->"
END = "<!-- /glance -->"
RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
#: the ablation reports that may hold copy without its lr decay at one of the curve's lengths
ABLATIONS = ("ablations_long.json", "ablations_e40.json")


def _steps(scale: str) -> int:
    """``"3900 steps per student"`` -> 3900."""
    return int(scale.split()[0])


def no_decay_cells(ablations: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Copy without the layer-wise lr decay (the ``copy_decay`` ablation's ``null`` row) of
    each ablation report that ran it, by the number of steps its students trained."""
    cells = {}
    for report in ablations:
        for ablation in report["ablations"]:
            if ablation["name"] != "copy_decay":
                continue
            for row in ablation["rows"]:
                if row["setting"] == "null":
                    cells[_steps(report["reference"]["scale"])] = row
    return cells


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n > 1 else ''}"


def _top1(mean: float, n: int, seeds: int, gap: float | None = None) -> str:
    """``"81.42 (+64%)"``, naming its seed count where it differs from its column's."""
    text = f"{mean:.2f}"
    notes = [] if gap is None else [f"{gap:+.0f}%"]
    if n != seeds:
        notes.append(_seeds(n))
    return f"{text} ({', '.join(notes)})" if notes else text


def _paper(method: str) -> str:
    """The paper's top-1 of ``method`` and the share of its gap: ``"85.1 (+78%)"``."""
    gap = gap_recovered(PAPER[method], PAPER["scratch"], PAPER["finetune"])
    return f"{PAPER[method]:.1f} ({gap:+.0f}%)"


def table(curve: dict[str, Any], no_decay: dict[int, dict[str, Any]]) -> str:
    """The markdown table: a column per curve length where scratch and fine-tune have finished."""
    points = [p for p in curve["points"] if {"scratch", "finetune"} <= set(p["methods"])]
    if not points:
        raise SystemExit("the schedule curve has no length with scratch and fine-tune finished")
    columns = []
    for p in points:
        methods = p["methods"]
        seeds = len(methods["finetune"]["runs"])
        gap = p["gap_recovered"]
        column = {
            "optimiser steps": f"{p['steps']:,}",
            "epochs of CIFAR-10": f"{p['epochs']:g}",
            "seeds": str(seeds),
            "from scratch": _top1(
                methods["scratch"]["mean"], len(methods["scratch"]["runs"]), seeds
            ),
            "fine-tune": _top1(methods["finetune"]["mean"], seeds, seeds),
        }
        for method, label in (("distill", "attention distillation"), ("copy", "attention copy")):
            if method in methods:
                m = methods[method]
                column[label] = _top1(m["mean"], len(m["runs"]), seeds, gap.get(method))
        cell = no_decay.get(p["steps"])
        if cell is not None:
            column["copy without its lr decay"] = _top1(
                cell["mean"], cell["seeds"], seeds, cell["gap_recovered"]
            )
        if "ensemble_minus_finetune" in p:
            e = p["ensemble_minus_finetune"]
            column["ensemble minus fine-tune"] = f"{e['mean']:+.2f}" + (
                "" if len(e["runs"]) == seeds else f" ({_seeds(len(e['runs']))})"
            )
        columns.append(column)
    paper = {
        "from scratch": f"{PAPER['scratch']:.1f}",
        "fine-tune": f"{PAPER['finetune']:.1f}",
        "attention distillation": _paper("distill"),
        "attention copy": _paper("copy"),
        "ensemble minus fine-tune": f"{PAPER['ensemble'] - PAPER['finetune']:+.1f}",
    }
    rows = [
        "optimiser steps",
        "epochs of CIFAR-10",
        "seeds",
        "from scratch",
        "fine-tune",
        "attention distillation",
        "attention copy",
        "copy without its lr decay",
        "ensemble minus fine-tune",
    ]
    rows = [r for r in rows if any(r in c for c in columns)]
    head = rows[0]
    lines = [
        f"| {head} | " + " | ".join(c[head] for c in columns) + " | paper |",
        "|---|" + "---|" * (len(columns) + 1),
    ]
    for r in rows[1:]:
        cells = " | ".join(c.get(r, "") for c in columns)
        lines.append(f"| {r} | {cells} | {paper.get(r, '')} |")
    return "\n".join(lines)


def rewrite(text: str, body: str, name: str = "README.md") -> str:
    """``text`` with what stands between :data:`START` and :data:`END` replaced by ``body``."""
    if text.count(START) != 1 or text.count(END) != 1 or text.index(START) > text.index(END):
        raise SystemExit(
            f"{name} needs one '{START}' line and, below it, one '{END}' line around the table"
        )
    head, rest = text.split(START)
    _, tail = rest.split(END)
    return f"{head}{START}\n{body}\n{END}{tail}"


def build(
    curve: Path = RESULTS / "schedule_curve.json", ablations: list[Path] | None = None
) -> str:
    """The table from the report files (the committed ones by default; a missing ablation
    report is skipped)."""
    paths = [RESULTS / a for a in ABLATIONS] if ablations is None else ablations
    records = [_read(a) for a in paths if a.is_file()]
    return table(_read(curve), no_decay_cells(records))


def _read(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(
            f"{path}: not a report's JSON ({e}); give the .json a report wrote"
        ) from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--curve", type=Path, default=RESULTS / "schedule_curve.json")
    parser.add_argument(
        "--ablations",
        type=Path,
        nargs="*",
        default=[RESULTS / a for a in ABLATIONS],
        help="ablation reports to take copy without its lr decay from (missing ones are skipped)",
    )
    parser.add_argument("--readme", type=Path, help="rewrite the table in this file in place")
    args = parser.parse_args(argv)
    body = build(args.curve, args.ablations)
    if args.readme is None:
        print(body)
        return
    if not args.readme.is_file():
        raise SystemExit(f"{args.readme} does not exist: give the README that holds the table")
    text = args.readme.read_text()
    new = rewrite(text, body, args.readme.name)
    if new != text:
        args.readme.write_text(new)
    print(f"{args.readme}: the at-a-glance table {'rewritten' if new != text else 'unchanged'}")


if __name__ == "__main__":
    main()
