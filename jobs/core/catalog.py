"""The catalog of days: where each zone keeps a day, and what state that day is in.

Every stage asks here, never another stage: the curated files of a day (from its manifest),
whether the day passed validation (the ``_VALIDATION`` marker the validation job writes into
the curated partition), which days are validated, where a report of a day lives, where a
training snapshot lives, and the simulator's ground truth of a day.

A **day** is a ``YYYY-MM-DD`` string (``date`` objects are accepted); its partition folder is
``dt=<day>`` (the Hive convention, only in paths). A **report** of a day is the HTML file
``reports/<kind>/dt=<day>/report.html``; its machine-readable twin ``report.json`` sits beside
it.
"""

from __future__ import annotations

import json
import re
from datetime import date
from typing import Any

from jobs.core import storage
from jobs.core.config import PipelineConfig
from jobs.core.errors import BadArgument, BadInput

VALIDATION_MARKER = "_VALIDATION"
REPORT_KINDS = ("validation", "drift")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def day_text(day: date | str) -> str:
    """``day`` as ``YYYY-MM-DD``; ``BadArgument`` naming the value when it is not a calendar day."""
    text = day.isoformat() if isinstance(day, date) else str(day).strip()
    if not _DAY.match(text):
        raise BadArgument(f"{day!r} is not a day in YYYY-MM-DD form")
    try:
        date.fromisoformat(text)
    except ValueError:
        raise BadArgument(f"{text} is not a calendar day") from None
    return text


def partition(cfg: PipelineConfig, zone: str, day: date | str) -> str:
    """The folder of ``day`` in a day-partitioned zone (``<zone>/dt=<day>``)."""
    return cfg.storage.partition(zone, day_text(day))


def manifest(cfg: PipelineConfig, zone: str, day: date | str) -> dict[str, Any] | None:
    """The published manifest of ``day`` in ``zone``, or None when the day is not published."""
    return storage.read_manifest(partition(cfg, zone, day))


def published_days(cfg: PipelineConfig, zone: str) -> list[str]:
    return storage.published_days(cfg.storage.zone(zone))


def files_of(cfg: PipelineConfig, zone: str, days: list[str] | tuple[str, ...]) -> list[str]:
    """The data files of the published ``days`` of ``zone``, as their manifests list them
    (an unpublished day contributes none)."""
    out: list[str] = []
    for d in days:
        part = partition(cfg, zone, d)
        out += [f"{part}/{name}" for name in (storage.read_manifest(part) or {}).get("files", [])]
    return out


def curated_files(cfg: PipelineConfig, days: list[str] | tuple[str, ...]) -> list[str]:
    """The Parquet files of the curated ``days``."""
    return files_of(cfg, "curated", days)


def validation(cfg: PipelineConfig, day: date | str) -> dict[str, Any] | None:
    """The last validation verdict of a curated day (``success``, ``failures``, ``report``), or None."""
    part = partition(cfg, "curated", day)
    text = storage.read_text(f"{part}/{VALIDATION_MARKER}")
    if text is None:
        return None
    try:
        verdict = json.loads(text)
    except ValueError:
        return None
    if not isinstance(verdict, dict):
        return None
    # A verdict about an earlier publish of the day is stale (on an object store the marker
    # outlives a re-publish until the new one is validated).
    if verdict.get("manifest") and verdict["manifest"] != storage.manifest_digest(part):
        return None
    return verdict


def is_validated(cfg: PipelineConfig, day: date | str) -> bool:
    """True when the curated day is published and its last validation passed."""
    verdict = validation(cfg, day)  # the marker lives inside the published partition
    return bool(verdict and verdict.get("success"))


def validated_days(cfg: PipelineConfig) -> list[str]:
    """Curated days that passed validation, sorted."""
    return [d for d in published_days(cfg, "curated") if is_validated(cfg, d)]


def require_validated(cfg: PipelineConfig, day: date | str, purpose: str) -> str:
    """``day`` as text when it is a validated curated day; ``BadInput`` saying why not otherwise.

    Args:
        purpose: what only validated days are used for ("scored", "monitored", ...).
    """
    text = day_text(day)
    if not is_validated(cfg, text):
        why = "is not published" if manifest(cfg, "curated", text) is None else "did not pass validation"
        where = partition(cfg, "curated", text)
        raise BadInput(f"curated day dt={text} {why} ({where}): only validated days are {purpose}")
    return text


def report_dir(cfg: PipelineConfig, kind: str, day: date | str) -> str:
    """The folder of the ``kind`` report of ``day`` (``reports/<kind>/dt=<day>``)."""
    if kind not in REPORT_KINDS:
        raise ValueError(f"unknown report kind {kind!r}; known: {', '.join(REPORT_KINDS)}")
    return f"{cfg.storage.zone('reports')}/{kind}/dt={day_text(day)}"


def report_html(cfg: PipelineConfig, kind: str, day: date | str) -> str:
    """The report of a day: its HTML page."""
    return f"{report_dir(cfg, kind, day)}/report.html"


def report_json(cfg: PipelineConfig, kind: str, day: date | str) -> str:
    """The machine-readable twin of ``report_html``."""
    return f"{report_dir(cfg, kind, day)}/report.json"


def snapshot_uri(cfg: PipelineConfig, day: date | str, window_days: int) -> str:
    """The training snapshot of (held-out day, window length)."""
    return f"{cfg.storage.zone('training')}/dt={day_text(day)}_w={window_days}"


def read_truth(zone: str, day: date | str) -> dict[str, Any] | None:
    """The ground truth in force on ``day`` in a ground-truth zone (``user_factors``,
    ``item_factors``, ``item_bias``, ``beta``), or None when the zone has none for that day."""
    import io

    import numpy as np

    payload = storage.read_bytes(f"{zone}/dt={day_text(day)}/truth.npz")
    if payload is None:
        return None
    with np.load(io.BytesIO(payload)) as npz:
        return {k: npz[k] for k in npz.files}


def load_truth(cfg: PipelineConfig, day: date | str) -> dict[str, Any] | None:
    """The simulator's ground truth of ``day``, or None for a world without one (real data)."""
    return read_truth(cfg.storage.zone("ground_truth"), day)
