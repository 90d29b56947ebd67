"""The arithmetic: fused (no N x N maps) against the eager reference, and the loss's invariants."""

import math

import pytest
import torch

from attnxfer import functional as AF

SHAPES = [(1, 1, 5, 4), (2, 3, 17, 8), (3, 6, 50, 16), (2, 4, 197, 8)]


def _qk(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    q_t, k_t, q_s, k_s = (torch.randn(*shape, generator=g, dtype=dtype) for _ in range(4))
    return q_t, k_t, q_s.requires_grad_(), k_s.requires_grad_()


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_fused_cross_entropy_matches_eager(shape, dtype, tol):
    q_t, k_t, q_s, k_s = _qk(shape, dtype)
    s_t, s_s = shape[-1] ** -0.5, 0.7 * shape[-1] ** -0.5  # scales may differ
    eager = AF.attention_cross_entropy_eager(AF.attention_map(q_t, k_t, s_t), q_s, k_s, s_s)
    fused = AF.attention_cross_entropy_fused(q_t, k_t, s_t, q_s, k_s, s_s)
    g_eager = torch.autograd.grad(eager, (q_s, k_s))
    g_fused = torch.autograd.grad(fused, (q_s, k_s))
    assert _rel(fused, eager) < tol
    for a, b in zip(g_fused, g_eager, strict=True):
        assert _rel(a, b) < tol


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("teacher", ["map", "averaged"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_attend_and_distill_matches_the_plain_composition(shape, teacher, dtype, tol):
    """Output, loss and the gradients of q, k and v, from both the output and the loss: equal
    to the student's own attention beside the eager cross-entropy."""
    q_t, k_t, q_s, k_s = _qk(shape, dtype)
    v = torch.randn(*shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    v.requires_grad_()
    average = None if teacher == "map" else "queries"
    t_attn = AF.average_map(AF.attention_map(q_t, k_t, 0.4), average)
    s = 0.7 * shape[-1] ** -0.5
    w = torch.randn(*shape, generator=torch.Generator().manual_seed(2), dtype=dtype)

    def objective(out, loss):  # both outputs reach the gradient, with unequal weights
        return (out * w).sum() + 3.0 * loss

    out, loss = AF.attend_and_distill(q_s, k_s, v, t_attn, s)
    plain_out = AF.attention_map(q_s, k_s, s) @ v
    plain_loss = AF.attention_cross_entropy_eager(t_attn, q_s, k_s, s)
    assert _rel(out, plain_out) < tol and _rel(loss, plain_loss) < tol
    grads = torch.autograd.grad(objective(out, loss), (q_s, k_s, v))
    plain = torch.autograd.grad(objective(plain_out, plain_loss), (q_s, k_s, v))
    for a, b in zip(grads, plain, strict=True):
        assert _rel(a, b) < tol


def test_attend_and_distill_under_bf16_autocast():
    """Under bfloat16 autocast: the output in bfloat16, the loss in float32, both close to
    float32 (bfloat16 matmuls)."""
    q_t, k_t, q_s, k_s = _qk((2, 4, 65, 32), torch.float32)
    v = torch.randn(2, 4, 65, 32, requires_grad=True)
    t_attn = AF.attention_map(q_t, k_t, 0.2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, loss = AF.attend_and_distill(q_s, k_s, v, t_attn, 0.2)
    ref_out, ref_loss = AF.attend_and_distill(q_s, k_s, v, t_attn, 0.2)
    assert out.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert _rel(out.float(), ref_out) < 2e-2 and _rel(loss, ref_loss) < 1e-2
    (out.float().sum() + loss).backward()
    assert all(torch.isfinite(t.grad).all() for t in (q_s, k_s, v))


def test_lse_is_chunked_but_exact(monkeypatch):
    q_t, k_t, q_s, k_s = _qk((2, 2, 33, 8), torch.float64)
    whole = AF.attention_cross_entropy_fused(q_t, k_t, 0.3, q_s, k_s, 0.3)
    monkeypatch.setattr(AF, "_LSE_CHUNK_ELEMENTS", 2 * 2 * 33 * 5)  # 5 query rows per chunk
    chunked = AF.attention_cross_entropy_fused(q_t, k_t, 0.3, q_s, k_s, 0.3)
    assert _rel(chunked, whole) < 1e-14


def test_loss_at_equal_maps_is_teacher_entropy_with_zero_gradient():
    q, k, _, _ = _qk((2, 3, 11, 8), torch.float64)
    q_s, k_s = q.clone().requires_grad_(), k.clone().requires_grad_()
    p = AF.attention_map(q, k, 0.35)
    entropy = -(p * p.log()).sum(-1).mean()
    for loss in (
        AF.attention_cross_entropy_fused(q, k, 0.35, q_s, k_s, 0.35),
        AF.attention_cross_entropy_eager(p, q_s, k_s, 0.35),
    ):
        grads = torch.autograd.grad(loss, (q_s, k_s))
        assert loss.item() == pytest.approx(entropy.item(), rel=1e-12)
        assert max(g.abs().max().item() for g in grads) < 1e-12


def test_cross_entropy_is_kl_plus_entropy():
    q_t, k_t, q_s, k_s = _qk((2, 2, 9, 4), torch.float64)
    p_t = AF.attention_map(q_t, k_t, 0.5)
    p_s = AF.attention_map(q_s, k_s, 0.5)
    kl = (p_t * (p_t.log() - p_s.log())).sum(-1).mean()
    entropy = -(p_t * p_t.log()).sum(-1).mean()
    ce = AF.attention_cross_entropy_fused(q_t, k_t, 0.5, q_s, k_s, 0.5)
    assert ce.item() == pytest.approx((kl + entropy).item(), rel=1e-12)
    assert kl.item() > 0


def test_uniform_student_gives_log_n():
    q_t, k_t, _, _ = _qk((1, 2, 13, 4), torch.float64)
    zeros = torch.zeros(1, 2, 13, 4, dtype=torch.float64)
    ce = AF.attention_cross_entropy_fused(q_t, k_t, 0.5, zeros, zeros, 0.5)
    assert ce.item() == pytest.approx(math.log(13), rel=1e-12)


@pytest.mark.parametrize(("over", "dim"), [("examples", 0), ("heads", 1), ("queries", 2)])
def test_average_map(over, dim):
    attn = torch.softmax(torch.randn(3, 4, 6, 6, dtype=torch.float64), -1)
    avg = AF.average_map(attn, over)
    assert avg.shape == attn.shape
    assert torch.allclose(avg.sum(-1), torch.ones(()).double())  # still distributions
    assert torch.allclose(avg, attn.mean(dim, keepdim=True).expand_as(attn))
    assert torch.equal(AF.average_map(attn, None), attn)
