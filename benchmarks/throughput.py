"""Training throughput of one recipe, per mode: the step alone, the data alone, end to end.

For each mode (default: scratch, finetune, copy, distill of the CPU tier) and each setting
(default: ``before``, the per-image PIL pipeline in float32 with the fused kernels, as attnxfer
trained until its data and kernel choices changed; ``after``, the recipe as it stands), in images
per second:

- (a) ``step``: the trainer's own training step (forward, backward, optimiser, EMA) on one batch
  of pre-made tensors, repeated;
- (b) ``data``: the training loader alone (decoding, augmentation, collation);
- (c) ``e2e``: ``attnxfer train`` in its own process on ``--e2e-steps`` batches, from its
  ``metrics.jsonl``: images per second since the epoch started (loader start-up and the first,
  slow steps count), and ``steady``, the rate between the first and the last logged step
  (a quarter of the run in, to the end), comparable with (a), which is timed after 3 warm-up
  steps.

All configurations are interleaved in rounds (benchmarks/rounds.py); the report gives medians
over rounds, the speed-up of each setting over the first, and (c)/(a).

    python benchmarks/throughput.py --rounds 3 --out docs/results/throughput_cpu
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from rounds import fmt, interleave, ratio

from attnxfer.config import load_config
from attnxfer.engine import Trainer
from attnxfer.report import cpu_name
from attnxfer.reproduce import METHOD_OVERRIDES

PARTS = ("step", "data", "e2e", "steady")
SETTINGS = {
    "before": ["data.pipeline=pil", "run.amp=none", "transfer.impl=fused"],
    "after": [],
    "compiled": ["run.compile=true"],
}


def _overrides(args, mode: str, setting: str) -> list[str]:
    return [
        f"teacher.source={args.teacher}",
        *METHOD_OVERRIDES[mode],
        *SETTINGS[setting],
        *args.overrides,
    ]


class Case:
    """One (mode, setting): a trainer built once, measured once per round."""

    def __init__(self, args, mode: str, setting: str, scratch_dir: Path) -> None:
        self.args, self.mode, self.setting = args, mode, setting
        self.dir = scratch_dir / f"{mode}-{setting}"
        self.overrides = _overrides(args, mode, setting)
        cfg = load_config([args.config], [*self.overrides, f"run.output={self.dir / 'step'}"])
        self.trainer = Trainer(cfg)
        self.batch = next(iter(self.trainer.train_loader))
        self.warm = False
        self.e2e_runs = 0

    def step(self) -> float:
        tr, n = self.trainer, self.args.steps
        tr.model.train()
        batches = itertools.repeat(self.batch)
        for _ in range(0 if self.warm else 3):
            tr._accumulate(batches, 1)
            tr._update()
        self.warm = True
        start = time.perf_counter()
        for _ in range(n):
            tr._accumulate(batches, 1)
            tr._update()
        return n * self.batch.images.shape[0] / (time.perf_counter() - start)

    def data(self) -> float:
        n, images = self.args.steps, 0
        start = time.perf_counter()
        for batch in itertools.islice(iter(self.trainer.train_loader), n):
            images += batch.images.shape[0]
        return images / (time.perf_counter() - start)

    def e2e(self) -> float:
        self.e2e_runs += 1
        out = self.dir / f"e2e{self.e2e_runs}"
        batch = self.trainer.cfg.data.batch_size
        cmd = [
            sys.executable,
            "-m",
            "attnxfer",
            "train",
            "-c",
            self.args.config,
            *self.overrides,
            f"data.train_subset={batch * self.args.e2e_steps}",
            "optim.epochs=1",
            f"run.log_every={max(1, self.args.e2e_steps // 4)}",
            f"run.output={out}",
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{shlex.join(cmd)} failed: {done.stderr.strip()[-500:]}")
        lines = (out / "metrics.jsonl").read_text().splitlines()
        logged = [r for r in map(json.loads, lines) if "img_per_s" in r]
        first, last = logged[0], logged[-1]
        # img_per_s at step s is s * batch / (seconds since the epoch started)
        seconds = [r["step"] * batch / r["img_per_s"] for r in (first, last)]
        self.steady = (last["step"] - first["step"]) * batch / (seconds[1] - seconds[0])
        return last["img_per_s"]

    def e2e_steady(self) -> float:
        return self.steady  # measured by the e2e run just before


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default="configs/cifar10/student_cpu.yaml")
    p.add_argument("--teacher", default="teachers/cifar10-mae-d128-l4/model.safetensors")
    p.add_argument("--modes", default="scratch,finetune,copy,distill")
    p.add_argument("--settings", default="before,after", help=f"of {', '.join(SETTINGS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps", type=int, default=10, help="timed steps (a) and batches (b)")
    p.add_argument("--e2e-steps", type=int, default=40, help="optimiser steps of each run (c)")
    p.add_argument("--out", help="write OUT.json and OUT.md")
    p.add_argument("overrides", nargs="*", help="section.key=value for every configuration")
    args = p.parse_args()
    modes, settings = args.modes.split(","), args.settings.split(",")
    hardware = f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"# throughput of {args.config} on {hardware}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        cases = {(m, s): Case(args, m, s, Path(tmp)) for m in modes for s in settings}
        measures = {}
        for (m, s), case in cases.items():
            measures[f"{m}/{s}/step"] = case.step
            measures[f"{m}/{s}/data"] = case.data
            measures[f"{m}/{s}/e2e"] = case.e2e
            measures[f"{m}/{s}/steady"] = case.e2e_steady
        values = interleave(measures, args.rounds)

    base = settings[0]
    rows = []
    for m in modes:
        for s in settings:
            key = f"{m}/{s}"
            row = {
                "mode": m,
                "setting": s,
                **{k: statistics.median(values[f"{key}/{k}"]) for k in PARTS},
                "runs": {k: values[f"{key}/{k}"] for k in PARTS},
                "e2e_over_step": ratio(values, f"{key}/e2e", f"{key}/step"),
                "steady_over_step": ratio(values, f"{key}/steady", f"{key}/step"),
            }
            if s != base:
                row["e2e_speedup"] = ratio(values, f"{key}/e2e", f"{m}/{base}/e2e")
                row["step_speedup"] = ratio(values, f"{key}/step", f"{m}/{base}/step")
            rows.append(row)

    command = "python " + shlex.join(sys.argv)
    lines = [
        "# Training throughput (images/s)",
        "",
        f"Command: `{command}`  ",
        f"Hardware: {hardware}; nothing else running.  ",
        f"Recipe: `{args.config}` with the teacher `{args.teacher}`; settings: "
        + "; ".join(f"`{s}` = `{' '.join(SETTINGS[s]) or 'the recipe as is'}`" for s in settings)
        + ".  ",
        f"{args.rounds} rounds, every configuration once per round; medians over rounds, ratios "
        "taken within a round (median, min-max). (a) step on pre-made tensors, "
        f"{args.steps} steps; (b) the loader alone, {args.steps} batches; (c) `attnxfer train` "
        f"end to end, {args.e2e_steps} steps.",
        "",
        "| mode | setting | (a) step | (b) data | (c) end to end | (c) steady | (c)/(a) | "
        "(c) steady/(a) | (c) speed-up | (a) speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        up = [fmt(r[k]) if k in r else "1" for k in ("e2e_speedup", "step_speedup")]
        lines.append(
            f"| {r['mode']} | {r['setting']} | {r['step']:.0f} | {r['data']:.0f} | "
            f"{r['e2e']:.0f} | {r['steady']:.0f} | {fmt(r['e2e_over_step'])} | "
            f"{fmt(r['steady_over_step'])} | {up[0]} | {up[1]} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(f"{args.out}.md").write_text(text)
        record = {"command": command, "hardware": hardware, "settings": SETTINGS, "rows": rows}
        Path(f"{args.out}.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
