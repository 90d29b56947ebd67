"""build_teacher / build_student: every source format, freezing, fresh students, clear errors."""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import timm
import torch
from helpers import SHARED_DATA, images, tiny_vit
from PIL import Image
from safetensors.torch import save_file

from attnxfer import AttentionTransfer, AttnxferError, build_student, build_teacher
from attnxfer import functional as AF
from attnxfer import routes as R

SMALL = dict(img_size=24, patch_size=4, embed_dim=32, depth=2, num_heads=4)


def test_module_teacher_is_frozen():
    model = tiny_vit("vit").train()
    teacher = build_teacher(model)
    assert teacher is model and not teacher.training
    assert not any(p.requires_grad for p in teacher.parameters())


def test_safetensors_with_json_sidecar(tmp_path):
    src = tiny_vit("vit", num_classes=10)
    save_file(src.state_dict(), tmp_path / "t.safetensors")
    args = {**SMALL, "depth": 3, "num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3}
    (tmp_path / "t.json").write_text(json.dumps(args))
    teacher = build_teacher(tmp_path / "t.safetensors")
    assert teacher.pretrained_cfg["mean"] == [0.5] * 3
    x = images(2)
    assert torch.equal(teacher(x), src.eval()(x))
    assert not any(p.requires_grad for p in teacher.parameters())


def test_timm_state_dict_pth_with_arch(tmp_path):
    src = tiny_vit("dinov2_reg")
    torch.save(src.state_dict(), tmp_path / "w.pth")
    spec = src.attnxfer_spec
    teacher = build_teacher(tmp_path / "w.pth", arch=spec.arch, model_args=spec.args)
    assert torch.equal(teacher(images(1)), src.eval()(images(1)))
    with pytest.raises(AttnxferError, match="cannot tell the architecture"):
        build_teacher(tmp_path / "w.pth")


def _mae_encoder(tmp_path, name, extra, args):
    src = tiny_vit("vit", num_classes=0, depth=2)
    state = {**src.state_dict(), **extra}
    ckpt = {"model": state, "epoch": 799, "args": argparse.Namespace(model=name, **args)}
    path = tmp_path / "mae.pth"
    torch.save(ckpt, path)
    return src, path


def test_mae_pretraining_checkpoint_drops_decoder(tmp_path, caplog):
    decoder = {
        "mask_token": torch.zeros(1, 1, 16),
        "decoder_embed.weight": torch.zeros(16, 32),
        "decoder_blocks.0.attn.qkv.weight": torch.zeros(48, 16),
        "decoder_pred.weight": torch.zeros(48, 16),
    }
    src, path = _mae_encoder(tmp_path, "mae_vit_tiny_patch16", decoder, {"norm_pix_loss": True})
    with caplog.at_level(logging.INFO, logger="attnxfer.models"):
        teacher = build_teacher(path, model_args={**SMALL, "depth": 2})
    assert teacher.attnxfer_spec.arch == "vit_tiny_patch16_224"  # from MAE's args.model
    assert teacher.num_classes == 0
    assert [r.message for r in caplog.records if "decoder" in r.message] == [
        f"{path}: dropped 4 MAE decoder / mask-token tensors"
    ]
    assert torch.equal(teacher.forward_features(images(1)), src.eval().forward_features(images(1)))


def test_mae_finetuning_checkpoint_uses_avg_pool(tmp_path):
    src = tiny_vit("vit", depth=2, global_pool="avg", num_classes=10)
    assert "fc_norm.weight" in src.state_dict()
    ckpt = {"model": src.state_dict(), "args": argparse.Namespace(model="vit_tiny_patch16")}
    torch.save(ckpt, tmp_path / "ft.pth")
    teacher = build_teacher(tmp_path / "ft.pth", model_args={**SMALL, "depth": 2})
    assert teacher.global_pool == "avg" and teacher.num_classes == 10
    assert torch.equal(teacher(images(1)), src.eval()(images(1)))


def test_model_ema_key(tmp_path):
    src = tiny_vit("vit")
    torch.save({"model_ema": src.state_dict()}, tmp_path / "ema.pth")
    spec = src.attnxfer_spec
    teacher = build_teacher(tmp_path / "ema.pth", arch=spec.arch, model_args=spec.args)
    assert torch.equal(teacher(images(1)), src.eval()(images(1)))
    with pytest.raises(AttnxferError, match="has no key 'model'"):
        build_teacher(tmp_path / "ema.pth", arch=spec.arch, checkpoint_key="model")


def test_position_embeddings_are_interpolated(tmp_path):
    src = tiny_vit("vit")  # 24 px, 6x6 patches
    save_file(src.state_dict(), tmp_path / "t.safetensors")
    (tmp_path / "t.json").write_text(json.dumps({**SMALL, "depth": 3, "num_classes": 7}))
    teacher = build_teacher(tmp_path / "t.safetensors", img_size=32)  # 8x8 patches
    assert teacher.pos_embed.shape == (1, 65, 32)
    assert teacher(images(1, size=32)).shape == (1, 7)


def test_checkpoint_of_wrong_architecture_names_keys(tmp_path):
    save_file(tiny_vit("vit").state_dict(), tmp_path / "t.safetensors")
    (tmp_path / "t.json").write_text(json.dumps({**SMALL, "num_classes": 7}))  # depth 2, not 3
    with pytest.raises(
        AttnxferError, match=r"fit VisionTransformer: unexpected keys \['blocks\.2\."
    ):
        build_teacher(tmp_path / "t.safetensors")
    (tmp_path / "t.json").write_text(json.dumps({**SMALL, "depth": 4, "num_classes": 7}))
    with pytest.raises(AttnxferError, match=r"fit VisionTransformer: missing keys \['blocks\.3\."):
        build_teacher(tmp_path / "t.safetensors")


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".bin"])
def test_file_that_is_not_a_checkpoint(tmp_path, suffix):
    path = tmp_path / f"notes{suffix}"
    path.write_bytes(b"these are not weights\n" * 10)
    with pytest.raises(
        AttnxferError, match=r"not a (checkpoint torch can read|readable safetensors)"
    ):
        build_teacher(path, arch="vit_tiny_patch16_224")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(AttnxferError, match="holds a list, not a state dict"):
        build_teacher(tmp_path / "list.pth", arch="vit_tiny_patch16_224")


def test_missing_file_and_bad_json(tmp_path):
    with pytest.raises(AttnxferError, match="does not exist"):
        build_teacher(tmp_path / "nope.safetensors")
    save_file(tiny_vit("vit").state_dict(), tmp_path / "t.safetensors")
    (tmp_path / "t.json").write_text("{depth: 3")
    with pytest.raises(AttnxferError, match="not valid JSON"):
        build_teacher(tmp_path / "t.safetensors")


def test_names_that_are_not_vits_are_refused_before_download():
    with pytest.raises(AttnxferError, match="unknown teacher 'vit_nonexistent_patch3'"):
        build_teacher("vit_nonexistent_patch3")
    with pytest.raises(AttnxferError, match="is a ResNet, not a timm VisionTransformer"):
        build_teacher("resnet18.a1_in1k")
    with pytest.raises(AttnxferError, match="is a Eva, not a timm VisionTransformer"):
        build_teacher("eva02_tiny_patch14_224")


def test_unreachable_hub_says_how_to_pass_a_local_file():
    code = (
        "from attnxfer import build_teacher, AttnxferError\n"
        "try:\n    build_teacher('vit_tiny_patch16_224.augreg_in21k')\n"
        "except AttnxferError as e:\n    print(e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert "could not load pretrained weights for 'vit_tiny_patch16_224.augreg_in21k'" in out.stdout
    assert "build_teacher('weights.safetensors', arch='vit_tiny_patch16_224')" in out.stdout


@pytest.mark.parametrize("family", ["vit", "dinov2_reg", "clip", "qk_norm", "no_cls_avg"])
def test_student_is_teachers_architecture_with_fresh_weights(family):
    teacher = build_teacher(tiny_vit(family))
    student = build_student(teacher, num_classes=3, drop_path_rate=0.1)
    t, s = teacher.state_dict(), student.state_dict()
    assert {k: v.shape for k, v in t.items() if not k.startswith("head.")} == {
        k: v.shape for k, v in s.items() if not k.startswith("head.")
    }
    assert s["head.weight"].shape[0] == 3
    assert not torch.equal(t["blocks.0.attn.qkv.weight"], s["blocks.0.attn.qkv.weight"])
    assert all(p.requires_grad for p in student.parameters())
    assert student.training and student.blocks[-1].drop_path1.drop_prob > 0


def test_student_of_a_plain_timm_module_infers_its_architecture():
    teacher = timm.create_model(
        "vit_small_patch14_reg4_dinov2",
        pretrained=False,
        img_size=28,
        depth=2,
        embed_dim=64,
        num_heads=2,
    )
    student = build_student(build_teacher(teacher), num_classes=4)
    assert student.num_reg_tokens == 4 and hasattr(student.blocks[0].ls1, "gamma")
    assert student(torch.randn(1, 3, 28, 28)).shape == (1, 4)
    odd = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2)
    odd.blocks[1].mlp = timm.layers.Mlp(192, 100)  # not expressible by constructor arguments
    with pytest.raises(AttnxferError, match="could not re-create the teacher's architecture"):
        build_student(build_teacher(odd), num_classes=4)


# ---------------------------------------------------------------------------------------------
# the real pre-trained checkpoint in ../shared/data


def _cifar_images(count: int, mean, std) -> torch.Tensor:
    archive = SHARED_DATA / "cifar10-jpeg" / "cifar10-jpeg-train-test.tar.gz"
    if not archive.is_file():
        pytest.skip(f"CIFAR-10 archive not found at {archive}")
    out = []
    with tarfile.open(archive, "r|gz") as tf:
        for member in tf:
            if member.name.endswith(".jpg") and len(out) < count:
                img = Image.open(io.BytesIO(tf.extractfile(member).read())).convert("RGB")
                out.append(torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0))
            if len(out) == count:
                break
    x = torch.stack(out).permute(0, 3, 1, 2)  # [B, 3, 32, 32]
    return (x - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[:, None, None]


def _map_entropies(model, x) -> list[float]:
    """Mean entropy of each layer's attention rows, in nats."""
    inputs = []
    hooks = [
        b.attn.register_forward_hook(lambda m, a, o: inputs.append(a[0])) for b in model.blocks
    ]
    model(x)
    for h in hooks:
        h.remove()
    out = []
    for blk, x_in in zip(model.blocks, inputs, strict=True):
        attn = R._Route.project(blk.attn, x_in)  # timm Attention has the same submodules
        p = AF.attention_map(attn[0], attn[1], blk.attn.scale)
        out.append(-(p * p.clamp_min(1e-30).log()).sum(-1).mean().item())
    return out


def test_real_checkpoint_loads_and_has_real_attention(real_vit_path):
    teacher = build_teacher(real_vit_path)
    cfg = teacher.pretrained_cfg
    x = _cifar_images(16, cfg["mean"], cfg["std"])
    assert teacher(x).shape == (16, 10)
    random_model = build_student(teacher, num_classes=10).eval()
    log_n = math.log(65)  # 8x8 patches + class token
    trained, rand = _map_entropies(teacher, x), _map_entropies(random_model, x)
    # A random ViT attends almost uniformly; the trained one is clearly peaked.
    assert min(rand) > 0.97 * log_n
    assert max(trained) < 0.92 * log_n and sum(trained) / 4 < 0.85 * log_n


@pytest.mark.parametrize("impl", ["fused", "eager"])
def test_real_checkpoint_copy_gives_student_the_teachers_maps(real_vit_path, impl):
    teacher = build_teacher(real_vit_path)
    x = _cifar_images(4, teacher.pretrained_cfg["mean"], teacher.pretrained_cfg["std"])
    student = build_student(teacher, num_classes=10)
    model = AttentionTransfer(teacher, student, mode="copy", impl=impl).eval()
    seen = {}
    for i, (s_blk, t_blk) in enumerate(zip(student.blocks, teacher.blocks, strict=True)):
        s_blk.attn.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(("s", i), a[0]))
        t_blk.attn.register_forward_pre_hook(lambda m, a, i=i: seen.__setitem__(("t", i), a[0]))
    model(x)
    for i, (s_blk, t_blk) in enumerate(zip(student.blocks, teacher.blocks, strict=True)):
        q_t, k_t, _ = t_blk.attn.project(seen[("t", i)])
        p_t = AF.attention_map(q_t, k_t, t_blk.attn.scale)  # the teacher's real maps
        v_s = s_blk.attn.project(seen[("s", i)])[2]
        s_blk.attn.link.teacher = R.TeacherQKV(q_t, k_t, None, t_blk.attn.scale)
        got = s_blk.attn.attend(seen[("s", i)])
        assert torch.allclose(got, p_t @ v_s, rtol=1e-5, atol=1e-6)
