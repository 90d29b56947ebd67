"""How the task loss's gradient and the distillation loss's gradient compare during training, from
runs trained with ``run.grad_probe_every`` (``benchmarks/grad_probe.sh``).

Every probe is one batch: ``grad_task`` and ``grad_transfer`` are the norms of the two losses'
gradients on the student's weights (the transfer loss already multiplied by its weight lambda),
``grad_cos`` the cosine between them. From these the report derives how far the sum that the
optimiser is given still points down the task loss: cos(task + transfer, task). Per run it gives
means over three stretches of training (the warm-up epoch, the rest of the first half, the second
half), the final top-1, and one figure of the probes against the step.

    python benchmarks/grad_probe_report.py [--runs runs/grad-probe] [--out docs/results/grad_probe]

writes OUT.md, OUT.json and OUT.png.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
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
            probes.append(
                {
                    "step": rec["step"],
                    "task_loss": rec["task"],
                    "transfer_loss": rec["transfer"],
                    "grad_task": rec["grad_task"],
                    "grad_transfer": rec["grad_transfer"],
                    "grad_cos": rec["grad_cos"],
                    "along_task": along_task(
                        rec["grad_task"], rec["grad_transfer"], rec["grad_cos"]
                    ),
                }
            )
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


def stretches(total_steps: int, warmup_steps: int) -> list[tuple[str, int, int]]:
    """(label, first step, last step): the warm-up, the rest of the first half, the second."""
    half = total_steps // 2
    return [
        (f"1-{warmup_steps}", 1, warmup_steps),
        (f"{warmup_steps + 1}-{half}", warmup_steps + 1, half),
        (f"{half + 1}-{total_steps}", half + 1, total_steps),
    ]


def summarise_run(run: dict[str, Any], spans: list[tuple[str, int, int]]) -> list[dict[str, Any]]:
    out = []
    for label, lo, hi in spans:
        inside = [p for p in run["probes"] if lo <= p["step"] <= hi]
        if not inside:
            continue
        mean = {
            k: sum(p[k] for p in inside) / len(inside)
            for k in ("grad_task", "grad_transfer", "grad_cos", "along_task")
        }
        ratio = sum(p["grad_transfer"] / p["grad_task"] for p in inside) / len(inside)
        out.append({"steps": label, "probes": len(inside), **mean, "ratio": ratio})
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
    per_epoch = runs[0]["summary"]["steps"] // cfg.optim.epochs if runs[0]["summary"] else None
    total = max(r["steps"] or r["probes"][-1]["step"] for r in runs)
    warmup = round(cfg.optim.warmup_epochs * per_epoch) if per_epoch else total // 10
    spans = stretches(total, warmup)
    for r in runs:
        r["stretches"] = summarise_run(r, spans)
    summaries = [r.pop("summary") for r in runs]
    return {
        "runs": runs,
        "every": cfg.run.grad_probe_every,
        "trained_on": trained_on([s for s in summaries if s]),
        "hardware": hardware(),
    }


def _label(r: dict[str, Any]) -> str:
    return f"{r['mode']}, lambda {r['weight']:g}" if r["weight"] is not None else r["mode"]


def markdown(r: dict[str, Any]) -> str:
    rows = [
        [
            _label(run),
            "" if run["top1"] is None else f"{run['top1']:.2f}",
            s["steps"],
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
        "and the cosine between the two; means over each stretch of training. ratio: "
        "transfer / task norm. cos(sum, task): the cosine between the summed gradient that the "
        "optimiser is given and the task gradient alone (1: the step follows the task; 0: it "
        "does not descend the task loss at all). AdamW rescales each weight's step, so a norm "
        "ratio says which loss steers the step, not how long the step is.",
        "",
        *table(
            [
                "student",
                "top-1",
                "steps",
                "task grad",
                "transfer grad",
                "ratio",
                "cos(task, transfer)",
                "cos(sum, task)",
            ],
            rows,
        ),
        "",
        *([f"Not finished yet: {', '.join(unfinished)}", ""] if unfinished else []),
        *([f"Command: `{r['command']}`  "] if "command" in r else []),
        *provenance(r, end=""),
        "",
    ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: Path) -> None:
    panels = [
        ("grad_task", "task gradient norm", True),
        ("grad_transfer", "distillation gradient norm", True),
        ("grad_cos", "cos(task, distillation)", False),
        ("along_task", "cos(sum, task)", False),
    ]
    with figure(path, 1, len(panels), figsize=(14, 3.4)) as (_, axes):
        for ax, (key, title, log) in zip(axes, panels, strict=True):
            for i, run in enumerate(r["runs"]):
                ax.plot(
                    [p["step"] for p in run["probes"]],
                    [p[key] for p in run["probes"]],
                    color=f"C{i}",
                    lw=1,
                    label=_label(run),
                )
            if log:
                ax.set_yscale("log")
            else:
                ax.axhline(0, color="black", lw=0.8)
            ax.set_xlabel("optimiser step")
            ax.set_title(title, fontsize=10)
        axes[0].legend(fontsize=8)


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
