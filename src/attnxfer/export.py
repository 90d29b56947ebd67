"""Models out of attnxfer: trained students and pre-trained encoders as folders in timm's hub
layout.

Every exported model is a folder that ``timm.create_model("local-dir:FOLDER", pretrained=True)``
loads (timm releases that know ``local-dir:``), and so does ``build_teacher("FOLDER")``:

- ``model.safetensors``: the weights under timm's own keys;
- ``config.json``: ``architecture`` and ``model_args`` (timm's constructor arguments),
  ``num_classes``, ``label_names``, ``pretrained_cfg`` (input size, mean, std, crop) and, under
  ``attnxfer``, the card: how the model was made;
- ``README.md``: the model card in words, with the two calls above.

:func:`write_model` writes them atomically: a crash never leaves a half-written model. Folders
of older attnxfer releases (``model.safetensors`` + ``model.json``) still load everywhere;
:func:`read_card` reads the card of either.
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
from .vit import img_size

#: a registered timm name whose builder takes every VisionTransformer argument, for models
#: built from arguments alone (``ModelSpec(None, args)``): the arguments override its defaults
GENERIC_VIT = "vit_base_patch16_224"


def hub_config(model: nn.Module, card: dict[str, Any]) -> dict[str, Any]:
    """``config.json`` of timm's hub layout for ``model``, with ``card`` under ``attnxfer``."""
    spec = spec_of(model)
    args = json.loads(json.dumps(spec.args))  # tuples become lists, as JSON keeps them
    size = img_size(model)
    pretrained = {
        "input_size": [3, size, size],
        "interpolation": "bicubic",
        "crop_pct": card.get("crop_pct", 1.0),
        "mean": list(card["mean"]),
        "std": list(card["std"]),
        "num_classes": model.num_classes,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
    }
    config = {
        "architecture": (spec.arch or GENERIC_VIT).split(".")[0],
        "num_classes": model.num_classes,
        "num_features": model.num_features,
        "global_pool": model.global_pool,
        "model_args": args,
        "pretrained_cfg": pretrained,
        "attnxfer": card,
    }
    if card.get("classes"):
        config["label_names"] = list(card["classes"])
    return config


def _readme(config: dict[str, Any]) -> str:
    card, inputs = config["attnxfer"], config["pretrained_cfg"]
    made = card.get("trained_as") or card.get("pretrain") or {}
    return "\n".join(
        [
            "# attnxfer model",
            "",
            f"A timm `{config['architecture']}` (arguments in `config.json`), "
            f"{config['num_classes'] or 'no'} classes, input mean {inputs['mean']} and std "
            f"{inputs['std']}. Made by attnxfer: `{json.dumps(made)}`.",
            "",
            "```python",
            "import timm",
            'model = timm.create_model("local-dir:THIS_FOLDER", pretrained=True)',
            "",
            "from attnxfer import build_teacher",
            'teacher = build_teacher("THIS_FOLDER")  # frozen, for attention transfer',
            "```",
            "",
        ]
    )


def write_model(
    out: Path, model: nn.Module, state: dict[str, torch.Tensor], card: dict[str, Any]
) -> Path:
    """``out/{config.json, README.md, model.safetensors}`` for ``model`` (see the module
    docstring), each written under a temporary name and renamed into place, the weights last."""
    config = hub_config(model, card)
    texts = {"config.json": json.dumps(config, indent=1), "README.md": _readme(config)}
    weights, tmp = out / "model.safetensors", out / ".model.tmp"
    staged = {out / f".{name}.tmp": out / name for name in texts}
    try:
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp)
        for (temporary, final), text in zip(staged.items(), texts.values(), strict=True):
            temporary.write_text(text)
            temporary.replace(final)
        tmp.replace(weights)
    except OSError as e:
        for path in (tmp, *staged):
            path.unlink(missing_ok=True)
        raise AttnxferError(f"could not write the model to {out}: {e}") from None
    return weights


def read_card(folder: str | Path) -> dict[str, Any]:
    """How an exported model was made (``mean``, ``std``, ``classes``, ``trained_as`` or
    ``pretrain``) with its ``architecture`` and ``args``, from either export layout."""
    folder = Path(folder)
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
        if "attnxfer" in config:
            return {
                "architecture": config["architecture"],
                "args": config.get("model_args", {}),
                **config["attnxfer"],
            }
    if (folder / "model.json").is_file():  # attnxfer's earlier layout
        return json.loads((folder / "model.json").read_text())
    raise AttnxferError(f"{folder} is not a model folder exported by attnxfer")


def _new_folder(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise AttnxferError(f"export folder {out} is not empty; choose a new folder")
    return out


def export_student(path: str | Path, out_dir: str | Path, weights: str = "raw") -> Path:
    """Export a trained student as a folder in timm's hub layout (see the module docstring)."""
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
        "crop_pct": meta["config"]["data"]["eval_crop_pct"],
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
