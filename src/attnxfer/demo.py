"""``attnxfer demo``: the paper's comparison in miniature, on any machine, in minutes.

1. Train a tiny supervised ViT teacher (a stand-in for a pre-trained one: MAE pre-training is
   not part of the demo) and export it.
2. Train three students of the same architecture from random weights: from scratch, by
   attention copy and by attention distillation, with the same schedule.
3. Print the comparison table and write ``attention.png``: the class token's attention in each
   layer, for the teacher and the students, on validation images.

Every step runs the ordinary engine (``attnxfer train``), so each sub-run is a normal run
directory that ``attnxfer eval`` / ``export`` accept.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from .config import config_from_dict
from .engine import Trainer
from .errors import AttnxferError
from .inference import load_trained
from .pretrain import pretrain
from .report import figure

log = logging.getLogger(__name__)

MODEL = {
    "img_size": 32,
    "patch_size": 8,
    "embed_dim": 64,
    "depth": 4,
    "num_heads": 4,
    "mlp_ratio": 2.0,
}
STUDENT_MODES = ("scratch", "copy", "distill")


def _data_section(data: str) -> dict[str, Any]:
    """``digits`` | ``NAME:ROOT`` (torchvision set) | a folder (ImageFolder, train/ and val/)."""
    if data == "digits":
        return {
            "name": "digits",
            "hflip": 0.0,
            "scale": [0.6, 1.0],
            "mean": [0.5] * 3,
            "std": [0.5] * 3,
        }
    if Path(data).is_dir():
        return {"name": "imagefolder", "root": data}
    name, _, root = data.partition(":")
    return {"name": name, "root": root or None}


def _config(
    out: Path, name: str, data: dict, epochs: int, mode: str, teacher: str | None, seed: int
) -> Any:
    section: dict[str, Any] = {
        "transfer": {"mode": mode},
        "data": {"img_size": MODEL["img_size"], "batch_size": 64, **data},
        "optim": {
            "epochs": epochs,
            "blr": 4e-3 if name == "teacher" else 2e-3,
            "warmup_epochs": 1,
            "weight_decay": 0.05,
        },
        "run": {"output": str(out / name), "seed": seed},
    }
    if teacher is None:
        section["student"] = {"arch": "vit_tiny_patch16_224", "model_args": MODEL}
    else:
        section["teacher"] = {"source": teacher}
    return config_from_dict(section)


def _fresh_output(out: str | None) -> Path:
    if out is not None:
        path = Path(out)
        if path.exists() and any(path.iterdir()):
            raise AttnxferError(f"demo folder {path} is not empty; choose a new --out")
        return path
    n = 1
    while Path(f"runs/demo-{n}").exists():
        n += 1
    return Path(f"runs/demo-{n}")


def run_demo(
    data: str = "digits",
    out: str | None = None,
    teacher_epochs: int = 20,
    student_epochs: int = 8,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the whole demo; returns the results (also written to ``results.json``)."""
    root = _fresh_output(out)
    data_cfg = _data_section(data)
    start = time.time()
    results: dict[str, Any] = {}
    log.info("[1/4] teacher: a tiny ViT trained on %s (%d epochs)", data, teacher_epochs)
    teacher_cfg = _config(root, "teacher", data_cfg, teacher_epochs, "scratch", None, seed)
    teacher_cfg.pretrain.method = "supervised"
    summary = pretrain(teacher_cfg)  # writes RUN/teacher/model.safetensors and its card
    results["teacher"] = summary
    teacher_file = Path(summary["teacher"])
    for i, mode in enumerate(STUDENT_MODES, start=2):
        log.info("[%d/4] student: %s (%d epochs)", i, mode, student_epochs)
        cfg = _config(root, mode, data_cfg, student_epochs, mode, str(teacher_file), seed)
        results[mode] = Trainer(cfg).fit()
    results["wall_seconds"] = time.time() - start
    (root / "results.json").write_text(json.dumps(results, indent=1))
    print(_table(results, teacher_epochs, student_epochs))
    figure = _figure(root, teacher_file)
    print(f"attention maps: {figure}\nrun folders: {root}/ (attnxfer eval {root}/distill ...)")
    return results


def _table(results: dict[str, Any], teacher_epochs: int, student_epochs: int) -> str:
    rows = [f"{'model':<30} {'val top-1':>9} {'seconds':>8}"]
    label = {
        "teacher": f"teacher (supervised, {teacher_epochs} ep)",
        "scratch": f"from scratch ({student_epochs} ep)",
        "copy": f"attention copy ({student_epochs} ep)",
        "distill": f"attention distillation ({student_epochs} ep)",
    }
    for key, text in label.items():
        r = results[key]
        rows.append(f"{text:<30} {r['val_top1']:9.2f} {r['seconds']:8.0f}")
    rows.append(f"total wall time {results['wall_seconds']:.0f} s")
    return "\n".join(rows)


def _figure(root: Path, teacher_file: Path) -> Path:
    """Class-token attention per layer (head-averaged) for a few validation images."""
    from .analysis import attention_maps
    from .data import build_transform, raw_dataset
    from .models import build_teacher

    teacher = build_teacher(teacher_file)
    models = {"teacher": teacher}
    for mode in ("scratch", "distill"):
        models[f"{mode} student"] = load_trained(root / mode).model
    # copy students attend with the teacher's maps, so the teacher's row stands for them
    cfg = config_from_dict(_read_config(root / "teacher"))
    val = raw_dataset(cfg.data, "val")
    tf = build_transform(
        cfg.data, False, tuple(cfg.data.mean or (0.5,) * 3), tuple(cfg.data.std or (0.5,) * 3)
    )
    picks = [0, len(val) // 3, 2 * len(val) // 3]
    images = torch.stack([tf(val[i][0]) for i in picks])
    depth = len(teacher.blocks)
    grid = MODEL["img_size"] // MODEL["patch_size"]
    path = root / "attention.png"
    inches = (1.6 * (depth + 1), 1.6 * len(picks) * len(models))
    with figure(path, len(picks) * len(models), depth + 1, figsize=inches) as (fig, axes):
        for m_idx, (name, model) in enumerate(models.items()):
            maps = attention_maps(model.eval(), images)
            for p_idx, _ in enumerate(picks):
                row = p_idx * len(models) + m_idx
                axes[row, 0].imshow(
                    (images[p_idx].permute(1, 2, 0) * 0.5 + 0.5).clamp(0, 1).numpy()
                )
                axes[row, 0].set_ylabel(name, fontsize=7)
                for layer, attn in enumerate(maps):
                    cls = attn[p_idx].mean(0)[0, 1:].reshape(grid, grid)  # class token -> patches
                    axes[row, layer + 1].imshow(cls.numpy(), cmap="viridis")
                    if row == 0:
                        axes[row, layer + 1].set_title(f"layer {layer}", fontsize=8)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.suptitle(
            "class-token attention (mean over heads); copy students use the teacher's maps",
            fontsize=8,
        )
    return path


def _read_config(run: Path) -> dict:
    import yaml

    return yaml.safe_load((run / "config.yaml").read_text())
