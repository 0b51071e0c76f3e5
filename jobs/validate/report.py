"""The validation report of a curated day as one self-contained HTML page."""

from __future__ import annotations

import html
import json
from typing import Any


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
