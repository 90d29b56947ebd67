"""Sweeps and the small-scale reproduction: grids, restart without redoing, tables."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
from helpers import ENV, TINY_STUDENT, cli, tiny_teacher_file

from attnxfer import sweep
from attnxfer.checkpoint import list_checkpoints
from attnxfer.config import dump_config, load_config
from attnxfer.errors import AttnxferError, Stopped
from attnxfer.report import cpu_name, device_name, mean_std, trained_on, trained_on_text
from attnxfer.sweep import (
    Cell,
    finished_cell,
    grid_cells,
    job_env,
    keep_records,
    parse_grid,
    plan,
    run_cell,
    run_cells,
    run_identity,
)


def test_grid_is_a_product_with_readable_names():
    grid = parse_grid(["transfer.layers=first:1,last:1", "transfer.heads=0,1|0"])
    assert grid == [("transfer.layers", ["first:1", "last:1"]), ("transfer.heads", ["0,1", "0"])]
    cells = grid_cells(["base.yaml"], grid, [0, 1], ["optim.epochs=1"])
    assert len(cells) == 8
    assert cells[0].name == "layers=first-1_heads=0_1/seed0"
    assert cells[0].overrides == [
        "optim.epochs=1",
        "transfer.layers=first:1",
        "transfer.heads=0,1",
        "run.seed=0",
    ]
    assert len({c.name for c in cells}) == 8
    with pytest.raises(AttnxferError, match="is not KEY=V1,V2"):
        parse_grid(["transfer.layers"])


def test_mean_std_is_the_sample_deviation():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([5.0]) == (5.0, 0.0)


def test_trained_on_groups_runs_by_processor_and_precision_old_records_apart():
    runs = [
        {"hardware": "H200", "amp": "bf16", "seconds": 60.0},
        {"hardware": "H200", "amp": "bf16", "seconds": 120.0},
        {"hardware": "EPYC", "amp": "none", "seconds": 7200.0},
        {"amp": "none", "seconds": 30.0},  # a record older than the hardware field
        {"seconds": 30.0},  # older than the amp field too
    ]
    groups = trained_on(runs)
    assert [(g["hardware"], g["precision"], g["runs"]) for g in groups] == [
        ("H200", "bfloat16", 2),
        ("EPYC", "float32", 1),
        ("processor not recorded", "float32", 1),
        ("processor not recorded", "precision not recorded", 1),
    ]
    assert groups[0]["seconds"] == 180.0
    text = "H200, bfloat16: 2 runs, 3 min; EPYC, float32: 1 run, 2.0 h"
    assert trained_on_text(groups[:2]) == text


def test_sweep_runs_each_cell_once_and_tabulates(tmp_path, capsys, teacher_file):
    out = tmp_path / "sweep"
    args = [
        "sweep",
        "--grid",
        "transfer.mode=scratch,distill",
        "--seeds",
        "0,1",
        "--out",
        str(out),
        f"teacher.source={teacher_file}",
        "data.train_subset=256",
        *TINY_STUDENT[1:],
    ]
    assert cli(*args, "--jobs", "2") == 0  # two cells at a time
    result = json.loads((out / "results.json").read_text())
    assert [r["transfer.mode"] for r in result["rows"]] == ["scratch", "distill"]
    assert all(len(r["runs"]) == 2 and r["seeds"] == [0, 1] for r in result["rows"])
    assert (out / "results.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    threads = os.environ.get("OMP_NUM_THREADS") or max(1, len(os.sched_getaffinity(0)) // 2)
    assert "| distill |" in md and f"Trained on: {cpu_name()}, {threads} threads, " in md
    assert ": 4 runs," in md and "Report written on: " in md
    assert result["command"].startswith("attnxfer sweep --grid transfer.mode=scratch,distill")
    summaries = sorted(out.rglob("summary.json"))
    assert len(summaries) == 4
    stamps = [p.stat().st_mtime_ns for p in summaries]
    capsys.readouterr()
    assert cli(*args) == 0  # everything finished: nothing is trained again
    assert [p.stat().st_mtime_ns for p in summaries] == stamps
    assert json.loads((out / "results.json").read_text())["rows"] == result["rows"]

    # --finished-only: a wider grid, reported as far as it has come; nothing trains
    wider = [a.replace("scratch,distill", "scratch,distill,copy") for a in args]
    assert cli(*wider, "--finished-only") == 0
    partial = json.loads((out / "results.json").read_text())
    assert [r["transfer.mode"] for r in partial["rows"]] == ["scratch", "distill"]
    assert partial["finished_only"] and "finished so far" in (out / "results.md").read_text()
    assert sorted(out.rglob("summary.json")) == summaries
    elsewhere = [a if a != str(out) else str(tmp_path / "elsewhere") for a in wider]
    assert cli(*elsewhere, "--reuse", str(out), "--finished-only") == 0
    taken = json.loads((tmp_path / "elsewhere" / "results.json").read_text())
    assert [len(r["reused_from"]) for r in taken["rows"]] == [2, 2]
    assert not list((tmp_path / "elsewhere").rglob("summary.json"))
    capsys.readouterr()
    empty = [a if a != str(out) else str(tmp_path / "empty") for a in wider]
    assert cli(*empty, "--finished-only") == 2
    assert "no finished cell of the sweep" in capsys.readouterr().err

    # --plan: what the wider grid would do with each run, trained and written nothing
    (out / "mode=copy" / "seed1" / "checkpoints" / "step_3").mkdir(parents=True)
    before = sorted(p for p in tmp_path.rglob("*"))
    assert cli(*wider, "--plan") == 0
    said = capsys.readouterr().out.splitlines()
    assert "mode=distill/seed1: finished" in said
    assert "mode=copy/seed0: to train" in said
    assert "mode=copy/seed1: resumes from step_3" in said
    command = said[said.index("mode=copy/seed0: to train") + 1]
    assert command.startswith("  attnxfer train --resume auto ") and "transfer.mode=copy" in command
    assert said[-1].startswith("6 runs: 4 finished, 0 taken from finished runs, 1 to resume, 1 to")
    assert cli(*elsewhere, "--reuse", str(out), "--plan") == 0
    said = capsys.readouterr().out.splitlines()
    assert f"mode=scratch/seed0: taken from {out / 'mode=scratch/seed0'}" in said
    assert sorted(p for p in tmp_path.rglob("*")) == before
    assert cli(*wider, "--plan", "--finished-only") == 2
    # an interrupted run in a cell's place is resumed there, not taken from an identical one
    interrupted = tmp_path / "elsewhere" / "mode=scratch" / "seed1"
    (interrupted / "checkpoints" / "step_1").mkdir(parents=True)
    shutil.copy(out / "mode=scratch" / "seed1" / "config.yaml", interrupted)
    assert cli(*elsewhere, "--reuse", str(out), "--plan") == 0
    assert "mode=scratch/seed1: resumes from step_1" in capsys.readouterr().out.splitlines()


def test_run_identity_ignores_the_output_and_spellings_of_one_setting():
    def identity(*overrides):
        return run_identity(load_config([], ["transfer.mode=distill", *overrides]).to_dict())

    base = identity()
    assert identity("run.output=elsewhere") == base
    assert identity("run.device=cuda") == base  # where a recipe runs is not the recipe
    assert identity("transfer.layers=all", "transfer.heads=all") == base
    assert identity("transfer.weight=3") == identity("transfer.weight=3.0") == base
    assert identity("transfer.weight=1") != base
    assert identity("transfer.layers=last:2") != base
    assert identity("optim.lr=2e-3") != base
    assert identity("run.seed=1") != base
    assert identity("transfer.mode=distill_q") != identity(
        "transfer.mode=distill_q", "transfer.weight=3"
    )


def test_a_sweep_takes_identical_finished_runs_and_trains_the_rest(tmp_path, teacher_file):
    common = ["--seeds", "0", f"teacher.source={teacher_file}", "data.train_subset=128"]
    common += TINY_STUDENT[1:]
    first, second, third = tmp_path / "first", tmp_path / "second", tmp_path / "third"
    assert cli("sweep", "--grid", "transfer.mode=scratch", "--out", str(first), *common) == 0
    grid = ["--grid", "transfer.mode=scratch,distill", "--reuse", str(tmp_path)]
    assert cli("sweep", *grid, "--out", str(second), *common) == 0
    scratch, distill = json.loads((second / "results.json").read_text())["rows"]
    assert scratch["reused_from"] == [str(first / "mode=scratch" / "seed0")]
    assert scratch["runs"] == json.loads((first / "results.json").read_text())["rows"][0]["runs"]
    link = second / "mode=scratch" / "seed0"  # nothing trained for it: a link to the run
    assert link.is_symlink() and link.resolve() == (first / "mode=scratch" / "seed0").resolve()
    assert not list(second.glob("mode=scratch/*.log"))
    assert "reused_from" not in distill
    assert (second / "mode=distill" / "seed0" / "summary.json").is_file()
    assert "taken from identical finished runs" in (second / "results.md").read_text()
    assert cli("sweep", *grid, "--out", str(second), *common) == 0  # a restart: still noted
    assert json.loads((second / "results.json").read_text())["rows"][0] == scratch
    # any other setting is another run: trained, not taken
    assert cli("sweep", *grid, "--out", str(third), *common, "optim.lr=2e-3") == 0
    assert all(
        "reused_from" not in r for r in json.loads((third / "results.json").read_text())["rows"]
    )
    assert len(list(third.rglob("summary.json"))) == 2


def test_a_run_of_another_configuration_in_a_cells_place_is_refused_not_taken(tmp_path):
    # a run started by hand without the cell's layer decay: its number must not fill the row
    cell = Cell("e5/finetune/seed0", overrides=["transfer.mode=finetune", "optim.layer_decay=0.75"])
    run = tmp_path / cell.name
    run.mkdir(parents=True)
    dump_config(
        load_config([], ["transfer.mode=finetune", f"run.output={run}"]), run / "config.yaml"
    )
    refused = pytest.raises(
        AttnxferError,
        match=r"another configuration than cell e5/finetune/seed0 "
        r"\(run vs cell: optim\.layer_decay: None vs 0\.75\); move it away",
    )
    with refused:
        run_cell(cell, tmp_path)  # interrupted: not resumed with the cell's config
    (run / "summary.json").write_text('{"val_top1": 71.9}')
    for check in (run_cell, finished_cell, lambda c, root: plan([c], root)):
        with refused:
            check(cell, tmp_path)
    assert sorted(p.name for p in run.iterdir()) == ["config.yaml", "summary.json"]  # untouched
    # the cell's own run (any run.output) is taken
    dump_config(load_config([], [*cell.overrides, "run.output=x"]), run / "config.yaml")
    assert run_cell(cell, tmp_path) == finished_cell(cell, tmp_path) == {"val_top1": 71.9}


def test_a_failing_cell_names_its_log_and_a_bad_cell_runs_nothing(tmp_path):
    with pytest.raises(AttnxferError, match=r"unknown config key optim\.nope"):
        run_cell(Cell("bad", overrides=["optim.nope=1"]), tmp_path)
    assert not any(tmp_path.iterdir())
    cell = Cell("broken", overrides=["transfer.mode=scratch", "data.batch_size=64"])
    with pytest.raises(AttnxferError, match=r"cell broken failed \(exit 2\).*broken\.log"):
        run_cell(cell, tmp_path)  # no student.arch and no teacher: refused by train
    assert "set student.arch" in (tmp_path / "broken.log").read_text()


def test_job_env_shares_out_the_cores_and_the_gpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert job_env(0, 1, gpus=4) == dict(os.environ)  # one at a time: the environment as it is
    env = job_env(1, 2, gpus=0)
    assert env["OMP_NUM_THREADS"] == str(max(1, cores // 2)) and "CUDA_VISIBLE_DEVICES" not in env
    assert job_env(0, 4 * cores, gpus=0)["OMP_NUM_THREADS"] == "1"
    assert [job_env(s, 3, gpus=2)["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["0", "1", "0"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.setenv("OMP_NUM_THREADS", "7")  # the user's choice stands
    assert job_env(1, 2, gpus=2) == {**os.environ, "CUDA_VISIBLE_DEVICES": "5"}


def test_run_cells_keeps_jobs_runs_going_in_the_cells_order(tmp_path, monkeypatch):
    import attnxfer.sweep as S

    lock, running, most, started = threading.Lock(), [0], [0], []

    def fake_run_cell(cell, root, reuse, env=None, processes=None):
        with lock:
            started.append(cell.name)
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        with lock:
            running[0] -= 1
        summary = {"val_top1": float(cell.name[1:]), "threads": (env or {}).get("OMP_NUM_THREADS")}
        return {**summary, "reused_from": "elsewhere"} if cell.name == "c5" else summary

    monkeypatch.setattr(S, "run_cell", fake_run_cell)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cells = [Cell(f"c{i}") for i in range(7)]
    for jobs in (3, 1):
        measured = []  # `after` sees each cell finished here, not the one taken from elsewhere
        done = run_cells(cells, tmp_path, jobs=jobs, after=lambda c, run, m=measured: m.append(run))
        assert list(done) == [c.name for c in cells] and done["c4"]["val_top1"] == 4.0
        assert sorted(measured) == [tmp_path / f"c{i}" for i in (0, 1, 2, 3, 4, 6)]
        if jobs == 3:
            assert most[0] == 3 and started[:3] == ["c0", "c1", "c2"]
    with pytest.raises(AttnxferError, match="--jobs 0: give 1 or more"):
        run_cells(cells, tmp_path, jobs=0)


def test_a_failing_run_stops_the_runs_beside_it(tmp_path):
    """The first failure is raised at once: the other running cell is stopped (it would resume
    from its checkpoints), not waited for, and no cell after them starts."""
    long = Cell("long", overrides=[*TINY_STUDENT, "transfer.mode=scratch", "optim.epochs=2000"])
    broken = Cell("broken", overrides=["transfer.mode=scratch", "data.batch_size=64"])
    later = Cell("later", overrides=[*TINY_STUDENT, "transfer.mode=scratch"])
    with pytest.raises(AttnxferError, match=r"cell broken failed \(exit 2\)"):
        run_cells([long, broken, later], tmp_path, jobs=2)
    assert not (tmp_path / "long" / "summary.json").exists()
    assert not (tmp_path / "later").exists() and not (tmp_path / "later.log").exists()


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("jobs", "signum", "group"), [(1, signal.SIGTERM, False), (2, signal.SIGINT, True)]
)
def test_a_signal_to_a_sweep_stops_its_running_cells_with_checkpoints(
    tmp_path, request, jobs, signum, group
):
    """SIGTERM to the sweep's process alone, or Ctrl-C (SIGINT to its whole process group, as a
    terminal sends it): each running cell saves the step it reached and ends, no other starts,
    and the sweep exits 128 + the signal's number with one line."""
    out = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "attnxfer", "sweep", "--out", str(out), "--jobs", str(jobs)]
    cmd += ["--grid", "optim.lr=1e-3,2e-3,3e-3", *TINY_STUDENT, "transfer.mode=scratch"]
    cmd += ["optim.epochs=2000"]  # never finishes
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    request.addfinalizer(lambda: _kill_group(proc.pid))  # whatever this test left running
    first = [out / f"lr={lr}" / "seed0" for lr in ("1e-3", "2e-3")[:jobs]]
    deadline = time.time() + 120
    while not all(list_checkpoints(run) for run in first):
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.02)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    err = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 128 + signum, err[-2000:]
    name = signal.Signals(signum).name
    assert err.strip().splitlines()[-1] == (
        f"attnxfer: stopped by {name}: each running cell saved a checkpoint of the step it "
        "reached; the same command continues them (finished cells are kept)"
    )
    for run in first:
        log = (run.parent / "seed0.log").read_text()
        assert f"attnxfer: stopped by {name} at step " in log
        assert not (run / "summary.json").exists()
        step = int(log.split(" at step ")[1].split()[0])
        assert list_checkpoints(run)[-1].name == f"step_{step:09d}"
    assert not (out / "lr=3e-3").exists()


def test_a_second_ctrl_c_to_a_sweep_kills_its_cells_at_once():
    """The first Ctrl-C asks the running cells to stop after their step (SIGTERM); the second,
    while one is still stopping, kills them (SIGKILL) and interrupts the sweep."""
    slow = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
    cell = subprocess.Popen(
        [sys.executable, "-c", slow + "signal.pause()"], stdout=subprocess.PIPE, text=True
    )
    assert cell.stdout.readline() == "1\n"  # a cell slow to stop: it ignores SIGTERM
    processes = sweep._Processes()
    processes.running.add(cell)
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt), sweep._stop_cells_on_signals(processes):
        os.kill(os.getpid(), signal.SIGINT)
        assert isinstance(processes.error, Stopped) and processes.error.signum == signal.SIGINT
        assert cell.poll() is None
        os.kill(os.getpid(), signal.SIGINT)
    assert cell.wait(timeout=30) == -signal.SIGKILL
    assert signal.getsignal(signal.SIGINT) is before


def _tiny_tier(tmp_path: Path, monkeypatch, teacher_file: Path, shift: Path | None = None) -> None:
    """The cpu tier as a tiny table on digits, one seed, from ``teacher_file`` (and ``shift``, or
    the same, as the shift teacher)."""
    from attnxfer import reproduce as R

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {name: digits, scale: [0.6, 1.0], hflip: 0.0}\n")
    monkeypatch.setitem(
        R.TIERS,
        "cpu",
        R.Tier(
            config=str(recipe),
            teacher=str(teacher_file),
            shift_teacher=str(shift or teacher_file),
            seeds=(0,),  # several seeds: test_sweep_runs_each_cell_once_and_tabulates
            note="test",
        ),
    )


def test_reproduce_tiny(tmp_path, monkeypatch, teacher_file, capsys, caplog):
    """The whole table on digits with a tiny teacher: every row, the ensemble, the files."""
    from attnxfer import reproduce as R

    _tiny_tier(tmp_path, monkeypatch, teacher_file)
    out = tmp_path / "repro"
    args = ["reproduce", "--out", str(out), "data.train_subset=256", *TINY_STUDENT[1:]]
    assert cli(*args) == 0
    report = json.loads((out / "results.json").read_text())
    rows = {r["method"]: r for r in report["rows"]}
    assert list(rows) == [*R.METHODS, "ensemble"]
    assert all(len(r["runs"]) == 1 for r in rows.values())
    assert rows["scratch"]["gap_recovered"] == 0 and rows["finetune"]["gap_recovered"] == 100
    assert rows["copy"]["paper_gap_recovered"] == pytest.approx(77.78, abs=0.01)
    assert (out / "results.png").stat().st_size > 0
    md = (out / "results.md").read_text()
    assert "| distill |" in md and f"Trained on: {device_name('cpu')}, " in md and ": 5 runs," in md
    assert report["trained_on"][0]["runs"] == 5
    assert "attnxfer reproduce" in md
    # the report states each row's recipe difference, as the runs were trained
    for method in R.METHODS:
        (config,) = out.glob(f"**/{method}/seed0/config.yaml")
        trained = yaml.safe_load(config.read_text())
        decay = trained["optim"]["layer_decay"]
        assert (decay == 0.75) == (method in ("finetune", "copy"))
        assert (f"{method} `optim.layer_decay=0.75`" in md) == (decay is not None), method
    capsys.readouterr()
    assert cli(*args, "--plan") == 0  # the table's runs: all finished
    assert capsys.readouterr().out.splitlines()[-1].startswith("5 runs: 5 finished, 0 taken")

    # the runs' records, kept without weights, give the same table in another folder
    kept = tmp_path / "kept"
    assert len(keep_records(out, kept)) == len(R.METHODS)
    assert not list(kept.rglob("*.safetensors"))
    again = [a if a != str(out) else str(tmp_path / "again") for a in args]
    assert cli(*again, "--reuse", str(kept)) == 0
    assert (tmp_path / "again" / "cifar10_mae" / "distill" / "seed0").is_symlink()
    second = json.loads((tmp_path / "again" / "results.json").read_text())
    assert second["rows"] == report["rows"]
    # without the ensemble's record, weightless records of its members are not taken: those two
    # are trained again (their links from the last invocation removed, the records kept), the rest
    # still taken, and the ensemble is evaluated
    (kept / "cifar10_mae" / "distill" / "seed0" / "ensemble.json").unlink()
    capsys.readouterr()
    assert cli(*again, "--reuse", str(kept), "--plan") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("5 runs: 3 finished, 0 taken from finished runs, 0 to resume, 2 ")
    told = [line for line in lines if "holds no weights, which the report evaluates" in line]
    assert [line.split(":")[0] for line in told] == [
        "cifar10_mae/finetune/seed0",
        "cifar10_mae/distill/seed0",
    ]
    assert cli(*again, "--reuse", str(kept)) == 0
    linked = {p.relative_to(tmp_path / "again") for p in (tmp_path / "again").rglob("seed0")}
    assert {p for p in linked if (tmp_path / "again" / p).is_symlink()} == {
        Path("scratch/seed0"),
        Path("cifar10_mae/copy/seed0"),
        Path("cifar10_mae/feature_distill/seed0"),
    }
    for method in ("finetune", "distill"):
        assert (kept / "cifar10_mae" / method / "seed0" / "summary.json").is_file()
        assert list((tmp_path / "again" / "cifar10_mae" / method / "seed0").rglob("*.safetensors"))
    retrained = json.loads((tmp_path / "again" / "results.json").read_text())
    assert retrained["rows"][-1]["method"] == "ensemble" and retrained["no_ensemble_seeds"] == []
    # --finished-only trains nothing: an ensemble with no record and no weights is left out and
    # said so, not guessed
    third = [a if a != str(out) else str(tmp_path / "third") for a in args]
    with caplog.at_level("WARNING", logger="attnxfer.reproduce"):
        assert cli(*third, "--reuse", str(kept), "--finished-only") == 0
    assert "seed 0: no ensemble" in caplog.text and "needs both models' checkpoints" in caplog.text
    report = json.loads((tmp_path / "third" / "results.json").read_text())
    assert [r["method"] for r in report["rows"]] == list(R.METHODS)
    assert report["no_ensemble_seeds"] == [0]
    md = (tmp_path / "third" / "results.md").read_text()
    assert "No ensemble for seed(s) 0" in md
    assert report["complete"] and "finished so far" not in md  # every run of the table is there
    # a record a run gained after it was kept is added; nothing else is written again
    assert keep_records(out, kept) == [kept / "cifar10_mae" / "distill" / "seed0"]
    assert (kept / "cifar10_mae" / "distill" / "seed0" / "ensemble.json").is_file()
    assert keep_records(out, kept) == []

    # --finished-only: the table as far as it has come, nothing trained
    assert cli(*args, "--seeds", "0,1", "--finished-only") == 0
    partial = json.loads((out / "results.json").read_text())
    assert partial["finished_only"] and not partial["complete"] and partial["seeds"] == [0, 1]
    assert [r["seeds"] for r in partial["rows"]] == [[0]] * (len(R.METHODS) + 1)
    assert [r["mean"] for r in partial["rows"]] == [r["mean"] for r in report["rows"]] + [
        rows["ensemble"]["mean"]
    ]
    assert not (out / "scratch" / "seed1").exists()
    md = (out / "results.md").read_text()
    assert "| distill (1 of 2 seeds) |" in md and "finished so far" in md
    # a row without scratch and fine-tune has no gap, and no ensemble without its pair
    some = tmp_path / "some" / "cifar10_mae" / "distill"
    keep_records(out / "cifar10_mae" / "distill", some)
    only = [a if a != str(out) else str(tmp_path / "only") for a in args]
    assert cli(*only, "--reuse", str(tmp_path / "some"), "--finished-only") == 0
    (row,) = json.loads((tmp_path / "only" / "results.json").read_text())["rows"]
    assert row["method"] == "distill" and row["gap_recovered"] is None
    assert not (tmp_path / "only").exists() or not any((tmp_path / "only").rglob("summary.json"))
    empty = [a if a != str(out) else str(tmp_path / "empty") for a in args]
    assert cli(*empty, "--finished-only") == 2
    # a row's gap is against scratch and fine-tune on its own seeds: with a (made-up) seed 1 of
    # scratch and fine-tune only, the distilled row (seed 0) keeps its seed-0 gap
    for method, top1 in (("scratch", 5.0), ("finetune", 95.0)):
        seed1 = tmp_path / "seed1" / method / "seed1"
        run = out / (method if method == "scratch" else f"cifar10_mae/{method}") / "seed0"
        keep_records(run, seed1)
        config = seed1 / "config.yaml"
        config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
        summary = json.loads((seed1 / "summary.json").read_text())
        (seed1 / "summary.json").write_text(json.dumps({**summary, "val_top1": top1}))
    assert cli(*args, "--seeds", "0,1", "--reuse", str(tmp_path / "seed1"), "--finished-only") == 0
    mixed = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert mixed["scratch"]["seeds"] == [0, 1] and mixed["distill"]["seeds"] == [0]
    assert mixed["distill"]["gap_recovered"] == pytest.approx(rows["distill"]["gap_recovered"])
    # ... and a row with a seed that scratch and fine-tune lack has its gap on the seeds they
    # share, named: never one seed's student against another seed's references
    lone = tmp_path / "lone" / "cifar10_mae" / "copy" / "seed1"
    keep_records(out / "cifar10_mae" / "copy" / "seed0", lone)
    config = lone / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    summary = json.loads((lone / "summary.json").read_text())
    (lone / "summary.json").write_text(json.dumps({**summary, "val_top1": 99.0}))
    shutil.rmtree(tmp_path / "seed1" / "scratch")
    lonely = [*args, "--seeds", "0,1", "--reuse", str(tmp_path / "lone"), "--finished-only"]
    assert cli(*lonely) == 0
    mixed = {r["method"]: r for r in json.loads((out / "results.json").read_text())["rows"]}
    assert mixed["copy"]["seeds"] == [0, 1] and mixed["copy"]["gap_seeds"] == [0]
    assert mixed["copy"]["gap_recovered"] == pytest.approx(rows["copy"]["gap_recovered"])
    assert f"| {rows['copy']['gap_recovered']:.0f}% (seed 0) |" in (out / "results.md").read_text()


def test_kept_records_follow_the_run_a_run_trained_again_replaces_them(tmp_path):
    def run(root, top1, ensemble=None):
        folder = root / "distill" / "seed0"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.yaml").write_text("run:\n  seed: 0\n")
        (folder / "summary.json").write_text(json.dumps({"val_top1": top1}))
        if ensemble is not None:
            (folder / "ensemble.json").write_text(json.dumps({"top1": ensemble}))
        return folder

    live, kept = tmp_path / "runs", tmp_path / "kept"
    folder = run(live, 60.0, ensemble=61.0)
    assert keep_records(live, kept) == [kept / "distill" / "seed0"]
    assert keep_records(live, kept) == []  # nothing changed, nothing written
    # trained again, with no ensemble yet: the old ensemble described the old weights
    (folder / "ensemble.json").unlink()
    run(live, 62.0)
    assert keep_records(live, kept) == [kept / "distill" / "seed0"]
    assert json.loads((kept / "distill" / "seed0" / "summary.json").read_text()) == {
        "val_top1": 62.0
    }
    assert not (kept / "distill" / "seed0" / "ensemble.json").exists()
    # an ensemble evaluated later is added, and one evaluated again replaces it
    for top1 in (63.0, 64.0):
        (folder / "ensemble.json").write_text(json.dumps({"top1": top1}))
        assert keep_records(live, kept) == [kept / "distill" / "seed0"]
        kept_ensemble = json.loads((kept / "distill" / "seed0" / "ensemble.json").read_text())
        assert kept_ensemble == {"top1": top1}
    # the same run without a record it once had (a live copy that lost it) removes nothing
    (folder / "ensemble.json").unlink()
    assert keep_records(live, kept) == []
    assert (kept / "distill" / "seed0" / "ensemble.json").is_file()


def test_reproduce_shift_tiny(tmp_path, monkeypatch, teacher_file, capsys):
    """--shift: the second teacher's rows, each row's distance to its teacher's fine-tuning, and
    the fine-tuned and distilled models of both teachers on corrupted test sets (here two noisy
    sets of random images in place of CIFAR-10-C); records without weights but with that
    evaluation are taken, and one without it is trained again. Each run's measurements are
    recorded as soon as it has finished, before the report: a session that ends first (here the
    report fails) leaves records that stand without the weights."""
    import numpy as np
    from PIL import Image

    from attnxfer import prepare
    from attnxfer import reproduce as R

    (tmp_path / "tiny").mkdir()
    _tiny_tier(tmp_path, monkeypatch, teacher_file, tiny_teacher_file(tmp_path / "tiny"))
    rng = np.random.default_rng(0)
    corrupted = []
    for name in ("gaussian_noise-3", "gaussian_noise-5"):
        for label in range(10):
            folder = tmp_path / "c" / name / "test" / str(label)
            folder.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
        corrupted.append(tmp_path / "c" / name)
    monkeypatch.setattr(prepare, "cifar10_c", lambda cache: corrupted)
    out = tmp_path / "shift"
    args = ["reproduce", "--shift", "data.train_subset=128", *TINY_STUDENT[1:]]

    def session_ends(*a, **k):
        raise AttnxferError("the session ended before the report")

    with monkeypatch.context() as m:
        m.setattr(R, "_shift", session_ends)
        assert cli(*args, "--out", str(out)) == 2  # the one-line error
    records = [*out.rglob("corruptions.json"), *out.rglob("ensemble.json")]
    assert sorted(str(p.relative_to(out)) for p in records) == [
        "cifar10_mae/distill/seed0/corruptions.json",
        "cifar10_mae/distill/seed0/ensemble.json",
        "cifar10_mae/finetune/seed0/corruptions.json",
        "tiny_mae/distill/seed0/corruptions.json",
        "tiny_mae/finetune/seed0/corruptions.json",
    ]
    assert cli(*args, "--out", str(out)) == 0  # trains nothing: the report
    shift = json.loads((out / "results.json").read_text())["shift"]
    rows = {(r["teacher"], r["method"]): r for r in shift["rows"]}
    assert sorted(rows) == sorted(
        (t, m) for t in ("cifar10_mae", "tiny_mae") for m in ("finetune", "copy", "distill")
    )
    for (teacher, _), row in rows.items():
        finetune = rows[teacher, "finetune"]["mean"]
        assert row["gap_to_finetune"] == pytest.approx(row["mean"] - finetune)
    assert shift["sets"] == ["gaussian_noise-3", "gaussian_noise-5"]
    assert sorted(shift["corruptions"]) == [
        f"{t}/{m}" for t in ("cifar10_mae", "tiny_mae") for m in ("distill", "finetune")
    ]
    for result in shift["corruptions"].values():
        assert sorted(result["severity"]) == ["3", "5"]
        assert all(0 <= v["mean"] <= 100 for v in result["per_set"].values())
    for member in ("cifar10_mae/finetune", "tiny_mae/distill"):
        assert (out / member / "seed0" / "corruptions.json").is_file()

    # kept without weights, with their corrupted-set top-1: every run is taken
    kept = tmp_path / "kept"
    keep_records(out, kept)
    assert not list(kept.rglob("*.safetensors"))
    again = tmp_path / "again"
    capsys.readouterr()
    assert cli(*args, "--out", str(again), "--reuse", str(kept), "--plan") == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("8 runs: 0 finished, 8 taken")
    # one without it must be trained again: the corrupted sets need its model
    (kept / "tiny_mae" / "distill" / "seed0" / "corruptions.json").unlink()
    assert cli(*args, "--out", str(again), "--reuse", str(kept), "--plan") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("8 runs: 0 finished, 7 taken from finished runs, 0 to resume, 1 ")
    told = [line.split(":")[0] for line in lines if "holds no weights, which the report" in line]
    assert told == ["tiny_mae/distill/seed0"]
    assert cli(*args, "--out", str(again), "--reuse", str(kept)) == 0
    assert not (again / "tiny_mae" / "distill" / "seed0").is_symlink()
    assert (again / "cifar10_mae" / "distill" / "seed0").is_symlink()
    assert json.loads((again / "results.json").read_text())["shift"]["sets"] == shift["sets"]


def test_gap_and_lead_stand_on_the_seeds_every_row_has():
    from attnxfer.report import gap_on_shared_seeds, lead_on_shared_seeds

    scratch, finetune = {0: 60.0, 1: 62.0, 2: 70.0}, {0: 80.0, 1: 82.0}
    distill = {0: 70.0, 1: 74.0, 3: 90.0}  # seed 2 has no distilled run, seed 3 no references
    assert gap_on_shared_seeds(distill, scratch, finetune) == (pytest.approx(55.0), [0, 1])
    assert lead_on_shared_seeds(distill, scratch) == (pytest.approx(11.0), [0, 1])
    assert lead_on_shared_seeds({2: 71.0}, scratch) == (pytest.approx(1.0), [2])
    assert gap_on_shared_seeds({2: 71.0}, scratch, finetune) == (None, [])
    assert lead_on_shared_seeds({5: 1.0}, scratch) == (None, [])


def test_an_ensemble_pairs_each_seeds_and_lengths_finetune_and_distill_of_the_main_teacher():
    from attnxfer import curve
    from attnxfer import reproduce as R

    tier = R.TIERS["cpu"]
    table = R._cells(tier, "t", "cifar10_mae", R.METHODS, [0, 1], [])
    shift = R._cells(tier, "t", "tiny_mae", R.SHIFT_METHODS, [0, 1], [])
    pairs = R._ensemble_pairs(table + shift)
    assert [(f.name, d.name) for f, d in pairs] == [
        (f"cifar10_mae/finetune/seed{s}", f"cifar10_mae/distill/seed{s}") for s in (0, 1)
    ]
    cells = [curve.curve_cell(tier, "t", e, m, 0) for e in (0.4, 2) for m in curve.CURVE_METHODS]
    assert [(f.name, d.name) for f, d in R._ensemble_pairs(cells)] == [
        (f"e{e}/finetune/seed0", f"e{e}/distill/seed0") for e in ("0.4", "2")
    ]


def test_schedule_curve_tiny(tmp_path, monkeypatch, teacher_file, capsys):
    """Every method at every length, a share of an epoch as a subset, the gap per length, the
    files; a second invocation takes identical finished runs instead of training them."""
    from attnxfer import reproduce as R
    from attnxfer.curve import CURVE_METHODS

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("data: {name: digits, scale: [0.6, 1.0], hflip: 0.0}\n")
    tier = R.Tier(str(recipe), str(teacher_file), str(teacher_file), (0,), "test", 1000)
    monkeypatch.setitem(R.TIERS, "cpu", tier)
    out = tmp_path / "curve"
    args = ["reproduce", "--curve", "0.1,1", *TINY_STUDENT[1:], "optim.lr=1e-3"]
    assert cli(*args, "--out", str(out)) == 0
    report = json.loads((out / "schedule_curve.json").read_text())
    assert [p["epochs"] for p in report["points"]] == [0.1, 1.0]
    short, full = report["points"]
    assert short["steps"] == 100 // 32 and full["steps"] > short["steps"]  # 100 images
    for p in report["points"]:
        assert list(p["methods"]) == list(CURVE_METHODS)
        scratch, finetune, distill = (
            p["methods"][k]["mean"] for k in ("scratch", "finetune", "distill")
        )
        if finetune == scratch:  # no gap to recover
            assert p["gap_recovered"]["distill"] is None
        else:
            expected = 100 * (distill - scratch) / (finetune - scratch)
            assert p["gap_recovered"]["distill"] == pytest.approx(expected)
        # each method's points above scratch, beside its share of the gap
        assert sorted(p["lead_over_scratch"]) == sorted(CURVE_METHODS[1:])
        assert p["lead_over_scratch"]["distill"]["points"] == pytest.approx(distill - scratch)
        assert p["lead_over_scratch"]["finetune"]["seeds"] == [0]
        # the ensemble of the length's fine-tuned and distilled students, against fine-tuning
        ensemble = json.loads((out / f"e{p['epochs']:g}/distill/seed0/ensemble.json").read_text())
        assert p["ensemble"]["runs"] == [ensemble["top1"]]
        assert ensemble["members_top1"] == [finetune, distill]
        assert p["ensemble_minus_finetune"]["mean"] == pytest.approx(ensemble["top1"] - finetune)
    assert (out / "schedule_curve.png").stat().st_size > 0
    assert "| 0.1 |" in (out / "schedule_curve.md").read_text()
    assert "ensemble - fine-tune" in (out / "schedule_curve.md").read_text()
    # --plan of a longer curve: the finished lengths, and the commands of the new one
    capsys.readouterr()
    longer = ["reproduce", "--curve", "0.1,1,2", *TINY_STUDENT[1:], "optim.lr=1e-3"]
    assert cli(*longer, "--out", str(out), "--plan") == 0
    said = capsys.readouterr().out.splitlines()
    assert "e1/distill/seed0: finished" in said and "e2/distill/seed0: to train" in said
    assert said[-1].startswith("12 runs: 8 finished, 0 taken from finished runs, 0 to resume, 4 ")
    assert not (out / "e2").exists()

    again = tmp_path / "again"
    assert cli(*args, "--seeds", "0", "--out", str(again), "--reuse", str(out)) == 0
    assert all((again / "e1" / m / "seed0").is_symlink() for m in CURVE_METHODS)
    second = json.loads((again / "schedule_curve.json").read_text())
    assert second["points"] == report["points"]
    assert cli(*args, "--seeds", "0", "--out", str(again), "--finished-only") == 0
    whole = json.loads((again / "schedule_curve.json").read_text())
    assert whole["complete"] and "not finished" not in (again / "schedule_curve.md").read_text()

    # --finished-only: the curve as far as it has come, nothing trained
    kept = tmp_path / "kept"
    keep_records(out, kept)
    (kept / "e1" / "finetune" / "seed0" / "summary.json").unlink()
    partial = tmp_path / "partial"
    assert cli(*args, "--out", str(partial), "--reuse", str(kept), "--finished-only") == 0
    assert not list(partial.rglob("config.yaml"))  # no run started
    third = json.loads((partial / "schedule_curve.json").read_text())
    assert third["points"][0] == report["points"][0] and not third["complete"]
    assert "finetune" not in third["points"][1]["methods"]
    assert "ensemble" not in third["points"][1]
    assert third["points"][1]["gap_recovered"] == {"copy": None, "distill": None}
    assert "not finished yet" in (partial / "schedule_curve.md").read_text()
    assert cli(*args, "--out", str(tmp_path / "none"), "--finished-only") == 2
    # records without weights and without an ensemble record: the point has no ensemble
    (kept / "e0.1" / "distill" / "seed0" / "ensemble.json").unlink()
    assert cli(*args, "--out", str(partial), "--reuse", str(kept), "--finished-only") == 0
    fourth = json.loads((partial / "schedule_curve.json").read_text())
    assert "ensemble" not in fourth["points"][0]
    assert fourth["points"][0]["methods"] == report["points"][0]["methods"]
    # a (made-up) seed 1 of the 1-epoch distilled student alone: its cell stands on both seeds,
    # its gap on seed 0, the one where scratch and fine-tune have finished too
    seed1 = tmp_path / "seed1" / "e1" / "distill" / "seed1"
    keep_records(out / "e1" / "distill" / "seed0", seed1)
    (seed1 / "ensemble.json").unlink()
    config = seed1 / "config.yaml"
    config.write_text(config.read_text().replace("seed: 0", "seed: 1"))
    summary = json.loads((seed1 / "summary.json").read_text())
    (seed1 / "summary.json").write_text(json.dumps({**summary, "val_top1": 99.0}))
    two = ["--seeds", "0,1", "--reuse", str(out), "--reuse", str(tmp_path / "seed1")]
    assert cli(*args, "--out", str(partial), *two, "--finished-only") == 0
    mixed = json.loads((partial / "schedule_curve.json").read_text())["points"][1]
    assert mixed["methods"]["distill"]["seeds"] == [0, 1]
    assert mixed["methods"]["distill"]["runs"] == [full["methods"]["distill"]["mean"], 99.0]
    assert mixed["gap_seeds"]["distill"] == [0]
    assert mixed["gap_recovered"]["distill"] == full["gap_recovered"]["distill"]
    assert mixed["ensemble"] == full["ensemble"]  # seed 1 has no fine-tuned student
    md = (partial / "schedule_curve.md").read_text()
    assert "| 1 | " in md and "(1 seed) |" in md and "% (seed 0) |" in md


@pytest.mark.parametrize("bad", ["2.5", "0", "-1"])
def test_curve_lengths_are_whole_epochs_or_a_share_of_one(bad, tmp_path, capsys):
    assert cli("reproduce", "--curve", bad, "--out", str(tmp_path / "c")) == 2
    assert "is not valid: use whole epochs" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_reports_name_their_teacher():
    """A curve or table from another teacher (--teacher) must not be titled as the MAE one."""
    from attnxfer.reproduce import TIERS, teacher_label

    tier = TIERS["cpu-long"]
    assert teacher_label(tier, tier.teacher) == "MAE teacher"
    assert teacher_label(tier, "../data/vit_sup.safetensors") == "teacher vit_sup"
    assert teacher_label(tier, "teachers/dino-d128/model.safetensors") == "teacher dino-d128"


def test_plot_colours_stay_distinct_beyond_ten_series():
    from matplotlib.colors import to_rgba

    from attnxfer.report import colour

    for n in (3, 10, 12, 20):
        rgba = {to_rgba(colour(i, n)) for i in range(n)}
        assert len(rgba) == n
