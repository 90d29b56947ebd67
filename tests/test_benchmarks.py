"""The benchmark scripts run (small, on the CPU) and report what they claim to."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_correctness_script_on_cpu(tmp_path):
    """bf16 fused against float32 eager: within a few bf16 roundoffs, on the CPU."""
    bench = _load("gpu_correctness")
    out = tmp_path / "c.json"
    args = [
        "--device",
        "cpu",
        "--model",
        "vit_tiny_patch16_224",
        "--sizes",
        "32",
        "--out",
        str(out),
    ]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    assert [r["mode"] for r in report["rows"]] == ["copy", "distill"]
    for r in report["rows"]:
        assert 0 < r["logits"] < 10 * bench.BF16_EPS
        assert 0 < r["grad_total"] < 10 * bench.BF16_EPS
        floor = r["eager_bf16"]  # bf16 alone, through the eager path
        assert 0 < floor["logits"] < 10 * bench.BF16_EPS and floor["grad_worst_name"]
    assert 0 < report["rows"][1]["loss"] < 10 * bench.BF16_EPS


def test_ablations_script_runs_its_sweeps_and_refuses_unknown_names(tmp_path, teacher_file):
    """benchmarks/ablations.sh on a tiny recipe: each named ablation becomes one results table."""
    import os
    import subprocess
    import sys

    from helpers import TINY_STUDENT

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_yaml_of(["data.train_subset=128", *TINY_STUDENT[1:]]))
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "RECIPE": str(recipe),
        "TEACHER": str(teacher_file),
        "SEEDS": "0",
        "OUT": str(tmp_path / "ablations"),
    }
    script = [str(BENCH / "ablations.sh")]

    def run(*names):
        return subprocess.run(["bash", *script, *names], env=env, capture_output=True, text=True)

    bad = run("nope")
    assert bad.returncode == 2 and "unknown ablation nope" in bad.stderr
    done = run("features")
    assert done.returncode == 0, done.stderr[-2000:]
    features = json.loads((tmp_path / "ablations/features/results.json").read_text())
    assert [r["transfer.mode"] for r in features["rows"]] == ["distill", "feature_distill"]
    assert features["title"].startswith("Attention distillation against feature")
    runs = sorted((tmp_path / "ablations").rglob("summary.json"))
    env["PLAN"] = "1"  # each cell's command, nothing run
    plan = run("what_copy")
    assert plan.returncode == 0, plan.stderr[-2000:]
    commands = [line for line in plan.stdout.splitlines() if line.startswith("  attnxfer train")]
    modes = [c.split("transfer.mode=")[1].split()[0] for c in commands]
    assert modes == ["copy", "copy_q", "copy_k", "copy_v"]
    assert all("optim.layer_decay=0.75" in c and str(teacher_file) in c for c in commands)
    assert not (tmp_path / "ablations/what_copy").exists()
    plan = run("copy_decay")  # a diagnosis: copy with and without the layer-wise lr decay
    assert plan.returncode == 0, plan.stderr[-2000:]
    commands = [line for line in plan.stdout.splitlines() if line.startswith("  attnxfer train")]
    decays = [c.split("optim.layer_decay=")[1].split()[0] for c in commands]
    assert decays == ["0.75", "null"] and all("transfer.mode=copy" in c for c in commands)
    plan = run("copy_min_lr")  # a diagnosis: copy with the released copy recipe's lr floor
    assert plan.returncode == 0, plan.stderr[-2000:]
    commands = [line for line in plan.stdout.splitlines() if line.startswith("  attnxfer train")]
    floors = [c.split("optim.min_lr=")[1].split()[0] for c in commands]
    assert floors == ["1e-6", "2.5e-4"]
    assert all("transfer.mode=copy" in c and "optim.layer_decay=0.75" in c for c in commands)
    del env["PLAN"]
    env["FINISHED_ONLY"] = "1"  # tabulates the finished cells, trains none
    again = run("features")
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "ablations/features/results.json").read_text())["finished_only"]
    assert sorted((tmp_path / "ablations").rglob("summary.json")) == runs


def test_ablations_at_40_epochs_take_finished_cells_from_the_records(tmp_path):
    """benchmarks/ablations_e40.sh: its copy_decay row with the decay is the schedule curve's
    committed 40-epoch copy student (the same resolved config), the row without it a committed
    record of its own, so seed 0 trains nothing; a new seed trains both rows on the curve's
    40-epoch schedule."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "RUNS": str(tmp_path),
        "PLAN": "1",
    }
    script = str(BENCH / "ablations_e40.sh")

    def plan(seeds):
        done = subprocess.run(
            ["bash", script], env={**env, "SEEDS": seeds}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr[-2000:]
        commands = [
            line for line in done.stdout.splitlines() if line.startswith("  attnxfer train")
        ]
        return done.stdout, commands

    out, commands = plan("0")
    kept = "docs/results/runs"
    assert f"layer_decay=0.75/seed0: taken from {kept}/schedule-curve/e40/copy/seed0" in out
    nodecay = "ablations-e40/copy_decay/layer_decay=null/seed0"
    assert f"layer_decay=null/seed0: taken from {kept}/{nodecay}" in out
    assert commands == []
    out, commands = plan("7")  # a seed no one has trained
    assert [c.split("optim.layer_decay=")[1].split()[0] for c in commands] == ["0.75", "null"]
    assert all("optim.epochs=40 " in c for c in commands)
    assert f"run.output={tmp_path}/ablations-e40/copy_decay/layer_decay=null/seed7" in commands[1]


def _yaml_of(overrides: list[str]) -> str:
    """``section.key=value`` overrides as YAML sections (values written as given)."""
    sections: dict[str, list[str]] = {}
    for item in overrides:
        key, value = item.split("=", 1)
        section, name = key.split(".", 1)
        sections.setdefault(section, []).append(f"  {name}: {value}")
    return "".join(f"{s}:\n" + "\n".join(lines) + "\n" for s, lines in sections.items())


def test_ablations_report_gives_each_row_its_share_of_the_gap(tmp_path):
    report = _load("ablations_report")
    main = {
        "command": "attnxfer reproduce",
        "rows": [{"method": "scratch", "mean": 30.0}, {"method": "finetune", "mean": 40.0}],
    }
    (tmp_path / "main.json").write_text(json.dumps(main))
    heads = tmp_path / "runs" / "heads"
    heads.mkdir(parents=True)
    rows = [
        {"transfer.heads": "1", "mean": 32.5, "std": 0.5, "runs": [32.0, 33.0]},
        {"transfer.heads": "all", "mean": 41.0, "std": 0.0, "runs": [41.0, 41.0]},
    ]
    rows[1]["reused_from"] = ["a", "b"]
    # a cell taken from the ablation's own kept record is no main-table run
    rows.append({"transfer.heads": "2", "mean": 35.0, "std": 0.0, "runs": [35.0], "seeds": [0]})
    rows[2]["reused_from"] = ["kept/runs/heads/heads=2/seed0"]
    # still training (--finished-only): heads 2 lacks seed 1, heads 3 has no finished cell
    grid = {"transfer.heads": ["1", "2", "3", "all"]}
    result = {"title": "heads", "grid": grid, "fixed": [], "rows": rows, "hardware": "CPU X"}
    result["seeds"] = [0, 1]
    result["trained_on"] = [
        {"hardware": "CPU Y", "precision": "bfloat16", "runs": 5, "seconds": 60}
    ]
    (heads / "results.json").write_text(json.dumps({**result, "command": "attnxfer sweep"}))
    out = tmp_path / "out" / "ablations"
    args = ["--runs", str(tmp_path / "runs"), "--main", str(tmp_path / "main.json")]
    assert report.main([*args, "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| 1 | 32.50 ± 0.50 | 25% | 2 |" in text
    assert "| all (main-table runs) | 41.00 ± 0.00 | 110% | 2 |" in text
    assert "| 2 | 35.00 ± 0.00 | 50% | 1 |" in text
    rerun = "`SEEDS=0,1 bash benchmarks/ablations.sh heads`"  # the command that trains them
    assert f"Rows still to train: 2 (seed 1); 3 ({rerun})." in text
    assert "Trained on: CPU Y" in text and "Report written on: CPU X" in text
    assert "`bash benchmarks/ablations.sh layers`" in text  # not run yet: its command
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [a["name"] for a in saved["ablations"]] == ["heads"]
    assert out.with_suffix(".png").stat().st_size > 0


def test_ablations_report_takes_its_gap_from_a_schedule_curve_point(tmp_path):
    """Ablations trained at one length of the curve are measured against that length's scratch
    and fine-tune students; a curve without --length, or a length it lacks, is refused."""
    report = _load("ablations_report")

    def point(epochs, steps, scratch, finetune):
        methods = {"scratch": {"mean": scratch}, "finetune": {"mean": finetune}}
        return {"epochs": epochs, "steps": steps, "methods": methods}

    curve = {"command": "attnxfer reproduce --curve 2,5", "points": [point(2.0, 780, 40.0, 50.0)]}
    curve["points"].append(point(5.0, 1950, 50.0, 70.0))
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    layers = tmp_path / "runs" / "layers"
    layers.mkdir(parents=True)
    rows = [{"transfer.layers": "first:2", "mean": 55.0, "std": 0.0, "runs": [55.0]}]
    grid = {"transfer.layers": ["first:2"]}
    result = {"title": "layers", "grid": grid, "fixed": [], "rows": rows}
    (layers / "results.json").write_text(json.dumps({**result, "command": "attnxfer sweep"}))
    out = tmp_path / "out"
    args = ["--runs", str(tmp_path / "runs"), "--main", str(tmp_path / "curve.json")]
    args += ["--out", str(out)]
    rerun = ["--rerun", "bash benchmarks/ablations_e5.sh"]
    assert report.main([*args, "--length", "5", *rerun]) == 0
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# The paper's ablations at small scale (CIFAR-10, 1950 steps per")
    assert "| first:2 | 55.00 ± 0.00 | 25% | 1 |" in text
    assert "scratch 50.00" in text and "`attnxfer reproduce --curve 2,5` at 1950 steps" in text
    assert "- heads: `bash benchmarks/ablations_e5.sh heads`" in text
    with pytest.raises(SystemExit, match="pass --length"):
        report.main(args)
    with pytest.raises(SystemExit, match="it has 2, 5"):
        report.main([*args, "--length", "10"])
    # a point on 3 seeds, ablations on seed 0: each row against seed 0's scratch and fine-tune,
    # not against the 3 seeds' means
    three = {"seeds": [0, 1, 2], "runs": [50.0, 60.0, 70.0], "mean": 60.0}
    tuned = {"seeds": [0, 1, 2], "runs": [70.0, 80.0, 90.0], "mean": 80.0}
    curve["points"].append({"epochs": 10.0, "steps": 3900, "methods": {}})
    curve["points"][-1]["methods"] = {"scratch": three, "finetune": tuned}
    (tmp_path / "curve.json").write_text(json.dumps(curve))
    for r in rows:
        r["seeds"] = [0]
    (layers / "results.json").write_text(json.dumps({**result, "command": "attnxfer sweep"}))
    assert report.main([*args, "--length", "10", *rerun]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| first:2 | 55.00 ± 0.00 | 25% | 1 |" in text  # (55 - 50) / (70 - 50), seed 0's
    assert "(scratch 50.00,\nfine-tune 70.00 on seed 0, the rows', from" in text
    saved = json.loads(out.with_suffix(".json").read_text())
    assert saved["ablations"][0]["rows"][0]["gap_seeds"] == [0]


def test_throughput_script_measures_every_part_and_writes_its_report(tmp_path, teacher_file):
    """benchmarks/throughput.py on a tiny recipe: step, data and end to end for two settings,
    interleaved; the report has the mode's rows and the speed-up over the first setting (one
    mode: each end-to-end run is a process of its own, and modes add nothing to the plumbing)."""
    import subprocess
    import sys

    from helpers import ENV, TINY_STUDENT

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_yaml_of(["data.name=digits", *TINY_STUDENT]))
    out = tmp_path / "throughput"
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "throughput.py"),
            "--config",
            str(recipe),
            "--teacher",
            str(teacher_file),
            "--modes",
            "distill",
            "--rounds",
            "2",
            "--steps",
            "2",
            "--e2e-steps",
            "3",
            "--out",
            str(out),
        ],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    rows = {(r["mode"], r["setting"]): r for r in report["rows"]}
    assert set(rows) == {("distill", s) for s in ("before", "after")}
    for r in rows.values():
        assert all(len(r["runs"][k]) == 2 and r[k] > 0 for k in ("step", "data", "e2e", "steady"))
        assert len(r["e2e_over_step"]["rounds"]) == 2
    assert (
        "e2e_speedup" in rows["distill", "after"] and "e2e_speedup" not in rows["distill", "before"]
    )
    text = out.with_suffix(".md").read_text()
    assert "| distill | after |" in text and "Hardware:" in text and "Command:" in text


def test_attention_crossover_script_reports_a_ratio_per_token_count():
    import subprocess
    import sys

    args = ["--tokens", "9,17", "--batch", "2", "--heads", "2", "--dim", "8", "--steps", "1"]
    done = subprocess.run(
        [sys.executable, str(BENCH / "attention_crossover.py"), *args, "--rounds", "2"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = done.stdout.strip().splitlines()[-2:]
    assert [line.split()[0] for line in table] == ["9", "17"]
    assert all(float(line.split()[3]) > 0 for line in table)  # fused/eager, median of rounds


def test_diagnosis_report_shares_each_teachers_own_gap(tmp_path):
    report = _load("diagnosis_report")
    mae, sup = "teachers/m.safetensors", "../shared/data/vit-checkpoints/s.safetensors"

    def sweep(name, grid, rows, fixed):
        folder = tmp_path / "runs" / name
        folder.mkdir(parents=True)
        result = {"grid": grid, "rows": rows, "fixed": fixed, "train_seconds": 60.0}
        (folder / "results.json").write_text(json.dumps({**result, "hardware": "cpu"}))

    def row(mean, **setting):
        return {**setting, "mean": mean, "std": 0.0, "runs": [mean]}

    modes = {"transfer.mode": ["scratch", "distill"]}
    sweep(
        "baseline",
        modes,
        [row(30.0, **{"transfer.mode": "scratch"}), row(35.0, **{"transfer.mode": "distill"})],
        [f"teacher.source={mae}"],
    )
    sweep(
        "finetune",
        {"teacher.source": [mae, sup]},
        [row(40.0, **{"teacher.source": mae}), row(60.0, **{"teacher.source": sup})],
        ["transfer.mode=finetune"],
    )
    sweep(
        "supervised",
        modes,
        [row(20.0, **{"transfer.mode": "scratch"}), row(50.0, **{"transfer.mode": "distill"})],
        [f"teacher.source={sup}"],
    )
    # a longer pre-trained MAE teacher: its own fine-tune row, the MAE scratch row
    longer = tmp_path / "e50" / "model.safetensors"
    longer.parent.mkdir()
    (longer.parent / "model.json").write_text(json.dumps({"pretrain": {"epochs": 50}}))
    src = {"teacher.source": str(longer)}
    sweep(
        "pretraining",
        {"teacher.source": [str(longer)]},
        [row(38.0, **src)],
        ["transfer.mode=distill"],
    )
    sweep(
        "pretraining_ft",
        {"teacher.source": [str(longer)]},
        [row(50.0, **src)],
        ["transfer.mode=finetune"],
    )
    out = tmp_path / "diagnosis"
    assert report.main(["--runs", str(tmp_path / "runs"), "--out", str(out)]) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    gaps = {(r["teacher"], r["mode"]): r["gap_percent"] for r in rows}
    assert gaps == {
        ("mae", "scratch"): 0.0,
        ("mae", "distill"): 50.0,
        ("mae", "finetune"): 100.0,
        ("supervised", "finetune"): 100.0,
        ("supervised", "scratch"): 0.0,
        ("supervised", "distill"): 75.0,
        ("mae 50ep", "distill"): 40.0,
        ("mae 50ep", "finetune"): 100.0,
    }
    assert (
        "| supervised | distill | mode=distill | 50.00 ± 0.00 | 1 | 75% |"
        in out.with_suffix(".md").read_text()
    )


def test_compare_tables_gives_welch_t_per_shared_row(tmp_path):
    bench = _load("compare_tables")
    before = {"rows": [{"method": "a", "mean": 2.0, "std": 1.0, "runs": [1.0, 2.0, 3.0]}]}
    after = {
        "rows": [
            {"method": "a", "mean": 4.0, "std": 1.0, "runs": [3.0, 4.0, 5.0]},
            {"method": "b", "mean": 9.0, "std": 0.0, "runs": [9.0, 9.0]},
        ]
    }
    rows = bench.compare(before, after)
    assert [r["row"] for r in rows] == ["a"]
    assert rows[0]["difference"] == 2.0
    assert abs(rows[0]["t"] - 2.0 / (2 / 3) ** 0.5) < 1e-12  # se = sqrt(1/3 + 1/3)


# A stand-in with the reference implementation's interface (constructor keywords, a
# ``teacher``/``student`` pair, ``(logits, loss)`` from distillation in training): the plumbing of
# ``step_cost.py --reference`` is tested without the reference's own code.
FAKE_REFERENCE = """
import torch
from torch import nn


class _ViT(nn.Module):
    def __init__(self, img_size, patch_size, embed_dim, depth, num_heads, mlp_ratio, qkv_bias,
                 norm_layer, num_classes, global_pool):
        super().__init__()
        self.embed = nn.Conv2d(3, embed_dim, patch_size, patch_size)
        self.norm = norm_layer(embed_dim)
        self.head = nn.Linear(embed_dim, num_classes)
        self.depth = depth

    def forward(self, x):
        return self.head(self.norm(self.embed(x).flatten(2).mean(-1)))


class DualVisionTransformer(nn.Module):
    calls = []

    def __init__(self, mode="distill", drop_path_rate=0, teacher_kwargs=None,
                 student_kwargs=None, end_layer=-3):
        super().__init__()
        assert end_layer == -2 and teacher_kwargs["depth"] == 6, (end_layer, teacher_kwargs)
        self.mode, self.teacher, self.student = mode, _ViT(**teacher_kwargs), _ViT(**student_kwargs)

    def forward(self, x):
        logits = self.student(x)
        if self.mode == "distill" and self.training:
            return logits, (logits - self.teacher(x)).pow(2).mean()
        return logits
"""


def test_step_cost_against_a_reference_file_reports_attnxfers_speedup(tmp_path):
    import subprocess
    import sys

    ref = tmp_path / "models_dual_vit.py"
    ref.write_text(FAKE_REFERENCE)
    args = ["--model", "test_vit", "--img-size", "32", "--batch", "2"]  # 6 blocks
    args += ["--steps", "1", "--warmup", "1", "--rounds", "1", "--json", str(tmp_path / "r.json")]
    script = [sys.executable, str(BENCH / "step_cost.py"), *args]
    refused = subprocess.run([*script, "--reference", str(ref)], capture_output=True, text=True)
    assert refused.returncode != 0 and "--layers end_layer:-K" in refused.stderr
    done = subprocess.run(
        [*script, "--layers", "end_layer:-2", "--reference", str(ref)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    record = json.loads((tmp_path / "r.json").read_text())
    modes = [r["mode"] for r in record["rows"]]
    assert modes == ["finetune", "copy", "ref-copy", "distill", "ref-distill"]
    assert set(record["attnxfer_speedup"]) == {"copy", "distill"}
    assert all(v["median"] > 0 for v in record["attnxfer_speedup"].values())
    ref_distill = next(r for r in record["rows"] if r["mode"] == "ref-distill")
    assert record["distill_ceiling"] == ref_distill["time_ratio"]


def test_cross_mapping_report_gives_each_student_its_own_scratch(tmp_path):
    report = _load("cross_mapping_report")

    def sweep(part, rows):
        folder = tmp_path / "runs" / part
        folder.mkdir(parents=True)
        record = {"rows": rows, "command": f"attnxfer sweep {part}", "hardware": "cpu"}
        (folder / "results.json").write_text(json.dumps(record))

    def row(mean, **setting):
        return {**setting, "mean": mean, "std": 0.0, "runs": [mean, mean]}

    grid = {"student.model_args": "{patch_size: 8}"}
    sweep(
        "grid",
        [
            row(40.0, **{"transfer.mode": "scratch", **grid}),
            row(46.5, **{"transfer.mode": "distill", **grid}),
        ],
    )
    sweep("heads_scratch", [row(42.0, **{"student.model_args": "{num_heads: 2}"})])
    sweep("heads_distill", [row(45.0, **{"transfer.head_map": "average"})])
    assert report.main(["--runs", str(tmp_path / "runs"), "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "cross_mapping.json").read_text())["rows"]
    gains = {
        (r["student"].split(" (")[0], r["how"].split(" (")[0]): r["gain_over_scratch"] for r in rows
    }
    assert gains == {
        ("coarser grid", "scratch"): None,
        ("coarser grid", "distill"): 6.5,
        ("half the heads", "scratch"): None,
        ("half the heads", "distill"): 3.0,
    }
    text = (tmp_path / "cross_mapping.md").read_text()
    assert "+6.50" in text and "`attnxfer sweep grid`" in text


def _curve(label: str, distill: float, config: str = "r.yaml") -> dict:
    point = {
        "epochs": 2,
        "steps": 780,
        "methods": {
            "scratch": {"mean": 40.0},
            "finetune": {"mean": 60.0},
            "distill": {"mean": distill},
        },
        "gap_recovered": {"copy": None, "distill": 100 * (distill - 40) / 20},
    }
    return {
        "tier": "cpu-long",
        "config": config,
        "overrides": [],
        "teacher": f"{label}.safetensors",
        "teacher_label": label,
        "seeds": [0],
        "points": [point],
        "hardware": "cpu",
    }


def test_curve_teachers_puts_each_teachers_gap_side_by_side(tmp_path):
    import pytest

    bench = _load("curve_teachers")
    sup = _curve("teacher sup", 55.0)
    sup["points"][0]["ensemble_minus_finetune"] = {"mean": 1.25}  # evaluated for this one only
    record = bench.combine([_curve("MAE teacher", 35.0), sup])
    md = bench.markdown(record)
    assert "| MAE teacher | 780 | 40.00 | 60.00 |  | 35.00 |  | -25% |  |" in md
    assert "| teacher sup | 780 | 40.00 | 60.00 |  | 55.00 |  | +75% | +1.25 |" in md
    bench.plot(record, tmp_path / "c.png")
    assert (tmp_path / "c.png").stat().st_size > 0
    with pytest.raises(SystemExit, match="different recipes"):
        bench.combine([_curve("a", 1.0), _curve("b", 1.0, config="other.yaml")])
    with pytest.raises(SystemExit, match="same teacher"):
        bench.combine([_curve("a", 1.0), _curve("a", 2.0)])
    named = bench.combine([_curve("a", 1.0), _curve("b", 2.0)], ["MAE", "supervised"])
    assert [t["label"] for t in named["teachers"]] == ["MAE", "supervised"]
    with pytest.raises(SystemExit, match="one each"):
        bench.combine([_curve("a", 1.0), _curve("b", 2.0)], ["MAE"])


def _method(*runs: float) -> dict:
    return {"mean": sum(runs) / len(runs), "runs": list(runs)}


def test_glance_table_comes_from_the_curve_and_the_copy_decay_ablation(tmp_path):
    bench = _load("glance")
    curve = {
        "points": [
            {  # scratch only: no column
                "epochs": 0.4,
                "steps": 156,
                "methods": {"scratch": _method(30.0)},
                "gap_recovered": {},
            },
            {
                "epochs": 10.0,
                "steps": 3900,
                "methods": {
                    "scratch": _method(60.0, 62.0),
                    "finetune": _method(80.0, 80.0),
                    "copy": _method(65.0),
                    "distill": _method(70.0, 72.0),
                },
                "gap_recovered": {"copy": 20.0, "distill": 55.0},
                "ensemble_minus_finetune": {"mean": 0.5, "runs": [0.25, 0.75]},
            },
        ]
    }
    ablations = [
        {
            "reference": {"scale": "3900 steps per student"},
            "ablations": [
                {"name": "lambda", "rows": [{"setting": "null", "mean": 1.0}]},
                {
                    "name": "copy_decay",
                    "rows": [
                        {"setting": "0.75", "mean": 65.0, "seeds": 1, "gap_recovered": 20.0},
                        {"setting": "null", "mean": 71.0, "seeds": 2, "gap_recovered": 52.6},
                    ],
                },
            ],
        },
        {"reference": {"scale": "15600 steps per student"}, "ablations": []},
    ]
    cells = bench.no_decay_cells(ablations)
    assert list(cells) == [3900] and cells[3900]["mean"] == 71.0
    md = bench.table(curve, cells)
    lines = md.splitlines()
    assert lines[0] == "| optimiser steps | 3,900 | paper |"
    assert "| seeds | 2 |  |" in lines
    assert "| from scratch | 61.00 | 83.0 |" in lines
    assert "| attention distillation | 71.00 (+55%) | 85.7 (+100%) |" in lines
    assert "| attention copy | 65.00 (+20%, 1 seed) | 85.1 (+78%) |" in lines
    assert "| copy without its lr decay | 71.00 (+53%) |  |" in lines
    assert "| ensemble minus fine-tune | +0.50 | +0.6 |" in lines
    # the table replaces what stands between the markers, and nothing else
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{bench.START}\nold table\n{bench.END}\nrest\n")
    bench.main(
        ["--curve", str(_dump(tmp_path / "c.json", curve)), "--ablations", "--readme", str(readme)]
    )
    without = bench.table(curve, {})  # --ablations with no file: no copy-without-decay row
    assert "lr decay" not in without
    assert readme.read_text() == f"intro\n{bench.START}\n{without}\n{bench.END}\nrest\n"
    with pytest.raises(SystemExit, match="needs one"):
        bench.rewrite("no markers here", md)
    with pytest.raises(SystemExit, match="needs one"):
        bench.rewrite(f"{bench.END}\n{bench.START}", md)
    with pytest.raises(SystemExit, match="no length"):
        bench.table({"points": curve["points"][:1]}, {})


def _dump(path, record):
    path.write_text(json.dumps(record))
    return path


def test_every_benchmark_shell_script_parses():
    """The long-running scripts (hours of training) at least parse: a syntax error would show
    only when a session reaches that line."""
    import subprocess

    scripts = sorted(BENCH.glob("*.sh"))
    assert len(scripts) >= 5
    for script in scripts:
        done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert done.returncode == 0, f"{script.name}: {done.stderr}"


def test_same_recipe_pairs_runs_of_one_config_across_devices(tmp_path):
    """A run and its twin trained elsewhere (another run.device, output and records) pair up;
    a run of another config does not."""
    from attnxfer.config import dump_config, load_config

    bench = _load("same_recipe")
    for root, device, top1, extra in (
        ("cpu", "cpu", 50.0, {"amp": "none"}),
        ("gpu", "cuda", 50.5, {"amp": "bf16", "hardware": "H200"}),
    ):
        for name, seed in (("a", 0), ("b", 1)):
            run = tmp_path / root / name
            run.mkdir(parents=True)
            overrides = [f"run.device={device}", f"run.seed={seed}", f"run.output={run}"]
            if root == "gpu" and name == "b":
                overrides.append("optim.lr=2e-3")  # another recipe: no twin
            dump_config(load_config([], overrides), run / "config.yaml")
            summary = {"steps": 10, "val_top1": top1 + seed, "seconds": 1.0, **extra}
            (run / "summary.json").write_text(json.dumps(summary))
    rows = bench.pairs(tmp_path / "cpu", tmp_path / "gpu")
    assert [(r["a"], r["b"]) for r in rows] == [("a", "a")]
    assert rows[0]["difference"] == pytest.approx(0.5)
    assert rows[0]["trained_a"] == "processor not recorded, float32"
    assert rows[0]["trained_b"] == "H200, bfloat16"


def test_grad_probe_report_reads_the_probes_of_each_weight(tmp_path, teacher_file):
    """Two tiny distilled runs with run.grad_probe_every: one report row per stretch of
    training, the distillation gradient scaling with lambda, and the derived cosine in range."""
    from helpers import TINY_STUDENT, cli

    runs = tmp_path / "runs"
    for weight in ("0.3", "3"):
        args = [*TINY_STUDENT, f"teacher.source={teacher_file}", "transfer.mode=distill"]
        args += [f"transfer.weight={weight}", "run.grad_probe_every=2", "optim.epochs=2"]
        assert cli("train", *args, f"run.output={runs / f'weight={weight}' / 'seed0'}") == 0
    bench = _load("grad_probe_report")
    out = tmp_path / "report" / "grad_probe"
    assert bench.main(["--runs", str(runs), "--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    light, heavy = record["runs"]
    assert (light["weight"], heavy["weight"]) == (0.3, 3.0)
    # 2 epochs of 45 steps, warm-up 0.2 epoch: the first epoch holds the warm-up, and the first
    # half has nothing after it
    assert [s["epochs"] for s in heavy["stretches"]] == ["epoch 1", "epoch 2"]
    assert sum(s["probes"] for s in heavy["stretches"]) == len(heavy["probes"]) == 45
    first_light, first_heavy = light["probes"][0], heavy["probes"][0]
    # same seed and batch at step 1: the weighted loss's gradient is 10x as long
    assert first_heavy["grad_transfer"] == pytest.approx(
        10 * first_light["grad_transfer"], rel=1e-3
    )
    assert first_heavy["grad_task"] == pytest.approx(first_light["grad_task"], rel=1e-3)
    for p in heavy["probes"]:
        assert -1 <= p["grad_cos"] <= 1 and -1 <= p["along_task"] <= 1
    assert list(heavy["stretches"][0]["blocks"]) == ["block0", "block1"]
    for s in heavy["stretches"]:
        assert all(-1 <= b["cos"] <= 1 and b["ratio"] > 0 for b in s["blocks"].values())
    text = out.with_suffix(".md").read_text()
    assert "| distill, lambda 3 |" in text and "| distill, lambda 3 | block1 |" in text
    assert out.with_suffix(".png").exists()


def test_along_task_is_the_cosine_of_the_summed_gradient():
    bench = _load("grad_probe_report")
    import torch

    a, b = torch.randn(50, generator=torch.Generator().manual_seed(0)), torch.randn(50)
    cos = torch.nn.functional.cosine_similarity
    want = cos(a + b, a, dim=0).item()
    got = bench.along_task(a.norm().item(), b.norm().item(), cos(a, b, dim=0).item())
    assert got == pytest.approx(want, abs=1e-6)


def test_grad_probe_stretches_follow_the_schedule():
    bench = _load("grad_probe_report")
    labels = [s[0] for s in bench.stretches(10, 1.0)]
    assert labels == ["epoch 1", "epochs 2-5", "epochs 6-10"]
    assert bench.stretches(40, 4.0) == [
        ("epochs 1-4", 0, 4),
        ("epochs 5-20", 4, 20),
        ("epochs 21-40", 20, 40),
    ]


def test_parallel_runs_script_times_both_settings_and_writes_its_report(tmp_path, teacher_file):
    """benchmarks/parallel_runs.py on a tiny recipe: one sweep per setting and round, every cell
    finished each time, the speed-up taken against the first setting."""
    import subprocess
    import sys

    from helpers import ENV, TINY_STUDENT

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(_yaml_of(["data.name=digits", *TINY_STUDENT]))
    out = tmp_path / "parallel"
    env = {k: v for k, v in ENV.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(
        [
            sys.executable,
            str(BENCH / "parallel_runs.py"),
            "--config",
            str(recipe),
            "--teacher",
            str(teacher_file),
            "--rounds",
            "1",
            "--out",
            str(out),
            "data.train_subset=64",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.with_suffix(".json").read_text())
    assert [r["jobs"] for r in report["rows"]] == [1, 2]
    assert report["rows"][0]["speedup"]["median"] == 1.0
    assert all(r["steps_per_second"] > 0 and len(r["seconds"]) == 1 for r in report["rows"])
    assert "| 2 |" in out.with_suffix(".md").read_text()


def test_trajectories_sets_students_of_one_schedule_side_by_side(tmp_path):
    bench = _load("trajectories")

    def run(name, evals, extra=()):
        folder = tmp_path / name
        folder.mkdir()
        lines = [{"epoch": e, "train_loss": 1.0} for e in range(1, 5)]  # no evaluation
        lines += [{"epoch": e, "val_top1": v} for e, v in evals] + list(extra)
        (folder / "metrics.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
        return folder

    scratch = run("scratch", [(2, 40.0), (4, 50.0)])
    # a resumed run logs its epoch-4 evaluation twice: the last one counts; epoch 3 is its own
    copy = run("copy", [(2, 45.0), (3, 47.0), (4, 49.0)], [{"epoch": 4, "val_top1": 51.5}])
    out = tmp_path / "out" / "traj"
    assert bench.main(["--out", str(out), f"scratch={scratch}", f"copy={copy}"]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["epochs"] == [2, 4]  # the epochs both were evaluated at
    assert [s["top1"] for s in record["students"]] == [[40.0, 50.0], [45.0, 51.5]]
    md = out.with_suffix(".md").read_text()
    assert "| copy - scratch | +5.00 | +1.50 |" in md and "| epoch | 2 | 4 |" in md
    assert out.with_suffix(".png").stat().st_size > 0
    with pytest.raises(SystemExit, match="LABEL=RUN_FOLDER"):
        bench.main(["--out", str(out), str(scratch)])
    with pytest.raises(SystemExit, match=r"no metrics\.jsonl"):
        bench.main(["--out", str(out), f"x={tmp_path}"])
    late = run("late", [(3, 60.0)])
    with pytest.raises(SystemExit, match="share no evaluated epoch"):
        bench.main(["--out", str(out), f"scratch={scratch}", f"late={late}"])


def test_carry_keeps_the_newest_finished_checkpoint_and_restores_it_once(tmp_path):
    """benchmarks/carry.sh: an unfinished run's newest checkpoint that finished writing (a
    folder without meta.json is one cut off mid-write) goes to docs/results/carried/ with the
    run's config and metrics, replacing the earlier carry; restored only where the run has no
    checkpoint; a finished run or a path outside runs/ is refused with one line."""
    import subprocess

    def carry(*args):
        return subprocess.run(
            ["bash", str(BENCH / "carry.sh"), *args], cwd=tmp_path, capture_output=True, text=True
        )

    run = tmp_path / "runs/teachers/t"
    for step, finished in ((390, True), (780, True), (1170, False)):
        ckpt = run / f"checkpoints/step_{step:09d}"
        ckpt.mkdir(parents=True)
        (ckpt / "state.pt").write_text(str(step))
        if finished:
            (ckpt / "meta.json").write_text("{}")
    (run / "config.yaml").write_text("pretrain: {method: mae}\n")
    (run / "metrics.jsonl").write_text("{}\n")
    kept = tmp_path / "docs/results/carried/teachers/t"
    (kept / "checkpoints/step_000000001").mkdir(parents=True)  # an earlier carry: replaced

    done = carry("runs/teachers/t")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (kept / "checkpoints").iterdir()) == ["step_000000780"]
    assert (kept / "checkpoints/step_000000780/state.pt").read_text() == "780"
    assert {p.name for p in kept.iterdir()} == {"checkpoints", "config.yaml", "metrics.jsonl"}

    done = carry("--restore", "runs/teachers/t")  # the run has checkpoints of its own
    assert done.returncode == 0 and "left as it is" in done.stdout
    assert (run / "checkpoints/step_000000390").is_dir()
    done = carry("--restore", "runs/teachers/elsewhere")
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "nothing carried" in done.stderr

    shutil.rmtree(tmp_path / "runs")  # a fresh machine
    done = carry("--restore", "runs/teachers/t")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step_000000780"]
    assert (run / "config.yaml").read_text() == "pretrain: {method: mae}\n"

    (run / "summary.json").write_text("{}")
    for args in (["runs/teachers/t"], ["elsewhere/t"]):
        done = carry(*args)
        assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert (kept / "checkpoints/step_000000780/state.pt").read_text() == "780"


def test_central_result_runs_only_the_steps_asked_for():
    """STEPS=1 runs step 1 alone (its teacher exists: nothing to do) and announces no other."""
    import os
    import subprocess

    env = {**os.environ, "PLAN": "1", "STEPS": "1"}
    done = subprocess.run(
        ["bash", str(BENCH / "central_result.sh")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    announced = [line.split(" ", 2)[2] for line in done.stdout.splitlines() if line[:3] == "== "]
    assert announced == ["1. CIFAR-10 MAE teacher, 200 epochs", "all done"]
