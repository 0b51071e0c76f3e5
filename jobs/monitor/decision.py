"""The monitor's detector decision of one day: retrain or not, and why (a pure function)."""

from __future__ import annotations

from typing import Any


def decide(data: dict[str, Any], pred: dict[str, Any], perf: dict[str, Any], th: dict[str, float]) -> dict[str, Any]:
    """The retrain decision of one day and its reason (see the module docstring, step 5)."""
    alerts = data.get("alerts", []) if data.get("available") else []
    perf_alert = bool(perf.get("available") and perf.get("verdict") == "alert" and perf.get("used_for_decision"))
    reasons = []
    if perf_alert:
        reasons.append(f"performance decay: {perf['why']} (limit {th['performance_decay']:.0%})")
    if len(alerts) >= th["min_drifted_features"]:
        reasons.append(f"data drift on {len(alerts)} features (≥ {th['min_drifted_features']:g}): {', '.join(alerts)}")
    pred_alert = bool(pred.get("available") and pred.get("verdict") == "alert")
    if reasons:
        reason = "; ".join(reasons)
    else:
        parts = []
        if alerts:
            parts.append(
                f"data drift on {len(alerts)} feature(s) ({', '.join(alerts)}) < {th['min_drifted_features']:g}"
            )
        elif data.get("available"):
            parts.append("no feature in alert")
        else:
            parts.append(f"data drift unavailable ({data.get('reason')})")
        if perf.get("available"):
            parts.append(f"performance {perf.get('verdict')}: {perf.get('why', '')}")
        else:
            parts.append(f"performance unavailable ({perf.get('reason')})")
        reason = "no retrain: " + "; ".join(parts)
    return {
        "retrain": bool(reasons),
        "reason": reason,
        "drift_alert": bool(alerts) or perf_alert or pred_alert,
        "alerts": alerts + (["performance"] if perf_alert else []) + (["prediction"] if pred_alert else []),
    }
