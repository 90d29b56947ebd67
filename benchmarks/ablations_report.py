"""One report of the small-scale ablations run by ``benchmarks/ablations.sh``.

Every sweep's table, each row also given as the share of the scratch-to-fine-tune gap it
recovers (scratch and fine-tune from the main table, same recipe and seeds), the paper's finding
beside it (docs/method.md), and one figure with a panel per ablation. Sweeps not run yet are listed
with the command that runs them.

    python benchmarks/ablations_report.py [--runs runs/ablations]
        [--main docs/results/reproduce_cpu.json] [--out docs/results/ablations]

With ablations run at one length of the schedule curve (``EXTRA=... bash
benchmarks/ablations.sh``), scratch and fine-tune come from that curve's point instead:
``--main docs/results/schedule_curve.json --length 5``.

writes OUT.md, OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

from attnxfer.report import gap_on_shared_seeds, gap_recovered, provenance

#: ablation name (a folder of runs/ablations) -> the paper's finding it tests (docs/method.md)
FINDINGS = {
    "what_copy": "Transferring Q alone works best of Q / K / V, better even than the full map.",
    "what_distill": "Transferring Q alone works best of Q / K / V, better even than the full map.",
    "layers": "More layers help; the later (top) layers matter more than the early ones.",
    "copy_layers": "More layers help; the later (top) layers matter more than the early ones "
    "(the reference's released runs never transfer a teacher's top 3 of 24 layers).",
    "copy_decay": "Its copy recipe decays the lr by 0.75 per layer toward the input, as its "
    "fine-tuning recipe does; its distillation recipe has no decay (a diagnosis here, not one of "
    "the paper's ablations).",
    "copy_min_lr": "Its released copy recipe's half-cosine ends at a minimum lr of 2e-3, a quarter "
    "of its peak lr 8e-3 (its distillation recipe's at 1e-6); a diagnosis here, not one of the "
    "paper's ablations.",
    "average": "Averaging the teacher's maps over examples or over query tokens hurts a lot.",
    "heads": "More heads help, saturating around 3/4 of the heads (12 of 16).",
    "lambda": "The paper's recipe uses lambda 3; it reports no sweep.",
    "features": "Feature distillation reaches 81.3 against 85.7 for attention distillation.",
}


def _row_label(row: dict, keys: list[str]) -> str:
    return ", ".join(str(row[k]) for k in keys) or "base"


def _by_seed(record: dict, seeds: list[int]) -> dict[int, float] | None:
    """A row's top-1 per seed: from its own ``seeds`` where it has them, else from the
    planned ``seeds`` where they match its values one to one; None where it cannot be told
    (a record of an older attnxfer with a mean only)."""
    runs = record.get("runs")
    if runs is None:
        return None
    own = record.get("seeds", seeds)
    return dict(zip(own, runs, strict=True)) if len(own) == len(runs) else None


def unfinished(result: dict) -> list[str]:
    """The settings of a sweep's grid with fewer finished seeds than it asks for (a sweep
    tabulated with ``--finished-only`` while some of its cells still train), each as its row
    label with the seeds it lacks where it has some."""
    keys, seeds = list(result["grid"]), result.get("seeds", [])
    have = {tuple(str(r[k]) for k in keys): r for r in result["rows"]}
    missing = []
    for values in itertools.product(*(result["grid"][k] for k in keys)):
        row = have.get(tuple(str(v) for v in values))
        label = ", ".join(values) or "base"
        if row is None:
            missing.append(label)
        elif seeds and len(row["runs"]) < len(seeds):
            lacking = sorted(set(seeds) - set(row.get("seeds", seeds)))
            plural = "s" if len(lacking) > 1 else ""
            lacks = f" (seed{plural} {', '.join(map(str, lacking))})" if lacking else ""
            missing.append(label + lacks)
    return missing


def reference(main: dict, length: float | None) -> dict:
    """Scratch and fine-tune top-1 from a ``reproduce`` table, or from the point of a schedule
    curve (``reproduce --curve``) at ``length`` epochs: their means, and their values per seed
    (``*_by_seed``, None where the record does not tell) so that each ablation row is measured
    against the same seeds' students."""
    if length is None:
        if "points" in main:
            raise SystemExit("--main is a schedule curve: pass --length EPOCHS to pick its point")
        by_method = {r["method"]: r for r in main["rows"]}
        where, scale, runs = "", "CPU tier", "main-table runs"
    else:
        points = {p["epochs"]: p for p in main.get("points", [])}
        if length not in points:
            have = ", ".join(f"{e:g}" for e in points) or "none (not a schedule curve)"
            raise SystemExit(f"--length {length:g}: the curve has no such point; it has {have}")
        by_method = points[length]["methods"]
        steps = points[length]["steps"]
        where, scale, runs = f" at {steps} steps", f"{steps} steps per student", "curve runs"
    scratch, finetune = by_method["scratch"]["mean"], by_method["finetune"]["mean"]
    return {
        "scratch": scratch,
        "finetune": finetune,
        **{
            f"{m}_by_seed": _by_seed(by_method[m], main.get("seeds", []))
            for m in ("scratch", "finetune")
        },
        "command": main["command"],
        "where": where,
        "scale": scale,
        "reused_runs": runs,
    }


def _gap(row: dict, seeds: list[int], ref: dict) -> tuple[float | None, list[int] | None]:
    """An ablation row's share of the gap, against scratch and fine-tune on the seeds it shares
    with them (:func:`attnxfer.report.gap_on_shared_seeds`), and those seeds; against their means
    (seeds None) where either side does not tell its seeds."""
    values = _by_seed(row, seeds)
    scratch, finetune = ref["scratch_by_seed"], ref["finetune_by_seed"]
    if values is None or scratch is None or finetune is None:
        return gap_recovered(row["mean"], ref["scratch"], ref["finetune"]), None
    return gap_on_shared_seeds(values, scratch, finetune)


def collect(runs: Path, main: dict, length: float | None = None) -> dict:
    ref = reference(main, length)
    report = {
        "reference": ref,
        "ablations": [],
        "not_run": [],
    }
    for name, finding in FINDINGS.items():
        path = runs / name / "results.json"
        if not path.is_file():
            report["not_run"].append(name)
            continue
        result = json.loads(path.read_text())
        keys = list(result["grid"])
        gaps = [_gap(r, result.get("seeds", []), ref) for r in result["rows"]]
        rows = [
            {
                "setting": _row_label(r, keys),
                "mean": r["mean"],
                "std": r["std"],
                "seeds": len(r["runs"]),
                "gap_recovered": gap,
                "gap_seeds": gap_seeds,
                # taken from the main table's (or curve's) runs; an ablation's own cell kept
                # as a record (under a folder named like ``runs``) is not
                "reused": sum(runs.name not in Path(p).parts for p in r.get("reused_from", [])),
            }
            for r, (gap, gap_seeds) in zip(result["rows"], gaps, strict=True)
        ]
        report["ablations"].append(
            {
                "name": name,
                "title": result["title"],
                "finding": finding,
                "grid": keys,
                "fixed": result["fixed"],
                "rows": rows,
                "unfinished": unfinished(result),
                "seeds": result.get("seeds", []),  # the sweep's, each row's being fewer or all
                "command": result["command"],
                "hardware": result.get("hardware", ""),
                **({"trained_on": result["trained_on"]} if "trained_on" in result else {}),
                "train_seconds": result.get("train_seconds", math.nan),
            }
        )
    _shown_reference(report)
    return report


def _shown_reference(report: dict) -> None:
    """The scratch and fine-tune top-1 a report's header and figure show: where every row's
    gap stands on the same seeds, their means over those seeds (``reference["seeds"]``), so
    that the header matches the rows; else the means over all of the reference's seeds."""
    ref = report["reference"]
    used = {
        None if r["gap_seeds"] is None else tuple(r["gap_seeds"])
        for a in report["ablations"]
        for r in a["rows"]
    }
    ref["seeds"] = None
    if len(used) == 1 and None not in used and () not in used:
        (seeds,) = used
        for m in ("scratch", "finetune"):
            ref[m] = sum(ref[f"{m}_by_seed"][s] for s in seeds) / len(seeds)
        ref["seeds"] = list(seeds)


def _seeds_note(seeds: list[int] | None, by_seed: dict | None) -> str:
    """Which seeds the header's scratch and fine-tune stand on, where the reference has more."""
    if seeds is not None and by_seed is not None and len(seeds) < len(by_seed):
        return f" on seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}, the rows'"
    if seeds is None and by_seed is not None:
        return " over all their seeds; each row's gap against its own seeds'"
    return ""


def markdown(report: dict) -> str:
    ref = report["reference"]
    lines = [
        f"# The paper's ablations at small scale (CIFAR-10, {ref.get('scale', 'CPU tier')})",
        "",
        "Each row: mean ± sample std of top-1 over seeds, and the share of the",
        f"scratch-to-fine-tune gap it recovers (scratch {ref['scratch']:.2f},",
        f"fine-tune {ref['finetune']:.2f}"
        + _seeds_note(ref.get("seeds"), ref.get("scratch_by_seed"))
        + ", from",
        f"`{ref['command']}`{ref.get('where', '')}). Written by "
        "`python benchmarks/ablations_report.py`.",
        "",
    ]
    for a in report["ablations"]:
        lines += [f"## {a['name']}: {a['title']}", "", f"The paper: {a['finding']}", ""]
        lines += ["| setting | top-1 | gap recovered | seeds |", "|---|---|---|---|"]
        for r in a["rows"]:
            reused = ref.get("reused_runs", "main-table runs")
            note = f" ({reused})" if r["reused"] == r["seeds"] else ""
            lines.append(
                f"| {r['setting']}{note} | {r['mean']:.2f} ± {r['std']:.2f} | "
                f"{_percent(r['gap_recovered'])} | {r['seeds']} |"
            )
        if a.get("unfinished"):
            rerun = report.get("rerun", "bash benchmarks/ablations.sh")
            seeds = ",".join(map(str, a.get("seeds") or []))
            rerun = f"SEEDS={seeds} {rerun}" if seeds else rerun  # the sweep's own seeds
            lines += [
                "",
                f"Rows still to train: {'; '.join(a['unfinished'])} (`{rerun} {a['name']}`).",
            ]
        lines += [
            "",
            f"Command: `{a['command']}`",
            "",
            *provenance(a),
            f"Training time of all cells: {a['train_seconds'] / 60:.1f} min.",
            "",
        ]
    if report["not_run"]:
        lines += ["## Not run yet", ""]
        rerun = report.get("rerun", "bash benchmarks/ablations.sh")
        lines += [f"- {n}: `{rerun} {n}`" for n in report["not_run"]]
        lines.append("")
    return "\n".join(lines)


def _percent(gap: float | None) -> str:
    return "" if gap is None else f"{gap:.0f}%"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = report["ablations"]
    cols = 2
    rows = max(1, math.ceil(len(panels) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.2 * rows), squeeze=False)
    ref = report["reference"]
    for ax, a in zip(axes.flat, panels, strict=False):
        labels = [r["setting"] for r in a["rows"]]
        means = [r["mean"] for r in a["rows"]]
        stds = [r["std"] for r in a["rows"]]
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#4C72B0")
        ax.axhline(ref["scratch"], color="#C44E52", ls="--", lw=1, label="scratch")
        ax.axhline(ref["finetune"], color="#55A868", ls="--", lw=1, label="fine-tune")
        ax.set_xticks(range(len(labels)), labels, rotation=25, ha="right", fontsize=8)
        ax.set_title(a["name"], fontsize=10)
        ax.set_ylabel("CIFAR-10 top-1")
        low = min(min(m - s for m, s in zip(means, stds, strict=True)), ref["scratch"])
        ax.set_ylim(max(0, low - 4), max(max(means), ref["finetune"]) + 2)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    if panels:
        axes.flat[0].legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=Path, default=Path("runs/ablations"))
    p.add_argument("--main", type=Path, default=Path("docs/results/reproduce_cpu.json"))
    p.add_argument("--out", type=Path, default=Path("docs/results/ablations"))
    p.add_argument(
        "--rerun",
        default="bash benchmarks/ablations.sh",
        help="the command that runs an ablation, listed for those not run yet",
    )
    p.add_argument(
        "--length",
        type=float,
        help="--main is a schedule curve: take scratch and fine-tune at this many epochs",
    )
    args = p.parse_args(argv)
    for path, what in ((args.runs, "bash benchmarks/ablations.sh"), (args.main, "reproduce")):
        if not path.exists():
            raise SystemExit(f"{path} does not exist: run {what} first, or pass its path")
    report = collect(args.runs, json.loads(args.main.read_text()), args.length)
    report["rerun"] = args.rerun
    if not report["ablations"]:
        raise SystemExit(f"no ablation results under {args.runs}: run bash benchmarks/ablations.sh")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(markdown(report))
    plot(report, args.out.with_suffix(".png"))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
