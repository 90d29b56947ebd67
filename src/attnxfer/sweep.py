"""Grids of training runs: ``attnxfer sweep`` and the runner under ``attnxfer reproduce``.

A *cell* is one training run (config files + overrides) in its own run directory. Cells run one
after another, or ``jobs`` at a time (:func:`run_cells`), each in its own process (``python -m
attnxfer train``), logging to ``<cell>.log`` beside its directory. A cell whose ``summary.json``
exists is finished and skipped; an interrupted one is continued from its newest good checkpoint
(``--resume auto``). A run in a cell's directory that was started with another configuration is
refused, not taken. So a sweep stopped at any moment is restarted with the same command and
loses nothing.

Sweeps that share a cell (the baseline of one ablation is a row of another, or of the main table)
need not train it twice: given ``reuse`` folders, a cell whose resolved configuration equals that of
a finished run there (everything but ``run.output``) takes that run's result and trains nothing.
"""

from __future__ import annotations

import contextlib
import filecmp
import itertools
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import config_from_dict, load_config, parse_override, read_yaml
from .errors import AttnxferError, Stopped
from .report import figure, hardware, pm, provenance, summarise, table, trained_on, write_results
from .runtime import on_stop_signals

log = logging.getLogger(__name__)


@dataclass
class Cell:
    name: str  # run directory, relative to the sweep's folder
    configs: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    command: str = "train"  # or "pretrain"
    labels: dict[str, Any] = field(default_factory=dict)  # what the cell varies, for tables


def run_identity(config: dict[str, Any]) -> str:
    """What makes two runs the same run: the resolved configuration without ``run.output`` and
    ``run.device``. The device is where a recipe runs, not the recipe: a run trained on a GPU
    counts for the same cell on a CPU (its ``summary.json`` records the processor, and reports
    say which runs trained where).

    Two spellings of one setting count as one, as ``AttentionTransfer`` reads them
    (:func:`attnxfer.transfer.canonical_transfer`).
    """
    from .transfer import canonical_transfer

    transfer = canonical_transfer(config["transfer"])
    run = {k: v for k, v in config["run"].items() if k not in ("output", "device")}
    return json.dumps({**config, "transfer": transfer, "run": run}, sort_keys=True)


def finished_runs(roots: list[Path]) -> dict[str, Path]:
    """Finished run directories (``config.yaml`` + ``summary.json``) under ``roots``, by
    :func:`run_identity`. Runs whose config this version cannot read are left out."""
    found: dict[str, Path] = {}
    for root in roots:
        if not Path(root).is_dir():
            raise AttnxferError(f"--reuse {root}: no such folder; give a folder of finished runs")
        for path in sorted(Path(root).rglob("summary.json")):
            config = path.parent / "config.yaml"
            if not config.is_file():
                continue
            try:
                resolved = config_from_dict(read_yaml(config)).to_dict()
            except AttnxferError:
                continue  # written by an older or newer attnxfer with other keys
            found.setdefault(run_identity(resolved), path.parent)
    return found


#: what :func:`keep_records` keeps of a finished run: its config, summary and metrics, and the
#: results recorded beside them (an ensemble with it, corrupted-set accuracies); no weights
RECORDS = ("config.yaml", "summary.json", "metrics.jsonl", "ensemble.json", "corruptions.json")


def keep_records(src: Path, dest: Path) -> list[Path]:
    """Copy the :data:`RECORDS` of every finished run under ``src`` (not links to other runs)
    to the same relative place under ``dest``, where :func:`finished_runs` finds them.

    The run under ``src`` is the truth. A record it gained after it was kept (an
    ``ensemble.json`` evaluated later) is added, and one whose content changed is replaced. A
    run trained again (its ``summary.json`` differs from the kept one) replaces the kept
    records, and kept records it does not have are removed, since they describe the earlier
    training (an ensemble paired with the old weights). Returns the folders written to."""
    kept = []
    for summary in sorted(Path(src).rglob("summary.json")):
        run = summary.parent
        if run.is_symlink() or not (run / "config.yaml").is_file():
            continue
        target = dest / run.relative_to(src)
        retrained = (target / "summary.json").is_file() and not _same_file(
            summary, target / "summary.json"
        )
        changed = [
            n for n in RECORDS if (run / n).is_file() and not _same_file(run / n, target / n)
        ]
        stale = [
            n for n in RECORDS if retrained and not (run / n).is_file() and (target / n).exists()
        ]
        if not changed and not stale:
            continue
        target.mkdir(parents=True, exist_ok=True)
        for name in stale:
            (target / name).unlink()
        for name in changed:
            shutil.copy2(run / name, target / name)
        kept.append(target)
    return kept


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``b`` exists and holds the same bytes as ``a``."""
    return b.is_file() and filecmp.cmp(a, b, shallow=False)


def finished_cell(
    cell: Cell, root: Path, reuse: dict[str, Path] | None = None
) -> dict[str, Any] | None:
    """The summary of ``cell`` if it has finished under ``root`` or has an identical finished
    run in ``reuse`` (then with ``reused_from``, as :func:`run_cell` gives it); None otherwise.
    Trains nothing and writes nothing."""
    summary = root / cell.name / "summary.json"
    _check_is_cell(cell, summary.parent)
    if summary.is_file():
        return json.loads(summary.read_text())
    same = identical_run(cell, reuse)
    if same is None:
        return None
    return {**json.loads((same / "summary.json").read_text()), "reused_from": str(same)}


def _check_is_cell(cell: Cell, run: Path) -> None:
    """Refuse a run (finished or interrupted) at ``cell``'s place that was started with another
    configuration (by hand, or by an older command): taking or resuming it would put another
    recipe's number in the cell's row. Nothing is moved or deleted."""
    config = run / "config.yaml"
    if not config.is_file():
        return  # no run there yet (or not one attnxfer wrote): nothing to compare
    try:
        have = json.loads(run_identity(config_from_dict(read_yaml(config)).to_dict()))
    except AttnxferError as e:
        raise AttnxferError(
            f"{run} holds a run whose config this version cannot read ({e}); move it "
            "away and run the same command again to train the cell"
        ) from None
    want = json.loads(run_identity(load_config(cell.configs, cell.overrides).to_dict()))
    differ = _differences(have, want)
    if differ:
        shown = "; ".join(differ[:3]) + ("; ..." if len(differ) > 3 else "")
        raise AttnxferError(
            f"{run} holds a run of another configuration than cell {cell.name} "
            f"(run vs cell: {shown}); move it away and run the same command again to train the "
            "cell"
        )


def _differences(have: Any, want: Any, key: str = "") -> list[str]:
    """``"key: a vs b"`` for every leaf where two nested dicts differ."""
    if isinstance(have, dict) and isinstance(want, dict):
        keys = sorted(set(have) | set(want))
        return [d for k in keys for d in _differences(have.get(k), want.get(k), f"{key}{k}.")]
    return [] if have == want else [f"{key.rstrip('.')}: {have!r} vs {want!r}"]


def identical_run(cell: Cell, reuse: dict[str, Path] | None) -> Path | None:
    """The finished run in ``reuse`` whose resolved config equals ``cell``'s, if any; a bad cell
    fails here (its config does not load), before anything runs."""
    return (reuse or {}).get(run_identity(load_config(cell.configs, cell.overrides).to_dict()))


class _Processes:
    """The training processes of one :func:`run_cells`, so that the first failure stops them
    all and is the one raised."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # re-entered by a stop signal taken while it is held
        self.running: set[subprocess.Popen] = set()
        self.error: BaseException | None = None

    def run(self, cmd: list[str], log_file, env: dict[str, str] | None) -> int:
        with self.lock:
            if self.error is not None:  # another cell failed while this one was being set up
                return -1
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env)
            self.running.add(proc)
        try:
            return proc.wait()
        finally:
            with self.lock:
                self.running.discard(proc)

    def fail(self, error: BaseException) -> None:
        """Record the first failure, stop every running cell (SIGTERM: each saves a checkpoint of
        the step it reached, and resumes from it) and start no other."""
        with self.lock:
            if self.error is None:
                self.error = error
            for proc in self.running:
                proc.terminate()

    def kill(self) -> None:
        """Stop every running cell at once (SIGKILL: each loses the steps since its last
        checkpoint)."""
        with self.lock:
            for proc in self.running:
                proc.kill()


def run_cell(
    cell: Cell,
    root: Path,
    reuse: dict[str, Path] | None = None,
    env: dict[str, str] | None = None,
    processes: _Processes | None = None,
) -> dict[str, Any]:
    """Train ``cell`` under ``root`` unless it is finished; returns its ``summary.json``.

    With ``reuse`` (from :func:`finished_runs`), an identical finished run elsewhere is taken
    instead of training: the cell's directory becomes a relative symbolic link to it, and the
    summary carries ``reused_from``, that run's directory. ``env``: the training process's
    environment (default: this one's).
    """
    out = root / cell.name
    summary = out / "summary.json"
    if out.is_symlink():
        if summary.is_file():
            target = Path(os.path.normpath(out.parent / os.readlink(out)))
            return {**json.loads(summary.read_text()), "reused_from": str(target)}
        out.unlink()  # the reused run is gone: never train into another run's directory
    _check_is_cell(cell, out)  # finished or interrupted, it must be this cell's run
    if summary.is_file():
        return json.loads(summary.read_text())
    same = identical_run(cell, reuse)
    if same is not None and not out.exists():
        log.info("%s: identical to the finished run %s; not trained again", cell.name, same)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.symlink_to(os.path.relpath(same.resolve(), out.parent.resolve()))
        return {**json.loads(summary.read_text()), "reused_from": str(same)}
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
        rc = (processes or _Processes()).run(cmd, f, env if env is not None else dict(os.environ))
    if rc != 0 or not summary.is_file():
        tail = logfile.read_text().strip().splitlines()[-1:] or ["(no output)"]
        raise AttnxferError(
            f"cell {cell.name} failed (exit {rc}): {tail[0]}; full log {logfile}; fix it and "
            "run the same command again (finished cells are kept)"
        )
    result = json.loads(summary.read_text())
    log.info("%s: done in %.0f s: %s", cell.name, time.time() - start, _brief(result))
    return result


def job_env(slot: int, jobs: int, gpus: int | None = None) -> dict[str, str]:
    """The environment of the training process in job slot ``slot`` of ``jobs``: the CPU cores
    shared out (``OMP_NUM_THREADS``: this process's cores // ``jobs``, at least 1, unless set
    already) and, on a machine with several GPUs, one GPU per slot, round-robin
    (``CUDA_VISIBLE_DEVICES``, among those visible already). ``gpus``: how many are visible
    (default: as torch counts them)."""
    env = dict(os.environ)
    if jobs == 1:
        return env
    if "OMP_NUM_THREADS" not in env:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        env["OMP_NUM_THREADS"] = str(max(1, (cores or 1) // jobs))
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    if gpus > 1:
        visible = [d for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        visible = visible[:gpus] if len(visible) >= gpus else [str(i) for i in range(gpus)]
        env["CUDA_VISIBLE_DEVICES"] = visible[slot % gpus]
    return env


def run_cells(
    cells: list[Cell],
    root: Path,
    reuse: dict[str, Path] | None = None,
    jobs: int = 1,
    what: str = "cell",
    after: Callable[[Cell, Path], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`run_cell` for each of ``cells``, in their order, ``jobs`` at a time; returns
    their summaries by cell name.

    ``after(cell, run)`` is called, in this process, with each cell finished under ``root``
    (trained now or by an earlier invocation; not one taken from ``reuse``) as soon as it is:
    what is measured on a run's weights goes into its records before the weights are gone
    (:func:`attnxfer.reproduce.measure_on_weights`). With ``jobs`` > 1 it may be called from
    several threads at once.

    With ``jobs`` > 1 each cell runs in its own process with its share of the CPU cores, or its
    own GPU (:func:`job_env`): on a CPU, two 1-thread trainings of a small ViT do more steps
    together than one 2-thread one. The first failure stops the other running cells (each saves
    a checkpoint of the step it reached, and resumes from it when the command runs again) and is
    raised; so does a SIGTERM or Ctrl-C to this process (raised as :class:`Stopped`)."""
    if jobs < 1:
        raise AttnxferError(f"--jobs {jobs}: give 1 or more cells to train at a time")
    processes = _Processes()
    with _stop_cells_on_signals(processes):
        if jobs == 1:
            summaries = {}
            for i, cell in enumerate(cells, 1):
                log.info("%s %d/%d (%s)", what, i, len(cells), cell.name)
                try:
                    summaries[cell.name] = run_cell(cell, root, reuse, processes=processes)
                    _after(after, cell, root, summaries[cell.name])
                except AttnxferError:
                    if isinstance(processes.error, Stopped):
                        raise processes.error from None
                    raise
            return summaries
        return _run_in_parallel(cells, root, reuse, jobs, what, processes, after)


def _after(
    after: Callable[[Cell, Path], None] | None, cell: Cell, root: Path, summary: dict[str, Any]
) -> None:
    if after is not None and "reused_from" not in summary:
        after(cell, root / cell.name)


@contextlib.contextmanager
def _stop_cells_on_signals(processes: _Processes):
    """SIGTERM or Ctrl-C (SIGINT) to the sweep (not only to its whole process group) stops its
    running cells, each with a checkpoint of the step it reached, and then the sweep, with one
    line; a second Ctrl-C stops them and the sweep at once."""

    def stop(signum: int, frame: Any) -> None:
        asked = processes.error
        if signum == signal.SIGINT and isinstance(asked, Stopped) and asked.signum == signum:
            processes.kill()
            raise KeyboardInterrupt  # a second Ctrl-C
        name = signal.Signals(signum).name
        if asked is None:
            log.warning(
                "%s: stopping the running cells after their step in progress, each with a "
                "checkpoint of it%s",
                name,
                " (Ctrl-C again stops at once)" if signum == signal.SIGINT else "",
            )
        processes.fail(
            Stopped(
                f"stopped by {name}: each running cell saved a checkpoint of the step it "
                "reached; the same command continues them (finished cells are kept)",
                signum,
            )
        )

    with on_stop_signals(stop):
        yield


def _run_in_parallel(
    cells: list[Cell],
    root: Path,
    reuse: dict[str, Path] | None,
    jobs: int,
    what: str,
    processes: _Processes,
    after: Callable[[Cell, Path], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`run_cells` with ``jobs`` > 1: a thread per job slot, each waiting on its cell's
    training process."""
    slots: queue.SimpleQueue = queue.SimpleQueue()
    for slot in range(jobs):
        slots.put(slot)

    def one(i: int, cell: Cell) -> dict[str, Any] | None:
        slot = slots.get()
        try:
            if processes.error is not None:
                return None  # a cell has failed: no other starts
            log.info("%s %d/%d (%s)", what, i, len(cells), cell.name)
            summary = run_cell(cell, root, reuse, job_env(slot, jobs), processes)
            _after(after, cell, root, summary)
            return summary
        except BaseException as e:
            processes.fail(e)  # before the slot is free again
            raise
        finally:
            slots.put(slot)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(one, i, cell): cell for i, cell in enumerate(cells, 1)}
        try:
            for future in as_completed(futures):
                future.exception()
        except BaseException as e:  # Ctrl-C: stop the running cells, start no other
            processes.fail(e)
            raise
    if processes.error is not None:
        raise processes.error
    return {cell.name: future.result() for future, cell in futures.items()}


def plan(
    cells: list[Cell],
    root: Path,
    reuse: list[Path] = (),
    retrain: Callable[[list[Cell], Path, dict[str, Path]], dict[str, Path]] | None = None,
) -> str:
    """What running ``cells`` under ``root`` would do, one line a cell, then a total: finished,
    taken from an identical finished run in ``reuse``, resumed from its newest checkpoint, or
    trained (with the command it would run). ``retrain`` gives the cells trained although a run
    elsewhere stands for them, by name, with that run (the table's weightless members,
    :func:`attnxfer.reproduce.weightless_members`). Every cell's config is checked; nothing is
    trained or written."""
    from .checkpoint import list_checkpoints

    for cell in cells:
        load_config(cell.configs, cell.overrides)
    known = finished_runs(list(reuse))
    again = retrain(cells, root, known) if retrain else {}
    lines, counts, seconds = [], {"finished": 0, "taken": 0, "resumed": 0, "trained": 0}, []
    for cell in cells:
        here = root / cell.name
        # a run of the cell's own there (an interrupted one is resumed) is never taken from reuse
        reusable = {} if here.is_dir() and not here.is_symlink() else known
        summary = None if cell.name in again else finished_cell(cell, root, reusable)
        checkpoints = list_checkpoints(here) if summary is None else []
        if summary is not None:
            kind = "taken" if "reused_from" in summary else "finished"
            status = f"taken from {summary['reused_from']}" if kind == "taken" else "finished"
            seconds.append(summary["seconds"])
        elif cell.name in again:
            kind = "trained"
            status = f"to train: {again[cell.name]} holds no weights, which the report evaluates"
        elif checkpoints:
            kind, status = "resumed", f"resumes from {checkpoints[-1].name}"
        else:
            kind, status = "trained", "to train"
        counts[kind] += 1
        lines.append(f"{cell.name}: {status}")
        if kind in ("resumed", "trained"):
            args = [a for c in cell.configs for a in ("-c", str(c))]
            command = [cell.command, "--resume", "auto", *args, *cell.overrides]
            lines.append(f"  attnxfer {' '.join(command)} run.output={root / cell.name}")
    total = (
        f"{len(cells)} runs: {counts['finished']} finished, {counts['taken']} taken from finished "
        f"runs, {counts['resumed']} to resume, {counts['trained']} to train"
    )
    if seconds and counts["resumed"] + counts["trained"]:
        total += (
            f"; the {len(seconds)} finished took {sum(seconds) / len(seconds) / 60:.1f} min each "
            "on average (on the hardware that trained them)"
        )
    return "\n".join([*lines, total])


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


def sweep(
    configs: list[str],
    grid_specs: list[str],
    seeds: list[int],
    out: Path,
    fixed: list[str] = (),
    metric: str = "val_top1",
    title: str | None = None,
    command: str = "",
    reuse: list[Path] = (),
    finished_only: bool = False,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every cell of the grid, ``jobs`` at a time (:func:`run_cells`; skipping finished
    ones, and taking identical finished runs from the ``reuse`` folders) and write
    ``results.json``, ``results.md`` and ``results.png`` (metric per grid value, mean and std
    over seeds).

    ``finished_only``: train nothing; report the cells that have finished (a grid value over
    the seeds that finished; values with none are left out), so a sweep still being trained can
    be shown as far as it has come."""
    grid = parse_grid(grid_specs)
    cells = grid_cells(configs, grid, seeds, list(fixed))
    for cell in cells:  # every cell's config is checked before the first one trains
        load_config(cell.configs, cell.overrides)
    known = finished_runs(list(reuse))
    start = time.time()
    trained = {} if finished_only else run_cells(cells, out, known, jobs)
    rows: dict[tuple, list[dict[str, Any]]] = {}
    seeds_of: dict[tuple, list[int]] = {}
    for cell in cells:
        summary = finished_cell(cell, out, known) if finished_only else trained[cell.name]
        if summary is None:
            continue
        key = tuple(cell.labels[k] for k, _ in grid)
        rows.setdefault(key, []).append(summary)
        seeds_of.setdefault(key, []).append(cell.labels["seed"])
    if not rows:
        raise AttnxferError(
            f"no finished cell of the sweep in {out}: run it without --finished-only"
        )
    keys = [k for k, _ in grid]
    summary_rows = []
    for key, summaries in rows.items():
        values = [metric_of(s, metric) for s in summaries]
        row = {**dict(zip(keys, key, strict=True)), **summarise(values), "seeds": seeds_of[key]}
        reused = [s["reused_from"] for s in summaries if "reused_from" in s]
        if reused:
            row["reused_from"] = reused
        summary_rows.append(row)
    cells = [s for summaries in rows.values() for s in summaries]
    result = {
        "title": title or f"sweep over {', '.join(keys) or 'seeds'}",
        "metric": metric,
        "configs": list(configs),
        "fixed": list(fixed),
        "grid": dict(grid),
        "seeds": seeds,
        "rows": summary_rows,
        "finished_only": finished_only,
        "command": command,
        "trained_on": trained_on(cells),
        "hardware": hardware(),
        "train_seconds": sum(s.get("seconds", 0.0) for s in cells),
        "wall_seconds_this_invocation": time.time() - start,
    }
    write_results(out, "results", result, sweep_markdown, plot_sweep)
    return result


def sweep_markdown(result: dict[str, Any]) -> str:
    keys = list(result["grid"])
    head = [*keys, f"{result['metric']} (mean ± std)", "seeds"]
    rows = [[*(row[k] for k in keys), pm(row), len(row["runs"])] for row in result["rows"]]
    lines = [f"# {result['title']}", "", *table(head, rows)]
    if result.get("finished_only"):
        lines += [
            "",
            "**The cells finished so far** (`--finished-only`): a grid value not "
            "listed has no finished run yet, and rows may stand on fewer seeds than asked.",
        ]
    lines += ["", f"Command: `{result['command']}`", ""]
    if "hardware" in result:
        lines += [
            *provenance(result),
            f"Training time of all cells: {result['train_seconds'] / 60:.1f} min.",
            "",
        ]
    reused = [(row, path) for row in result["rows"] for path in row.get("reused_from", [])]
    if reused:
        lines += ["Runs taken from identical finished runs (same resolved config) elsewhere:"]
        for row, path in reused:
            lines.append(f"- {', '.join(str(row[k]) for k in keys) or 'base'}: `{path}`")
        lines.append("")
    return "\n".join(lines)


def plot_sweep(result: dict[str, Any], path: Path) -> None:
    keys = list(result["grid"])
    labels = [", ".join(str(r[k]) for k in keys) or "base" for r in result["rows"]]
    means = [r["mean"] for r in result["rows"]]
    stds = [r["std"] for r in result["rows"]]
    with figure(path, figsize=(max(4, 0.8 * len(labels) + 2), 3.2)) as (_, ax):
        ax.bar(range(len(labels)), means, yerr=stds, capsize=3, color="#4C72B0")
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
        ax.set_ylabel(result["metric"])
        ax.set_title(result["title"], fontsize=10)
        low = min(m - s for m, s in zip(means, stds, strict=True))
        ax.set_ylim(max(0, low - 5), None)
