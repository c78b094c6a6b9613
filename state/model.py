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
APPROVED, REJECTED, SUPERSEDED, EXPIRED = "approved", "rejected", "superseded", "expired"


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
    reasked_by: str | None = None  # an expired checkpoint: who clicked "Ask again", and when
    reasked_at: float | None = None

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
class Facts:
    """What both paths learn and keep: the plan, the flushes, the backup, and the engine's own
    bookkeeping (retries, the open error, an abort asked from an error message, the restore)."""

    release: dict[str, Any] = field(default_factory=dict)  # chart/Milvus/operator versions seen by preflight
    databases: dict[str, list[str]] = field(default_factory=dict)  # collections of each database, at preflight
    # {db: {collection: {"rows": n, "load": state}}} at preflight, before the first flush
    rows_before: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    # {db: {collection: rows}} right after the last flush: the number that must survive
    rows_flushed: dict[str, dict[str, int]] = field(default_factory=dict)
    pvcs: list[dict[str, Any]] = field(default_factory=list)  # Pulsar V2 PVCs seen by preflight
    pvs: list[dict[str, Any]] = field(default_factory=list)  # the PVs bound to them
    flush: dict[str, Any] = field(default_factory=dict)  # the flush before the first checkpoint
    final_flush: dict[str, Any] | None = None  # the flush after writers were stopped
    backup_secret: str | None = None  # the Secret that holds the saved values or manifest
    deadlines: dict[str, dict[str, Any]] = field(default_factory=dict)  # pod waits: {key: {attempt, at}}
    retries: list[dict[str, Any]] = field(default_factory=list)  # Retry clicks: {step, by, at}
    open_error: dict[str, Any] | None = None  # the step error showing Retry/Abort: {step, reason, key}
    abort_requested: dict[str, Any] | None = None  # Abort clicked on an error message: {by, at}
    restore: str | None = None  # what the restore after an abort did


@dataclass
class HelmState:
    """The Helm path's own progress marks ("I am about to" and "done" facts)."""

    reinstall_plan: dict[str, Any] = field(default_factory=dict)  # chart, version, values diff
    helm_running: dict[str, Any] | None = None  # a helm command started and not seen to end: {step, command, at}
    uninstalled: float | None = None
    pvc_delete_started: float | None = None
    pvcs_deleted: str | None = None
    reinstall_started: float | None = None


@dataclass
class OperatorState:
    """The milvus-operator path's own progress marks."""

    kept_pvcs: list[dict[str, Any]] = field(default_factory=list)  # etcd/MinIO PVCs that must survive
    cr_delete_started: float | None = None
    cr_deleted: str | None = None


# Which typed state each fact belongs to (each name is in one class only); also where each key of
# the untyped ``facts`` of records written before these classes existed goes.
_LEGACY_FACTS: dict[str, str] = {
    **{f.name: "facts" for f in dataclasses.fields(Facts)},
    **{f.name: "helm" for f in dataclasses.fields(HelmState)},
    **{f.name: "operator" for f in dataclasses.fields(OperatorState)},
}
assert len(_LEGACY_FACTS) == sum(len(dataclasses.fields(c)) for c in (Facts, HelmState, OperatorState))


def assign_facts(u: Upgrade, values: dict[str, Any]) -> None:
    """Set each named field on the typed state it belongs to (``Facts``, ``HelmState``, ``OperatorState``)."""
    unknown = sorted(set(values) - set(_LEGACY_FACTS))
    if unknown:
        raise TypeError(f"no such fact: {', '.join(unknown)}")
    for key, value in values.items():
        setattr(getattr(u, _LEGACY_FACTS[key]), key, value)


def _typed(cls: type[Any], data: dict[str, Any]) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in known})


def _split_legacy_facts(data: dict[str, Any]) -> None:
    """A record written before typed state (no ``helm`` key) kept every fact as a string key of
    one ``facts`` dict: put each where it lives now, so an upgrade under way when the bot itself
    was upgraded carries on."""
    if "helm" in data:
        return
    parts: dict[str, dict[str, Any]] = {"facts": {}, "helm": {}, "operator": {}}
    for key, value in (data.get("facts") or {}).items():
        if key.endswith("_deadline"):  # pod waits kept their deadline as "<key>_deadline"
            parts["facts"].setdefault("deadlines", {})[key.removesuffix("_deadline")] = value
        elif key in _LEGACY_FACTS:
            parts[_LEGACY_FACTS[key]][key] = value
    data.update(parts)


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
    facts: Facts = field(default_factory=Facts)
    helm: HelmState = field(default_factory=HelmState)
    operator: OperatorState = field(default_factory=OperatorState)
    saved: dict[str, Any] | None = None
    posted: dict[str, str] = field(default_factory=dict)
    thread: list[Post] = field(default_factory=list)
    root_wanted: bool = False
    root_ts: str | None = None
    permalink: str | None = None  # the root message's permalink (chat.getPermalink), once asked
    paused: bool = False  # a checkpoint expired: nothing runs until someone asks again
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
        _split_legacy_facts(data)
        data["facts"] = _typed(Facts, data.get("facts") or {})
        data["helm"] = _typed(HelmState, data.get("helm") or {})
        data["operator"] = _typed(OperatorState, data.get("operator") or {})
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
