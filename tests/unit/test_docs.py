"""The docs name only what exists, and the site builds strictly (``make docs``, scripts/docs.py).

A repository path, a test node, a Python module (and a name in it) or a make target named in
README.md or docs/*.md must exist; a stale one planted in a copy of the pages is reported. The
site is built with ``mkdocs build --strict`` from a copy, so the tree is left as it was.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import docs

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.M)


def test_readme_and_docs_name_only_what_exists():
    assert docs.check_references(docs.doc_pages()) == []


def test_readme_stays_a_front_page():
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the detail to a page of docs/"
    for command in ("make demo", "make test"):
        assert any(line.startswith(command) for line in lines), command


@pytest.fixture
def pages_copy(tmp_path) -> list[Path]:
    """README.md and docs/*.md copied into tmp_path (the names still resolve against the tree)."""
    (tmp_path / "docs").mkdir()
    copies = []
    for page in docs.doc_pages():
        target = tmp_path / page.relative_to(REPO)
        shutil.copyfile(page, target)
        copies.append(target)
    return copies


STALE = {
    "path": ("`jobs/storage.py`", "jobs/storage.py: no such file or folder"),
    "placeholder path": ("`jobs/<stage>/entry.py`", "jobs/<stage>/entry.py: nothing matches"),
    "test file": ("`tests/unit/test_nope.py`", "tests/unit/test_nope.py: no such file or folder"),
    "test node": (
        "`tests/reliability/test_stack_faults.py::test_scheduler_crash_mid_backfill_then_duplicate_runs`",
        "test_stack_faults.py::test_scheduler_crash_mid_backfill_then_duplicate_runs: no such test",
    ),
    "bare test node": (
        "`test_publish_faults.py::test_publish_never_fails`",
        "test_publish_faults.py::test_publish_never_fails: no such test",
    ),
    "module": ("`jobs.train_popularity`", "jobs.train_popularity: no such module"),
    "name in a module": ("`jobs.core.storage.publish_everything`", "jobs.core.storage has no 'publish_everything'"),
    "make target": ("```bash\nmake deploy\n```", "make deploy: no such target"),
}


@pytest.mark.parametrize("kind", list(STALE))
def test_a_stale_name_planted_in_a_copy_is_reported(pages_copy, kind):
    assert docs.check_references(pages_copy) == []
    planted, expected = STALE[kind]
    page = pages_copy[3]  # a docs page, not the README
    text = page.read_text()
    page.write_text(f"{text}\nSee {planted} for the details.\n")
    problems = docs.check_references(pages_copy)
    line = text.count("\n") + 2 + (1 if planted.startswith("```") else 0)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{page.name}:{line}: ") and expected in problems[0], problems


def test_a_stale_name_in_the_readme_is_reported(pages_copy):
    readme = pages_copy[0]
    readme.write_text(readme.read_text().replace("docs/pipeline.md", "docs/pipelines.md", 1))
    problems = docs.check_references(pages_copy)
    assert len(problems) == 1 and problems[0].startswith("README.md:"), problems
    assert "docs/pipelines.md: no such file or folder" in problems[0]


def test_the_site_builds_strictly(tmp_path):
    """``make docs`` in a copy: the generator's tables, then ``mkdocs build --strict``."""
    shutil.copyfile(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    shutil.copytree(REPO / "docs", tmp_path / "docs", ignore=shutil.ignore_patterns("_generated"))
    for page in (REPO / "docs").glob("*.md"):
        for source in SNIPPET.findall(page.read_text()):
            if not source.startswith("docs/_generated/"):
                (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(REPO / source, tmp_path / source)
    assert docs.main(["--out", str(tmp_path / "docs" / "_generated")]) == 0
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "mkdocs"), "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=tmp_path,
        env={"PATH": str(Path(sys.executable).parent), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    built = tmp_path / "site"
    for page in ("configuration", "zones", "reliability", "benchmarks", "glossary"):
        html = (built / page / "index.html").read_text()
        assert "--8<--" not in html, f"{page}: a snippet was not included"
    assert "storage.root" in (built / "configuration" / "index.html").read_text()
    assert "test_rehearsal_under_chaos_ends_as_the_local_demo" in (built / "reliability" / "index.html").read_text()


def test_recording_one_benchmark_keeps_the_others_rows():
    row = dict.fromkeys(("benchmark", "metric", "value", "unit", "reference", "ratio", "note"))
    record = {
        "rows": [{**row, "benchmark": "quality", "metric": "q"}, {**row, "benchmark": "stack", "metric": "old"}],
        "runs": {"quality": {"status": "ok"}, "stack": {"status": "ok", "seconds": 1}},
    }
    results = {"rows": [{**row, "benchmark": "stack", "metric": "new"}], "runs": {"stack": {"status": "ok"}}}
    merged = docs.merge_benchmarks(record, results)
    assert [(r["benchmark"], r["metric"]) for r in merged["rows"]] == [("quality", "q"), ("stack", "new")]
    assert merged["runs"] == {"quality": {"status": "ok"}, "stack": {"status": "ok"}}
    docs.check_benchmarks(merged)
