"""Every relative link in the README and the docs leads somewhere: the file exists and, where the
link names a section (``file.md#section``), the file has a heading with that anchor."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / "teachers").rglob("*.md")]
)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"```.*?```", re.S)


def prose(path: Path) -> str:
    """The markdown of ``path`` without its code blocks."""
    return FENCE.sub("", path.read_text())


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    return {anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", prose(path), re.M)}


def test_anchor_is_githubs():
    assert (
        anchor("The long tier's table (3,900 steps; seed 0)")
        == "the-long-tiers-table-3900-steps-seed-0"
    )
    assert anchor("One recipe, two machines") == "one-recipe-two-machines"


@pytest.mark.parametrize("doc", DOCS, ids=[str(d.relative_to(ROOT)) for d in DOCS])
def test_relative_links_resolve(doc):
    broken = []
    for target in LINK.findall(prose(doc)):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...
            continue
        path, _, section = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif section and dest.suffix == ".md" and section not in anchors(dest):
            broken.append(f"{target} (no such section)")
    assert not broken, f"{doc.relative_to(ROOT)}: " + ", ".join(broken)


def test_readme_glance_table_is_the_reports():
    """The README's results-at-a-glance table is what benchmarks/glance.py writes from the
    committed reports: after a report changes, `python benchmarks/glance.py --readme README.md`
    (central_result_report.sh runs it) brings the README along."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("glance", ROOT / "benchmarks" / "glance.py")
    glance = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(glance)
    readme = (ROOT / "README.md").read_text()
    assert glance.rewrite(readme, glance.build()) == readme, (
        "README.md's at-a-glance table is stale: run python benchmarks/glance.py --readme README.md"
    )
