"""Grids of training runs: ``attnxfer sweep`` and the runner under ``attnxfer reproduce``.

A *cell* is one training run (config files + overrides) in its own run directory. Cells run one
after another, each in its own process (``python -m attnxfer train``), logging to
``<cell>.log`` beside its directory. A cell whose ``summary.json`` exists is finished and
skipped; an interrupted one is continued from its newest good checkpoint (``--resume auto``).
So a sweep stopped at any moment is restarted with the same command and loses nothing.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import load_config, parse_override
from .errors import AttnxferError

log = logging.getLogger(__name__)


@dataclass
class Cell:
    name: str  # run directory, relative to the sweep's folder
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    command: str = "train"  # or "pretrain"
    labels: dict[str, Any] = field(default_factory=dict)  # what the cell varies, for tables


def run_cell(cell: Cell, root: Path) -> dict[str, Any]:
    """Train ``cell`` under ``root`` unless it is finished; returns its ``summary.json``."""
    out = root / cell.name
    summary = out / "summary.json"
    if summary.is_file():
        return json.loads(summary.read_text())
    load_config(cell.configs, cell.overrides)  # a bad cell fails here, before any process runs
    out.parent.mkdir(parents=True, exist_ok=True)
    logfile = out.parent / f"{out.name}.log"
    cmd = [sys.executable, "-m", "attnxfer", cell.command, "--resume", "auto"]
    for c in cell.configs:
        cmd += ["-c", str(c)]
    cmd += [*cell.overrides, f"run.output={out}"]
    log.info("%s: %s", cell.name, " ".join(cmd[2:]))
    start = time.time()
    with open(logfile, "a") as f:
        f.write(f"$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=os.environ).returncode
    if rc != 0 or not summary.is_file():
        tail = logfile.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise AttnxferError(
            f"cell {cell.name} failed (exit {rc}): {tail[0]}; full log {logfile}; fix it and "
            "run the same command again (finished cells are kept)"
        )
    result = json.loads(summary.read_text())
    log.info("%s: done in %.0f s: %s", cell.name, time.time() - start, _brief(result))
    return result


def _brief(summary: dict[str, Any]) -> str:
    keys = [k for k in ("val_top1", "ema_top1", "val_recon_loss") if k in summary]
    return ", ".join(f"{k} {summary[k]:.2f}" for k in keys)


def parse_grid(specs: list[str]) -> list[tuple[str, list[str]]]:
    """``["transfer.layers=first:1,first:2", ...]`` -> ``[("transfer.layers", [...]), ...]``.

    Values are separated by ``|`` when any contains a comma (``transfer.heads=0,1|0,1,2``).
    """
    grid = []
    for spec in specs:
        key, sep, values = spec.partition("=")
        if not sep or not values:
            raise AttnxferError(f"--grid {spec!r} is not KEY=V1,V2,...")
        parts = values.split("|") if "|" in values else values.split(",")
        parse_override(f"{key}={parts[0]}")  # key syntax checked here
        grid.append((key, parts))
    return grid


def grid_cells(
    configs: list[str], grid: list[tuple[str, list[str]]], seeds: list[int], fixed: list[str]
) -> list[Cell]:
    keys = [k for k, _ in grid]
    cells = []
    for values in itertools.product(*(v for _, v in grid)):
        for seed in seeds:
            labels = dict(zip(keys, values, strict=True))
            name = "_".join(f"{k.split('.')[-1]}={_safe(v)}" for k, v in labels.items())
            cells.append(
                Cell(
                    name=f"{name or 'base'}/seed{seed}",
                    configs=configs,
                    overrides=[
                        *fixed,
                        *(f"{k}={v}" for k, v in labels.items()),
                        f"run.seed={seed}",
                    ],
                    labels={**labels, "seed": seed},
                )
            )
    return cells


def _safe(value: str) -> str:
    return "".join(c if c.isalnum() or c in "-.:" else "_" for c in value).replace(":", "-")


def metric_of(summary: dict[str, Any], metric: str) -> float:
    if metric not in summary:
        raise AttnxferError(
            f"metric {metric!r} not in the run summaries (they have "
            f"{', '.join(k for k, v in summary.items() if isinstance(v, float))})"
        )
    return float(summary[metric])


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def sweep(
    configs: list[str],
    grid_specs: list[str],
    seeds: list[int],
    out: Path,
    fixed: list[str] = (),
    metric: str = "val_top1",
    title: str | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run every cell of the grid (skipping finished ones) and write ``results.json``,
    ``results.md`` and ``results.png`` (metric per grid value, mean and std over seeds)."""
    grid = parse_grid(grid_specs)
    cells = grid_cells(configs, grid, seeds, list(fixed))
    for cell in cells:  # every cell's config is checked before the first one trains
        load_config(cell.configs, cell.overrides)
    start = time.time()
    rows: dict[tuple, list[float]] = {}
    for i, cell in enumerate(cells, 1):
        log.info("cell %d/%d", i, len(cells))
        summary = run_cell(cell, out)
        key = tuple(cell.labels[k] for k, _ in grid)
        rows.setdefault(key, []).append(metric_of(summary, metric))
    keys = [k for k, _ in grid]
    table = []
    for key, values in rows.items():
        mean, std = mean_std(values)
        table.append(
            {**dict(zip(keys, key, strict=True)), "mean": mean, "std": std, "runs": values}
        )
    result = {
        "title": title or f"sweep over {', '.join(keys) or 'seeds'}",
        "metric": metric,
        "configs": list(configs),
        "fixed": list(fixed),
        "grid": dict(grid),
        "seeds": seeds,
        "rows": table,
        "command": command,
        "wall_seconds_this_invocation": time.time() - start,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(sweep_markdown(result))
    plot_sweep(result, out / "results.png")
    return result


def sweep_markdown(result: dict[str, Any]) -> str:
    keys = list(result["grid"])
    head = [*keys, f"{result['metric']} (mean ± std)", "seeds"]
    lines = [f"# {result['title']}", "", "| " + " | ".join(head) + " |"]
    lines.append("|" + "---|" * len(head))
    for row in result["rows"]:
        cells = [str(row[k]) for k in keys]
        cells += [f"{row['mean']:.2f} ± {row['std']:.2f}", str(len(row["runs"]))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{result['command']}`", ""]
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(result["grid"])
    labels = [", ".join(str(r[k]) for k in keys) or "base" for r in result["rows"]]
    means = [r["mean"] for r in result["rows"]]
    stds = [r["std"] for r in result["rows"]]
    fig, ax = plt.subplots(figsize=(max(4, 0.8 * len(labels) + 2), 3.2))
    ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#4C72B0")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_ylabel(result["metric"])
    ax.set_title(result["title"], fontsize=10)
    low = min(m - s for m, s in zip(means, stds, strict=True))
    ax.set_ylim(max(0, low - 5), None)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
