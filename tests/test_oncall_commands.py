"""The on-call commands against the running bot, through signed Slack requests (Helm path).

- ``start`` answers with the upgrade ID, and the root message shows it;
- ``status`` (this channel's upgrades, active first) and ``status ID`` name the ID, state, current
  step, who started it and who decided each checkpoint, with the thread's permalink;
- ``list`` shows the active upgrades and the ended ones;
- ``cancel ID`` at a checkpoint is Abort: the root says aborted, the thread names who cancelled,
  no button is left live; during a destructive step it waits for that step to end, then stops
  before the next (nothing half done, the reinstall never runs);
- ``cancel`` by a non-operator, a malformed ID and an unknown ID are refused and change nothing;
- BOT_CHANNELS: a command from another channel is refused with the allowed channels, nothing starts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from bot.cluster.helm import find_release
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import CHANNEL, STRANGER, World
from tests.conftest import person
from tests.scenario import Person, has_button

ID = re.compile(r"\b[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\b")
PVCS = "app=pulsar,release=my-release"


def _start(alice: Person) -> str:
    resp = alice.type("start my-release")
    found = ID.search(resp.text)
    assert found, resp.text  # the synchronous answer names the upgrade
    return found.group(0)


def _no_live_buttons(alice: Person) -> bool:
    """No checkpoint of the upgrade itself still offers Approve (the restore offer may)."""
    return not any(has_button(m, "upgrade_approve") for m in alice.thread() if not m.text.startswith("Restore"))


def test_status_and_list_name_the_upgrade_its_state_and_who_decided(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    upgrade_id = _start(alice)
    alice.checkpoint("flush_done")
    assert upgrade_id in alice.root().text or any(upgrade_id in str(b) for b in alice.root().blocks)

    alice.type("status")
    answer = alice.wait_ephemeral(f"*Upgrade `{upgrade_id}`*")
    assert "State: *waiting for approval*" in answer
    assert "Started by <@U0ALICE>" in answer
    assert f"/archives/{CHANNEL}/p" in answer and "|thread>" in answer  # chat.getPermalink of the root
    assert "Checkpoint: flush done" in answer and "waiting since" in answer

    alice.approve("flush_done")
    alice.checkpoint("pvc_list")
    alice.type(f"status {upgrade_id}")
    answer = alice.wait_ephemeral("approved by <@U0ALICE>")
    assert upgrade_id in answer
    assert "Current step: Delete the Pulsar V2 volumes" in answer

    alice.type("list")
    listing = alice.wait_ephemeral("*Active upgrades* (1)")
    assert f"`{upgrade_id}` `my-release`/`default`: waiting for approval" in listing

    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    alice.type("list")
    listing = alice.wait_ephemeral("*Active upgrades* (0)")
    assert f"`{upgrade_id}` `my-release`/`default`: succeeded" in listing


def test_cancel_at_a_checkpoint_is_abort_and_names_who_cancelled(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    upgrade_id = _start(alice)
    alice.approve("flush_done")
    alice.checkpoint("pvc_list")
    pvcs_before = world.pvcs("default", PVCS)
    alice.type(f"cancel {upgrade_id}")
    alice.wait_ephemeral(f"Cancelling upgrade `{upgrade_id}`")
    assert alice.outcome() == "aborted"
    alice.wait(lambda: any("cancelled by <@U0ALICE>" in m.text for m in alice.thread()), 15, "the cancel note")
    alice.wait(lambda: _no_live_buttons(alice), 15, "the cancelled checkpoint to lose its buttons")
    restore = alice.checkpoint("restore")  # the same way back as Abort
    assert has_button(restore, "upgrade_approve")
    assert world.pvcs("default", PVCS) == pvcs_before  # nothing deleted
    alice.type(f"cancel {upgrade_id}")
    assert "has already aborted" in alice.wait_ephemeral("Nothing changed")


def test_cancel_during_a_destructive_step_waits_for_the_step_to_end(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    upgrade_id = _start(alice)
    alice.approve("flush_done")
    alice.checkpoint("pvc_list")
    # Hold one approved PVC in Terminating (a finalizer the test removes): the delete step is under way.
    held = world.pvcs("default", PVCS)[0].split("/", 1)[1]
    world.store.patch(
        "persistentvolumeclaims",
        "default",
        held,
        {"metadata": {"finalizers": ["kubernetes.io/pvc-protection", "example.com/hold"]}},
        "merge",
    )
    alice.approve("pvc_list")
    alice.wait(
        lambda: bool(world.store.get("persistentvolumeclaims", "default", held)["metadata"].get("deletionTimestamp")),
        30,
        "the held PVC to be deleting",
    )
    alice.type(f"cancel {upgrade_id}")
    alice.wait_ephemeral(f"Cancelling upgrade `{upgrade_id}`")
    alice.type(f"status {upgrade_id}")
    assert "State: *running*" in alice.wait_ephemeral("Current step: Delete the Pulsar V2 volumes")
    world.store.patch(
        "persistentvolumeclaims",
        "default",
        held,
        {"metadata": {"finalizers": None}},
        "merge",
    )
    assert alice.outcome() == "aborted"
    assert world.pvcs("default", PVCS) == []  # the step ran to its end: every approved PVC went
    secrets = world.store.list("secrets", "default", label_selector="owner=helm,name=my-release")
    release = find_release(secrets, "my-release")
    assert release is None or release.status == "uninstalled"  # the reinstall never ran
    steps = alice.root().text + "".join(str(b) for b in alice.root().blocks)
    assert "Delete the Pulsar V2 volumes: _done_" in steps
    assert "Reinstall with Pulsar V3: _pending_" in steps


def test_cancel_and_bad_ids_are_refused_and_change_nothing(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    upgrade_id = _start(alice)
    alice.checkpoint("flush_done")
    mallory = alice.as_user(STRANGER)
    mallory.type(f"cancel {upgrade_id}")
    assert "Nothing was changed" in mallory.wait_ephemeral("Not allowed")
    alice.type("cancel not-an-id")
    alice.wait_ephemeral("`not-an-id` is not an upgrade ID")
    alice.type("cancel 20200101-000000-abcdef")
    alice.wait_ephemeral("I have no upgrade `20200101-000000-abcdef`")
    alice.type("cancel")
    alice.wait_ephemeral("Which upgrade?")
    cp = alice.checkpoint("flush_done")
    assert has_button(cp, "upgrade_approve")  # still open: nothing was cancelled
    alice.type(f"status {upgrade_id}")
    assert "waiting for approval" in alice.wait_ephemeral(f"*Upgrade `{upgrade_id}`*")


def test_commands_from_another_channel_are_refused(world: World, make_bot: Callable[..., BotProcess]) -> None:
    bot = make_bot(world, BOT_CHANNELS="C0ELSEWHERE")
    alice = person(world, bot)
    resp = alice.type("start my-release")
    assert "taken only in <#C0ELSEWHERE>" in resp.text
    resp = alice.type("help")
    assert "Commands are taken in <#C0ELSEWHERE>" in resp.text
    assert world.slack.messages(CHANNEL) == []  # no upgrade started
    release = find_release(
        world.store.list("secrets", "default", label_selector="owner=helm,name=my-release"), "my-release"
    )
    assert release is not None and release.status == "deployed"


def test_operator_path_cancel_at_a_checkpoint_leaves_the_resource_untouched(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator")
    bot = make_bot(world)
    alice = person(world, bot)
    resp = alice.type("start my-milvus")
    upgrade_id = ID.search(resp.text).group(0)  # type: ignore[union-attr]
    alice.checkpoint("flush_done")
    before = world.store.get("milvuses.milvus.io", "default", "my-milvus")
    alice.type(f"cancel {upgrade_id}")
    assert alice.outcome(timeout=60) == "aborted"
    assert "The Milvus resource was not touched" in alice.root().text + "".join(str(b) for b in alice.root().blocks)
    after = world.store.get("milvuses.milvus.io", "default", "my-milvus")
    assert after["metadata"]["uid"] == before["metadata"]["uid"] and after["spec"] == before["spec"]
    alice.type(f"status {upgrade_id}")
    assert "State: *aborted*" in alice.wait_ephemeral(f"*Upgrade `{upgrade_id}`*")
