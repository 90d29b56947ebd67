"""Run configuration: dataclasses, YAML files and ``key=value`` overrides.

Each section's docstring names the code that reads it. Every field is declared with
:func:`setting`, which also states the values the field accepts (:class:`Rule`); a section
checks its fields' types and rules when it is made, and :class:`Config` checks how fields of
different sections go together. So a config built from YAML, from overrides or in Python is
either valid or refused with one line that names the key, what it must be and what it got.
Unknown keys are an error that lists the valid ones. What depends on the command or on the
built models (a mode that needs a teacher, layer and head indices against the depth, the image
size against the patch size) is checked when the models are built, before anything is written.
The fully resolved config is written into the run directory as ``config.yaml`` before training
starts.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import importlib
import itertools
import math
import re
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from .errors import AttnxferError
from .selection import HEAD_MAPS, parse_heads, parse_layers

# ---------------------------------------------------------------------------------------------
# rules: what one field accepts


@dataclass(frozen=True)
class Rule:
    """A condition on one (non-null) config value and, in words, what the value must be."""

    test: Callable[[Any], bool]
    must: str | Callable[[], str]  # a function for words built when shown (lazy name lists)

    def words(self) -> str:
        return self.must() if callable(self.must) else self.must


def at_least(low: float) -> Rule:
    return Rule(lambda v: v >= low, f"at least {low}")


def above(low: float) -> Rule:
    return Rule(lambda v: v > low, f"greater than {low}")


def fraction(*, open_low: bool = False, open_high: bool = False) -> Rule:
    """A number in [0, 1], with either end excluded on request."""
    lo, hi = "(" if open_low else "[", ")" if open_high else "]"
    return Rule(
        lambda v: (v > 0 if open_low else v >= 0) and (v < 1 if open_high else v <= 1),
        f"in {lo}0, 1{hi}",
    )


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]]) -> Rule:
    """One of ``choices``: a sequence, or a function returning one (for lists defined in
    modules that import this one)."""

    def names() -> Sequence[str]:
        return choices() if callable(choices) else choices

    return Rule(lambda v: v in names(), lambda: "one of " + ", ".join(map(repr, names())))


def numbers(count: int, each: Rule | None = None, *, ordered: bool = False) -> Rule:
    """A list of ``count`` numbers, each obeying ``each``, ascending when ``ordered``."""

    def test(v: list) -> bool:
        if len(v) != count or not all(_is_number(x) and math.isfinite(x) for x in v):
            return False
        return all(each is None or each.test(x) for x in v) and (
            not ordered or all(a <= b for a, b in itertools.pairwise(v))
        )

    words = f"a list of {count} numbers"
    words += f", each {each.words()}" if each else ""
    return Rule(test, words + (", in ascending order" if ordered else ""))


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _timm_model(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".")[0])  # "vit_small_patch16_224.augreg_in21k" too


def _timm_optimizer(name: str) -> bool:
    from timm.optim import list_optimizers

    return name.lower().removeprefix("lookahead_") in list_optimizers()


def _timm_augment(text: str) -> bool:
    """Does timm parse ``text`` as RandAugment, AugMix or an AutoAugment policy, with every
    option a known key and a number (timm skips what it cannot split, so we check that)?"""
    from timm.data.auto_augment import (
        augment_and_mix_transform,
        auto_augment_transform,
        rand_augment_transform,
    )

    head, *options = text.split("-")
    if not all(re.fullmatch(r"[a-z]+\d[\d.]*", o) for o in options):
        return False
    hparams = {"translate_const": 10, "img_mean": (124, 116, 104)}
    build = {"rand": rand_augment_transform, "augmix": augment_and_mix_transform}.get(
        head, auto_augment_transform
    )
    try:
        build(text, hparams)
    except (AssertionError, ValueError, KeyError, IndexError, TypeError):
        return False
    return True


def _parses(parse: Callable[[Any, int], Any]) -> Callable[[Any], bool]:
    """Is a layer or head selection well formed? (Its indices are checked against the model
    when it is built; here against a bound no model reaches.)"""

    def test(spec: Any) -> bool:
        try:
            parse(spec, 4096)
        except AttnxferError:
            return False
        return True

    return test


LAYERS = Rule(
    _parses(parse_layers),
    "'all', 'none', an index, a list such as '0,2,5', a range '0-17', 'first:K', 'last:K' or "
    "'end_layer:-K', or items of these joined by commas",
)
HEADS = Rule(
    _parses(parse_heads),
    "'all', a count K, a list such as '0,3,5', 'first:K' or 'last:K'",
)
HEAD_MAP = Rule(
    lambda v: (
        v in HEAD_MAPS
        or (isinstance(v, list) and all(isinstance(h, int) and not isinstance(h, bool) for h in v))
        or (isinstance(v, str) and re.fullmatch(r"\d+(,\d+)*", v) is not None)
    ),
    "'index', 'average' or a list of teacher heads, one per selected student head",
)
MODEL_ARGS = Rule(
    lambda v: all(isinstance(k, str) for k in v),
    "constructor arguments of the timm model, by name (checked when it is built)",
)
TIMM_MODEL = Rule(_timm_model, "a timm model name (list them with timm.list_models('vit_*'))")
TIMM_OPTIMIZER = Rule(_timm_optimizer, "a timm optimiser name (timm.optim.list_optimizers())")
TIMM_AUGMENT = Rule(
    _timm_augment,
    "a timm augmentation string such as 'rand-m9-mstd0.5-inc1', 'augmix-m5-w3' or 'v0'",
)
NOT_EMPTY = Rule(lambda v: bool(v.strip()), "a non-empty string")
#: the ``global_pool`` values of timm's ViT that give one vector per image (a classifier needs one)
GLOBAL_POOLS = ("token", "avg", "avgmax", "max", "map")


def defined_in(module: str, name: str) -> Callable[[], Sequence[str]]:
    """The names that ``attnxfer.<module>.<name>`` lists, read when a value is first checked
    (those modules import this one, so it cannot import them when it loads)."""
    return lambda: tuple(getattr(importlib.import_module(f"{__package__}.{module}"), name))


def setting(default: Any, *rules: Rule) -> Any:
    """A config field: its default and the rules a non-null value must obey."""
    if isinstance(default, list | dict):
        return field(default_factory=lambda: copy.deepcopy(default), metadata={"rules": rules})
    return field(default=default, metadata={"rules": rules})


class Section:
    """A config section: checks each field's type and rules when it is made."""

    _section: ClassVar[str]  # the section's key in the config, for messages

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value, hint, key = getattr(self, f.name), hints[f.name], f"{self._section}.{f.name}"
            if not _type_ok(value, hint):
                raise AttnxferError(
                    f"config key {key} must be {_type_name(hint)}, got {value!r} "
                    f"({type(value).__name__})"
                )
            if _is_number(value) and not math.isfinite(value):
                raise AttnxferError(f"config key {key} must be a finite number, got {value!r}")
            if hint is float and isinstance(value, int):
                object.__setattr__(self, f.name, float(value))
            for rule in f.metadata.get("rules", ()) if value is not None else ():
                if not rule.test(value):
                    raise AttnxferError(f"config key {key} must be {rule.words()}, got {value!r}")


# ---------------------------------------------------------------------------------------------
# sections


@dataclass
class TeacherConfig(Section):
    """Read by ``build_teacher``. ``source``: timm name, ``hf-hub:`` id or local file."""

    _section: ClassVar[str] = "teacher"
    source: str | None = setting(None, NOT_EMPTY)
    arch: str | None = setting(None, TIMM_MODEL)  # for weight files that do not name it
    model_args: dict = setting({}, MODEL_ARGS)
    checkpoint_key: str | None = None


@dataclass
class StudentConfig(Section):
    """Read by ``build_student`` (or ``ModelSpec`` when there is no teacher: ``scratch``).

    ``arch=None`` means the teacher's own architecture with fresh weights.
    """

    _section: ClassVar[str] = "student"
    arch: str | None = setting(None, TIMM_MODEL)
    model_args: dict = setting({}, MODEL_ARGS)
    drop_path_rate: float = setting(0.0, fraction(open_high=True))
    global_pool: str | None = setting(None, one_of(GLOBAL_POOLS))  # "avg": MAE fine-tuning's


@dataclass
class TransferConfig(Section):
    """Read by ``AttentionTransfer``; see its docstring for each field. ``layers`` and
    ``heads`` are checked for form here and against the teacher when the models are built."""

    _section: ClassVar[str] = "transfer"
    mode: str = setting("distill", one_of(defined_in("transfer", "MODES")))
    layers: str | int | list | None = setting(None, LAYERS)
    heads: str | int | list | None = setting(None, HEADS)
    head_map: str | list | None = setting(None, HEAD_MAP)
    weight: float | None = setting(None, above(0))
    impl: str | None = setting(None, one_of(defined_in("routes", "MIXES")))
    average: str | None = setting(None, one_of(defined_in("transfer", "AVERAGES")))
    drop_path: str = setting("shared", one_of(defined_in("transfer", "DROP_PATH")))


@dataclass
class DataConfig(Section):
    """Read by ``attnxfer.data`` (``raw_dataset``, ``training_set``, ``evaluation_set``,
    ``build_transform``) through the engine's loaders.

    ``name``: ``digits`` (scikit-learn's 8x8 digits, offline), ``imagefolder`` (``root/train``,
    ``root/val``), or a torchvision dataset: ``cifar10``, ``cifar100``, ``mnist``,
    ``fashion_mnist``. ``bad_images``: ``fail`` (stop, naming the file) or ``skip`` (count and
    go on). ``pipeline``: ``tensor`` decodes the set into memory once and augments whole
    batches as tensors (random resized crop and flip only); ``pil`` runs timm's transforms per
    image; ``auto`` picks ``tensor`` when the augmentation allows it and the set fits in 4 GiB.
    """

    _section: ClassVar[str] = "data"
    name: str = setting("digits", one_of(defined_in("data", "DATASETS")))
    root: str | None = setting(None, NOT_EMPTY)
    train_split: str = setting("train", NOT_EMPTY)  # sub-folder (imagefolder) or split
    train_subset: int | None = setting(None, at_least(1))  # a fixed random subset this big
    val_split: str = setting("val", NOT_EMPTY)
    download: bool = False
    img_size: int = setting(32, at_least(1))
    batch_size: int = setting(64, at_least(1))  # per process
    num_workers: int = setting(0, at_least(0))
    pipeline: str = setting("auto", one_of(defined_in("data", "PIPELINES")))
    auto_augment: str | None = setting(None, TIMM_AUGMENT)  # e.g. "rand-m9-mstd0.5-inc1"
    reprob: float = setting(0.0, fraction())
    scale: list = setting([0.08, 1.0], numbers(2, fraction(open_low=True), ordered=True))
    hflip: float = setting(0.5, fraction())
    mixup: float = setting(0.0, at_least(0))  # Beta(alpha, alpha); 0 = off
    cutmix: float = setting(0.0, at_least(0))
    smoothing: float = setting(0.1, fraction(open_high=True))
    # default: the teacher's pretrained config, else ImageNet's
    mean: list | None = setting(None, numbers(3))
    std: list | None = setting(None, numbers(3, above(0)))
    bad_images: str = setting("fail", one_of(("fail", "skip")))
    eval_crop_pct: float = setting(1.0, fraction(open_low=True))  # ImageNet's standard: 0.875


@dataclass
class OptimConfig(Section):
    """Read by ``attnxfer.engine.build_optimization``.

    ``lr`` wins over ``blr``; otherwise ``lr = blr * effective_batch / 256``.
    """

    _section: ClassVar[str] = "optim"
    opt: str = setting("adamw", TIMM_OPTIMIZER)
    epochs: int = setting(10, at_least(1))
    blr: float = setting(1e-3, above(0))
    lr: float | None = setting(None, above(0))
    min_lr: float = setting(1e-6, at_least(0))
    warmup_epochs: float = setting(1.0, at_least(0))
    weight_decay: float = setting(0.05, at_least(0))
    layer_decay: float | None = setting(None, fraction(open_low=True))
    betas: list = setting([0.9, 0.999], numbers(2, fraction(open_high=True)))
    clip_grad: float | None = setting(None, above(0))
    accum_steps: int = setting(1, at_least(1))


@dataclass
class RunConfig(Section):
    """Read by ``attnxfer.engine.Trainer``."""

    _section: ClassVar[str] = "run"
    output: str = setting("runs/default", NOT_EMPTY)
    seed: int = setting(0, Rule(lambda v: 0 <= v < 2**32, "in [0, 2**32)"))
    device: str = setting("auto", one_of(("auto", "cpu", "cuda")))
    # auto: bf16 where the device has it in hardware, else none (runtime.resolve_amp)
    amp: str = setting("none", one_of(("auto", "none", "bf16", "fp16")))
    compile: bool = False  # torch.compile the training forward (pays off on long runs)
    ema_decay: float | None = setting(None, fraction(open_low=True, open_high=True))
    eval_every: int = setting(1, at_least(1))  # epochs
    ckpt_every_steps: int | None = setting(None, at_least(1))  # also at every epoch end
    keep_checkpoints: int = setting(2, at_least(0))  # 0 keeps them all
    deterministic: bool = False
    nonfinite: str = setting("stop", one_of(("stop", "skip")))
    max_skipped_steps: int = setting(10, at_least(0))
    log_every: int = setting(10, at_least(1))  # steps
    # every N steps, log the norm of each loss part's gradient and the cosine between the
    # task's and the transfer's, for the whole model and per block (two extra backward passes
    # on those steps; off when None)
    grad_probe_every: int | None = setting(None, at_least(1))


@dataclass
class PretrainConfig(Section):
    """Read by ``attnxfer.pretrain`` (``attnxfer pretrain``); ignored by ``train``.

    ``method``: ``mae`` (masked autoencoding of ``student.arch``) or ``supervised``
    (classification from scratch). The decoder fields are MAE's light decoder.
    """

    _section: ClassVar[str] = "pretrain"
    method: str = setting("mae", one_of(defined_in("pretrain", "METHODS")))
    mask_ratio: float = setting(0.75, fraction(open_low=True, open_high=True))
    norm_pix_loss: bool = True
    decoder_dim: int = setting(128, at_least(1))
    decoder_depth: int = setting(2, at_least(1))
    decoder_heads: int = setting(4, at_least(1))


@dataclass
class Config:
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)

    def __post_init__(self) -> None:
        problem = _combination_problem(self)
        if problem:
            raise AttnxferError(problem)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _combination_problem(cfg: Config) -> str | None:
    """What is wrong with how the sections' fields go together, or ``None``."""
    s, d, o, p = cfg.student, cfg.data, cfg.optim, cfg.pretrain
    if not cfg.teacher.source and (cfg.teacher.arch or cfg.teacher.model_args):
        return "teacher.arch and teacher.model_args describe teacher.source: set it or drop them"
    size = s.model_args.get("img_size")
    if size is not None and size != d.img_size:
        return (
            f"student.model_args.img_size={size} differs from data.img_size={d.img_size}: "
            "drop it (the student follows data.img_size) or make the two equal"
        )
    if o.warmup_epochs > o.epochs:
        return (
            f"optim.warmup_epochs={o.warmup_epochs:g} is longer than optim.epochs={o.epochs}: "
            "the schedule would never leave its warmup; lower it"
        )
    if o.lr is not None and o.min_lr > o.lr:
        return f"optim.min_lr={o.min_lr:g} is above optim.lr={o.lr:g}: lower optim.min_lr"
    if p.decoder_dim % p.decoder_heads:
        return (
            f"pretrain.decoder_dim={p.decoder_dim} is not divisible by "
            f"pretrain.decoder_heads={p.decoder_heads}"
        )
    return None


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
        kwargs[name] = value
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
    return config_from_dict(data)


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
    """A checked :class:`Config` from nested dicts (a YAML file's content)."""
    return _build(Config, data, "")


def dump_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def reference() -> str:
    """Every config key as a markdown table: its type, default and the values it accepts (the
    rules above, in words). ``docs/config.md`` is this text; a test keeps the two equal."""
    lines = [
        "# Config keys",
        "",
        "Generated from `src/attnxfer/config.py` by `attnxfer.config.reference()`; a test keeps",
        "this file equal to it. A value that breaks a rule is refused when the config is loaded,",
        "with one line naming the key. How fields of different sections go together is checked",
        "then too; what needs the built models (a mode that needs a teacher, layer and head",
        "indices, the image size against the patch size) is checked when they are built, before",
        "anything is written.",
        "",
        "| key | type | default | accepts |",
        "|---|---|---|---|",
    ]
    for section in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[section.name]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default_factory() if callable(f.default_factory) else f.default
            rules = "; ".join(r.words() for r in f.metadata.get("rules", ())) or "any"
            shown = yaml.safe_dump(default, default_flow_style=True).removesuffix("\n...\n")
            lines.append(
                f"| `{section.name}.{f.name}` | {_type_name(hints[f.name])} | "
                f"`{shown.strip()}` | {rules} |"
            )
    return "\n".join(lines) + "\n"
