"""Runner lease fencing, with two runners on one real Redis (``state.runner``, ``state.store``).

Covers: every lease acquisition gets a fresh fencing token (the second holder's is the first's
plus one); a runner that lost its lease (its renewal paused and the lease expired) has its
in-flight job's late write refused with ``LeaseLost``, stops running jobs at once, and the
record holds the new holder's writes only; a person's write (a Slack click, made outside any
runner job) goes through whoever holds the lease; and a fenced write is checked inside the
compare-and-set transaction (a token change between read and write is caught).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from apscheduler.schedulers.base import STATE_PAUSED

from state import keys
from state.model import Upgrade
from state.runner import Runner
from state.store import Fence, LeaseLost, UpgradeStore, current_fence, fenced

JOB = "tests.test_fencing:job"
LEASE = 2.0

# What the job does, per upgrade id: the test's store, gates to hold a run, and what each run saw.
STORES: dict[str, UpgradeStore] = {}
GATES: dict[str, list[threading.Event]] = {}
RESULTS: dict[str, list[tuple[int, str]]] = {}
STARTED: dict[str, list[threading.Event]] = {}


def job(upgrade_id: str) -> None:
    """A runner job: records its token, optionally waits on a gate, then writes again."""
    store = STORES[upgrade_id]
    fence = current_fence()
    assert fence is not None, "a runner job always runs inside a fence"
    store.update(upgrade_id, lambda u: u.facts.retries.append({"by": f"{fence.token}:first"}))
    if GATES.get(upgrade_id):
        STARTED[upgrade_id].pop(0).set()
        GATES[upgrade_id].pop(0).wait(30)
    try:
        store.update(upgrade_id, lambda u: u.facts.retries.append({"by": f"{fence.token}:late"}))
    except LeaseLost:
        RESULTS[upgrade_id].append((fence.token, "refused"))
        raise
    RESULTS[upgrade_id].append((fence.token, "written"))


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture
def upgrade_id(client: redis.Redis) -> Iterator[str]:
    store = UpgradeStore(client)
    upgrade = Upgrade(id=Upgrade.new_id(), release="my-release", namespace="default", channel="C1", started_by="U1")
    assert store.create(upgrade) is None
    STORES[upgrade.id], GATES[upgrade.id], RESULTS[upgrade.id], STARTED[upgrade.id] = store, [], [], []
    yield upgrade.id
    for table in (STORES, GATES, RESULTS, STARTED):
        table.pop(upgrade.id, None)


@pytest.fixture
def make_runner(client: redis.Redis) -> Iterator[Callable[[], Runner]]:
    runners: list[Runner] = []

    def make() -> Runner:
        runners.append(Runner(client, JOB, lease_seconds=LEASE))
        runners[-1].start()
        return runners[-1]

    yield make
    for r in runners:
        r.stop()


def _pause_renewal(runner: Runner) -> None:
    """Stop the lease loop without releasing the lease, as a frozen or partitioned process would."""
    runner._stop.set()
    runner._thread.join(5)
    assert not runner._thread.is_alive()


def test_stale_runner_write_is_refused_and_the_new_holder_writes(
    client: redis.Redis, upgrade_id: str, make_runner: Callable[[], Runner]
) -> None:
    first = make_runner()
    wait_for(lambda: first.is_leader, 5, "the first runner to lead")
    assert first.token is not None
    t1 = first.token
    assert int(client.get(keys.RUNNER_TOKEN) or 0) == t1

    # The first runner starts a job that holds mid-step.
    gate, started = threading.Event(), threading.Event()
    GATES[upgrade_id].append(gate)
    STARTED[upgrade_id].append(started)
    first.schedule(upgrade_id)
    assert started.wait(10), "the first runner's job did not start"

    # It stops renewing and its lease expires; a second runner acquires it.
    _pause_renewal(first)
    client.delete(keys.RUNNER_LEASE)  # the lease's TTL ran out
    second = make_runner()
    wait_for(lambda: second.is_leader, 5, "the second runner to lead")
    assert second.token == t1 + 1
    second.schedule(upgrade_id)
    wait_for(lambda: (t1 + 1, "written") in RESULTS[upgrade_id], 10, "the second runner's job")

    # The first runner's step goes on and tries to write: refused, and it stops running jobs.
    assert first.is_leader  # it has not noticed yet: no renewal since
    gate.set()
    wait_for(lambda: (t1, "refused") in RESULTS[upgrade_id], 10, "the stale write to be refused")
    assert not first.is_leader
    assert first.scheduler.state == STATE_PAUSED
    assert first._run_fenced(lambda: pytest.fail("a runner without the lease ran a job")) == []

    record = STORES[upgrade_id].get(upgrade_id)
    writes = [r["by"] for r in record.facts.retries]  # each job's writes, in record order
    assert writes == [f"{t1}:first", f"{t1 + 1}:first", f"{t1 + 1}:late"]

    # A person's click (outside any runner job) is recorded whoever holds the lease.
    STORES[upgrade_id].update(upgrade_id, lambda u: setattr(u.facts, "abort_requested", {"by": "U0BOB"}))
    assert STORES[upgrade_id].get(upgrade_id).facts.abort_requested == {"by": "U0BOB"}


def test_token_change_inside_the_compare_and_set_is_caught(client: redis.Redis, upgrade_id: str) -> None:
    store = STORES[upgrade_id]
    client.set(keys.RUNNER_TOKEN, 7)
    lost: list[int] = []

    def change(u: Upgrade) -> None:
        # Another runner acquires the lease between this writer's read and its write.
        client.incr(keys.RUNNER_TOKEN)
        u.reason = "stale"

    with fenced(Fence(7, lost.append)), pytest.raises(LeaseLost, match="token 7, Redis has 8"):
        store.update(upgrade_id, change)
    assert lost == [7]
    assert store.get(upgrade_id).reason != "stale"
    with fenced(Fence(8)):
        store.update(upgrade_id, lambda u: setattr(u, "reason", "fresh"))
    assert store.get(upgrade_id).reason == "fresh"
    with fenced(Fence(7)), pytest.raises(LeaseLost):
        store.discard(upgrade_id)
    assert store.find(upgrade_id) is not None


def test_a_job_another_runner_already_removed_does_not_kill_the_scheduler(
    client: redis.Redis, make_runner: Callable[[], Runner]
) -> None:
    """Two runners share one job store: when a one-off job was run and removed by the other, the
    removal APScheduler makes after submitting it finds nothing; that must not raise (it would
    kill the scheduler's main loop thread, and this runner would never run a job again)."""
    runner = make_runner()
    runner.scheduler.remove_job("advance:no-such-upgrade")  # no JobLookupError
    assert runner.scheduler.running


def test_a_run_now_and_a_later_timer_queued_at_once_keep_the_earlier(make_runner: Callable[[], Runner]) -> None:
    """A click's "run now" and the engine's reminder timer ("run in an hour") for the same
    upgrade at the same moment: the earlier run must survive. The timer's caller is held inside
    its read of the queued job until the click's caller is seen trying to read too (or, with the
    read-and-replace made one step, until it is clear that it cannot)."""
    runner = make_runner()
    _pause_renewal(runner)  # the lease loop would resume the scheduler
    runner.scheduler.pause()  # nothing runs the job: this is about what is queued
    real_get_job = runner.scheduler.get_job
    timer_inside, click_inside = threading.Event(), threading.Event()

    def get_job(job_id: str, jobstore: str | None = None) -> Any:
        found = real_get_job(job_id, jobstore)  # what this caller read...
        if threading.current_thread().name == "timer":
            timer_inside.set()
            click_inside.wait(0.5)  # ...while the click gets in here, unless the two are one step
        else:
            click_inside.set()
        return found

    runner.scheduler.get_job = get_job
    timer = threading.Thread(target=runner.schedule, args=("u-race", 3600.0), name="timer")
    timer.start()
    assert timer_inside.wait(5)
    click = threading.Thread(target=runner.schedule, args=("u-race", 0.0), name="click")
    click.start()
    timer.join(10)
    click.join(10)
    job = real_get_job("advance:u-race")
    assert job is not None and job.next_run_time is not None
    assert (job.next_run_time - datetime.now(UTC)).total_seconds() < 60  # "now" kept, not the hour
