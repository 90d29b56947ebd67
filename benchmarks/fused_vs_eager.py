"""Agreement of the fused and eager implementations, for every routed mode and ViT family.

Prints, per (family, mode, dtype), the largest relative error of logits, transfer loss and
student gradients between ``impl="fused"`` and ``impl="eager"`` on one training step of tiny
random models. Gradients: per-parameter max-abs relative error with a floor at 1e-6 of the
largest gradient (float64) and the norm-relative error of the whole gradient (both dtypes).

    python benchmarks/fused_vs_eager.py [--device cuda] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform

import torch

from attnxfer import MODES, AttentionTransfer, build_student, build_teacher
from attnxfer.models import ModelSpec

TINY = dict(img_size=24, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=7)
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit": ("deit_tiny_patch16_224", {}),
    "dinov2_reg4_layerscale": ("vit_small_patch14_reg4_dinov2", {}),
    "clip_prenorm": ("vit_base_patch16_clip_224", {}),
    "qk_norm": ("vit_tiny_patch16_224", {"qk_norm": True}),
    "no_cls_avgpool": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "one_head": ("vit_tiny_patch16_224", {"num_heads": 1}),
    "eight_heads": ("vit_tiny_patch16_224", {"num_heads": 8}),
}


def step(family: str, mode: str, impl: str, dtype: torch.dtype, device: str):
    """One training step of a tiny pair: (logits, transfer loss, {param: grad}), all float64."""
    arch, extra = FAMILIES[family]
    torch.manual_seed(0)
    teacher = build_teacher(ModelSpec(arch, {**TINY, **extra}).create().to(device, dtype))
    student = build_student(teacher, num_classes=5).to(device, dtype)
    x = torch.randn(2, 3, 24, 24).to(device, dtype)  # same numbers whatever the dtype
    model = AttentionTransfer(teacher, student, mode=mode, impl=impl).train()
    out = model(x)
    (out.logits.square().mean() + out.transfer_loss).backward()
    grads = {n: p.grad.double() for n, p in student.named_parameters() if p.grad is not None}
    return out.logits.detach().double(), out.transfer_loss.detach().double(), grads


def _flat(grads: dict) -> torch.Tensor:
    return torch.cat([grads[n].flatten() for n in sorted(grads)])


def measure(family: str, mode: str, device: str) -> dict[str, float]:
    """float64 fused vs eager, and each float32 path against the float64 eager truth."""
    f64, e64 = (step(family, mode, impl, torch.float64, device) for impl in ("fused", "eager"))
    f32, e32 = (step(family, mode, impl, torch.float32, device) for impl in ("fused", "eager"))
    floor = 1e-6 * max(g.abs().max().item() for g in e64[2].values())
    per_param = max(
        ((f64[2][n] - g).abs().max() / max(g.abs().max().item(), floor)).item()
        for n, g in e64[2].items()
    )
    truth = _flat(e64[2])

    def rel(a: torch.Tensor) -> float:
        return ((a - truth).norm() / truth.norm()).item()

    return {
        "f64_logits": ((f64[0] - e64[0]).abs().max() / e64[0].abs().max()).item(),
        "f64_loss": abs(f64[1] - e64[1]).item() / max(abs(e64[1].item()), 1e-30),
        "f64_grad_per_param": per_param,
        "f32_fused_grad_vs_f64": rel(_flat(f32[2])),
        "f32_eager_grad_vs_f64": rel(_flat(e32[2])),
        "f32_fused_logits_vs_f64": ((f32[0] - e64[0]).abs().max() / e64[0].abs().max()).item(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    modes = [m for m, spec in MODES.items() if spec.route is not None]
    device = torch.device(args.device)
    hw = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(f"# fused vs eager: torch {torch.__version__}, device {args.device} ({hw})")
    print("# f64: fused vs eager; f32: each implementation's gradient vs the float64 eager truth")
    cols = list(measure("vit", "copy", args.device))
    print(f"{'family':24} {'mode':10} " + " ".join(f"{c:>12.12}" for c in cols))
    rows = []
    for family in FAMILIES:
        for mode in modes:
            r = measure(family, mode, args.device)
            rows.append({"family": family, "mode": mode, **r})
            print(f"{family:24} {mode:10} " + " ".join(f"{r[c]:12.1e}" for c in cols))
    print("# worst: " + ", ".join(f"{c} {max(r[c] for r in rows):.1e}" for c in cols))
    ratio = max(r["f32_fused_grad_vs_f64"] / r["f32_eager_grad_vs_f64"] for r in rows)
    print(f"# worst ratio of float32 gradient error, fused / eager: {ratio:.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": args.device, "hardware": hw, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
