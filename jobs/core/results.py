"""What each job returns: its result JSON (``--result-file``, the pod's XCom file) as a declared type.

A job's ``run()`` returns one of these; ``jobs.core.cli.run_job`` adds ``cost`` and writes it;
the DAGs read its keys from XCom (``train.output["run_id"]``, ``ingested["quarantined"]``).
TypedDicts keep the JSON and the XComs exactly as they were: a declaration, not a wrapper.
Keys typed ``OutputUri`` name a dataset the job wrote: the launcher reports them to lineage
(``LINEAGE_OUTPUT_KEYS`` is derived from these declarations, never listed by hand).

No ``from __future__ import annotations`` here: the declarations are read at run time
(``get_type_hints``) and ``NotRequired`` must stay visible to ``TypedDict``.
"""

import types
import typing
from typing import Annotated, Any, NotRequired, TypedDict

from jobs.core.schema import RecommendationsManifest

LINEAGE_OUTPUT = "lineage-output"
OutputUri = Annotated[str, LINEAGE_OUTPUT]  # a key whose value is a dataset the job wrote


class Cost(TypedDict):
    """What producing a result cost (``jobs.core.cli.cost_since``)."""

    wall_s: float
    cpu_s: float
    peak_rss_mib: float
    gpu_s: float


class IngestResult(TypedDict):
    """``python -m jobs.ingest``: the curated manifest of the day plus where both zones were published."""

    day: str
    rows: int
    input_rows: int
    quarantined: int
    duplicates_removed: int
    conflicting_duplicates: int
    users: int
    items: int
    input_files: list[str]
    input_bytes: int
    files: list[str]
    schema: list[str]
    reasons: dict[str, int]
    quarantine_share: float
    curated_uri: OutputUri
    quarantine_uri: OutputUri
    tasks: list[dict[str, Any]]
    executors: list[str]
    spark: dict[str, Any]
    stages: dict[str, float]
    seconds: float
    cost: NotRequired[Cost]


class ValidationResult(TypedDict):
    """``python -m jobs.validate``: the verdict on one curated day and where its reports are."""

    day: str
    success: bool
    failures: list[str]
    rows: int
    volume: str
    quarantined: int
    quarantine_share: float
    parameters: dict[str, Any]
    report_html: OutputUri
    report_json: OutputUri
    engine: str
    expectations: int
    seconds: float
    cost: NotRequired[Cost]


class SnapshotResult(TypedDict):
    """``python -m jobs.snapshot``: the snapshot's ``_SUCCESS`` manifest plus its URI."""

    day: str
    window_days: int
    window_start: str
    window_end: str
    train_days: list[str]
    skipped_days: list[str]
    n_users: int
    n_items: int
    train_rows: int
    test_rows: int
    test_users: int
    positive_types: list[str]
    reference_stats: str
    files: list[str]
    content_hash: str
    uri: OutputUri
    seconds: float
    cost: NotRequired[Cost]


class TrainResult(TypedDict):
    """Every trainer (``jobs.train``, ``jobs.seq``, ``jobs.ease``, ``jobs.popularity``).

    A cache hit (``cached`` true) names the registered version (``cached_version``) and trains
    nothing; a trained run carries its metrics, snapshot and fingerprint; the torch families add
    their epochs and device, EASE its λ and family.
    """

    cached: bool
    cache_key: str
    run_id: str
    model_uri: OutputUri
    k: int
    cached_version: NotRequired[str]
    run_model_uri: NotRequired[str]
    experiment_id: NotRequired[str]
    metrics: NotRequired[dict[str, float]]
    snapshot: NotRequired[str]
    snapshot_day: NotRequired[str | None]
    fingerprint: NotRequired[str]
    family: NotRequired[str]
    l2: NotRequired[float]
    epochs_done: NotRequired[int]
    epochs_cut: NotRequired[int]
    samples_per_s: NotRequired[float]
    world_size: NotRequired[int]
    device: NotRequired[str]
    checkpoint_dir: NotRequired[str]
    cost: NotRequired[Cost]


class GateResult(TypedDict):
    """``python -m jobs.evaluate gate``: the promotion decision and its evidence."""

    blessed: bool
    reason: str
    k: int
    metrics: dict[str, dict[str, float]]
    evidence: dict[str, Any]
    champion_version: str | None
    run_id: str
    experiment_id: str
    day: str
    cost: NotRequired[Cost]


class InfraResult(TypedDict):
    """``python -m jobs.evaluate infra``: the registered model loaded and scored a smoke batch."""

    model_uri: str
    smoke_users: int
    k: int
    seconds: float
    cost: NotRequired[Cost]


class RegistrationResult(TypedDict):
    """``python -m jobs.registry register``: the version (``candidates``: a tournament's)."""

    name: str
    version: str
    model_uri: OutputUri
    reused: bool
    tags: dict[str, str]
    model_card: str
    run_id: str
    experiment_id: str
    candidates: NotRequired[list[dict[str, Any]]]
    cost: NotRequired[Cost]


class PromotionResult(TypedDict):
    """``python -m jobs.registry promote``: whether champion moved (``already_champion``: no)."""

    promoted: bool
    version: str
    decision: str
    previous: NotRequired[str | None]
    champion: NotRequired[str | None]
    reason: NotRequired[str]
    cost: NotRequired[Cost]


class RollbackResult(TypedDict):
    """``python -m jobs.registry rollback``."""

    champion: str
    previous_champion: str | None
    reason: str
    actor: str
    cost: NotRequired[Cost]


ReviewResult = TypedDict(
    "ReviewResult",
    {
        "model": str,
        "version": str,
        "review.decision": str,
        "review.by": str,
        "review.reason": str,
        "review.at": str,
        "card_updated": bool,
        "cost": NotRequired[Cost],
    },
)
"""``python -m jobs.registry review``: the version's review tags (``review.*``) as written."""


class AliasesResult(TypedDict):
    """``python -m jobs.registry show``: the version each alias points at (None: unset)."""

    champion: str | None
    challenger: str | None
    previous_champion: str | None


class ScoreResult(RecommendationsManifest):
    """``python -m jobs.score``: the manifest of the day's published recommendations partition
    (``jobs.core.schema.RecommendationsManifest``) plus where it is and how the work ran."""

    uri: OutputUri
    zone: str
    partitions: int
    worker_processes: int
    executors: list[str]
    model_loads: int
    cost: NotRequired[Cost]


class MonitorResult(TypedDict):
    """``python -m jobs.monitor``: the day's drift and performance, the retrain decision and
    where its reports are."""

    day: str
    model_version: str
    retrain: bool
    reason: str
    drift_alert: bool
    alerts: list[str]
    drifted_features: list[str]
    hit_rate: float | None
    recall: float | None
    decay: float | None
    report_json: OutputUri
    report_html: OutputUri
    run_id: str
    experiment_id: str
    cost: NotRequired[Cost]


class ImportResult(TypedDict):
    """``python -m jobs.importer movielens``: the import manifest (also under ``<landing>/_imports/``)."""

    source: str
    source_file: str
    source_sha256: str
    format: str
    first_day: str
    last_day: str
    days: int
    empty_days: list[str]
    rows: int
    rows_per_day: dict[str, int]
    source_rows: int
    outside_range: int
    rounded_ratings: int
    manifest_uri: str
    days_written: int
    cost: NotRequired[Cost]


RESULTS: tuple[type, ...] = (
    IngestResult,
    ValidationResult,
    SnapshotResult,
    TrainResult,
    GateResult,
    InfraResult,
    RegistrationResult,
    PromotionResult,
    RollbackResult,
    ReviewResult,
    AliasesResult,
    ScoreResult,
    MonitorResult,
    ImportResult,
)


def keys(result_type: type) -> frozenset[str]:
    """Every key a declared result may hold."""
    return frozenset(result_type.__required_keys__ | result_type.__optional_keys__)  # type: ignore[attr-defined]


def _strip(hint: Any) -> Any:
    """The value type of a declared key (without ``NotRequired``/``Required``/``Annotated``)."""
    while True:
        origin = typing.get_origin(hint)
        if origin in (NotRequired, typing.Required):
            (hint,) = typing.get_args(hint)
        elif origin is Annotated:
            hint = typing.get_args(hint)[0]
        else:
            return hint


def _matches(value: Any, hint: Any) -> bool:
    """Whether a JSON value fits a declared type (containers checked one level: list/dict, not items)."""
    hint = _strip(hint)
    if hint is Any:
        return True
    if hint is None or hint is type(None):
        return value is None
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is not None:
        return isinstance(value, origin)
    if typing.is_typeddict(hint):
        return isinstance(value, dict) and not problems(hint, value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint)


def problems(result_type: type, result: dict[str, Any]) -> list[str]:
    """What keeps ``result`` (a job's result, or its JSON read back) from being a ``result_type``:
    missing required keys, undeclared keys and values of another type; empty when it conforms."""
    hints = typing.get_type_hints(result_type, include_extras=True)
    found = [f"missing key {k!r}" for k in sorted(result_type.__required_keys__ - result.keys())]  # type: ignore[attr-defined]
    found += [f"undeclared key {k!r}" for k in sorted(result.keys() - hints.keys())]
    found += [
        f"{k!r} is {type(v).__name__}, declared {_strip(hints[k])}"
        for k, v in result.items()
        if k in hints and not _matches(v, hints[k])
    ]
    return found


def _is_output(hint: Any) -> bool:
    while typing.get_origin(hint) in (NotRequired, typing.Required):
        (hint,) = typing.get_args(hint)
    return LINEAGE_OUTPUT in getattr(hint, "__metadata__", ())


def lineage_output_keys() -> tuple[str, ...]:
    """The keys typed ``OutputUri`` in any declared result, sorted: what lineage reports as outputs."""
    found = {
        name
        for result_type in RESULTS
        for name, hint in typing.get_type_hints(result_type, include_extras=True).items()
        if _is_output(hint)
    }
    return tuple(sorted(found))


LINEAGE_OUTPUT_KEYS = lineage_output_keys()
