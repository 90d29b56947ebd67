"""Teachers and students: unmodified timm Vision Transformers.

:func:`build_teacher` loads a pre-trained ViT from a timm name, an ``hf-hub:`` id, a local
checkpoint file or an ``nn.Module`` and freezes it. :func:`build_student` makes the teacher's
own timm architecture with fresh timm initialisation: every component of the teacher's family
(layer scale, register tokens, qk-norm, pre-norm, class token, pooling) is then present in the
student, which a 2026 study (arXiv 2605.07191) found is what makes transfer work across families.

Every model built here carries a :class:`ModelSpec` (``model.attnxfer_spec``): the timm
architecture and constructor arguments that re-create it, so students, checkpoints and exports
know exactly what to build.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import VisionTransformer
from timm.models.vision_transformer import checkpoint_filter_fn
from torch import nn

from .errors import AttnxferError
from .vit import check_supported

log = logging.getLogger(__name__)

#: Keys of an MAE pre-training checkpoint that belong to the decoder, not the encoder.
_MAE_DECODER_KEY = re.compile(r"^(decoder_|decoder\.|mask_token)")
#: Weight files of a folder in timm's hub layout, in the order they are looked for.
_HUB_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
#: Keys of a JSON sidecar that describe input normalisation, not constructor arguments.
_NORMALISATION_KEYS = ("mean", "std", "interpolation", "crop_pct")


@dataclass(frozen=True)
class ModelSpec:
    """How to re-create a model: a timm architecture name and constructor arguments.

    ``arch=None`` means timm's generic ``VisionTransformer`` class built from ``args`` alone
    (as for a checkpoint whose JSON lists constructor arguments but no architecture name).
    """

    arch: str | None
    args: dict[str, Any] = field(default_factory=dict)

    def create(self, **overrides: Any) -> nn.Module:
        args = {**self.args, **overrides}
        if self.arch is not None and not timm.is_model(self.arch.split(".")[0]):
            raise AttnxferError(
                f"unknown architecture {self.arch!r}: not a timm model name "
                "(list them with timm.list_models('vit_*'))"
            )
        try:
            if self.arch is None:
                model = VisionTransformer(**args)
            else:
                model = timm.create_model(self.arch, pretrained=False, **args)
        except (TypeError, ValueError, AssertionError, RuntimeError) as e:
            # timm refuses bad constructor arguments in several ways (unknown keyword, an
            # assert such as "dim should be divisible by num_heads", a zero-sized layer)
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AttnxferError(f"cannot build {self.describe()} with {args}: {reason}") from None
        model.attnxfer_spec = ModelSpec(self.arch, args)
        return model

    def describe(self) -> str:
        return self.arch or "timm VisionTransformer"

    def to_json(self) -> dict[str, Any]:
        return {"arch": self.arch, "args": self.args}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(data.get("arch"), dict(data.get("args", {})))


def spec_of(model: nn.Module) -> ModelSpec:
    """The :class:`ModelSpec` of a model, inferring it for a plain timm ViT when needed."""
    spec = getattr(model, "attnxfer_spec", None)
    if spec is not None:
        return spec
    if not isinstance(model, VisionTransformer):
        raise AttnxferError(
            f"{type(model).__name__} is not a timm VisionTransformer: attnxfer works with timm's "
            "ViTs (timm.create_model('vit_...'))"
        )
    return ModelSpec(None, _infer_vit_args(model))


def _infer_vit_args(model: VisionTransformer) -> dict[str, Any]:
    """Constructor arguments of a timm ``VisionTransformer`` read off the module itself.

    Only for models that did not come through attnxfer; the result is verified by building a
    model from it and comparing every parameter's name and shape (see :func:`build_student`).
    """
    blk = model.blocks[0]
    attn = blk.attn
    args: dict[str, Any] = {
        "img_size": tuple(model.patch_embed.img_size),
        "patch_size": tuple(model.patch_embed.patch_size),
        "in_chans": model.patch_embed.proj.in_channels,
        "embed_dim": model.embed_dim,
        "depth": len(model.blocks),
        "num_heads": attn.num_heads,
        "mlp_ratio": blk.mlp.fc1.out_features / model.embed_dim,
        "qkv_bias": attn.qkv.bias is not None,
        "qk_norm": not isinstance(attn.q_norm, nn.Identity),
        "class_token": model.cls_token is not None,
        "reg_tokens": model.num_reg_tokens,
        "no_embed_class": model.no_embed_class,
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "global_pool": model.global_pool,
        "fc_norm": not isinstance(model.fc_norm, nn.Identity),
        "num_classes": model.num_classes,
        "dynamic_img_size": model.dynamic_img_size,
    }
    if hasattr(blk.ls1, "gamma"):
        args["init_values"] = 1e-5  # timm's usual LayerScale init; only the value is unknown
    if model.pos_embed is None:
        args["pos_embed"] = "none"
    return args


def _freeze(model: nn.Module) -> nn.Module:
    model.eval()
    model.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# reading checkpoint files


def _torch_load(path: Path) -> Any:
    # MAE checkpoints pickle their argparse namespace; allow exactly that, nothing else.
    with torch.serialization.safe_globals([argparse.Namespace]):
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for non-checkpoint files
            raise AttnxferError(
                f"{path} is not a checkpoint torch can read ({type(e).__name__}); pass a "
                ".pth/.bin/.pt state dict, an MAE checkpoint or a .safetensors file"
            ) from None


def read_checkpoint(path: str | Path, checkpoint_key: str | None = None) -> tuple[dict, dict]:
    """Read a weights file: ``(state_dict, meta)``.

    ``.safetensors`` files are read with safetensors; anything else with ``torch.load`` in
    ``weights_only`` mode. A checkpoint dict holding ``model`` / ``model_ema`` / ``state_dict``
    (MAE pre-training and fine-tuning checkpoints, timm training checkpoints) gives the weights
    under ``checkpoint_key`` or, by default, the first of those keys present. ``meta`` holds the
    MAE ``args`` namespace as a dict when there is one.
    """
    path = Path(path)
    if not path.is_file():
        raise AttnxferError(f"checkpoint file {path} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path), {}
        except (SafetensorError, OSError) as e:
            raise AttnxferError(f"{path} is not a readable safetensors file ({e})") from None
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise AttnxferError(f"{path} holds a {type(obj).__name__}, not a state dict")
    meta: dict[str, Any] = {}
    args = obj.get("args")
    if isinstance(args, argparse.Namespace):
        meta = vars(args)
    elif isinstance(args, dict):
        meta = args
    wrappers = ("model", "model_ema", "state_dict", "module")
    if checkpoint_key is not None:
        if checkpoint_key not in obj:
            raise AttnxferError(
                f"{path} has no key {checkpoint_key!r}; its top-level keys are {sorted(obj)}"
            )
        obj = obj[checkpoint_key]
    else:
        for key in wrappers:
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    bad = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad or not obj:
        raise AttnxferError(
            f"{path} is not a state dict of tensors (offending keys: {bad[:5]}); "
            f"pass checkpoint_key= to pick the weights inside it"
        )
    return {k.removeprefix("module."): v for k, v in obj.items()}, meta


def _mae_arch(name: str) -> str:
    """MAE's model names (``mae_vit_large_patch16``, ``vit_large_patch16``) to timm's."""
    name = name.removeprefix("mae_")
    if re.fullmatch(r"vit_\w+_patch\d+", name):
        name += "_224"
    return name


def _spec_for_file(
    path: Path, state: dict, meta: dict, arch: str | None, model_args: dict | None
) -> tuple[ModelSpec, dict]:
    """The architecture of a weights file, and normalisation info from its JSON sidecar."""
    args: dict[str, Any] = {}
    norm: dict[str, Any] = {}
    sidecar = path.with_suffix(".json")
    if sidecar.is_file():
        try:
            data = json.loads(sidecar.read_text())
        except json.JSONDecodeError as e:
            raise AttnxferError(f"{sidecar} is not valid JSON ({e})") from None
        arch = arch or data.pop("architecture", None) or data.pop("arch", None)
        data.pop("architecture", None), data.pop("arch", None)
        norm = {k: data.pop(k) for k in _NORMALISATION_KEYS if k in data}
        args.update(data.get("args", data))
    elif arch is None and meta.get("model"):
        arch = _mae_arch(str(meta["model"]))
    if arch is None and not args:
        raise AttnxferError(
            f"cannot tell the architecture of {path}: pass arch='vit_base_patch16_224' "
            f"(a timm name) or put a JSON of constructor arguments beside it as {sidecar.name}"
        )
    if "fc_norm.weight" in state and "global_pool" not in args:
        args["global_pool"] = "avg"  # MAE fine-tuning convention: mean-pool + fc_norm
    if "num_classes" not in args:
        head = state.get("head.weight")
        args["num_classes"] = 0 if head is None else head.shape[0]
    args.update(model_args or {})
    return ModelSpec(arch, args), norm


def load_weights(model: nn.Module, state: dict, source: str) -> None:
    """Load ``state`` into a timm ViT strictly, resampling position embeddings if needed."""
    dropped = sorted(k for k in state if _MAE_DECODER_KEY.match(k))
    if dropped:
        log.info("%s: dropped %d MAE decoder / mask-token tensors", source, len(dropped))
        state = {k: v for k, v in state.items() if k not in dropped}
    if isinstance(model, VisionTransformer):
        state = checkpoint_filter_fn(state, model)  # resamples pos_embed to the model's grid
    result = model.load_state_dict(state, strict=False)
    problems = [
        f"{what} keys {keys[:8]}{'...' if len(keys) > 8 else ''}"
        for what, keys in (("missing", result.missing_keys), ("unexpected", result.unexpected_keys))
        if keys
    ]
    if problems:
        raise AttnxferError(
            f"the weights in {source} do not fit {type(model).__name__}: {', '.join(problems)}; "
            "check the architecture (arch=...) and its arguments"
        )


# ---------------------------------------------------------------------------------------------
# public builders


def build_teacher(
    source: str | Path | nn.Module,
    *,
    arch: str | None = None,
    model_args: dict[str, Any] | None = None,
    img_size: int | None = None,
    checkpoint_key: str | None = None,
) -> nn.Module:
    """A frozen pre-trained ViT teacher (``eval()``, ``requires_grad=False``).

    Args:
        source: a timm model name with or without pretrained tag
            (``"vit_large_patch16_224.mae"``: downloaded through timm's pretrained machinery),
            an ``"hf-hub:org/name"`` id, a local weights file (MAE pre-training or fine-tuning
            ``.pth``, timm state dict ``.pth``/``.bin``/``.safetensors``, optionally with a
            JSON of constructor arguments beside it), or an ``nn.Module`` (frozen in place).
        arch: the timm architecture of a local file when no JSON sidecar or MAE ``args`` tell it.
        model_args: extra constructor arguments (override the sidecar's).
        img_size: build the teacher for this input size; position embeddings are interpolated.
        checkpoint_key: which entry of a checkpoint dict holds the weights (default: the first
            of ``model``, ``model_ema``, ``state_dict``).
    """
    extra = dict(model_args or {})
    if img_size is not None:
        extra["img_size"] = img_size
    if isinstance(source, nn.Module):
        if extra:
            raise AttnxferError("model_args / img_size apply to names and files, not to modules")
        check_supported(source, "the teacher module")
        return _freeze(source)
    path = Path(source)
    if path.is_dir():
        return _from_folder(path, extra)
    hub_folder = path.name in _HUB_WEIGHTS and (path.parent / "config.json").is_file()
    if hub_folder and not path.with_suffix(".json").is_file():  # weights of a hub-layout folder
        return _from_folder(path.parent, extra)
    if path.exists() or path.suffix in (".pth", ".pt", ".bin", ".safetensors"):
        state, meta = read_checkpoint(path, checkpoint_key)
        spec, norm = _spec_for_file(path, state, meta, arch, extra)
        return _assemble(spec, state, norm, path)
    return _freeze(_from_timm(str(source), extra))


def _assemble(spec: ModelSpec, state: dict, norm: dict, where: Path) -> nn.Module:
    """The frozen model of ``spec`` with ``state`` loaded and ``norm`` (input mean/std) in its
    ``pretrained_cfg``."""
    model = spec.create()
    check_supported(model, f"the architecture of {where}")
    load_weights(model, state, str(where))
    if norm:
        model.pretrained_cfg = {**getattr(model, "pretrained_cfg", {}), **norm}
    return _freeze(model)


def _from_folder(path: Path, extra: dict[str, Any]) -> nn.Module:
    """A model folder: a transformers one, timm's hub layout (``config.json`` with
    ``architecture``, as ``attnxfer export`` writes), or an older attnxfer export
    (``model.safetensors`` + ``model.json``)."""
    from . import transformers_vit

    config_file = path / "config.json"
    if transformers_vit.is_transformers_folder(path):
        arch, args, state, norm = transformers_vit.read_folder(path)
        return _assemble(ModelSpec(arch, {**args, **extra}), state, norm, path)
    if config_file.is_file():
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as e:
            raise AttnxferError(f"{config_file} is not valid JSON ({e})") from None
        if "architecture" not in config:
            raise AttnxferError(
                f"{config_file} names neither a timm 'architecture' nor a transformers 'model_type'"
            )
        weights = next((path / n for n in _HUB_WEIGHTS if (path / n).is_file()), None)
        if weights is None:
            raise AttnxferError(f"{path} has a config.json but no {' or '.join(_HUB_WEIGHTS)}")
        args = {**config.get("model_args", {}), "num_classes": config.get("num_classes", 0)}
        pretrained = config.get("pretrained_cfg", {})
        norm = {k: tuple(pretrained[k]) for k in ("mean", "std") if k in pretrained}
        spec = ModelSpec(config["architecture"], {**args, **extra})
        return _assemble(spec, read_checkpoint(weights)[0], norm, path)
    if (path / "model.safetensors").is_file():
        return build_teacher(path / "model.safetensors", model_args=extra)
    raise AttnxferError(
        f"{path} is a folder but not a model: expected config.json (timm's hub layout or a "
        "transformers model) or model.safetensors with model.json"
    )


def _from_timm(name: str, args: dict[str, Any]) -> nn.Module:
    if not name.startswith("hf-hub:"):
        base = name.split(".")[0]
        if not timm.is_model(base):
            raise AttnxferError(
                f"unknown teacher {name!r}: not an existing file nor a timm model name "
                "(list them with timm.list_models('vit_*'))"
            )
        with torch.device("meta"):  # check the architecture before downloading anything
            skeleton = timm.create_model(base, pretrained=False)
        check_supported(skeleton, f"teacher {name!r}")
        hint = f"arch='{base}'"
    else:
        hint = "arch='<its timm architecture>'"
    try:
        if name.startswith("hf-hub:"):
            folder = _transformers_snapshot(name.removeprefix("hf-hub:"))
            if folder is not None:
                return _from_folder(folder, args)
        model = timm.create_model(name, pretrained=True, **args)
    except Exception as e:  # hub errors come in many types (offline, 404, auth)
        if isinstance(e, AttnxferError):
            raise
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise AttnxferError(
            f"could not load pretrained weights for {name!r} ({type(e).__name__}: {reason}); "
            "when offline, download the weights elsewhere and pass the local file or folder: "
            f"build_teacher('weights.safetensors', {hint})"
        ) from None
    check_supported(model, f"teacher {name!r}")
    if name.startswith("hf-hub:"):
        model.attnxfer_spec = ModelSpec(None, _infer_vit_args(model))
    else:
        model.attnxfer_spec = ModelSpec(model.pretrained_cfg.get("architecture", base), args)
    return model


def _transformers_snapshot(repo: str) -> Path | None:
    """The local folder of a hub repository that holds a transformers model (its config, weights
    and preprocessor config, downloaded into the hub cache), or ``None`` for a timm repository.
    ``repo`` may end in ``@revision``."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    from .transformers_vit import is_transformers_folder

    repo, _, revision = repo.partition("@")
    fetch = {"repo_id": repo, "revision": revision or None}
    folder = Path(hf_hub_download(filename="config.json", **fetch)).parent
    if not is_transformers_folder(folder):
        return None
    for name in ("model.safetensors", "pytorch_model.bin"):
        try:
            hf_hub_download(filename=name, **fetch)
            break
        except EntryNotFoundError:
            continue
    with contextlib.suppress(EntryNotFoundError):
        hf_hub_download(filename="preprocessor_config.json", **fetch)
    return folder


def build_student(
    teacher: nn.Module,
    num_classes: int,
    *,
    arch: str | None = None,
    **overrides: Any,
) -> nn.Module:
    """A freshly initialised student: the teacher's own timm architecture by default.

    Args:
        teacher: the (pre-trained) teacher; only its architecture is used.
        num_classes: classes of the downstream task (a new head).
        arch: a different timm architecture (e.g. a smaller student of a large teacher).
            ``AttentionTransfer`` checks that the mode can pair them (heads, token grids).
        overrides: constructor arguments for the student, e.g. ``drop_path_rate=0.2`` or
            ``global_pool="avg"`` (the MAE fine-tuning convention).
    """
    if arch is not None:
        return ModelSpec(arch, {}).create(num_classes=num_classes, **overrides)
    spec = spec_of(teacher)
    student = spec.create(num_classes=num_classes, **overrides)
    if getattr(teacher, "attnxfer_spec", None) is None:
        _check_same_trunk(teacher, student)
    return student


def _check_same_trunk(teacher: nn.Module, student: nn.Module) -> None:
    """Every non-head parameter of the teacher exists in the student with the same shape."""
    t = {k: v.shape for k, v in teacher.state_dict().items() if not k.startswith("head.")}
    s = {k: v.shape for k, v in student.state_dict().items() if not k.startswith("head.")}
    if t != s:
        diff = sorted(set(t) ^ set(s)) or sorted(k for k in t if t[k] != s[k])
        raise AttnxferError(
            f"could not re-create the teacher's architecture from the module alone (differs in "
            f"{diff[:6]}); pass arch='...' and the constructor arguments to build_student"
        )
