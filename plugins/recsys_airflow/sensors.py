"""Deferrable wait for a landing day: the worker slot is released while the triggerer polls.

A landing day is complete when its folder holds the ``_SUCCESS`` marker that the upstream
writes last (the Hadoop convention; ``jobs.sim`` does the same). The folder is a local path or an
object-store URI (``s3://…``): the marker is looked up through ``jobs.core.fs`` (pyarrow; endpoint
and credentials from the triggerer's environment) in a thread, so the triggerer's event loop never
blocks on the store. An unreachable store counts as "not yet" and is logged. On timeout the task
fails with a message naming the folder it waited for.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException
from airflow.triggers.base import BaseTrigger, TriggerEvent


def _marker(folder: str) -> str:
    return f"{folder.rstrip('/')}/_SUCCESS"


def marker_exists(folder: str) -> bool:
    """True when the landing folder's ``_SUCCESS`` marker exists (local or object store)."""
    from jobs.core import fs

    return fs.exists(_marker(folder))


class PathTrigger(BaseTrigger):
    """Fires when ``folder/_SUCCESS`` exists, or with a timeout event after ``timeout`` seconds."""

    def __init__(self, folder: str, poke_interval: float, deadline: float) -> None:
        super().__init__()
        self.folder = folder
        self.poke_interval = poke_interval
        self.deadline = deadline

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "recsys_airflow.sensors.PathTrigger",
            {"folder": self.folder, "poke_interval": self.poke_interval, "deadline": self.deadline},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            try:
                found = await asyncio.to_thread(marker_exists, self.folder)
            except Exception as exc:  # the store is down: keep waiting until the deadline
                self.log.warning("cannot look for %s: %s", _marker(self.folder), exc)
                found = False
            if found:
                yield TriggerEvent({"status": "found", "folder": self.folder})
                return
            if time.time() >= self.deadline:
                yield TriggerEvent({"status": "timeout", "folder": self.folder})
                return
            await asyncio.sleep(min(self.poke_interval, max(0.0, self.deadline - time.time())))


class LandingSensor(BaseOperator):
    """Wait (deferred) until a landing folder is complete.

    Args:
        folder: the landing folder of the logical day (templated).
        timeout_s: fail when the folder is not complete after this many seconds.
        poke_interval_s: how often the triggerer looks.
    """

    template_fields: Sequence[str] = ("folder", "timeout_s")
    ui_color = "#fdf3e8"

    def __init__(self, *, folder: str, timeout_s: float | str, poke_interval_s: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.folder = folder
        self.timeout_s = timeout_s
        self.poke_interval_s = poke_interval_s

    def execute(self, context: Any) -> str:
        self.timeout_s = float(self.timeout_s)
        if marker_exists(self.folder):
            self.log.info("landing folder complete: %s", self.folder)
            return self.folder
        self.log.info("waiting up to %ss for %s", self.timeout_s, _marker(self.folder))
        self.defer(
            trigger=PathTrigger(self.folder, self.poke_interval_s, time.time() + self.timeout_s),
            method_name="execute_complete",
        )
        return self.folder

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str:
        if event["status"] != "found":
            self.timeout_s = float(self.timeout_s)
            raise AirflowFailException(
                f"landing folder {self.folder} was not complete (no _SUCCESS marker) after {self.timeout_s:.0f}s"
            )
        self.log.info("landing folder complete: %s", self.folder)
        return self.folder
