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

Light at import (no mlflow); the registry calls happen inside the functions.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from jobs.core.config import PipelineConfig
from recsys_airflow.claims import check_day, claim_or_skip

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


def resolve_champion(cfg: PipelineConfig) -> dict[str, str] | None:
    """The current champion as ``{"model_name", "version", "run_id"}``, or None when there is none."""
    from jobs.core.tracking import champion

    return champion(cfg)


def champion_or_skip(cfg: PipelineConfig, days: list[str]) -> list[dict[str, str]]:
    """One scoring request per day, all pinned to the champion resolved now; skip when there is none."""
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
    return [{"day": day, **champion} for day in days]


def score_argv(request: dict[str, str]) -> list[str]:
    """``jobs.score`` arguments for one request of ``champion_or_skip``."""
    return ["--day", request["day"], "--model-version", request["version"]]
