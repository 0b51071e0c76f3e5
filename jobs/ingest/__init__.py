"""Ingestion: one landing day → curated Parquet and its quarantine (``python -m jobs.ingest``).

``job`` is the driver and the CLI; ``rows`` and ``buckets`` are the Arrow kernels that run in
Spark's Python workers.
"""
