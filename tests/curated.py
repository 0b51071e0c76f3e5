"""A generated day published as ``jobs.ingest`` would publish it: shared by the drift and monitor tests."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from jobs import sim as gen
from jobs.core import storage


def curate(cfg, params: gen.WorldParams, day: date) -> pa.Table:
    """Publish one curated day (deduplicated, curated types) and mark it validated; returns the table."""
    table, _ = gen.generate_day(params, day)
    _, first = np.unique(table.column("event_id").to_numpy(zero_copy_only=False), return_index=True)
    table = table.take(pa.array(np.sort(first)))
    table = table.set_column(
        table.schema.get_field_index("ts"), "ts", pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC"))
    )
    table = table.set_column(table.schema.get_field_index("rating"), "rating", table.column("rating").cast(pa.int32()))
    part = cfg.storage.partition("curated", day)
    with storage.staged_partition(part) as staging:
        pq.write_table(table, staging / "part-00000.parquet")
        storage.publish(
            staging, part, {"day": day.isoformat(), "rows": table.num_rows, "files": ["part-00000.parquet"]}
        )
    (storage.local_path(part) / "_VALIDATION").write_text(json.dumps({"success": True}))
    return table
