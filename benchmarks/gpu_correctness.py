"""Fused bf16 attention transfer against the eager float32 reference path.

For each model and image size and each of copy / distill: the same teacher, student and batch
run through ``impl="eager"`` in float32 (materialised maps, the plain reference) and through
``impl="fused"`` under bf16 autocast (what a GPU user runs). Printed: the relative error
``||a - b|| / ||b||`` of the logits, the transfer loss, the whole student gradient and the worst
single parameter's gradient, against bf16's unit roundoff (2^-8 = 3.9e-3); and beside it the same
errors of the eager path under bf16 autocast, what bfloat16 alone costs at this depth, so that
the fused kernels' own share can be read off.

The teacher's Q/K projections are scaled up (``--sharpen``) so that its maps are peaked like a
trained model's rather than near-uniform like a random one's; weights are otherwise random
(no pre-trained weights are needed to measure numerics).

    python benchmarks/gpu_correctness.py --device cuda --out docs/results/gpu_correctness.json
    python benchmarks/gpu_correctness.py --device cpu --model vit_tiny_patch16_224 --sizes 64
"""

from __future__ import annotations

import argparse
import copy
import json
import sys

import torch

BF16_EPS = 2.0**-8


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def _run(model, x, y, amp: bool):
    model.student.zero_grad(set_to_none=True)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
        out = model(x)
        task = torch.nn.functional.cross_entropy(out.logits.float(), y)
    (task + out.transfer_loss.float()).backward()
    grads = {
        n: p.grad.detach().clone()
        for n, p in model.student.named_parameters()
        if p.grad is not None
    }
    return out.logits.detach().float(), out.transfer_loss.detach().float(), grads


def compare(arch: str, size: int, mode: str, batch: int, device: torch.device, sharpen: float):
    import timm

    from attnxfer import AttentionTransfer, build_student, build_teacher

    torch.manual_seed(0)
    teacher = timm.create_model(arch, img_size=size, num_classes=0)
    with torch.no_grad():
        for blk in teacher.blocks:
            d = blk.attn.qkv.weight.shape[1]
            blk.attn.qkv.weight[: 2 * d] *= sharpen  # peaked maps, like a trained teacher's
    teacher = build_teacher(teacher).to(device)
    torch.manual_seed(1)
    student = build_student(teacher, num_classes=100).to(device)
    x = torch.randn(batch, 3, size, size, device=device)
    y = torch.randint(0, 100, (batch,), device=device)
    results = {}
    for name, impl, amp in (
        ("eager", "eager", False),
        ("eager_bf16", "eager", True),
        ("fused", "fused", True),
    ):
        fresh = copy.deepcopy(student)  # the same initial weights for every path
        model = AttentionTransfer(teacher, fresh, mode=mode, impl=impl).train()
        torch.manual_seed(2)  # same drop-path / dropout draws (none by default)
        results[name] = _run(model, x, y, amp)
        del model
    row = {
        "model": arch,
        "img_size": size,
        "tokens": teacher.patch_embed.num_patches + teacher.num_prefix_tokens,
        "mode": mode,
        "batch": batch,
        **_errors(results["fused"], results["eager"], mode),
    }
    # the same errors of the eager path under bf16 autocast: what bfloat16 alone costs, the
    # floor the fused path is read against
    row["eager_bf16"] = _errors(results["eager_bf16"], results["eager"], mode)
    return row


def _errors(run, reference, mode: str) -> dict:
    """Relative errors of ``run`` against ``reference`` (each ``_run``'s output)."""
    logits, loss, grads = run
    ref_logits, ref_loss, ref_grads = reference
    flat = torch.cat([grads[n].flatten().double() for n in ref_grads])
    ref_flat = torch.cat([ref_grads[n].flatten().double() for n in ref_grads])
    worst = max(ref_grads, key=lambda n: _rel(grads[n], ref_grads[n]))
    return {
        "logits": _rel(logits, ref_logits),
        "loss": _rel(loss, ref_loss) if mode == "distill" else None,
        "grad_total": _rel(flat, ref_flat),
        "grad_worst_param": _rel(grads[worst], ref_grads[worst]),
        "grad_worst_name": worst,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="vit_base_patch16_224")
    p.add_argument("--sizes", default="224,1024")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--sharpen", type=float, default=4.0)
    p.add_argument("--out", help="write the rows as JSON")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --device cpu", file=sys.stderr)
        return 2
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        for mode in ("copy", "distill"):
            rows.append(compare(args.model, size, mode, args.batch, device, args.sharpen))
            r = rows[-1]
            loss = "-" if r["loss"] is None else f"{r['loss']:.2e}"
            b = r["eager_bf16"]
            print(
                f"{r['model']} {r['img_size']}px {r['mode']:8} logits {r['logits']:.2e} "
                f"loss {loss} grad {r['grad_total']:.2e} worst-param {r['grad_worst_param']:.2e} "
                f"({r['grad_worst_name']}); eager bf16: logits {b['logits']:.2e} "
                f"grad {b['grad_total']:.2e}",
                flush=True,
            )
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    report = {"device": name, "torch": torch.__version__, "bf16_eps": BF16_EPS, "rows": rows}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
