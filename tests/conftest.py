"""Shared helpers: tiny timm ViTs, real data paths, deterministic float64 setup."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

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


def tiny_vit(family: str = "vit", seed: int = 0, **overrides) -> torch.nn.Module:
    """A tiny, randomly initialised timm ViT of ``family`` built through a ModelSpec."""
    arch, extra = FAMILIES[family]
    torch.manual_seed(seed)
    args = {**TINY, **extra, **overrides}
    if "dinov2" in arch:
        args.setdefault("img_size", 24)
    return ModelSpec(arch, args).create()


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def real_vit_path() -> Path:
    if not REAL_VIT.is_file():
        pytest.skip(f"real checkpoint not found at {REAL_VIT} (../shared/data is absent)")
    return REAL_VIT


def images(batch: int = 2, size: int = 24, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=g, dtype=torch.get_default_dtype())


def torchrun(nproc: int = 2) -> list[str]:
    """The start of a ``torchrun`` command line for ``nproc`` local processes."""
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe), "--standalone", "--nproc_per_node", str(nproc), "-m", "attnxfer"]


@pytest.fixture
def teacher_file(tmp_path) -> Path:
    """A tiny random teacher on disk (safetensors + JSON sidecar), matching TINY_STUDENT."""
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    model = tiny_vit("vit", **args)
    save_file(model.state_dict(), tmp_path / "teacher.safetensors")
    (tmp_path / "teacher.json").write_text(
        json.dumps({"architecture": "vit_tiny_patch16_224", "args": args})
    )
    return tmp_path / "teacher.safetensors"


__all__ = ["FAMILIES", "REAL_VIT", "SHARED_DATA", "images", "tiny_vit", "torchrun"]
