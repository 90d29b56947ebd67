"""Shared test helpers: tiny timm ViTs, real data paths, the tiny CLI recipe, torchrun.

Fixtures live in conftest.py; everything a test module imports lives here.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from attnxfer.cli import main
from attnxfer.models import ModelSpec

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
REAL_VIT = SHARED_DATA / "vit-checkpoints" / "vit_d128_l4_h4_p4_cifar10.safetensors"

#: Tiny members of each supported family: (timm architecture, overrides). Family-specific
#: components (registers, layer scale, pre-norm, no class token, qk-norm) are kept.
TINY = dict(img_size=24, patch_size=4, embed_dim=32, depth=3, num_heads=4, num_classes=7)
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit": ("deit_tiny_patch16_224", {}),
    "dinov2_reg": ("vit_small_patch14_reg4_dinov2", {}),  # registers + layer scale
    "clip": ("vit_base_patch16_clip_224", {}),  # pre-norm
    "qk_norm": ("vit_tiny_patch16_224", {"qk_norm": True}),
    "no_cls_avg": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
    "one_head": ("vit_tiny_patch16_224", {"num_heads": 1}),
    "many_heads": ("vit_tiny_patch16_224", {"num_heads": 8}),
}

#: a tiny student recipe for the command line: 16 px digits, 2 blocks, 1 epoch
TINY_STUDENT = [
    "student.arch=vit_tiny_patch16_224",
    "student.model_args={img_size: 16, patch_size: 4, embed_dim: 32, depth: 2, num_heads: 2}",
    "data.img_size=16",
    "data.batch_size=32",
    "data.mean=[0.5,0.5,0.5]",
    "data.std=[0.5,0.5,0.5]",
    "optim.epochs=1",
    "optim.warmup_epochs=0.2",
    "run.log_every=5",
]
#: environment of subprocesses that must be reproducible (one thread, fixed hashing)
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def cli(*args: str) -> int:
    """``attnxfer ARGS...`` in this process; returns the exit status."""
    return main(list(args))


def tiny_vit(family: str = "vit", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny, randomly initialised timm ViT of ``family`` built through a ModelSpec."""
    arch, extra = FAMILIES[family]
    torch.manual_seed(seed)
    args = {**TINY, **extra, **overrides}
    if "dinov2" in arch:
        args.setdefault("img_size", 24)
    return ModelSpec(arch, args).create()


def tiny_teacher_file(folder: Path, **overrides) -> Path:
    """A tiny random teacher on disk (safetensors + JSON sidecar), matching TINY_STUDENT."""
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    args.update(overrides)
    model = tiny_vit("vit", **args)
    save_file(model.state_dict(), folder / "teacher.safetensors")
    (folder / "teacher.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "args": args})
    )
    return folder / "teacher.safetensors"


def images(batch: int = 2, size: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g, dtype=torch.get_default_dtype())


def torchrun(nproc: int = 2) -> list[str]:
    """The start of a ``torchrun`` command line for ``nproc`` local processes."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe), "--standalone", "--nproc_per_node", str(nproc), "-m", "attnxfer"]
