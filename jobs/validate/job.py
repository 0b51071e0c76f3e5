"""Great Expectations validation of one curated day.

``python -m jobs.validate --day YYYY-MM-DD [--engine pandas|spark]``

Two suites from ``include/expectations/`` run with GX 1.x (the library itself; its Airflow
provider does not install beside Airflow 3.3):

* ``curated_events`` on the day's curated Parquet: schema, non-null keys, enum sets, value
  ranges, timestamps inside the logical day, unique ``event_id`` and a row count within robust
  bounds from the recent observed days (``jobs.validate.volume``; an empty day follows
  ``ingest.empty_day``);
* ``ingest_run`` on one row built from the ingestion manifests: share of quarantined rows.

Run-time values (day bounds, row-count bounds, thresholds) are GX suite parameters filled from
the config and the manifests of recent days. The job writes ``reports/validation/dt=D/``
(``report.html`` for people, ``report.json`` for machines) and a ``_VALIDATION`` marker in the
curated partition that downstream readers require (``jobs.core.catalog.is_validated``). Exit
code 0 = passed, 4 = failed (the message names the day and every failed expectation), 3 =
nothing to validate, 1 = the report or the marker could not be written (retried).

Engine: ``pandas`` reads the partition with pyarrow (fast for a day on one machine); ``spark``
validates a Spark DataFrame (the cluster profile, for days that do not fit one worker).
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, date, datetime, timedelta
from typing import Any

from jobs.core import catalog, storage
from jobs.core.cli import BadInput, CheckFailed, run_job
from jobs.core.config import REPO_ROOT, PipelineConfig
from jobs.core.results import ValidationResult
from jobs.validate import volume
from jobs.validate.report import render_html
from jobs.validate.volume import VolumeRule

SUITES_DIR = REPO_ROOT / "include" / "expectations"


class ValidationError(BadInput):
    """Nothing to validate (no published partition)."""


def load_suite(name: str) -> dict[str, Any]:
    return json.loads((SUITES_DIR / f"{name}.json").read_text())


def volume_rule(cfg: PipelineConfig) -> VolumeRule:
    """The volume rule's knobs from the ``ingest`` section of the config."""
    i = cfg.ingest
    return VolumeRule(
        i.recent_days,
        i.volume_mads,
        i.min_ratio_to_recent,
        i.max_ratio_to_recent,
        i.min_rows,
        i.empty_day,
        i.volume_min_days,
    )


def observed_counts(cfg: PipelineConfig, day: date, days: int) -> list[int]:
    """Row counts of the published curated days among the ``days`` before ``day`` (validated
    or refused: every published day is an observation; an unpublished day is none)."""
    zone = cfg.storage.zone("curated")
    manifests = (
        storage.read_manifest(f"{zone}/dt={(day - timedelta(days=b)).isoformat()}") for b in range(days, 0, -1)
    )
    return [int(m["rows"]) for m in manifests if m]


def parameters(cfg: PipelineConfig, day: date, rows: int | None = None) -> dict[str, Any]:
    """Suite parameters for ``day`` of ``rows`` rows (None: judged as non-empty): time bounds and
    row-count bounds from the observed recent history (``jobs.validate.volume``)."""
    rule = volume_rule(cfg)
    history = observed_counts(cfg, day, rule.window_days)
    min_rows, max_rows = volume.row_count_bounds(1 if rows is None else rows, history, rule)
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {
        "min_ts": start,
        "max_ts": start + timedelta(days=1) - timedelta(microseconds=1),
        "min_rows": min_rows,
        "max_rows": max_rows,
        "max_quarantine_share": cfg.ingest.max_quarantine_share,
        "recent_days_rows": history,
    }


def _gx_run(batch_frames: dict[str, Any], params: dict[str, Any], engine: str) -> dict[str, Any]:
    """Run each suite on its frame; returns {suite: validation result JSON}."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    source = context.data_sources.add_spark("spark") if engine == "spark" else context.data_sources.add_pandas("pandas")
    results = {}
    for suite_name, frame in batch_frames.items():
        spec = load_suite(suite_name)
        suite = context.suites.add(
            gx.ExpectationSuite(name=spec["name"], expectations=spec["expectations"], meta=spec.get("meta"))
        )
        if engine == "spark" and suite_name == "curated_events":
            asset = source.add_dataframe_asset(name=suite_name)
        else:
            asset = (
                source.add_dataframe_asset(name=suite_name)
                if engine != "spark"
                else context.data_sources.add_or_update_pandas("pandas_small").add_dataframe_asset(name=suite_name)
            )
        batch_def = asset.add_batch_definition_whole_dataframe(f"{suite_name}_whole")
        vdef = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{suite_name}_vd", data=batch_def, suite=suite)
        )
        result = vdef.run(batch_parameters={"dataframe": frame}, expectation_parameters=params)
        results[suite_name] = result.to_json_dict()
    return results


def _failures(results: dict[str, Any]) -> list[str]:
    out = []
    for suite_name, res in results.items():
        for r in res["results"]:
            if r["success"]:
                continue
            cfg = r["expectation_config"]
            kwargs = cfg.get("kwargs", {})
            col = f"({kwargs['column']})" if "column" in kwargs else ""
            detail = r.get("result", {})
            if "unexpected_count" in detail:
                info = f"{detail['unexpected_count']} unexpected, e.g. {detail.get('partial_unexpected_list', [])[:3]}"
            elif "observed_value" in detail:
                info = f"observed {detail['observed_value']}"
            elif r.get("exception_info", {}).get("raised_exception"):
                info = f"error: {r['exception_info'].get('exception_message')}"
            else:
                info = "failed"
            out.append(f"{suite_name}.{cfg['type']}{col}: {info}")
    return out


def _frames(cfg: PipelineConfig, day: str, manifest: dict[str, Any], engine: str, spark: Any) -> tuple[Any, Any]:
    """(curated events of the day, the one-row ingest summary) for the two suites."""
    import pandas as pd

    files = catalog.curated_files(cfg, [day])
    if engine == "spark":
        from jobs.core.spark import read_parquet

        data = read_parquet(spark, files)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        data = pa.concat_tables([pq.read_table(f) for f in files]).to_pandas()
    quarantined = int((catalog.manifest(cfg, "quarantine", day) or {"rows": 0})["rows"])
    input_rows = int(manifest.get("input_rows", manifest["rows"]))
    run_row = pd.DataFrame(
        [
            {
                "rows": int(manifest["rows"]),
                "quarantined": quarantined,
                "quarantine_share": (quarantined / input_rows) if input_rows else 0.0,
            }
        ]
    )
    return data, run_row


def validate_day(cfg: PipelineConfig, day: date | str, engine: str = "pandas", spark: Any = None) -> ValidationResult:
    """Validate one curated day; writes the report and the verdict marker; returns the summary.

    ``engine="spark"`` validates a Spark DataFrame read through ``spark`` (a Connect session).

    Raises:
        ValidationError: the day is not published (nothing to validate).
    """
    started = time.perf_counter()
    day = catalog.day_text(day)
    manifest = catalog.manifest(cfg, "curated", day)
    if manifest is None:
        where = catalog.partition(cfg, "curated", day)
        raise ValidationError(f"no published curated partition for dt={day} at {where}")
    digest = storage.manifest_digest(catalog.partition(cfg, "curated", day))  # the verdict is about this
    params = parameters(cfg, date.fromisoformat(day), int(manifest["rows"]))
    data, run_row = _frames(cfg, day, manifest, engine, spark)
    gx_params = {k: v for k, v in params.items() if k != "recent_days_rows"}
    results = _gx_run({"curated_events": data, "ingest_run": run_row}, gx_params, engine)
    rows = int(manifest["rows"])
    _, why = volume.judge(rows, params["recent_days_rows"], volume_rule(cfg))
    failures = [f"{f} ({why})" if "row_count" in f or "(rows)" in f else f for f in _failures(results)]
    summary = {
        "day": day,
        "success": not failures,
        "failures": failures,
        "rows": rows,
        "volume": why,
        "quarantined": int(run_row["quarantined"].iloc[0]),
        "quarantine_share": float(run_row["quarantine_share"].iloc[0]),
        "parameters": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in params.items()},
        "report_html": catalog.report_html(cfg, "validation", day),
        "report_json": catalog.report_json(cfg, "validation", day),
        "engine": engine,
        "expectations": sum(len(r["results"]) for r in results.values()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    storage.write_text_atomic(
        summary["report_html"], render_html(day, not failures, results, summary["parameters"], manifest)
    )
    storage.write_json_atomic(summary["report_json"], {"summary": summary, "results": results})
    storage.write_json_atomic(
        f"{catalog.partition(cfg, 'curated', day)}/{catalog.VALIDATION_MARKER}",
        {
            "success": not failures,
            "failures": failures,
            "report": summary["report_html"],
            "rows": summary["rows"],
            "manifest": digest,
        },
    )
    return summary


def run(cfg: PipelineConfig, args: argparse.Namespace) -> ValidationResult:
    if args.engine == "spark":
        from jobs.core.spark import spark_session

        with spark_session(cfg, "validate") as spark:
            summary = validate_day(cfg, args.day, args.engine, spark)
    else:
        summary = validate_day(cfg, args.day, args.engine)
    if not summary["success"]:
        raise CheckFailed(f"dt={summary['day']}: " + "; ".join(summary["failures"]), result=summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.validate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--day", required=True, type=date.fromisoformat, help="curated day YYYY-MM-DD")
    ap.add_argument("--engine", choices=("pandas", "spark"), default="pandas")
    return run_job(
        "validation",
        ap,
        run,
        argv,
        ledger=lambda r: f"validate/dt={r['day']}",
        summary=lambda s: f"dt={s['day']}: {s['expectations']} expectations, PASSED; report {s['report_html']}",
    )
