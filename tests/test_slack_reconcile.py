"""Slack output is reconciled from the record, and checkpoints never cut what they destroy.

Behaviours covered:
- a checkpoint whose chat.postMessage gets 5xx (beyond the notifier's retries) still appears,
  exactly once, and can be approved; so does the values file whose upload fails;
- a checkpoint rate-limited (429 + Retry-After) beyond the notifier's retries appears once;
  a decided checkpoint whose chat.update fails still loses its buttons;
- a bot killed after recording a checkpoint but before Slack took it posts it on restart;
- an ended upgrade whose end note Slack did not take, and whose queued run died with the
  process, gets that note on restart (the new runner looks at recently ended upgrades too);
- views: 40 long-named PVCs are all in the checkpoint's section blocks (within Slack's limits),
  the confirm dialog gives counts, and a list beyond one message says how many more are in the
  attached file (which the engine records before the checkpoint);
- a scenario with 40 extra long-named Pulsar PVCs names every one in the checkpoint message;
- the notifier retries 5xx, short rate limits (Retry-After) and timeouts itself, and raises at
  once on a long Retry-After (``RetryLater``) or after its bounded retries.
"""

from __future__ import annotations

from typing import Any

import pytest
import redis
from slack_sdk.errors import SlackApiError

from bot import notify, views
from bot.notify import Notifier, RetryLater
from bot.procedure import checkpoints
from bot.procedure.checkpoints import checkpoint_body
from bot.procedure.thread import Thread
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.slack.blocks import validate_blocks
from sandbox.slack.model import Message
from sandbox.slack.server import SlackSim
from sandbox.world import CHANNEL, World
from state import keys
from state.model import Checkpoint, Post, Upgrade
from state.store import UpgradeStore
from tests.scenario import Person, has_button

PVC_LIST_TITLE = "Checkpoint: delete these Pulsar V2 volumes"
FLUSH_TITLE = "Checkpoint: flush done"


def _posted(world: World, title: str) -> int:
    """How many messages with ``title`` Slack took (faulted calls excluded). A note may share its
    message with notes that waited before it (the channel's pace), so it starts a paragraph."""
    calls = world.slack.calls_of("chat.postMessage")
    return sum(1 for c in calls if c.error is None and f"\n{c.args.get('text', '')}".count(f"\n{title}") == 1)


def _shown_text(msg: Message) -> str:
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in msg.blocks if b.get("type") == "section")


def test_checkpoint_and_file_survive_slack_5xx(world: World, slack: SlackClient) -> None:
    world.slack.fail_http("chat.postMessage", 500, count=6, match=PVC_LIST_TITLE)
    world.slack.fail_http("files.completeUploadExternal", 503, count=6)
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert world.slack.pending_faults("chat.postMessage") == 0
    assert world.slack.pending_faults("files.completeUploadExternal") == 0
    assert _posted(world, PVC_LIST_TITLE) == 1
    root = alice.root()
    shared = [f for f in world.slack.files() if f.shared and f.thread_ts == root.ts]
    assert len(shared) == 1, shared


def test_rate_limited_checkpoint_and_failed_update_of_a_decided_one(world: World, slack: SlackClient) -> None:
    world.slack.rate_limit("chat.postMessage", count=4, retry_after=1, match=FLUSH_TITLE)
    world.slack.fail_http("chat.update", 500, count=6, match="✅ Approved")
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert world.slack.pending_faults("chat.postMessage") == 0
    assert world.slack.pending_faults("chat.update") == 0
    assert _posted(world, FLUSH_TITLE) == 1
    alice.wait(
        lambda: not has_button(world.slack.message(CHANNEL, cp.ts), "upgrade_approve"), 15, "the decided checkpoint"
    )
    assert "Approved by" in world.slack.message(CHANNEL, cp.ts).text


def test_bot_killed_before_a_recorded_checkpoint_was_posted(world: World, slack: SlackClient, bot: BotProcess) -> None:
    world.slack.fail_http("chat.postMessage", 500, count=1000, match=FLUSH_TITLE)
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.wait(
        lambda: any(FLUSH_TITLE in str(c.args.get("text")) for c in world.slack.calls_of("chat.postMessage")),
        30,
        "the bot to try posting the checkpoint",
    )
    bot.kill()
    world.slack.clear_faults()
    bot.start()
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert _posted(world, FLUSH_TITLE) == 1


# ---------------------------------------------------------------------- what a checkpoint shows


def _pvc_checkpoint(n: int, name_len: int = 200, retain: bool = True) -> tuple[Upgrade, Checkpoint]:
    pvcs = [
        {"name": f"pvc-{i:03d}-" + "x" * (name_len - 8), "size": "8Gi", "storage_class": "standard"} for i in range(n)
    ]
    pvs = [{"name": f"pv-{i:03d}-" + "y" * 40, "reclaim": "Retain" if retain else "Delete"} for i in range(n)]
    target: dict[str, Any] = {"release": "my-release", "namespace": "default", "pvcs": pvcs, "pvs": pvs, "note": ""}
    upgrade = Upgrade(id="u1", release="my-release", namespace="default", channel=CHANNEL, started_by="U0ALICE")
    cp = Checkpoint(id="pvc_list-1", kind="pvc_list", step="delete_pvcs", created_at=0.0, target=target)
    upgrade.checkpoints.append(cp)
    return upgrade, cp


def _all_text(blocks: list[dict[str, Any]]) -> str:
    return "\n".join(str(b.get("text", {}).get("text", "")) for b in blocks if b.get("type") == "section")


def test_forty_long_pvc_names_are_all_in_the_checkpoint() -> None:
    upgrade, cp = _pvc_checkpoint(40)
    body = checkpoint_body(cp)
    assert len(body) > 3000
    _, blocks = checkpoints.message(upgrade, cp, body)
    assert validate_blocks(blocks) == []
    shown = _all_text(blocks)
    for p in cp.target["pvcs"] + cp.target["pvs"]:
        assert p["name"] in shown
    assert "reclaim policy Retain" in shown
    confirm = blocks[-1]["elements"][0]["confirm"]["text"]["text"]
    assert len(confirm) <= 300
    assert "40 PVCs and 40 PVs" in confirm and "40 with reclaim policy Retain" in confirm
    assert "pvc-000" not in confirm
    _, decided_blocks = checkpoints.decided_message(upgrade, cp, body)
    assert validate_blocks(decided_blocks) == []
    assert all(p["name"] in _all_text(decided_blocks) for p in cp.target["pvcs"])
    assert views.body_fits(body)


def test_a_list_beyond_one_message_points_to_the_attached_file() -> None:
    upgrade, cp = _pvc_checkpoint(600, name_len=250)
    body = checkpoint_body(cp)
    assert not views.body_fits(body)
    _, blocks = checkpoints.message(upgrade, cp, body)
    assert validate_blocks(blocks) == []
    assert len(blocks) == views.MAX_MESSAGE_BLOCKS
    shown = _all_text(blocks)
    assert "pvc-000-" in shown and "more lines in the attached list" in shown
    checkpoints.want(upgrade, cp)
    kinds = [(p.kind, p.key) for p in upgrade.thread]
    assert kinds == [("file", "file:pvc_list-1"), ("checkpoint", "cp:pvc_list-1")]
    listed = upgrade.thread[0].data["content"]
    assert all(p["name"] in listed for p in cp.target["pvcs"] + cp.target["pvs"])


def test_many_long_named_pvcs_are_all_shown(world: World, slack: SlackClient) -> None:
    labels = world.store.list("persistentvolumeclaims", "default", label_selector="app=pulsar,release=my-release")[0][
        "metadata"
    ]["labels"]
    names = [f"my-release-pulsar-extra-{i:02d}-" + "z" * 200 for i in range(40)]
    for name in names:
        world.store.create(
            "persistentvolumeclaims",
            {
                "metadata": {"name": name, "labels": dict(labels)},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
            },
            namespace="default",
        )
    world.settle()
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    msg = alice.checkpoint("pvc_list")
    files = "\n".join((f.content or b"").decode() for f in world.slack.files())
    shown = _shown_text(msg) + files
    for name in (p.split("/", 1)[1] for p in world.pvcs("default", "app=pulsar,release=my-release")):
        assert name in shown, name
    assert all(n in shown for n in names)
    alice.click(msg, "upgrade_approve")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert world.pvcs("default", "app=pulsar,release=my-release") == []


# ---------------------------------------------------------------------- the notifier's own retries


def _notifier(sim: SlackSim) -> Notifier:
    sim.add_channel(CHANNEL, "upgrades")
    return Notifier(sim.bot_token, sim.api_url)


def test_notifier_retries_5xx_and_short_rate_limits() -> None:
    with SlackSim() as sim:
        notifier = _notifier(sim)
        sim.fail_http("chat.postMessage", 500, count=2)
        sim.rate_limit("chat.postMessage", count=1, retry_after=0)
        assert notifier.post(CHANNEL, "hello", [])
        assert [c.status for c in sim.calls_of("chat.postMessage")] == [500, 500, 429, 200]


def test_notifier_leaves_long_rate_limits_and_outages_to_the_reconciler() -> None:
    with SlackSim() as sim:
        notifier = _notifier(sim)
        sim.rate_limit("chat.postMessage", count=1, retry_after=60)
        with pytest.raises(RetryLater) as err:
            notifier.post(CHANNEL, "hello", [])
        assert err.value.seconds == 60
        sim.fail_http("chat.postMessage", 503, count=10)
        with pytest.raises(SlackApiError):
            notifier.post(CHANNEL, "hello", [])
        assert sim.pending_faults("chat.postMessage") == 6  # one try and three retries
        assert sim.messages(CHANNEL) == []


def test_notifier_retries_a_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(notify, "TIMEOUT", 1)
    with SlackSim() as sim:
        notifier = _notifier(sim)
        sim.hang("chat.postMessage", 2.5, count=1)
        assert notifier.post(CHANNEL, "hello", [])
        assert len(sim.messages(CHANNEL)) == 1


def test_an_ended_upgrade_whose_last_message_and_job_were_lost_catches_up_on_restart(
    world: World, slack: SlackClient, bot: BotProcess, redis_url: str
) -> None:
    """The end note could not be posted, then the process died while running the upgrade's last
    queued job (APScheduler removes a one-off job from its store as it starts it): the new runner
    still finds the ended upgrade's missing output and posts it, once."""
    world.slack.fail_http("chat.postMessage", 500, count=1000, match="🎉")
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    alice.wait(
        lambda: any("🎉" in str(c.args.get("text")) for c in world.slack.calls_of("chat.postMessage")),
        30,
        "the bot to try posting the end note",
    )
    bot.kill()
    client = redis.Redis.from_url(redis_url)
    client.delete(keys.JOBS, keys.RUN_TIMES)  # the upgrade's queued run is gone with the process
    world.slack.clear_faults()
    bot.start()
    alice.wait(lambda: _posted(world, "🎉") == 1, 30, "the end note after the restart")
    assert [m.text for m in alice.thread()].count(next(m.text for m in alice.thread() if "🎉" in m.text)) == 1


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_channel_pace_allows_ten_messages_in_any_ten_seconds_per_channel() -> None:
    clock = _Clock()
    pace = notify.ChannelPace(posts=10, window=10.0, clock=clock)
    for i in range(10):
        clock.now = 100.0 + i * 0.1
        pace.take("C1")
    with pytest.raises(RetryLater) as err:
        pace.take("C1")
    assert err.value.paced and err.value.seconds == pytest.approx(100.0 + 10 - clock.now)
    pace.take("C2")  # another channel has its own pace
    clock.now = 110.0  # the first message is 10 s old: one more may go, not two
    pace.take("C1")
    with pytest.raises(RetryLater):
        pace.take("C1")


def _record(store: UpgradeStore, notes: list[str]) -> Upgrade:
    upgrade = Upgrade(id=Upgrade.new_id(), release="r", namespace="ns", channel=CHANNEL, started_by="U1")
    upgrade.root_wanted = True
    upgrade.thread = [Post(key=f"n{i}", kind="note", text=text) for i, text in enumerate(notes)]
    assert store.create(upgrade) is None
    return upgrade


def test_messages_beyond_the_channel_pace_wait_for_it(redis_url: str) -> None:
    """Fifteen long notes at once in one channel (too long to go together): ten messages go, the
    rest wait unsent, and the engine is told to come back when the pace allows, not Slack's 3 s."""
    clock = _Clock()
    with SlackSim() as sim:
        sim.add_channel(CHANNEL, "upgrades")
        notifier = Notifier(sim.bot_token, sim.api_url, pace=notify.ChannelPace(clock=clock))
        store = UpgradeStore.from_url(redis_url)
        upgrade = _record(store, [f"{i} " + "x" * 2000 for i in range(15)])
        thread = Thread(store, notifier, lambda u: ["detect"])

        _, complete = thread.reconcile(upgrade)
        assert not complete and not thread.failed
        assert thread.retry_in() == pytest.approx(10.0)  # when the oldest of the ten leaves the window
        assert len(sim.calls_of("chat.postMessage")) == 10  # the root and nine notes

        clock.now += thread.retry_in()
        latest, complete = thread.reconcile(upgrade)
        assert complete
        texts = [str(c.args.get("text")) for c in sim.calls_of("chat.postMessage")]
        assert [t.split()[0] for t in texts[1:]] == [str(i) for i in range(15)]  # every note, in order
        assert all(p.ts is not None for p in latest.thread)


def test_notes_waiting_in_a_row_go_as_one_message(redis_url: str) -> None:
    with SlackSim() as sim:
        notifier = _notifier(sim)
        store = UpgradeStore.from_url(redis_url)
        sim.fail_http("chat.postMessage", 500, count=4, match="note")  # Slack takes the root, not the notes
        upgrade = _record(store, [f"note {i}" for i in range(4)])
        thread = Thread(store, notifier, lambda u: ["detect"])
        _, complete = thread.reconcile(upgrade)
        assert not complete and thread.failed and thread.retry_in() >= 3.0
        latest, complete = thread.reconcile(upgrade)
        assert complete
        notes = [c for c in sim.calls_of("chat.postMessage") if c.status == 200 and "note" in str(c.args["text"])]
        assert [c.args["text"] for c in notes] == ["note 0\n\nnote 1\n\nnote 2\n\nnote 3"]
        assert len({p.ts for p in latest.thread}) == 1


def test_a_pace_of_zero_paces_nothing() -> None:
    pace = notify.ChannelPace(posts=0)
    for _ in range(100):
        pace.take("C1")
