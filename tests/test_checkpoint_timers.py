"""Checkpoints over time, against the running bot through signed Slack requests.

- While a checkpoint waits, the thread reminds the person who started the upgrade every
  BOT_REMINDER_SECONDS and says who may approve; each reminder is posted once.
- After BOT_APPROVAL_TTL_SECONDS it expires: its message loses Approve and gets "Ask again"
  (``upgrade_reask``), the upgrade pauses (the root says paused) and nothing is approved by
  itself, across a restart of the bot too. A click on the expired Approve (a stale screen)
  answers "expired" and changes nothing; "Ask again" by a non-operator is refused.
- "Ask again" posts a fresh checkpoint built from the world as it is then (the flush runs again),
  and the upgrade then ends succeeded. Same on the operator path, whose audit trail then names the
  resource's merge-patch, delete and create and the expiry.
- A click on a checkpoint someone else already decided answers who decided it and when.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from bot.cluster.helm import find_release
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import CHANNEL, GROUP_OPERATOR, STRANGER, World
from tests.conftest import person
from tests.scenario import Person, has_button
from tests.test_audit import ID, audit_file

TIMERS = {"BOT_APPROVAL_TTL_SECONDS": "8", "BOT_REMINDER_SECONDS": "3"}


def _flush_runs(world: World) -> int:
    return sum(1 for r in world.kube.requests if r.method == "POST" and r.path.endswith("/api/v1/persist"))


def _reminders(alice: Person) -> list[str]:
    return [m.text for m in alice.thread() if m.text.startswith("⏰")]


def _expire_then_ask_again(world: World, bot: BotProcess, alice: Person, release_deployed: Callable[[], bool]) -> None:
    cp = alice.checkpoint("flush_done")
    stale = alice.client.click_payload(alice.user, CHANNEL, cp.ts, "upgrade_approve")  # a screen left open
    alice.wait(lambda: bool(_reminders(alice)), 15, "a reminder")
    reminder = _reminders(alice)[0]
    assert reminder.startswith("⏰ <@U0ALICE>:") and "may be approved by" in reminder and "<@U0ALICE>" in reminder
    alice.wait(lambda: "paused" in alice.root().text, 20, "the checkpoint to expire")  # the contract's word
    expired = world.slack.message(CHANNEL, cp.ts)
    assert not has_button(expired, "upgrade_approve") and has_button(expired, "upgrade_reask")
    assert "Expired at" in "".join(str(b) for b in expired.blocks)
    reminders = _reminders(alice)
    assert len(reminders) == len(set(reminders)) <= 2  # at 3 s and 6 s, each once, none after the expiry

    bot.kill()  # nothing approves itself across a restart either
    bot.start()
    alice.client._send_form({"payload": json.dumps(stale)})
    assert "without a decision" in alice.wait_ephemeral("expired at")
    mallory = alice.as_user(STRANGER)
    mallory.click(world.slack.message(CHANNEL, cp.ts), "upgrade_reask")
    mallory.wait_ephemeral("Nothing changed")
    assert "paused" in alice.root().text and release_deployed()
    assert sum(1 for m in alice.thread() if m.text.startswith("⌛")) == 1  # one expiry note, restart or not

    flushes = _flush_runs(world)
    alice.click(world.slack.message(CHANNEL, cp.ts), "upgrade_reask")
    fresh = alice.checkpoint("flush_done", nth=2)
    assert has_button(fresh, "upgrade_approve")
    assert _flush_runs(world) > flushes  # built from the world as it is now: flushed again
    assert "paused" not in alice.root().text
    old = world.slack.message(CHANNEL, cp.ts)
    assert not has_button(old, "upgrade_reask") and "Asked again by <@U0ALICE>" in "".join(str(b) for b in old.blocks)


def test_a_waiting_checkpoint_reminds_expires_pauses_and_can_be_asked_again(
    world: World, make_bot: Callable[..., BotProcess]
) -> None:
    bot = make_bot(world, **TIMERS)
    alice = person(world, bot)
    alice.type("start my-release")

    def deployed() -> bool:
        secrets = world.store.list("secrets", "default", label_selector="owner=helm,name=my-release")
        release = find_release(secrets, "my-release")
        return release is not None and release.status == "deployed"

    _expire_then_ask_again(world, bot, alice, deployed)
    alice.approve("flush_done", nth=2)
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"


def test_operator_path_checkpoint_expires_and_is_asked_again(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator")
    bot = make_bot(world, **TIMERS)
    alice = person(world, bot)
    alice.type("start my-milvus")
    _expire_then_ask_again(
        world, bot, alice, lambda: world.store.try_get("milvuses.milvus.io", "default", "my-milvus") is not None
    )
    alice.approve("flush_done", nth=2)
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome(timeout=120) == "succeeded"
    # The operator path's trail: the resource patched, deleted and created, each on its own line.
    upgrade_id = next(m for m in ID.finditer("".join(str(b) for b in alice.root().blocks))).group(0)
    events = audit_file(world, alice, upgrade_id)
    k8s = [(e["verb"], e["object"]) for e in events if e["event"] == "kubernetes"]
    for verb in ("merge-patch", "delete", "create"):
        assert (verb, "milvus default/my-milvus") in k8s, (verb, k8s)
    assert [e["event"] for e in events if e["event"] == "checkpoint_expired"] == ["checkpoint_expired"]


def test_a_click_on_a_checkpoint_already_decided_says_by_whom_and_when(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    bob = alice.as_user(GROUP_OPERATOR)
    bobs_screen = bob.client.click_payload(bob.user, CHANNEL, cp.ts, "upgrade_approve")
    alice.click(cp, "upgrade_approve")
    alice.checkpoint("pvc_list")
    bob.client._send_form({"payload": json.dumps(bobs_screen)})
    answer = bob.wait_ephemeral("already decided")
    assert "by <@U0ALICE> at" in answer and "UTC (approved)" in answer
    assert sum(1 for m in alice.thread() if "Checkpoint: flush done" in m.text) == 1  # nothing re-asked
