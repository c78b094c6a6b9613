"""The Redis store of upgrade records, with the one-upgrade-per-release lock.

Guarantees:
- ``create`` is atomic: it either takes the release's active lock and writes the record, or
  returns the id of the upgrade that already holds the lock (WATCH/MULTI).
- ``update`` is a compare-and-set loop: concurrent writers (the runner, a button click) never
  overwrite each other's changes; the function passed in sees the latest record.
- An upgrade that ends releases its lock in the same transaction that records the outcome.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import redis

from state import keys
from state.model import Upgrade

T = TypeVar("T")


class NotFound(KeyError):
    pass


class UpgradeStore:
    def __init__(self, client: redis.Redis) -> None:
        self.redis = client

    @classmethod
    def from_url(cls, url: str) -> UpgradeStore:
        return cls(redis.Redis.from_url(url, health_check_interval=30, socket_timeout=10, socket_connect_timeout=5))

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

    def active_ids(self) -> list[str]:
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in self.redis.smembers(keys.ACTIVE_SET))

    def update(self, upgrade_id: str, change: Callable[[Upgrade], T]) -> tuple[Upgrade, T]:
        """Apply ``change`` to the latest record and store it atomically; retried on concurrent writes."""
        key = keys.upgrade(upgrade_id)
        with self.redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
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
        pipe.eval(
            "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0",
            1,
            keys.active(upgrade.namespace, upgrade.release),
            upgrade.id,
        )

    def discard(self, upgrade_id: str) -> None:
        """Forget an upgrade that never started (the release was not found before anything ran)."""
        upgrade = self.find(upgrade_id)
        with self.redis.pipeline() as pipe:
            pipe.delete(keys.upgrade(upgrade_id))
            pipe.zrem(keys.UPGRADES, upgrade_id)
            if upgrade is not None:
                self._release(pipe, upgrade)
            pipe.execute()

    def audit(self, upgrade_id: str, event: str, **fields: Any) -> None:
        entry = json.dumps({"time": time.time(), "event": event, **fields}, default=str, sort_keys=True)
        self.redis.rpush(keys.audit(upgrade_id), entry)

    def audit_trail(self, upgrade_id: str) -> list[dict[str, Any]]:
        return [json.loads(e) for e in self.redis.lrange(keys.audit(upgrade_id), 0, -1)]
