"""Each bad input gets exit status 2, one line that names the problem, and loses nothing."""

from pathlib import Path

import pytest
from bad_inputs import CASES, run_case

DOCS = Path(__file__).resolve().parents[1] / "docs" / "bad-inputs.md"


@pytest.mark.parametrize("case", CASES, ids=[c.what for c in CASES])
def test_bad_input(tmp_path, case):
    code, line, created = run_case(case, tmp_path)
    assert code == 2 and line.startswith("attnxfer: error:"), line
    assert case.expect in line
    message = line.removeprefix("attnxfer: error: ").replace("|", "\\|")
    assert f"| {case.what} | 2 | {message} |" in DOCS.read_text(), "regenerate docs/bad-inputs.md"
    # Nothing half-made: a refused command creates no files. The non-finite-loss case stops a
    # run that has started, and keeps what it wrote (config, metrics) on purpose.
    if case.what != "non-finite loss":
        assert created == [], created


def test_there_are_at_least_25_cases():
    assert len(CASES) >= 25
