"""The durable model of one upgrade: a single serializable record.

Everything the bot knows about an upgrade lives in one ``Upgrade`` dataclass that is stored
as JSON in Redis (see ``state.store``). The runner writes it before acting on it, so after a
crash the record says exactly how far the upgrade got. Step states deliberately avoid the
words "succeeded", "failed" and "aborted": those belong to the upgrade's outcome alone.
"""

from __future__ import annotations

import dataclasses
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# Step states (never the outcome words).
PENDING, RUNNING, WAITING, DONE, ERROR, SKIPPED = "pending", "running", "waiting", "done", "error", "skipped"
# Upgrade states. The last three are the outcomes: an upgrade in one of them has ended.
CHECKING, ACTIVE, BLOCKED = "checking", "active", "blocked"
SUCCEEDED, FAILED, ABORTED = "succeeded", "failed", "aborted"
OUTCOMES = (SUCCEEDED, FAILED, ABORTED)
# Checkpoint decisions.
APPROVED, REJECTED, SUPERSEDED = "approved", "rejected", "superseded"


def now() -> float:
    return time.time()


@dataclass
class StepState:
    status: str = PENDING
    started_at: float | None = None
    ended_at: float | None = None
    summary: str = ""
    error: str | None = None
    attempts: int = 0


@dataclass
class Checkpoint:
    """A question put to the operators: approve exactly ``target``, or abort."""

    id: str
    kind: str
    step: str
    created_at: float
    target: dict[str, Any]
    ts: str | None = None
    decision: str | None = None
    decided_by: str | None = None
    decided_at: float | None = None

    @property
    def open(self) -> bool:
        return self.decision is None


@dataclass
class Post:
    """One message the upgrade's thread must show (see ``bot.procedure.thread``).

    kind: ``note`` (say-once text), ``checkpoint`` (``data["checkpoint"]`` is its id), ``error``
    (``data``: step, reason, details, block_id; ``data["closed"]``: outcome, by), ``file``
    (``data``: filename, content, title; ``text`` is the comment). ``ts`` is set once Slack has
    the message (``"file"`` for a file); ``final`` once it shows its final form (a decided
    checkpoint without buttons, a closed error).
    """

    key: str
    kind: str
    text: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: str | None = None
    final: bool = False


@dataclass
class Upgrade:
    id: str
    release: str
    namespace: str
    channel: str
    started_by: str
    mode: str | None = None
    dry_run: bool = False
    started_at: float = field(default_factory=now)
    state: str = CHECKING
    step: str = "detect"
    steps: dict[str, StepState] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    saved: dict[str, Any] | None = None
    posted: dict[str, str] = field(default_factory=dict)
    thread: list[Post] = field(default_factory=list)
    root_wanted: bool = False
    root_ts: str | None = None
    response_url: str | None = None
    downtime_started_at: float | None = None
    downtime_ended_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    version: int = 0

    @staticmethod
    def new_id() -> str:
        return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + uuid.uuid4().hex[:6]

    @property
    def ended(self) -> bool:
        return self.state in OUTCOMES

    def step_state(self, name: str) -> StepState:
        return self.steps.setdefault(name, StepState())

    def checkpoint(self, checkpoint_id: str) -> Checkpoint | None:
        return next((c for c in self.checkpoints if c.id == checkpoint_id), None)

    def open_checkpoint(self) -> Checkpoint | None:
        return next((c for c in reversed(self.checkpoints) if c.open), None)

    def latest_checkpoint(self, kind: str) -> Checkpoint | None:
        return next((c for c in reversed(self.checkpoints) if c.kind == kind), None)

    def approved(self, kind: str) -> Checkpoint | None:
        latest = self.latest_checkpoint(kind)
        return latest if latest is not None and latest.decision == APPROVED else None

    def post(self, key: str) -> Post | None:
        return next((p for p in self.thread if p.key == key), None)

    def want(self, post: Post) -> Post:
        """Record that the thread must show ``post`` (once per key); returns the recorded one."""
        found = self.post(post.key)
        if found is not None:
            return found
        self.root_wanted = True
        self.thread.append(post)
        return post

    def elapsed(self, at: float | None = None) -> float:
        return (self.ended_at or at or now()) - self.started_at

    def downtime(self, at: float | None = None) -> float:
        if self.downtime_started_at is None:
            return 0.0
        return (self.downtime_ended_at or self.ended_at or at or now()) - self.downtime_started_at

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Upgrade:
        data = json.loads(raw)
        data["steps"] = {k: StepState(**v) for k, v in data.get("steps", {}).items()}
        data["checkpoints"] = [Checkpoint(**c) for c in data.get("checkpoints", [])]
        data["thread"] = [Post(**p) for p in data.get("thread", [])]
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
