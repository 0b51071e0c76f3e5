"""The scoring DAG with ``dag.test()``: real Spark (the job runs as a subprocess), a real MLflow server.

* a run pins the champion once: a promotion that lands between ``resolve_champion`` and
  ``score`` (an ``on_success_callback`` of ``resolve_champion`` promotes another version) does
  not reach the output, which carries the pinned version in every row, the manifest and the
  ``recsys_recommendations`` Asset event; the served day is then a record: another run is held,
  ``rescore`` writes a copy to ``rescored/`` and announces nothing;
* without a champion the run is skipped, not failed: nothing is written, no Asset event;
* the day(s) come from the ``date`` param or the triggering curated-events Asset events
  (``days_to_score`` on the task context's real ``TriggeringAssetEventsAccessor``).
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
    assert resolved.xcom_pull(task_ids="resolve_champion") == [
        {
            "day": D.isoformat(),
            "model_name": cfg.mlflow.model_name,
            "version": v1["version"],
            "run_id": v1["run_id"],
            "zone": "recommendations",
            "served_by": run.run_id,
        }
    ]
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


@pytest.mark.integration
def test_a_run_claims_the_curated_events_no_earlier_run_claimed(airflow_db, mlflow_env, cfg):
    """Through the Task SDK (real Variables, real ``inlet_events``): a run with no ``date`` claims
    every curated event after the ledger's mark (here: two days whose events got no run of their
    own, as Airflow 3.3 leaves them); the next run finds nothing new."""
    import json

    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from recsys_airflow.assets import CURATED_EVENTS
    from recsys_airflow.claims import ledger_key

    key = ledger_key("recsys_score")
    first = dag_test(
        "recsys_score", logical_date=pendulum.datetime(2026, 1, 8, tz="UTC"), run_conf={"day": D.isoformat()}
    )
    assert str(first.state) == "success"  # syncs the DAG and its assets; a `date` run claims nothing
    assert Variable.get(key, default_var=None) is None
    with create_session() as session:
        asset_id = session.scalar(select(AssetModel.id).where(AssetModel.name == CURATED_EVENTS.name))
        ids = []
        for day in ("2026-01-05", "2026-01-06", "2026-01-07"):
            event = AssetEvent(asset_id=asset_id, extra={"day": day}, source_dag_id="recsys_ingest")
            session.add(event)
            session.flush()
            ids.append((event.id, event.timestamp.isoformat()))
    Variable.set(key, json.dumps({"claimed_id": ids[0][0], "claimed_ts": ids[0][1], "runs": {}}))
    try:
        run = dag_test("recsys_score", logical_date=pendulum.datetime(2026, 1, 9, tz="UTC"), run_conf={"day": None})
        states = _states(run)
        assert str(run.state) == "success" and states["plan"] == ["success"], states
        assert states["resolve_champion"] == ["skipped"]  # no champion: claimed, then skipped
        ledger = json.loads(Variable.get(key))
        assert ledger["runs"][run.run_id] == {
            "days": ["2026-01-06", "2026-01-07"],
            "events": [i for i, _ in ids[1:]],
            "sources": {"2026-01-06": ["unknown"], "2026-01-07": ["unknown"]},  # no source run
        }
        assert ledger["claimed_id"] == ids[2][0]
        again = dag_test("recsys_score", logical_date=pendulum.datetime(2026, 1, 10, tz="UTC"), run_conf={"day": None})
        # A manual run without a date and nothing new to claim fails at once, saying what to set
        # (a run the scheduler made for events already claimed is skipped instead).
        assert _states(again)["plan"] == ["failed"], _states(again)
        assert json.loads(Variable.get(key))["runs"].get(again.run_id) == {"days": [], "events": [], "sources": {}}, (
            Variable.get(key)
        )
    finally:
        Variable.delete(key)


def _accessor(extras: list[dict]):
    from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
    from airflow.sdk.execution_time.context import TriggeringAssetEventsAccessor

    from recsys_airflow.assets import CURATED_EVENTS

    events = [
        AssetEventDagRunReferenceResult(
            asset={"name": CURATED_EVENTS.name, "uri": CURATED_EVENTS.uri, "extra": {}},
            extra=extra,
            source_task_id="publish_curated_event",
            source_dag_id="recsys_ingest",
            source_run_id=f"scheduled__{i}",
            source_map_index=-1,
            source_aliases=[],
            timestamp=datetime(2026, 1, 7, tzinfo=UTC),
        )
        for i, extra in enumerate(extras)
    ]
    return TriggeringAssetEventsAccessor.build(events)


@pytest.mark.unit
def test_days_come_from_the_param_or_every_triggering_curated_event():
    from airflow.sdk.exceptions import AirflowFailException

    from recsys_airflow.champion import days_to_score, score_argv

    folded = _accessor([{"day": "2026-01-05", "rows": 10}, {"day": "2026-01-04"}, {"day": "2026-01-05"}])
    assert days_to_score("", folded) == ["2026-01-04", "2026-01-05"]
    assert days_to_score("2026-01-09", folded) == ["2026-01-09"]  # the param wins
    assert days_to_score(None, _accessor([{"day": "2026-01-06"}])) == ["2026-01-06"]
    with pytest.raises(AirflowFailException, match="set the 'day' param"):
        days_to_score("", _accessor([]))
    with pytest.raises(AirflowFailException, match="has no 'day'"):
        days_to_score("", _accessor([{"rows": 3}]))
    with pytest.raises(AirflowFailException, match="not a calendar day"):
        days_to_score("2026-02-30", None)
    assert score_argv({"day": "2026-01-06", "version": "7"}) == ["--day", "2026-01-06", "--model-version", "7"]


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
    assert dag.max_active_runs == 1  # the claim ledger relies on one claiming run at a time
    assert type(dag.timetable).__name__ == "AssetTriggeredTimetable"
    assert [i.name for i in dag.get_task("plan").inlets] == ["recsys_curated_events"]  # inlet_events
    assert [o.name for o in dag.get_task("publish_recommendations").outlets] == ["recsys_recommendations"]
    score = dag.get_task("score")
    assert score.max_active_tis_per_dagrun == 1
    assert dag.params["day"] is None
