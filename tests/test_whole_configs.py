"""Whole configs, drawn field by field from valid and invalid values, run to their first
optimiser step: each ends in a completed step or in one ``attnxfer: error:`` line that leaves
no run directory behind; never in a traceback.

The draws are derandomised so the suite is repeatable; ``ATTNXFER_FUZZ_EXAMPLES=500`` explores
more (and randomly) on a developer's machine.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from helpers import TINY_STUDENT, tiny_teacher_file
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from attnxfer.cli import main
from attnxfer.config import Config
from attnxfer.engine import Trainer

TEACHER = "<teacher>"  # stands for the tiny teacher file this module writes

#: For every config field, values a user could type: some valid, some not. A new field must be
#: added here (test_every_field_is_drawn). ``run.compile: true`` is left out: compiling costs
#: half a minute per draw (its type is checked like every boolean's).
VALUES: dict[str, list] = {
    "teacher.source": [None, TEACHER, "nowhere/t.safetensors", "vit_nonexistent_patch3", ""],
    "teacher.arch": [None, "vit_tiny_patch16_224", "not_a_model"],
    "teacher.model_args": [{}, {"depth": 3}, {"bogus": 1}, "x"],
    "teacher.checkpoint_key": [None, "model", "nope"],
    "student.arch": ["vit_tiny_patch16_224", "deit_tiny_patch16_224", None, "resnet18", "nope"],
    "student.model_args": [{"num_heads": 4}, {"num_heads": 3}, {"img_size": 18}, {"depth": 0}],
    "student.drop_path_rate": [0.0, 0.1, 1.0, -0.1, "a"],
    "student.global_pool": [None, "avg", "token", "", "mean"],
    "transfer.mode": ["scratch", "finetune", "copy", "distill", "copy_q", "feature_distill", "x"],
    "transfer.layers": [None, "all", "last:1", 5, "a-b", [0], "none", True],
    "transfer.heads": [None, 1, [0, 1], [3], "first:1", 1.5],
    "transfer.head_map": [None, "index", "average", [1, 0], [9], "x"],
    "transfer.weight": [None, 0.5, 0, -1, float("inf")],
    "transfer.impl": [None, "auto", "fused", "eager", "magic"],
    "transfer.average": [None, "heads", "queries", "x"],
    "transfer.drop_path": ["shared", "student", "x"],
    "data.name": ["digits", "mnist", "nope"],
    "data.root": [None, "/nonexistent/data", ""],
    "data.train_split": ["train", "nope", ""],
    "data.train_subset": [None, 64, 0, 10**9],
    "data.val_split": ["val", "nope"],
    "data.download": [False, True],
    "data.img_size": [16, 0, 18, -1],
    "data.batch_size": [32, 7, 0, 5000],
    "data.num_workers": [0, 1, -1],
    "data.pipeline": ["auto", "tensor", "pil", "fast"],
    "data.auto_augment": [None, "rand-m9-mstd0.5-inc1", "augmix-m5-w3", "v0", "rand-zz", "x"],
    "data.reprob": [0.0, 0.25, 1.5],
    "data.scale": [[0.08, 1.0], [0.5], [0.9, 0.1], [0, 1], "big"],
    "data.hflip": [0.5, 0, 1, -1],
    "data.mixup": [0.0, 0.8, -1],
    "data.cutmix": [0.0, 1.0, -1],
    "data.smoothing": [0.1, 0, 1.0],
    "data.mean": [None, [0.5, 0.5, 0.5], [0.5], ["a", "b", "c"]],
    "data.std": [None, [0.5, 0.5, 0.5], [0, 0, 0]],
    "data.bad_images": ["fail", "skip", "x"],
    "data.eval_crop_pct": [1.0, 0.875, 0, 2],
    "optim.opt": ["adamw", "sgd", "lookahead_adamw", "adamz"],
    "optim.epochs": [1, 3, 0, -2],
    "optim.blr": [1e-3, 0, -1, float("nan")],
    "optim.lr": [None, 0.01, 0, 1e30],
    "optim.min_lr": [1e-6, 0, -1, 1.0],
    "optim.warmup_epochs": [0.2, 0, -1, 5],
    "optim.weight_decay": [0.05, 0, -1],
    "optim.layer_decay": [None, 0.75, 0, 1.5],
    "optim.betas": [[0.9, 0.999], [2, 3], [0.9]],
    "optim.clip_grad": [None, 1.0, 0, -1],
    "optim.accum_steps": [1, 2, 0],
    "run.output": [""],  # the test names the run directory itself
    "run.seed": [0, 7, -1, 2**32],
    "run.device": ["auto", "cpu", "cuda", "tpu"],
    "run.amp": ["auto", "none", "bf16", "fp16", "fp8"],
    "run.compile": [False, "yes"],
    "run.ema_decay": [None, 0.99, 1.5, 0],
    "run.eval_every": [1, 0],
    "run.ckpt_every_steps": [None, 1, 0],
    "run.keep_checkpoints": [2, 0, -1],
    "run.deterministic": [False, True],
    "run.nonfinite": ["stop", "skip", "ignore"],
    "run.max_skipped_steps": [10, 0, -1],
    "run.log_every": [10, 1, 0],
    "run.grad_probe_every": [None, 1, 0],
    "pretrain.method": ["mae", "supervised", "simclr"],
    "pretrain.mask_ratio": [0.75, 0.5, 0, 1.0],
    "pretrain.norm_pix_loss": [True, False, "yes"],
    "pretrain.decoder_dim": [128, 32, 0, 30],
    "pretrain.decoder_depth": [2, 1, 0],
    "pretrain.decoder_heads": [4, 3, 0],
}

#: where the drawn changes start: a scratch student, a distilled one, MAE pre-training
BASE = {
    "train": [*TINY_STUDENT, "data.train_subset=64", "transfer.mode=scratch"],
    "train-with-teacher": [*TINY_STUDENT, "data.train_subset=64", "teacher.source=<teacher>"],
    "pretrain": [*TINY_STUDENT, "data.train_subset=64"],
}


def test_every_field_is_drawn():
    fields = {f"{s}.{k}" for s, section in Config().to_dict().items() for k in section}
    assert fields == set(VALUES)


class FirstStep(Exception):
    """Raised right after the first optimiser update: the config trains."""


@pytest.fixture(scope="module")
def teacher(tmp_path_factory) -> Path:
    return tiny_teacher_file(tmp_path_factory.mktemp("teacher"))


def _yaml(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).removesuffix("\n...\n")


_change = st.sampled_from(sorted(VALUES)).flatmap(
    lambda key: st.tuples(st.just(key), st.sampled_from(VALUES[key]))
)
_examples = int(os.environ.get("ATTNXFER_FUZZ_EXAMPLES", "0"))


@settings(
    max_examples=_examples or 60,
    derandomize=not _examples,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    command=st.sampled_from(sorted(BASE)),
    changes=st.lists(_change, min_size=1, max_size=4, unique_by=lambda c: c[0]),
)
def test_whole_config_reaches_a_step_or_one_line(teacher, command, changes):
    changes = dict(changes)
    # no network here: a download would hang instead of failing
    assume(not (changes.get("data.download") and changes.get("data.name") == "mnist"))
    overrides = [
        f"{key}={_yaml(str(teacher) if value == TEACHER else value)}"
        for key, value in changes.items()
    ]
    real_update = Trainer._update

    def update_once(self):
        real_update(self)
        raise FirstStep

    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        err = io.StringIO()
        try:
            with (
                mock.patch.object(Trainer, "_update", update_once),
                contextlib.redirect_stderr(err),
                contextlib.redirect_stdout(io.StringIO()),
            ):
                base = [o.replace(TEACHER, str(teacher)) for o in BASE[command]]
                code = main([command.split("-")[0], *base, f"run.output={run}", *overrides])
        except FirstStep:
            event("a step")
            return
        finally:
            torch.use_deterministic_algorithms(False)  # run.deterministic is process-wide
        lines = err.getvalue().strip().splitlines()
        event("an error: " + (lines[-1].split(":")[2].strip() if lines else "none")[:40])
        assert code == 2, f"{command} {overrides}: finished without a step"
        assert lines and lines[-1].startswith("attnxfer: error: "), lines[-3:]
        assert "Traceback" not in err.getvalue()
        assert not run.exists() or not any(run.iterdir()), f"{overrides} left {run} behind"
