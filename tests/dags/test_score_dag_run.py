"""The scoring DAG with ``dag.test()``: real Spark (the job runs as a subprocess), a real MLflow server.

* a run pins the champion once: a promotion that lands between ``resolve_champion`` and
  ``score`` (an ``on_success_callback`` of ``resolve_champion`` promotes another version) does
  not reach the output, which carries the pinned version in every row, the manifest and the
  ``recsys_recommendations`` Asset event; the served day is then a record: another run is held,
  ``rescore`` writes a copy to ``rescored/`` and announces nothing;
* without a champion the run is skipped, not failed: nothing is written, no Asset event;
* the day comes from the ``day`` param or the run's partition key (``partitions.run_day`` on the
  task context's real ``TriggeringAssetEventsAccessor``, with the run types that published it).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pendulum
import pytest

from jobs.core import storage
from tests.dag_runs import dag_test, repo_dag
from tests.integration.test_ingest import checksums
from tests.integration.test_score import D, build_days, log_and_register, make_arrays, read_partition


def _states(run) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for ti in run.get_task_instances():
        out.setdefault(ti.task_id, []).append(str(ti.state))
    return out


def _events(run_id: str) -> list:
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        return [
            (e.asset.name, dict(e.extra))
            for e in session.scalars(select(AssetEvent).where(AssetEvent.source_run_id == run_id)).all()
        ]


@pytest.mark.integration
def test_run_pins_the_champion_once_and_announces_the_recommendations(airflow_db, mlflow_env, cfg):
    from jobs.core.config import get_config
    from jobs.core.tracking import CHAMPION, alias_version, client
    from jobs.registry.aliases import promote

    arrays_v1, arrays_v2 = make_arrays(seed=51), make_arrays(seed=52)
    build_days(cfg, arrays_v1)
    v1 = log_and_register(cfg, arrays_v1, promote_it=True)
    v2 = log_and_register(cfg, arrays_v2, promote_it=False)

    def promote_mid_run(context) -> None:  # another training run wins the gate right now
        promote(get_config(), v2["version"], v1["version"], "promoted mid-run", "test_score_dag_run")

    dag = repo_dag("recsys_score")
    dag.get_task("resolve_champion").on_success_callback = [promote_mid_run]
    run = dag.test(logical_date=pendulum.datetime(2026, 1, 7, tz="UTC"), run_conf={"day": D.isoformat()})
    states = _states(run)
    assert str(run.state) == "success", states
    assert states == {
        "plan": ["success"],
        "resolve_champion": ["success"],
        "score": ["success"],
        "publish_recommendations": ["success"],
    }
    assert alias_version(client(cfg), cfg.mlflow.model_name, CHAMPION) == v2["version"]  # the promotion happened

    table, manifest = read_partition(cfg, D.isoformat())
    assert set(table.column("model_version").to_pylist()) == {v1["version"]} == {manifest["model_version"]}
    assert set(table.column("model_run_id").to_pylist()) == {v1["run_id"]}
    assert manifest["k"] == cfg.scoring.k and manifest["users"] == 260
    events = _events(run.run_id)
    assert events == [
        (
            "recsys_recommendations",
            {
                "day": D.isoformat(),
                "model_version": v1["version"],
                "users": manifest["users"],
                "rows": manifest["rows"],
                "model_run_id": v1["run_id"],
                "uri": cfg.storage.partition("recommendations", D.isoformat()),
            },
        )
    ]
    resolved = next(ti for ti in run.get_task_instances() if ti.task_id == "resolve_champion")
    assert resolved.xcom_pull(task_ids="resolve_champion") == {
        "day": D.isoformat(),
        "model_name": cfg.mlflow.model_name,
        "version": v1["version"],
        "run_id": v1["run_id"],
        "zone": "recommendations",
        "served_by": run.run_id,
    }
    assert manifest["served_by"] == run.run_id
    served = checksums(cfg.storage.partition("recommendations", D.isoformat()))

    # The day is served now: another run asking for it is held (skipped, nothing written) ...
    again = dag_test(
        "recsys_score", logical_date=pendulum.datetime(2026, 1, 8, tz="UTC"), run_conf={"day": D.isoformat()}
    )
    assert _states(again)["plan"] == ["skipped"] and _states(again)["score"] == ["skipped"], _states(again)
    # ... and rescore writes a copy with today's champion (v2) beside it, announced to nobody.
    rescored = dag_test(
        "recsys_score",
        logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"),
        run_conf={"day": D.isoformat(), "rescore": True},
    )
    states = _states(rescored)
    assert states["score"] == ["success"] and states["publish_recommendations"] == ["skipped"], states
    copy = storage.read_manifest(cfg.storage.partition("rescored", D.isoformat()))
    assert copy["model_version"] == v2["version"] and copy["served_by"] == rescored.run_id
    assert checksums(cfg.storage.partition("recommendations", D.isoformat())) == served
    assert read_partition(cfg, D.isoformat())[1]["model_version"] == v1["version"]
    assert _events(again.run_id) == [] and _events(rescored.run_id) == []


@pytest.mark.integration
def test_no_champion_skips_the_run_without_failing_or_writing(airflow_db, mlflow_env, cfg):
    build_days(cfg, make_arrays(seed=61))
    run = dag_test(
        "recsys_score", logical_date=pendulum.datetime(2026, 1, 8, tz="UTC"), run_conf={"day": D.isoformat()}
    )
    states = _states(run)
    assert str(run.state) == "success", states
    assert states["plan"] == ["success"]
    assert states["resolve_champion"] == ["skipped"]
    assert states["score"] == ["skipped"] and states["publish_recommendations"] == ["skipped"]
    assert not storage.local_path(cfg.storage.zone("recommendations")).exists()
    assert _events(run.run_id) == []


def _accessor(extras: list[dict], run_ids: list[str] | None = None):
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from recsys_airflow.assets import CURATED_EVENTS

    events = [
        AssetEventDagRunReferenceResult(
            asset={"name": CURATED_EVENTS.name, "uri": CURATED_EVENTS.uri, "extra": {}},
            extra=extra,
            source_task_id="publish_curated_event",
            source_dag_id="recsys_ingest",
            source_run_id=run_ids[i] if run_ids else f"scheduled__{i}",
            source_map_index=-1,
            source_aliases=[],
            timestamp=datetime(2026, 1, 7, tzinfo=UTC),
        )
        for i, extra in enumerate(extras)
    ]
    return TriggeringAssetEventsAccessor.build(events)


@pytest.mark.unit
def test_the_day_is_the_param_or_the_runs_partition_key_with_its_sources():
    """``partitions.run_day`` on the task context's real ``TriggeringAssetEventsAccessor``: one
    day per run (its partition key), the run types that published it, the param winning."""
    from airflow.sdk.exceptions import AirflowFailException

    from recsys_airflow.partitions import run_day
    from recsys_airflow.scoring_plan import NOTHING

    reprocessed = _accessor(
        [{"day": "2026-01-05", "rows": 10}, {"day": "2026-01-05"}],
        ["scheduled__2026-01-05T00:00:00+00:00", "backfill__2026-01-05T00:00:00+00:00"],
    )
    assert run_day("", "2026-01-05", reprocessed, NOTHING) == ("2026-01-05", ["backfill", "scheduled"])
    assert run_day("2026-01-09", "2026-01-05", reprocessed, NOTHING) == ("2026-01-09", [])  # the param wins
    assert run_day(None, "2026-01-06", _accessor([{"day": "2026-01-06"}]), NOTHING) == ("2026-01-06", ["scheduled"])
    with pytest.raises(AirflowFailException, match="set the 'day' param"):
        run_day("", None, _accessor([]), NOTHING)  # a manual run with neither
    with pytest.raises(AirflowFailException, match="names day None"):
        run_day("", "2026-01-05", _accessor([{"rows": 3}]), NOTHING)
    with pytest.raises(AirflowFailException, match="names day '2026-01-04'"):
        run_day("", "2026-01-05", _accessor([{"day": "2026-01-04"}]), NOTHING)
    with pytest.raises(AirflowFailException, match="not a calendar day"):
        run_day("2026-02-30", None, None, NOTHING)
    with pytest.raises(AirflowFailException, match="partition key: 'latest' is not a day"):
        run_day(None, "latest", None, NOTHING)


@pytest.mark.unit
def test_score_dag_shape():
    dag = repo_dag("recsys_score")
    edges = {t.task_id: sorted(t.downstream_task_ids) for t in dag.tasks}
    assert edges == {
        "plan": ["resolve_champion"],
        "resolve_champion": ["score"],
        "score": ["publish_recommendations"],
        "publish_recommendations": [],
    }
    assert dag.max_active_runs == 1  # one Spark job at a time; queued days wait their turn
    assert type(dag.timetable).__name__ == "PartitionedAssetTimetable"  # one run per day
    assert dag.timetable.asset_condition.name == "recsys_curated_events"
    assert [o.name for o in dag.get_task("publish_recommendations").outlets] == ["recsys_recommendations"]
    assert dag.params["day"] is None
