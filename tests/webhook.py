"""A real HTTP endpoint on loopback that records the JSON bodies POSTed to it (the notifier's target)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Webhook:
    """Records every POSTed JSON body as ``{"path", "body"}`` in ``received``."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append({"path": self.path, "body": json.loads(body)})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def connection(self) -> str:
        """The ``recsys_webhook`` connection (``AIRFLOW_CONN_…`` JSON) that points here."""
        return json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": self.port, "extra": {"endpoint": "/hook"}})

    def events(self, event: str) -> list[dict[str, Any]]:
        return [r["body"] for r in list(self.received) if r["body"].get("event") == event]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
