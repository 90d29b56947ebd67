"""Where materialised maps stop beating the fused kernels: one distilled attention layer.

For each token count, the forward and backward of one layer's distillation loss plus the layer's
own attention output, once with materialised maps (``eager``: the maps, then PyTorch's
materialising SDPA backend) and once with the fused path (``fused``: attnxfer's no-map loss and
PyTorch's default SDPA kernel). Configurations are interleaved in rounds (benchmarks/rounds.py);
the ratio fused/eager is taken within each round. ``impl="auto"`` uses this crossover
(``attnxfer.routes.CPU_EAGER_MAX_TOKENS``).

    python benchmarks/attention_crossover.py --tokens 65,197,401,785,1025
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from rounds import fmt, interleave, ratio
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnxfer import functional as AF
from attnxfer.report import cpu_name


def layer(tokens: int, impl: str, batch: int, heads: int, dim: int, device: str, steps: int):
    g = torch.Generator().manual_seed(0)

    def make(grad: bool) -> torch.Tensor:
        x = torch.randn(batch, heads, tokens, dim, generator=g).to(device)
        return x.requires_grad_(grad)

    q_t, k_t = make(False), make(False)
    q, k, v = make(True), make(True), make(True)
    scale = dim**-0.5

    def step() -> None:
        if impl == "eager":
            loss = AF.attention_cross_entropy_eager(AF.attention_map(q_t, k_t, scale), q, k, scale)
            with sdpa_kernel([SDPBackend.MATH]):
                out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:
            loss = AF.attention_cross_entropy_fused(q_t, k_t, scale, q, k, scale)
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        (loss + out.square().mean()).backward()

    step()  # warm-up

    def timed() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            step()
        if device == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) / steps * 1000

    return timed


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", default="65,197,401,785,1025")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--dim", type=int, default=64, help="head dim")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    tokens = [int(t) for t in args.tokens.split(",")]
    print(
        f"# one distilled attention layer, batch {args.batch}, {args.heads} heads of "
        f"{args.dim}, {args.device} ({cpu_name()}, {torch.get_num_threads()} threads), "
        f"torch {torch.__version__}; ms per forward+backward, medians of {args.rounds} rounds",
        flush=True,
    )
    cases = {
        f"{n}:{impl}": layer(n, impl, args.batch, args.heads, args.dim, args.device, args.steps)
        for n in tokens
        for impl in ("eager", "fused")
    }
    ms = interleave(cases, args.rounds)
    print(f"{'tokens':>6} {'eager ms':>9} {'fused ms':>9} {'fused/eager (min-max)':>22}")
    result = {}
    for n in tokens:
        r = ratio(ms, f"{n}:fused", f"{n}:eager")
        e, f = statistics.median(ms[f"{n}:eager"]), statistics.median(ms[f"{n}:fused"])
        print(f"{n:6d} {e:9.1f} {f:9.1f} {fmt(r):>22}")
        result[n] = r["median"]
    return result


if __name__ == "__main__":
    main()
