"""``attnxfer reproduce --curve E1,E2,...``: the schedule curve, which no published work shows.

Top-1 of scratch, fine-tune, copy and distillation, each method's points above the scratch
student, the share of the scratch-to-fine-tune gap that copy and distillation recover, and the
ensemble of the fine-tuned and distilled students, at several training lengths of a
:mod:`attnxfer.reproduce` tier's recipe (epochs of the full training set; a length below 1 is one
pass over that share of it), everything else the tier's. Restartable like the table: every run
is a cell of :mod:`attnxfer.sweep`. Output: ``schedule_curve.{json,md,png}`` in ``--out``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .errors import AttnxferError
from .report import (
    figure,
    gap_on_shared_seeds,
    hardware,
    lead_on_shared_seeds,
    pm,
    provenance,
    summarise,
    table,
    trained_on,
    write_results,
)
from .reproduce import (
    Tier,
    cell_summaries,
    check_teachers,
    ensemble_top1,
    gap_text,
    method_overrides,
    recipe_note,
    take_or_train_again,
    teacher_label,
    tier_named,
)
from .sweep import Cell, finished_runs

log = logging.getLogger(__name__)

#: the rows of the schedule curve
CURVE_METHODS = ("scratch", "finetune", "copy", "distill")
#: warm-up share of every curve length (the tiers' configs use the same 10%)
WARMUP_SHARE = 0.1


def length_overrides(epochs: float, train_images: int) -> list[str]:
    """The config overrides of one training length: ``epochs`` passes over the full training set
    (whole numbers), or, below 1, one pass over a fixed random share of it; warm-up 10%."""
    share = 0 < epochs < 1
    if not share and (epochs < 1 or epochs != int(epochs)):
        raise AttnxferError(
            f"--curve length {epochs:g} is not valid: use whole epochs (2, 5, 10) or a share of "
            "one epoch between 0 and 1 (0.4)"
        )
    if share:
        subset = max(1, round(epochs * train_images))
        passes, warmup = ["data.train_subset=" + str(subset), "optim.epochs=1"], WARMUP_SHARE
    else:
        passes = ["data.train_subset=null", f"optim.epochs={int(epochs)}"]
        warmup = float(round(WARMUP_SHARE * epochs, 6))
    return [*passes, f"optim.warmup_epochs={warmup}"]


def curve_cell(
    tier: Tier, teacher: str, epochs: float, method: str, seed: int, overrides: list[str] = ()
) -> Cell:
    """The run behind one point of the curve: ``method`` trained for ``epochs``
    (:func:`length_overrides`), in the folder ``e{epochs}/{method}/seed{seed}``."""
    return Cell(
        name=f"e{epochs:g}/{method}/seed{seed}",
        configs=[tier.config],
        overrides=method_overrides(
            teacher, method, seed, [*overrides, *length_overrides(epochs, tier.train_images)]
        ),
        labels={"epochs": epochs, "method": method, "seed": seed},
    )


def curve_cells(
    tier_name: str,
    lengths: list[float],
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    teacher: str | None = None,
) -> list[Cell]:
    """The runs behind :func:`schedule_curve`: each of :data:`CURVE_METHODS` at each length, for
    each seed; the teacher and every length are checked before anything trains."""
    tier = tier_named(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    if not lengths:
        raise AttnxferError("--curve needs at least one training length, e.g. 0.4,2,5,10")
    check_teachers([teacher])
    lengths = sorted(set(lengths))
    for epochs in lengths:
        length_overrides(epochs, tier.train_images)
    return [
        curve_cell(tier, teacher, epochs, method, seed, list(overrides))
        for epochs in lengths
        for method in CURVE_METHODS
        for seed in seeds
    ]


def schedule_curve(
    tier_name: str,
    out: Path,
    lengths: list[float],
    seeds: list[int] | None = None,
    overrides: list[str] = (),
    teacher: str | None = None,
    reuse: list[Path] = (),
    finished_only: bool = False,
    command: str = "",
    jobs: int = 1,
) -> dict[str, Any]:
    """Top-1 of :data:`CURVE_METHODS` and the gap copy and distillation recover, at each training
    length of ``lengths`` (see :func:`length_overrides`), over ``seeds``; restartable like the
    table, and ``jobs`` runs at a time like it. A run identical to a finished one under a
    ``reuse`` folder (e.g. the tier's table at its own length) is taken, not trained again.
    Writes ``schedule_curve.{json,md,png}``.

    Each length also gets the ensemble of every seed's fine-tuned and distilled students
    (:func:`_curve_ensemble`; evaluated once, then recorded in the distilled run).

    ``finished_only``: train nothing; report the runs that have finished (a point's method over
    the seeds that finished, a gap only where its scratch and fine-tune rows are there), so a
    curve still being trained can be shown as far as it has come."""

    tier = tier_named(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    cells = curve_cells(tier_name, lengths, seeds, overrides, teacher)
    found = finished_runs(list(reuse))
    if not finished_only:
        found = take_or_train_again(cells, out, found)
    start = time.time()
    points, summaries = [], []
    done = cell_summaries(cells, out, found, finished_only, jobs, "curve: run")
    for epochs in sorted(set(lengths)):
        values: dict[str, dict[int, float]] = {}
        runs: dict[tuple[str, int], Path] = {}
        steps, seconds = set(), 0.0
        for cell in (c for c in cells if c.labels["epochs"] == epochs):
            method, seed = cell.labels["method"], cell.labels["seed"]
            summary = done.get(cell.name)
            if summary is None:
                continue
            values.setdefault(method, {})[seed] = summary["val_top1"]
            summaries.append(summary)
            runs[method, seed] = Path(summary.get("reused_from") or out / cell.name)
            steps.add(summary["steps"])
            seconds += summary["seconds"]
        if not values:
            continue
        row = {m: {**summarise(list(v.values())), "seeds": list(v)} for m, v in values.items()}
        gaps, gap_seeds = {}, {}
        for m in ("copy", "distill"):
            gaps[m], gap_seeds[m] = gap_on_shared_seeds(
                values.get(m, {}), values.get("scratch", {}), values.get("finetune", {})
            )
        leads = {}  # points above the scratch student, beside the share of a narrowing gap
        for m in CURVE_METHODS[1:]:
            if m in values:
                lead, lead_seeds = lead_on_shared_seeds(values[m], values.get("scratch", {}))
                leads[m] = {"points": lead, "seeds": lead_seeds}
        points.append(
            {
                "epochs": epochs,
                "steps": max(steps),
                "train_seconds": seconds,
                "methods": row,
                "gap_recovered": gaps,
                "gap_seeds": gap_seeds,
                "lead_over_scratch": leads,
                **_curve_ensemble(runs, seeds, epochs),
            }
        )
    if not points:
        raise AttnxferError(
            f"no finished run of the curve in {out}: train it without --finished-only"
        )
    report = {
        "tier": tier_name,
        "teacher": teacher,
        "teacher_label": teacher_label(tier, teacher),
        "config": tier.config,
        "overrides": list(overrides),
        "seeds": seeds,
        "train_images": tier.train_images,
        "points": points,
        "finished_only": finished_only,
        "complete": len(summaries) == len(cells),  # every planned run has finished
        "trained_on": trained_on(summaries),
        "hardware": hardware(),
        "command": command,
        "wall_seconds_this_invocation": time.time() - start,
        "train_seconds": sum(p["train_seconds"] for p in points),
    }
    write_results(out, "schedule_curve", report, curve_markdown, plot_curve)
    return report


def _curve_ensemble(runs: dict[tuple[str, int], Path], seeds: list[int], epochs: float) -> dict:
    """``ensemble`` (top-1 of each seed's fine-tuned + distilled pair, :func:`ensemble_top1`) and
    ``ensemble_minus_finetune`` (per seed, against that seed's fine-tuned model) of one curve
    length, over the seeds whose pair has finished and can be evaluated; empty if none can (a
    pair kept only as records, without weights or an ``ensemble.json``, is left out, logged)."""
    top1, minus = [], []
    for seed in seeds:
        if ("finetune", seed) not in runs or ("distill", seed) not in runs:
            continue
        finetune = runs["finetune", seed]
        try:
            value = ensemble_top1(finetune, runs["distill", seed])
        except AttnxferError as e:
            log.warning("curve: %g epochs, seed %d: no ensemble: %s", epochs, seed, e)
            continue
        top1.append(value)
        minus.append(value - json.loads((finetune / "summary.json").read_text())["val_top1"])
    if not top1:
        return {}
    return {"ensemble": summarise(top1), "ensemble_minus_finetune": summarise(minus)}


def curve_markdown(r: dict[str, Any]) -> str:
    lines = [
        f"# Schedule curve ({r['tier']} tier): CIFAR-10, {r.get('teacher_label', 'MAE teacher')}",
        "",
        f"Teacher `{r['teacher']}`; student recipe `{r['config']}`"
        + (f" with `{' '.join(r['overrides'])}`" if r["overrides"] else "")
        + f", at each training length; seeds {', '.join(map(str, r['seeds']))}. Top-1 on the "
        "CIFAR-10 JPEG test set (mean ± std over the seeds finished; a cell on fewer seeds than "
        "its length's most says how many); gap: share of the same length's scratch-to-fine-tune "
        "gap, on the means over the seeds where the method, scratch and fine-tune have all "
        "finished (named where fewer than the method's own).",
        "",
        recipe_note(),
        "",
        *table(
            [
                "epochs",
                "steps",
                "seeds",
                *CURVE_METHODS,
                "copy gap",
                "distill gap",
                "ensemble",
                "ensemble - fine-tune",
            ],
            [
                [
                    f"{p['epochs']:g}",
                    p["steps"],
                    _most_seeds(p),
                    *(_seeds_cell(p["methods"].get(m), _most_seeds(p)) for m in CURVE_METHODS),
                    *(_gap_cell(p, m) for m in ("copy", "distill")),
                    _seeds_cell(p.get("ensemble"), _most_seeds(p)),
                    f"{p['ensemble_minus_finetune']['mean']:+.2f}" if "ensemble" in p else "",
                ]
                for p in r["points"]
            ],
        ),
    ]
    lines += [
        "",
        f"A length below 1 epoch is one pass over that share of the {r['train_images']:,} "
        "training images (a fixed random subset); warm-up is 10% of every schedule. Ensemble: "
        "the fine-tuned and the distilled student of a seed, their softmax outputs averaged; "
        "ensemble - fine-tune: against the same seed's fine-tuned student (mean over seeds)."
        + (
            " **The runs finished so far** (`--finished-only`): a blank cell is a run not "
            "finished yet, and a length's rows may stand on fewer seeds than the others."
            if r.get("finished_only") and not r.get("complete")
            else ""
        ),
        "",
        f"Command: `{r['command']}`  ",
        *provenance(r),
        f"Training time, all runs: {r['train_seconds'] / 60:.1f} min; this invocation: "
        f"{r['wall_seconds_this_invocation'] / 60:.1f} min wall.",
        "",
    ]
    return "\n".join(lines)


def _most_seeds(point: dict[str, Any]) -> int:
    """The most seeds any of a curve point's methods stands on."""
    return max(len(m["runs"]) for m in point["methods"].values())


def _seeds_cell(d: dict[str, Any] | None, most: int) -> str:
    """``mean ± std`` of a curve cell, with its number of seeds where fewer than ``most``."""
    if d is None:
        return ""
    n = len(d["runs"])
    return pm(d) + (f" ({n} seed{'s' if n > 1 else ''})" if n < most else "")


def _gap_cell(point: dict[str, Any], method: str) -> str:
    """A curve point's gap for ``method`` (see :func:`gap_text`)."""
    own = point["methods"].get(method, {}).get("seeds", [])
    return gap_text(point["gap_recovered"][method], point.get("gap_seeds", {}).get(method), own)


def plot_curve(r: dict[str, Any], path: Path) -> None:
    points = r["points"]
    steps = [p["steps"] for p in points]
    with figure(path, 1, 3, figsize=(15, 3.6)) as (_, axes):
        for m in CURVE_METHODS:
            have = [p for p in points if m in p["methods"]]
            means = [p["methods"][m]["mean"] for p in have]
            stds = [p["methods"][m]["std"] for p in have]
            at = [p["steps"] for p in have]
            color = f"C{CURVE_METHODS.index(m)}"  # one colour per method in both panels
            axes[0].errorbar(at, means, yerr=stds, marker="o", capsize=3, label=m, color=color)
        have = [p for p in points if "ensemble" in p]
        if have:
            axes[0].plot(
                [p["steps"] for p in have],
                [p["ensemble"]["mean"] for p in have],
                marker="^",
                ls="--",
                label="ensemble (fine-tune + distill)",
                color=f"C{len(CURVE_METHODS)}",
            )
        axes[0].set_ylabel("CIFAR-10 top-1 (%)")

        def per_point(ax: Any, m: str, values: list[float | None]) -> None:
            ax.plot(
                steps,
                [float("nan") if v is None else v for v in values],
                marker="o",
                label=m,
                color=f"C{CURVE_METHODS.index(m)}",
            )

        axes[1].axhline(0, color="black", lw=0.8)
        for m in CURVE_METHODS[1:]:  # a curve written before the leads were recorded: none
            leads = [p.get("lead_over_scratch", {}).get(m, {}).get("points") for p in points]
            per_point(axes[1], m, leads)
        axes[1].set_ylabel("points above scratch")
        axes[2].axhline(100, color="grey", lw=0.8, ls="--")
        axes[2].axhline(0, color="black", lw=0.8)
        for m in ("copy", "distill"):
            per_point(axes[2], m, [p["gap_recovered"][m] for p in points])
        axes[2].set_ylabel("scratch-to-fine-tune gap recovered (%)")
        for ax in axes:
            ax.set_xscale("log")
            ax.set_xticks(steps, [f"{s:,}" for s in steps])
            ax.minorticks_off()
            ax.set_xlabel("optimiser steps")
            ax.legend(fontsize=8)
        counts = sorted({len(m["runs"]) for p in points for m in p["methods"].values()})
        seeds = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
        axes[0].set_title(
            f"attnxfer, {r['tier']} tier, {r.get('teacher_label', 'MAE teacher')}, "
            f"{seeds} seed{'s' if counts[-1] > 1 else ''}",
            fontsize=10,
        )
