"""``attnxfer pretrain``: the MAE model against plain references, and teachers it writes."""

from __future__ import annotations

import gc
import json
import shutil

import pytest
import timm
import torch
from helpers import TINY_STUDENT, cli
from safetensors.torch import load_file

from attnxfer import build_teacher
from attnxfer.checkpoint import list_checkpoints
from attnxfer.config import load_config
from attnxfer.engine import Trainer
from attnxfer.errors import AttnxferError
from attnxfer.export import read_card
from attnxfer.inference import load_trained
from attnxfer.pretrain import MaeTask, MaskedAutoencoder, patchify, pretrain


def _encoder(**kw):
    torch.manual_seed(0)
    args = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=0)
    return timm.create_model("vit_tiny_patch16_224", **{**args, **kw})


def test_patchify_is_patch_embed_order():
    enc = _encoder()
    x = torch.randn(2, 3, 16, 16)
    w = enc.patch_embed.proj.weight  # [D, C, p, p] -> [D, p*p*C] in patchify's (i, j, c) order
    flat = w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)
    expected = patchify(x, 4) @ flat.T + enc.patch_embed.proj.bias
    torch.testing.assert_close(enc.patch_embed(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "kw", [{}, {"class_token": False, "global_pool": "avg"}, {"reg_tokens": 2}]
)
def test_encoder_sees_only_visible_patches(kw):
    """Reference: the whole sequence through the blocks with an attention mask that hides the
    masked patches as keys; the visible tokens' outputs must equal the MAE encoder's."""
    mae = MaskedAutoencoder(_encoder(**kw), mask_ratio=0.75).eval()
    enc = mae.encoder
    images, noise = torch.randn(3, 3, 16, 16), torch.rand(3, 16)
    latent, mask, _ = mae.encode(images, noise)
    assert mask.sum(1).tolist() == [12, 12, 12]
    prefix = enc.num_prefix_tokens
    x = enc._pos_embed(enc.patch_embed(images))
    visible = torch.cat([torch.ones(3, prefix, dtype=torch.bool), mask == 0], dim=1)
    attn_mask = visible[:, None, None, :].expand(-1, 1, x.shape[1], -1)
    for block in enc.blocks:
        x = block(x, attn_mask=attn_mask)
    x = enc.norm(x)
    for b in range(3):
        # the encoder keeps patches in noise order; compare as sets of rows, sorted by position
        order = noise[b].argsort()[:4]
        ref = torch.cat([x[b, :prefix], x[b, prefix + order]])
        torch.testing.assert_close(latent[b], ref, rtol=1e-5, atol=1e-5)


def test_loss_is_normalised_pixels_of_masked_patches_only():
    mae = MaskedAutoencoder(_encoder(), mask_ratio=0.5)
    images = torch.randn(2, 3, 16, 16)
    loss, pred, mask = mae(images, torch.rand(2, 16))
    target = patchify(images, 4)
    target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
    per_patch = ((pred - target) ** 2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.bool()].mean())
    changed = pred.detach().clone()
    changed[mask == 0] += 10.0  # visible patches do not count
    torch.testing.assert_close(mae.loss(images, changed, mask), loss.detach())
    assert not mae.encoder.pos_embed.requires_grad  # fixed sin-cos, as MAE


def test_bad_mae_settings_are_refused():
    with pytest.raises(AttnxferError, match="mask_ratio must be in"):
        MaskedAutoencoder(_encoder(), mask_ratio=1.0)
    with pytest.raises(AttnxferError, match="multiple of"):
        MaskedAutoencoder(_encoder(), decoder_dim=30, decoder_heads=4)
    with pytest.raises(AttnxferError, match="impl='flash' is unknown"):
        MaskedAutoencoder(_encoder(), impl="flash")


def test_attention_kernels_follow_impl(monkeypatch):
    """``impl`` reaches the kernel choice of encoder and decoder (a CPU at 17 tokens: ``auto``
    materialises the maps), and every choice computes the same loss."""
    from attnxfer import routes

    chosen, real = [], routes.plain_attention_kernels

    def spy(impl, device, tokens):
        chosen.append((impl, device.type, tokens))
        return real(impl, device, tokens)

    monkeypatch.setattr(routes, "plain_attention_kernels", spy)
    images, noise = torch.randn(2, 3, 16, 16), torch.rand(2, 16)
    losses = {}
    for impl in ("auto", "fused", "eager"):
        mae = MaskedAutoencoder(_encoder(), mask_ratio=0.5, impl=impl)
        losses[impl] = mae(images, noise)[0]
    assert chosen == [(i, "cpu", 17) for i in ("auto", "fused", "eager")]
    torch.testing.assert_close(losses["auto"], losses["fused"], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(losses["eager"], losses["fused"], rtol=1e-5, atol=1e-6)


MAE_ARGS = [*TINY_STUDENT, "pretrain.decoder_dim=32", "pretrain.decoder_depth=1"]


def test_mae_pretrain_writes_a_teacher_that_transfers(tmp_path, capsys):
    out = tmp_path / "mae"
    assert cli("pretrain", "--method", "mae", f"run.output={out}", *MAE_ARGS, "optim.epochs=2") == 0
    summary = json.loads((out / "summary.json").read_text())
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    recon = [r["val_recon_loss"] for r in lines if "val_recon_loss" in r]
    assert len(recon) == 2 and recon[1] < recon[0] < 1.5  # it learns
    teacher_path = out / "teacher" / "model.safetensors"
    assert summary["teacher"] == str(teacher_path)
    card = read_card(out / "teacher")
    assert card["pretrain"]["method"] == "mae" and card["args"]["embed_dim"] == 32
    readme = (out / "teacher" / "README.md").read_text()
    assert "| 2 | " in readme and "sha256" in readme and "mask ratio 0.75" in readme
    teacher = build_teacher(str(teacher_path))
    ckpt = list_checkpoints(out)[-1]
    trained = load_file(ckpt / "student.safetensors")
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(v, trained[f"encoder.{k}"], rtol=0, atol=0)
    with pytest.raises(AttnxferError, match="MAE pre-training checkpoint"):
        load_trained(out)
    # any checkpoint's encoder exports as a teacher: the last one is the run's own teacher
    first, last = list_checkpoints(out)[-2:]
    assert cli("export", str(last), str(tmp_path / "last")) == 0
    exported = load_file(tmp_path / "last" / "model.safetensors")
    assert exported.keys() == teacher.state_dict().keys()
    for k, v in teacher.state_dict().items():
        torch.testing.assert_close(exported[k], v, rtol=0, atol=0)
    assert cli("export", str(first), str(tmp_path / "first")) == 0
    early = read_card(tmp_path / "first")
    assert early["pretrain"]["epochs"] == 1 and early["pretrain"]["of_epochs"] == 2
    assert early["args"] == card["args"]
    build_teacher(str(tmp_path / "first" / "model.safetensors"))
    student = tmp_path / "student"
    assert (
        cli(
            "train",
            f"teacher.source={teacher_path}",
            "transfer.mode=distill",
            f"run.output={student}",
            *TINY_STUDENT[1:],
        )
        == 0
    )
    done = json.loads((student / "summary.json").read_text())
    assert done["val_top1"] > 10
    assert (out / "teacher" / "loss.png").stat().st_size > 0
    # the card again, now with the student that used the teacher
    capsys.readouterr()
    assert cli("pretrain", "--card", str(out), "--title", "tiny", "--downstream", str(student)) == 0
    readme = (out / "teacher" / "README.md").read_text()
    assert readme.startswith("# tiny: a MAE teacher") and "![pre-training" in readme
    row = f"| distill | all | 1 | {done['steps']} | {done['val_top1']:.2f} | `{student}` |"
    assert row in readme
    assert cli("pretrain", "--card", str(out), "--downstream", str(tmp_path)) == 2
    assert "is not a finished training run" in capsys.readouterr().err

    # a teacher folder whose run is gone: only its table of students is written, in place
    assert cli("pretrain", "--card", str(out)) == 0  # the card without students
    bare = (out / "teacher" / "README.md").read_text()
    folder = tmp_path / "kept_teacher"
    shutil.copytree(out / "teacher", folder)
    for _ in range(2):  # added once, then rewritten, never repeated
        assert cli("pretrain", "--card", str(folder), "--downstream", str(student)) == 0
        kept = (folder / "README.md").read_text()
        assert kept.count(row) == 1 and kept.count("Accuracy of students") == 1
    before, _, after = bare.partition("Resolved configuration")
    assert kept.startswith(before) and kept.endswith("Resolved configuration" + after)
    assert kept.index(row) < kept.index("Resolved configuration")
    capsys.readouterr()
    assert cli("pretrain", "--card", str(folder)) == 2
    assert "only its --downstream table" in capsys.readouterr().err
    assert cli("pretrain", "--card", str(tmp_path / "none"), "--downstream", str(student)) == 2
    assert "neither a finished pre-training run" in capsys.readouterr().err
    assert (folder / "README.md").read_text() == kept


def test_mae_resume_is_exact(tmp_path):
    """One epoch, a checkpoint, a new process-like Trainer with --resume auto: the same teacher
    as an uninterrupted run (masks come from the restored RNG)."""
    args = [*MAE_ARGS, "optim.epochs=2", "data.train_subset=256"]
    full = load_config([], [*args, f"run.output={tmp_path / 'a'}"])
    pretrain(full)
    cut = load_config([], [*args, f"run.output={tmp_path / 'b'}"])
    trainer = Trainer(cut, task=MaeTask())
    trainer.train_one_epoch()
    trainer.progress.epoch, trainer.progress.batch_in_epoch = 1, 0  # as fit() does
    trainer.progress.seconds = 1000.0  # as if the first epoch had taken that long
    trainer.save()
    del trainer
    gc.collect()  # releases the run directory's lock, as the end of a process would
    resumed = pretrain(load_config([], [*args, f"run.output={tmp_path / 'b'}"]), resume="auto")
    assert 1000.0 < resumed["seconds"] < 1000.0 + 600  # the time of every invocation
    a = load_file(tmp_path / "a" / "teacher" / "model.safetensors")
    b = load_file(tmp_path / "b" / "teacher" / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_supervised_pretrain_writes_a_classifier_teacher(tmp_path):
    out = tmp_path / "sup"
    assert cli("pretrain", "--method", "supervised", f"run.output={out}", *TINY_STUDENT) == 0
    card = read_card(out / "teacher")
    assert card["classes"] == [str(c) for c in range(10)]
    teacher = build_teacher(str(out / "teacher" / "model.safetensors"))
    assert teacher.num_classes == 10


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["pretrain.method=byol", *TINY_STUDENT],
            "pretrain.method must be one of 'mae', 'supervised'",
        ),
        (["data.img_size=16"], "pretrain needs student.arch"),
        ([*MAE_ARGS, "data.mixup=0.8"], "MAE pre-training uses no labels"),
        ([*MAE_ARGS, "pretrain.mask_ratio=0"], "mask_ratio must be in"),
    ],
)
def test_pretrain_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert cli("pretrain", f"run.output={out}", *args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()
