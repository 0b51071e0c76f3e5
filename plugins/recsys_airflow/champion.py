"""What one scoring run works on: the curated day and the champion version, resolved once.

* **Day.** ``recsys_score`` runs once per day: a ``recsys_curated_events`` event is keyed by
  its day (partition key) and the DAG runs on a ``PartitionedAssetTimetable``, so the run's
  ``partition_key`` is the day (``recsys_airflow.partitions``). A run started by hand names
  its day with the ``day`` param, which wins.
* **Champion.** ``models:/<name>@champion`` is resolved to a concrete version and its source
  run id exactly once, at the start of the run; the scoring job receives the number
  (``--model-version``), never the alias, so a promotion during the run cannot mix versions.
  Without a champion the run is skipped (``AirflowSkipException``: the task and everything
  downstream end *skipped*, the run succeeds) with a log line that says why.

* **Reprocessed history** (``plan_scoring``, rules in ``recsys_airflow.decisions.scoring_plan``):
  a day already served by another run is never rewritten, and a day that only backfill runs
  published is not scored; both are logged as *held* with the reason. ``rescore`` (with the
  ``day`` param) re-scores a served day into the ``rescored`` zone, beside the record.

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


def plan_scoring(
    cfg: PipelineConfig,
    run_id: str,
    params: Mapping[str, Any],
    partition_key: str | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
) -> dict[str, Any]:
    """The run's plan ``{"days", "zone", "held"}``: its day (``partitions.run_day``) under the
    policy for reprocessed history (``scoring_plan``).

    Raises:
        AirflowSkipException: nothing left to score (the day is held).
        AirflowFailException: ``rescore`` without a ``day``; what ``run_day`` raises.
    """
    from jobs.core import catalog

    day_param = params.get("day")
    explicit = bool(day_param and str(day_param).strip())
    if params.get("rescore") and not explicit:
        raise AirflowFailException("rescore re-scores one served day: set the 'day' param (YYYY-MM-DD) too")
    day, published_by = run_day(day_param, partition_key, triggering_asset_events, NOTHING)
    manifest = catalog.manifest(cfg, "recommendations", day)
    served_by = {} if manifest is None else {day: manifest.get("served_by")}
    plan = scoring_plan(
        [day], run_id=run_id, served_by=served_by, sources={day: published_by}, rescore=bool(params.get("rescore"))
    )
    for held, why in plan.held.items():
        log.warning("dt=%s held, not scored: %s (sources: %s)", held, why, ", ".join(published_by) or "-")
    if not plan.score:
        raise AirflowSkipException(
            f"nothing to score: every day is held ({'; '.join(f'{d}: {w}' for d, w in plan.held.items())})"
        )
    log.info("scoring %s into %s", ", ".join(plan.score), plan.zone)
    return {"days": plan.score, "zone": plan.zone, "held": plan.held}


def resolve_champion(cfg: PipelineConfig) -> dict[str, str] | None:
    """The current champion as ``{"model_name", "version", "run_id"}``, or None when there is none."""
    from jobs.core.tracking import champion

    return champion(cfg)


def champion_or_skip(
    cfg: PipelineConfig, days: list[str], zone: str | None = None, served_by: str | None = None
) -> list[dict[str, str]]:
    """One scoring request per day, all pinned to the champion resolved now; skip when there is none.

    ``zone`` and ``served_by`` (this Airflow run's id) travel to the job (``score_argv``)."""
    champion = resolve_champion(cfg)
    if champion is None:
        message = (
            f"no champion: model {cfg.mlflow.model_name!r} has no 'champion' alias in the registry "
            f"({cfg.mlflow.public_url}); skipping the scoring of {', '.join(days)} — "
            "run recsys_train (or promote a version) first"
        )
        log.warning(message)
        raise AirflowSkipException(message)
    log.info(
        "champion of %s resolved once for this run: version %s (run %s); scoring %s",
        champion["model_name"],
        champion["version"],
        champion["run_id"],
        ", ".join(days),
    )
    extra = {k: v for k, v in (("zone", zone), ("served_by", served_by)) if v}
    return [{"day": day, **champion, **extra} for day in days]


def score_argv(request: dict[str, str]) -> list[str]:
    """``jobs.score`` arguments for one request of ``champion_or_skip``."""
    argv = ["--day", request["day"], "--model-version", request["version"]]
    if request.get("zone"):
        argv += ["--zone", request["zone"]]
    if request.get("served_by"):
        argv += ["--served-by", request["served_by"]]
    return argv
