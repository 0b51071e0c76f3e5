"""Drift statistics: our numpy metrics vs Evidently 0.7's ``DataDriftPreset``, same data, same run.

Input: a reference and a current table of 10M rows each (``--quick``: 1M) × 10 features — six
numeric (normal, lognormal "watch seconds", exponential, Poisson counts, uniform, gamma) and
four categorical (4, 10, 50 and 5 categories, dictionary-encoded); three numeric and one
categorical feature are shifted in the current table. Both tables are written once as Parquet
to a temporary folder; each side reads them itself (read time reported apart).

Measured (wall clock, this process / the Evidently process, same machine, one after the other)
  * ours, **full**: the reference statistics (``numeric_reference``: one sort, decile cut
    points, 4096-point sketch; ``categorical_reference``) *and* the current day compared with
    them (PSI + JS + KS per numeric feature, PSI + JS per categorical one) — what a run costs
    when nothing is precomputed;
  * ours, **daily**: only the current side (the drift job's cost: the reference is computed
    once at training time and stored with the model). Reported without a reference: Evidently
    has no stored-reference mode, so no Evidently run does this work;
  * Evidently 0.7.23 ``Report([DataDriftPreset()])`` with its defaults (Wasserstein for
    numeric, Jensen-Shannon for categorical columns at this size) on the same two tables,
    ``Dataset.from_pandas`` included, Parquet read excluded.
  ``ratio`` = our rows/s ÷ Evidently's rows/s (goal ≥ 20 for the full path). The statistics
  differ there (ours PSI + JS + KS, Evidently's defaults Wasserstein + JS): it is the cost of
  each tool's default answer. Like for like, **same statistics**: ours (reference + current,
  PSI and JS per feature, KS per numeric one) against Evidently's three presets that compute
  those statistics (``method="psi"``, ``method="jensenshannon"``, ``num_method="ks"``; its KS
  run gives the categorical columns its default JS), on the same ``CHECK_ROWS`` rows.

Features flagged: one statistic on both sides, PSI ≥ 0.1 (Evidently's PSI threshold), on the
same ``CHECK_ROWS`` rows, each side computing it from the raw columns: ours on reference deciles
(the job's bins), Evidently's ``DataDriftPreset(method="psi")`` on its Sturges bins. The tables
shift ``SHIFTED``; the row counts how many of them each side flags and names any false alarm.

Same statistics where both compute them. Evidently's PSI and JS use its own binning
(``get_binned_data``: Sturges equal-width bins over reference+current for numeric columns
with more than 20 distinct values, categories otherwise; empty-bin shares replaced by 1e-4 or
min/1e6 for PSI; natural-log JS distance), its KS reports ``ks_2samp``'s p-value. The benchmark
re-derives exactly those bins and shares here and feeds them to *our* ``psi`` / ``js_distance``
(base e), and compares our ``ks_statistic`` on the full columns with ``scipy.stats.ks_2samp``
(the call Evidently makes) plus the p-value Evidently reports with scipy's for the same data:
the rows ``max |Δ|`` must be ~1e-12. The value check uses the first 1M rows of each table
(``CHECK_ROWS``: three more Evidently presets on 10M rows would take most of an hour here). (The drift job itself bins on reference deciles with a
fixed 1e-4 epsilon — a reference that can be stored — so its values differ from Evidently's
by design, not by error.)

Evidently 0.7.23 does not import with pandas 3 (the project's pin), so it runs in its own
virtualenv, ``benchmarks/.venvs/evidently`` (git-ignored), created on first use with
``pip install evidently==0.7.23 'pandas<3' pyarrow`` from the benchmark entry point.
"""

from __future__ import annotations

import gc
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

VENV = Path(__file__).resolve().parent / ".venvs" / "evidently"
REQUIREMENTS = ["evidently==0.7.23", "pandas<3", "pyarrow"]
NUMERIC = ("n_normal", "n_watch", "n_exponential", "n_counts", "n_uniform", "n_gamma")
CATEGORICAL = ("c_device", "c_country", "c_genre", "c_plan")
CHECK_ROWS = 1_000_000  # rows of each table used for the value check (Evidently runs 3 more presets on them)
SHIFTED = ("n_normal", "n_exponential", "n_gamma", "c_device")  # see make_tables
PSI_THRESHOLD = 0.1  # Evidently's default for method="psi"; also the drift job's psi_warn

EVIDENTLY_SCRIPT = r"""
import json, sys, time
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

ref_path, cur_path, ref_check, cur_check, out_path, numeric, categorical = sys.argv[1:8]
numeric, categorical = numeric.split(","), categorical.split(",")
t = time.perf_counter()
ref = pd.read_parquet(ref_path)
cur = pd.read_parquet(cur_path)
read_s = time.perf_counter() - t
definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)

def run(ref, cur, **kwargs):
    started = time.perf_counter()
    snapshot = Report([DataDriftPreset(**kwargs)]).run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    seconds = time.perf_counter() - started
    values = {}
    for m in snapshot.dict()["metrics"]:
        cfg = m["config"]
        if cfg["type"].endswith("ValueDrift"):
            values[cfg["column"]] = {"method": cfg["method"], "value": m["value"]}
    return seconds, values

out = {"read_s": read_s, "pandas": pd.__version__}
out["default_s"], out["default"] = run(ref, cur)
if (ref_check, cur_check) != (ref_path, cur_path):
    ref, cur = pd.read_parquet(ref_check), pd.read_parquet(cur_check)
for method in ("psi", "jensenshannon", "ks"):
    kwargs = {"method": method} if method != "ks" else {"num_method": "ks"}
    out[method + "_s"], out[method] = run(ref, cur, **kwargs)
import evidently
out["evidently"] = evidently.__version__
json.dump(out, open(out_path, "w"))
"""


def ensure_evidently() -> Path:
    """The Evidently virtualenv's python (created and installed on first use)."""
    python = VENV / "bin" / "python"
    marker = VENV / ".installed"
    if marker.is_file() and marker.read_text() == " ".join(REQUIREMENTS) and python.exists():
        return python
    print(f"creating {VENV} ({' '.join(REQUIREMENTS)}) ...", flush=True)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *REQUIREMENTS], check=True)
    marker.write_text(" ".join(REQUIREMENTS))
    return python


def make_tables(rows: int) -> tuple[Any, Any]:
    """Reference and current tables (current: shifted n_normal, n_exponential, n_gamma, c_device)."""
    import pyarrow as pa

    def table(seed: int, shift: bool):
        rng = np.random.default_rng(seed)
        s = 1.0 if shift else 0.0
        cols: dict[str, Any] = {
            "n_normal": rng.normal(0.1 * s, 1.0, rows),
            "n_watch": rng.lognormal(6.8, 0.7, rows),
            "n_exponential": rng.exponential(1.0 + 0.2 * s, rows),
            "n_counts": rng.poisson(3.0, rows).astype(np.float64),
            "n_uniform": rng.uniform(0.0, 1.0, rows),
            "n_gamma": rng.gamma(2.0 + 0.3 * s, 2.0, rows),
        }
        cats = {
            "c_device": (
                ["tv", "mobile", "web", "tablet"],
                [0.15, 0.7, 0.1, 0.05] if shift else [0.45, 0.33, 0.17, 0.05],
            ),
            "c_country": ([f"C{i}" for i in range(10)], np.full(10, 0.1)),
            "c_genre": ([f"g{i:02d}" for i in range(50)], 1.0 / np.arange(1, 51) / (1.0 / np.arange(1, 51)).sum()),
            "c_plan": (["free", "basic", "standard", "premium", "family"], [0.4, 0.2, 0.2, 0.15, 0.05]),
        }
        for name, (labels, p) in cats.items():
            idx = rng.choice(len(labels), rows, p=np.asarray(p) / np.sum(p)).astype(np.int32)
            cols[name] = pa.DictionaryArray.from_arrays(pa.array(idx), pa.array(labels))
        return pa.table(cols)

    return table(1, False), table(2, True)


def ours(ref: Any, cur: Any, reference: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(reference statistics, per-feature comparison) with jobs.monitor.metrics."""
    from jobs.core import reference as refmod
    from jobs.monitor import metrics as dm

    if reference is None:
        reference = {}
        for name in NUMERIC:
            reference[name] = refmod.numeric_reference(ref.column(name).to_numpy())
        for name in CATEGORICAL:
            reference[name] = refmod.categorical_reference(ref.column(name))
    results = {}
    for name in NUMERIC:
        results[name] = dm.compare_numeric(reference[name], cur.column(name).to_numpy())
    for name in CATEGORICAL:
        results[name] = dm.compare_categorical(reference[name], refmod.category_counts(cur.column(name)))
    return reference, results


def evidently_binned(ref: Any, cur: Any, numeric: bool, fill: bool) -> tuple[np.ndarray, np.ndarray]:
    """Evidently 0.7.23's ``get_binned_data`` (legacy/calculations/stattests/utils.py), re-derived.

    ``ref``/``cur``: numpy arrays (numeric) or ``{category: count}`` (categorical).
    """
    from jobs.monitor import metrics as dm

    if numeric and np.unique(ref).size > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, bins)[0] / len(ref)
        c = np.histogram(cur, bins)[0] / len(cur)
    else:
        if numeric:
            ref = dict(zip(*[x.tolist() for x in np.unique(ref, return_counts=True)], strict=True))
            cur = dict(zip(*[x.tolist() for x in np.unique(cur, return_counts=True)], strict=True))
        _, r, c = dm.aligned({str(k): v for k, v in ref.items()}, {str(k): v for k, v in cur.items()})
        r, c = r / r.sum(), c / c.sum()
    if fill:
        for arr in (r, c):
            low = arr[arr != 0].min()
            arr[arr == 0] = low / 10**6 if low <= 0.0001 else 0.0001
    return r, c


def same_statistics(ref: Any, cur: Any, ev: dict[str, Any]) -> dict[str, float]:
    """max |ours - Evidently| for PSI and JS on Evidently's bins, and KS vs scipy (Evidently's call)."""
    from scipy.stats import ks_2samp

    from jobs.core import reference as refmod
    from jobs.monitor import metrics as dm

    worst = {"psi": 0.0, "js": 0.0, "ks_statistic": 0.0, "ks_pvalue": 0.0}
    for name in NUMERIC + CATEGORICAL:
        numeric = name in NUMERIC
        r_raw = ref.column(name).to_numpy() if numeric else refmod.category_counts(ref.column(name))
        c_raw = cur.column(name).to_numpy() if numeric else refmod.category_counts(cur.column(name))
        r, c = evidently_binned(r_raw, c_raw, numeric, fill=True)
        worst["psi"] = max(worst["psi"], abs(dm.psi(r, c) - ev["psi"][name]["value"]))
        r, c = evidently_binned(r_raw, c_raw, numeric, fill=False)
        worst["js"] = max(worst["js"], abs(dm.js_distance(r, c, base=math.e) - ev["jensenshannon"][name]["value"]))
        if numeric:
            scipy_ks = ks_2samp(r_raw, c_raw)
            worst["ks_statistic"] = max(worst["ks_statistic"], abs(dm.ks_statistic(r_raw, c_raw) - scipy_ks.statistic))
            worst["ks_pvalue"] = max(worst["ks_pvalue"], abs(float(scipy_ks.pvalue) - ev["ks"][name]["value"]))
    return worst


def flagged_by_psi(ours_psi: dict[str, float], ev_psi: dict[str, dict[str, Any]]) -> tuple[list[str], list[str]]:
    """Features with PSI ≥ ``PSI_THRESHOLD``: (ours, Evidently's), one statistic on both sides.

    ``ev_psi``: Evidently's per-column ``{"method", "value"}`` from its PSI preset; another
    method there is refused (a comparison across statistics is what this row must not be).
    """
    other = sorted({str(v["method"]) for v in ev_psi.values() if "psi" not in str(v["method"]).lower()})
    if other:
        raise ValueError(f"Evidently's values are not PSI: {other}")
    ours = sorted(n for n, v in ours_psi.items() if v is not None and v >= PSI_THRESHOLD)
    theirs = sorted(n for n, v in ev_psi.items() if v["value"] >= PSI_THRESHOLD)
    return ours, theirs


def flagged_row(ours_psi: dict[str, float], ev_psi: dict[str, dict[str, Any]], check_rows: int) -> dict[str, Any]:
    """Row: shifted features flagged by PSI ≥ 0.1, ours (value) vs Evidently's PSI (reference)."""
    ours, theirs = flagged_by_psi(ours_psi, ev_psi)
    hits = {"ours": [n for n in ours if n in SHIFTED], "ev": [n for n in theirs if n in SHIFTED]}
    false = {"ours": [n for n in ours if n not in SHIFTED], "ev": [n for n in theirs if n not in SHIFTED]}
    return {
        "metric": f"shifted features flagged (PSI >= {PSI_THRESHOLD:g}, both sides)",
        "value": len(hits["ours"]),
        "unit": f"of {len(SHIFTED)}",
        "reference": len(hits["ev"]),
        "note": f"same statistic and threshold, same first {check_rows:,} rows, each side from the raw columns: "
        f"ours (reference deciles) {ours}, Evidently PSI preset (Sturges bins) {theirs}; false alarms: "
        f"ours {false['ours'] or 'none'}, Evidently {false['ev'] or 'none'}; shifted: {list(SHIFTED)}",
    }


SAME_STATISTICS = {"psi": "psi", "jensenshannon": "jensenshannon", "ks": "ks"}  # preset -> its numeric method


def same_statistics_row(rows: int, ours_s: float, ev: dict[str, Any]) -> dict[str, Any]:
    """Row: rows/s of PSI + JS + KS, ours vs Evidently's psi, jensenshannon and ks presets.

    ``ev``: per preset, its seconds (``<preset>_s``) and per-column ``{"method", "value"}``; a
    preset whose numeric columns were computed with another method is refused.
    """
    for preset, method in SAME_STATISTICS.items():
        other = sorted({v["method"] for n, v in ev[preset].items() if n in NUMERIC and v["method"] != method})
        if other:
            raise ValueError(f"Evidently's {preset} preset computed {other}, not {method}")
    ev_s = sum(ev[f"{preset}_s"] for preset in SAME_STATISTICS)
    return {
        "metric": "drift stats, same statistics (PSI + JS + KS, reference + current) rows/s",
        "value": rows / ours_s,
        "unit": "rows/s",
        "reference": rows / ev_s,
        "note": f"first {rows:,} rows of each table; ours {ours_s:.2f}s in one pass vs Evidently's psi "
        f"{ev['psi_s']:.1f}s + jensenshannon {ev['jensenshannon_s']:.1f}s + ks {ev['ks_s']:.1f}s presets (each from the "
        "raw columns, Dataset.from_pandas included; its ks run adds JS on the categorical columns)",
    }


def daily_row(rows: int, daily_s: float) -> dict[str, Any]:
    """Row: our daily path alone; no reference, since Evidently cannot do this work."""
    return {
        "metric": "drift stats, daily (current vs stored reference) rows/s, ours only",
        "value": rows / daily_s,
        "unit": "rows/s",
        "note": f"ours {daily_s:.2f}s: what jobs.monitor computes per day; no Evidently reference: it has no "
        "stored-reference mode and recomputes the reference each run, so a ratio would compare different work "
        "(like for like: the full and same-statistics rows, reference + current on both sides)",
    }


def run(quick: bool = False) -> list[dict[str, Any]]:
    """Long because it is the benchmark's script: both measured sides and the result rows, top to bottom."""
    import pyarrow.parquet as pq

    rows = 1_000_000 if quick else 10_000_000
    shape = f"{rows:,} rows x {len(NUMERIC) + len(CATEGORICAL)} features (reference and current each)"
    python = ensure_evidently()
    tmp = Path(tempfile.mkdtemp(prefix="bench-drift-"))
    try:
        ref, cur = make_tables(rows)
        pq.write_table(ref, tmp / "reference.parquet")
        pq.write_table(cur, tmp / "current.parquet")
        if rows > CHECK_ROWS:
            pq.write_table(ref.slice(0, CHECK_ROWS), tmp / "reference-check.parquet")
            pq.write_table(cur.slice(0, CHECK_ROWS), tmp / "current-check.parquet")
        check = "-check" if rows > CHECK_ROWS else ""
        del ref, cur
        gc.collect()

        started = time.perf_counter()
        ref = pq.read_table(tmp / "reference.parquet")
        cur = pq.read_table(tmp / "current.parquet")
        read_s = time.perf_counter() - started
        ours(ref.slice(0, 10_000), cur.slice(0, 10_000))  # warm-up (imports, first calls)
        started = time.perf_counter()
        reference, _ = ours(ref, cur)
        full_s = time.perf_counter() - started
        started = time.perf_counter()
        ours(ref, cur, reference)
        daily_s = time.perf_counter() - started

        proc = subprocess.run(
            [
                str(python),
                "-c",
                EVIDENTLY_SCRIPT,
                str(tmp / "reference.parquet"),
                str(tmp / "current.parquet"),
                str(tmp / f"reference{check}.parquet"),
                str(tmp / f"current{check}.parquet"),
                str(tmp / "evidently.json"),
                ",".join(NUMERIC),
                ",".join(CATEGORICAL),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"Evidently run failed: {proc.stderr[-2000:]}")
        ev = json.loads((tmp / "evidently.json").read_text())
        worst = same_statistics(ref.slice(0, CHECK_ROWS), cur.slice(0, CHECK_ROWS), ev)
        started = time.perf_counter()
        _, check_results = ours(ref.slice(0, CHECK_ROWS), cur.slice(0, CHECK_ROWS))
        check_s = time.perf_counter() - started
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    ev_rate = rows / ev["default_s"]
    out = [
        {
            "metric": "drift stats, full (reference + current) rows/s",
            "value": rows / full_s,
            "unit": "rows/s",
            "reference": ev_rate,
            "note": f"{shape}; ours {full_s:.2f}s (PSI + JS, KS on numeric) vs Evidently {ev['evidently']} "
            f"DataDriftPreset defaults {ev['default_s']:.1f}s (Wasserstein on numeric, JS on categorical; pandas "
            f"{ev['pandas']}): each tool's default answer, not the same statistics (see the same-statistics row); "
            "ratio = speed-up, goal >= 20",
        },
        same_statistics_row(min(rows, CHECK_ROWS), check_s, ev),
        daily_row(rows, daily_s),
        {
            "metric": "Parquet read, both tables",
            "value": read_s,
            "unit": "s",
            "reference": ev["read_s"],
            "note": "pyarrow here vs pandas.read_parquet in the Evidently venv; not in the figures above",
        },
        {
            "metric": "max |Δ| PSI vs Evidently (its bins)",
            "value": worst["psi"],
            "unit": "abs",
            "note": f"our psi() on Evidently's binned shares, all 10 features, first {min(rows, CHECK_ROWS):,} rows",
        },
        {
            "metric": "max |Δ| JS vs Evidently (its bins)",
            "value": worst["js"],
            "unit": "abs",
            "note": "our js_distance(base=e) on Evidently's shares, all 10 features",
        },
        {
            "metric": "max |Δ| KS statistic vs scipy ks_2samp",
            "value": worst["ks_statistic"],
            "unit": "abs",
            "note": f"all 6 numeric columns, first {min(rows, CHECK_ROWS):,} rows; "
            f"Evidently's KS p-values = scipy's within {worst['ks_pvalue']:.1e}",
        },
        flagged_row({n: r["psi"] for n, r in check_results.items()}, ev["psi"], min(rows, CHECK_ROWS)),
    ]
    return out


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv):
        print(row)
