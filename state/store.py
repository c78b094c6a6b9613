"""The Redis store of upgrade records, with the one-upgrade-per-release lock and lease fencing.

Guarantees:
- ``create`` is atomic: it either takes the release's active lock and writes the record, or
  returns the id of the upgrade that already holds the lock (WATCH/MULTI).
- ``update`` is a compare-and-set loop: concurrent writers (the runner, a button click) never
  overwrite each other's changes; the function passed in sees the latest record.
- An upgrade that ends releases its lock in the same transaction that records the outcome.
- Runner writes are fenced. Every acquisition of the runner lease increments
  ``keys.RUNNER_TOKEN``; the runner runs each job inside ``fenced(Fence(token, ...))``. A
  write made inside a fence (``update``, ``discard``) WATCHes the token key with the record
  and goes through only if the token in Redis is still the writer's, in the same
  transaction; otherwise it raises ``LeaseLost`` and writes nothing. So a runner that lost
  its lease (paused, partitioned, its pod replaced) cannot overwrite the new runner's record.
- Writes outside a fence are a person's, from the Slack handlers (a click, a new command):
  they do not depend on who runs the steps, any replica may make them, and they are never
  refused for the lease. The fence is a context variable rather than an argument so that the
  one store object serves both sides: the handlers' threads (``asyncio.to_thread``) never
  carry one, the runner's job threads always do.

Exceptions::

    KeyError
    └── NotFound     no such upgrade record
    RuntimeError
    └── LeaseLost    a fenced write by a runner whose lease another runner has taken since
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from state import keys
from state.model import Upgrade

T = TypeVar("T")


class NotFound(KeyError):
    pass


class LeaseLost(RuntimeError):
    """A runner write refused: the runner lease was acquired by another holder since this one's."""

    def __init__(self, token: int, current: int | None) -> None:
        super().__init__(f"the runner lease was lost: this runner holds token {token}, Redis has {current}")
        self.token = token
        self.current = current


@dataclass(frozen=True)
class Fence:
    """The fencing token of the runner running this job; ``on_lost`` is told when a write is refused."""

    token: int
    on_lost: Callable[[int], None] = field(default=lambda token: None, compare=False)


_fence: contextvars.ContextVar[Fence | None] = contextvars.ContextVar("runner_fence", default=None)


@contextlib.contextmanager
def fenced(fence: Fence) -> Iterator[None]:
    """Make every store write in this context (thread) a runner write checked against ``fence``."""
    reset = _fence.set(fence)
    try:
        yield
    finally:
        _fence.reset(reset)


def current_fence() -> Fence | None:
    return _fence.get()


def _check_fence(pipe: Any, fence: Fence | None) -> None:
    """Inside WATCH (before MULTI): refuse the write if the runner lease has changed hands."""
    if fence is None:
        return
    raw = pipe.get(keys.RUNNER_TOKEN)
    current = int(raw) if raw is not None else None
    if current != fence.token:
        pipe.unwatch()
        fence.on_lost(fence.token)
        raise LeaseLost(fence.token, current)


class UpgradeStore:
    def __init__(self, client: redis.Redis, audit_retention_seconds: float = 90 * 86400) -> None:
        self.redis = client
        self.audit_retention_seconds = audit_retention_seconds

    @classmethod
    def from_url(cls, url: str, audit_retention_seconds: float = 90 * 86400) -> UpgradeStore:
        client = redis.Redis.from_url(url, health_check_interval=30, socket_timeout=10, socket_connect_timeout=5)
        return cls(client, audit_retention_seconds)

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def create(self, upgrade: Upgrade) -> str | None:
        """Store a new upgrade and take its release's lock. Returns the id of a running upgrade instead, if any."""
        lock_key = keys.active(upgrade.namespace, upgrade.release)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(lock_key)
                    holder = pipe.get(lock_key)
                    if holder is not None:
                        pipe.unwatch()
                        return holder.decode() if isinstance(holder, bytes) else str(holder)
                    upgrade.version = 1
                    pipe.multi()
                    pipe.set(lock_key, upgrade.id)
                    pipe.set(keys.upgrade(upgrade.id), upgrade.to_json())
                    pipe.zadd(keys.UPGRADES, {upgrade.id: upgrade.started_at})
                    pipe.sadd(keys.ACTIVE_SET, upgrade.id)
                    pipe.execute()
                    return None
                except redis.WatchError:
                    continue

    def get(self, upgrade_id: str) -> Upgrade:
        raw = self.redis.get(keys.upgrade(upgrade_id))
        if raw is None:
            raise NotFound(upgrade_id)
        return Upgrade.from_json(raw)

    def find(self, upgrade_id: str) -> Upgrade | None:
        try:
            return self.get(upgrade_id)
        except NotFound:
            return None

    def recent(self, limit: int) -> list[Upgrade]:
        """The ``limit`` most recently started upgrades (newest first), plus every active one
        older than those, read with one MGET."""
        ids = self.recent_ids(limit)
        ids += [i for i in self.active_ids() if i not in ids]
        if not ids:
            return []
        raws = self.redis.mget([keys.upgrade(i) for i in ids])
        return [Upgrade.from_json(raw) for raw in raws if raw is not None]

    def recent_ids(self, limit: int) -> list[str]:
        """The ids of the ``limit`` most recently started upgrades, ended or not (newest first)."""
        members = self.redis.zrevrange(keys.UPGRADES, 0, max(0, limit - 1))
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]

    def active_ids(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in self.redis.smembers(keys.ACTIVE_SET))

    def update(self, upgrade_id: str, change: Callable[[Upgrade], T]) -> tuple[Upgrade, T]:
        """Apply ``change`` to the latest record and store it atomically; retried on concurrent writes.

        Inside ``fenced`` (the runner), raises ``LeaseLost`` instead of writing once the lease has changed hands.
        """
        key = keys.upgrade(upgrade_id)
        fence = current_fence()
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, keys.RUNNER_TOKEN)
                    _check_fence(pipe, fence)
                    raw = pipe.get(key)
                    if raw is None:
                        raise NotFound(upgrade_id)
                    upgrade = Upgrade.from_json(raw)
                    result = change(upgrade)
                    upgrade.version += 1
                    pipe.multi()
                    pipe.set(key, upgrade.to_json())
                    if upgrade.ended:
                        self._release(pipe, upgrade)
                    pipe.execute()
                    return upgrade, result
                except redis.WatchError:
                    continue

    def _release(self, pipe: Any, upgrade: Upgrade) -> None:
        # Only release the lock if it is ours (it always is while the record says we are active).
        pipe.srem(keys.ACTIVE_SET, upgrade.id)
        # The trail outlives the upgrade by BOT_AUDIT_RETENTION_DAYS (a later restore's events keep this TTL).
        pipe.expire(keys.audit(upgrade.id), max(1, int(self.audit_retention_seconds)))
        pipe.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            keys.active(upgrade.namespace, upgrade.release),
            upgrade.id,
        )

    def discard(self, upgrade_id: str) -> None:
        """Forget an upgrade that never started (the release was not found before anything ran)."""
        fence = current_fence()
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(keys.upgrade(upgrade_id), keys.RUNNER_TOKEN)
                    _check_fence(pipe, fence)
                    raw = pipe.get(keys.upgrade(upgrade_id))
                    upgrade = Upgrade.from_json(raw) if raw is not None else None
                    pipe.multi()
                    pipe.delete(keys.upgrade(upgrade_id))
                    pipe.zrem(keys.UPGRADES, upgrade_id)
                    if upgrade is not None:
                        self._release(pipe, upgrade)
                    pipe.execute()
                    return
                except redis.WatchError:
                    continue

    def audit(self, upgrade_id: str | None, event: str, user: str | None = None, **data: Any) -> None:
        """Append one event to the upgrade's stream (when there is an upgrade) and to the global one.

        Append-only (XADD), never a compare-and-set: the trail says what happened even when a
        fenced-out runner's record write was refused (it says so too)."""
        entry = {
            "time": f"{time.time():.6f}",
            "upgrade": upgrade_id or "",
            "user": user or "",
            "event": event,
            "data": json.dumps(data, default=str, sort_keys=True),
        }
        pipe = self.redis.pipeline(transaction=False)
        if upgrade_id:
            pipe.xadd(keys.audit(upgrade_id), entry)  # type: ignore[arg-type]
        pipe.xadd(keys.AUDIT_ALL, entry, maxlen=keys.AUDIT_ALL_MAX, approximate=True)  # type: ignore[arg-type]
        pipe.execute()

    def audit_trail(self, upgrade_id: str) -> list[dict[str, Any]]:
        """The upgrade's events in time order: ``{time, upgrade, user, event, **data}``."""
        out = []
        for _, fields in self.redis.xrange(keys.audit(upgrade_id)) or []:
            fields = fields or {}
            f = {
                (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in fields.items()
            }
            event = {"time": float(f["time"]), "upgrade": f["upgrade"], "user": f["user"] or None, "event": f["event"]}
            event.update(json.loads(f.get("data") or "{}"))
            out.append(event)
        return out
