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
