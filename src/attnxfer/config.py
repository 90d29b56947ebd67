"""Run configuration: dataclasses, YAML files and ``key=value`` overrides.

Each section's docstring names the code that reads it. Unknown keys are an error that lists the
valid ones; values are checked against the field's type. The fully
resolved config is written into the run directory as ``config.yaml`` before training starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import AttnxferError


@dataclass
class TeacherConfig:
    """Read by ``build_teacher``. ``source``: timm name, ``hf-hub:`` id or local file."""

    source: str | None = None
    arch: str | None = None
    model_args: dict = field(default_factory=dict)
    checkpoint_key: str | None = None


@dataclass
class StudentConfig:
    """Read by ``build_student`` (or ``ModelSpec`` when there is no teacher: ``scratch``).

    ``arch=None`` means the teacher's own architecture with fresh weights.
    """

    arch: str | None = None
    model_args: dict = field(default_factory=dict)
    drop_path_rate: float = 0.0
    global_pool: str | None = None  # "avg" is the MAE fine-tuning convention


@dataclass
class TransferConfig:
    """Read by ``AttentionTransfer``; see its docstring for each field."""

    mode: str = "distill"
    layers: str | int | list | None = None
    heads: str | int | list | None = None
    weight: float | None = None
    impl: str | None = None
    average: str | None = None
    drop_path: str = "shared"


@dataclass
class DataConfig:
    """Read by ``attnxfer.data`` (``raw_dataset``, ``training_set``, ``evaluation_set``,
    ``build_transform``) through the engine's loaders.

    ``name``: ``digits`` (scikit-learn's 8x8 digits, offline), ``imagefolder`` (``root/train``,
    ``root/val``), or a torchvision dataset: ``cifar10``, ``cifar100``, ``mnist``,
    ``fashion_mnist``. ``bad_images``: ``fail`` (stop, naming the file) or ``skip`` (count and
    go on). ``pipeline``: ``tensor`` decodes the set into memory once and augments whole
    batches as tensors (random resized crop and flip only); ``pil`` runs timm's transforms per
    image; ``auto`` picks ``tensor`` when the augmentation allows it and the set fits in 4 GiB.
    """

    name: str = "digits"
    root: str | None = None
    train_split: str = "train"  # sub-folder (imagefolder) or split of the training set
    train_subset: int | None = None  # train on this many images (a fixed random subset)
    val_split: str = "val"
    download: bool = False
    img_size: int = 32
    batch_size: int = 64  # per process
    num_workers: int = 0
    pipeline: str = "auto"  # auto | tensor (decoded once, batch augmentation) | pil
    auto_augment: str | None = None  # e.g. "rand-m9-mstd0.5-inc1"
    reprob: float = 0.0
    scale: list = field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    mixup: float = 0.0
    cutmix: float = 0.0
    smoothing: float = 0.1
    mean: list | None = None  # default: the teacher's pretrained config, else ImageNet's
    std: list | None = None
    bad_images: str = "fail"
    eval_crop_pct: float = 1.0  # centre crop for evaluation; 0.875 is ImageNet's standard


@dataclass
class OptimConfig:
    """Read by ``attnxfer.engine.build_optimization``.

    ``lr`` wins over ``blr``; otherwise ``lr = blr * effective_batch / 256``.
    """

    opt: str = "adamw"
    epochs: int = 10
    blr: float = 1e-3
    lr: float | None = None
    min_lr: float = 1e-6
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    layer_decay: float | None = None
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    clip_grad: float | None = None
    accum_steps: int = 1


@dataclass
class RunConfig:
    """Read by ``attnxfer.engine.Trainer``."""

    output: str = "runs/default"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "none"  # none | bf16 | fp16
    compile: bool = False  # torch.compile the training forward (pays off on long runs)
    ema_decay: float | None = None
    eval_every: int = 1  # epochs
    ckpt_every_steps: int | None = None  # also at every epoch end
    keep_checkpoints: int = 2
    deterministic: bool = False
    nonfinite: str = "stop"  # stop | skip
    max_skipped_steps: int = 10
    log_every: int = 10


@dataclass
class PretrainConfig:
    """Read by ``attnxfer.pretrain`` (``attnxfer pretrain``); ignored by ``train``.

    ``method``: ``mae`` (masked autoencoding of ``student.arch``) or ``supervised``
    (classification from scratch). The decoder fields are MAE's light decoder.
    """

    method: str = "mae"
    mask_ratio: float = 0.75
    norm_pix_loss: bool = True
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4


@dataclass
class Config:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    return {
        type(None): "null",
        float: "a number",
        int: "an integer",
        str: "a string",
        bool: "true/false",
        list: "a list",
        dict: "a mapping",
    }.get(hint, str(hint))


def _build(cls: type, data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise AttnxferError(f"config section '{prefix or 'top level'}' must be a mapping")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"in section '{prefix}'" if prefix else "at the top level"
        raise AttnxferError(
            f"unknown config key {prefix + '.' if prefix else ''}{unknown[0]} {where}; "
            f"valid keys: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        path = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, path)
            continue
        if isinstance(value, str) and _type_ok(0.5, hint):
            # YAML 1.1 reads "1e-3" (no dot) as a string; a float field takes it as a number
            with contextlib.suppress(ValueError):
                value = float(value)
        if not _type_ok(value, hint):
            raise AttnxferError(
                f"config key {path} must be {_type_name(hint)}, got {value!r} "
                f"({type(value).__name__})"
            )
        else:
            kwargs[name] = float(value) if hint is float and isinstance(value, int) else value
    return cls(**kwargs)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> dict:
    """``"optim.blr=1e-3"`` -> ``{"optim": {"blr": 0.001}}`` (the value is parsed as YAML)."""
    key, sep, raw = text.partition("=")
    if not sep or not key or any(not part for part in key.split(".")):
        raise AttnxferError(f"override {text!r} is not of the form section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw  # a plain string such as "0-17,20" that YAML cannot parse
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise AttnxferError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise AttnxferError(f"config file {path} is not valid YAML{where}: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise AttnxferError(f"config file {path} must hold a mapping of sections")
    return data


def load_config(paths: list[str | Path] = (), overrides: list[str] = ()) -> Config:
    """Merge YAML files (later wins), then ``key=value`` overrides, into a checked Config."""
    data: dict = {}
    for path in paths:
        data = _merge(data, read_yaml(path))
    for text in overrides:
        data = _merge(data, parse_override(text))
    return _build(Config, data, "")


def load_run_config(
    paths: list[str | Path], overrides: list[str], resume: str | None = None
) -> Config:
    """:func:`load_config` for ``train`` and ``pretrain``: resuming with no config file given
    continues with the run's own resolved ``config.yaml`` (found through ``run.output``)."""
    configs = list(paths)
    if resume and not configs:
        output = next((o.split("=", 1)[1] for o in overrides if o.startswith("run.output=")), None)
        if output and (Path(output) / "config.yaml").is_file():
            configs = [str(Path(output) / "config.yaml")]
    return load_config(configs, overrides)


def config_from_dict(data: dict) -> Config:
    return _build(Config, data, "")


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
