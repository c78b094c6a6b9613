"""What a step can answer, and the errors that tell the engine how to retry.

StepError                 a person must act (shown with a Retry button)
├── Temporary             likely to pass by itself: retried automatically with backoff first
├── Refusal               a precondition does not hold: the upgrade ends "failed", nothing changed
└── DataLost              verification found rows or collections missing: the upgrade ends "failed"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Done:
    """The step is complete; ``summary`` is its one-line result for the root message."""

    summary: str = ""


@dataclass(frozen=True)
class Wait:
    """Not finished; run the step again after ``seconds`` (a condition is awaited)."""

    seconds: float
    summary: str = ""


@dataclass(frozen=True)
class Ask:
    """A destructive action needs approval of exactly ``target`` (kind: flush_done, pvc_list, reinstall)."""

    kind: str
    target: dict[str, Any]
    note: str = ""


Outcome = Done | Wait | Ask


class StepError(Exception):
    """The step cannot go on; ``reason`` says why in words a person can act on."""

    def __init__(self, reason: str, details: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.details = details


class Temporary(StepError):
    """A passing failure (API 5xx/429, connection refused): retried automatically a few times,
    not sooner than ``retry_after`` seconds when the server said so (Retry-After)."""

    def __init__(self, reason: str, details: str = "", retry_after: float | None = None) -> None:
        super().__init__(reason, details)
        self.retry_after = retry_after


class DataLost(StepError):
    """Verification found data missing after the upgrade: the upgrade ends failed, nothing more is
    changed; ``details`` is the rows table."""


class Refusal(StepError):
    """A precondition is not met before anything was changed: the upgrade ends as failed."""


class NotStartable(Exception):
    """Found before the upgrade started (no such release, ...): answered to the person alone."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
