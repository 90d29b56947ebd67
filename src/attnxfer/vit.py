"""What attnxfer needs to know about a timm ViT: its blocks, its tokens, its image grid, and
whether its attention layers can be routed. Every other module asks here."""

from __future__ import annotations

from timm.layers import Attention
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .errors import AttnxferError

#: Attention classes whose layers can be routed. Supporting another family means writing its
#: ``project`` (how to get per-head q, k, v) and ``finish`` (how heads become the output) in
#: routes.py, and listing it here.
SUPPORTED_ATTENTION: tuple[type[nn.Module], ...] = (Attention,)


def check_supported(model: nn.Module, what: str) -> None:
    """Refuse anything but a timm ViT whose blocks all use a supported attention class."""
    if not isinstance(model, VisionTransformer):
        raise AttnxferError(
            f"{what} is a {type(model).__name__}, not a timm VisionTransformer; attention "
            "transfer needs a ViT (timm.list_models('vit_*'))"
        )
    for blk in model.blocks:
        attn = getattr(blk, "attn", None)
        if type(attn) not in SUPPORTED_ATTENTION:
            raise AttnxferError(
                f"{what} uses attention class {type(attn).__module__}.{type(attn).__name__}, "
                "which attnxfer does not support yet (supported: timm.layers.Attention)"
            )


def inner(model: nn.Module) -> nn.Module:
    """The ViT itself: an ``AttentionTransfer`` wrapper's student, or the model."""
    student = getattr(model, "student", None)
    return model if student is None else student


def blocks(model: nn.Module, role: str = "model") -> nn.Sequential:
    """The transformer blocks of a ViT (of a wrapper's student), each with an ``attn``."""
    found = getattr(inner(model), "blocks", None)
    if found is None or not all(hasattr(b, "attn") for b in found):
        raise AttnxferError(
            f"the {role} ({type(model).__name__}) has no timm ViT blocks with an 'attn' module; "
            "attnxfer works with timm's VisionTransformer family"
        )
    return found


def num_tokens(model: nn.Module) -> int:
    """Tokens per image that attention sees (patches plus class/register tokens)."""
    vit = inner(model)
    return vit.patch_embed.num_patches + vit.num_prefix_tokens


def prefix_tokens(model: nn.Module) -> int:
    """Class and register tokens in front of the patches."""
    return int(getattr(inner(model), "num_prefix_tokens", 0))


def img_size(model: nn.Module) -> int:
    """The (square) input size the ViT was built for."""
    return int(inner(model).patch_embed.img_size[0])


def grid(model: nn.Module) -> tuple[int, int]:
    """Patches per column and per row."""
    return tuple(inner(model).patch_embed.grid_size)
