"""The engine's own failures are bounded, and an interrupted restore is resumed.

Behaviours covered:
- an unexpected exception in the engine (outside any step) re-runs the upgrade with backoff
  (5, 10, 20, 40, 80 s); the count resets once an advance succeeds; after 6 failures in a row the
  upgrade stops with an error message and Retry in the thread, and Retry is accepted (in-process
  Engine against a real Redis and the Slack simulator; the runner is replaced by a recorder);
- "Restore previous release" is a recorded step: a bot killed while the restore's helm install is
  in flight resumes it after a restart, and the root ends "aborted … restored", release deployed.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from bot.notify import Notifier
from bot.procedure import engine as engine_module
from bot.procedure.engine import Engine
from bot.settings import load
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.slack.server import SlackSim
from sandbox.world import CHANNEL, OPERATOR, World
from state import decisions
from state.model import ACTIVE, APPROVED, Checkpoint, Upgrade
from state.store import UpgradeStore
from tests.scenario import Person, has_button


class _Runner:
    def __init__(self) -> None:
        self.delays: list[float] = []

    def schedule(self, upgrade_id: str, delay: float = 0.0) -> None:
        self.delays.append(delay)


class _Kube:
    host = "https://127.0.0.1:1"

    def http_client(self, timeout: float = 30.0) -> Any:
        return None


@pytest.fixture
def sim() -> Iterator[SlackSim]:
    with SlackSim(bot_token="xoxb-test") as s:
        s.add_channel(CHANNEL, "upgrades")
        s.add_user(OPERATOR, "alice")
        yield s


def _engine(redis_url: str, sim: SlackSim) -> tuple[Engine, _Runner]:
    env = {
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "s" * 32,
        "SLACK_API_URL": sim.api_url,
        "REDIS_URL": redis_url,
        "BOT_OPERATORS": OPERATOR,
    }
    settings = load(env)
    store = UpgradeStore.from_url(redis_url)
    eng = Engine(settings, store, Notifier(settings.slack_bot_token, settings.slack_api_url), _Kube(), None)  # type: ignore[arg-type]
    runner = _Runner()
    eng.runner = runner  # type: ignore[assignment]
    return eng, runner


def _waiting_upgrade(store: UpgradeStore) -> Upgrade:
    u = Upgrade(id=Upgrade.new_id(), release="my-release", namespace="default", channel=CHANNEL, started_by=OPERATOR)
    u.state, u.step, u.root_wanted = ACTIVE, "flush", True
    target = {"release": "my-release", "namespace": "default", "flush": {}}
    u.checkpoints.append(Checkpoint(id="flush_done-1", kind="flush_done", step="flush", created_at=0.0, target=target))
    assert store.create(u) is None
    return u


def test_engine_failures_back_off_then_stop_with_retry(
    redis_url: str, sim: SlackSim, monkeypatch: pytest.MonkeyPatch
) -> None:
    eng, runner = _engine(redis_url, sim)
    u = _waiting_upgrade(eng.store)
    failing = [True]
    original = Engine._sync_decisions

    def sync(self: Engine, upgrade: Upgrade) -> Upgrade:
        if failing[0]:
            raise RuntimeError("the engine itself is broken")
        return original(self, upgrade)

    monkeypatch.setattr(Engine, "_sync_decisions", sync)
    for _ in range(3):
        eng.advance(u.id)
    assert runner.delays == [5, 10, 20]
    failing[0] = False
    eng.advance(u.id)  # succeeds: the count starts again
    failing[0] = True
    runner.delays.clear()
    for _ in range(engine_module.MAX_ENGINE_ATTEMPTS):
        eng.advance(u.id)
    assert runner.delays == [5, 10, 20, 40, 80]
    record = eng.store.get(u.id)
    assert record.state == "blocked" and record.steps["flush"].status == "error"
    assert "failed 6 times in a row" in (record.steps["flush"].error or "")
    replies = sim.thread(CHANNEL, record.root_ts or "")[1:]
    errors = [m for m in replies if has_button(m, "upgrade_retry")]
    assert len(errors) == 1 and "failed 6 times in a row" in errors[0].text
    assert decisions.request_retry(record, "flush", OPERATOR) is None


def test_bot_killed_during_restore_resumes_it(world: World, slack: SlackClient, bot: BotProcess) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.click(alice.checkpoint("pvc_list"), "upgrade_abort")
    assert alice.outcome() == "aborted"
    restore = alice.checkpoint("restore")
    secrets = r"^/api/v1/namespaces/default/secrets$"
    world.kube.inject_fault("POST", secrets, hang_seconds=8)  # helm's release record: the install is in flight
    world.kube.clear_requests()
    alice.click(restore, "upgrade_approve")
    alice.wait(
        lambda: any(r.method == "POST" and re.search(secrets, r.path) for r in list(world.kube.requests)),
        30,
        "the restore's helm install",
    )
    bot.kill()
    world.kube.clear_faults()
    bot.start()
    alice.wait(lambda: "restored" in alice.root().text, 60, "the root to say restored")
    assert "aborted" in alice.root().text and "succeeded" not in alice.root().text
    status = world.helm("status", "my-release", "-n", "default", "-o", "json")
    assert '"status":"deployed"' in status.replace(" ", "")


def test_a_click_racing_the_checkpoint_timer_still_runs_the_upgrade_now(redis_url: str, sim: SlackSim) -> None:
    """The Slack edge records an approval and queues a run for now at the moment the engine queues
    the checkpoint's reminder timer (the same job: the later write wins). The engine looks at the
    record again after queuing the timer, so the approval still runs now, not at the reminder."""
    eng, runner = _engine(redis_url, sim)
    u = _waiting_upgrade(eng.store)
    eng.store.update(u.id, lambda x: setattr(x.checkpoint("flush_done-1"), "created_at", time.time()))
    waiting = eng.store.get(u.id)

    def timer_then_click(upgrade_id: str, delay: float = 0.0) -> None:
        runner.delays.append(delay)
        if delay > 0:  # the click lands here: its "now" was written just before this timer
            eng.store.update(upgrade_id, lambda x: setattr(x.checkpoint("flush_done-1"), "decision", APPROVED))

    runner.schedule = timer_then_click  # type: ignore[method-assign]
    eng._checkpoint_timers(waiting)
    assert runner.delays[0] > 60 and runner.delays[1:] == [0.0]
