"""``AttentionTransfer``: a frozen teacher and a student, one forward pass, one output.

.. code-block:: python

    model = AttentionTransfer(teacher, student, mode="distill", layers="all", weight=3.0)
    out = model(images)  # out.logits [B, C], out.transfer_loss (scalar tensor)
    loss = criterion(out.logits, targets) + out.transfer_loss

Modes (the mode string is resolved once, here, into route classes and a forward strategy):

=================  =========================================================================
``scratch``        the student alone (no teacher)
``finetune``       the student initialised from the teacher's weights (head re-initialised)
``copy``           attention copy: the teacher's maps replace the student's
``copy_q/k/v``     the teacher's Q (or K, or V) replaces the student's
``distill``        attention distillation: + weight * sum_layers CE(teacher map, student map)
``distill_q/k/v``  + weight * sum_layers MSE(student Q/K/V, teacher Q/K/V)
``feature_distill`` + weight * sum_layers MSE(student, teacher residual stream after the block)
=================  =========================================================================

Fidelity notes (docs/method.md, "How attnxfer relates to the released code"):

- The distillation loss of a layer is averaged over batch, heads and queries, and layer losses
  are *summed* (not averaged), as in the reference; ``weight`` defaults to 3.0 (the released
  recipe) for ``distill``. The other loss modes default to 1.0 (the reference leaves the
  Q/K/V-MSE weight to its command line; the paper does not state the feature-KD weight).
- Layer selection is explicit: the reference's "all but the last 3" default must be asked for
  (``layers="end_layer:-3"``); ``layers="all"`` means all.
- Stochastic depth: ``drop_path="shared"`` (default) draws one mask per sample, layer and branch
  and gives it to teacher and student, as the reference does, so in copy mode the teacher's maps
  route exactly the residual stream the student computes. ``drop_path="student"`` runs the teacher
  at full depth (its true maps) and leaves the student's own timm ``DropPath``.
- In evaluation mode the distillation modes do not run the teacher (only the student is needed
  at inference) and ``transfer_loss`` is zero; the copy modes always run it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from timm.layers import DropPath
from torch import Tensor, nn

from . import routes as R
from .errors import AttnxferError
from .models import spec_of
from .selection import HeadMap, Spec, pair_heads, parse_heads, parse_layers
from .vit import blocks, grid, num_tokens, prefix_tokens

log = logging.getLogger(__name__)


@dataclass
class TransferOutput:
    """What :class:`AttentionTransfer` returns, whatever the mode.

    ``transfer_loss`` is already weighted and summed over layers (a zero tensor when the mode has
    no transfer loss); ``layer_losses`` maps a block index to its unweighted loss, for logging.
    """

    logits: Tensor
    transfer_loss: Tensor
    layer_losses: dict[int, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class Mode:
    """What a mode name means, resolved once."""

    name: str
    route: type[R.StudentRoute] | None = None  # student route of selected layers
    teacher_in_training: bool = False
    teacher_at_inference: bool = False
    has_loss: bool = False
    default_weight: float | None = None
    init_from_teacher: bool = False
    features: bool = False  # residual-stream feature distillation
    needs_same_head_dim: bool = False
    averaging: bool = False  # the teacher-map averaging ablations apply


MODES: dict[str, Mode] = {
    m.name: m
    for m in (
        Mode("scratch"),
        Mode("finetune", init_from_teacher=True),
        Mode("copy", R.CopyMap, True, True, averaging=True),
        Mode("copy_q", R.CopyQ, True, True, needs_same_head_dim=True),
        Mode("copy_k", R.CopyK, True, True, needs_same_head_dim=True),
        Mode("copy_v", R.CopyV, True, True, needs_same_head_dim=True),
        Mode("distill", R.DistillMap, True, has_loss=True, default_weight=3.0, averaging=True),
        Mode(
            "distill_q",
            R.DistillQ,
            True,
            has_loss=True,
            default_weight=1.0,
            needs_same_head_dim=True,
        ),
        Mode(
            "distill_k",
            R.DistillK,
            True,
            has_loss=True,
            default_weight=1.0,
            needs_same_head_dim=True,
        ),
        Mode(
            "distill_v",
            R.DistillV,
            True,
            has_loss=True,
            default_weight=1.0,
            needs_same_head_dim=True,
        ),
        Mode("feature_distill", None, True, has_loss=True, default_weight=1.0, features=True),
    )
}

AVERAGES = ("examples", "queries", "heads")
DROP_PATH = ("shared", "student")


def mode_of(name: str) -> Mode:
    """The :class:`Mode` of a mode name; the one place an unknown name is refused."""
    mode = MODES.get(name)
    if mode is None:
        raise AttnxferError(f"unknown mode {name!r}: choose one of {', '.join(MODES)}")
    return mode


def canonical_transfer(transfer: dict[str, Any]) -> dict[str, Any]:
    """A transfer section with each setting in one spelling, as :class:`AttentionTransfer`
    reads it: ``"all"`` layers or heads are ``None`` (every one), ``"index"`` head pairing is
    ``None`` (the default), an unset weight is the mode's default. Two runs whose canonical
    sections are equal transfer the same way."""
    out = dict(transfer)
    if out.get("head_map") == "index":
        out["head_map"] = None
    for key in ("layers", "heads"):
        if out.get(key) == "all":
            out[key] = None
    mode = MODES.get(out.get("mode"))
    if out.get("weight") is None and mode is not None:
        out["weight"] = mode.default_weight
    if out.get("weight") is not None:
        out["weight"] = float(out["weight"])
    return out


class AttentionTransfer(nn.Module):
    """A student that takes its attention from a frozen teacher (see the module docstring).

    Args:
        teacher: frozen pre-trained ViT (``build_teacher``); may be ``None`` for ``scratch``.
        student: the student (``build_student``), trained in place: ``model.student`` is the
            timm model, and its state dict has plain timm keys.
        mode: one of :data:`MODES`.
        layers: which blocks transfer (``attnxfer.selection``); default all.
        heads: which student heads of those blocks transfer; default all.
        head_map: which teacher heads each selected student head receives
            (:func:`attnxfer.selection.pair_heads`): ``None``/``"index"`` (head ``j`` gets
            teacher head ``j``, the paper's pairing), ``"average"`` (groups of teacher heads
            averaged per student head, or teacher heads shared by groups of student heads, for
            teachers and students with different head counts) or a list of teacher heads, one
            per selected student head. The Q, K and V modes take one teacher head per student
            head.
        weight: multiplier of the summed layer losses (loss modes only).
        impl: how attention is computed, in transferred layers and timm's own layers alike
            (every mode): ``"auto"`` (default), ``"fused"`` (no N x N maps; PyTorch's SDPA
            kernels) or ``"eager"`` (materialised maps). ``auto`` decides per forward pass from
            the device and the token count: on a CPU up to ``routes.CPU_EAGER_MAX_TOKENS``
            tokens it materialises the maps (faster there); on a GPU, or for longer sequences,
            it runs the fused kernels. With ``average`` it is always eager (the averaged map
            must exist).
        average: teacher-map averaging ablation, ``"examples"``, ``"queries"`` or ``"heads"``
            (``copy`` and ``distill`` only).
        drop_path: ``"shared"`` or ``"student"``, see the module docstring.
        input_stats: ``(mean, std)`` the images were normalised with (the student's). When the
            teacher's ``pretrained_cfg`` names other statistics, each batch is converted for the
            teacher (``x * std / std_t + (mean - mean_t) / std_t`` per channel), so it sees
            the inputs it was trained on; logged once. ``None``: the teacher gets the batch as
            it is.
    """

    def __init__(
        self,
        teacher: nn.Module | None,
        student: nn.Module,
        mode: str = "distill",
        layers: Spec = None,
        heads: Spec = None,
        head_map: HeadMap = None,
        weight: float | None = None,
        impl: str | None = None,
        average: str | None = None,
        drop_path: str = "shared",
        input_stats: tuple[Sequence[float], Sequence[float]] | None = None,
    ) -> None:
        super().__init__()
        self.mode = m = mode_of(mode)
        self.student = student
        s_blocks = blocks(student, "student")
        if any(isinstance(b.attn, R.StudentRoute) for b in s_blocks):
            raise AttnxferError(
                "this student is already part of an AttentionTransfer; build a fresh student "
                "(build_student) or pass model.plain_student()"
            )
        transfers = m.route is not None or m.features
        if not transfers:
            for name, value in (
                ("layers", layers),
                ("heads", heads),
                ("head_map", head_map),
                ("weight", weight),
                ("average", average),
            ):
                if value is not None:
                    raise AttnxferError(f"{name}= has no effect in mode {mode!r}: leave it out")
        if not m.has_loss and weight is not None:
            raise AttnxferError(f"mode {mode!r} has no transfer loss, so weight= does not apply")
        if m.features and (heads is not None or head_map is not None):
            raise AttnxferError(
                "feature_distill transfers whole features: heads= and head_map= do not apply"
            )
        if average is not None and (not m.averaging or average not in AVERAGES):
            raise AttnxferError(
                f"average={average!r} is not valid for mode {mode!r}: averaging applies to "
                f"'copy' and 'distill' and is one of {AVERAGES}"
            )
        if impl is None:
            impl = "eager" if average is not None else "auto"
        if impl not in R.MIXES:
            raise AttnxferError(f"impl={impl!r} is unknown: use 'auto', 'fused' or 'eager'")
        if impl == "fused" and average is not None:
            raise AttnxferError("the averaging ablations need the maps: use impl='eager'")
        if drop_path not in DROP_PATH:
            raise AttnxferError(f"drop_path={drop_path!r} is unknown: use one of {DROP_PATH}")
        if (m.teacher_in_training or m.init_from_teacher) and teacher is None:
            raise AttnxferError(f"mode {mode!r} needs a teacher (build_teacher(...))")
        self.impl = impl if m.route is not None else None
        # the kernels of timm's own attention layers: chosen by ``auto`` unless asked otherwise
        self._plain_impl = impl
        self._announced: set[str] = set()  # devices whose auto choice has been logged
        self._tokens = num_tokens(student)
        self.average = average
        self.weight = float(weight if weight is not None else (m.default_weight or 0.0))
        self.layers: tuple[int, ...] = ()
        self.heads: tuple[int, ...] = ()
        self.teacher_heads: tuple[int, ...] = ()  # per selected head, its group (pair_heads)
        self.links: dict[int, R.LayerLink] = {}
        self._original_attn: dict[int, nn.Module] = {}
        self._shared_drop_paths: list[R.SharedDropPath] = []
        # (teacher block, attribute, module) put in place before each teacher pass
        self._teacher_drop_paths: list[tuple[nn.Module, str, R.SharedDropPath]] = []

        if m.init_from_teacher:
            _init_from_teacher(student, teacher)
        # The teacher is only kept (and moved with .to()) when a forward pass needs it.
        self.teacher = teacher if m.teacher_in_training else None
        self._converts_input = False  # see input_stats
        self.grid: tuple[int, tuple[int, int], tuple[int, int]] | None = None  # resampled maps
        if self.teacher is not None:
            self.teacher.eval().requires_grad_(False)
            self._convert_inputs(input_stats)
            self.grid = self._token_mapping(student, impl)
            t_blocks = blocks(self.teacher, "teacher")
            self.layers = parse_layers(layers, len(s_blocks))
            if not self.layers:
                raise AttnxferError("the layer selection is empty: select at least one layer")
            if self.layers[-1] >= len(t_blocks):
                raise AttnxferError(
                    f"layer {self.layers[-1]} is selected but the teacher has only "
                    f"{len(t_blocks)} blocks"
                )
            if m.route is not None:
                self._install_routes(s_blocks, t_blocks, heads, head_map)
            elif self.mode.features and self.teacher.embed_dim != student.embed_dim:
                raise AttnxferError(
                    f"feature_distill needs equal widths (teacher {self.teacher.embed_dim}, "
                    f"student {student.embed_dim})"
                )
            if drop_path == "shared":
                self._share_drop_paths(s_blocks, t_blocks)
        self.drop_path = drop_path if self.teacher is not None else None
        log.info("attention transfer: %s", self.describe())

    # -- construction --------------------------------------------------------------------------

    def _install_routes(
        self, s_blocks: nn.Sequential, t_blocks: nn.Sequential, heads: Spec, head_map: HeadMap
    ) -> None:
        s_attn, t_attn = s_blocks[0].attn, t_blocks[0].attn
        self.heads = parse_heads(heads, s_attn.num_heads)
        self.teacher_heads = pair_heads(self.heads, s_attn.num_heads, t_attn.num_heads, head_map)
        if self.mode.needs_same_head_dim and len(self.teacher_heads) != len(self.heads):
            raise AttnxferError(
                f"mode {self.mode.name!r} gives each student head one teacher head's Q, K or V: "
                "head_map='average' with a larger teacher does not apply; give a list"
            )
        if self.mode.needs_same_head_dim and s_attn.head_dim != t_attn.head_dim:
            raise AttnxferError(
                f"mode {self.mode.name!r} mixes teacher and student Q/K/V, which needs equal "
                f"head dims (teacher {t_attn.head_dim}, student {s_attn.head_dim})"
            )
        options = R.RouteOptions(self.heads, self.teacher_heads, self.impl, self.average, self.grid)
        for i in self.layers:
            link = R.LayerLink()
            self.links[i] = link
            self._original_attn[i] = s_blocks[i].attn
            s_blocks[i].attn = self.mode.route(s_blocks[i].attn, link, options)
            if not isinstance(t_blocks[i].attn, R.TeacherTap):  # may serve another wrapper too
                t_blocks[i].attn = R.TeacherTap(t_blocks[i].attn)

    def _share_drop_paths(self, s_blocks: nn.Sequential, t_blocks: nn.Sequential) -> None:
        pairs = [
            (name, s_blk, t_blk)
            for s_blk, t_blk in zip(s_blocks, t_blocks, strict=False)
            for name in ("drop_path1", "drop_path2")
            if isinstance(getattr(s_blk, name, None), DropPath)
        ]
        if pairs and len(s_blocks) != len(t_blocks):
            raise AttnxferError(
                "drop_path='shared' needs teacher and student of equal depth; "
                "use drop_path='student'"
            )
        for name, s_blk, t_blk in pairs:
            shared = R.SharedDropPath(getattr(s_blk, name).drop_prob)
            setattr(s_blk, name, shared)
            self._shared_drop_paths.append(shared)
            self._teacher_drop_paths.append((t_blk, name, shared))

    # -- forward -------------------------------------------------------------------------------

    def train(self, mode: bool = True) -> AttentionTransfer:
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()  # the teacher never leaves eval mode
        return self

    def forward(self, images: Tensor) -> TransferOutput:
        """``images [B, 3, H, W]`` -> :class:`TransferOutput` (logits ``[B, C]``)."""
        device, tokens = images.device, self._tokens
        if self._plain_impl == "auto" and device.type not in self._announced:
            self._announced.add(device.type)
            how = "materialised maps" if R.prefers_eager(device, tokens) else "fused kernels"
            log.info("impl=auto on %s with %d tokens: %s", device.type, tokens, how)
        with R.plain_attention_kernels(self._plain_impl, device, tokens):
            return self._forward(images)

    def _forward(self, images: Tensor) -> TransferOutput:
        run_teacher = self.teacher is not None and (self.training or self.mode.teacher_at_inference)
        if not run_teacher:
            return TransferOutput(self.student(images), images.new_zeros(()))
        self._bind_teacher()
        if self.training:
            for shared in self._shared_drop_paths:
                shared.draw(images.shape[0], images.device)
        try:
            if self.mode.features:
                return self._forward_features(images)
            return self._forward_routed(images)
        finally:
            for link in self.links.values():
                link.clear()
            for blk in self.teacher.blocks:  # the teacher called alone computes as timm's
                if isinstance(blk.attn, R.TeacherTap):
                    blk.attn.bind()
            for shared in self._shared_drop_paths:
                shared.mask = None

    def _bind_teacher(self) -> None:
        """Point the teacher's taps and drop paths at this wrapper (the teacher may be shared)."""
        for i, blk in enumerate(self.teacher.blocks):
            if isinstance(blk.attn, R.TeacherTap):
                blk.attn.bind(self.links.get(i), i == self.layers[-1], R.MIXES[self._plain_impl])
        for blk, name, shared in self._teacher_drop_paths:
            setattr(blk, name, shared)

    def _token_mapping(
        self, student: nn.Module, impl: str
    ) -> tuple[int, tuple[int, int], tuple[int, int]] | None:
        """``(prefix tokens, teacher grid, student grid)`` when distillation must resample the
        teacher's maps onto the student's patch grid; ``None`` when the grids are the same.
        Other modes need the same tokens: they are refused here."""
        if num_tokens(self.teacher) == num_tokens(student):
            return None
        t_grid, s_grid = grid(self.teacher), grid(student)
        t_pre, s_pre = prefix_tokens(self.teacher), prefix_tokens(student)
        seen = f"teacher {t_grid[0]}x{t_grid[1]} patches, student {s_grid[0]}x{s_grid[1]}"
        if self.mode.name != "distill":
            raise AttnxferError(
                f"teacher and student see different tokens ({seen}; prefix tokens {t_pre} and "
                f"{s_pre}): mode {self.mode.name!r} needs the same ones (same image size, patch "
                "size, class/register tokens); mode 'distill' resamples the teacher's maps"
            )
        if t_pre != s_pre:
            raise AttnxferError(
                f"teacher and student have {t_pre} and {s_pre} class/register tokens: map "
                "resampling pairs them one to one, so give the student the teacher's"
            )
        if impl == "fused":
            raise AttnxferError(
                f"resampling the teacher's maps ({seen}) needs them materialised: use "
                "impl='auto' or 'eager'"
            )
        return t_pre, t_grid, s_grid

    def _convert_inputs(self, input_stats: tuple | None) -> None:
        """Buffers that turn the student's normalisation into the teacher's, when they differ."""
        pre = getattr(self.teacher, "pretrained_cfg", None) or {}
        if input_stats is None or "mean" not in pre or "std" not in pre:
            return
        mean, std = (torch.tensor(v, dtype=torch.float32).view(-1, 1, 1) for v in input_stats)
        t_mean, t_std = (
            torch.tensor(pre[k], dtype=torch.float32).view(-1, 1, 1) for k in ("mean", "std")
        )
        if torch.equal(mean, t_mean) and torch.equal(std, t_std):
            return
        log.info(
            "teacher input: batches normalised with mean %s std %s are converted to the "
            "teacher's mean %s std %s",
            *(tuple(round(float(x), 4) for x in v.flatten()) for v in (mean, std, t_mean, t_std)),
        )
        self.register_buffer("_teacher_scale", std / t_std, persistent=False)
        self.register_buffer("_teacher_shift", (mean - t_mean) / t_std, persistent=False)
        self._converts_input = True

    def _for_teacher(self, images: Tensor) -> Tensor:
        """The batch as the teacher expects it (see ``input_stats``)."""
        if not self._converts_input:
            return images
        return images * self._teacher_scale + self._teacher_shift

    def _forward_routed(self, images: Tensor) -> TransferOutput:
        # no_grad, not inference_mode: the student's autograd saves these tensors
        with torch.no_grad(), contextlib.suppress(R.TeacherDone):
            # stopped once the last transferred layer's q, k, v exist
            self.teacher.forward_features(self._for_teacher(images))
        logits = self.student(images)
        losses = {i: link.loss for i, link in self.links.items() if link.loss is not None}
        total = torch.stack(list(losses.values())).sum() if losses else logits.new_zeros(())
        return TransferOutput(logits, total * self.weight, losses)

    def _forward_features(self, images: Tensor) -> TransferOutput:
        idx = list(self.layers)
        with torch.no_grad():
            targets = self.teacher.forward_intermediates(
                self._for_teacher(images),
                indices=idx,
                stop_early=True,
                intermediates_only=True,
                output_fmt="NLC",
                return_prefix_tokens=True,
            )
        final, feats = self.student.forward_intermediates(
            images, indices=idx, output_fmt="NLC", return_prefix_tokens=True
        )
        logits = self.student.forward_head(final)
        losses = {
            i: torch.nn.functional.mse_loss(_tokens(s), _tokens(t))
            for i, s, t in zip(idx, feats, targets, strict=True)
        }
        total = torch.stack(list(losses.values())).sum()
        return TransferOutput(logits, total * self.weight, losses)

    # -- inspection and export -----------------------------------------------------------------

    def describe(self) -> str:
        """One line: mode, implementation, layers, heads, weight, drop-path handling."""
        if self.teacher is None:
            return f"mode={self.mode.name} (no teacher in the forward pass)"
        depth = len(self.student.blocks)
        parts = [f"mode={self.mode.name}", f"layers={_ranges(self.layers)} of {depth}"]
        if self.mode.route is not None:
            num_heads = self.student.blocks[0].attn.num_heads
            parts.append(f"heads={_ranges(self.heads)} of {num_heads}")
            if self.teacher_heads != self.heads:
                parts.append(f"teacher heads={list(self.teacher_heads)}")
            parts.append(f"impl={self.impl}")
            if self.grid is not None:
                (th, tw), (sh, sw) = self.grid[1:]
                parts.append(f"teacher maps resampled {th}x{tw} -> {sh}x{sw}")
        if self.average:
            parts.append(f"average={self.average}")
        if self.mode.has_loss:
            parts.append(f"weight={self.weight:g}")
        parts.append(f"drop_path={self.drop_path}")
        return ", ".join(parts)

    def plain_student(self) -> nn.Module:
        """A copy of the student with timm's own attention modules back in place.

        Its state dict is the student's (same keys, same tensors' values); for copy modes it
        computes its *own* attention, which is not what was trained: those need their teacher.
        """
        plain = copy.deepcopy(self.student)
        for i, original in self._original_attn.items():
            attn = copy.deepcopy(original)
            attn.load_state_dict(plain.blocks[i].attn.state_dict())
            plain.blocks[i].attn = attn
        for blk in plain.blocks:
            for name in ("drop_path1", "drop_path2"):
                shared = getattr(blk, name, None)
                if isinstance(shared, R.SharedDropPath):
                    setattr(blk, name, DropPath(shared.drop_prob))
        if getattr(self.student, "attnxfer_spec", None) is not None:
            plain.attnxfer_spec = self.student.attnxfer_spec
        return plain


def _tokens(feature: Tensor | tuple[Tensor, Tensor]) -> Tensor:
    """``(patch, prefix)`` tokens from ``forward_intermediates`` -> all tokens ``[B, N, C]``."""
    if isinstance(feature, tuple):
        spatial, prefix = feature
        return torch.cat([prefix, spatial], dim=1)
    return feature


def _ranges(indices: tuple[int, ...]) -> str:
    """``(0, 1, 2, 5)`` -> ``"0-2,5"``."""
    out: list[str] = []
    start = prev = None
    for i in (*indices, None):
        if prev is not None and i == prev + 1:
            prev = i
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = i
    return ",".join(out) or "none"


def _init_from_teacher(student: nn.Module, teacher: nn.Module) -> None:
    """Fine-tuning: copy every trunk weight of the teacher into the student; keep its own head.

    The pooling norm (``norm`` vs ``fc_norm``) may differ when the student pools differently
    (MAE fine-tuning: mean-pool + ``fc_norm``); those keep their fresh init. Anything else that
    does not fit is an error.
    """
    spec_of(teacher)
    own_head = ("head.", "fc_norm.", "norm.")
    src = {k: v for k, v in teacher.state_dict().items() if not k.startswith("head.")}
    dst = student.state_dict()
    bad = [
        k
        for k in dst
        if not k.startswith(own_head) and (k not in src or src[k].shape != dst[k].shape)
    ]
    if bad:
        raise AttnxferError(
            f"finetune needs the teacher's architecture in the student; these student weights "
            f"have no match in the teacher: {bad[:6]}"
        )
    loadable = {k: v for k, v in src.items() if k in dst and v.shape == dst[k].shape}
    student.load_state_dict(loadable, strict=False)
    skipped = sorted(k for k in dst if k not in loadable)
    log.info("finetune: student initialised from the teacher; kept fresh: %s", skipped)
