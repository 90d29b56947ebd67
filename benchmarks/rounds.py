"""Timing on a noisy shared machine: configurations interleaved in rounds, ratios per round.

Each round measures every configuration once, in the same order (A B C, A B C, ...), so slow
spells of the machine hit all of them alike; a ratio is taken within each round and the median of
those per-round ratios is reported with its spread (min and max over rounds).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable


def interleave(configs: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """``{name: [value of round 0, value of round 1, ...]}``: each ``configs[name]()`` once per
    round, in the dict's order, ``rounds`` times."""
    values: dict[str, list[float]] = {name: [] for name in configs}
    for r in range(rounds):
        for name, measure in configs.items():
            values[name].append(measure())
            print(f"round {r + 1}/{rounds} {name}: {values[name][-1]:.4g}", flush=True)
    return values


def ratio(values: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Median, min and max over rounds of ``values[num][r] / values[den][r]``."""
    per_round = [a / b for a, b in zip(values[num], values[den], strict=True)]
    return {
        "median": statistics.median(per_round),
        "min": min(per_round),
        "max": max(per_round),
        "rounds": per_round,
    }


def fmt(r: dict[str, float]) -> str:
    return f"{r['median']:.2f} ({r['min']:.2f}-{r['max']:.2f})"
