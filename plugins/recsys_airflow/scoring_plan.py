"""The scoring plan of one run: its curated day and the champion version, resolved once.

* **Day.** ``recsys_score`` runs once per day: a ``recsys_curated_events`` event is keyed by
  its day (partition key) and the DAG runs on a ``PartitionedAssetTimetable``, so the run's
  ``partition_key`` is the day (``recsys_airflow.partitions``). A run started by hand names
  its day with the ``day`` param, which wins.
* **Reprocessed history** (``plan_day``, rules in ``recsys_airflow.decisions.scoring_plan``):
  a day already served by another run is never rewritten, and a day that only backfill runs
  published is not scored; both skip the run with the reason. ``rescore`` (with the ``day``
  param) re-scores a served day into the ``rescored`` zone, beside the record.
* **Champion.** ``models:/<name>@champion`` is resolved to a concrete version and its source
  run id exactly once, at the start of the run (``pin_champion``); the scoring job receives the
  number (``--model-version``), never the alias, so a promotion during the run cannot mix
  versions. Without a champion the run is skipped (``AirflowSkipException``: the task and
  everything downstream end *skipped*, the run succeeds) with a log line that says why.

Light at import (no mlflow); the registry calls happen inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from jobs.core.config import PipelineConfig
from recsys_airflow.decisions import scoring_plan
from recsys_airflow.partitions import run_day

log = logging.getLogger(__name__)
NOTHING = "nothing to score: set the 'day' param (YYYY-MM-DD) or let a recsys_curated_events event trigger the run"


def plan_day(
    cfg: PipelineConfig,
    run_id: str,
    params: Mapping[str, Any],
    partition_key: str | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
) -> dict[str, str]:
    """The run's ``{"day", "zone"}``: its day (``partitions.run_day``) under the policy for
    reprocessed history (``scoring_plan``).

    Raises:
        AirflowSkipException: the day is held (served already, or published by backfills only).
        AirflowFailException: ``rescore`` without a ``day``; what ``run_day`` raises.
    """
    from jobs.core import catalog

    day_param = params.get("day")
    rescore = bool(params.get("rescore"))
    if rescore and not (day_param and str(day_param).strip()):
        raise AirflowFailException("rescore re-scores one served day: set the 'day' param (YYYY-MM-DD) too")
    day, published_by = run_day(day_param, partition_key, triggering_asset_events, NOTHING)
    plan = scoring_plan(
        day,
        run_id=run_id,
        served=catalog.manifest(cfg, "recommendations", day),
        sources=published_by,
        rescore=rescore,
    )
    if plan.held:
        sources = ", ".join(published_by) or "-"
        log.warning("dt=%s held, not scored: %s (sources: %s)", day, plan.held, sources)
        raise AirflowSkipException(f"nothing to score: dt={day} is held ({plan.held})")
    log.info("scoring dt=%s into %s", plan.day, plan.zone)
    return {"day": plan.day, "zone": plan.zone}


def pin_champion(cfg: PipelineConfig, planned: Mapping[str, str], served_by: str) -> dict[str, str]:
    """The scoring request of the planned day, pinned to the champion resolved now; skip when there is none.

    Args:
        cfg: the pipeline configuration (registry, model name).
        planned: ``plan_day``'s ``{"day", "zone"}``.
        served_by: this Airflow run's id, recorded in the manifest.

    Returns:
        ``{"day", "zone", "served_by", "model_name", "version", "run_id"}``: the job's argv.
    """
    from jobs.core.tracking import champion as current_champion

    champion = current_champion(cfg)  # {"model_name", "version", "run_id"}, or None
    if champion is None:
        message = (
            f"no champion: model {cfg.mlflow.model_name!r} has no 'champion' alias in the registry "
            f"({cfg.mlflow.public_url}); skipping the scoring of {planned['day']} — "
            "run recsys_train (or promote a version) first"
        )
        log.warning(message)
        raise AirflowSkipException(message)
    log.info(
        "champion of %s resolved once for this run: version %s (run %s); scoring %s",
        champion["model_name"],
        champion["version"],
        champion["run_id"],
        planned["day"],
    )
    return {"day": planned["day"], **champion, "zone": planned["zone"], "served_by": served_by}
