"""Cost of one training step of each mode, as a ratio to fine-tuning the same student.

Each configuration (mode x implementation) runs in its own process; the configurations are
interleaved in rounds (benchmarks/rounds.py: A B C, A B C, ...), each process reports the median
time of a training step (forward, backward, AdamW step) and its peak memory, and the ratios to
fine-tuning are taken within each round (median over rounds, min-max). Memory is
``torch.cuda.max_memory_allocated`` on GPU, peak resident set size on CPU (``ru_maxrss``; it
includes the process's baseline, so ``extra_mb`` over fine-tuning is printed too). Teacher
and student are randomly initialised: cost does not depend on the weights.

    python benchmarks/step_cost.py --model vit_small_patch16_224 --batch 8 --device cpu
    python benchmarks/step_cost.py --model vit_large_patch16_224 --batch 16 --dtype bf16 \
        --device cuda

Against the paper's reference implementation (``--reference``: the file of your own clone of its
repository that defines ``DualVisionTransformer``; attnxfer neither ships it nor imports it
anywhere else): fine-tuning, copy and distillation, attnxfer's and the reference's, with the
architecture of the timm ``--model``, the same layers (``--layers end_layer:-K``, the reference's
``end_layer=-K``), the same loss (cross-entropy + 3 x the distillation loss) and AdamW:

    python benchmarks/step_cost.py --model vit_small_patch16_224 --batch 8 \
        --layers end_layer:-3 --reference PATH/TO/CLONE/FILE_WITH_DualVisionTransformer.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from rounds import fmt, interleave, ratio

from attnxfer.report import cpu_name

CONFIGS = [
    ("finetune", None),
    ("scratch", None),
    ("copy", None),
    ("copy", "fused"),
    ("copy", "eager"),
    ("distill", None),
    ("distill", "fused"),
    ("distill", "eager"),
    ("feature_distill", None),
]


REFERENCE_CONFIGS = [
    ("finetune", None),
    ("copy", None),
    ("ref-copy", None),
    ("distill", None),
    ("ref-distill", None),
]
#: the reference's distillation weight (its released recipe), attnxfer's default too
REFERENCE_WEIGHT = 3.0


def _end_layer(layers: str | None) -> int:
    """``end_layer:-K`` -> -K, the only layer choice the reference's model takes."""
    if not layers or not layers.startswith("end_layer:"):
        raise SystemExit("--reference needs --layers end_layer:-K (the reference's only choice)")
    return int(layers.split(":", 1)[1])


def reference_model(args: argparse.Namespace, mode: str):
    """The reference's ``DualVisionTransformer`` (from the file ``args.reference``) with the
    architecture of the timm ``args.model``: ``forward(x)`` returns ``(logits, transfer loss)``
    as attnxfer's models do."""
    import importlib.util
    from functools import partial

    import timm
    import torch

    spec = importlib.util.spec_from_file_location("reference_dual_vit", args.reference)
    if spec is None or not Path(args.reference).is_file():
        raise SystemExit(f"--reference {args.reference}: no such file")
    ref = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ref)
    with torch.device("meta"):
        vit = timm.create_model(args.model, img_size=args.img_size)
    block = vit.blocks[0]
    kwargs = {
        "img_size": args.img_size,
        "patch_size": vit.patch_embed.patch_size[0],
        "embed_dim": vit.embed_dim,
        "depth": len(vit.blocks),
        "num_heads": block.attn.num_heads,
        "mlp_ratio": block.mlp.fc1.out_features / vit.embed_dim,
        "qkv_bias": block.attn.qkv.bias is not None,
        "norm_layer": partial(torch.nn.LayerNorm, eps=block.norm1.eps),
        "num_classes": 1000,
        "global_pool": True,  # the MAE fine-tuning convention the reference trains with
    }
    dual = ref.DualVisionTransformer(
        mode=mode, teacher_kwargs=kwargs, student_kwargs=kwargs, end_layer=_end_layer(args.layers)
    )
    dual.teacher.requires_grad_(False)

    class Reference(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.dual, self.student = dual, dual.student

        def forward(self, x):
            out = self.dual(x)
            if isinstance(out, tuple):
                return out[0], REFERENCE_WEIGHT * out[1]
            return out, x.new_zeros(())

    return Reference()


def worker(args: argparse.Namespace) -> dict:
    import timm
    import torch

    from attnxfer import AttentionTransfer, build_student, build_teacher

    torch.manual_seed(0)
    device = torch.device(args.device)
    mode, impl = args.worker.split(":")
    if mode.startswith("ref-"):
        model = reference_model(args, mode[len("ref-") :]).to(device)

        def outputs(x):
            return model(x)
    else:
        kwargs = {"img_size": args.img_size}
        teacher = build_teacher(timm.create_model(args.model, **kwargs)).to(device)
        student = build_student(teacher, num_classes=1000).to(device)
        extra = {"impl": impl} if impl != "None" else {}
        if args.layers and mode in ("copy", "distill"):
            extra["layers"] = args.layers
        model = AttentionTransfer(
            teacher if mode != "scratch" else None, student, mode=mode, **extra
        )

        def outputs(x):
            out = forward(x)
            return out.logits, out.transfer_loss

    model.train()
    opt = torch.optim.AdamW(model.student.parameters(), lr=1e-4)
    x = torch.randn(args.batch, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 1000, (args.batch,), device=device)
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")
    forward = torch.compile(model) if args.compile else model

    def step() -> None:
        with amp:
            logits, transfer_loss = outputs(x)
            loss = torch.nn.functional.cross_entropy(logits.float(), y) + transfer_loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "mode": mode,
        "impl": impl,
        "median_s": statistics.median(times),
        "min_s": min(times),
        "peak_mb": peak_mb,
    }


def _fits(args: argparse.Namespace, mode: str, impl: str | None, batch: int) -> bool:
    argv = [a for a in sys.argv[1:] if a != "--max-batch"]
    cmd = [sys.executable, __file__, *argv, "--batch", str(batch), "--steps", "1"]
    cmd += ["--warmup", "1", "--worker", f"{mode}:{impl}"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode and "out of memory" not in done.stderr.lower():
        raise RuntimeError(f"{mode} {impl} batch {batch}: {done.stderr.strip()[-300:]}")
    return done.returncode == 0


def max_batches(args: argparse.Namespace, limit: int = 4096) -> None:
    """Largest batch of each configuration that trains without running out of memory."""
    rows = []
    for mode, impl in REFERENCE_CONFIGS if args.reference else CONFIGS:
        low, high = 0, 1
        while high <= limit and _fits(args, mode, impl, high):
            low, high = high, high * 2
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (mid, high) if _fits(args, mode, impl, mid) else (low, mid)
        rows.append({"mode": mode, "impl": impl, "max_batch": low})
        print(f"{mode:16} {impl or '-':6} largest batch {low}", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"setting": vars(args), "rows": rows}, f, indent=1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vit_small_patch16_224")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="torch.compile the whole model")
    p.add_argument("--rounds", type=int, default=3, help="every configuration once per round")
    p.add_argument(
        "--max-batch",
        action="store_true",
        help="instead of timing: the largest batch each configuration fits (CUDA; doubling, "
        "then bisection, one process per trial)",
    )
    p.add_argument("--layers", help="transferred layers of copy and distillation (default: all)")
    p.add_argument(
        "--reference",
        help="the reference implementation's file defining DualVisionTransformer: compare "
        "attnxfer against it (needs --layers end_layer:-K)",
    )
    p.add_argument(
        "--only",
        help="comma-separated configurations to time beside fine-tuning, MODE or MODE:IMPL "
        "(default: all), e.g. copy,distill,distill:fused",
    )
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    import torch

    hw = (
        torch.cuda.get_device_name(0)
        if args.device == "cuda"
        else f"{cpu_name()}, {torch.get_num_threads()} threads"
    )
    head = (
        f"# step cost: {args.model} {args.img_size}px batch {args.batch} {args.dtype} on "
        f"{args.device} ({hw}), torch {torch.__version__}, median of {args.steps} steps"
    )
    print(head, flush=True)
    if args.max_batch:
        return max_batches(args)
    reports: dict[str, list[dict]] = {}

    def measure(mode: str, impl: str | None):
        def run() -> float:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--worker", f"{mode}:{impl}"]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"{mode} {impl}: failed: {done.stderr.strip()[-500:]}")
            report = json.loads(done.stdout.strip().splitlines()[-1])
            reports.setdefault(f"{mode}:{impl}", []).append(report)
            return report["median_s"]

        return run

    configs = REFERENCE_CONFIGS if args.reference else CONFIGS
    if args.only:
        wanted = {tuple(c.split(":")) if ":" in c else (c, None) for c in args.only.split(",")}
        unknown = wanted - set(configs)
        if unknown:
            names = ", ".join(m if i is None else f"{m}:{i}" for m, i in configs)
            raise SystemExit(f"--only: unknown configuration(s) {sorted(unknown)}; choose {names}")
        configs = [c for c in configs if c in wanted or c == ("finetune", None)]
    if args.reference:
        _end_layer(args.layers)
    times = interleave({f"{m}:{i}": measure(m, i) for m, i in configs}, args.rounds)
    memory = {k: [r["peak_mb"] for r in v] for k, v in reports.items()}
    print(
        f"{'mode':16} {'impl':6} {'median s':>9} {'x finetune (min-max)':>21} {'peak MB':>8} "
        f"{'x finetune':>10} {'extra MB':>9}"
    )
    rows = []
    for mode, impl in configs:
        key = f"{mode}:{impl}"
        time_ratio = ratio(times, key, "finetune:None")
        mem_ratio = ratio(memory, key, "finetune:None")
        peak = statistics.median(memory[key])
        rows.append(
            {
                "mode": mode,
                "impl": impl or ("-" if mode.startswith("ref-") else "auto"),
                "median_s": statistics.median(times[key]),
                "time_ratio": time_ratio,
                "peak_mb": peak,
                "mem_ratio": mem_ratio,
                "extra_mb": peak - statistics.median(memory["finetune:None"]),
            }
        )
        r = rows[-1]
        print(
            f"{mode:16} {r['impl']:6} {r['median_s']:9.3f} {fmt(time_ratio):>21} {peak:8.0f} "
            f"{mem_ratio['median']:10.2f} {r['extra_mb']:9.0f}"
        )
    record = {"setting": vars(args), "hardware": hw, "rows": rows}
    if args.reference:
        record["attnxfer_speedup"] = {}
        for mode in ("copy", "distill"):
            up = ratio(times, f"ref-{mode}:None", f"{mode}:None")
            record["attnxfer_speedup"][mode] = up
            print(f"{mode}: attnxfer is {fmt(up)}x as fast as the reference per step")
        # a distillation step holds a whole fine-tuning step (the student's forward and
        # backward), so no implementation beats the reference by more than this
        ceiling = ratio(times, "ref-distill:None", "finetune:None")
        record["distill_ceiling"] = ceiling
        print(f"distill: at most {fmt(ceiling)}x (the reference's step over a fine-tuning step)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(record, f, indent=1)


if __name__ == "__main__":
    main()
