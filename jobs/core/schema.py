"""The data contracts of the zones: column names, types and the value sets rules refer to.

One place for each: the landing contract (what the upstream delivers; the simulator writes it),
the curated schema (what ingest publishes and every reader relies on), the positive event
types (what counts as an interaction for training, scoring exclusions and online metrics), the
recommendations schema and manifest (what scoring publishes and the monitor reads) and the
model artifact's file name.

No ``from __future__ import annotations``: ``NotRequired`` must stay visible to ``TypedDict``.
"""

from typing import TYPE_CHECKING, NotRequired, TypedDict

if TYPE_CHECKING:
    import pyarrow as pa

EVENT_TYPES = ("impression", "click", "play", "rating")
POSITIVE_TYPES = ("click", "play", "rating")
DEVICES = ("tv", "mobile", "web", "tablet")
LANDING_COLUMNS = (
    "event_id",
    "user_id",
    "item_id",
    "event_type",
    "ts",
    "watch_seconds",
    "rating",
    "device",
    "country",
)
REQUIRED_COLUMNS = ("event_id", "user_id", "item_id", "event_type", "ts")
# Context columns a source may lack (a plain ratings log has neither): null, never invented;
# checked against ``DEVICES`` / ISO-3166 alpha-2 when present.
CONTEXT_COLUMNS = ("device", "country")
OPTIONAL_COLUMNS = ("watch_seconds", "rating", *CONTEXT_COLUMNS)
CURATED_COLUMNS = LANDING_COLUMNS
MAX_WATCH_SECONDS = 86_400.0
# The model artifact every trainer of the MF family writes and scoring / drift read.
MODEL_FILE = "recsys.npz"
MODEL_ARRAYS = ("user_factors", "item_factors", "item_bias", "user_ids", "item_ids", "popularity", "seen_indptr")
# The drift reference of a training window: written by the snapshot, logged with the model.
REFERENCE_FILE = "reference_stats.json"
REFERENCE_ARTIFACT = f"reference/{REFERENCE_FILE}"


def curated_schema() -> "pa.Schema":
    """The curated Parquet schema (timestamps as UTC microseconds; every field nullable in the
    file, as written since the first day, so that all days read as one dataset)."""
    import pyarrow as pa

    types = {"user_id": pa.int64(), "item_id": pa.int64(), "ts": pa.timestamp("us", tz="UTC")}
    types |= {"watch_seconds": pa.float64(), "rating": pa.int32()}
    return pa.schema([(c, types.get(c, pa.string())) for c in CURATED_COLUMNS])


def schema_text(schema: "pa.Schema") -> list[str]:
    """``name:type`` per field, as manifests record a schema (Spark's SQL type names)."""
    names = {"int64": "bigint", "int32": "int", "string": "string", "double": "double"}
    return [f"{f.name}:{'timestamp' if str(f.type).startswith('timestamp') else names[str(f.type)]}" for f in schema]


def recommendations_schema() -> "pa.Schema":
    """The recommendations Parquet schema: one row per (user, rank), the model on every row."""
    import pyarrow as pa

    return pa.schema(
        [
            pa.field("user_id", pa.int64(), nullable=False),
            pa.field("rank", pa.int32(), nullable=False),
            pa.field("item_id", pa.int64(), nullable=False),
            pa.field("score", pa.float32(), nullable=False),
            pa.field("model_version", pa.string(), nullable=False),
            pa.field("model_run_id", pa.string(), nullable=False),
        ]
    )


class RecommendationsManifest(TypedDict):
    """The ``_SUCCESS`` manifest of ``recommendations/dt=D/`` (written by ``jobs.score``; the
    monitor and the DAGs read it). The optional keys describe how the scoring job ran."""

    day: str
    model_name: str
    model_version: str
    model_run_id: str
    k: int
    users: int
    rows: int
    files: list[str]
    source_days: list[str]
    seconds: float
    unknown_users: NotRequired[int]
    exclusion_days: NotRequired[list[str]]
    skipped_days: NotRequired[list[str]]
    training_window_end: NotRequired[str | None]
    device: NotRequired[list[str]]
    columns: NotRequired[list[str]]
    stages: NotRequired[dict[str, float]]
    served_by: NotRequired[str | None]
