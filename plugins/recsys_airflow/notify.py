"""Announcements: drift alerts and task failures, in the log and (optionally) on a webhook.

Every announcement is one clear log line (``RECSYS DRIFT: ...`` / ``RECSYS FAILURE: ...``) so
it can be grepped and alerted on from the task logs alone. When an Airflow connection
``recsys_webhook`` exists, the same message is POSTed as JSON — ``{"text": ..., "event": ...,
...details}``; ``text`` is what Slack/Teams/Mattermost incoming webhooks display. Configure it
like any HTTP connection, e.g.::

    AIRFLOW_CONN_RECSYS_WEBHOOK='{"conn_type": "http", "host": "hooks.slack.com", "schema": "https",
                                  "extra": {"endpoint": "/services/T000/B000/XXXX"}}'

URL rule (the HTTP provider's): ``host`` with a scheme is used as is; otherwise
``<schema or http>://host[:port]``, then ``extra.endpoint`` is appended; ``extra.headers``
are added to the request. No connection → log only. A webhook that fails or times out
(``extra.timeout``, default 10 s) is logged and never fails the task: losing a notification
must not turn a finished task into a failed one.

``RecsysNotifier`` is the task ``on_failure_callback``; ``announce`` is called directly by the
monitor's ``decide`` task when a report raises a drift alert.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from typing import Any

from airflow.sdk import BaseNotifier

CONN_ID = "recsys_webhook"
log = logging.getLogger("recsys.notify")


def _connection() -> Any | None:
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(CONN_ID)
    except AirflowNotFoundException:
        return None


def webhook_url(conn: Any) -> str:
    """The URL a connection points at (see the module docstring)."""
    extra = conn.extra_dejson or {}
    host = (conn.host or "").rstrip("/")
    if not host:
        raise ValueError(f"connection {CONN_ID} has no host")
    if "://" in host:
        base = host
    else:
        scheme = conn.schema if conn.schema in ("http", "https") else "http"
        base = f"{scheme}://{host}" + (f":{conn.port}" if conn.port else "")
    endpoint = str(extra.get("endpoint") or "")
    return base + (endpoint if not endpoint or endpoint.startswith("/") else "/" + endpoint)


def announce(event: str, text: str, details: dict[str, Any] | None = None) -> bool:
    """Log ``text`` and POST it to the ``recsys_webhook`` connection if there is one.

    Returns:
        True when the webhook accepted the message (2xx), False otherwise (or no webhook).
    """
    log.warning("RECSYS %s: %s", event.upper(), text)
    try:
        conn = _connection()
    except Exception as exc:  # a broken secrets backend must not fail the caller
        log.warning("cannot look up connection %s: %s", CONN_ID, exc)
        return False
    if conn is None:
        log.info("no %s connection configured: announced in the log only", CONN_ID)
        return False
    payload = {"text": f"[recsys] {text}", "event": event, **(details or {})}
    try:
        url = webhook_url(conn)
        extra = conn.extra_dejson or {}
        request = urllib.request.Request(  # noqa: S310 - the URL is the operator's own connection
            url,
            data=json.dumps(payload, default=str).encode(),
            headers={"Content-Type": "application/json", **(extra.get("headers") or {})},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=float(extra.get("timeout", 10))) as response:  # noqa: S310
            ok = 200 <= response.status < 300
        log.info("posted %s announcement to %s: HTTP %s", event, url, response.status)
        return ok
    except (OSError, ValueError, urllib.error.URLError) as exc:
        log.warning("webhook %s failed: %s (the announcement is in this log)", CONN_ID, exc)
        return False


class RecsysNotifier(BaseNotifier):
    """``on_failure_callback``: announce which task of which run failed, and why.

    Args:
        event: the event name in the message (``failure`` by default).
    """

    template_fields = ("event",)

    def __init__(self, event: str = "failure") -> None:
        super().__init__()
        self.event = event

    def notify(self, context: Any) -> None:
        ti = context.get("ti") or context.get("task_instance")
        dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
        task_id = getattr(ti, "task_id", "?")
        run_id = context.get("run_id") or getattr(ti, "run_id", "?")
        error = context.get("exception")
        text = f"task {dag_id}.{task_id} failed in run {run_id}" + (f": {error}" if error else "")
        announce(
            self.event,
            text,
            {
                "dag_id": dag_id,
                "task_id": task_id,
                "run_id": run_id,
                "try_number": getattr(ti, "try_number", None),
                "error": str(error) if error else None,
                "log_url": getattr(ti, "log_url", None),
            },
        )
