"""Writers of a zone partition in its declared contract (``jobs.core.schema``), for code that is
not the zone's producing job: tests and benchmarks that need a served day without running
``jobs.score`` import this instead of rebuilding the files and the manifest by hand.

The partition is published like the job publishes it (``jobs.core.storage``: staged, then one
``_SUCCESS`` manifest), locally or on an object store.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from jobs.core import storage
from jobs.core.schema import RecommendationsManifest, recommendations_schema

if TYPE_CHECKING:
    import pyarrow as pa

RECOMMENDATIONS_FILE = "part-00000.parquet"


def recommendations_table(
    user_id: Any, rank: Any, item_id: Any, score: Any, model_version: str, model_run_id: str
) -> pa.Table:
    """Columns (sequences or arrays of equal length) as a table in the recommendations schema."""
    import pyarrow as pa

    schema = recommendations_schema()
    n = len(user_id)
    columns = [user_id, rank, item_id, score, [model_version] * n, [model_run_id] * n]
    return pa.Table.from_arrays([pa.array(c, f.type) for c, f in zip(columns, schema, strict=True)], schema=schema)


def write_recommendations(
    uri: str,
    table: pa.Table,
    *,
    day: str,
    model_name: str,
    k: int,
    source_days: Sequence[str],
    seconds: float = 0.0,
    **extra: Any,
) -> RecommendationsManifest:
    """Publish ``table`` (the schema's columns; ``model_version``/``model_run_id`` taken from its
    first row) as the recommendations partition ``uri`` with its manifest; returns the manifest.

    Args:
        extra: optional manifest keys (``RecommendationsManifest``), e.g. ``unknown_users``.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    schema = recommendations_schema()
    table = table.select(schema.names).cast(schema)
    if table.num_rows == 0:
        raise ValueError("a recommendations partition needs at least one row (its model is read from the rows)")
    manifest = cast(
        RecommendationsManifest,
        {
            "day": day,
            "model_name": model_name,
            "model_version": table.column("model_version")[0].as_py(),
            "model_run_id": table.column("model_run_id")[0].as_py(),
            "k": k,
            "users": len(pc.unique(table.column("user_id"))),
            "rows": table.num_rows,
            "files": [RECOMMENDATIONS_FILE],
            "source_days": list(source_days),
            "seconds": seconds,
            **extra,
        },
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy")
    with storage.staged_partition(uri) as staging:
        storage.write_bytes_atomic(staging / RECOMMENDATIONS_FILE, sink.getvalue())
        storage.publish(staging, uri, dict(manifest))
    return manifest
