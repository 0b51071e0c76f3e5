"""Workloads of the recsys pipeline: plain CLIs, no Airflow import.

* ``jobs.core`` — the contracts every stage shares (config, Spark session, storage and the
  publish protocol, schemas and constants, the catalog of days, the model artifact, ranking
  metrics, MLflow access, the CLI wrapper and its exit codes);
* one package per stage, each a CLI (``python -m jobs.<stage>``): ``ingest``, ``validate``,
  ``snapshot``, ``train``, ``popularity``, ``evaluate``, ``registry``, ``score``, ``monitor``;
  a stage imports ``jobs.core`` and never another stage;
* ``jobs.sim`` — the synthetic event world (the upstream system of the demo and the tests), a
  leaf that only tests, benchmarks and the demo import.

The layer contract is checked by ``make lint`` (import-linter: ``[tool.importlinter]`` in pyproject.toml).
"""
