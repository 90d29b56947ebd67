"""The arithmetic of attention transfer, in two implementations.

Every function takes per-head tensors ``q``, ``k``, ``v`` of shape ``[B, H, N, D]`` (batch, heads,
tokens, head dim) and a softmax ``scale`` (``D ** -0.5`` for timm's ViTs).

- *eager* functions materialise ``[B, H, N, N]`` attention maps. They are the plain reference
  path: short, obviously correct, and needed by the map-averaging ablations and analyses.
- *fused* functions never build an ``N x N`` map; they only call
  :func:`torch.nn.functional.scaled_dot_product_attention` (SDPA), so memory is ``O(N)`` per head
  and PyTorch's flash / memory-efficient kernels do the work on GPU.

The identity behind the fused distillation loss (docs/method.md, last section): for one query row i,
with ``P_t`` the teacher's map and ``P_s`` the student's,

    CE_i = -sum_j P_t[i, j] log P_s[i, j] = LSE_j(s q_i . k_j) - s q_i . (P_t K_s)_i

and ``P_t K_s = SDPA(q_t, k_t, k_s)`` (the student's keys used as values). The log-sum-exp term
has its own autograd function, :class:`_RowLogSumExp`, whose backward is also built from SDPA.
Tests check both paths agree to 1e-10 (float64) in losses and all gradients.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest number of logits one chunk of the log-sum-exp forward may hold (about 64 MB in fp32).
_LSE_CHUNK_ELEMENTS = 1 << 24


# ---------------------------------------------------------------------------------------------
# eager reference path


def attention_map(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``softmax(q k^T * scale)`` over keys: ``[B, H, N, N]``."""
    return torch.softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def attention_log_map(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``log_softmax(q k^T * scale)`` over keys: ``[B, H, N, N]``."""
    return torch.log_softmax((q * scale) @ k.transpose(-2, -1), dim=-1)


def average_map(attn: Tensor, over: str | None) -> Tensor:
    """The paper's averaging ablation: replace a map ``[B, H, N, N]`` by its mean.

    ``over`` is ``"examples"`` (batch), ``"queries"`` (query tokens), ``"heads"`` or ``None``.
    The result broadcasts back to ``[B, H, N, N]`` so it can stand in for the per-example map.
    """
    dims = {"examples": 0, "heads": 1, "queries": 2}
    if over is None:
        return attn
    return attn.mean(dim=dims[over], keepdim=True).expand_as(attn)


def resample_map(
    attn: Tensor, prefix: int, source: tuple[int, int], target: tuple[int, int]
) -> Tensor:
    """A map ``[B, H, N, N]`` over ``prefix`` tokens and a ``source`` patch grid, moved onto a
    ``target`` grid: ``[B, H, prefix + target_h * target_w, same]``.

    Both axes are resampled by area (box) averaging: a target patch stands for the source
    patches it covers. For a grid shrunk by a whole factor (patch 4 to patch 8), that is exactly
    those patches; a grown grid repeats each source patch over the target patches inside it.

    - Query axis: a target patch's row is the mean of the rows of the source patches it covers.
      So each row stays a distribution. Prefix rows (class and register tokens) stay as they
      are.
    - Key axis: the mass on patch keys is resampled as a density and scaled back to the row's
      total patch mass. The mass on prefix keys is kept. So the share of a row that goes to
      the class token is unchanged, and mass spread evenly over the patches stays even.
    - Rows are renormalised to sum to 1 (against rounding).
    """
    if tuple(source) == tuple(target):
        return attn
    (sh, sw), (th, tw) = source, target

    def patches(x: Tensor) -> Tensor:  # [..., sh*sw] patch axis last -> [..., th*tw]
        grid = x.reshape(-1, 1, sh, sw)
        out = F.interpolate(grid, size=(th, tw), mode="area")
        return out.reshape(*x.shape[:-1], th * tw)

    # keys: prefix mass kept; patch mass resampled as a density, then scaled back to the
    # row's patch mass (interpolation conserves it only approximately)
    mass = attn[..., prefix:].sum(dim=-1, keepdim=True)
    spread = patches(attn[..., prefix:]).clamp_min(0)
    spread = spread * (mass / spread.sum(dim=-1, keepdim=True).clamp_min(1e-30))
    keys = torch.cat([attn[..., :prefix], spread], dim=-1)
    # queries: prefix rows kept, patch rows blended
    rows = keys[:, :, prefix:].transpose(-2, -1)  # [B, H, keys, source patches]
    blended = patches(rows).transpose(-2, -1)
    out = torch.cat([keys[:, :, :prefix], blended], dim=2).clamp_min(0)
    return out / out.sum(dim=-1, keepdim=True)


def attention_cross_entropy_eager(
    t_attn: Tensor, q_s: Tensor, k_s: Tensor, scale_s: float
) -> Tensor:
    """Distillation loss of one layer from a materialised teacher map.

    ``mean_{b,h,q} -sum_k t_attn[b,h,q,k] * log_softmax(q_s k_s^T * scale_s)[b,h,q,k]``.
    """
    log_p = attention_log_map(q_s, k_s, scale_s)  # [B, H, N, N]
    return -(t_attn * log_p).sum(dim=-1).mean()


class _AttendAndDistill(torch.autograd.Function):
    """A layer's own attention and its distillation loss from one materialised map.

    Forward: ``logits = q k^T s``, ``P_s = softmax(logits)``, ``out = P_s v`` and
    ``CE = mean_{b,h,q} -sum_k t[b,h,q,k] log P_s[b,h,q,k]``, where
    ``-sum_k t log P_s = LSE(logits) sum_k t - sum_k t logits``. The logits are multiplied once
    and only ``P_s`` and ``t`` are kept for the backward pass; the plain composition
    (:func:`attention_map` for the output, :func:`attention_cross_entropy_eager` for the loss)
    multiplies ``q k^T`` twice and keeps ``log P_s`` as well.

    Backward, with ``G = dL/dout`` and ``c = dL/dCE / (B H N)``:
    ``dlogits = P_s * (G v^T - rowsum(P_s * G v^T)) + c (P_s sum_k t - t)``, then
    ``dq = s dlogits k``, ``dk = s dlogits^T q``, ``dv = P_s^T G``. Maps and the softmax are
    at least float32; the matmuls run in the inputs' dtype (bfloat16 under autocast).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, t_attn: Tensor, scale: float):
        wide = torch.promote_types(q.dtype, torch.float32)  # maps and softmax: >= float32
        logits = ((q * scale) @ k.transpose(-2, -1)).to(wide)  # [B, H, N, N]
        lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # [B, H, N, 1]
        t = t_attn.to(wide)
        mass = t.sum(dim=-1, keepdim=True)  # 1 per row, up to rounding
        loss = (lse * mass - (t * logits).sum(dim=-1, keepdim=True)).mean()
        p = logits.sub_(lse).exp_()  # P_s, in the logits' storage
        out = p.to(v.dtype) @ v  # [B, H, N, D]
        ctx.save_for_backward(q, k, v, p, t, mass)
        ctx.scale = scale
        return out, loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: Tensor, grad_loss: Tensor):
        q, k, v, p, t, mass = ctx.saved_tensors
        s = ctx.scale
        grad_v = p.to(v.dtype).transpose(-2, -1) @ grad_out.to(v.dtype)  # [B, H, N, D]
        d_p = (grad_out.to(v.dtype) @ v.transpose(-2, -1)).to(p.dtype)  # [B, H, N, N]
        d_logits = p * (d_p - (p * d_p).sum(dim=-1, keepdim=True))
        c = grad_loss.to(p.dtype) / (p.numel() // p.shape[-1])  # d loss / d CE_row
        d_logits += c * (p * mass - t)
        d_logits = d_logits.to(q.dtype)
        grad_q = (d_logits @ k) * s
        grad_k = (d_logits.transpose(-2, -1) @ q) * s
        return grad_q, grad_k, grad_v, None, None


def attend_and_distill(
    q: Tensor, k: Tensor, v: Tensor, t_attn: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    """``(attention_map(q, k, scale) @ v, attention_cross_entropy_eager(t_attn, q, k, scale))``
    with one logits product and one map kept for the backward pass (:class:`_AttendAndDistill`).
    ``t_attn`` gets no gradient."""
    return _AttendAndDistill.apply(q, k, v, t_attn.detach(), scale)


# ---------------------------------------------------------------------------------------------
# fused path


def _chunks(q: Tensor, k: Tensor) -> tuple[range, int]:
    """Query-row offsets so that one chunk of logits holds at most ``_LSE_CHUNK_ELEMENTS``."""
    B, H, N, _ = q.shape
    rows = max(1, _LSE_CHUNK_ELEMENTS // max(1, B * H * k.shape[-2]))
    return range(0, N, rows), rows


def _row_logsumexp(q: Tensor, k: Tensor, scale: float) -> Tensor:
    """``LSE_j(scale * q_i . k_j)`` for every query row: ``[B, H, N]``.

    Computed in query chunks so at most ``_LSE_CHUNK_ELEMENTS`` logits exist at once; low
    precision inputs are upcast to float32 (the loss is a difference of two large terms).
    """
    compute_dtype = torch.promote_types(q.dtype, torch.float32)
    q = q.to(compute_dtype)
    k_t = k.to(compute_dtype).transpose(-2, -1)  # [B, H, D, N]
    starts, rows = _chunks(q, k)
    return torch.cat(
        [torch.logsumexp((q[:, :, i : i + rows] @ k_t) * scale, dim=-1) for i in starts], dim=-1
    )


class _RowLogSumExp(torch.autograd.Function):
    """Autograd for ``LSE_j(s q_i . k_j)`` without an ``N x N`` map.

    d/dq_i = s g_i (P_s K)_i and d/dk_j = s sum_i g_i P_s[i, j] q_i. The backward recomputes
    ``P_s`` chunk by chunk from the saved log-sum-exp (one logits matmul and two products per
    chunk), so memory stays ``O(chunk x N)`` like the forward.
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, scale: float) -> Tensor:
        lse = _row_logsumexp(q, k, scale)
        ctx.save_for_backward(q, k, lse)
        ctx.scale = scale
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, None]:
        q, k, lse = ctx.saved_tensors
        s = ctx.scale
        dtype = lse.dtype
        qc, kc = q.to(dtype), k.to(dtype)
        grad_q = torch.empty_like(qc)
        grad_k = torch.zeros_like(kc)
        starts, rows = _chunks(q, k)
        for i in starts:
            rows_q = qc[:, :, i : i + rows]  # [B, H, c, D]
            logits = (rows_q @ kc.transpose(-2, -1)) * s  # [B, H, c, N]
            weighted = torch.exp(logits - lse[:, :, i : i + rows, None])  # P_s rows
            weighted *= (grad[:, :, i : i + rows] * s)[..., None]  # s g_i P_s[i, j]
            grad_q[:, :, i : i + rows] = weighted @ kc
            grad_k += weighted.transpose(-2, -1) @ rows_q
        return grad_q.to(q.dtype), grad_k.to(k.dtype), None


def attention_cross_entropy_fused(
    q_t: Tensor, k_t: Tensor, scale_t: float, q_s: Tensor, k_s: Tensor, scale_s: float
) -> Tensor:
    """Same value and gradients as :func:`attention_cross_entropy_eager` with
    ``t_attn = attention_map(q_t, k_t, scale_t)``, in O(N) memory per head.

    Teacher tensors get no gradient; the student's ``q_s`` and ``k_s`` do.

    The student's keys are centred over tokens first: softmax over keys is invariant to adding
    one vector to every key, so the loss and both maps are unchanged, but the two terms below
    (each about ``s q . mean(k)``) lose their large common part. That matters in low precision:
    their difference is what the gradient is made of.
    """
    k_s = k_s - k_s.mean(dim=-2, keepdim=True)  # [B, H, N, D], same maps, smaller terms
    pt_ks = F.scaled_dot_product_attention(q_t, k_t, k_s, scale=scale_t)  # [B, H, N, D] = P_t K_s
    lse = _RowLogSumExp.apply(q_s, k_s, scale_s)  # [B, H, N]
    cross = (q_s * pt_ks).sum(dim=-1).to(lse.dtype) * scale_s  # [B, H, N]
    return (lse - cross).mean()
