"""attnxfer demo, shortened: every stage runs and the outputs exist."""

import json

from PIL import Image

from attnxfer.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--teacher-epochs", "1", "--student-epochs", "1"]) == 0
    printed = capsys.readouterr().out
    for row in ("teacher (supervised", "from scratch", "attention copy", "attention distillation"):
        assert row in printed
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= {"teacher", "scratch", "copy", "distill", "wall_seconds"}
    with Image.open(out / "attention.png") as img:
        assert img.size[0] > 400 and img.size[1] > 400
    assert main(["demo", "--out", str(out)]) == 2  # never into a used folder
