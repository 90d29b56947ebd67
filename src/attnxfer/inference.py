"""Models back from checkpoints: for evaluation, ensembles and export."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from . import checkpoint as C
from .errors import AttnxferError
from .models import ModelSpec, build_teacher
from .transfer import AttentionTransfer


@dataclass
class Loaded:
    """A trained model ready for inference: ``model(images)`` gives logits or TransferOutput."""

    model: nn.Module
    meta: dict[str, Any]
    name: str


def load_trained(path: str | Path, weights: str = "raw") -> Loaded:
    """Rebuild a trained student from a run or checkpoint directory.

    ``weights``: ``raw`` or ``ema``. Copy-mode students are rebuilt with their teacher (from the
    source recorded in the checkpoint), since they cannot run without it.
    """
    ckpt = C.resolve(path)
    meta = C.read_meta(ckpt)
    name = {"raw": "student.safetensors", "ema": "ema.safetensors"}.get(weights)
    if name is None:
        raise AttnxferError(f"weights={weights!r} is unknown: use raw or ema")
    if not (ckpt / name).is_file():
        raise AttnxferError(f"{ckpt} has no EMA weights (trained without run.ema_decay)")
    student = ModelSpec.from_json(meta["student_spec"]).create()
    student.load_state_dict(C.load_weights_file(ckpt, name), strict=True)
    label = f"{Path(path).name}[{weights}]"
    teacher_info = meta.get("needs_teacher")
    if teacher_info is None:
        return Loaded(student.eval(), meta, label)
    t = meta["config"]["transfer"]
    teacher = build_teacher(
        teacher_info["source"],
        arch=teacher_info["arch"],
        model_args=teacher_info["model_args"],
        img_size=meta["config"]["data"]["img_size"],
        checkpoint_key=teacher_info["checkpoint_key"],
    )
    model = AttentionTransfer(
        teacher,
        student,
        mode=t["mode"],
        layers=t["layers"],
        heads=t["heads"],
        impl=t["impl"],
        average=t["average"],
        drop_path=t["drop_path"],
    )
    return Loaded(model.eval(), meta, label)


class Ensemble(nn.Module):
    """Averages the softmax outputs of several models; returns log-probabilities as logits."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        probs = [
            getattr(o, "logits", o).float().softmax(-1) for o in (m(images) for m in self.members)
        ]
        return torch.stack(probs).mean(0).log()


def export_student(path: str | Path, out_dir: str | Path, weights: str = "raw") -> Path:
    """Write ``model.safetensors`` + ``model.json``: a plain timm model, loadable by
    ``timm.create_model(arch, **args)`` + ``load_state_dict``, or by ``build_teacher(file)``."""
    ckpt = C.resolve(path)
    meta = C.read_meta(ckpt)
    if meta.get("needs_teacher"):
        raise AttnxferError(
            f"{path} was trained by attention copy ({meta['config']['transfer']['mode']}): it "
            "cannot run without its teacher, so it has no stand-alone export; evaluate it with "
            "attnxfer eval"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AttnxferError(f"export folder {out} is not empty; choose a new folder")
    loaded = load_trained(ckpt, weights)
    out.mkdir(parents=True, exist_ok=True)
    spec = meta["student_spec"]
    save_file(
        {k: v.contiguous() for k, v in loaded.model.state_dict().items()}, out / "model.safetensors"
    )
    card = {
        "architecture": spec["arch"],
        "args": spec["args"],
        "mean": meta["mean"],
        "std": meta["std"],
        "classes": meta["classes"],
        "trained_as": meta["transfer"],
    }
    (out / "model.json").write_text(json.dumps(card, indent=1))
    return out / "model.safetensors"
