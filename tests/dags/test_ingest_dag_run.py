"""The ingestion DAG end to end with ``dag.test()`` (in-process runner, real Spark and GX)."""

from __future__ import annotations

from datetime import date

import pendulum
import pytest

from jobs import sim as gen
from jobs.core import storage
from jobs.core.catalog import is_validated
from tests.dag_runs import repo_dag, task_states

pytestmark = pytest.mark.integration


def test_dag_test_ingests_validates_and_emits_the_asset(airflow_db, cfg):
    params = gen.WorldParams(users=300, items=120, factors=4, seed=5, events_per_day=2000)
    gen.generate(params, date(2026, 1, 1), 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    dag = repo_dag("recsys_ingest")
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    assert str(run.state) == "success", task_states(run)
    part = cfg.storage.partition("curated", "2026-01-01")
    assert storage.read_manifest(part)["rows"] > 1900
    assert is_validated(cfg, "2026-01-01")
    assert (
        storage.local_path(cfg.storage.partition("reports", "2026-01-01").replace("/reports/", "/reports/validation/"))
        .joinpath("report.html")
        .is_file()
    )

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all()
        assert len(events) == 1
        assert events[0].extra["day"] == "2026-01-01"
        assert events[0].extra["rows"] == storage.read_manifest(part)["rows"]


def test_failed_validation_stops_the_day_and_emits_no_asset(airflow_db, cfg, monkeypatch):
    params = gen.WorldParams(
        users=300,
        items=120,
        factors=4,
        seed=5,
        events_per_day=2000,
        scenarios=(gen.Scenario("malformed_lines", date(2026, 1, 2), 0.2),),
    )
    gen.generate(params, date(2026, 1, 2), 1, cfg.storage.zone("landing"), cfg.storage.zone("ground_truth"))
    dag = repo_dag("recsys_ingest")
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 2, tz="UTC"))
    states = task_states(run)
    assert str(run.state) == "failed"
    assert states["ingest"] == "success"
    assert states["validate"] == "failed"
    assert states["publish_curated_event"] == "upstream_failed"
    cfg.storage.partition("curated", "2026-01-02")
    assert not is_validated(cfg, "2026-01-02")

    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        assert session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run.run_id)).all() == []
