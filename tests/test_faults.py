"""Injected faults: corrupt checkpoints, a second process in the run, a full disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import ENV, TINY_STUDENT, cli, torchrun
from safetensors.torch import load_file

from attnxfer import checkpoint as C
from attnxfer.checkpoint import list_checkpoints, verify
from attnxfer.engine import Trainer

RUN = [
    *TINY_STUDENT,
    "transfer.mode=scratch",
    "run.deterministic=true",
    "run.keep_checkpoints=3",
    "run.ckpt_every_steps=10",
    "student.drop_path_rate=0.1",
]


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


def test_sigterm_stops_with_a_checkpoint_of_the_step_reached(tmp_path, monkeypatch, capsys):
    """SIGTERM while training: the run saves the step it reached (13, between the checkpoints
    it makes every 10 steps), exits 143 with one line, and, resumed, ends with exactly the weights
    of an uninterrupted run; the signal's handling is put back as it was."""
    args = ["train", *RUN, "data.mixup=0.5", "run.ema_decay=0.9"]  # 45 steps
    ref = tmp_path / "ref"
    assert cli(*args, f"run.output={ref}") == 0
    before = signal.getsignal(signal.SIGTERM)
    update = Trainer._update

    def update_then_sigterm(self):
        update(self)
        if self.progress.step == 13:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Trainer, "_update", update_then_sigterm)
    out = tmp_path / "run"
    capsys.readouterr()
    assert cli(*args, f"run.output={out}") == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before
    err = capsys.readouterr().err.strip().splitlines()
    saved = out / "checkpoints" / "step_000000013"
    assert err[-1] == (
        f"attnxfer: stopped by SIGTERM at step 13 of 45, checkpoint {saved} saved: the same "
        "command with --resume auto continues from it"
    )
    assert list_checkpoints(out)[-1] == saved and verify(saved) is None
    assert not (out / "summary.json").exists()
    monkeypatch.undo()
    assert cli(*args, f"run.output={out}", "--resume", "auto") == 0
    a = load_file(list_checkpoints(ref)[-1] / "student.safetensors")
    b = load_file(list_checkpoints(out)[-1] / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_with_a_checkpoint_and_a_second_stops_at_once(
    tmp_path, monkeypatch, capsys, presses
):
    """Ctrl-C (SIGINT) while training stops the run as SIGTERM does (exit 130, the step reached
    saved); a second Ctrl-C stops it at once, without that checkpoint."""
    before = signal.getsignal(signal.SIGINT)
    update = Trainer._update

    def update_then_ctrl_c(self):
        update(self)
        if self.progress.step == 13:
            for _ in range(presses):
                os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(Trainer, "_update", update_then_ctrl_c)
    out = tmp_path / "run"
    assert cli("train", *RUN, f"run.output={out}") == 128 + signal.SIGINT
    assert signal.getsignal(signal.SIGINT) is before
    last = capsys.readouterr().err.strip().splitlines()[-1]
    if presses == 1:
        assert last.startswith("attnxfer: stopped by SIGINT at step 13 of 45, checkpoint ")
        assert list_checkpoints(out)[-1].name == "step_000000013"
    else:
        assert last == "attnxfer: interrupted"
        assert list_checkpoints(out)[-1].name == "step_000000010"


def _signal_the_job_at_its_next_checkpoint(
    cmd: list[str], out: Path, signum: int
) -> tuple[int, str]:
    """Start ``cmd`` in a process group of its own, send ``signum`` to the whole group once the
    run in ``out`` has a new checkpoint (a scheduler signals every process of a job, a terminal's
    Ctrl-C every process of its foreground job), wait for it to end; returns its exit status and
    its standard error."""
    before = list_checkpoints(out)
    proc = subprocess.Popen(
        cmd,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while list_checkpoints(out) == before:
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    os.killpg(proc.pid, signum)
    _, err = proc.communicate(timeout=120)
    return proc.returncode, err


@pytest.mark.slow
def test_sigint_then_sigterm_to_the_whole_job_with_data_workers(tmp_path):
    """Ctrl-C and a scheduler's SIGTERM reach every process of a job, data-loading workers too:
    the run still stops cleanly at the step it reached (a worker killed by the signal would fail
    that step instead), each time, and resumes to the end, its progress bar drawn sparingly."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "attnxfer", "train", *RUN, "optim.epochs=2"]
    cmd += ["data.num_workers=1", f"run.output={out}", "--resume", "auto"]
    for signum in (signal.SIGINT, signal.SIGTERM):
        code, err = _signal_the_job_at_its_next_checkpoint(cmd, out, signum)
        assert code == 128 + signum, err[-2000:]
        name = signal.Signals(signum).name
        assert f"attnxfer: stopped by {name} at step " in err.strip().splitlines()[-1]
        assert "Traceback" not in err
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2
    # into a pipe or a file the progress bar is drawn at most once a minute (and at the epoch's
    # start and end), not at each of its 9 logged steps: a long job's log stays small
    assert done.stderr.count("epoch 2/2:") <= 3, done.stderr


@pytest.mark.slow
def test_ctrl_c_to_a_torchrun_job_stops_every_process_at_one_step(tmp_path, teacher_file):
    """A terminal's Ctrl-C reaches torchrun, which passes it on to its workers (each in a
    session of its own); they may take it at different steps, agree on one, rank 0 saves it, and
    the run resumes to the end."""
    out = tmp_path / "ddp"
    cmd = [*torchrun(2), "train", *RUN, f"teacher.source={teacher_file}"]
    cmd += ["transfer.mode=distill", "optim.epochs=2", "data.batch_size=16", f"run.output={out}"]
    _, err = _signal_the_job_at_its_next_checkpoint(cmd, out, signal.SIGINT)  # torchrun's status
    stops = [line for line in err.splitlines() if "attnxfer: stopped by SIGINT at step" in line]
    assert len(stops) == 2, err[-3000:]  # both ranks, at the same step
    steps = {line.split(" at step ")[1].split()[0] for line in stops}
    assert len(steps) == 1
    assert not (out / "summary.json").exists()
    newest = list_checkpoints(out)[-1]
    done = subprocess.run([*cmd, "--resume", "auto"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"resumed from {newest}" in done.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


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
    first = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
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


_KILL_DURING_WRITE = """
import os, signal, sys
from attnxfer import checkpoint
target, seen = int(os.environ["KILL_AT_FILE_WRITE"]), [0]
real = checkpoint.save_file
def save(*args, **kwargs):
    seen[0] += 1
    if seen[0] == target:  # inside a checkpoint write: its directory is half made
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
checkpoint.save_file = save
from attnxfer.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _newest(run: Path) -> str | None:
    names = [c.name for c in list_checkpoints(run)]
    return names[-1] if names else None


@pytest.mark.slow
def test_repeated_sigkill_including_mid_checkpoint_write(tmp_path):
    """Killed 6 times (inside the 2nd and the 3rd file write of a checkpoint, and 4 times at
    timed moments while training), the run resumed each time ends with exactly the weights of an
    uninterrupted run."""
    args = [
        "train",
        *RUN,
        "optim.epochs=4",  # long enough that every attempt is killed before the end
        "run.ckpt_every_steps=3",
        "data.mixup=0.5",
        "run.ema_decay=0.9",
    ]
    ref = tmp_path / "ref"
    subprocess.run(
        [sys.executable, "-m", "attnxfer", *args, f"run.output={ref}"],
        env=ENV,
        check=True,
        capture_output=True,
    )
    run = tmp_path / "run"
    cmd = [*args, f"run.output={run}", "--resume", "auto"]
    kills, steps_at_kill = 0, []
    write_kills = {1: 2, 3: 3}  # attempt: die while writing this file of a checkpoint
    for attempt in range(6):
        if attempt in write_kills:
            env = {**ENV, "KILL_AT_FILE_WRITE": str(write_kills[attempt])}
            proc = subprocess.run(
                [sys.executable, "-c", _KILL_DURING_WRITE, *cmd], env=env, capture_output=True
            )
            code = proc.returncode
        else:  # die at a moment while training, after at least one more checkpoint
            proc = subprocess.Popen(
                [sys.executable, "-m", "attnxfer", *cmd],
                env=ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )

            before = _newest(run)
            deadline = time.time() + 120
            while _newest(run) == before and proc.poll() is None:
                assert time.time() < deadline
                time.sleep(0.02)
            time.sleep(0.05 * attempt)
            proc.kill()
            code = proc.wait()
        if code == -9:
            kills += 1
            newest = list_checkpoints(run)[-1] if list_checkpoints(run) else None
            steps_at_kill.append(newest.name if newest else "none")
            assert newest is None or verify(newest) is None  # what is listed is always good
    assert kills == 6, (kills, steps_at_kill)
    assert len(set(steps_at_kill)) >= 4  # killed at many different points of the run
    done = subprocess.run(
        [sys.executable, "-m", "attnxfer", *cmd], env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a = load_file(list_checkpoints(ref)[-1] / "student.safetensors")
    b = load_file(list_checkpoints(run)[-1] / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("code", "text"), [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only file system")]
)
def test_unwritable_run_directory_at_checkpoint_time(tmp_path, monkeypatch, capsys, code, text):
    """Root ignores file modes, so an unwritable directory is injected at the write itself."""
    out = tmp_path / "run"

    def refuse(*args, **kwargs):
        raise OSError(code, text)

    monkeypatch.setattr(C, "save_file", refuse)
    assert cli("train", *RUN, f"run.output={out}") == 2
    err = capsys.readouterr().err
    assert f"could not write checkpoint of step 10 in {out} ({text})" in err
    assert not (out / "checkpoints").exists() or not any((out / "checkpoints").iterdir())


@pytest.mark.slow
def test_killed_gloo_worker_stops_the_run_and_it_resumes(tmp_path, teacher_file):
    out = tmp_path / "ddp"
    cmd = [
        *torchrun(2),
        "train",
        *RUN,
        f"teacher.source={teacher_file}",
        "transfer.mode=distill",
        "optim.epochs=3",
        "data.batch_size=16",
        f"run.output={out}",
    ]
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not list_checkpoints(out):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.05)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True)
    pids = [int(p) for p in workers.stdout.split()]
    assert len(pids) == 2
    os.kill(pids[1], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)  # stops instead of hanging
    assert proc.returncode != 0
    assert "exitcode  : -9" in err or "Signal 9" in err or "SIGKILL" in err, err[-1500:]
    done = subprocess.run([*cmd, "--resume", "auto"], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3


def test_a_failed_export_leaves_no_model_behind(tmp_path, monkeypatch):
    """A full disk while the weights are written: one clear error, and neither the model's files
    nor temporary ones in the folder."""
    from helpers import tiny_vit

    from attnxfer import export
    from attnxfer.errors import AttnxferError

    def full_disk(tensors, path, *args, **kwargs):
        Path(path).write_bytes(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(export, "save_file", full_disk)
    model = tiny_vit()
    with pytest.raises(AttnxferError, match=r"could not write the model to .*No space left"):
        export.write_model(
            tmp_path / "out", model, model.state_dict(), {"mean": [0.5] * 3, "std": [0.5] * 3}
        )
    assert list((tmp_path / "out").iterdir()) == []
