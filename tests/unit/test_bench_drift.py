"""bench_drift compares like with like: one statistic for the flagged features, no Evidently
reference for work Evidently cannot do."""

from __future__ import annotations

import pytest

from benchmarks.bench_drift import (
    CATEGORICAL,
    NUMERIC,
    SHIFTED,
    daily_row,
    flagged_by_psi,
    flagged_row,
    same_statistics_row,
)

pytestmark = pytest.mark.unit

OURS = {"n_normal": 0.02, "n_exponential": 0.15, "n_gamma": 0.1, "c_device": 0.9, "n_uniform": 0.0, "c_plan": None}


def _ev(method: str, values: dict[str, float]) -> dict[str, dict[str, object]]:
    return {name: {"method": method, "value": value} for name, value in values.items()}


def test_both_sides_flag_by_psi_at_the_same_threshold():
    ev = _ev("PSI", {"n_normal": 0.01, "n_exponential": 0.2, "n_gamma": 0.05, "c_device": 0.8, "n_uniform": 0.12})
    assert flagged_by_psi(OURS, ev) == (
        ["c_device", "n_exponential", "n_gamma"],
        ["c_device", "n_exponential", "n_uniform"],
    )
    row = flagged_row(OURS, ev, 1_000_000)
    assert (row["value"], row["reference"], row["unit"]) == (3, 2, f"of {len(SHIFTED)}")
    assert "PSI >= 0.1" in row["metric"] and "Evidently ['n_uniform']" in row["note"]
    assert "false alarms: ours none" in row["note"]


def test_another_evidently_statistic_is_refused():
    with pytest.raises(ValueError, match=r"not PSI.*Wasserstein"):
        flagged_by_psi(OURS, _ev("Wasserstein distance (normed)", {"n_normal": 0.2}))


def test_the_daily_row_has_no_evidently_reference():
    row = daily_row(10_000_000, 2.0)
    assert row["value"] == 5_000_000 and "reference" not in row and "ratio" not in row
    assert "ours only" in row["metric"]


def _presets(**methods: tuple[str, str]) -> dict[str, object]:
    """Evidently's output: per preset, numeric and categorical methods and its seconds."""
    out: dict[str, object] = {}
    for preset, (numeric, categorical) in methods.items():
        out[preset] = {**_ev(numeric, dict.fromkeys(NUMERIC, 0.1)), **_ev(categorical, dict.fromkeys(CATEGORICAL, 0.1))}
        out[f"{preset}_s"] = 10.0
    return out


def test_the_speed_row_compares_the_same_statistics():
    ev = _presets(
        psi=("psi", "psi"), jensenshannon=("jensenshannon", "jensenshannon"), ks=("ks", "Jensen-Shannon distance")
    )
    row = same_statistics_row(1_000_000, 2.0, ev)
    assert (row["value"], row["reference"]) == (500_000, pytest.approx(1_000_000 / 30.0))
    assert "PSI + JS + KS" in row["metric"]


def test_the_speed_row_refuses_evidently_defaults():
    ev = _presets(
        psi=("psi", "psi"),
        jensenshannon=("jensenshannon", "jensenshannon"),
        ks=("Wasserstein distance (normed)", "Jensen-Shannon distance"),  # the default preset's methods
    )
    with pytest.raises(ValueError, match=r"ks preset computed.*Wasserstein"):
        same_statistics_row(1_000_000, 2.0, ev)
