"""The layer contract (import-linter, ``[tool.importlinter]`` in pyproject.toml): it holds on the
tree, and it catches each breach (planted in a copy of the packages)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("jobs", "plugins/recsys_airflow", "dags", "scripts", "benchmarks")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{root}:{root / 'plugins'}", "PATH": str(Path(sys.executable).parent)}
    return subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_the_layer_contract():
    proc = lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "5 kept, 0 broken" in proc.stdout


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layers")
    for package in PACKAGES:
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "results", ".venvs")
        )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.parametrize(
    ("path", "source", "contract"),
    [
        ("jobs/score/x.py", "import airflow\n", "nothing under jobs/ imports Airflow"),
        ("jobs/core/x.py", "from jobs.ingest.rows import judge\n", "never another stage"),
        ("jobs/score/x.py", "def f():\n    from jobs.ingest import job\n", "never another stage"),
        ("jobs/score/x.py", "from jobs import monitor\n", "never another stage"),
        ("jobs/monitor/x.py", "from ..score import core\n", "never another stage"),
        ("jobs/ingest/x.py", "from jobs.sim import WorldParams\n", "never another stage"),
        ("plugins/recsys_airflow/x.py", "from jobs.sim import world\n", "the simulator (jobs.sim) is imported only"),
        ("dags/x.py", "from jobs.monitor.job import run\n", "DAGs and plugins import jobs.core"),
        ("plugins/recsys_airflow/x.py", "from jobs.registry.aliases import show\n", "DAGs and plugins"),
        ("dags/x.py", "import torch\n", "DAG files import no heavy library"),
        ("jobs/newstage/__init__.py", "", "never another stage"),  # exhaustive: a stage must be listed
    ],
)
def test_every_breach_is_reported_with_its_contract(copy, path, source, contract):
    target = copy / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(source)
    try:
        proc = lint_imports(copy)
    finally:
        target.unlink()
        if path.startswith("jobs/newstage"):
            target.parent.rmdir()
    assert proc.returncode == 1, proc.stdout[-3000:]
    assert contract in broken_contracts(proc.stdout), proc.stdout[-3000:]


def broken_contracts(stdout: str) -> str:
    """The names of the contracts the report marks BROKEN (its lines wrap at 80 columns)."""
    text = " ".join(stdout.split("Contracts\n", 1)[-1].split())
    parts = re.split(r" (KEPT|BROKEN)\b", text)
    return " | ".join(name for name, verdict in zip(parts[::2], parts[1::2], strict=False) if verdict == "BROKEN")
