"""The layer contract (``scripts/check_layers.py``): it holds on the tree, and it catches each breach."""

from __future__ import annotations

from pathlib import Path

import pytest

from scripts.check_layers import check

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_the_tree_keeps_the_layer_contract():
    assert [str(v) for v in check(REPO)] == []


@pytest.mark.parametrize(
    ("path", "source", "rule"),
    [
        ("jobs/score/x.py", "import airflow\n", "nothing under jobs/ imports Airflow"),
        ("jobs/core/x.py", "from jobs.ingest.rows import judge\n", "jobs.core imports no stage"),
        ("jobs/score/x.py", "def f():\n    from jobs.ingest import job\n", "imports another stage"),
        ("jobs/score/x.py", "from jobs import monitor\n", "imports another stage"),
        ("jobs/monitor/x.py", "from ..score import core\n", "imports another stage"),
        ("jobs/ingest/x.py", "from jobs.sim import WorldParams\n", "the simulator is imported only"),
        ("dags/x.py", "from jobs.monitor.job import run\n", "DAGs and plugins import jobs.core"),
        ("plugins/recsys_airflow/x.py", "from jobs.registry.aliases import show\n", "DAGs and plugins"),
        ("dags/x.py", "import torch\n", "DAG files import no heavy library"),
    ],
)
def test_every_breach_is_reported_with_its_rule(tmp_path, path, source, rule):
    for folder in ("jobs/core", "jobs/score", "jobs/monitor", "jobs/ingest", "dags", "plugins/recsys_airflow"):
        (tmp_path / folder).mkdir(parents=True, exist_ok=True)
    target = tmp_path / path
    target.write_text(source)
    found = check(tmp_path)
    assert len(found) >= 1 and all(rule in v.rule for v in found), [str(v) for v in found]
    assert found[0].path == path


def test_allowed_imports_are_not_reported(tmp_path):
    (tmp_path / "jobs/score").mkdir(parents=True)
    (tmp_path / "tests").mkdir()
    (tmp_path / "jobs/score/x.py").write_text("from jobs.core import catalog\nfrom jobs.score import core\n")
    (tmp_path / "tests/t.py").write_text("from jobs.sim import WorldParams\n")
    assert check(tmp_path) == []
