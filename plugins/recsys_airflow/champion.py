"""What one scoring run works on: the curated day(s) and the champion version, resolved once.

* **Days.** A run of ``recsys_score`` is started by ``recsys_curated_events`` Asset events
  (one per validated day, ``extra["day"]``) or by hand with the ``day`` param. The scheduler
  may fold several events into one run (days validated while the previous run was busy), and
  may leave an event without any run (``recsys_airflow.claims``): a run claims every event no
  earlier run claimed and scores each of their days, in order, so no validated day is left
  without recommendations. A non-empty ``day`` param wins over the events.
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
from recsys_airflow.claims import check_day, claim_or_skip, claimed_sources
from recsys_airflow.decisions import scoring_plan

log = logging.getLogger(__name__)
NOTHING = "nothing to score: set the 'day' param (YYYY-MM-DD) or let a recsys_curated_events event trigger the run"


def days_to_score(day_param: str | None, triggering_asset_events: Mapping[Any, Iterable[Any]] | None) -> list[str]:
    """Sorted distinct days to score: the ``day`` param, else every triggering event's ``dt``.

    Args:
        day_param: the run's ``day`` param (``""`` = take the days from the events).
        triggering_asset_events: the task context's ``triggering_asset_events`` (asset →
            events with an ``extra`` dict), empty for a manual run.

    Raises:
        AirflowFailException: no day at all, or a malformed one (retrying would not help).
    """
    if day_param and str(day_param).strip():
        return [check_day(day_param, "param day")]
    days = set()
    for asset in triggering_asset_events or {}:
        for event in triggering_asset_events[asset]:
            extra = getattr(event, "extra", None) or {}
            if "day" not in extra:
                raise AirflowFailException(f"asset event of {getattr(asset, 'name', asset)} has no 'day' in {extra}")
            days.add(check_day(extra["day"], f"asset event of {getattr(asset, 'name', asset)}"))
    if not days:
        raise AirflowFailException(NOTHING)
    return sorted(days)


def claim_days_to_score(
    consumer: str,
    run_id: str,
    day_param: str | None,
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    curated_events: Any,
) -> list[str]:
    """The days a scoring run works on: the ``day`` param, else the curated events it claims.

    A run started by hand with a ``day`` scores that day and claims nothing. Otherwise the run
    claims every ``recsys_curated_events`` event no earlier run claimed
    (``recsys_airflow.claims``), which also catches an event Airflow left without a run.

    Raises:
        AirflowSkipException: every event was claimed by earlier runs (nothing new).
        AirflowFailException: no ``day``, no triggering event and no ledger; or a bad day.
    """
    if day_param and str(day_param).strip():
        return days_to_score(day_param, None)
    return claim_or_skip(consumer, run_id, "recsys_curated_events", triggering_asset_events, curated_events, NOTHING)


def plan_scoring(
    cfg: PipelineConfig,
    consumer: str,
    run_id: str,
    params: Mapping[str, Any],
    triggering_asset_events: Mapping[Any, Iterable[Any]] | None,
    curated_events: Any,
) -> dict[str, Any]:
    """The run's plan ``{"days", "zone", "held"}``: ``claim_days_to_score`` under the policy for
    reprocessed history (``scoring_plan``).

    Raises:
        AirflowSkipException: nothing left to score (every day held, or nothing new).
        AirflowFailException: ``rescore`` without a ``day``; what ``claim_days_to_score`` raises.
    """
    from jobs.core import catalog

    day_param = params.get("day")
    explicit = bool(day_param and str(day_param).strip())
    if params.get("rescore") and not explicit:
        raise AirflowFailException("rescore re-scores one served day: set the 'day' param (YYYY-MM-DD) too")
    days = claim_days_to_score(consumer, run_id, day_param, triggering_asset_events, curated_events)
    sources = {} if explicit else claimed_sources(consumer, run_id)
    served_by = {}
    for day in days:
        manifest = catalog.manifest(cfg, "recommendations", day)
        if manifest is not None:
            served_by[day] = manifest.get("served_by")
    plan = scoring_plan(days, run_id=run_id, served_by=served_by, sources=sources, rescore=bool(params.get("rescore")))
    for day, why in plan.held.items():
        log.warning("dt=%s held, not scored: %s (sources: %s)", day, why, ", ".join(sources.get(day, [])) or "-")
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
