"""bfloat16 against float32 matmuls on this machine, at the CPU tier's sizes, and what
``run.amp=auto`` picks here.

A CPU without bfloat16 in hardware (no AVX512-BF16, no AMX) runs bf16 autocast through
emulation; this prints how much that costs, so the choice ``run.amp=auto`` makes can be checked
on any machine. Each configuration is one linear layer of the CIFAR-10 CPU-tier student (batch
128 x 65 tokens, width 128), forward and backward, under ``torch.autocast`` or in float32;
configurations interleaved in rounds (benchmarks/rounds.py), ratios per round.

    python benchmarks/matmul_precision.py --rounds 5
"""

from __future__ import annotations

import argparse
import time

import torch
from rounds import fmt, interleave, ratio

from attnxfer.report import cpu_name
from attnxfer.runtime import native_bf16, resolve_amp

SHAPES = {"qkv 128->384": (128, 384), "fc1 128->512": (128, 512), "fc2 512->128": (512, 128)}


def timer(rows: int, shape: tuple[int, int], bf16: bool, reps: int):
    x = torch.randn(rows, shape[0], requires_grad=True)
    layer = torch.nn.Linear(*shape)

    def once() -> float:
        start = time.perf_counter()
        for _ in range(reps):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = layer(x)
            y.float().sum().backward()
        return (time.perf_counter() - start) / reps * 1e3  # ms

    once()  # warm-up
    return once


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=128 * 65, help="batch x tokens")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cpu = torch.device("cpu")
    print(
        f"# {cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
        f"bf16 in hardware: {native_bf16(cpu)}; run.amp=auto picks: {resolve_amp(cpu, 'auto')}"
    )
    configs = {}
    for name, shape in SHAPES.items():
        for precision in ("fp32", "bf16"):
            bf16 = precision == "bf16"
            configs[f"{name} {precision}"] = timer(args.rows, shape, bf16, args.reps)
    values = interleave(configs, args.rounds)
    print(f"\n{'layer':<14} {'fp32 ms':>8} {'bf16 ms':>8}  bf16 / fp32 time (min-max over rounds)")
    for name in SHAPES:
        fp32, bf16 = (sorted(values[f"{name} {p}"])[args.rounds // 2] for p in ("fp32", "bf16"))
        slower = fmt(ratio(values, f"{name} bf16", f"{name} fp32"))
        print(f"{name:<14} {fp32:8.2f} {bf16:8.2f}  {slower}")


if __name__ == "__main__":
    main()
