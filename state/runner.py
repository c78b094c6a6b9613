"""The job runner: APScheduler with a Redis job store, and one active runner per Redis.

Work is queued as APScheduler "date" jobs in Redis (``keys.JOBS``/``keys.RUN_TIMES``), one job
id per upgrade, so a queued step survives a restart of the bot. Any process may queue jobs;
only the process holding the runner lease (``keys.RUNNER_LEASE``, renewed every few seconds)
runs them: the others keep their scheduler paused. When the lease holder dies its lease
expires and another process takes over, first calling ``on_leader`` so that upgrades whose
job was lost mid-run (APScheduler removes a date job when it starts it) are queued again.

The job function is referenced by its import path, so the job store only ever holds
``(path, upgrade_id)``; a job never carries secrets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import redis
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler

from state import keys

log = logging.getLogger(__name__)

_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class Runner:
    def __init__(
        self,
        client: redis.Redis,
        job_ref: str,
        *,
        on_leader: Callable[[], None] | None = None,
        lease_seconds: float = 15.0,
        workers: int = 4,
    ) -> None:
        self.redis = client
        self.job_ref = job_ref
        self.on_leader = on_leader
        self.lease_ms = int(lease_seconds * 1000)
        self.instance = uuid.uuid4().hex
        self.is_leader = False
        store = RedisJobStore(jobs_key=keys.JOBS, run_times_key=keys.RUN_TIMES)
        store.redis = client
        self.scheduler = BackgroundScheduler(
            jobstores={"default": store},
            executors={"default": ThreadPoolExecutor(workers)},
            job_defaults={"coalesce": True, "max_instances": 16, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._lease_loop, name="runner-lease", daemon=True)

    def start(self) -> None:
        self.scheduler.start(paused=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        with contextlib.suppress(redis.RedisError):
            self.redis.eval(_RELEASE, 1, keys.RUNNER_LEASE, self.instance)

    def schedule(self, upgrade_id: str, delay: float = 0.0) -> None:
        """Queue a run of ``upgrade_id``; an earlier queued run is kept rather than postponed."""
        job_id = f"advance:{upgrade_id}"
        run_at = datetime.now(UTC) + timedelta(seconds=delay)
        existing = self.scheduler.get_job(job_id)
        if existing is not None and existing.next_run_time is not None and existing.next_run_time <= run_at:
            return
        self.scheduler.add_job(
            self.job_ref, "date", run_date=run_at, args=[upgrade_id], id=job_id, replace_existing=True
        )

    def _lease_loop(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(min(interval, 1.0) if self.is_leader else interval)

    def _tick(self) -> None:
        try:
            held = bool(self.redis.eval(_RENEW, 1, keys.RUNNER_LEASE, self.instance, self.lease_ms))
        except redis.RedisError as err:
            log.warning("cannot renew the runner lease: %s", err)
            held = False
        if held and not self.is_leader:
            self.is_leader = True
            log.info("this process is now the active runner")
            if self.on_leader is not None:
                try:
                    self.on_leader()
                except Exception:
                    log.exception("resuming upgrades failed")
            self.scheduler.resume()
        elif not held and self.is_leader:
            self.is_leader = False
            log.warning("lost the runner lease: pausing the runner")
            self.scheduler.pause()
        elif held:
            # Jobs queued by other processes do not wake this scheduler: look at the store regularly.
            self.scheduler.wakeup()
