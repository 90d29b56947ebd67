"""Looking at attention: per-layer maps of any timm ViT (or a routed student)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from . import functional as AF
from .routes import _Route


@torch.no_grad()
def attention_maps(model: nn.Module, images: Tensor) -> list[Tensor]:
    """Every block's own attention maps ``[B, H, N, N]`` for ``images``, first block first.

    Works on a plain timm ViT, a teacher with taps, or a student with routes: each block's
    attention input is captured by a forward hook and its maps recomputed from ``qkv``
    (and qk-norm). For a copy-mode student this is the student's *own* Q/K map, not the
    teacher's map it uses.
    """
    blocks = model.blocks
    inputs: dict[int, Tensor] = {}
    hooks = [
        blk.attn.register_forward_hook(lambda m, a, o, i=i: inputs.__setitem__(i, a[0]))
        for i, blk in enumerate(blocks)
    ]
    try:
        model(images)
    finally:
        for h in hooks:
            h.remove()
    if len(inputs) != len(blocks):  # a hook that never fired must not go unnoticed
        raise RuntimeError(f"captured {len(inputs)} of {len(blocks)} attention inputs")
    maps = []
    for i, blk in enumerate(blocks):
        q, k, _ = _Route.project(blk.attn, inputs[i])  # same submodule names as timm's
        maps.append(AF.attention_map(q, k, blk.attn.scale))
    return maps
