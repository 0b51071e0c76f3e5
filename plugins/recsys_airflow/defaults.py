"""Task defaults shared by the project's DAGs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any


def default_args(owner: str, retries: int = 2) -> dict[str, Any]:
    """Owner and retries with exponential backoff (30 s doubling, capped at 10 min)."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
    }
