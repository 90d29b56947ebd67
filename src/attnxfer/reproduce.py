"""``attnxfer reproduce``: the paper's main table at small scale, on CIFAR-10.

Rows: from scratch, fine-tune, attention copy, attention distillation, feature distillation
(the knowledge-distillation baseline) and the ensemble of the fine-tuned model with the distilled
student, each over several seeds (mean and sample standard deviation), with the fraction of the
scratch-to-fine-tune gap each method recovers, beside the paper's ImageNet numbers.

``--shift``: the same transfer rows with a teacher pre-trained on other data (Tiny-ImageNet), and
the fine-tuned against the distilled students on corrupted CIFAR-10 test sets
(``attnxfer prepare cifar10-c``).

``--curve E1,E2,...``: instead of the table, the schedule curve (:mod:`attnxfer.curve`), on
the tiers, cells and helpers defined here.

Every training run is a cell of :mod:`attnxfer.sweep` (finished cells are skipped, interrupted ones
resumed), so the command is restartable. Output: ``results.json``, ``results.md``,
``results.png`` in ``--out``.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
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


def method_overrides(teacher: str, method: str, seed: int, extra: list[str] = ()) -> list[str]:
    """The overrides of one student of a table or curve on the tier's config: its teacher (a
    scratch student takes only its architecture, with fresh weights), its method's recipe
    (:data:`METHOD_OVERRIDES`), its seed, then ``extra``."""
    return [f"teacher.source={teacher}", *METHOD_OVERRIDES[method], f"run.seed={seed}", *extra]


def _cells(tier: Tier, teacher: str, label: str, methods: tuple[str, ...], seeds, extra):
    cells = []
    for method in methods:
        for seed in seeds:
            where = "scratch" if method == "scratch" else f"{label}/{method}"
            cells.append(
                Cell(
                    name=f"{where}/seed{seed}",
                    configs=[tier.config],
                    overrides=method_overrides(teacher, method, seed, extra),
                    labels={"teacher": label, "method": method, "seed": seed},
                )
            )
    return cells


def tier_named(name: str) -> Tier:
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


def check_teachers(paths: list[str]) -> None:
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
) -> list[Cell]:
    """The runs behind :func:`reproduce`'s table; the teachers are checked first."""
    tier = tier_named(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    shift_teacher = shift_teacher or tier.shift_teacher
    check_teachers([teacher, *([shift_teacher] if shift else [])])
    cells = _cells(tier, teacher, "cifar10_mae", METHODS, seeds, list(overrides))
    if shift:
        cells += _cells(tier, shift_teacher, "tiny_mae", SHIFT_METHODS, seeds, list(overrides))
    return cells


def cell_summaries(
    cells: list[Cell],
    out: Path,
    found: dict[str, Path],
    finished_only: bool,
    jobs: int,
    what: str,
    cache: Path = Path("~/.cache/attnxfer"),
) -> dict[str, dict[str, Any]]:
    """The summaries of a table's or curve's cells by name: each trained (or taken) by
    :func:`attnxfer.sweep.run_cells`, ``jobs`` at a time, with what the report measures on
    its weights measured as soon as it has finished (:func:`measure_on_weights`); or with
    ``finished_only`` only those that have finished."""
    if not finished_only:
        after = measure_on_weights(cells, out, Path(cache).expanduser())
        return run_cells(cells, out, found, jobs, what, after)
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
    tier = tier_named(tier_name)
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    cells = planned_cells(tier_name, seeds, shift, overrides, teacher, shift_teacher)
    found = finished_runs(list(reuse))
    if not finished_only:
        found = take_or_train_again(cells, out, found)
    start = time.time()
    results: dict[tuple[str, str], dict[int, float]] = {}
    runs: dict[tuple[str, str, int], Path] = {}
    summaries = []
    done = cell_summaries(cells, out, found, finished_only, jobs, "reproduce: run", cache)
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


def take_or_train_again(cells: list[Cell], out: Path, found: dict[str, Path]):
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


def gap_text(gap: float | None, seeds: list[int] | None, own: list[int]) -> str:
    """A gap in percent, naming the seeds it stands on where they are fewer than the row's own
    ``own`` (a seed whose scratch or fine-tune student has not finished)."""
    if gap is None or seeds is None or len(seeds) >= len(own):
        return percent(gap)
    return f"{percent(gap)} (seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))})"


def percent(value: float | None, digits: int = 0) -> str:
    return "" if value is None else f"{value:.{digits}f}%"


def measure_on_weights(cells: list[Cell], out: Path, cache: Path) -> Callable[[Cell, Path], None]:
    """What the report of ``cells`` measures on a finished run's weights, for
    :func:`attnxfer.sweep.run_cells` to measure as soon as the run under ``out`` has finished,
    so that its kept records hold it once the weights are gone (a later session on another
    machine): a fine-tuned or distilled run's top-1 on the corrupted sets, with the shift rows
    (``corruptions.json``), and the ensemble of a fine-tuned and distilled pair once both are
    finished with their weights (``ensemble.json``). One measurement at a time."""
    members = {cell.name for cell in _corruption_members(cells)}
    pairs = {cell.name: pair for pair in _ensemble_pairs(cells) for cell in pair}
    lock = threading.Lock()

    def after(cell: Cell, run: Path) -> None:
        if not C.list_checkpoints(run):
            return
        with lock:
            if cell.name in members:
                corrupted_top1(run, cache)
            if cell.name in pairs:
                runs = [out / c.name for c in pairs[cell.name]]
                if all((r / "summary.json").is_file() and C.list_checkpoints(r) for r in runs):
                    ensemble_top1(*runs)

    return after


def corrupted_top1(run: Path, cache: Path) -> dict[str, float]:
    """Top-1 of ``run``'s model on each corrupted CIFAR-10 test set
    (:func:`attnxfer.prepare.cifar10_c`, made in ``cache`` on first use), by set name: evaluated
    once, then recorded in the run's ``corruptions.json``."""
    from .inference import evaluate_models
    from .prepare import cifar10_c

    record = run / "corruptions.json"
    if record.is_file():
        return json.loads(record.read_text())
    sets = {p.name: ("imagefolder", str(p)) for p in cifar10_c(cache)}
    r = evaluate_models([run], sets=sets, split="test", batch_size=256)
    accs = {k: v["top1"] for k, v in next(iter(r.values())).items()}
    partial = record.with_suffix(".json.partial")
    partial.write_text(json.dumps(accs))
    partial.replace(record)  # a run never holds half a record
    return accs


def _shift(out: Path, results: dict, seeds: list[int], teacher: str, cache: Path) -> dict[str, Any]:
    from .prepare import cifar10_c

    rows = []
    for label in ("cifar10_mae", "tiny_mae"):
        ft = mean_std(results[(label, "finetune")])[0]
        for method in SHIFT_METHODS:
            row = {"teacher": label, "method": method, **summarise(results[(label, method)])}
            row["gap_to_finetune"] = row["mean"] - ft
            rows.append(row)
    sets = [p.name for p in cifar10_c(cache)]
    corrupted: dict[str, Any] = {}
    for label in ("cifar10_mae", "tiny_mae"):
        for method in ("finetune", "distill"):
            per_seed = [
                corrupted_top1(out / label / method / f"seed{seed}", cache) for seed in seeds
            ]
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
                    gap_text(row["gap_recovered"], row.get("gap_seeds"), row["seeds"]),
                    f"{row['paper_top1']:.1f}",
                    percent(row["paper_gap_recovered"], 1),
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
