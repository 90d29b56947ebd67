"""From a configuration to models: the one place where the ``teacher``, ``student`` and
``transfer`` sections become a frozen teacher, a student and their ``AttentionTransfer``.

Training (:mod:`attnxfer.engine`), pre-training (:mod:`attnxfer.pretrain`), evaluation and export
(:mod:`attnxfer.inference`, :mod:`attnxfer.export`) all build through here, so a model is made
the same way wherever it is made. A checkpoint records what it needs to build its model again:
the student's :class:`~attnxfer.models.ModelSpec` and, for copy modes, :func:`teacher_record`.
"""

from __future__ import annotations

from typing import Any

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from .config import Config, StudentConfig, TeacherConfig
from .data import normalisation
from .errors import AttnxferError
from .models import ModelSpec, build_student, build_teacher
from .transfer import AttentionTransfer, mode_of
from .vit import check_supported, img_size, inner


def teacher_record(t: TeacherConfig) -> dict[str, Any]:
    """What a checkpoint keeps to load the teacher again (copy students need it to run)."""
    return {
        "source": t.source,
        "arch": t.arch,
        "model_args": t.model_args,
        "checkpoint_key": t.checkpoint_key,
    }


def teacher_from(record: dict[str, Any], img_size: int) -> nn.Module:
    """The frozen teacher of a :func:`teacher_record` (or a ``teacher`` config section as a
    dict), built for ``img_size`` inputs."""
    return build_teacher(
        record["source"],
        arch=record["arch"],
        model_args=record["model_args"],
        img_size=img_size,
        checkpoint_key=record["checkpoint_key"],
    )


def _student_args(s: StudentConfig) -> dict[str, Any]:
    args: dict[str, Any] = {**s.model_args, "drop_path_rate": s.drop_path_rate}
    if s.global_pool is not None:
        args["global_pool"] = s.global_pool
    return args


def transfer_args(transfer: dict[str, Any]) -> dict[str, Any]:
    """``AttentionTransfer``'s keyword arguments from a ``transfer`` section (as a dict)."""
    keys = ("mode", "layers", "heads", "head_map", "weight", "impl", "average", "drop_path")
    return {k: transfer[k] for k in keys if k in transfer}  # head_map: absent in older runs


def build_model(cfg: Config, num_classes: int) -> tuple[AttentionTransfer, dict | None]:
    """Teacher (when the mode needs one), student and their ``AttentionTransfer``, and the
    teacher's pretrained config (its input normalisation), if there is a teacher."""
    mode = mode_of(cfg.transfer.mode)
    needs_teacher = mode.teacher_in_training or mode.init_from_teacher
    if needs_teacher and not cfg.teacher.source:
        raise AttnxferError(
            f"transfer.mode={mode.name} needs teacher.source (a timm name or a file)"
        )
    s = cfg.student
    args = _student_args(s)
    teacher = None
    if s.arch is not None:
        _require_vit(s.arch)
    if cfg.teacher.source:
        teacher = teacher_from(teacher_record(cfg.teacher), cfg.data.img_size)
        _check_input_size(teacher, cfg.data.img_size, "teacher")
        student = build_student(teacher, num_classes, arch=s.arch, **args)
    else:
        if s.arch is None:
            raise AttnxferError("without a teacher, set student.arch (e.g. vit_tiny_patch16_224)")
        args.setdefault("img_size", cfg.data.img_size)
        student = ModelSpec(s.arch, {}).create(num_classes=num_classes, **args)
    if s.arch is not None:
        check_supported(student, f"student.arch {s.arch}")
    _check_input_size(student, cfg.data.img_size, "student")
    pretrained_cfg = getattr(teacher, "pretrained_cfg", None)
    model = AttentionTransfer(
        teacher if needs_teacher else None,
        student,
        **transfer_args(vars(cfg.transfer)),
        input_stats=normalisation(cfg.data, pretrained_cfg),
    )
    return model, pretrained_cfg


def rebuild(meta: dict[str, Any], student: nn.Module) -> nn.Module:
    """A trained ``student`` as it runs at inference: alone, or, for copy modes, inside its
    ``AttentionTransfer`` with the teacher recorded in the checkpoint's ``meta``."""
    record = meta.get("needs_teacher")
    if record is None:
        return student
    teacher = teacher_from(record, meta["config"]["data"]["img_size"])
    transfer = {**meta["config"]["transfer"], "weight": None}  # no loss at inference
    stats = (meta["mean"], meta["std"])  # what the student's inputs are normalised with
    return AttentionTransfer(teacher, student, **transfer_args(transfer), input_stats=stats)


def build_encoder(cfg: Config) -> nn.Module:
    """The randomly initialised ViT encoder that ``attnxfer pretrain`` trains (``student.arch``
    without a head)."""
    s = cfg.student
    if s.arch is None:
        raise AttnxferError("pretrain needs student.arch, e.g. vit_tiny_patch16_224")
    if cfg.teacher.source:
        raise AttnxferError("pretrain starts from random weights: remove teacher.source")
    args = {**_student_args(s), "img_size": cfg.data.img_size, "num_classes": 0}
    _require_vit(s.arch)
    encoder = ModelSpec(s.arch, {}).create(**args)
    check_supported(encoder, f"student.arch {s.arch}")
    _check_input_size(encoder, cfg.data.img_size, "student")
    return encoder


def _require_vit(arch: str) -> None:
    """Refuse a ``student.arch`` that is not a timm ViT before building it with ViT arguments."""
    with torch.device("meta"):
        probe = ModelSpec(arch, {}).create()
    if not isinstance(probe, VisionTransformer):
        raise AttnxferError(
            f"student.arch={arch} is a {type(probe).__name__}: attnxfer trains timm "
            "VisionTransformers (vit_*, deit_*, ...; timm.list_models('vit_*'))"
        )


def _check_input_size(model: nn.Module, size: int, role: str) -> None:
    """The ``role`` model takes ``data.img_size`` inputs and tiles them into whole patches."""
    built, patch = img_size(model), inner(model).patch_embed.patch_size[0]
    if built != size:
        raise AttnxferError(
            f"the {role} is built for {built}px images but data.img_size={size}: set "
            f"data.img_size={built} or the {role}'s img_size={size}"
        )
    if size % patch:
        low, high = size // patch * patch, (size // patch + 1) * patch
        raise AttnxferError(
            f"data.img_size={size} is not a multiple of the {role}'s patch size {patch} (the "
            f"border would be cut off): use data.img_size={low or high} or {high}"
        )
