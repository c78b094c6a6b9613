"""``serve`` is two processes: the Slack edge and, as its child, the runner (bot/app.py).

- The edge has one child, ``bot runner``; the edge never takes the runner lease, the child does.
- SIGKILL of the edge alone (not its process group) takes the runner with it (PR_SET_PDEATHSIG):
  no orphan keeps renewing the lease, and a new bot leads once the dead lease expires.
- A click answered by the edge wakes the runner at once through the ``keys.RUNNER_WAKEUP``
  channel (the runner logs it with the upgrade id) and the upgrade goes on.
- When the runner process dies, the edge says so and exits non-zero (the pod is restarted).
- The runner runs at a lower CPU priority than the edge (niceness + RUNNER_NICENESS): acks first.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable

import httpx
import redis

from bot.runner_main import RUNNER_NICENESS
from sandbox.botproc import BotProcess
from sandbox.world import World
from state import keys
from tests.conftest import person

WOKEN = "a run queued by another process woke the runner"


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie awaiting its reaper counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as fh:
        return [part.decode() for part in fh.read().split(b"\0") if part]


def _woken(bot: BotProcess, upgrade_id: str) -> int:
    count = 0
    for line in bot.log().splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            count += record.get("message") == WOKEN and record.get("upgrade_id") == upgrade_id
    return count


def test_serve_is_an_edge_and_a_runner_child(world: World, bot: BotProcess, redis_url: str) -> None:
    children = bot.runner_pids()
    assert len(children) == 1, children
    assert "runner" in _cmdline(children[0])
    lease = redis.Redis.from_url(redis_url).get(keys.RUNNER_LEASE)
    assert lease is not None
    assert httpx.get(bot.url + "/readyz").json() == {"redis": "ok", "runner": "leader"}
    assert bot.log().count("runner process started") == 1
    assert bot.proc is not None  # acks first: the runner (and its helm) at a lower CPU priority
    assert _niceness(children[0]) == _niceness(bot.proc.pid) + RUNNER_NICENESS


def _niceness(pid: int) -> int:
    with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
        return int(fh.read().rsplit(")", 1)[1].split()[16])


def test_sigkill_of_the_edge_leaves_no_runner(
    world: World, make_bot: Callable[..., BotProcess], redis_url: str
) -> None:
    first = make_bot(world)
    (child,) = first.runner_pids()
    client = redis.Redis.from_url(redis_url)
    held = client.get(keys.RUNNER_LEASE)
    assert first.proc is not None and held is not None
    os.kill(first.proc.pid, signal.SIGKILL)  # the edge alone, not its process group
    first.proc.wait(5)
    first.proc = None
    _until(lambda: not _alive(child), 5, "the runner to die with the edge")
    second = make_bot(world)  # RUNNER_LEASE_SECONDS=3: the dead lease expires within 3 s
    _until(lambda: httpx.get(second.url + "/readyz").json().get("runner") == "leader", 15, "the new bot to lead")
    assert client.get(keys.RUNNER_LEASE) not in (None, held)


def test_a_click_wakes_the_runner_through_the_channel(world: World, bot: BotProcess, redis_url: str) -> None:
    alice = person(world, bot)
    alice.type("start my-release")
    alice.checkpoint("flush_done")
    (key,) = redis.Redis.from_url(redis_url, decode_responses=True).keys(keys.upgrade("*"))
    upgrade_id = str(key).removeprefix(keys.upgrade(""))
    before = _woken(bot, upgrade_id)
    assert before >= 1  # the start command itself was queued by the edge
    alice.approve("flush_done")
    _until(lambda: _woken(bot, upgrade_id) > before, 10, "the runner to be woken by the click")
    alice.checkpoint("pvc_list")  # and the run it was woken for went on


def test_the_runner_dying_ends_serve_with_an_error(world: World, make_bot: Callable[..., BotProcess]) -> None:
    bot = make_bot(world)
    (child,) = bot.runner_pids()
    os.kill(child, signal.SIGKILL)
    assert bot.proc is not None
    status = bot.proc.wait(15)
    bot.proc = None
    assert status != 0
    assert "the runner process exited" in bot.log()
