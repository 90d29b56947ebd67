"""``attnxfer reproduce``: the paper's main table at small scale, on CIFAR-10.

Rows: from scratch, fine-tune, attention copy, attention distillation, feature distillation
(the knowledge-distillation baseline) and the ensemble of the fine-tuned model with the distilled
student, each over several seeds (mean and sample standard deviation), with the fraction of the
scratch-to-fine-tune gap each method recovers, beside the paper's ImageNet numbers.

``--shift``: the same transfer rows with a teacher pre-trained on other data (Tiny-ImageNet), and
the fine-tuned against the distilled students on corrupted CIFAR-10 test sets
(``attnxfer prepare cifar10-c``).

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

from .errors import AttnxferError
from .sweep import Cell, hardware, mean_std, run_cell

log = logging.getLogger(__name__)

#: the paper's ImageNet-1K top-1 (ViT-L/16, MAE teacher), METHOD.md
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


@dataclass(frozen=True)
class Tier:
    config: str  # the shared student recipe
    teacher: str  # the in-distribution teacher (CIFAR-10 MAE)
    shift_teacher: str  # the teacher pre-trained on other data (Tiny-ImageNet MAE)
    seeds: tuple[int, ...]
    note: str


TIERS = {
    "cpu": Tier(
        config="configs/cifar10/student_cpu.yaml",
        teacher="teachers/cifar10-mae-d128-l4/model.safetensors",
        shift_teacher="teachers/tinyimagenet-mae-d128-l4/model.safetensors",
        seeds=(0, 1, 2),
        note="2-core CPU, about 45 minutes for the main table",
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


def _summarise(values: list[float]) -> dict[str, Any]:
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "runs": values}


def _gap(value: float, scratch: float, finetune: float) -> float | None:
    return None if finetune == scratch else 100 * (value - scratch) / (finetune - scratch)


def reproduce(
    tier_name: str,
    out: Path,
    seeds: list[int] | None = None,
    shift: bool = False,
    overrides: list[str] = (),
    teacher: str | None = None,
    shift_teacher: str | None = None,
    cache: str = "~/.cache/attnxfer",
    command: str = "",
) -> dict[str, Any]:
    from .inference import evaluate_models

    tier = TIERS.get(tier_name)
    if tier is None:
        raise AttnxferError(f"unknown tier {tier_name!r}: choose {', '.join(TIERS)}")
    if not Path(tier.config).is_file():
        raise AttnxferError(
            f"{tier.config} not found: run attnxfer reproduce from the repository's root folder"
        )
    seeds = list(seeds or tier.seeds)
    teacher = teacher or tier.teacher
    paths = [teacher] + ([shift_teacher or tier.shift_teacher] if shift else [])
    for path in paths:
        if not Path(path).is_file():
            raise AttnxferError(
                f"teacher {path} does not exist; make it with attnxfer pretrain (see "
                "teachers/README.md) or pass --teacher"
            )
    start = time.time()
    cells = _cells(tier, teacher, "cifar10_mae", METHODS, seeds, list(overrides))
    if shift:
        cells += _cells(tier, paths[1], "tiny_mae", SHIFT_METHODS, seeds, list(overrides))
    results: dict[tuple[str, str], list[float]] = {}
    for i, cell in enumerate(cells, 1):
        log.info("reproduce: run %d/%d (%s)", i, len(cells), cell.name)
        summary = run_cell(cell, out)
        key = (cell.labels["teacher"], cell.labels["method"])
        results.setdefault(key, []).append(summary["val_top1"])

    # the ensemble of the fine-tuned and the distilled model of each seed
    ens = []
    for seed in seeds:
        runs = [out / "cifar10_mae" / m / f"seed{seed}" for m in ("finetune", "distill")]
        r = evaluate_models(runs, ensemble=True, batch_size=256)
        ens.append(r["ensemble"]["val"]["top1"])
    scratch = mean_std(results[("cifar10_mae", "scratch")])[0]
    finetune = mean_std(results[("cifar10_mae", "finetune")])[0]
    rows = []
    for method in (*METHODS, "ensemble"):
        values = ens if method == "ensemble" else results[("cifar10_mae", method)]
        row = {"method": method, **_summarise(values), "paper_top1": PAPER[method]}
        row["gap_recovered"] = _gap(row["mean"], scratch, finetune)
        row["paper_gap_recovered"] = _gap(PAPER[method], PAPER["scratch"], PAPER["finetune"])
        rows.append(row)
    report: dict[str, Any] = {
        "tier": tier_name,
        "tier_note": tier.note,
        "teacher": teacher,
        "config": tier.config,
        "overrides": list(overrides),
        "seeds": seeds,
        "rows": rows,
    }
    if shift:
        report["shift"] = _shift(out, results, seeds, paths[1], Path(cache).expanduser())
    report["hardware"] = hardware()
    report["command"] = command
    report["wall_seconds_this_invocation"] = time.time() - start
    report["train_seconds"] = _train_seconds(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=1))
    (out / "results.md").write_text(markdown(report))
    plot(report, out / "results.png")
    return report


def _train_seconds(out: Path) -> float:
    return sum(json.loads(p.read_text())["seconds"] for p in out.rglob("summary.json"))


def _shift(out: Path, results: dict, seeds: list[int], teacher: str, cache: Path) -> dict[str, Any]:
    from .inference import evaluate_models
    from .prepare import cifar10_c

    rows = []
    for label in ("cifar10_mae", "tiny_mae"):
        ft = mean_std(results[(label, "finetune")])[0]
        for method in SHIFT_METHODS:
            row = {"teacher": label, "method": method, **_summarise(results[(label, method)])}
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
                "clean": _summarise(clean),
                "severity": {s: _summarise(v) for s, v in by_severity.items()},
                "per_set": {k: _summarise([a[k] for a in per_seed]) for k in sorted(per_seed[0])},
            }
    return {"teacher": teacher, "rows": rows, "corruptions": corrupted, "sets": sorted(sets)}


def _pm(d: dict[str, Any]) -> str:
    return f"{d['mean']:.2f} ± {d['std']:.2f}"


def markdown(r: dict[str, Any]) -> str:
    n = len(r["seeds"])
    lines = [
        f"# Small-scale reproduction ({r['tier']} tier): CIFAR-10, MAE teacher",
        "",
        f"Teacher `{r['teacher']}`; student recipe `{r['config']}`"
        + (f" with `{' '.join(r['overrides'])}`" if r["overrides"] else "")
        + f"; {n} seeds ({', '.join(map(str, r['seeds']))}). Top-1 on the CIFAR-10 JPEG test "
        "set (10,000 images; JPEG costs about 2 points against the lossless originals).",
        "",
        "| method | top-1 (mean ± std) | gap recovered | paper top-1 (ImageNet, ViT-L) "
        "| paper gap |",
        "|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        gap = "" if row["gap_recovered"] is None else f"{row['gap_recovered']:.0f}%"
        pgap = row["paper_gap_recovered"]
        lines.append(
            f"| {row['method']} | {_pm(row)} | {gap} | {row['paper_top1']:.1f} | "
            f"{'' if pgap is None else f'{pgap:.1f}%'} |"
        )
    lines += [
        "",
        "Gap recovered: (method - scratch) / (fine-tune - scratch), on the means.",
    ]
    if "shift" in r:
        s = r["shift"]
        lines += [
            "",
            "## Distribution shift: teacher pre-trained on Tiny-ImageNet instead of CIFAR-10",
            "",
            f"Teacher `{s['teacher']}`, same students and recipe.",
            "",
            "| teacher | method | top-1 (mean ± std) | minus fine-tune |",
            "|---|---|---|---|",
        ]
        for row in s["rows"]:
            lines.append(
                f"| {row['teacher']} | {row['method']} | {_pm(row)} | "
                f"{row['gap_to_finetune']:+.2f} |"
            )
        severities = sorted(next(iter(s["corruptions"].values()))["severity"])
        lines += [
            "",
            "## Corrupted CIFAR-10 test sets (imagecorruptions, fixed seed)",
            "",
            f"Sets: {', '.join(s['sets'])} (1,000 test images each). Mean top-1 over the "
            "corruption types, per severity.",
            "",
            "| model | clean | " + " | ".join(f"severity {v}" for v in severities) + " | drop at "
            f"severity {severities[-1]} |",
            "|---|---|" + "---|" * len(severities) + "---|",
        ]
        for name, c in s["corruptions"].items():
            worst = c["severity"][severities[-1]]["mean"]
            cells = " | ".join(_pm(c["severity"][v]) for v in severities)
            lines.append(
                f"| {name} | {_pm(c['clean'])} | {cells} | {c['clean']['mean'] - worst:.2f} |"
            )
    minutes = r["train_seconds"] / 60
    lines += [
        "",
        f"Command: `{r['command']}`  ",
        f"Hardware: {r['hardware']}  ",
        f"Training time, all runs: {minutes:.1f} min; this invocation: "
        f"{r['wall_seconds_this_invocation'] / 60:.1f} min wall.",
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = r["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    names = [row["method"] for row in rows]
    x = range(len(rows))
    axes[0].bar(x, [row["mean"] for row in rows], yerr=[row["std"] for row in rows], capsize=3)
    axes[0].set_xticks(x, names, rotation=25, ha="right")
    axes[0].set_ylabel("CIFAR-10 top-1 (%)")
    low = min(row["mean"] - row["std"] for row in rows)
    axes[0].set_ylim(max(0, low - 5), None)
    axes[0].set_title(f"attnxfer, {r['tier']} tier, {len(r['seeds'])} seeds", fontsize=10)
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
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
