"""Injected faults: corrupt checkpoints, a second process in the run, a full disk."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from test_engine import ENV, TINY_STUDENT, cli

from attnxfer import checkpoint as C
from attnxfer.checkpoint import list_checkpoints, verify

RUN = [*TINY_STUDENT, "transfer.mode=scratch", "run.deterministic=true", "run.keep_checkpoints=3",
       "run.ckpt_every_steps=10", "student.drop_path_rate=0.1"]  # fmt: skip


def _flip_byte(path, offset=-100):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupt_checkpoints_are_detected_and_resume_falls_back(tmp_path, caplog):
    out = tmp_path / "run"
    assert cli("train", *RUN, f"run.output={out}") == 0
    ckpts = list_checkpoints(out)
    assert [c.name for c in ckpts] == ["step_000000030", "step_000000040", "step_000000045"]
    final = {k: v.clone() for k, v in load_file(ckpts[-1] / "student.safetensors").items()}
    # truncate the newest, flip one bit of the one before
    student = ckpts[-1] / "student.safetensors"
    student.write_bytes(student.read_bytes()[:1000])
    _flip_byte(ckpts[-2] / "state.pt")
    assert "does not match its checksum" in verify(ckpts[-1])
    assert "does not match its checksum" in verify(ckpts[-2])
    assert C.latest_good(out) == ckpts[0]
    with pytest.raises(Exception, match="unusable"):
        C.resolve(ckpts[-1])
    (out / "summary.json").unlink()
    assert cli("train", *RUN, f"run.output={out}", "--resume", "auto") == 0
    warnings = [r.message for r in caplog.records if "unusable" in r.message]
    assert any("step_000000045" in w for w in warnings) and any(
        "step_000000040" in w for w in warnings
    )
    again = load_file(list_checkpoints(out)[-1] / "student.safetensors")
    assert all(torch.equal(final[k], again[k]) for k in final)  # same weights as before the damage


def test_incomplete_checkpoint_directory_is_ignored(tmp_path):
    out = tmp_path / "run"
    assert cli("train", *RUN, f"run.output={out}") == 0
    newest = list_checkpoints(out)[-1]
    (newest / "meta.json").unlink()  # as if the process died before the last write
    shutil.copytree(newest, out / "checkpoints" / "step_000000046.tmp-123")
    assert C.latest_good(out) == list_checkpoints(out)[-2]


def test_second_process_in_the_same_run_directory_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "attnxfer", "train", *RUN, "optim.epochs=3", f"run.output={out}"]
    first = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    deadline = time.time() + 120
    while not (out / "config.yaml").exists() and time.time() < deadline:
        time.sleep(0.05)
    assert cli("train", *RUN, "optim.epochs=3", f"run.output={out}", "--resume", "auto") == 2
    assert "is in use by another attnxfer process" in capsys.readouterr().err
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err[-2000:]  # the first run is not disturbed
    assert (out / "summary.json").exists()
    assert cli("train", *RUN, "optim.epochs=3", f"run.output={out}", "--resume", "auto") == 0


def test_disk_full_at_checkpoint_time_keeps_the_last_good_one(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_save = C.save_file
    calls = {"n": 0}

    def failing_save(tensors, path, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the second checkpoint fails half-way (student written, then ENOSPC)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(tensors, path, *args, **kwargs)

    monkeypatch.setattr(C, "save_file", failing_save)
    assert cli("train", *RUN, "run.ema_decay=0.9", f"run.output={out}") == 2
    err = capsys.readouterr().err
    assert "could not write checkpoint of step 20" in err and "No space left on device" in err
    assert "step_000000010" in err
    names = [p.name for p in (out / "checkpoints").iterdir()]
    assert names == ["step_000000010"]  # no partial directory left behind
    assert verify(out / "checkpoints" / "step_000000010") is None
    monkeypatch.setattr(C, "save_file", real_save)
    assert cli("train", *RUN, "run.ema_decay=0.9", f"run.output={out}", "--resume", "auto") == 0
