"""Great Expectations validation of one curated day.

``python -m jobs.validate --date YYYY-MM-DD [--engine pandas|spark]``

Two suites from ``include/expectations/`` run with GX 1.x (the library itself; its Airflow
provider does not install beside Airflow 3.3):

* ``curated_events`` on the day's curated Parquet: schema, non-null keys, enum sets, value
  ranges, timestamps inside the logical day, unique ``event_id`` and a row count bounded by
  the median of the recent validated days;
* ``ingest_run`` on one row built from the ingestion manifests: share of quarantined rows.

Run-time values (day bounds, row-count bounds, thresholds) are GX suite parameters filled from
the config and the manifests of recent days. The job writes ``reports/validation/dt=D/``
(``report.html`` for people, ``result.json`` for machines) and a ``_VALIDATION`` marker in the
curated partition that downstream readers require. Exit code 0 = passed, 4 = failed (the
message names the day and every failed expectation), 3 = nothing to validate.

Engine: ``pandas`` reads the partition with pyarrow (fast for a day on one machine); ``spark``
validates a Spark DataFrame (the cluster profile, for days that do not fit one worker).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import statistics
import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs import storage
from jobs.config import REPO_ROOT, ConfigError, PipelineConfig, get_config

SUITES_DIR = REPO_ROOT / "include" / "expectations"
VALIDATION_MARKER = "_VALIDATION"


class ValidationError(RuntimeError):
    """Nothing to validate (no published partition)."""


def load_suite(name: str) -> dict[str, Any]:
    return json.loads((SUITES_DIR / f"{name}.json").read_text())


def is_validated(partition_uri: str) -> bool:
    """True when the partition is published and its last validation passed."""
    marker = storage.local_path(partition_uri) / VALIDATION_MARKER
    try:
        return bool(json.loads(marker.read_text()).get("success"))
    except (FileNotFoundError, ValueError):
        return False


def validated_days(cfg: PipelineConfig) -> list[str]:
    zone = cfg.storage.zone("curated")
    return [d for d in storage.published_days(zone) if is_validated(f"{zone}/dt={d}")]


def parameters(cfg: PipelineConfig, day: date) -> dict[str, Any]:
    """Suite parameters for ``day``: time bounds and row-count bounds from recent history."""
    zone = cfg.storage.zone("curated")
    history = []
    for back in range(1, cfg.ingest.recent_days + 1):
        d = (day - timedelta(days=back)).isoformat()
        manifest = storage.read_manifest(f"{zone}/dt={d}")
        if manifest and is_validated(f"{zone}/dt={d}"):
            history.append(int(manifest["rows"]))
    min_rows = cfg.ingest.min_rows
    max_rows = None
    if history:
        median = statistics.median(history)
        min_rows = max(min_rows, math.floor(median * cfg.ingest.min_ratio_to_recent))
        max_rows = math.ceil(median * cfg.ingest.max_ratio_to_recent)
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


def render_html(
    day: str, success: bool, results: dict[str, Any], params: dict[str, Any], manifest: dict[str, Any]
) -> str:
    rows = []
    for suite_name, res in results.items():
        for r in res["results"]:
            cfg = r["expectation_config"]
            kwargs = {k: v for k, v in cfg.get("kwargs", {}).items() if k not in ("batch_id",)}
            detail = r.get("result", {})
            observed = detail.get("observed_value", "")
            unexpected = detail.get("unexpected_count", "")
            sample = detail.get("partial_unexpected_list", [])[:5]
            rows.append(
                f"<tr class={'ok' if r['success'] else 'fail'}><td>{'✔' if r['success'] else '✘'}</td>"
                f"<td>{html.escape(suite_name)}</td><td>{html.escape(cfg['type'])}</td>"
                f"<td><code>{html.escape(json.dumps(kwargs, default=str))}</code></td>"
                f"<td>{html.escape(str(observed))}</td><td>{html.escape(str(unexpected))}</td>"
                f"<td>{html.escape(json.dumps(sample, default=str))}</td></tr>"
            )
    stats = "".join(
        f"<li>{html.escape(k)}: {html.escape(str(manifest.get(k)))}</li>"
        for k in ("rows", "input_rows", "quarantined", "duplicates_removed", "conflicting_duplicates", "users", "items")
    )
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>Validation dt={day}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;font-size:13px}}
tr.fail{{background:#fdd}}tr.ok{{background:#efe}}.status{{font-size:20px;font-weight:bold;color:{"#070" if success else "#b00"}}}</style></head>
<body><h1>Curated events dt={day}</h1><p class="status">{"PASSED" if success else "FAILED"}</p>
<h2>Run</h2><ul>{stats}<li>parameters: <code>{html.escape(json.dumps(params, default=str))}</code></li></ul>
<h2>Expectations</h2><table><tr><th></th><th>suite</th><th>expectation</th><th>kwargs</th><th>observed</th><th>unexpected</th><th>sample</th></tr>
{"".join(rows)}</table></body></html>"""


def validate_day(cfg: PipelineConfig, day: date, engine: str = "pandas", spark: Any = None) -> dict[str, Any]:
    """Validate one curated day; writes the report and the marker; returns the summary."""
    import pandas as pd

    started = time.perf_counter()
    curated = cfg.storage.partition("curated", day)
    manifest = storage.read_manifest(curated)
    if manifest is None:
        raise ValidationError(f"no published curated partition for dt={day.isoformat()} at {curated}")
    q_manifest = storage.read_manifest(cfg.storage.partition("quarantine", day)) or {"rows": 0}
    params = parameters(cfg, day)
    files = [str(storage.local_path(curated) / f) for f in manifest["files"]]
    if engine == "spark":
        from jobs.spark import get_spark

        data = (spark or get_spark(cfg, "validate")).read.parquet(*files)
    else:
        import pyarrow.parquet as pq

        data = pq.ParquetDataset(files, partitioning=None).read().to_pandas()
    input_rows = int(manifest.get("input_rows", manifest["rows"]))
    run_row = pd.DataFrame(
        [
            {
                "rows": int(manifest["rows"]),
                "quarantined": int(q_manifest["rows"]),
                "quarantine_share": (int(q_manifest["rows"]) / input_rows) if input_rows else 0.0,
            }
        ]
    )
    gx_params = {k: v for k, v in params.items() if k != "recent_days_rows"}
    results = _gx_run({"curated_events": data, "ingest_run": run_row}, gx_params, engine)
    failures = _failures(results)
    success = not failures
    report_dir = storage.local_path(cfg.storage.partition("reports", day).replace("/reports/", "/reports/validation/"))
    report_dir.mkdir(parents=True, exist_ok=True)
    summary = {
        "day": day.isoformat(),
        "success": success,
        "failures": failures,
        "rows": int(manifest["rows"]),
        "quarantined": int(q_manifest["rows"]),
        "quarantine_share": float(run_row["quarantine_share"].iloc[0]),
        "parameters": {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in params.items()},
        "report_html": str(report_dir / "report.html"),
        "report_json": str(report_dir / "result.json"),
        "engine": engine,
        "expectations": sum(len(r["results"]) for r in results.values()),
        "seconds": round(time.perf_counter() - started, 3),
    }
    (report_dir / ".report.html.tmp").write_text(
        render_html(day.isoformat(), success, results, summary["parameters"], manifest)
    )
    (report_dir / ".report.html.tmp").replace(report_dir / "report.html")
    storage.write_json_atomic(report_dir / "result.json", {"summary": summary, "results": results})
    storage.write_json_atomic(
        storage.local_path(curated) / VALIDATION_MARKER,
        {"success": success, "failures": failures, "report": summary["report_html"], "rows": summary["rows"]},
    )
    if not success:
        summary["message"] = f"validation failed for dt={day.isoformat()}: " + "; ".join(failures)
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jobs.validate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--date", required=True, type=date.fromisoformat)
    ap.add_argument("--engine", choices=("pandas", "spark"), default="pandas")
    ap.add_argument("--result-file", type=Path)
    args = ap.parse_args(argv)
    try:
        cfg = get_config()
        summary = validate_day(cfg, args.date, args.engine)
    except (ConfigError, ValidationError, storage.PublishError, OSError) as exc:
        # PublishError / OSError: the report or the _VALIDATION marker could not be written (the
        # message names the path); exit 1 (retried: a full disk may clear), the others exit 3.
        print(f"validation error: {exc}", file=sys.stderr)
        if args.result_file:
            storage.write_json_atomic(args.result_file, {"message": f"validation error: {exc}"})
        return 1 if isinstance(exc, OSError) else 3
    if args.result_file:  # written on failure too: the operator reads the message from it
        storage.write_json_atomic(args.result_file, summary)
    print(
        f"dt={summary['day']}: {summary['expectations']} expectations, {'PASSED' if summary['success'] else 'FAILED'}; report {summary['report_html']}"
    )
    if not summary["success"]:
        print(summary["message"], file=sys.stderr)
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main())
