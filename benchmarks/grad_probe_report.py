"""How the task loss's gradient and the distillation loss's gradient compare during training, from
runs trained with ``run.grad_probe_every`` (``benchmarks/grad_probe.sh``).

Every probe is one batch: ``grad_task`` and ``grad_transfer`` are the norms of the two losses'
gradients on the student's weights (the transfer loss already multiplied by its weight lambda),
``grad_cos`` the cosine between them. From these the report derives how far the sum that the
optimiser is given still points down the task loss: cos(task + transfer, task). Per run it gives
means over three stretches of training (the warm-up epoch, the rest of the first half, the second
half), the same ratio and cosine for each transformer block's own weights, the final top-1, and
one figure of the probes against the step.

    python benchmarks/grad_probe_report.py [--runs runs/grad-probe] [--out docs/results/grad_probe]

writes OUT.md, OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from pathlib import Path
from typing import Any

from attnxfer.config import load_config
from attnxfer.report import figure, hardware, provenance, table, trained_on, write_results


def along_task(task: float, transfer: float, cos: float) -> float:
    """cos(g_task + g_transfer, g_task), from the two norms and the cosine between them."""
    total = math.sqrt(task**2 + transfer**2 + 2 * task * transfer * cos)
    return (task + transfer * cos) / total if total > 0 else 0.0


def read_run(run: Path) -> dict[str, Any]:
    """One run's probes (``metrics.jsonl`` lines that hold them) and what it is."""
    cfg = load_config([run / "config.yaml"])
    probes = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "grad_cos" in rec:
            probe = {
                "step": rec["step"],
                "epoch": rec["epoch"],
                "task_loss": rec["task"],
                "transfer_loss": rec["transfer"],
            }
            probe.update({k: v for k, v in rec.items() if k.startswith("grad_")})
            probe["along_task"] = along_task(
                rec["grad_task"], rec["grad_transfer"], rec["grad_cos"]
            )
            probes.append(probe)
    summary_file = run / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.exists() else None
    return {
        "run": str(run),
        "mode": cfg.transfer.mode,
        "weight": cfg.transfer.weight,
        "steps": summary["steps"] if summary else None,
        "top1": summary.get("val_top1") if summary else None,
        "summary": summary,
        "probes": probes,
    }


def stretches(epochs: int, warmup_epochs: float) -> list[tuple[str, int, int]]:
    """(label, first epoch, epoch after the last), counting from 0: the warm-up, the rest of the
    first half, the second half; a stretch with no epoch of its own is left out."""
    warm, half = min(math.ceil(warmup_epochs), epochs), max(epochs // 2, 1)
    bounds = [(0, warm), (warm, half), (max(half, warm), epochs)]

    def label(lo: int, hi: int) -> str:
        return f"epoch {hi}" if hi == lo + 1 else f"epochs {lo + 1}-{hi}"

    return [(label(lo, hi), lo, hi) for lo, hi in bounds if hi > lo]


def blocks(run: dict[str, Any]) -> list[str]:
    """The block suffixes its probes hold (``_block0``, ...), in block order."""
    found = {k[len("grad_cos") :] for k in run["probes"][0] if k.startswith("grad_cos_block")}
    return sorted(found, key=lambda b: int(b[len("_block") :]))


def _ratio(p: dict[str, Any], suffix: str) -> float:
    task = p[f"grad_task{suffix}"]
    return p[f"grad_transfer{suffix}"] / task if task > 0 else math.inf


def summarise_run(run: dict[str, Any], spans: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    """Means over each stretch: of the whole student's numbers, and per block of the norm ratio
    (transfer / task) and the cosine."""
    out = []
    for label, lo, hi in spans:
        inside = [p for p in run["probes"] if lo <= p["epoch"] < hi]
        if not inside:
            continue
        row: dict[str, Any] = {"epochs": label, "probes": len(inside)}
        for k in ("task_loss", "grad_task", "grad_transfer", "grad_cos", "along_task"):
            row[k] = statistics.fmean([p[k] for p in inside])
        row["ratio"] = statistics.fmean([_ratio(p, "") for p in inside])
        row["blocks"] = {
            b[1:]: {
                "ratio": statistics.fmean([_ratio(p, b) for p in inside]),
                "cos": statistics.fmean([p[f"grad_cos{b}"] for p in inside]),
            }
            for b in blocks(run)
        }
        out.append(row)
    return out


def build(runs_dir: Path) -> dict[str, Any]:
    runs = [read_run(p.parent) for p in sorted(runs_dir.glob("*/seed*/metrics.jsonl"))]
    runs = [r for r in runs if r["probes"]]
    if not runs:
        raise SystemExit(
            f"no run under {runs_dir} has gradient probes: train with run.grad_probe_every "
            "(bash benchmarks/grad_probe.sh)"
        )
    runs.sort(key=lambda r: (r["mode"], r["weight"] or 0.0))
    cfg = load_config([Path(runs[0]["run"]) / "config.yaml"])
    spans = stretches(cfg.optim.epochs, cfg.optim.warmup_epochs)
    for r in runs:
        r["stretches"] = summarise_run(r, spans)
    summaries = [s for s in (r.pop("summary") for r in runs) if s]
    return {
        "runs": runs,
        "every": cfg.run.grad_probe_every,
        "stretches": [label for label, _, _ in spans],
        **({"trained_on": trained_on(summaries)} if summaries else {}),
        "hardware": hardware(),
    }


def _label(r: dict[str, Any]) -> str:
    return f"{r['mode']}, lambda {r['weight']:g}" if r["weight"] is not None else r["mode"]


def _block_cell(run: dict[str, Any], label: str, block: str) -> str:
    """``ratio / cosine`` of one block over one stretch; blank where the run has not got there."""
    for s in run["stretches"]:
        if s["epochs"] == label:
            b = s["blocks"][block]
            return f"{b['ratio']:.2f} / {b['cos']:+.3f}"
    return ""


def markdown(r: dict[str, Any]) -> str:
    rows = [
        [
            _label(run),
            "" if run["top1"] is None else f"{run['top1']:.2f}",
            s["epochs"],
            f"{s['task_loss']:.3f}",
            f"{s['grad_task']:.3f}",
            f"{s['grad_transfer']:.3f}",
            f"{s['ratio']:.2f}",
            f"{s['grad_cos']:+.3f}",
            f"{s['along_task']:+.3f}",
        ]
        for run in r["runs"]
        for s in run["stretches"]
    ]
    unfinished = [run["run"] for run in r["runs"] if run["top1"] is None]
    lines = [
        "# The task loss's gradient against the distillation loss's",
        "",
        f"Every {r['every']} steps, on one training batch, the norm of the gradient of the task "
        "loss (cross-entropy) and of the weighted distillation loss on the student's weights, "
        "and the cosine between the two; means over each stretch of training (task loss: the "
        "training cross-entropy on the probed batches). ratio: "
        "transfer / task norm. cos(sum, task): the cosine between the summed gradient that the "
        "optimiser is given and the task gradient alone (1: the step follows the task; 0: it "
        "does not descend the task loss at all). AdamW rescales each weight's step, so a norm "
        "ratio says which loss steers the step, not how long the step is.",
        "",
        *table(
            [
                "student",
                "top-1",
                "training",
                "task loss",
                "task grad",
                "transfer grad",
                "ratio",
                "cos(task, transfer)",
                "cos(sum, task)",
            ],
            rows,
        ),
        "",
        "Per transformer block (its own weights only): the norm ratio transfer / task and the "
        "cosine between the two gradients, as ratio / cosine, means over each stretch.",
        "",
        *table(
            ["student", "block", *r["stretches"]],
            [
                [_label(run), block, *(_block_cell(run, label, block) for label in r["stretches"])]
                for run in r["runs"]
                for block in run["stretches"][0]["blocks"]
            ],
        ),
        "",
        *([f"Not finished yet: {', '.join(unfinished)}", ""] if unfinished else []),
        *([f"Command: `{r['command']}`  "] if "command" in r else []),
        *provenance(r, end=""),
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    """Top row: the whole student's probes against the step, a line per run. Bottom row, per
    run: each block's norm ratio and cosine, a line per block."""
    panels = [
        ("grad_task", "task gradient norm", True),
        ("grad_transfer", "distillation gradient norm", True),
        ("grad_cos", "cos(task, distillation)", False),
        ("along_task", "cos(sum, task)", False),
    ]
    runs = r["runs"]
    cols = max(len(panels), 2 * len(runs))
    with figure(path, 2, cols, figsize=(3.5 * cols, 6.8), squeeze=False) as (_, axes):
        for ax, (key, title, log) in zip(axes[0], panels, strict=False):
            for i, run in enumerate(runs):
                steps = [p["step"] for p in run["probes"]]
                values = [p[key] for p in run["probes"]]
                ax.plot(steps, values, color=f"C{i}", lw=1, label=_label(run))
            if log:
                ax.set_yscale("log")
            else:
                ax.axhline(0, color="black", lw=0.8)
            ax.set_title(title, fontsize=10)
        axes[0][0].legend(fontsize=8)
        for i, run in enumerate(runs):
            ratio_ax, cos_ax = axes[1][2 * i], axes[1][2 * i + 1]
            steps = [p["step"] for p in run["probes"]]
            for j, b in enumerate(blocks(run)):
                ratios = [_ratio(p, b) for p in run["probes"]]
                ratio_ax.plot(steps, ratios, color=f"C{j}", lw=1, label=b[1:])
                cos_ax.plot(steps, [p[f"grad_cos{b}"] for p in run["probes"]], color=f"C{j}", lw=1)
            ratio_ax.set_yscale("log")
            ratio_ax.set_title(f"{_label(run)}: transfer / task norm", fontsize=10)
            cos_ax.axhline(0, color="black", lw=0.8)
            cos_ax.set_title(f"{_label(run)}: cosine", fontsize=10)
            ratio_ax.legend(fontsize=7)
        for ax in [*axes[1][2 * len(runs) :], *axes[0][len(panels) :]]:
            ax.axis("off")
        for ax in axes.flat:
            ax.set_xlabel("optimiser step")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, default=Path("runs/grad-probe"))
    parser.add_argument("--out", type=Path, default=Path("docs/results/grad_probe"))
    args = parser.parse_args(argv)
    record = build(args.runs)
    record["command"] = shlex.join(["python", "benchmarks/grad_probe_report.py", *(argv or [])])
    write_results(args.out.parent, args.out.name, record, markdown, plot)
    print(markdown(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
