"""Models out of attnxfer: trained students and pre-trained encoders as plain timm files.

Every exported model is a folder with ``model.safetensors`` (the weights under timm's own keys)
and ``model.json`` (``architecture`` and constructor ``args`` for ``timm.create_model``, input
``mean``/``std``, and how it was made), written by :func:`write_model`, atomically: a crash never
leaves a half-written model. ``build_teacher(FOLDER/model.safetensors)`` loads any of them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from . import checkpoint as C
from .errors import AttnxferError
from .inference import load_trained
from .models import ModelSpec, spec_of


def write_model(
    out: Path, model: nn.Module, state: dict[str, torch.Tensor], card: dict[str, Any]
) -> Path:
    """``out/model.safetensors`` + ``out/model.json`` (``model``'s architecture and arguments,
    then ``card``), each written under a temporary name and renamed into place, the weights
    last."""
    spec = spec_of(model)
    meta = {"architecture": spec.arch, "args": spec.args, **card}
    weights, tmp, tmp_meta = out / "model.safetensors", out / ".model.tmp", out / ".model.json.tmp"
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp)
        tmp_meta.write_text(json.dumps(meta, indent=1))
        tmp_meta.replace(out / "model.json")
        tmp.replace(weights)
    except OSError as e:
        for path in (tmp, tmp_meta):
            path.unlink(missing_ok=True)
        raise AttnxferError(f"could not write the model to {out}: {e}") from None
    return weights


def _new_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AttnxferError(f"export folder {out} is not empty; choose a new folder")
    return out


def export_student(path: str | Path, out_dir: str | Path, weights: str = "raw") -> Path:
    """Write ``model.safetensors`` + ``model.json``: a plain timm model, loadable by
    ``timm.create_model(arch, **args)`` + ``load_state_dict``, or by ``build_teacher(file)``."""
    ckpt = C.resolve(path)
    meta = C.read_meta(ckpt)
    if meta.get("task") == "mae":
        return _export_encoder(ckpt, meta, out_dir, weights)
    if meta.get("needs_teacher"):
        raise AttnxferError(
            f"{path} was trained by attention copy ({meta['config']['transfer']['mode']}): it "
            "cannot run without its teacher, so it has no stand-alone export; evaluate it with "
            "attnxfer eval"
        )
    out = _new_folder(out_dir)
    loaded = load_trained(ckpt, weights)
    card = {
        "mean": meta["mean"],
        "std": meta["std"],
        "classes": meta["classes"],
        "trained_as": meta["transfer"],
    }
    return write_model(out, loaded.model, loaded.model.state_dict(), card)


def _export_encoder(ckpt: Path, meta: dict, out_dir: str | Path, weights: str) -> Path:
    """The encoder of an MAE pre-training checkpoint (e.g. one of its intermediate epochs) as a
    teacher file, the same as ``attnxfer pretrain`` writes at the end of the run."""
    out = _new_folder(out_dir)
    name = {"raw": "student.safetensors", "ema": "ema.safetensors"}.get(weights)
    if name is None or not (ckpt / name).is_file():
        raise AttnxferError(f"{ckpt} has no {weights} weights: use --weights raw")
    state = {
        k[len("encoder.") :]: v
        for k, v in C.load_weights_file(ckpt, name).items()
        if k.startswith("encoder.")
    }
    encoder = ModelSpec.from_json(meta["encoder_spec"]).create()
    encoder.load_state_dict(state, strict=True)  # the weights fit the recorded architecture
    progress = meta["progress"]
    card = {
        "mean": meta["mean"],
        "std": meta["std"],
        "classes": None,
        "pretrain": {
            "method": "mae",
            "weights": weights,
            "checkpoint": str(ckpt),
            "epochs": progress["epoch"],
            "of_epochs": meta["config"]["optim"]["epochs"],  # the run's whole schedule
            "steps": progress["step"],
        },
    }
    return write_model(out, encoder, state, card)
