"""``attnxfer reproduce``: the paper's main table at small scale, on CIFAR-10.

Rows: from scratch, fine-tune, attention copy, attention distillation, feature distillation
(the knowledge-distillation baseline) and the ensemble of the fine-tuned model with the distilled
student, each over several seeds (mean and sample standard deviation), with the fraction of the
scratch-to-fine-tune gap each method recovers, beside the paper's ImageNet numbers.

``--shift``: the same transfer rows with a teacher pre-trained on other data (Tiny-ImageNet), and
the fine-tuned against the distilled students on corrupted CIFAR-10 test sets
(``attnxfer prepare cifar10-c``).

``--curve E1,E2,...`` (:func:`schedule_curve`): instead of the table, top-1 of scratch, fine-tune,
copy and distillation, the gap that copy and distillation recover, and the ensemble of the
fine-tuned and distilled students at several training lengths (epochs of the full training set; a
length below 1 is one pass over that share of it), the recipe otherwise the tier's.

Every training run is a cell of :mod:`attnxfer.sweep` (finished cells are skipped, interrupted ones
resumed), so the command is restartable. Output: ``results.json``, ``results.md``,
``results.png`` in ``--out``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import checkpoint as C
from .errors import AttnxferError
from .report import (
    figure,
    gap_on_shared_seeds,
    gap_recovered,
    hardware,
    lead_on_shared_seeds,
    mean_std,
    pm,
    provenance,
    summarise,
    table,
    trained_on,
    write_results,
)
from .sweep import Cell, finished_cell, finished_runs, identical_run, run_cells

log = logging.getLogger(__name__)

#: the paper's ImageNet-1K top-1 (ViT-L/16, MAE teacher), docs/method.md
PAPER = {
    "scratch": 83.0,
    "finetune": 85.7,
    "copy": 85.1,
    "distill": 85.7,
    "feature_distill": 81.3,
    "ensemble": 86.3,
}
METHODS = ("scratch", "finetune", "copy", "distill", "feature_distill")
#: per-method recipe differences on top of the tier's shared student config (as in the paper:
#: layer-wise lr decay for fine-tuning and copy, none for distillation)
METHOD_OVERRIDES = {
    "scratch": ["transfer.mode=scratch"],
    "finetune": ["transfer.mode=finetune", "optim.layer_decay=0.75"],
    "copy": ["transfer.mode=copy", "optim.layer_decay=0.75"],
    "distill": ["transfer.mode=distill"],
    "feature_distill": ["transfer.mode=feature_distill"],
}
SHIFT_METHODS = ("finetune", "copy", "distill")


def recipe_note() -> str:
    """The rows' recipe differences, for a report: from :data:`METHOD_OVERRIDES`."""
    differ = {
        m: [o for o in overrides if not o.startswith("transfer.mode=")]
        for m, overrides in METHOD_OVERRIDES.items()
    }
    stated = "; ".join(f"{m} `{' '.join(o)}`" for m, o in differ.items() if o)
    return (
        f"Each row is the shared recipe with its transfer mode, and only the paper's own recipe "
        f"differences: {stated} (the layer-wise lr decay of the released fine-tuning and copy "
        "recipes); the other rows none. Everything else is shared, where the released ImageNet "
        "recipes also differ in length, weight decay, AdamW betas, drop path and minimum lr "
        "(docs/method.md)."
    )


@dataclass(frozen=True)
class Tier:
    config: str  # the shared student recipe
    teacher: str  # the in-distribution teacher (CIFAR-10 MAE)
    shift_teacher: str  # the teacher pre-trained on other data (Tiny-ImageNet MAE)
    seeds: tuple[int, ...]
    note: str
    train_images: int = 50_000  # size of the full training set (CIFAR-10), for --curve


TIERS = {
    "cpu": Tier(
        config="configs/cifar10/student_cpu.yaml",
        teacher="teachers/cifar10-mae-d128-l4/model.safetensors",
        shift_teacher="teachers/tinyimagenet-mae-d128-l4/model.safetensors",
        seeds=(0, 1, 2),
        note="2-core CPU, about 45 minutes for the main table",
    ),
    "cpu-long": Tier(
        config="configs/cifar10/student_cpu_long.yaml",
        teacher="teachers/cifar10-mae-d128-l4-e200/model.safetensors",
        shift_teacher="teachers/tinyimagenet-mae-d128-l4-e100/model.safetensors",
        seeds=(0, 1, 2),
        note="2-core CPU, 25x the cpu tier's steps with a 20x longer pre-trained teacher, "
        "about 6 hours for the main table",
    ),
    "gpu": Tier(
        config="configs/cifar10/student_gpu.yaml",
        teacher="teachers/cifar10-mae-d128-l4/model.safetensors",
        shift_teacher="teachers/tinyimagenet-mae-d128-l4/model.safetensors",
        seeds=(0, 1, 2, 3, 4),
        note="one GPU: full training set, longer schedule, five seeds",
    ),
}


def _cells(tier: Tier, teacher: str, label: str, methods: tuple[str, ...], seeds, extra):
    cells = []
    for method in methods:
        for seed in seeds:
            where = "scratch" if method == "scratch" else f"{label}/{method}"
            cells.append(
                Cell(
                    name=f"{where}/seed{seed}",
                    configs=[tier.config],
                    # scratch gets the teacher only for its architecture (fresh weights)
                    overrides=[
                        f"teacher.source={teacher}",
                        *METHOD_OVERRIDES[method],
                        f"run.seed={seed}",
                        *extra,
                    ],
                    labels={"teacher": label, "method": method, "seed": seed},
                )
            )
    return cells


def _tier(name: str) -> Tier:
    tier = TIERS.get(name)
    if tier is None:
        raise AttnxferError(f"unknown tier {name!r}: choose {', '.join(TIERS)}")
    if not Path(tier.config).is_file():
        raise AttnxferError(
            f"{tier.config} not found: run attnxfer reproduce from the repository's root folder"
        )
    return tier


def teacher_label(tier: Tier, teacher: str) -> str:
    """How a report names its teacher: the tier's own is the CIFAR-10 MAE teacher, any other goes
    by its file (the folder's name for a ``.../model.safetensors``)."""
    if teacher == tier.teacher:
        return "MAE teacher"
    path = Path(teacher)
    return f"teacher {path.parent.name if path.stem == 'model' else path.stem}"


def _check_teachers(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).is_file():
            raise AttnxferError(
                f"teacher {path} does not exist; make it with attnxfer pretrain (see "
                "teachers/README.md) or pass --teacher"
            )


def planned_cells(
    tier_name: str,
    seeds: list[int] | None = None,
    shift: bool = False,
    overrides: list[str] = (),
    teacher: str | None = None,
    shift_teacher: str | None = None,
    lengths: list[float] | None = None,
) -> list[Cell]:
    """The runs behind :func:`reproduce`'s table, or, given ``lengths``, behind
    :func:`schedule_curve`; the teachers and the lengths are checked first."""
    tier = _tier(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    if lengths is not None:
        if not lengths:
            raise AttnxferError("--curve needs at least one training length, e.g. 0.4,2,5,10")
        _check_teachers([teacher])
        lengths = sorted(set(lengths))
        for epochs in lengths:  # every length checked before anything trains
            length_overrides(epochs, tier.train_images)
        return [
            curve_cell(tier, teacher, epochs, method, seed, list(overrides))
            for epochs in lengths
            for method in CURVE_METHODS
            for seed in seeds
        ]
    shift_teacher = shift_teacher or tier.shift_teacher
    _check_teachers([teacher, *([shift_teacher] if shift else [])])
    cells = _cells(tier, teacher, "cifar10_mae", METHODS, seeds, list(overrides))
    if shift:
        cells += _cells(tier, shift_teacher, "tiny_mae", SHIFT_METHODS, seeds, list(overrides))
    return cells


def _summaries(
    cells: list[Cell], out: Path, found: dict[str, Path], finished_only: bool, jobs: int, what: str
) -> dict[str, dict[str, Any]]:
    """The summaries of a table's or curve's cells by name: each trained (or taken) by
    :func:`attnxfer.sweep.run_cells`, ``jobs`` at a time, or with ``finished_only`` only those
    that have finished."""
    if not finished_only:
        return run_cells(cells, out, found, jobs, what)
    done = {cell.name: finished_cell(cell, out, found) for cell in cells}
    return {name: summary for name, summary in done.items() if summary is not None}


def reproduce(
    tier_name: str,
    out: Path,
    seeds: list[int] | None = None,
    shift: bool = False,
    overrides: list[str] = (),
    teacher: str | None = None,
    shift_teacher: str | None = None,
    cache: str = "~/.cache/attnxfer",
    reuse: list[Path] = (),
    finished_only: bool = False,
    command: str = "",
    jobs: int = 1,
) -> dict[str, Any]:
    """Train (or take) every cell of the table, ``jobs`` at a time
    (:func:`attnxfer.sweep.run_cells`), then write ``results.{json,md,png}``. A cell identical to
    a finished run under a ``reuse`` folder is taken, not trained again (e.g. the records
    :func:`attnxfer.sweep.keep_records` keeps of an earlier checkout's runs).

    ``finished_only``: train nothing; tabulate the runs that have finished (each row over the
    seeds that finished, its gap against scratch and fine-tune on those seeds, the ensemble of
    each seed whose pair is there), so a table still being trained can be shown as far as it has
    come. Not with ``shift``, whose corrupted-set evaluation needs every run."""

    if finished_only and shift:
        raise AttnxferError("--finished-only tabulates the in-distribution rows: drop --shift")
    tier = _tier(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    cells = planned_cells(tier_name, seeds, shift, overrides, teacher, shift_teacher)
    found = finished_runs(list(reuse))
    if not finished_only:
        found = _train_weightless_members(cells, out, found)
    start = time.time()
    results: dict[tuple[str, str], dict[int, float]] = {}
    runs: dict[tuple[str, str, int], Path] = {}
    summaries = []
    done = _summaries(cells, out, found, finished_only, jobs, "reproduce: run")
    for cell in cells:
        summary = done.get(cell.name)
        if summary is None:
            continue
        summaries.append(summary)
        label, method, seed = (cell.labels[k] for k in ("teacher", "method", "seed"))
        results.setdefault((label, method), {})[seed] = summary["val_top1"]
        runs[label, method, seed] = Path(summary.get("reused_from") or out / cell.name)
    if not summaries:
        raise AttnxferError(
            f"no finished run of the table in {out}: train it without --finished-only"
        )

    ens: dict[int, float] = {}
    no_ensemble = []
    for seed in seeds:
        pair = [runs.get(("cifar10_mae", m, seed)) for m in ("finetune", "distill")]
        if None in pair:
            continue  # (finished_only) a member has not finished yet
        try:
            ens[seed] = ensemble_top1(*pair)
        except AttnxferError as e:  # a pair taken from records without weights: left out
            log.warning("reproduce: seed %d: no ensemble: %s", seed, e)
            no_ensemble.append(seed)

    rows = []
    for method in (*METHODS, "ensemble"):
        values = ens if method == "ensemble" else results.get(("cifar10_mae", method), {})
        if not values:
            continue
        row = {
            "method": method,
            **summarise(list(values.values())),
            "seeds": list(values),
            "paper_top1": PAPER[method],
        }
        row["gap_recovered"], row["gap_seeds"] = gap_on_shared_seeds(
            values, *(results.get(("cifar10_mae", m), {}) for m in ("scratch", "finetune"))
        )
        row["paper_gap_recovered"] = gap_recovered(
            PAPER[method], PAPER["scratch"], PAPER["finetune"]
        )
        rows.append(row)
    report: dict[str, Any] = {
        "tier": tier_name,
        "tier_note": tier.note,
        "teacher": teacher,
        "teacher_label": teacher_label(tier, teacher),
        "config": tier.config,
        "overrides": list(overrides),
        "seeds": seeds,
        "rows": rows,
        "no_ensemble_seeds": no_ensemble,
        "finished_only": finished_only,
        "complete": len(summaries) == len(cells),  # every planned run has finished
    }
    if shift:
        shift_teacher = shift_teacher or tier.shift_teacher
        values = {key: list(v.values()) for key, v in results.items()}
        report["shift"] = _shift(out, values, seeds, shift_teacher, Path(cache).expanduser())
    report["trained_on"] = trained_on(summaries)
    report["hardware"] = hardware()
    report["command"] = command
    report["wall_seconds_this_invocation"] = time.time() - start
    report["train_seconds"] = sum(s["seconds"] for s in summaries)
    write_results(out, "results", report, markdown, plot)
    return report


def ensemble_top1(finetune: Path, distill: Path) -> float:
    """Top-1 of the ensemble of a fine-tuned and a distilled model (their softmax outputs
    averaged), recorded in the distilled run's ``ensemble.json`` with both members' own top-1, so
    that the records of the two runs, kept without their weights, still give it. A record whose
    members' top-1 differ from the runs' (a member trained again) is recomputed."""
    from .inference import evaluate_models

    runs = [finetune, distill]
    kept = _kept_ensemble(finetune, distill)
    if kept is not None:
        return kept
    if not all(C.list_checkpoints(r) for r in runs):
        raise AttnxferError(
            f"the ensemble of {finetune} and {distill} needs both models' checkpoints (their "
            "records hold no weights): train them again in one folder, e.g. without --reuse"
        )
    top1 = evaluate_models(runs, ensemble=True, batch_size=256)["ensemble"]["val"]["top1"]
    members = [_top1(r) for r in runs]
    (distill / "ensemble.json").write_text(
        json.dumps({"members": [str(r) for r in runs], "members_top1": members, "top1": top1})
    )
    return top1


def _top1(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["val_top1"]


def _kept_ensemble(finetune: Path, distill: Path) -> float | None:
    """The ensemble top-1 recorded in ``distill``'s ``ensemble.json`` if it is the ensemble of
    these two runs (its members' top-1 are theirs), else None."""
    record = distill / "ensemble.json"
    if not record.is_file():
        return None
    kept = json.loads(record.read_text())
    return kept["top1"] if kept["members_top1"] == [_top1(finetune), _top1(distill)] else None


def _ensemble_pairs(cells: list[Cell]) -> list[tuple[Cell, Cell]]:
    """The fine-tune and distill cells whose ensemble a table or curve reports: those of the main
    teacher that share every other label (seed, and length on the curve)."""
    pairs: dict[tuple, dict[str, Cell]] = {}
    for cell in cells:
        labels = dict(cell.labels)
        method = labels.pop("method")
        if (
            method in ("finetune", "distill")
            and labels.get("teacher", "cifar10_mae") == "cifar10_mae"
        ):
            pairs.setdefault(tuple(sorted(labels.items())), {})[method] = cell
    return [(p["finetune"], p["distill"]) for p in pairs.values() if len(p) == 2]


def _corruption_members(cells: list[Cell]) -> list[Cell]:
    """With the shift rows among ``cells`` (a ``tiny_mae`` cell): the fine-tune and distill cells
    of both teachers, whose models :func:`_shift` evaluates on the corrupted test sets."""
    if not any(c.labels.get("teacher") == "tiny_mae" for c in cells):
        return []
    return [c for c in cells if c.labels.get("method") in ("finetune", "distill")]


def weightless_members(cells: list[Cell], out: Path, found: dict[str, Path]) -> dict[str, Path]:
    """The cells that must be trained under ``out`` although a finished run stands for them
    elsewhere, by cell name, with that run: runs taken from elsewhere (a record in ``found``, or
    one an earlier invocation linked at the cell's place under ``out``) that hold no weights
    where the report must evaluate their model.

    That is a fine-tuned or distilled run of the ensemble, unless the pair's ``ensemble.json``
    already holds the ensemble of the two runs; and, with the shift rows, a fine-tuned or
    distilled run of either teacher, unless its ``corruptions.json`` holds its top-1 on the
    corrupted sets. Nothing is written."""
    retrain = {}
    for pair in _ensemble_pairs(cells):
        taken = [_taken_from(cell, out, found) for cell in pair]
        here = [out / c.name if (out / c.name / "summary.json").is_file() else None for c in pair]
        runs = [t or h for t, h in zip(taken, here, strict=True)]
        if None not in runs and _kept_ensemble(*runs) is not None:
            continue
        retrain.update(
            {c.name: r for c, r in zip(pair, taken, strict=True) if r and not C.list_checkpoints(r)}
        )
    for cell in _corruption_members(cells):
        run = _taken_from(cell, out, found)
        if run and not C.list_checkpoints(run) and not (run / "corruptions.json").is_file():
            retrain[cell.name] = run
    return retrain


def _train_weightless_members(cells: list[Cell], out: Path, found: dict[str, Path]):
    """``found`` without the runs of :func:`weightless_members`, whose cells are then trained:
    the links an earlier invocation left at their places are removed (the runs they pointed to
    are left as they are)."""
    retrain = weightless_members(cells, out, found)
    for name, run in retrain.items():
        log.info("%s: %s holds no weights, which the report evaluates: trained here", name, run)
        if (out / name).is_symlink():
            (out / name).unlink()
    dropped = {run.resolve() for run in retrain.values()}
    return {key: run for key, run in found.items() if run.resolve() not in dropped}


def _taken_from(cell: Cell, out: Path, found: dict[str, Path]) -> Path | None:
    """The finished run, from elsewhere, that stands for ``cell``: the one an earlier invocation
    linked at its place under ``out``, else an identical one in ``found``; None when
    the cell is trained, or being trained, under ``out``."""
    here = out / cell.name
    if here.is_symlink() and (here / "summary.json").is_file():
        return here.resolve()
    if here.exists() and not here.is_symlink():
        return None
    return identical_run(cell, found)


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
        overrides=[
            f"teacher.source={teacher}",
            *METHOD_OVERRIDES[method],
            f"run.seed={seed}",
            *overrides,
            *length_overrides(epochs, tier.train_images),
        ],
        labels={"epochs": epochs, "method": method, "seed": seed},
    )


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

    tier = _tier(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    cells = planned_cells(tier_name, seeds, overrides=overrides, teacher=teacher, lengths=lengths)
    found = finished_runs(list(reuse))
    if not finished_only:
        found = _train_weightless_members(cells, out, found)
    start = time.time()
    points, summaries = [], []
    done = _summaries(cells, out, found, finished_only, jobs, "curve: run")
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
    """A curve point's gap for ``method`` (see :func:`_gap_text`)."""
    own = point["methods"].get(method, {}).get("seeds", [])
    return _gap_text(point["gap_recovered"][method], point.get("gap_seeds", {}).get(method), own)


def _gap_text(gap: float | None, seeds: list[int] | None, own: list[int]) -> str:
    """A gap in percent, naming the seeds it stands on where they are fewer than the row's own
    ``own`` (a seed whose scratch or fine-tune student has not finished)."""
    if gap is None or seeds is None or len(seeds) >= len(own):
        return _percent(gap)
    return f"{_percent(gap)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def _percent(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}%"


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
        axes[1].axhline(0, color="black", lw=0.8)
        for m in CURVE_METHODS[1:]:  # a curve written before the leads were recorded: none
            leads = [p.get("lead_over_scratch", {}).get(m, {}).get("points") for p in points]
            axes[1].plot(
                steps,
                [float("nan") if v is None else v for v in leads],
                marker="o",
                label=m,
                color=f"C{CURVE_METHODS.index(m)}",
            )
        axes[1].set_ylabel("points above scratch")
        axes[2].axhline(100, color="grey", lw=0.8, ls="--")
        axes[2].axhline(0, color="black", lw=0.8)
        for m in ("copy", "distill"):
            gaps = [p["gap_recovered"][m] for p in points]
            axes[2].plot(
                steps,
                [float("nan") if g is None else g for g in gaps],
                marker="o",
                label=m,
                color=f"C{CURVE_METHODS.index(m)}",
            )
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


def _shift(out: Path, results: dict, seeds: list[int], teacher: str, cache: Path) -> dict[str, Any]:
    from .inference import evaluate_models
    from .prepare import cifar10_c

    rows = []
    for label in ("cifar10_mae", "tiny_mae"):
        ft = mean_std(results[(label, "finetune")])[0]
        for method in SHIFT_METHODS:
            row = {"teacher": label, "method": method, **summarise(results[(label, method)])}
            row["gap_to_finetune"] = row["mean"] - ft
            rows.append(row)
    sets = {p.name: ("imagefolder", str(p)) for p in cifar10_c(cache)}
    corrupted: dict[str, Any] = {}
    for label in ("cifar10_mae", "tiny_mae"):
        for method in ("finetune", "distill"):
            per_seed = []
            for seed in seeds:
                run = out / label / method / f"seed{seed}"
                cached = run / "corruptions.json"
                if cached.is_file():
                    per_seed.append(json.loads(cached.read_text()))
                    continue
                r = evaluate_models([run], sets=sets, split="test", batch_size=256)
                accs = {k: v["top1"] for k, v in next(iter(r.values())).items()}
                cached.write_text(json.dumps(accs))
                per_seed.append(accs)
            clean = results[(label, method)]
            by_severity: dict[str, list[float]] = {}
            for accs in per_seed:
                for severity in sorted({k.rsplit("-", 1)[1] for k in accs}):
                    vals = [v for k, v in accs.items() if k.endswith(f"-{severity}")]
                    by_severity.setdefault(severity, []).append(sum(vals) / len(vals))
            corrupted[f"{label}/{method}"] = {
                "clean": summarise(clean),
                "severity": {s: summarise(v) for s, v in by_severity.items()},
                "per_set": {k: summarise([a[k] for a in per_seed]) for k in sorted(per_seed[0])},
            }
    return {"teacher": teacher, "rows": rows, "corruptions": corrupted, "sets": sorted(sets)}


def markdown(r: dict[str, Any]) -> str:
    n = len(r["seeds"])
    lines = [
        f"# Small-scale reproduction ({r['tier']} tier): CIFAR-10, "
        f"{r.get('teacher_label', 'MAE teacher')}",
        "",
        f"Teacher `{r['teacher']}`; student recipe `{r['config']}`"
        + (f" with `{' '.join(r['overrides'])}`" if r["overrides"] else "")
        + f"; {n} seeds ({', '.join(map(str, r['seeds']))}). Top-1 on the CIFAR-10 JPEG test "
        "set (10,000 images; JPEG costs about 2 points against the lossless originals).",
        "",
        recipe_note(),
        "",
        *table(
            [
                "method",
                "top-1 (mean ± std)",
                "gap recovered",
                "paper top-1 (ImageNet, ViT-L)",
                "paper gap",
            ],
            [
                [
                    row["method"]
                    + (f" ({len(row['runs'])} of {n} seeds)" if len(row["runs"]) != n else ""),
                    pm(row),
                    _gap_text(row["gap_recovered"], row.get("gap_seeds"), row["seeds"]),
                    f"{row['paper_top1']:.1f}",
                    _percent(row["paper_gap_recovered"], 1),
                ]
                for row in r["rows"]
            ],
        ),
    ]
    lines += [
        "",
        "Gap recovered: (method - scratch) / (fine-tune - scratch), on the means over the "
        "row's seeds."
        + (
            " **The runs finished so far** (`--finished-only`): a row may stand on fewer seeds "
            "than the others (its seeds are in the JSON); its gap is measured on the seeds where "
            "it, scratch and fine-tune have all finished (named where fewer than its own), and "
            "left blank where there is none."
            if r.get("finished_only") and not r.get("complete")
            else ""
        ),
    ]
    if r.get("no_ensemble_seeds"):
        lines += [
            "",
            f"No ensemble for seed(s) {', '.join(map(str, r['no_ensemble_seeds']))}: the "
            "fine-tuned or the distilled student was taken from a record kept without weights; "
            "train both in one folder to evaluate it.",
        ]
    if "shift" in r:
        s = r["shift"]
        lines += [
            "",
            "## Distribution shift: teacher pre-trained on Tiny-ImageNet instead of CIFAR-10",
            "",
            f"Teacher `{s['teacher']}`, same students and recipe.",
            "",
            *table(
                ["teacher", "method", "top-1 (mean ± std)", "minus fine-tune"],
                [
                    [row["teacher"], row["method"], pm(row), f"{row['gap_to_finetune']:+.2f}"]
                    for row in s["rows"]
                ],
            ),
        ]
        severities = sorted(next(iter(s["corruptions"].values()))["severity"])
        lines += [
            "",
            "## Corrupted CIFAR-10 test sets (imagecorruptions, fixed seed)",
            "",
            f"Sets: {', '.join(s['sets'])} (1,000 test images each). Mean top-1 over the "
            "corruption types, per severity.",
            "",
            *table(
                [
                    "model",
                    "clean",
                    *(f"severity {v}" for v in severities),
                    f"drop at severity {severities[-1]}",
                ],
                [
                    [
                        name,
                        pm(c["clean"]),
                        *(pm(c["severity"][v]) for v in severities),
                        f"{c['clean']['mean'] - c['severity'][severities[-1]]['mean']:.2f}",
                    ]
                    for name, c in s["corruptions"].items()
                ],
            ),
        ]
    minutes = r["train_seconds"] / 60
    lines += [
        "",
        f"Command: `{r['command']}`  ",
        *provenance(r),
        f"Training time, all runs: {minutes:.1f} min; this invocation: "
        f"{r['wall_seconds_this_invocation'] / 60:.1f} min wall.",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    with figure(path, 1, 3, figsize=(15, 3.6)) as (_, axes):
        rows = r["rows"]
        counts = [len(row["runs"]) for row in rows]
        whole = set(counts) == {len(r["seeds"])}
        names = [
            row["method"] + ("" if whole else f" ({n})")
            for row, n in zip(rows, counts, strict=True)
        ]
        x = range(len(rows))
        axes[0].bar(x, [row["mean"] for row in rows], yerr=[row["std"] for row in rows], capsize=3)
        axes[0].set_xticks(x, names, rotation=25, ha="right")
        axes[0].set_ylabel("CIFAR-10 top-1 (%)")
        low = min(row["mean"] - row["std"] for row in rows)
        axes[0].set_ylim(max(0, low - 5), None)
        seeds = f"{len(r['seeds'])} seeds" if whole else "runs finished so far (seeds per row)"
        axes[0].set_title(f"attnxfer, {r['tier']} tier, {seeds}", fontsize=10)
        gaps = [(row["method"], row["gap_recovered"], row["paper_gap_recovered"]) for row in rows]
        gaps = [g for g in gaps if g[0] not in ("scratch", "finetune") and g[1] is not None]
        w = 0.38
        xs = range(len(gaps))
        axes[1].bar([i - w / 2 for i in xs], [g[1] for g in gaps], w, label="attnxfer (CIFAR-10)")
        axes[1].bar([i + w / 2 for i in xs], [g[2] for g in gaps], w, label="paper (ImageNet)")
        axes[1].axhline(100, color="grey", lw=0.8, ls="--")
        axes[1].axhline(0, color="black", lw=0.8)
        axes[1].set_xticks(list(xs), [g[0] for g in gaps], rotation=25, ha="right")
        axes[1].set_ylabel("scratch-to-fine-tune gap recovered (%)")
        axes[1].legend(fontsize=8)
