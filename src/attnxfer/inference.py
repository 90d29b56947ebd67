"""Evaluation: the accuracy loop, trained models back from checkpoints, ensembles, result tables."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from . import checkpoint as C
from .build import rebuild
from .errors import AttnxferError
from .models import ModelSpec
from .runtime import Dist, all_reduce, autocast


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
    if meta.get("task") == "mae":
        raise AttnxferError(
            f"{path} is an MAE pre-training checkpoint, not a classifier: use its exported "
            "encoder, RUN/teacher/model.safetensors, as teacher.source"
        )
    name = {"raw": "student.safetensors", "ema": "ema.safetensors"}.get(weights)
    if name is None:
        raise AttnxferError(f"weights={weights!r} is unknown: use raw or ema")
    if not (ckpt / name).is_file():
        raise AttnxferError(f"{ckpt} has no EMA weights (trained without run.ema_decay)")
    student = ModelSpec.from_json(meta["student_spec"]).create()
    student.load_state_dict(C.load_weights_file(ckpt, name), strict=True)
    label = f"{Path(path).name}[{weights}]"
    return Loaded(rebuild(meta, student).eval(), meta, label)


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: DataLoader,
    d: Dist,
    amp: str = "none",
    class_subset: list[int] | None = None,
) -> dict[str, float]:
    """Top-1, top-5 and cross-entropy over the whole loader (all ranks together).

    ``model(images)`` returns logits or a ``TransferOutput``. ``class_subset``: evaluation
    labels ``i`` are model class ``class_subset[i]``; logits are restricted to those classes
    before argmax (ImageNet-A / -R style label spaces).
    """
    model.eval()
    sums = [0.0, 0.0, 0.0, 0.0]  # correct@1, correct@5, loss sum, count
    subset = None if class_subset is None else torch.tensor(class_subset, device=d.device)
    for batch in loader:
        if batch.targets.numel() == 0:
            continue
        images, targets = batch.images.to(d.device), batch.targets.to(d.device)
        with autocast(d.device, amp):
            out = model(images)
        logits = getattr(out, "logits", out).float()
        if subset is not None:
            logits = logits[:, subset]
        k = min(5, logits.shape[1])
        top = logits.topk(k, dim=1).indices
        sums[0] += (top[:, 0] == targets).sum().item()
        sums[1] += (top == targets[:, None]).any(dim=1).sum().item()
        sums[2] += F.cross_entropy(logits, targets, reduction="sum").item()
        sums[3] += targets.numel()
    c1, c5, loss, n = all_reduce(sums, d)
    if n == 0:
        raise AttnxferError("the evaluation set is empty")
    return {"top1": 100 * c1 / n, "top5": 100 * c5 / n, "loss": loss / n, "count": int(n)}


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


def parse_set(spec: str) -> tuple[str, tuple[str, str | None]]:
    """``"LABEL=NAME[:ROOT]"`` -> ``(LABEL, (NAME, ROOT or None))``."""
    label, sep, rest = spec.partition("=")
    if not sep or not label or not rest:
        raise AttnxferError(f"--set {spec!r} is not LABEL=NAME[:ROOT]")
    name, _, root = rest.partition(":")
    return label, (name, root or None)


def read_class_map(path: str | Path) -> list[int]:
    """Line ``i`` of the file is the model class index of evaluation label ``i``."""
    try:
        return [int(line) for line in Path(path).read_text().split()]
    except (OSError, ValueError) as e:
        raise AttnxferError(f"class map {path}: {e}") from None


def evaluate_models(
    models: list[str | Path],
    sets: dict[str, tuple[str, str | None]] | None = None,
    split: str | None = None,
    weights: str = "raw",
    ensemble: bool = False,
    class_subset: list[int] | None = None,
    batch_size: int = 128,
    d: Any = None,
) -> dict[str, dict[str, dict[str, float]]]:
    """Top-1/top-5/loss of each model (and their ensemble) on each evaluation set.

    ``sets``: label -> (dataset name, root); default: the first model's own validation set.
    ``split``: the split (folder) of every set; default the first model's ``data.val_split``.
    Returns ``{model name: {set label: metrics}}``.
    """
    from torch.utils.data import DataLoader

    from .config import DataConfig
    from .data import ResumableSampler, collate, evaluation_set, raw_dataset
    from .runtime import setup_distributed

    d = d or setup_distributed("auto")
    kinds = ["raw", "ema"] if weights == "both" else [weights]
    members = [load_trained(m, w) for m in models for w in kinds]
    first = members[0].meta
    for m in members:
        m.model.to(d.device)
        if m.meta["mean"] != first["mean"] or m.meta["std"] != first["std"]:
            raise AttnxferError("the models normalise inputs differently; evaluate them apart")
    base = DataConfig(**first["config"]["data"])
    if sets:
        data_sets = {
            label: DataConfig(**{**vars(base), "name": name, "root": root})
            for label, (name, root) in sets.items()
        }
    else:
        data_sets = {"val": base}
    named = [(m.name, m.model) for m in members]
    if ensemble:
        if len(members) < 2:
            raise AttnxferError("an ensemble needs at least two models")
        named.append(("ensemble", Ensemble([m.model for m in members])))
    results: dict[str, dict[str, dict]] = {}
    for label, data_cfg in data_sets.items():
        raw = raw_dataset(data_cfg, split or data_cfg.val_split)
        images = evaluation_set(data_cfg, raw, tuple(first["mean"]), tuple(first["std"]))
        sampler = ResumableSampler(len(images), False, rank=d.rank, world=d.world, pad=False)
        loader = DataLoader(
            images,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
        )
        for name, model in named:
            with torch.no_grad():
                results.setdefault(name, {})[label] = evaluate(
                    model, loader, d, class_subset=class_subset
                )
    return results


def with_drops(results: dict[str, dict[str, dict]], reference: str) -> None:
    """Add to each result its top-1 ``drop`` from the same model's ``reference`` set."""
    for per_set in results.values():
        for r in per_set.values():
            r["drop"] = per_set[reference]["top1"] - r["top1"]


def results_text(results: dict[str, dict[str, dict]], reference: str | None = None) -> str:
    """:func:`evaluate_models`' results as a fixed-width table, one line per model and set."""
    drop = f" {'drop':>7}" if reference else ""
    lines = [f"{'model':40} {'set':14} {'top1':>7} {'top5':>7} {'loss':>8} {'images':>7}{drop}"]
    for name, per_set in results.items():
        for label, r in per_set.items():
            extra = f" {r['drop']:7.2f}" if reference else ""
            lines.append(
                f"{name:40.40} {label:14.14} {r['top1']:7.2f} {r['top5']:7.2f} "
                f"{r['loss']:8.4f} {r['count']:7d}{extra}"
            )
    return "\n".join(lines)
