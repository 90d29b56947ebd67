"""Results files: the machine they ran on, summaries over seeds, markdown tables, figures.

Every command that writes results (``sweep``, ``reproduce``, ``analyze``, ``pretrain``'s model
card, ``demo``) goes through :func:`write_results`, :func:`table` and :func:`figure`, so the files
look alike and a figure never needs a display.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The processor's model name and its vector, bfloat16 and AMX instruction sets (they decide
    what ``run.amp=auto`` picks and how fast a step is), from ``/proc/cpuinfo`` on Linux, else
    the platform's word."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    name = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), "CPU")
    flags = next((x.split(":", 1)[1].split() for x in lines if x.startswith("flags")), [])
    extra = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return f"{name} ({', '.join(extra)})" if extra else name


def hardware() -> str:
    """The machine in one line, for results tables."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"{name} (CUDA {torch.version.cuda}), torch {torch.__version__}"
    return f"{cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}, CPU only"


def device_name(device: Any, processes: int = 1) -> str:
    """The processor a run trains on, in one line (recorded in its ``summary.json``): the GPU's
    name, or the CPU's with the threads torch uses; ``N x`` in front for N processes."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        name = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    elif device.type == "cpu":
        name = f"{cpu_name()}, {torch.get_num_threads()} threads"
    else:
        name = device.type
    return f"{processes} x {name}" if processes > 1 else name


#: how a report names the precision a run trained in (``summary.json``'s ``amp``)
PRECISION = {"none": "float32", "bf16": "bfloat16", "fp16": "float16"}


def trained_on(summaries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The runs behind a result grouped by the processor and precision they trained in (their
    ``summary.json``; records older than the ``hardware`` field say ``processor not recorded``):
    ``[{"hardware", "precision", "runs", "seconds"}]``, most runs first."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for s in summaries:
        key = (
            s.get("hardware") or "processor not recorded",
            PRECISION.get(s.get("amp"), "precision not recorded"),
        )
        group = groups.setdefault(
            key, {"hardware": key[0], "precision": key[1], "runs": 0, "seconds": 0.0}
        )
        group["runs"] += 1
        group["seconds"] += s.get("seconds", 0.0)
    return sorted(groups.values(), key=lambda g: (-g["runs"], g["hardware"], g["precision"]))


def trained_on_text(groups: Sequence[dict[str, Any]]) -> str:
    """One line of :func:`trained_on`'s groups: ``H200 (CUDA 13.0), bfloat16: 3 runs, 12 min``."""

    def span(seconds: float) -> str:
        return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min"

    return "; ".join(
        f"{g['hardware']}, {g['precision']}: {g['runs']} run{'s' * (g['runs'] != 1)}, "
        f"{span(g['seconds'])}"
        for g in groups
    )


def provenance(result: dict[str, Any], end: str = "  ") -> list[str]:
    """A report's lines on where its runs trained (``result["trained_on"]``, by processor and
    precision) and which machine wrote it (``result["hardware"]``); a result written before runs
    recorded their processor has a ``Hardware:`` line alone. ``end`` closes each line (two
    spaces: a markdown line break)."""
    if "trained_on" not in result:
        return [f"Hardware: {result['hardware']}{end}"]
    return [
        f"Trained on: {trained_on_text(result['trained_on'])}{end}",
        f"Report written on: {result['hardware']}{end}",
    ]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarise(values: Sequence[float]) -> dict[str, Any]:
    """``{"mean", "std", "runs"}`` of per-seed values."""
    mean, std = mean_std(values)
    return {"mean": mean, "std": std, "runs": list(values)}


def gap_recovered(value: float, scratch: float, finetune: float) -> float | None:
    """Share (in %) of the scratch-to-fine-tune gap that ``value`` recovers; None without a gap."""
    return None if finetune == scratch else 100 * (value - scratch) / (finetune - scratch)


def gap_on_shared_seeds(
    values: dict[int, float], scratch: dict[int, float], finetune: dict[int, float]
) -> tuple[float | None, list[int]]:
    """The share of the gap (:func:`gap_recovered`) that a method's per-seed top-1 ``values``
    recover, on the means over the seeds where it, scratch and fine-tune have all finished, and
    those seeds: a gap never sets one seed's student against another seed's references.
    ``(None, [])`` where no seed has all three."""
    seeds = sorted(set(values) & set(scratch) & set(finetune))
    if not seeds:
        return None, []
    scratch_mean, finetune_mean, mean = (
        statistics.fmean(d[s] for s in seeds) for d in (scratch, finetune, values)
    )
    return gap_recovered(mean, scratch_mean, finetune_mean), seeds


def lead_on_shared_seeds(
    values: dict[int, float], scratch: dict[int, float]
) -> tuple[float | None, list[int]]:
    """How many points a method's per-seed top-1 ``values`` lie above the scratch student's, on
    the means over the seeds where both have finished, and those seeds; ``(None, [])`` where
    none has both. Beside :func:`gap_on_shared_seeds`: a share can rise because the gap narrows
    while the lead stays put."""
    seeds = sorted(set(values) & set(scratch))
    if not seeds:
        return None, []
    return statistics.fmean(values[s] - scratch[s] for s in seeds), seeds


def pm(d: dict[str, Any]) -> str:
    """``mean ± std`` of a :func:`summarise` record, two decimals."""
    return f"{d['mean']:.2f} ± {d['std']:.2f}"


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A markdown table as lines: header, rule, one line per row (cells through ``str``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


@contextlib.contextmanager
def figure(path: Path, *args: Any, dpi: int = 120, **kwargs: Any) -> Iterator[tuple[Any, Any]]:
    """``with figure(path, rows, cols, figsize=...) as (fig, axes):`` draw, and the figure is
    laid out, saved to ``path`` and closed (matplotlib's file-only backend, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(*args, **kwargs)
    try:
        yield fig, axes
        fig.tight_layout()
        fig.savefig(path, dpi=dpi)
    finally:
        plt.close(fig)


def colour(i: int, n: int) -> Any:
    """The colour of series ``i`` of ``n`` in one plot: matplotlib's default ten while they
    suffice, else the 20 of ``tab20``, so no two series of up to 20 share a colour."""
    if n <= 10:
        return f"C{i}"
    import matplotlib

    return matplotlib.colormaps["tab20"](i % 20)


def write_results(
    out: Path,
    stem: str,
    record: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None] | None = None,
) -> None:
    """``out/stem.json`` (the record), ``out/stem.md`` (``markdown(record)``) and, with ``plot``,
    ``out/stem.png``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.json").write_text(json.dumps(record, indent=1))
    (out / f"{stem}.md").write_text(markdown(record))
    if plot is not None:
        plot(record, out / f"{stem}.png")
