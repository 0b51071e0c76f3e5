"""Run the registered benchmarks and write ``benchmarks/results/results.{md,json}``.

``python -m benchmarks [--only NAME ...] [--quick] [--movielens PATH]``

Each benchmark is a module ``benchmarks.bench_<name>`` with a function
``run(quick: bool) -> list[dict]`` returning rows with the keys of ``ROW_KEYS``:
``value`` is the measured figure, ``reference`` the same figure for an in-script baseline
(what the hardware or a plain library call achieves on the same input) and ``ratio`` is
``value / reference``. Registering a benchmark is one line in ``BENCHMARKS``.

Results are merged by benchmark name: running ``--only generate`` replaces the ``generate``
rows in ``results.json`` and keeps the rows of the other benchmarks from their last run.

A row whose metric says it was not measured (``NOT_MEASURED``: "not run", "predicted",
"extrapolated") has no ``value`` or ``reference``: an extrapolation belongs in its note, and a
row that breaks this fails its benchmark.

A benchmark fails by raising (``SystemExit`` included) or by returning no rows: its status is
``failed``, an ``error`` row says why, and ``python -m benchmarks`` exits 1. An exception with a
``partial_rows`` attribute (a size failed after others were measured) keeps those rows too.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# One entry per benchmark: the NAME of module benchmarks.bench_NAME.
BENCHMARKS: list[str] = [
    "generate",
    "ingest",
    "connect",
    "object_store",
    "train",
    "score",
    "drift",
    "reliability",
    "quality",
    "stack",
    "scale",
    "scaleout",
]

ROW_KEYS = ("benchmark", "metric", "value", "unit", "reference", "ratio", "note")
RESULTS_DIR = Path(__file__).resolve().parent / "results"
NOT_MEASURED = ("not run", "predicted", "extrapolated")


def _machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def _normalise(name: str, row: dict[str, Any]) -> dict[str, Any]:
    unknown = set(row) - set(ROW_KEYS)
    if unknown:
        raise ValueError(f"benchmark {name}: row {row} has unknown keys {sorted(unknown)}")
    out = {key: row.get(key) for key in ROW_KEYS}
    out["benchmark"] = out["benchmark"] or name
    label = str(out["metric"]).lower()
    if any(word in label for word in NOT_MEASURED) and (out["value"], out["reference"], out["ratio"]) != (None,) * 3:
        raise ValueError(
            f"benchmark {name}: row {out['metric']!r} was not measured: its figures belong in the note, "
            "never in value, reference or ratio"
        )
    if out["ratio"] is None and out["reference"] and isinstance(out["value"], int | float):
        out["ratio"] = out["value"] / out["reference"]
    return out


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}"
    return str(value).replace("|", "\\|")


def markdown(rows: list[dict[str, Any]], runs: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Benchmark results",
        "",
        "Written by `python -m benchmarks`; `ratio` = value / reference (an in-script baseline on the same input).",
        "",
        "| " + " | ".join(ROW_KEYS) + " |",
        "|" + "|".join("---:" if k in {"value", "reference", "ratio"} else "---" for k in ROW_KEYS) + "|",
    ]
    lines += ["| " + " | ".join(_fmt(row[k]) for k in ROW_KEYS) + " |" for row in rows]
    lines += ["", "| benchmark | mode | finished (UTC) | seconds | status |", "|---|---|---|---:|---|"]
    for name, run in sorted(runs.items()):
        mode = "quick" if run.get("quick") else "full"
        lines.append(
            f"| {name} | {mode} | {run.get('finished', '')} | {_fmt(run.get('seconds'))} | {run.get('status', '')} |"
        )
    machine = next(iter(runs.values()), {}).get("machine", _machine())
    lines += ["", f"Machine: Python {machine['python']}, {machine['cpus']} CPUs, {machine['platform']}.", ""]
    return "\n".join(lines)


def _load_previous(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {"rows": [], "runs": {}}
    if not isinstance(data, dict):
        return {"rows": [], "runs": {}}
    return {"rows": list(data.get("rows", [])), "runs": dict(data.get("runs", {}))}


def run_one(name: str, quick: bool) -> tuple[list[dict[str, Any]], str]:
    """Run ``benchmarks.bench_<name>``: (its normalised rows, ``"ok"`` or ``"failed"``).

    Any exception or ``SystemExit`` from the benchmark, or no rows at all, is a failure: the rows
    are then the exception's ``partial_rows`` (if it has them) and an ``error`` row with the reason.
    """
    try:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        produced = [_normalise(name, row) for row in module.run(quick=quick)]
        if not produced:
            raise RuntimeError("the benchmark returned no rows")
        return produced, "ok"
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        try:
            partial = [_normalise(name, row) for row in getattr(exc, "partial_rows", None) or []]
        except ValueError as bad:  # a malformed kept row must not hide the failure itself
            partial, exc = [], RuntimeError(f"{type(exc).__name__}: {exc}; its rows were dropped: {bad}")
        error = _normalise(name, {"metric": "error", "note": f"FAILED: {type(exc).__name__}: {exc}"})
        return [*partial, error], "failed"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--only", action="append", metavar="NAME", help=f"run only this benchmark ({', '.join(BENCHMARKS)})"
    )
    ap.add_argument("--quick", action="store_true", help="smaller inputs, for a smoke run")
    ap.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    ap.add_argument(
        "--movielens",
        type=Path,
        metavar="PATH",
        help="quality: also evaluate on this MovieLens file (.inter, ratings.dat, ratings.csv); sets $RECSYS_MOVIELENS",
    )
    args = ap.parse_args(argv)
    if args.movielens:
        os.environ["RECSYS_MOVIELENS"] = str(args.movielens.resolve())
    selected = [n.strip() for item in (args.only or []) for n in item.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in selected if n not in BENCHMARKS]
    if unknown:
        ap.error(f"unknown benchmark {', '.join(unknown)}; registered: {', '.join(BENCHMARKS)}")

    results_json = args.results_dir / "results.json"
    previous = _load_previous(results_json)
    rows = [r for r in previous["rows"] if r.get("benchmark") not in selected]
    runs = {k: v for k, v in previous["runs"].items() if k not in selected}
    failed = []
    for name in selected:
        print(f"== benchmark {name} ({'quick' if args.quick else 'full'})", flush=True)
        started = time.perf_counter()
        produced, status = run_one(name, args.quick)
        if status != "ok":
            failed.append(name)
        rows += produced
        runs[name] = {
            "quick": args.quick,
            "finished": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "seconds": round(time.perf_counter() - started, 1),
            "status": status,
            "machine": _machine(),
        }
    order = {name: i for i, name in enumerate(BENCHMARKS)}
    rows.sort(key=lambda r: order.get(r["benchmark"], len(order)))  # stable: keeps each module's row order

    args.results_dir.mkdir(parents=True, exist_ok=True)
    table = markdown(rows, runs)
    tmp = results_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"rows": rows, "runs": runs}, indent=2, default=str))
    tmp.replace(results_json)
    (args.results_dir / "results.md").write_text(table)
    print()
    print(table)
    print(f"wrote {args.results_dir / 'results.md'} and {results_json}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
