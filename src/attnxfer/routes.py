"""Attention routes: what a transferred layer does instead of its own attention.

A route takes the place of a timm ``Attention`` module in one block and adopts its submodules
(``qkv``, ``q_norm``, ``k_norm``, ``norm``, ``gate``, ``proj``, ...) under the same names, so a
state dict of a routed model has exactly timm's keys. The original module is kept by the
:class:`~attnxfer.transfer.AttentionTransfer` wrapper and put back on export.

Teacher side: :class:`TeacherTap` computes the teacher's own attention (fused) and records its
per-head ``q, k, v`` (``[B, H, N, D]``) into the layer's :class:`LayerLink`.
Student side: one class per kind of transfer, chosen once from the mode name:

==============  ============================================================================
``CopyMap``     out = softmax(q_t k_t^T s_t) V_s  (Q_s, K_s unused; not even computed when
                every head is copied)
``CopyQ``       out = softmax(q_t k_s^T s) V_s
``CopyK``       out = softmax(q_s k_t^T s) V_s
``CopyV``       out = softmax(q_s k_s^T s) V_t
``DistillMap``  own attention; loss = CE(softmax(teacher logits), softmax(student logits))
``DistillQKV``  own attention; loss = MSE(Q_s, Q_t) (or K, or V)
==============  ============================================================================

Heads that are not selected compute their own attention and get no loss. Each selected student
head receives one teacher head or the average map of a group of them
(:func:`attnxfer.selection.pair_heads`); by default student head ``j`` gets teacher head ``j``.
A student head with a group takes, in copy, the average of the group's maps applied to its
values, and in distillation the cross-entropy to the group's average map. Both are linear in
the map, so they are computed per pair and averaged, fused or eager alike.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from . import functional as AF
from .errors import AttnxferError
from .vit import SUPPORTED_ATTENTION


@dataclass
class TeacherQKV:
    """The teacher's per-head tensors of one layer, each ``[B, H, N, D]``."""

    q: Tensor
    k: Tensor
    v: Tensor
    scale: float


@dataclass
class LayerLink:
    """What one layer passes between teacher and student during one forward pass."""

    teacher: TeacherQKV | None = None
    loss: Tensor | None = None  # unweighted transfer loss of this layer (scalar)

    def clear(self) -> None:
        self.teacher = None
        self.loss = None


def _sdpa(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float) -> Tensor:
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, scale=scale)


def _eager(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float) -> Tensor:
    attn = AF.attention_map(q, k, scale)  # [B, H, N, N]
    return F.dropout(attn, dropout_p) @ v


#: On a CPU, sequences up to this many tokens attend faster through materialised maps than
#: through the fused kernels: forward and backward of one layer's distillation loss plus its own
#: attention take 1.73x as long fused at 65 tokens, 1.34x at 401, 1.04x at 785 and 0.96x at
#: 1025 (2-core AMD EPYC, docs/results/attention_crossover_cpu.txt,
#: ``benchmarks/attention_crossover.py``).
CPU_EAGER_MAX_TOKENS = 512


def prefers_eager(device: torch.device, tokens: int) -> bool:
    """``impl="auto"``: are materialised maps the faster path for ``tokens`` on ``device``?"""
    return device.type == "cpu" and tokens <= CPU_EAGER_MAX_TOKENS


def _auto(q: Tensor, k: Tensor, v: Tensor, scale: float, dropout_p: float) -> Tensor:
    mix = _eager if prefers_eager(q.device, q.shape[-2]) else _sdpa
    return mix(q, k, v, scale, dropout_p)


@contextlib.contextmanager
def plain_attention_kernels(impl: str, device: torch.device, tokens: int) -> Iterator[None]:
    """The SDPA kernels of timm's own attention layers (untransferred layers, the teacher,
    scratch and fine-tuned students): PyTorch's materialising backend under ``impl="eager"``,
    and under ``"auto"`` when maps are the faster path; otherwise PyTorch chooses as usual."""
    if impl == "eager" or (impl == "auto" and prefers_eager(device, tokens)):
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    else:
        yield


#: ``mix(q, k, v, scale, dropout_p) -> [B, H, N, Dv]``: attention with the given q, k and v.
Mix = Callable[[Tensor, Tensor, Tensor, float, float], Tensor]
MIXES: dict[str, Mix] = {"auto": _auto, "fused": _sdpa, "eager": _eager}


class _Route(nn.Module):
    """Base class: adopts a timm ``Attention``'s submodules and computes its output."""

    def __init__(self, attn: nn.Module) -> None:
        super().__init__()
        if type(attn) not in SUPPORTED_ATTENTION:
            names = ", ".join(c.__module__ + "." + c.__name__ for c in SUPPORTED_ATTENTION)
            raise AttnxferError(
                f"attention class {type(attn).__module__}.{type(attn).__name__} is not "
                f"supported for transfer (supported: {names})"
            )
        self.num_heads: int = attn.num_heads
        self.head_dim: int = attn.head_dim
        self.attn_dim: int = attn.attn_dim
        self.scale: float = attn.scale
        # Same attribute names as timm's Attention, so state-dict keys do not change.
        self.qkv = attn.qkv
        self.q_norm = attn.q_norm
        self.k_norm = attn.k_norm
        self.attn_drop = attn.attn_drop
        self.norm = attn.norm
        self.gate = attn.gate
        self.proj = attn.proj
        self.proj_drop = attn.proj_drop

    def project(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-head ``q, k, v``, each ``[B, H, N, D]``, exactly as timm computes them."""
        B, N, _ = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # 3 x [B, H, N, D]
        return self.q_norm(q), self.k_norm(k), v

    def project_v(self, x: Tensor) -> Tensor:
        """Only the values ``[B, H, N, D]``: the Q and K rows of ``qkv`` are skipped."""
        B, N, _ = x.shape
        rows = slice(2 * self.attn_dim, 3 * self.attn_dim)
        bias = None if self.qkv.bias is None else self.qkv.bias[rows]
        v = F.linear(x, self.qkv.weight[rows], bias)  # [B, N, H*D]
        return v.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)

    def dropout_p(self) -> float:
        return self.attn_drop.p if self.training else 0.0

    def finish(self, x: Tensor, out: Tensor) -> Tensor:
        """Heads ``[B, H, N, D]`` to the block's output ``[B, N, C]`` (timm's tail)."""
        B, _, N, _ = out.shape
        out = out.transpose(1, 2).reshape(B, N, self.attn_dim)
        out = self.norm(out)
        if self.gate is not None:
            out = out * self.gate(x).sigmoid()
        return self.proj_drop(self.proj(out))

    def attend(self, x: Tensor) -> Tensor:
        """The attention output per head, ``[B, H, N, D]``."""
        raise NotImplementedError

    def attended_map(self, q: Tensor, k: Tensor, teacher: TeacherQKV | None) -> Tensor:
        """The maps ``[B, H, N, N]`` this layer attends with, given its own ``q, k`` and the
        teacher's tensors of the same pass (for analyses): its own, unless a route takes them
        from the teacher."""
        return AF.attention_map(q, k, self.scale)

    def forward(
        self, x: Tensor, attn_mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        if attn_mask is not None or is_causal:
            raise AttnxferError(
                "attention masks and causal attention are not supported in transferred layers"
            )
        return self.finish(x, self.attend(x))


class TeacherDone(Exception):
    """Raised by the tap of the last transferred layer once it has recorded ``q, k, v``: the
    rest of the teacher's forward pass (that layer's attention output, its MLP, the layers
    above) would be computed for nothing."""


class TeacherTap(_Route):
    """The teacher's own attention, recording its per-head ``q, k, v`` into ``link``.

    ``link``, ``last`` and ``mix`` are bound by the wrapper before each teacher pass (one
    teacher may serve several ``AttentionTransfer`` wrappers); an unbound tap records nothing
    and attends with the fused kernel. A ``last`` tap stops the pass (:class:`TeacherDone`) as
    soon as it has recorded.
    """

    def __init__(self, attn: nn.Module) -> None:
        super().__init__(attn)
        self.link: LayerLink | None = None
        self.last = False
        self.mix: Mix = _sdpa

    def bind(self, link: LayerLink | None = None, last: bool = False, mix: Mix = _sdpa) -> None:
        self.link, self.last, self.mix = link, last, mix

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        if self.link is not None:
            self.link.teacher = TeacherQKV(q, k, v, self.scale)
            if self.last:
                raise TeacherDone
        return self.mix(q, k, v, self.scale, self.dropout_p())


@dataclass(frozen=True)
class RouteOptions:
    """How a student route transfers, resolved once by ``AttentionTransfer``."""

    heads: tuple[int, ...]  # student heads that receive transfer
    teacher_heads: tuple[int, ...]  # their teacher heads: an equal-sized group per student head
    impl: str  # "auto" | "fused" | "eager"
    average: str | None = None  # teacher-map averaging ablation (eager only)
    # distillation across token grids: (prefix tokens, teacher grid, student grid)
    grid: tuple[int, tuple[int, int], tuple[int, int]] | None = None


class StudentRoute(_Route):
    """A student layer that takes part of its attention from the teacher."""

    def __init__(self, attn: nn.Module, link: LayerLink, options: RouteOptions) -> None:
        super().__init__(attn)
        self.link = link
        self.mix: Mix = MIXES[options.impl]
        self.average = options.average
        self.heads = options.heads
        self.all_heads = options.heads == tuple(range(self.num_heads))
        self.other_heads = tuple(h for h in range(self.num_heads) if h not in options.heads)
        self.teacher_heads = options.teacher_heads
        self.group = len(options.teacher_heads) // len(options.heads)  # teacher heads per head
        self._paired = [j for j in options.heads for _ in range(self.group)]

    def teacher(self) -> TeacherQKV:
        t = self.link.teacher
        if t is None:
            raise AttnxferError(
                "this student layer needs its teacher's attention: call the AttentionTransfer "
                "wrapper (model(images)), not the student alone"
            )
        return t

    def pick(self, t: Tensor) -> Tensor:
        """The selected heads of the student's ``[B, H, N, D]`` tensor."""
        return t if self.all_heads else t[:, list(self.heads)]

    def mine(self, t: Tensor) -> Tensor:
        """The selected student heads, each repeated once per teacher head it is paired with:
        ``[B, pairs, N, D]``, aligned with :meth:`theirs`."""
        return self.pick(t) if self.group == 1 else t[:, self._paired]

    def theirs(self, t: Tensor) -> Tensor:
        """The teacher's heads of every pair, ``[B, pairs, N, D]``."""
        if self.teacher_heads == tuple(range(t.shape[1])):
            return t
        return t[:, list(self.teacher_heads)]

    def fold(self, out: Tensor) -> Tensor:
        """Per-pair outputs ``[B, pairs, N, D]`` to per-student-head ones: a group's mean."""
        return out if self.group == 1 else out.unflatten(1, (len(self.heads), self.group)).mean(2)

    def _teacher_heads(self, own: Tensor, teacher: Tensor) -> Tensor:
        """``own`` with the transferred heads replaced by the teacher's (one teacher head
        each: the Q and K modes)."""
        out = own.clone()
        out[:, list(self.heads)] = self.theirs(teacher).to(own.dtype)
        return out

    def own(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        return self.mix(q, k, v, self.scale, self.dropout_p())

    def merge(self, transferred: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """Heads ``[B, H, N, D]``: ``transferred`` for the selected heads, own attention else."""
        if self.all_heads:
            return transferred
        rest = list(self.other_heads)
        own = self.own(q[:, rest], k[:, rest], v[:, rest])
        out = own.new_empty(own.shape[0], self.num_heads, *own.shape[2:])
        out[:, list(self.heads)] = transferred
        out[:, rest] = own
        return out


class CopyMap(StudentRoute):
    """Attention copy: the teacher's full map applied to the student's values."""

    def attended_map(self, q, k, teacher):
        maps = super().attended_map(q, k, teacher)
        if teacher is None:
            return maps
        copied = AF.attention_map(self.theirs(teacher.q), self.theirs(teacher.k), teacher.scale)
        maps[:, list(self.heads)] = self.fold(copied).to(maps.dtype)
        return maps

    def attend(self, x: Tensor) -> Tensor:
        t = self.teacher()
        if self.all_heads:
            v = self.project_v(x)  # the student's Q and K would get no gradient: skip them
            q = k = v
        else:
            q, k, v = self.project(x)
        q_t, k_t = self.theirs(t.q), self.theirs(t.k)
        v_sel = self.mine(v)
        if self.average is None:
            out = self.mix(q_t, k_t, v_sel, t.scale, self.dropout_p())
        else:
            attn = AF.average_map(AF.attention_map(q_t, k_t, t.scale), self.average)
            out = F.dropout(attn, self.dropout_p()) @ v_sel
        return self.merge(self.fold(out), q, k, v)


class CopyQ(StudentRoute):
    """softmax(Q_teacher K_student^T s) V_student."""

    def attended_map(self, q, k, teacher):
        if teacher is not None:
            q = self._teacher_heads(q, teacher.q)
        return super().attended_map(q, k, teacher)

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        out = self.own(self.theirs(self.teacher().q), self.pick(k), self.pick(v))
        return self.merge(out, q, k, v)


class CopyK(StudentRoute):
    """softmax(Q_student K_teacher^T s) V_student."""

    def attended_map(self, q, k, teacher):
        if teacher is not None:
            k = self._teacher_heads(k, teacher.k)
        return super().attended_map(q, k, teacher)

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        out = self.own(self.pick(q), self.theirs(self.teacher().k), self.pick(v))
        return self.merge(out, q, k, v)


class CopyV(StudentRoute):
    """The student's own map applied to the teacher's values."""

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        out = self.own(self.pick(q), self.pick(k), self.theirs(self.teacher().v))
        return self.merge(out, q, k, v)


class DistillMap(StudentRoute):
    """Own attention; records CE(teacher map, student map) over the selected heads.

    Three ways to the same loss: fused (no ``N x N`` map, :func:`AF.attention_cross_entropy_fused`);
    the teacher's map materialised, with the student's own attention and the loss computed from
    one logits product (:func:`AF.attend_and_distill`), when this layer attends through
    materialised maps anyway and every head is distilled from its own teacher head; otherwise
    the teacher's map and :func:`AF.attention_cross_entropy_eager` beside the own attention.
    Averaged and resampled teacher maps are always materialised."""

    def __init__(self, attn: nn.Module, link: LayerLink, options: RouteOptions) -> None:
        super().__init__(attn, link, options)
        self.impl = options.impl
        self.grid = options.grid
        self.one_to_one = self.all_heads and self.group == 1

    def _eager_maps(self, q: Tensor) -> bool:
        """Does this layer attend through materialised maps (``impl``, and for ``auto`` the
        device and token count)?"""
        return self.impl == "eager" or (
            self.impl == "auto" and prefers_eager(q.device, q.shape[-2])
        )

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        t = self.link.teacher
        if t is None:  # no teacher at inference: only the student is needed
            return self.own(q, k, v)
        q_t, k_t = self.theirs(t.q), self.theirs(t.k)  # [B, pairs, N_t, D]
        eager = self._eager_maps(q)
        if self.grid is None and self.average is None and not eager:
            # per pair: CE is linear in the teacher's map, so a group's mean loss is the loss
            # to the group's average map
            self.link.loss = AF.attention_cross_entropy_fused(
                q_t, k_t, t.scale, self.mine(q), self.mine(k), self.scale
            )
            return self.own(q, k, v)
        t_attn = AF.attention_map(q_t, k_t, t.scale)  # [B, pairs, N_t, N_t]
        if self.grid is not None:  # another token grid: the teacher's maps, resampled
            t_attn = AF.resample_map(t_attn, *self.grid)  # [B, pairs, N, N]
        t_attn = AF.average_map(t_attn, self.average)
        if eager and self.one_to_one and self.dropout_p() == 0:
            out, self.link.loss = AF.attend_and_distill(q, k, v, t_attn, self.scale)
            return out
        self.link.loss = AF.attention_cross_entropy_eager(
            t_attn, self.mine(q), self.mine(k), self.scale
        )
        return self.own(q, k, v)


class DistillQKV(StudentRoute):
    """Own attention; records MSE between the student's and the teacher's Q (or K, or V)."""

    index: int = -1  # 0: Q, 1: K, 2: V (set by the subclasses below)

    def attend(self, x: Tensor) -> Tensor:
        q, k, v = self.project(x)
        t = self.link.teacher
        if t is not None:
            mine, theirs = (q, k, v)[self.index], (t.q, t.k, t.v)[self.index]
            self.link.loss = F.mse_loss(self.pick(mine), self.theirs(theirs))
        return self.own(q, k, v)


class DistillQ(DistillQKV):
    index = 0


class DistillK(DistillQKV):
    index = 1


class DistillV(DistillQKV):
    index = 2


class SharedDropPath(nn.Module):
    """Stochastic depth whose per-sample mask is drawn once and shared by teacher and student.

    The reference implementation draws one drop-path mask per sample, layer and branch and
    gives the same masks to teacher and student. The wrapper writes ``mask`` (``[B, 1, 1]``,
    already divided by the keep probability) before each training forward and clears it after.
    """

    def __init__(self, drop_prob: float) -> None:
        super().__init__()
        self.drop_prob = drop_prob
        self.mask: Tensor | None = None

    def draw(self, batch: int, device: torch.device) -> None:
        keep = 1.0 - self.drop_prob
        self.mask = torch.empty(batch, 1, 1, device=device).bernoulli_(keep).div_(keep)

    def forward(self, x: Tensor) -> Tensor:
        return x if self.mask is None else x * self.mask.to(x.dtype)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}, shared=True"
