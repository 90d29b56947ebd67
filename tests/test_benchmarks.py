"""The benchmark scripts run (small, on the CPU) and report what they claim to."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

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
    assert 0 < report["rows"][1]["loss"] < 10 * bench.BF16_EPS


def test_ablations_script_runs_its_sweeps_and_refuses_unknown_names(tmp_path, teacher_file):
    """benchmarks/ablations.sh on a tiny recipe: each named ablation becomes one results table."""
    import os
    import subprocess
    import sys

    from test_engine import TINY_STUDENT

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
    done = run("features", "what_copy")
    assert done.returncode == 0, done.stderr[-2000:]
    features = json.loads((tmp_path / "ablations/features/results.json").read_text())
    assert [r["transfer.mode"] for r in features["rows"]] == ["distill", "feature_distill"]
    copy = json.loads((tmp_path / "ablations/what_copy/results.json").read_text())
    assert [r["transfer.mode"] for r in copy["rows"]] == ["copy", "copy_q", "copy_k", "copy_v"]
    assert "optim.layer_decay=0.75" in copy["fixed"]
    assert copy["title"].startswith("What is copied")


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
    result = {"title": "heads", "grid": {"transfer.heads": ["1", "all"]}, "fixed": [], "rows": rows}
    (heads / "results.json").write_text(json.dumps({**result, "command": "attnxfer sweep"}))
    out = tmp_path / "out" / "ablations"
    args = ["--runs", str(tmp_path / "runs"), "--main", str(tmp_path / "main.json")]
    assert report.main([*args, "--out", str(out)]) == 0
    text = out.with_suffix(".md").read_text()
    assert "| 1 | 32.50 ± 0.50 | 25% | 2 |" in text
    assert "| all (main-table runs) | 41.00 ± 0.00 | 110% | 2 |" in text
    assert "`bash benchmarks/ablations.sh layers`" in text  # not run yet: its command
    saved = json.loads(out.with_suffix(".json").read_text())
    assert [a["name"] for a in saved["ablations"]] == ["heads"]
    assert out.with_suffix(".png").stat().st_size > 0
