"""Hugging Face transformers ViTs as timm ViTs: a transformers folder (``config.json`` with a
``model_type``, ``model.safetensors`` or ``pytorch_model.bin``, optionally
``preprocessor_config.json``) read into the equivalent timm ``VisionTransformer``, so that every
transfer mode and the student-from-teacher rule work unchanged.

Supported ``model_type``: ``vit`` (ViTModel, ViTForImageClassification, ...), ``vit_mae`` (the
encoder of ViTMAEModel / ViTMAEForPreTraining; the converted model sees all patches in order, with
none of MAE's random masking or shuffling), ``dinov2`` and ``dinov2_with_registers`` (with
layer scale; registers become timm's ``reg_token``). Heads, pooler, MAE decoder and mask tokens
are dropped: a teacher needs the trunk only.

The files are read directly (transformers itself is not needed, and a folder saved by any
transformers release reads the same: the files keep the hub's key names). Two differences stay,
both numerical and small: timm's LayerNorm uses ``eps=1e-6`` where a ViT config may say
``1e-12``; and when the teacher runs at another image size, timm resamples the position
embeddings once at load (bicubic), where transformers interpolates them on every call.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from .errors import AttnxferError

#: transformers ``model_type`` values this module converts
MODEL_TYPES = ("vit", "vit_mae", "dinov2", "dinov2_with_registers")
#: transformers ``hidden_act`` names to timm ``act_layer`` names
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "quick_gelu": "quick_gelu",
    "relu": "relu",
    "silu": "silu",
    "swish": "silu",
}
#: per-block tensors: transformers name (after ``encoder.layer.N.``) -> timm name (after
#: ``blocks.N.``); query, key and value are joined into timm's ``attn.qkv`` separately
_BLOCK_KEYS = {
    "layernorm_before": "norm1",  # ViT, ViT-MAE
    "layernorm_after": "norm2",
    "norm1": "norm1",  # DINOv2
    "norm2": "norm2",
    "attention.output.dense": "attn.proj",
    "intermediate.dense": "mlp.fc1",  # ViT, ViT-MAE
    "output.dense": "mlp.fc2",
    "mlp.fc1": "mlp.fc1",  # DINOv2
    "mlp.fc2": "mlp.fc2",
}
_BLOCK = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias|lambda1)$")


def is_transformers_folder(path: Path) -> bool:
    """A folder whose ``config.json`` names a transformers ``model_type``."""
    config = path / "config.json"
    if not (path.is_dir() and config.is_file()):
        return False
    try:
        return "model_type" in json.loads(config.read_text())
    except json.JSONDecodeError:
        return False


def read_folder(path: Path) -> tuple[str | None, dict[str, Any], dict[str, torch.Tensor], dict]:
    """``(timm architecture, constructor args, timm state dict, normalisation)`` of a
    transformers folder; the architecture is ``None``: timm's ``VisionTransformer`` built from
    the args alone."""
    config = json.loads((path / "config.json").read_text())
    kind = config["model_type"]
    if kind not in MODEL_TYPES:
        raise AttnxferError(
            f"{path} holds a transformers {kind!r} model; attnxfer reads "
            f"{', '.join(MODEL_TYPES)} (or pass a timm name or weights file)"
        )
    if config.get("use_swiglu_ffn"):
        raise AttnxferError(
            f"{path}: DINOv2 with a SwiGLU MLP (the giant model) is not supported yet; use "
            "timm's own 'vit_giant_patch14_dinov2.lvd142m' as the teacher"
        )
    state = _strip_base_prefix(_read_weights(path))
    args = _timm_args(config, kind, path)
    return None, args, _timm_state(state, args, path), _normalisation(path)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from .models import read_checkpoint

    index = path / "model.safetensors.index.json"
    if index.is_file():  # sharded: every shard named by the index
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_checkpoint(path / shard)[0])
        return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return read_checkpoint(path / name)[0]
    raise AttnxferError(
        f"{path} has a transformers config.json but no model.safetensors or pytorch_model.bin"
    )


def _strip_base_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Task models keep the trunk under a prefix (``vit.``, ``dinov2.``, ...): take it off and
    keep the trunk only."""
    for key in state:
        head, sep, rest = key.partition(".")
        if sep and rest.startswith("embeddings."):
            prefix = head + "."
            break
    else:
        prefix = ""
    trunk = ("embeddings.", "encoder.", "layernorm.")
    return {
        k[len(prefix) :]: v
        for k, v in state.items()
        if k.startswith(prefix) and k[len(prefix) :].startswith(trunk)
    }


def _timm_args(config: dict, kind: str, path: Path) -> dict[str, Any]:
    width = config["hidden_size"]
    if kind.startswith("dinov2"):
        hidden = int(width * config.get("mlp_ratio", 4))
    else:
        hidden = config["intermediate_size"]
    ratio = hidden / width
    act = config.get("hidden_act", "gelu")
    if act not in _ACTIVATIONS or int(width * ratio) != hidden:
        what = f"hidden_act={act!r}" if act not in _ACTIVATIONS else f"MLP width {hidden}"
        raise AttnxferError(f"{path}: cannot express {what} as a timm VisionTransformer")
    size, patch = config["image_size"], config["patch_size"]
    args: dict[str, Any] = {
        "img_size": size if isinstance(size, int) else list(size),
        "patch_size": patch if isinstance(patch, int) else list(patch),
        "in_chans": config.get("num_channels", 3),
        "embed_dim": width,
        "depth": config["num_hidden_layers"],
        "num_heads": config["num_attention_heads"],
        "mlp_ratio": ratio,
        "qkv_bias": config.get("qkv_bias", True),
        "act_layer": _ACTIVATIONS[act],
        "num_classes": 0,
        "global_pool": "token",
    }
    if kind.startswith("dinov2"):
        args["init_values"] = config.get("layerscale_value", 1.0)  # layer scale, learned
    if kind == "dinov2_with_registers":
        args["reg_tokens"] = config.get("num_register_tokens", 4)
        args["no_embed_class"] = True  # see _timm_state: the class token's position is folded
    return args


def _timm_state(
    state: dict[str, torch.Tensor], args: dict[str, Any], path: Path
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.startswith("encoder.layer."):
            match = _BLOCK.match(key)
            if match is None:
                raise AttnxferError(f"{path}: unexpected tensor {key!r} in a transformer block")
            index, name, kind = match.groups()
            attention = re.fullmatch(r"attention\.attention\.(query|key|value)", name)
            if attention:
                qkv.setdefault((int(index), kind), {})[attention.group(1)] = value
            elif name in ("layer_scale1", "layer_scale2"):
                out[f"blocks.{index}.ls{name[-1]}.gamma"] = value
            elif name in _BLOCK_KEYS:
                out[f"blocks.{index}.{_BLOCK_KEYS[name]}.{kind}"] = value
            else:
                raise AttnxferError(f"{path}: unexpected tensor {key!r} in a transformer block")
        elif key.startswith("layernorm."):
            out["norm." + key.removeprefix("layernorm.")] = value
    for (index, kind), parts in qkv.items():
        out[f"blocks.{index}.attn.qkv.{kind}"] = torch.cat(
            [parts["query"], parts["key"], parts["value"]]
        )
    cls = state["embeddings.cls_token"]
    pos = state["embeddings.position_embeddings"]
    out["patch_embed.proj.weight"] = state["embeddings.patch_embeddings.projection.weight"]
    out["patch_embed.proj.bias"] = state["embeddings.patch_embeddings.projection.bias"]
    if args.get("reg_tokens"):
        # transformers adds the position embedding to [class, patches] and then inserts the
        # registers; timm (no_embed_class) adds it to the patches only: fold the class token's
        out["cls_token"] = cls + pos[:, :1]
        out["pos_embed"] = pos[:, 1:]
        out["reg_token"] = state["embeddings.register_tokens"]
    else:
        out["cls_token"] = cls
        out["pos_embed"] = pos
    return out


def _normalisation(path: Path) -> dict[str, Any]:
    """The input mean and std of ``preprocessor_config.json``, when it has them."""
    processor = path / "preprocessor_config.json"
    if not processor.is_file():
        return {}
    data = json.loads(processor.read_text())
    if "image_mean" in data and "image_std" in data:
        return {"mean": tuple(data["image_mean"]), "std": tuple(data["image_std"])}
    return {}
