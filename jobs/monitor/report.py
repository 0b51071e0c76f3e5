"""The drift report as a self-contained HTML page (plots embedded as base64 PNG).

One page per monitored day, written next to ``report.json`` by ``jobs.monitor``: the decision
and its reason, the feature table (PSI / JS / KS / verdict per feature, colour-coded), the
prediction-drift and performance sections (or why they are unavailable), distribution overlays
of the features in warn/alert (or, on a quiet day, of the features closest to their
thresholds, so the page always shows what the data looks like), and the trend of the last
days read from the previous reports. matplotlib runs with the Agg backend (no display); the
PNGs are inlined so the page can be opened from the reports zone, an MLflow artifact view or a
mail attachment alike.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from typing import Any

COLOURS = {
    "ok": "#2e7d32",
    "warn": "#ef6c00",
    "alert": "#c62828",
    "insufficient": "#757575",
    "not available": "#9e9e9e",
    "reference": "#1565c0",
}
MAX_OVERLAYS = 6


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    _pyplot().close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def overlay_png(name: str, result: Mapping[str, Any]) -> str:
    """Grouped bars of the reference's and the day's shares per bin/category."""
    plt = _pyplot()
    labels = [str(x) for x in result["bins"]]
    ref = [float(x) for x in result["ref_counts"]]
    cur = [float(x) for x in result["cur_counts"]]
    rt, ct = sum(ref) or 1.0, sum(cur) or 1.0
    xs = range(len(labels))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.55 * len(labels) + 2), 3.2))
    ax.bar([x - 0.2 for x in xs], [r / rt for r in ref], width=0.4, label="reference", color="#90a4ae")
    ax.bar([x + 0.2 for x in xs], [c / ct for c in cur], width=0.4, label="this day", color="#e57373")
    ax.set_xticks(list(xs), labels, rotation=35 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_ylabel("share")
    ax.set_title(f"{name}: PSI {_num(result.get('psi'))}, JS {_num(result.get('js'))}, KS {_num(result.get('ks'))}")
    ax.legend()
    return _png(fig)


def share_png(name: str, result: Mapping[str, Any]) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 3.0))
    ax.bar(["held-out day", "this day"], [result["baseline"], result["share"]], color=["#90a4ae", "#e57373"])
    ax.set_ylabel("share")
    ax.set_title(f"{name}: {result['share']:.3f} ({result['increase']:+.3f})")
    return _png(fig)


def trend_png(trend: Sequence[Mapping[str, Any]]) -> str:
    """Max PSI, features in alert and online recall over the recent days."""
    plt = _pyplot()
    days = [t["day"][5:] for t in trend]
    fig, ax = plt.subplots(figsize=(7.5, 3.2))
    ax.plot(days, [t.get("max_psi") or 0.0 for t in trend], marker="o", label="max PSI", color="#c62828")
    ax.bar(days, [t.get("alerts") or 0 for t in trend], alpha=0.25, label="features in alert", color="#ef6c00")
    ax.set_ylabel("PSI / features")
    ax2 = ax.twinx()
    recall = [t.get("recall") for t in trend]
    ax2.plot(
        days, [r if r is not None else float("nan") for r in recall], marker="s", color="#1565c0", label="recall@K"
    )
    ax2.set_ylabel("online recall@K")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.set_title("trend")
    ax.tick_params(axis="x", rotation=35)
    return _png(fig)


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _badge(verdict: str) -> str:
    colour = COLOURS.get(verdict, "#424242")
    return f'<span class="badge" style="background:{colour}">{html.escape(verdict)}</span>'


def _feature_rows(features: Mapping[str, Mapping[str, Any]]) -> str:
    rows = []
    for name, f in features.items():
        if f["kind"] == "share":
            metric = f"share {_num(f['share'])} (held-out {_num(f['baseline'])}, {f['increase']:+.3f})"
            cells = f"<td colspan=3>{metric}</td>"
        else:
            cells = f"<td>{_num(f.get('psi'))}</td><td>{_num(f.get('js'))}</td><td>{_num(f.get('ks'))}</td>"
        rows.append(
            f"<tr><td>{html.escape(name)}</td><td>{f['kind']}</td><td>{f.get('n_ref', '–')}</td>"
            f"<td>{f.get('n_cur', '–')}</td>{cells}<td>{_badge(f['verdict'])}</td>"
            f"<td>{html.escape(f.get('why', ''))}</td></tr>"
        )
    return "\n".join(rows)


def _section(title: str, section: Mapping[str, Any], body: str) -> str:
    if not section.get("available"):
        return f"<h2>{title}</h2><p class=unavailable>unavailable: {html.escape(section.get('reason') or '')}</p>"
    return f"<h2>{title}</h2>{body}"


def _kv(items: Sequence[tuple[str, Any]]) -> str:
    return "<table class=kv>" + "".join(f"<tr><th>{k}</th><td>{_num(v, 4)}</td></tr>" for k, v in items) + "</table>"


def plots_for(report: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(caption, base64 PNG) of the overlays to show: drifted features first, else the closest ones."""
    data = report["data_drift"]
    out: list[tuple[str, str]] = []
    if data.get("available"):
        feats = data["features"]
        flagged = [n for n, f in feats.items() if f["verdict"] in ("warn", "alert")]
        caption = "drifted feature"
        if not flagged:
            ranked = sorted(
                (n for n, f in feats.items() if f.get("psi") is not None),
                key=lambda n: -(feats[n]["psi"] or 0.0),
            )
            flagged = ranked[:2]
            caption = "closest to its threshold (no feature drifted)"
        for name in flagged[:MAX_OVERLAYS]:
            f = feats[name]
            png = share_png(name, f) if f["kind"] == "share" else overlay_png(name, f)
            out.append((f"{name} — {caption}", png))
    pred = report["prediction_drift"]
    if pred.get("available") and (pred.get("score") or {}).get("psi") is not None:
        out.append(
            (
                f"served scores vs reference day {pred['reference_day']}",
                overlay_png("recommendation score", pred["score"]),
            )
        )
    return out


def _data_body(data: Mapping[str, Any]) -> str:
    """The data-drift section's table (empty when the section is unavailable)."""
    if not data.get("available"):
        return ""
    return (
        "<table><tr><th>feature</th><th>kind</th><th>n ref</th><th>n day</th><th>PSI</th><th>JS</th>"
        "<th>KS</th><th>verdict</th><th>why</th></tr>" + _feature_rows(data.get("features", {})) + "</table>"
    )


def _prediction_body(pred: Mapping[str, Any]) -> str:
    """The prediction-drift section's key/value table (empty when unavailable)."""
    pred_body = ""
    if pred.get("available"):
        score = pred.get("score") or {}
        pred_body = _kv(
            [
                ("reference day", pred.get("reference_day")),
                ("score PSI", score.get("psi")),
                ("score JS", score.get("js")),
                ("score KS", score.get("ks")),
                ("item coverage (this day)", pred.get("coverage")),
                ("item coverage (reference day)", pred.get("reference_coverage")),
                ("recommended-items JS", pred.get("items_js")),
                ("verdict", pred.get("verdict")),
            ]
        )
    return pred_body


def _performance_body(perf: Mapping[str, Any]) -> str:
    """The online-outcome section's key/value table and note (empty when unavailable)."""
    perf_body = ""
    if perf.get("available"):
        k = perf.get("k")
        perf_body = _kv(
            [
                ("recommendations of", perf.get("recs_day")),
                ("served by version", perf.get("model_version")),
                ("users evaluated", perf.get("users")),
                (f"hit-rate@{k}", perf.get("hit_rate")),
                (f"recall@{k} (online)", perf.get("recall")),
                (f"recall@{k} (offline, champion)", perf.get("offline_recall")),
                ("relative decay", perf.get("decay")),
                ("verdict", perf.get("verdict")),
            ]
        ) + (f"<p>{html.escape(perf['note'])}</p>" if perf.get("note") else "")
    return perf_body


def render_html(report: Mapping[str, Any]) -> str:
    """The full page for one report (see the module docstring): the template, its sections' bodies
    from the helpers above."""
    decision = report["decision"]
    data = report["data_drift"]
    pred = report["prediction_drift"]
    perf = report["performance"]
    title = f"Drift report {report['day']} — {report['model_name']} v{report['model_version']}"
    verdict = "RETRAIN" if decision["retrain"] else "no retrain"
    colour = (
        COLOURS["alert"] if decision["retrain"] else (COLOURS["warn"] if decision["drift_alert"] else COLOURS["ok"])
    )
    data_body, pred_body, perf_body = _data_body(data), _prediction_body(pred), _performance_body(perf)
    plots = "".join(
        f'<figure><img src="data:image/png;base64,{png}" alt="{html.escape(cap)}"><figcaption>{html.escape(cap)}'
        "</figcaption></figure>"
        for cap, png in plots_for(report)
    )
    trend = report.get("trend") or []
    trend_img = (
        f'<figure><img src="data:image/png;base64,{trend_png(trend)}" alt="trend"><figcaption>last {len(trend)} '
        "monitored day(s)</figcaption></figure>"
        if trend
        else ""
    )
    reference = report["reference"]
    ref_line = (
        f"reference: {html.escape(reference['uri'])} (training window {', '.join(reference.get('days', []))})"
        if reference.get("available")
        else f"reference unavailable: {html.escape(reference.get('reason') or '')}"
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse;margin:.5em 0}} td,th{{border:1px solid #ddd;padding:4px 8px;font-size:14px}}
th{{background:#f5f5f5;text-align:left}} .badge{{color:#fff;border-radius:4px;padding:1px 6px}}
.decision{{border-left:6px solid {colour};padding:.5em 1em;background:#fafafa}}
.unavailable{{color:#757575;font-style:italic}} figure{{display:inline-block;margin:.5em}}
</style></head><body>
<h1>{html.escape(title)}</h1>
<p>{ref_line}</p>
<div class="decision"><b>{verdict}</b> — {html.escape(decision["reason"])}</div>
{_section("Data drift", data, data_body)}
{_section("Prediction drift", pred, pred_body)}
{_section("Performance (online outcome)", perf, perf_body)}
<h2>Distributions</h2>{plots or "<p class=unavailable>no distribution to plot</p>"}
<h2>Trend</h2>{trend_img}
<p style="color:#757575;font-size:12px">Thresholds: {html.escape(str(report.get("thresholds")))}. Generated by
jobs.monitor; machine-readable twin: report.json.</p>
</body></html>
"""
