"""AttentionTransfer: fused == eager, and the invariants every mode must keep."""

from __future__ import annotations

import copy

import pytest
import timm
import torch
from helpers import FAMILIES, images, tiny_vit
from timm.layers import Attention

from attnxfer import MODES, AttentionTransfer, AttnxferError, build_student, build_teacher
from attnxfer import functional as AF
from attnxfer import routes as R

ROUTED = [name for name, m in MODES.items() if m.route is not None]


def pair(family="vit", seed=0, **student_overrides):
    teacher = build_teacher(tiny_vit(family, seed=seed))
    torch.manual_seed(seed + 100)
    student = build_student(teacher, num_classes=5, **student_overrides)
    return teacher, student


def run(model, x):
    """Forward + backward of ``logits.sum() + transfer_loss``; returns outputs and grads."""
    out = model(x)
    (out.logits.square().mean() + out.transfer_loss).backward()
    grads = {n: p.grad.clone() for n, p in model.student.named_parameters() if p.grad is not None}
    return out.logits.detach(), out.transfer_loss.detach(), grads


def _rel(a, b):
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def assert_fused_equals_eager(family, mode, tol, heads=None, layers=None, batch=2):
    """Logits, transfer loss and every student gradient of the two implementations agree.

    float64 (tol 1e-10): per-parameter max-abs relative error; gradients that are zero in
    exact arithmetic (a key-norm bias, to which softmax is invariant) come out as ~1e-20 noise,
    so each is compared against at least 1e-6 of the largest gradient.
    float32 (tol 1e-5): the fused distillation gradient is a difference of two terms,
    s g (P_s K - P_t K), that nearly cancel when both maps are near-uniform (random models), so
    its float32 error is relative to |P K|, not to the difference. Checked there: the whole
    gradient vector within tol (norm-relative) and each tensor within 10 * tol.
    """
    teacher, student = pair(family)
    x = images(batch)
    results = []
    for impl in ("fused", "eager"):
        s = copy.deepcopy(student)
        model = AttentionTransfer(teacher, s, mode=mode, impl=impl, heads=heads, layers=layers)
        results.append(run(model.train(), x))
    (lf, tf, gf), (le, te, ge) = results
    assert _rel(lf, le) < tol
    assert abs(tf.item() - te.item()) <= tol * max(1.0, abs(te.item()))
    assert gf.keys() == ge.keys() and gf
    if x.dtype == torch.float64:
        floor = 1e-6 * max(g.abs().max().item() for g in ge.values())
        worst = max(
            ((gf[n] - ge[n]).abs().max() / max(ge[n].abs().max().item(), floor)).item() for n in ge
        )
        assert worst < tol, worst
    else:
        flat_f, flat_e = (torch.cat([g[n].flatten() for n in ge]) for g in (gf, ge))
        assert ((flat_f - flat_e).norm() / flat_e.norm()).item() < tol
        floor = 1e-4 * max(g.norm().item() for g in ge.values())
        worst = max(((gf[n] - ge[n]).norm() / max(ge[n].norm().item(), floor)).item() for n in ge)
        assert worst < 10 * tol, worst


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("mode", ROUTED)
def test_fused_equals_eager_float64(float64, family, mode):
    assert_fused_equals_eager(family, mode, tol=1e-10)


@pytest.mark.parametrize("mode", ["copy", "distill", "copy_q"])
@pytest.mark.parametrize("family", ["vit", "dinov2_reg", "qk_norm"])
def test_fused_equals_eager_float32(family, mode):
    assert_fused_equals_eager(family, mode, tol=1e-5)


@pytest.mark.parametrize("family", ["dinov2_reg", "vit"])
def test_fused_float32_is_as_accurate_as_eager_float32(family):
    """Against the float64 truth, the fused float32 distillation gradient is no worse than
    the eager (materialised-map) float32 one: the float32 gap between the two is noise."""
    truth, errors = None, {}
    for impl, dtype in (
        ("eager", torch.float64),
        ("fused", torch.float32),
        ("eager", torch.float32),
    ):
        teacher, student = pair(family)
        model = AttentionTransfer(teacher.to(dtype), student.to(dtype), mode="distill", impl=impl)
        _, _, grads = run(model.train(), images(2).to(dtype))
        flat = torch.cat([grads[n].double().flatten() for n in sorted(grads)])
        if truth is None:
            truth = flat
        else:
            errors[impl] = ((flat - truth).norm() / truth.norm()).item()
    assert errors["fused"] < 1.5 * errors["eager"] + 1e-7, errors


@pytest.mark.parametrize("mode", ["copy", "distill", "copy_k", "distill_v"])
def test_fused_equals_eager_partial_heads_and_layers_batch1(float64, mode):
    assert_fused_equals_eager("vit", mode, 1e-10, heads=[0, 2], layers="last:2", batch=1)


def test_odd_token_count_and_registers_are_covered():
    odd = tiny_vit("vit")  # 24 px / 4 px patches = 36 patches + class token = 37 tokens
    assert odd.patch_embed.num_patches + odd.num_prefix_tokens == 37
    reg = tiny_vit("dinov2_reg")
    assert reg.num_reg_tokens == 4 and hasattr(reg.blocks[0].ls1, "gamma")


@pytest.mark.parametrize("timm_fused", [True, False])
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_no_transfer_equals_plain_timm(float64, impl, timm_fused):
    """A student routed for distillation, in eval mode, computes exactly timm's forward."""
    teacher, student = pair("dinov2_reg")
    plain = copy.deepcopy(student).eval()
    for blk in plain.blocks:
        blk.attn.fused_attn = timm_fused
    model = AttentionTransfer(teacher, student, mode="distill", impl=impl).eval()
    x = images(3)
    out = model(x)
    assert out.transfer_loss.item() == 0.0  # no teacher at inference in distill mode
    assert _rel(out.logits, plain(x)) < 1e-12
    scratch = AttentionTransfer(None, copy.deepcopy(plain), mode="scratch").eval()
    # impl=auto may pick another SDPA kernel for timm's attention on a CPU: rounding differs
    assert _rel(scratch(x).logits, plain(x)) < 1e-12


@pytest.mark.parametrize("family", ["vit", "dinov2_reg", "clip", "no_cls_avg"])
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_copy_with_teacher_weights_reproduces_teacher(float64, family, impl):
    teacher = build_teacher(tiny_vit(family))
    student = copy.deepcopy(teacher).requires_grad_(True)
    model = AttentionTransfer(teacher, student, mode="copy", impl=impl).eval()
    x = images(2)
    assert _rel(model(x).logits, teacher(x)) < 1e-12


def test_teacher_is_frozen_and_unchanged_by_training():
    teacher, student = pair("vit", drop_path_rate=0.1)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    model = AttentionTransfer(teacher, student, mode="distill").train()
    assert not teacher.training
    opt = torch.optim.AdamW(model.student.parameters(), lr=1e-2)
    for step in range(3):
        out = model(images(2, seed=step))
        (out.logits.logsumexp(-1).mean() + out.transfer_loss).backward()
        opt.step()
        opt.zero_grad()
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not teacher.training


@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_distill_at_equal_maps_is_entropy_with_zero_gradient(float64, impl):
    teacher = build_teacher(tiny_vit("vit"))
    student = copy.deepcopy(teacher).requires_grad_(True)
    model = AttentionTransfer(teacher, student, mode="distill", impl=impl, weight=2.0)
    out = model.train()(images(2))
    # expected: 2.0 * sum over layers of the teacher maps' entropy
    entropies, x_in = [], {}
    for i, blk in enumerate(teacher.blocks):
        hook = blk.attn.register_forward_hook(lambda m, a, o, i=i: x_in.setdefault(i, a[0]))
        teacher(images(2))
        hook.remove()
        q, k, _ = blk.attn.project(x_in[i])
        p = AF.attention_map(q, k, blk.attn.scale)
        entropies.append(-(p * p.log()).sum(-1).mean())
    assert out.transfer_loss.item() == pytest.approx(2.0 * sum(entropies).item(), rel=1e-10)
    out.transfer_loss.backward()
    assert (
        max(p.grad.abs().max().item() for p in student.parameters() if p.grad is not None) < 1e-10
    )


def test_layer_and_head_selection_touch_exactly_those(float64):
    teacher, student = pair("vit")
    model = AttentionTransfer(teacher, student, mode="distill", layers=[1], heads=[0, 2])
    assert [type(b.attn) for b in student.blocks] == [Attention, R.DistillMap, Attention]
    out = model.train()(images(2))
    assert set(out.layer_losses) == {1}
    out.transfer_loss.backward()
    grads = {n: p.grad for n, p in student.named_parameters() if p.grad is not None}
    assert grads["blocks.1.attn.qkv.weight"].abs().sum() > 0
    assert not any(n.startswith("blocks.2.") for n in grads)  # later layers get no transfer grad
    # Only the Q and K rows of the selected heads (0 and 2) of layer 1 receive gradient.
    qkv = grads["blocks.1.attn.qkv.weight"].reshape(3, 4, 8, -1)  # [qkv, head, head_dim, C]
    touched = qkv.abs().sum(dim=(2, 3)) > 0
    assert touched.tolist() == [[True, False, True, False]] * 2 + [[False] * 4]


def test_copy_heads_take_teacher_map_others_their_own(float64):
    teacher, student = pair("vit")
    x_in = {}
    model = AttentionTransfer(teacher, student, mode="copy", layers=[1], heads=[1, 3])
    route = student.blocks[1].attn
    route.register_forward_hook(lambda m, a, o: x_in.setdefault("s", a[0]))
    # a pre-hook: the teacher's pass stops inside its last transferred layer's attention
    teacher.blocks[1].attn.register_forward_pre_hook(lambda m, a: x_in.setdefault("t", a[0]))
    model.eval()(images(2))
    q, k, v = route.project(x_in["s"])
    q_t, k_t, _ = teacher.blocks[1].attn.project(x_in["t"])
    route.link.teacher = R.TeacherQKV(q_t, k_t, None, teacher.blocks[1].attn.scale)
    heads = route.attend(x_in["s"])  # [B, H, N, D]
    own = AF.attention_map(q, k, route.scale) @ v
    copied = AF.attention_map(q_t, k_t, route.scale) @ v
    for h in range(4):
        expected = copied if h in (1, 3) else own
        assert _rel(heads[:, h], expected[:, h]) < 1e-12


def test_teacher_stops_after_the_last_transferred_layer():
    """Blocks above the last transferred layer, and that layer's MLP, never run; the teacher
    called alone afterwards is plain timm again."""
    teacher, student = pair("vit")
    ran = []
    for i, blk in enumerate(teacher.blocks):
        blk.mlp.register_forward_pre_hook(lambda m, a, i=i: ran.append(i))
    model = AttentionTransfer(teacher, student, mode="distill", layers=[0, 1])
    run(model.train(), images(2))
    assert ran == [0]
    ran.clear()
    teacher(images(2))
    assert ran == [0, 1, 2]


def test_copy_skips_student_qk_projection():
    teacher, student = pair("vit")
    model = AttentionTransfer(teacher, student, mode="copy")
    run(model.train(), images(2))
    qkv_grad = student.blocks[0].attn.qkv.weight.grad.reshape(3, -1)
    assert qkv_grad[:2].abs().sum() == 0 and qkv_grad[2].abs().sum() > 0


def test_copy_variants_use_the_right_teacher_tensor(float64):
    teacher, student = pair("vit")
    x = images(2)
    outs = {}
    for mode in ("copy_q", "copy_k", "copy_v"):
        model = AttentionTransfer(teacher, copy.deepcopy(student), mode=mode).train()
        logits, _, grads = run(model, x)
        outs[mode] = logits
        qkv = grads["blocks.2.attn.qkv.weight"].reshape(3, -1).abs().sum(-1)
        # copy_q: the student's Q gets no gradient; copy_k: K; copy_v: V
        dead = {"copy_q": 0, "copy_k": 1, "copy_v": 2}[mode]
        assert qkv[dead] == 0 and all(qkv[i] > 0 for i in range(3) if i != dead)
    assert not torch.allclose(outs["copy_q"], outs["copy_k"])


@pytest.mark.parametrize("average", ["examples", "queries", "heads"])
def test_copy_with_averaged_maps(float64, average):
    teacher, student = pair("vit")
    model = AttentionTransfer(teacher, student, mode="copy", layers=[0], average=average)
    assert model.impl == "eager"
    route, tap = student.blocks[0].attn, teacher.blocks[0].attn
    x_in = {}
    route.register_forward_hook(lambda m, a, o: x_in.setdefault("s", a[0]))
    tap.register_forward_pre_hook(lambda m, a: x_in.setdefault("t", a[0]))  # pass stops in it
    model.eval()(images(3))
    q_t, k_t, _ = tap.project(x_in["t"])
    route.link.teacher = R.TeacherQKV(q_t, k_t, None, tap.scale)
    v = route.project(x_in["s"])[2]
    expected = AF.average_map(AF.attention_map(q_t, k_t, tap.scale), average) @ v
    assert _rel(route.attend(x_in["s"]), expected) < 1e-12


def test_distill_drop_path_shared_gives_teacher_the_same_masks(float64):
    """With equal weights and shared masks the maps agree, so the loss is the entropy (its
    minimum); with independent masks they do not."""
    teacher = build_teacher(tiny_vit("vit"))
    losses = {}
    for drop_path in ("shared", "student"):
        student = tiny_vit("vit", drop_path_rate=0.5)
        student.load_state_dict(teacher.state_dict())
        torch.manual_seed(3)
        model = AttentionTransfer(teacher, student, mode="distill", drop_path=drop_path).train()
        out = model(images(8))
        out.transfer_loss.backward()
        grad = max(p.grad.abs().max().item() for p in student.parameters() if p.grad is not None)
        losses[drop_path] = (out.transfer_loss.item(), grad)
    assert losses["shared"][1] < 1e-10  # at its minimum: zero gradient
    assert losses["student"][1] > 1e-7
    assert losses["student"][0] > losses["shared"][0]


def test_feature_distill(float64):
    teacher = build_teacher(tiny_vit("dinov2_reg"))
    same = copy.deepcopy(teacher).requires_grad_(True)
    out = AttentionTransfer(teacher, same, mode="feature_distill").train()(images(2))
    assert out.transfer_loss.item() < 1e-20
    other = build_student(teacher, num_classes=3)
    model = AttentionTransfer(teacher, other, mode="feature_distill", layers="last:2", weight=2)
    out = model.train()(images(2))
    assert set(out.layer_losses) == {1, 2} and out.transfer_loss.item() > 0
    out.transfer_loss.backward()
    assert other.blocks[2].mlp.fc2.weight.grad.abs().sum() > 0


def test_finetune_initialises_trunk_from_teacher():
    teacher, student = pair("vit")
    AttentionTransfer(teacher, student, mode="finetune")
    t, s = teacher.state_dict(), student.state_dict()
    assert all(torch.equal(t[k], s[k]) for k in s if not k.startswith("head."))
    assert s["head.weight"].shape == (5, 32)


def test_distilled_student_loads_into_plain_timm_strictly(float64):
    teacher, student = pair("dinov2_reg", drop_path_rate=0.1)
    model = AttentionTransfer(teacher, student, mode="distill").train()
    run(model, images(2))
    state = model.student.state_dict()
    spec = student.attnxfer_spec
    plain = timm.create_model(spec.arch, pretrained=False, **spec.args)
    plain.load_state_dict(state, strict=True)  # no teacher or wrapper needed
    x = images(2)
    assert _rel(plain.eval()(x), model.eval()(x).logits) < 1e-12
    exported = model.plain_student().eval()
    assert all(type(b.attn) is Attention for b in exported.blocks)
    assert _rel(exported(x), plain(x)) < 1e-12


def test_one_teacher_serves_several_students(float64):
    teacher = build_teacher(tiny_vit("vit"))
    a = AttentionTransfer(teacher, build_student(teacher, 3), mode="copy", layers=[0])
    b = AttentionTransfer(teacher, build_student(teacher, 3), mode="distill", layers="all")
    x = images(2)
    ref_a = a.eval()(x).logits
    out_b = b.train()(x)
    assert set(out_b.layer_losses) == {0, 1, 2}
    assert torch.equal(a(x).logits, ref_a)


def test_smaller_student_pairs_heads_by_index(float64):
    teacher = build_teacher(tiny_vit("vit", num_heads=4))
    student = build_student(
        teacher,
        3,
        arch="vit_tiny_patch16_224",
        img_size=24,
        patch_size=4,
        embed_dim=32,
        depth=2,
        num_heads=2,
    )
    with pytest.raises(AttnxferError, match="equal head dims"):
        AttentionTransfer(teacher, student, mode="copy_q")
    model = AttentionTransfer(teacher, student, mode="distill")
    assert model.heads == (0, 1)
    assert model(images(2)).transfer_loss.item() > 0
    wide = build_student(
        teacher,
        3,
        arch="vit_tiny_patch16_224",
        img_size=24,
        patch_size=4,
        embed_dim=48,
        depth=3,
        num_heads=6,
    )
    with pytest.raises(AttnxferError, match="teacher has only 4 heads"):
        AttentionTransfer(teacher, wide, mode="copy")
    AttentionTransfer(teacher, wide, mode="copy", heads=4)  # the first 4 pair up


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "copy_all"}, "unknown mode 'copy_all'"),
        ({"mode": "copy", "layers": 3}, "layer index 3 is out of range"),
        ({"mode": "copy", "heads": [4]}, "head index 4 is out of range"),
        ({"mode": "copy", "weight": 2.0}, "no transfer loss"),
        ({"mode": "scratch", "layers": "all"}, "no effect in mode 'scratch'"),
        ({"mode": "distill", "impl": "flash"}, "impl='flash' is unknown"),
        ({"mode": "distill", "impl": "fused", "average": "heads"}, "use impl='eager'"),
        ({"mode": "copy_q", "average": "heads"}, "not valid for mode 'copy_q'"),
        ({"mode": "distill", "drop_path": "teacher"}, "drop_path='teacher' is unknown"),
        ({"mode": "distill", "layers": "none"}, "layer selection is empty"),
    ],
)
def test_bad_arguments(kwargs, message):
    teacher, student = pair("vit")
    with pytest.raises(AttnxferError, match=message):
        AttentionTransfer(teacher, student, **kwargs)


def test_incompatible_pairs_are_refused():
    teacher = build_teacher(tiny_vit("vit"))
    coarser = build_student(teacher, 3, patch_size=8)  # a 3x3 grid for the teacher's 6x6
    for mode in ("copy", "copy_q", "distill_k", "feature_distill"):
        with pytest.raises(AttnxferError, match="mode 'distill' resamples the teacher's maps"):
            AttentionTransfer(teacher, build_student(teacher, 3, patch_size=8), mode=mode)
    with pytest.raises(AttnxferError, match="needs them materialised: use impl='auto'"):
        AttentionTransfer(teacher, coarser, mode="distill", impl="fused")
    registers = build_student(teacher, 3, patch_size=8, reg_tokens=2)
    with pytest.raises(AttnxferError, match="have 1 and 3 class/register tokens"):
        AttentionTransfer(teacher, registers, mode="distill")
    with pytest.raises(AttnxferError, match="needs a teacher"):
        AttentionTransfer(None, build_student(teacher, 3), mode="distill")
    deeper = tiny_vit("vit", depth=4)
    with pytest.raises(AttnxferError, match="teacher has only 3 blocks"):
        AttentionTransfer(teacher, deeper, mode="copy")


def test_unsupported_attention_class_is_named():
    class MyAttention(torch.nn.Module):
        num_heads = 4

    teacher, student = pair("vit")
    student.blocks[0].attn = MyAttention()
    with pytest.raises(AttnxferError, match=r"test_transfer.MyAttention is not supported"):
        AttentionTransfer(teacher, student, mode="copy")


def test_student_alone_in_copy_mode_says_what_to_do():
    teacher, student = pair("vit")
    AttentionTransfer(teacher, student, mode="copy")
    with pytest.raises(AttnxferError, match="call the AttentionTransfer wrapper"):
        student(images(1))


@pytest.mark.parametrize("mode", ["distill", "copy", "feature_distill"])
def test_teacher_gets_its_own_normalisation(mode, caplog):
    """A teacher trained on other input statistics sees the batch converted to them: its
    input is what normalising the raw image with its own mean and std gives."""
    teacher = build_teacher(tiny_vit("vit", seed=1, num_classes=0))
    teacher.pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
    student_stats = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    raw = torch.rand(2, 3, 24, 24)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in student_stats)
    seen = []
    teacher.patch_embed.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    with caplog.at_level("INFO", logger="attnxfer.transfer"):
        model = AttentionTransfer(
            teacher, build_student(teacher, 5), mode, input_stats=student_stats
        )
    assert "are converted to the teacher's mean (0.5, 0.5, 0.5)" in caplog.text
    model((raw - mean) / std)
    torch.testing.assert_close(seen[-1], (raw - 0.5) / 0.5, atol=1e-6, rtol=1e-5)
    # the same statistics: the batch goes through untouched
    same = AttentionTransfer(
        teacher, build_student(teacher, 5), mode, input_stats=((0.5,) * 3, (0.5,) * 3)
    )
    batch = (raw - 0.5) / 0.5
    same(batch)
    assert seen[-1] is batch


@pytest.mark.parametrize(
    ("t_heads", "s_heads", "head_map", "expected_pairs"),
    [
        (8, 4, "average", [(0, 1), (2, 3), (4, 5), (6, 7)]),  # a teacher group per student head
        (2, 4, "average", [(0,), (0,), (1,), (1,)]),  # a teacher head per two student heads
        (4, 4, [3, 1, 0, 2], [(3,), (1,), (0,), (2,)]),  # a chosen pairing
    ],
)
@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_head_maps_against_a_plain_path(float64, t_heads, s_heads, head_map, expected_pairs, impl):
    """Distillation's loss is the cross-entropy to each student head's average teacher map,
    and copy attends with that average map: checked against maps computed head by head."""
    from attnxfer.analysis import attention_maps

    teacher = build_teacher(tiny_vit("vit", seed=1, num_heads=t_heads, num_classes=0))
    x = images(2, 24)
    t_maps = attention_maps(teacher, x)
    want = [torch.stack([t[:, list(g)].mean(1) for g in expected_pairs], dim=1) for t in t_maps]
    distill = AttentionTransfer(
        teacher,
        build_student(teacher, 5, num_heads=s_heads),
        "distill",
        head_map=head_map,
        impl=impl,
    )
    out = distill(x)
    own = attention_maps(distill.student, x)  # a distilled student attends with its own maps
    for i, (target, mine) in enumerate(zip(want, own, strict=True)):
        plain = -(target * mine.log()).sum(-1).mean()
        torch.testing.assert_close(out.layer_losses[i], plain)
    copy_model = AttentionTransfer(
        teacher,
        build_student(teacher, 5, num_heads=s_heads),
        "copy",
        head_map=head_map,
        impl=impl,
    )
    seen = {}
    for i, blk in enumerate(copy_model.student.blocks):
        blk.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, (m, a[0], o)))
    copy_model(x)
    for i, (route, inp, got) in seen.items():
        _, _, v = route.project(inp)
        torch.testing.assert_close(got, route.finish(inp, want[i] @ v))
    for got, target in zip(attention_maps(copy_model, x), want, strict=True):
        torch.testing.assert_close(got, target)


def test_head_map_refusals():
    teacher = build_teacher(tiny_vit("vit", seed=1, num_heads=8, num_classes=0))
    narrow = build_student(teacher, 5, num_heads=4)
    with pytest.raises(AttnxferError, match="student head j is paired with teacher head j"):
        AttentionTransfer(teacher, build_student(teacher, 5, num_heads=16), "distill")
    with pytest.raises(AttnxferError, match="gives each student head one teacher head's Q, K"):
        AttentionTransfer(teacher, narrow, "copy_q", head_map="average")
    with pytest.raises(AttnxferError, match="head_map= has no effect in mode 'finetune'"):
        AttentionTransfer(teacher, build_student(teacher, 5), "finetune", head_map="average")


@pytest.mark.parametrize("patch", [8, 2])  # a coarser and a finer student grid (6x6 teacher)
def test_distillation_across_token_grids_against_a_plain_path(float64, patch):
    """The loss is the cross-entropy to the teacher's maps moved onto the student's grid."""
    from attnxfer.analysis import attention_maps

    teacher = build_teacher(tiny_vit("vit", seed=1, num_classes=0))
    student = build_student(teacher, 5, patch_size=patch)
    model = AttentionTransfer(teacher, student, "distill")
    x = images(2, 24)
    out = model(x)
    assert "resampl" in model.describe()
    side = 24 // patch
    for i, (t, s) in enumerate(
        zip(attention_maps(teacher, x), attention_maps(model.student, x), strict=True)
    ):
        target = AF.resample_map(t, 1, (6, 6), (side, side))
        assert target.shape == s.shape
        torch.testing.assert_close(out.layer_losses[i], -(target * s.log()).sum(-1).mean())
    out.transfer_loss.backward()  # gradients reach the student only
    assert student.blocks[0].attn.qkv.weight.grad is not None


def test_resampled_maps_stay_distributions():
    attn = torch.softmax(torch.randn(2, 3, 1 + 64, 1 + 64), dim=-1)
    for target in ((4, 4), (8, 8), (5, 3), (16, 16)):
        out = AF.resample_map(attn, 1, (8, 8), target)
        n = 1 + target[0] * target[1]
        assert out.shape == (2, 3, n, n) and (out >= 0).all()
        torch.testing.assert_close(out.sum(-1), torch.ones(2, 3, n))
        torch.testing.assert_close(out[:, :, 0, 0], attn[:, :, 0, 0])  # class-token mass kept
    assert AF.resample_map(attn, 1, (8, 8), (8, 8)) is attn
    # shrunk by 2: a coarse query's row is the mean of its 4 fine rows, each coarse key holds
    # the mass of its 4 fine keys
    pooled = AF.resample_map(attn, 1, (8, 8), (4, 4))
    fine = attn[:, :, 1:, 1:].reshape(2, 3, 4, 2, 4, 2, 4, 2, 4, 2)  # q (h, h', w, w'), k ...
    plain = fine.sum(dim=(7, 9)).mean(dim=(3, 5)).reshape(2, 3, 16, 16)
    torch.testing.assert_close(pooled[:, :, 1:, 1:], plain)
    # a map that attends to one patch moves its mass to where that patch lands
    one = torch.zeros(1, 1, 65, 65)
    one[..., 1 + 9] = 1.0  # every query on patch (1, 1) of the 8x8 grid
    coarse = AF.resample_map(one, 1, (8, 8), (4, 4))
    assert coarse[0, 0, :, 1 + 0].min() > 0.9  # patch (0, 0) of the 4x4 grid holds it
