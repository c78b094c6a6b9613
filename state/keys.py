"""Every Redis key the bot uses, in one place (one prefix, one comment each).

All keys share the ``mpub:`` prefix so the bot can share a Redis with other tools and an
operator can find everything with ``SCAN MATCH mpub:*``.
"""

from __future__ import annotations

PREFIX = "mpub:"


def upgrade(upgrade_id: str) -> str:
    """String: the upgrade record as JSON (state, steps, checkpoints, approvals, saved values)."""
    return f"{PREFIX}upgrade:{upgrade_id}"


def active(namespace: str, release: str) -> str:
    """String: the id of the one upgrade of this release that is not finished (the per-release lock)."""
    return f"{PREFIX}active:{namespace}/{release}"


UPGRADES = f"{PREFIX}upgrades"
"""Sorted set: every upgrade id, scored by its start time (newest last)."""

ACTIVE_SET = f"{PREFIX}upgrades:active"
"""Set: ids of upgrades that have not ended; the runner resumes them after a restart."""


def audit(upgrade_id: str) -> str:
    """Stream: the audit trail of one upgrade (fields time, upgrade, user, event, data as JSON),
    append-only; it expires BOT_AUDIT_RETENTION_DAYS after the upgrade ends. (Bots before the
    stream kept a List under ``mpub:audit:<id>``: a different key, left alone.)"""
    return f"{PREFIX}events:{upgrade_id}"


AUDIT_ALL = f"{PREFIX}events"
"""Stream: every audit event of every upgrade and every command, trimmed to about AUDIT_ALL_MAX entries."""
AUDIT_ALL_MAX = 100_000


RUNNER_LEASE = f"{PREFIX}runner:lease"
"""String with a TTL: the instance id of the one process allowed to run steps (one active runner per Redis)."""

RUNNER_TOKEN = f"{PREFIX}runner:token"
"""Integer: the fencing token, incremented on every acquisition of ``RUNNER_LEASE``; a runner's record
writes go through only while it still equals the token that runner got (see ``state.store``)."""

JOBS = f"{PREFIX}apscheduler:jobs"
"""Hash: APScheduler's RedisJobStore jobs (pickled job state)."""

RUN_TIMES = f"{PREFIX}apscheduler:run_times"
"""Sorted set: APScheduler's RedisJobStore next run times."""

RUNNER_WAKEUP = f"{PREFIX}runner:wakeup"
"""Pub/sub channel: a process that queued a run (the Slack edge, a standby runner) publishes the
upgrade id here, and the active runner looks at the job store at once instead of at its next lease tick."""


def schedule_lock(upgrade_id: str) -> str:
    """String with a short TTL: held while one process reads and replaces the queued run of an upgrade,
    so that the edge's "run now" and the runner's "run at the reminder" cannot interleave."""
    return f"{PREFIX}runner:schedule:{upgrade_id}"
