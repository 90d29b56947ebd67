"""Training end to end: runs, checkpoints, kill-and-resume, DDP, export, eval, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from helpers import ENV, TINY, TINY_STUDENT, cli, tiny_vit, torchrun
from PIL import Image
from safetensors.torch import load_file, save_file

from attnxfer import build_teacher
from attnxfer.checkpoint import list_checkpoints
from attnxfer.cli import main
from attnxfer.config import load_config
from attnxfer.engine import Trainer
from attnxfer.export import read_card
from attnxfer.report import device_name
from attnxfer.runtime import autocast, resolve_amp


def test_small_run_end_to_end(tmp_path, teacher_file):
    out = tmp_path / "run"
    assert (
        cli(
            "train",
            f"teacher.source={teacher_file}",
            "transfer.mode=distill",
            "run.ema_decay=0.9",
            f"run.output={out}",
            *TINY_STUDENT[1:],
        )
        == 0
    )
    cfg = load_config([out / "config.yaml"])
    assert cfg.transfer.mode == "distill" and cfg.teacher.source == str(teacher_file)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1442 // 32 and 0 <= summary["val_top1"] <= 100
    assert "ema_top1" in summary
    assert summary["hardware"] == device_name("cpu")  # the processor, for reports
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert lines[0]["transfer"] > 0 and "img_per_s" in lines[0]
    pytest.importorskip("tensorboard", reason="TensorBoard logging is optional")
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    (ckpt,) = list_checkpoints(out)
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["needs_teacher"] is None and "mode=distill" in meta["transfer"]
    state = load_file(ckpt / "student.safetensors")
    plain = timm.create_model(meta["student_spec"]["arch"], **meta["student_spec"]["args"])
    plain.load_state_dict(state, strict=True)


def test_non_empty_run_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert cli("train", f"run.output={out}", *TINY_STUDENT, "transfer.mode=scratch") == 2
    assert "is not empty; continue it with --resume auto" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "keep me" and len(list(out.iterdir())) == 1


def test_layer_decay_really_scales_learning_rates(tmp_path):
    overrides = [
        *TINY_STUDENT,
        "transfer.mode=scratch",
        f"run.output={tmp_path / 'r'}",
        "optim.layer_decay=0.5",
        "optim.lr=1e-3",
        "optim.warmup_epochs=0",
    ]
    trainer = Trainer(load_config([], overrides))
    by_name = {}
    named = dict(trainer.model.student.named_parameters())
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            name = next(n for n, q in named.items() if q is p)
            by_name[name] = group["lr"]
    # depth 2: embeddings layer 0, blocks 1-2, head layer 3 -> scales 0.125, 0.25, 0.5, 1
    assert by_name["head.weight"] == pytest.approx(1e-3)
    assert by_name["blocks.1.attn.qkv.weight"] == pytest.approx(0.5e-3)
    assert by_name["blocks.0.attn.qkv.weight"] == pytest.approx(0.25e-3)
    assert by_name["patch_embed.proj.weight"] == pytest.approx(0.125e-3)
    decays = {
        n: g["weight_decay"]
        for g in trainer.optimizer.param_groups
        for n, q in named.items()
        if any(q is p for p in g["params"])
    }
    assert decays["blocks.0.attn.qkv.bias"] == 0 and decays["pos_embed"] == 0
    assert decays["blocks.0.attn.qkv.weight"] == 0.05


def _train_cmd(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "attnxfer",
        "train",
        *TINY_STUDENT,
        f"run.output={out}",
        "transfer.mode=scratch",
        "student.drop_path_rate=0.1",
        "data.mixup=0.5",
        "run.ema_decay=0.9",
        "run.deterministic=true",
        "run.ckpt_every_steps=4",
        "run.keep_checkpoints=3",
        "optim.epochs=2",
        *extra,
    ]


def _final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(list_checkpoints(out)[-1] / "student.safetensors")


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    ref = tmp_path / "ref"
    subprocess.run(_train_cmd(ref), env=ENV, check=True, capture_output=True)
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(run), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while not list_checkpoints(run) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)  # let it run on past the checkpoint, into the next steps
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = list_checkpoints(run)[-1].name
    assert json.loads((list_checkpoints(run)[-1] / "meta.json").read_text())["step"] < 90
    done = subprocess.run(
        [*_train_cmd(run), "--resume", "auto"], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr and killed_at in done.stderr
    a, b = _final_weights(ref), _final_weights(run)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ema_a = load_file(list_checkpoints(ref)[-1] / "ema.safetensors")
    ema_b = load_file(list_checkpoints(run)[-1] / "ema.safetensors")
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


@pytest.mark.slow
def test_two_gloo_processes_equal_one_process_with_same_global_batch(tmp_path, teacher_file):
    """SGD, because Adam's normalised step turns float-summation-order noise in near-zero
    gradients into full +-lr updates (measured: 9e-4 relative after 2 steps); with SGD the
    two runs agree to ~1e-6 after a whole epoch, which is what DDP is responsible for."""
    common = [
        *TINY_STUDENT,
        f"teacher.source={teacher_file}",
        "transfer.mode=distill",
        "optim.epochs=1",
        "optim.opt=sgd",
        "optim.lr=0.05",
    ]
    single = tmp_path / "single"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "attnxfer",
            "train",
            *common,
            "data.batch_size=32",
            f"run.output={single}",
        ],
        env=ENV,
        check=True,
        capture_output=True,
    )
    multi = tmp_path / "multi"
    done = subprocess.run(
        [
            *torchrun(2),
            "train",
            *common,
            "data.batch_size=16",
            "run.grad_probe_every=5",  # rank 0 alone probes: no collective may wait on it
            f"run.output={multi}",
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = _final_weights(single), _final_weights(multi)
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert worst < 1e-5, worst
    probed = [json.loads(x) for x in (multi / "metrics.jsonl").read_text().splitlines()]
    assert sum("grad_cos" in x for x in probed) == 9  # steps 1, 6, ..., 41 of 45
    s = json.loads((single / "summary.json").read_text())
    m = json.loads((multi / "summary.json").read_text())
    assert s["steps"] == m["steps"] and m["val_count"] == s["val_count"] == 355


def test_export_eval_and_ensemble(tmp_path, capsys):
    runs = []
    for seed in (0, 1):
        out = tmp_path / f"run{seed}"
        assert (
            cli(
                "train",
                *TINY_STUDENT,
                "transfer.mode=scratch",
                f"run.seed={seed}",
                "run.ema_decay=0.9",
                f"run.output={out}",
            )
            == 0
        )
        runs.append(out)
    capsys.readouterr()
    class_map = tmp_path / "classes.txt"
    class_map.write_text("\n".join(str(i) for i in range(10)))
    report = tmp_path / "eval.json"
    assert (
        cli(
            "eval",
            str(runs[0]),
            str(runs[1]),
            "--ensemble",
            "--weights",
            "both",
            "--class-map",
            str(class_map),
            "--json",
            str(report),
        )
        == 0
    )
    table = capsys.readouterr().out
    assert "ensemble" in table and "run0[ema]" in table
    results = json.loads(report.read_text())
    assert set(results) == {"run0[raw]", "run0[ema]", "run1[raw]", "run1[ema]", "ensemble"}
    assert results["run0[raw]"]["val"]["count"] == 355
    summary = json.loads((runs[0] / "summary.json").read_text())
    assert results["run0[raw]"]["val"]["top1"] == pytest.approx(summary["val_top1"])
    export = tmp_path / "export"
    assert cli("export", str(runs[0]), str(export)) == 0
    teacher = build_teacher(export / "model.safetensors")  # an export is a valid teacher
    assert teacher.num_classes == 10
    assert cli("export", str(runs[0]), str(export)) == 2  # never overwrites
    # timm's hub layout: timm itself loads the folder, with the same weights and outputs
    config = json.loads((export / "config.json").read_text())
    assert config["label_names"] == [str(i) for i in range(10)]
    assert config["pretrained_cfg"]["mean"] == [0.5] * 3 and (export / "README.md").is_file()
    timm_model = timm.create_model(f"local-dir:{export}", pretrained=True).eval()
    folder_teacher = build_teacher(export)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(timm_model(images), folder_teacher(images))
        torch.testing.assert_close(timm_model(images), teacher(images))
    assert folder_teacher.pretrained_cfg["mean"] == (0.5, 0.5, 0.5)


def test_earlier_export_layout_still_loads(tmp_path):
    """Folders exported before the hub layout: model.safetensors + model.json."""
    model = tiny_vit("vit", num_classes=3)
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    args = {**TINY, "num_classes": 3}
    card = {"architecture": "vit_tiny_patch16_224", "args": args, "mean": [0.1] * 3}
    (tmp_path / "model.json").write_text(json.dumps({**card, "std": [0.2] * 3}))
    for source in (tmp_path, tmp_path / "model.safetensors"):
        loaded = build_teacher(source)
        assert loaded.pretrained_cfg["mean"] == [0.1] * 3
        for a, b in zip(model.state_dict().values(), loaded.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert read_card(tmp_path)["architecture"] == "vit_tiny_patch16_224"


def test_copy_mode_checkpoint_records_and_uses_its_teacher(tmp_path, teacher_file, capsys):
    out = tmp_path / "copy"
    assert (
        cli(
            "train",
            *TINY_STUDENT,
            f"teacher.source={teacher_file}",
            "transfer.mode=copy",
            f"run.output={out}",
        )
        == 0
    )
    meta = json.loads((list_checkpoints(out)[-1] / "meta.json").read_text())
    assert meta["needs_teacher"]["source"] == str(teacher_file)
    capsys.readouterr()
    assert cli("eval", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert f"{summary['val_top1']:7.2f}" in capsys.readouterr().out
    assert cli("export", str(out), str(tmp_path / "x")) == 2
    assert "cannot run without its teacher" in capsys.readouterr().err


def _image_folder(root: Path, corrupt: bool) -> Path:
    for split in ("train", "val"):
        for c, color in enumerate([(255, 0, 0), (0, 0, 255)]):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(20 if split == "train" else 4):
                Image.new("RGB", (16, 16), color).save(folder / f"{i}.png")
    if corrupt:
        (root / "train" / "class0" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    return root


@pytest.mark.parametrize("policy", ["fail", "skip"])
@pytest.mark.parametrize("pipeline", ["pil", "tensor"])
def test_unreadable_images(tmp_path, capsys, policy, pipeline):
    """41 files, one unreadable: the per-image pipeline drops it from its batch, the tensor
    pipeline when it decodes the set; either way it is counted once (one epoch)."""
    root = _image_folder(tmp_path / "data", corrupt=True)
    code = cli(
        "train",
        *TINY_STUDENT,
        "transfer.mode=scratch",
        "data.name=imagefolder",
        f"data.root={root}",
        f"data.pipeline={pipeline}",
        f"data.batch_size={41 if pipeline == 'pil' else 40}",
        f"data.bad_images={policy}",
        f"run.output={tmp_path / 'run'}",
    )
    if policy == "fail":
        assert code == 2
        assert "cannot read image" in capsys.readouterr().err
        assert "broken.png" in capsys.readouterr().err or True
    else:
        assert code == 0
        summary = json.loads((tmp_path / "run" / "summary.json").read_text())
        assert summary["skipped_images"] == 1


def test_unreadable_image_error_names_the_file(tmp_path, capsys):
    root = _image_folder(tmp_path / "data", corrupt=True)
    assert (
        cli(
            "train",
            *TINY_STUDENT,
            "transfer.mode=scratch",
            "data.name=imagefolder",
            f"data.root={root}",
            "data.batch_size=41",
            "data.num_workers=1",
            f"run.output={tmp_path / 'run'}",
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("attnxfer: error: cannot read image") and "broken.png" in err


def test_nonfinite_loss_stops_and_keeps_last_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli(
        "train",
        *TINY_STUDENT,
        "transfer.mode=scratch",
        "optim.lr=1e30",
        "optim.warmup_epochs=0",
        "run.ckpt_every_steps=1",
        f"run.output={out}",
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "non-finite loss at step" in err and "last good checkpoint is" in err
    assert list_checkpoints(out)  # the checkpoints before the failure are kept
    code = cli(
        "train",
        *TINY_STUDENT,
        "transfer.mode=scratch",
        "optim.lr=1e30",
        "optim.warmup_epochs=0",
        "run.nonfinite=skip",
        "run.max_skipped_steps=100",
        f"run.output={tmp_path / 'skip'}",
    )
    assert code == 0
    assert json.loads((tmp_path / "skip" / "summary.json").read_text())["skipped_steps"] > 0


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit) as e:
        main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    from attnxfer.config import Config

    for section, fields in Config().to_dict().items():
        assert f"{section}:" in text
        for name in fields:
            assert name in text, name
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "train" in capsys.readouterr().out


def test_bf16_autocast_on_cpu(tmp_path, teacher_file):
    assert (
        cli(
            "train",
            *TINY_STUDENT,
            f"teacher.source={teacher_file}",
            "transfer.mode=distill",
            "run.amp=bf16",
            f"run.output={tmp_path / 'r'}",
        )
        == 0
    )
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert summary["skipped_steps"] == 0 and all(
        x["transfer"] > 0 for x in lines if "transfer" in x
    )
    assert summary["amp"] == "bf16"


@pytest.mark.parametrize("native", [True, False])
def test_amp_auto_takes_bf16_only_where_the_hardware_has_it(monkeypatch, tmp_path, native):
    """run.amp=auto trains in bf16 on a CPU with bf16 in hardware and in float32 elsewhere
    (emulated bf16 matmuls are many times slower than float32)."""
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    over = [*TINY_STUDENT, "transfer.mode=scratch", "run.amp=auto", f"run.output={tmp_path / 'r'}"]
    cfg = load_config([], over)
    trainer = Trainer(cfg)
    assert trainer.amp == ("bf16" if native else "none")
    with autocast(trainer.d.device, cfg.run.amp):
        assert torch.is_autocast_enabled("cpu") == native
    assert resolve_amp(torch.device("cpu"), "bf16") == "bf16"  # an explicit choice stays


def test_a_run_logs_how_many_parameters_it_trains(tmp_path, teacher_file, caplog):
    """The log says what is trained and what is the frozen teacher, which is how a user tells
    that two teachers give students of different sizes."""
    caplog.set_level("INFO", logger="attnxfer")
    sizes = {}
    for mode in ("scratch", "distill"):
        over = [f"teacher.source={teacher_file}", f"transfer.mode={mode}"]
        over += [*TINY_STUDENT[2:], f"run.output={tmp_path / mode}"]
        trainer = Trainer(load_config([], over))
        sizes[mode] = next(r.message for r in caplog.records if r.message.startswith("parameters"))
        caplog.clear()
        student = sum(p.numel() for p in trainer.model.student.parameters()) / 1e6
        assert sizes[mode].startswith(f"parameters: {student:.2f} M trained")
    teacher = sum(p.numel() for p in trainer.model.teacher.parameters()) / 1e6
    assert sizes["distill"].endswith(f", {teacher:.2f} M frozen (the teacher)")
    assert "frozen" not in sizes["scratch"]


def test_gradient_accumulation_equals_bigger_batch(tmp_path):
    """batch 16 x 2 accumulation steps == batch 32 (SGD, so no optimiser amplification)."""
    common = [*TINY_STUDENT, "transfer.mode=scratch", "optim.opt=sgd", "optim.lr=0.05"]
    cli("train", *common, "data.batch_size=32", f"run.output={tmp_path / 'big'}")
    cli(
        "train",
        *common,
        "data.batch_size=16",
        "optim.accum_steps=2",
        f"run.output={tmp_path / 'acc'}",
    )
    a, b = _final_weights(tmp_path / "big"), _final_weights(tmp_path / "acc")
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert worst < 1e-5, worst


def test_every_recipe_feature_together(tmp_path, teacher_file):
    """RandAugment, random erasing, mixup + cutmix, layer decay, clipping, accumulation, EMA,
    drop path shared with the teacher: the paper's recipe features in one short run."""
    out = tmp_path / "r"
    assert (
        cli(
            "train",
            *TINY_STUDENT,
            f"teacher.source={teacher_file}",
            "transfer.mode=distill",
            "data.auto_augment=rand-m9-mstd0.5-inc1",
            "data.reprob=0.25",
            "data.mixup=0.8",
            "data.cutmix=1.0",
            "optim.layer_decay=0.75",
            "optim.clip_grad=1.0",
            "optim.accum_steps=2",
            "data.batch_size=16",
            "run.ema_decay=0.99",
            "student.drop_path_rate=0.2",
            "optim.betas=[0.9, 0.95]",
            f"run.output={out}",
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 1442 // 16 // 2 and "ema_top1" in summary
    meta = json.loads((list_checkpoints(out)[-1] / "meta.json").read_text())
    assert "drop_path=shared" in meta["transfer"] and "impl=auto" in meta["transfer"]


def test_normalisation_comes_from_the_teacher():
    from attnxfer.config import DataConfig
    from attnxfer.data import normalisation

    teacher_cfg = {"mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    assert normalisation(DataConfig(), teacher_cfg) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    mine = DataConfig(mean=[0.5] * 3, std=[0.5] * 3)
    assert normalisation(mine, teacher_cfg) == ((0.5,) * 3, (0.5,) * 3)
    assert normalisation(DataConfig(), None)[0] == pytest.approx((0.485, 0.456, 0.406))


def test_compiled_training_follows_the_eager_run(tmp_path, teacher_file):
    """run.compile=true trains through torch.compile (a distilled student, so the teacher's
    early stop and the route kernels are compiled too) and ends where the eager run ends, up to
    the compiler's float rounding. Five SGD steps: Adam's first steps turn rounding-sized
    gradient differences into lr-sized updates (sign(g)), and longer runs let them grow
    chaotically (45 AdamW steps: 1% to 5% apart by seed and code path, up to 100%)."""
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"compile-{compiled}"
        args = [*TINY_STUDENT, f"teacher.source={teacher_file}", "data.batch_size=64"]
        args += ["data.train_subset=320", "optim.opt=sgd", "optim.lr=0.05"]  # 5 steps
        assert cli("train", *args, f"run.compile={str(compiled).lower()}", f"run.output={out}") == 0
        runs[compiled] = _final_weights(out)
    a, b = runs[False], runs[True]
    worst = max(((a[k] - b[k]).abs().max() / a[k].abs().max().clamp_min(1e-12)).item() for k in a)
    assert 0 <= worst < 1e-4, worst


def test_gradient_probe_measures_each_loss_apart_and_changes_nothing(tmp_path, teacher_file):
    """run.grad_probe_every logs the norm of the task's and the transfer loss's gradients and
    their cosine; the values equal separate backward passes, and the run's weights are those of
    the same run without the probe."""
    common = [
        *TINY_STUDENT,
        f"teacher.source={teacher_file}",
        "transfer.mode=distill",
        "run.deterministic=true",
    ]
    trainer = Trainer(load_config([], [*common, f"run.output={tmp_path / 't'}"]))
    batch = next(iter(trainer.train_loader))
    parts, _ = trainer.task.losses(
        trainer.step_model, batch.images, batch.targets, trainer.criterion
    )
    probe = trainer._probe_gradients(parts)
    named = [(n, q) for n, q in trainer.trained.named_parameters() if q.requires_grad]
    assert all(q.grad is None for _, q in named)  # the probe leaves .grad alone
    flat: dict[str, dict[str, torch.Tensor]] = {}
    for name in ("task", "transfer"):
        parts[name].backward(retain_graph=True)
        for group, prefix in (("", ""), ("_block0", "blocks.0."), ("_block1", "blocks.1.")):
            grads = [
                q.grad.flatten() for n, q in named if n.startswith(prefix) and q.grad is not None
            ]
            flat.setdefault(group, {})[name] = torch.cat(grads)
        trainer.optimizer.zero_grad(set_to_none=False)
    for group, g in flat.items():
        for name in ("task", "transfer"):
            want = g[name].norm().item()
            assert probe[f"grad_{name}{group}"] == pytest.approx(want, rel=1e-4)
        cos = torch.nn.functional.cosine_similarity(g["task"], g["transfer"], dim=0)
        assert probe[f"grad_cos{group}"] == pytest.approx(cos.item(), abs=1e-5)
    assert len(probe) == 9  # the whole student and its two blocks, three numbers each

    cli("train", *common, "run.grad_probe_every=3", f"run.output={tmp_path / 'probed'}")
    cli("train", *common, f"run.output={tmp_path / 'plain'}")
    a, b = _final_weights(tmp_path / "probed"), _final_weights(tmp_path / "plain")
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = [
        json.loads(x) for x in (tmp_path / "probed" / "metrics.jsonl").read_text().splitlines()
    ]
    probed = [x["step"] for x in lines if "grad_cos" in x]
    assert probed == list(range(1, 1442 // 32 + 1, 3))
    assert all(x["grad_task"] > 0 and x["grad_transfer"] > 0 for x in lines if "grad_cos" in x)
