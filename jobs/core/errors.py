"""What a job's failure means to the orchestrator: one exception class per meaning, one exit code each.

A leaf module (it imports nothing from ``jobs``): every module of ``jobs.core`` and every stage
raises these, and ``jobs.core.cli.run_job`` maps them to the process's exit status. The
orchestrator retries exactly the retryable codes; a retry cannot fix a bad argument, bad input
data or a failed quality check.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """What a job's exit status means to the orchestrator."""

    OK = 0
    RETRYABLE = 1  # infrastructure: a full disk, a service outage — a retry may succeed
    BAD_ARGUMENT = 2  # the caller's mistake (argv, configuration)
    BAD_INPUT = 3  # the data cannot be processed as it is
    CHECK_FAILED = 4  # a quality check said no (validation, infra validation)

    @property
    def retryable(self) -> bool:
        return self not in NOT_RETRYABLE


NOT_RETRYABLE = frozenset({ExitCode.BAD_ARGUMENT, ExitCode.BAD_INPUT, ExitCode.CHECK_FAILED})


def is_retryable(code: int) -> bool:
    """True for an exit status a retry may fix: 1, a signal (negative), anything unknown."""
    return code not in {int(c) for c in NOT_RETRYABLE}


class JobError(RuntimeError):
    """A failure the job understands; ``exit_code`` says whether a retry can help."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, result: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.result = result or {}


class BadArgument(JobError):
    """The caller's mistake: a flag out of range, an unknown model version, a bad configuration."""

    exit_code = ExitCode.BAD_ARGUMENT


class BadInput(JobError):
    """The data cannot be processed as it is (missing, unpublished, malformed)."""

    exit_code = ExitCode.BAD_INPUT


class CheckFailed(JobError):
    """A quality check said no (data validation, infra validation)."""

    exit_code = ExitCode.CHECK_FAILED


class Retryable(JobError):
    """Infrastructure: a retry may succeed once the fault is lifted."""

    exit_code = ExitCode.RETRYABLE


class SnapshotError(BadInput):
    """A training snapshot cannot be built (no validated data in the window) or used (missing,
    unpublished, a table or column wrong): bad input data, exit 3, whichever side finds it.

    One meaning, one code: the snapshot is data the pipeline produced, like a curated day (whose
    absence is ``BadInput`` too); the caller's argv is not what is wrong, and no retry fixes it.
    """
