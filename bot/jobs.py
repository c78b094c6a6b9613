"""The runner's job entry point, referenced by its import path in the Redis job store.

Light to import on purpose: APScheduler imports a job's function when the job is queued, also in
the Slack edge (which only queues); the engine, and with it the cluster adapters, is imported
only where a job runs, in the runner process. Jobs queued by older bots name
``bot.procedure.engine:run_job``, which still exists.
"""

from __future__ import annotations

JOB_REF = "bot.jobs:advance"


def advance(upgrade_id: str) -> None:
    """Run ``upgrade_id`` on this process's engine (the runner's)."""
    from bot.procedure import engine

    engine.run_job(upgrade_id)
