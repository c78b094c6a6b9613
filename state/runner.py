"""The job runner: APScheduler with a Redis job store, and one active runner per Redis.

Work is queued as APScheduler "date" jobs in Redis (``keys.JOBS``/``keys.RUN_TIMES``), one job
id per upgrade, so a queued step survives a restart of the bot. Any process may queue jobs;
only the process holding the runner lease (``keys.RUNNER_LEASE``, renewed every few seconds)
runs them: the others keep their scheduler paused. When the lease holder dies its lease
expires and another process takes over, first calling ``on_leader`` so that upgrades whose
job was lost mid-run (APScheduler removes a date job when it starts it) are queued again.

Fencing: every acquisition of the lease increments ``keys.RUNNER_TOKEN`` in the same Lua
call, and the holder keeps the token it got. Every job runs inside ``state.store.fenced`` with
that token, so each record write the job makes is checked against the token in Redis in its
own transaction (``state.store.LeaseLost`` if another runner has acquired since). A job that
starts after this runner lost the lease is skipped; a refused write pauses the runner at once,
without waiting for the next renewal. The new leader's ``on_leader`` queues every unfinished
upgrade again, so nothing skipped is lost.

The job function is referenced by its import path, so the job store only ever holds
``(path, upgrade_id)``; a job never carries secrets.

A process that queues without running (``run_jobs=False``: the Slack edge of ``serve``, which
runs in a process of its own) never takes the lease. A run queued by any process other than the
active runner is announced on the ``keys.RUNNER_WAKEUP`` channel, to which every runner listens:
the active one looks at the job store at once (``scheduler.wakeup()``) rather than at its next
lease tick, which stays as the fallback should a message be lost. The read and replace of one
upgrade's queued run hold a short Redis lock (``keys.schedule_lock``) besides the in-process
one, since the edge and the runner are different processes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
from apscheduler.executors.pool import BasePoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from redis.exceptions import LockError

from state import keys
from state.store import Fence, fenced

log = logging.getLogger(__name__)

# Renew the lease if it is ours, else take it if it is free; either way return the holder's
# fencing token (a fresh one, INCR, on every acquisition, and if the counter itself was lost),
# or 0 when another process holds the lease.
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
  redis.call('pexpire', KEYS[1], ARGV[2])
  local token = redis.call('get', KEYS[2])
  if token then return tonumber(token) end
  return redis.call('incr', KEYS[2])
end
if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return redis.call('incr', KEYS[2])
end
return 0
"""
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class _Pool(BasePoolExecutor):
    """APScheduler's thread pool, with every job run inside the runner's fence."""

    def __init__(self, workers: int, run: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__(_FencedThreads(workers, run))


class _FencedThreads(concurrent.futures.ThreadPoolExecutor):
    def __init__(self, workers: int, run: Callable[[Callable[[], Any]], Any]) -> None:
        super().__init__(workers, thread_name_prefix="runner-job")
        self._run = run

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> concurrent.futures.Future[Any]:
        return super().submit(self._run, lambda: fn(*args, **kwargs))


class _Scheduler(BackgroundScheduler):
    """APScheduler's scheduler, for a job store shared by several processes: a one-off job that
    another runner has already run and removed is not an error. (APScheduler removes a date job
    after submitting it; JobLookupError there would kill its main loop thread, and this process
    would never run a job again, even after it becomes the leader.)"""

    def remove_job(self, job_id: str, jobstore: str | None = None) -> None:
        try:
            super().remove_job(job_id, jobstore)
        except JobLookupError:
            log.info("job %s was already removed (another runner ran it)", job_id)


class Runner:
    def __init__(
        self,
        client: redis.Redis,
        job_ref: str,
        *,
        on_leader: Callable[[], None] | None = None,
        lease_seconds: float = 15.0,
        workers: int = 4,
        run_jobs: bool = True,
    ) -> None:
        self.redis = client
        self.run_jobs = run_jobs  # False: only queue (never take the lease, never run a job)
        self.job_ref = job_ref
        self.on_leader = on_leader
        self.lease_ms = int(lease_seconds * 1000)
        self.instance = uuid.uuid4().hex
        self.is_leader = False
        self.token: int | None = None  # the fencing token of this runner's current lease
        self._state = threading.RLock()
        self._schedule_lock = threading.Lock()  # schedule(): read and replace a queued run as one step
        store = RedisJobStore(jobs_key=keys.JOBS, run_times_key=keys.RUN_TIMES)
        store.redis = client
        self.scheduler = _Scheduler(
            jobstores={"default": store},
            executors={"default": _Pool(workers, self._run_fenced)},
            job_defaults={"coalesce": True, "max_instances": 16, "misfire_grace_time": None},
            timezone=UTC,
        )
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._lease_loop, name="runner-lease", daemon=True)
        self._listener = threading.Thread(target=self._wakeup_loop, name="runner-wakeup", daemon=True)

    def start(self) -> None:
        # Started (paused), even when it only queues: a never-started scheduler keeps added jobs in
        # memory instead of writing them to the job store.
        self.scheduler.start(paused=True)
        if self.run_jobs:
            self._thread.start()
            self._listener.start()

    def stop(self) -> None:
        self._stop.set()
        if self.run_jobs:
            self._thread.join(5)
            self._listener.join(5)
        with contextlib.suppress(Exception):
            self.scheduler.shutdown(wait=False)
        if self.run_jobs:
            with contextlib.suppress(redis.RedisError):
                self.redis.eval(_RELEASE, 1, keys.RUNNER_LEASE, self.instance)

    def has_queued(self, upgrade_id: str) -> bool:
        """Whether a run of ``upgrade_id`` is queued in the job store."""
        return self.scheduler.get_job(f"advance:{upgrade_id}") is not None

    def schedule(self, upgrade_id: str, delay: float = 0.0) -> None:
        """Queue a run of ``upgrade_id``; an earlier queued run is kept rather than postponed.

        The read and the replace are one step under a lock: a click's "run now" and the engine's
        "run at the reminder" at the same moment must not both read "nothing queued" and let the
        later write (the reminder, an hour away) replace the earlier (found by the benchmark: the
        upgrade then slept until the reminder). The lock is also taken in Redis, for the edge and
        the runner of ``serve`` are two processes.

        Queued anywhere but on the active runner, the run is announced on ``keys.RUNNER_WAKEUP``."""
        job_id = f"advance:{upgrade_id}"
        with self._schedule_lock, self._queue_lock(upgrade_id):
            run_at = datetime.now(UTC) + timedelta(seconds=delay)
            existing = self.scheduler.get_job(job_id)
            if existing is None or existing.next_run_time is None or existing.next_run_time > run_at:
                self.scheduler.add_job(
                    self.job_ref, "date", run_date=run_at, args=[upgrade_id], id=job_id, replace_existing=True
                )
        if not self.is_leader:
            try:
                self.redis.publish(keys.RUNNER_WAKEUP, upgrade_id)
            except redis.RedisError as err:  # queued all the same: the runner finds it at its next lease tick
                log.warning("could not wake the runner: %s", err)

    @contextlib.contextmanager
    def _queue_lock(self, upgrade_id: str) -> Iterator[None]:
        """The cross-process half of ``schedule``'s lock; after 5 s of waiting, go on without it
        (a run queued late is worse than the rare race the lock closes)."""
        lock = self.redis.lock(keys.schedule_lock(upgrade_id), timeout=10, sleep=0.005, blocking_timeout=5)
        acquired = lock.acquire()
        if not acquired:
            log.warning("the queue lock of %s is held too long: queuing without it", upgrade_id)
        try:
            yield
        finally:
            if acquired:
                with contextlib.suppress(LockError):
                    lock.release()

    def _wakeup_loop(self) -> None:
        """Listen on ``keys.RUNNER_WAKEUP``: a run queued by another process is looked at at once."""
        pubsub: Any = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(keys.RUNNER_WAKEUP)
                message = pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message" and self.is_leader:
                    data = message.get("data")
                    upgrade_id = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
                    log.info("a run queued by another process woke the runner", extra={"upgrade_id": upgrade_id})
                    self.scheduler.wakeup()
            except (redis.RedisError, OSError, ValueError):
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._stop.wait(1.0)  # Redis is away: the lease loop says so; try again
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def _lease_loop(self) -> None:
        interval = self.lease_ms / 3000
        while not self._stop.is_set():
            self._tick()
            self._stop.wait(min(interval, 1.0) if self.is_leader else interval)

    def _run_fenced(self, job: Callable[[], Any]) -> Any:
        """Run one job (in a pool thread) with this runner's token; skip it if the lease is gone."""
        with self._state:
            token = self.token if self.is_leader else None
        if token is None:
            log.warning("not the active runner any more: a job was not run")
            return []  # APScheduler's run_job result: no events
        with fenced(Fence(token, self._lost)):
            return job()

    def _lost(self, token: int) -> None:
        """A write under ``token`` was refused: stop running jobs now if that is still our lease."""
        with self._state:
            if not self.is_leader or self.token != token:
                return
            self.is_leader = False
            self.token = None
        log.warning("the runner lease was taken by another runner: pausing the runner")
        with contextlib.suppress(Exception):
            self.scheduler.pause()

    def _tick(self) -> None:
        try:
            token = int(self.redis.eval(_RENEW, 2, keys.RUNNER_LEASE, keys.RUNNER_TOKEN, self.instance, self.lease_ms))
        except redis.RedisError as err:
            log.warning("cannot renew the runner lease: %s", err)
            token = 0
        with self._state:
            was, self.is_leader = self.is_leader, token > 0
            acquired = token > 0 and token != self.token
            self.token = token or None
        if acquired:
            log.info("this process is now the active runner", extra={"fence": token})
            if self.on_leader is not None:
                try:
                    self.on_leader()
                except Exception:
                    log.exception("resuming upgrades failed")
            self.scheduler.resume()
        elif was and not token:
            log.warning("lost the runner lease: pausing the runner")
            self.scheduler.pause()
        elif token:
            # Jobs queued by other processes do not wake this scheduler: look at the store regularly.
            self.scheduler.wakeup()
