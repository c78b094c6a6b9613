"""The Helm path when things go wrong, or people do.

Covers: a PVC appearing after the PVC list was shown makes the bot ask again and delete
nothing; a Milvus error status fails the flush with its reason and Retry works; abort at the
PVC list, then "Restore previous release", brings the original release back; an
unauthorized click changes nothing; the second-approver rule; a preflight refusal (already on
Pulsar V3, Milvus 2.6 judged by its chart, the /api/v1 routes answering 404, a reinstall that
does not render, a pinned chart with Milvus 2.6) ends "failed" with nothing changed; pods that do not turn
Ready give the not-Ready pods with their events and a Retry that works; a Kubernetes 500 on a
PVC delete is retried by itself; the bot killed at a checkpoint or mid-wait, and Redis
restarted, resume the upgrade where it was.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable

import redis

from bot.cluster.helm import find_release
from sandbox.botproc import BotProcess
from sandbox.redis_server import RedisServer
from sandbox.slack import SlackClient
from sandbox.slack.blocks import render_blocks
from sandbox.world import PULSAR_V2, SMALL, STRANGER, World
from state.store import UpgradeStore
from tests.conftest import BOTH_HELMS, person
from tests.scenario import Person, cluster_writes, has_button


def _release(world: World, name: str = "my-release", ns: str = "default"):
    return find_release(world.store.list("secrets", ns, label_selector=f"owner=helm,name={name}"), name)


def _to_pvc_list(alice: Person) -> None:
    alice.type("start my-release")
    alice.approve("flush_done")


def test_new_pvc_after_the_list_was_shown_asks_again(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    _to_pvc_list(alice)
    first = alice.checkpoint("pvc_list")
    template = copy.deepcopy(
        world.store.list("persistentvolumeclaims", "default", label_selector="app=pulsar,release=my-release")[0]
    )
    extra = {
        "metadata": {"name": "my-release-pulsar-bookie-journal-extra", "labels": template["metadata"]["labels"]},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    world.store.create("persistentvolumeclaims", extra, namespace="default")
    world.kube.clear_requests()
    alice.click(first, "upgrade_approve")
    second = alice.checkpoint("pvc_list", nth=2)
    assert "changed since it was approved" in second.text
    assert "my-release-pulsar-bookie-journal-extra" in second.text
    assert [r for r in world.kube.requests if r.method == "DELETE"] == []
    alice.click(second, "upgrade_approve")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert world.pvcs("default", "app=pulsar,release=my-release") == []


def test_milvus_error_fails_the_flush_and_retry_works(world: World, slack: SlackClient) -> None:
    milvus = world.milvus("my-release")
    milvus.fail_next("persist", db="analytics", reason="channel checkpoint lag too large")
    alice = Person(world, slack)
    alice.type("start my-release")
    error = alice.error_message()
    assert "channel checkpoint lag too large" in error.text
    alice.wait(lambda: "Stopped with an error" in alice.root().text, 15, "the root to say stopped with an error")
    alice.click(error, "upgrade_retry")
    alice.checkpoint("flush_done")
    assert not has_button(world.slack.message(error.channel, error.ts), "upgrade_retry")
    assert "Retry requested by" in world.slack.message(error.channel, error.ts).text
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"


@BOTH_HELMS
def test_abort_at_pvc_list_then_restore(world: World, slack: SlackClient) -> None:
    original = _release(world)
    pvcs_before = world.pvcs("default", "app=pulsar,release=my-release")
    alice = Person(world, slack)
    _to_pvc_list(alice)
    alice.click(alice.checkpoint("pvc_list"), "upgrade_abort")
    assert alice.outcome() == "aborted"
    assert _release(world) is None  # uninstalled, and the volumes are still there
    assert world.pvcs("default", "app=pulsar,release=my-release") == pvcs_before
    restore = alice.checkpoint("restore")
    assert any(
        e.get("text", {}).get("text") == "Restore previous release"
        for b in restore.blocks
        if b.get("type") == "actions"
        for e in b["elements"]
    )
    alice.click(restore, "upgrade_approve")
    alice.wait(lambda: getattr(_release(world), "status", "") == "deployed", 30, "the release to come back")
    back = _release(world)
    assert back.status == "deployed"
    assert back.config == original.config
    assert back.chart_version == original.chart_version
    assert world.pvcs("default", "app=pulsar,release=my-release") == pvcs_before
    alice.wait(lambda: "restored" in alice.root().text, 15, "the root to say restored")
    assert "aborted" in alice.root().text and "succeeded" not in alice.root().text


def test_unauthorized_click_changes_nothing(world: World, slack: SlackClient, redis_url: str) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    client = redis.Redis.from_url(redis_url)
    store = UpgradeStore.from_url(redis_url)
    (upgrade_id,) = store.active_ids()
    # The engine's last write for this checkpoint is its message ts; after that it only waits.
    alice.wait(lambda: getattr(store.get(upgrade_id).checkpoint("flush_done-1"), "ts", None) == cp.ts, 15, "its ts")
    before = {k: client.get(k) for k in client.keys("mpub:upgrade:*")}
    world.kube.clear_requests()
    mallory = alice.as_user(STRANGER)
    mallory.click(cp, "upgrade_approve")
    mallory.click(cp, "upgrade_abort")
    # Both clicks answered: the refusal is the handler's last act, so both are fully processed.
    alice.wait(lambda: len([t for t in mallory.ephemerals() if "Nothing changed" in t]) == 2, 15, "two refusals")
    assert all("not in BOT_OPERATORS" in t for t in mallory.ephemerals() if "Nothing changed" in t)
    assert {k: client.get(k) for k in client.keys("mpub:upgrade:*")} == before
    assert has_button(world.slack.message(cp.channel, cp.ts), "upgrade_approve")
    assert [r for r in world.kube.requests if r.method == "DELETE"] == []
    trail = store.audit_trail(upgrade_id)
    clicks = [e for e in trail if e["event"] == "click"]
    assert [(e["user"], e["action"], e["allowed"]) for e in clicks] == [
        (STRANGER, "upgrade_approve", False),
        (STRANGER, "upgrade_abort", False),
    ]  # both refusals are in the audit trail, with the reason
    assert all("not in BOT_OPERATORS" in e["reason"] for e in clicks)
    assert not [e for e in trail if e["event"] == "checkpoint_decided"]


def test_second_approver_required(world: World, make_bot: Callable[..., BotProcess]) -> None:
    alice = person(world, make_bot(world, BOT_REQUIRE_SECOND_APPROVER="true"))
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    alice.click(cp, "upgrade_approve")
    assert "another operator must approve" in alice.wait_ephemeral("Nothing changed")
    alice.as_user("U0BOB").click(cp, "upgrade_approve")
    alice.checkpoint("pvc_list")


def test_preflight_refuses_a_release_already_on_pulsar_v3(world: World, slack: SlackClient) -> None:
    world.install("v3-release", values={"pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}})
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start v3-release")
    assert alice.outcome() == "failed"
    assert "already uses Pulsar V3" in alice.thread()[1].text
    assert [r for r in world.kube.requests if r.method in ("DELETE", "PUT", "PATCH")] == []


def test_preflight_refuses_milvus_without_the_v1_routes(world: World, slack: SlackClient) -> None:
    world.milvus("my-release").remove_v1_routes()
    alice = Person(world, slack)
    alice.type("start my-release")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "answers 404 on /api/v1" in refusal and "2.6" not in refusal


def test_preflight_refuses_milvus_2_6_by_its_chart(world: World, slack: SlackClient) -> None:
    world.install("new-milvus", values={**PULSAR_V2, **SMALL}, chart_version="5.0.19")
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start new-milvus")
    assert alice.outcome() == "failed"
    assert "it runs Milvus 2.6.15; this procedure is for Milvus 2.5.x" in alice.thread()[1].text
    assert _release(world, "new-milvus").status == "deployed"


def test_pods_not_ready_report_and_retry(world: World, make_bot: Callable[..., BotProcess]) -> None:
    alice = person(world, make_bot(world, UPGRADE_PODS_TIMEOUT_SECONDS="3"))
    _to_pvc_list(alice)
    alice.approve("pvc_list")
    world.cluster.hold_unready("default", "component=bookie", reason="Readiness probe failed: bookie not up")
    alice.approve("reinstall")
    error = alice.error_message()
    shown = "\n".join(render_blocks(error.blocks))
    assert "not every pod is Ready" in shown
    assert "my-release-pulsarv3-bookie-0" in shown
    assert "bookie not up" in shown
    world.cluster.release_unready("default", "component=bookie")
    alice.click(error, "upgrade_retry")
    assert alice.outcome() == "succeeded"


def test_kubernetes_500_on_pvc_delete_is_retried(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    _to_pvc_list(alice)
    world.kube.inject_fault("DELETE", r"/persistentvolumeclaims/", status=500, count=1)
    alice.approve("pvc_list")
    alice.approve(
        "reinstall",
    )
    assert alice.outcome() == "succeeded"
    assert world.pvcs("default", "app=pulsar,release=my-release") == []


@BOTH_HELMS
def test_bot_killed_at_a_checkpoint_and_mid_wait_resumes(world: World, slack: SlackClient, bot: BotProcess) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    bot.kill()
    bot.start()
    alice.click(cp, "upgrade_approve")
    alice.approve("pvc_list")
    world.cluster.hold_unready("default", "app.kubernetes.io/name=milvus")
    alice.approve("reinstall")
    alice.wait(lambda: "Wait for every pod" in alice.root().text, 30, "the wait step")
    bot.kill()
    world.cluster.release_unready("default", "app.kubernetes.io/name=milvus")
    bot.start()
    assert alice.outcome() == "succeeded"
    assert "All " in alice.thread()[-2].text or any("pods are Ready" in m.text for m in alice.thread())


@BOTH_HELMS
def test_redis_restart_at_a_checkpoint(
    world: World, slack: SlackClient, bot: BotProcess, redis_server: RedisServer
) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    redis_server.restart()
    alice.click(cp, "upgrade_approve")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    assert os.path.exists(bot.log_path)


def test_two_replicas_share_one_runner(world: World, make_bot: Callable[..., BotProcess]) -> None:
    """Invariant 6: any replica takes Slack requests, one runs the steps; the follower's jobs run;
    when the active runner is killed, the other takes over within the lease and finishes."""
    lease = 3.0
    bots = [make_bot(world, RUNNER_LEASE_SECONDS=str(lease)) for _ in range(2)]
    first, second = person(world, bots[0]), person(world, bots[1])
    second.type("start my-release")
    first.approve("flush_done")
    second.approve("pvc_list")
    cp = first.checkpoint("reinstall")
    leaders = [b.log().count("this process is now the active runner") for b in bots]
    assert sorted(leaders) == [0, 1]
    leader, follower = (bots[0], bots[1]) if leaders[0] else (bots[1], bots[0])
    leader.kill()  # no lease release: the follower must wait for it to expire
    follower_person = person(world, follower)
    # The dead leader's lease runs out within `lease`; the follower looks every lease/3.
    follower_person.wait(
        lambda: "this process is now the active runner" in follower.log(), lease + lease / 3 + 2, "the takeover"
    )
    follower_person.click(cp, "upgrade_approve")
    assert follower_person.outcome() == "succeeded"


def test_flush_timeout_names_what_is_unflushed(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    w = make_world(flush_polls=10_000)
    alice = person(w, make_bot(w, UPGRADE_FLUSH_TIMEOUT_SECONDS="1"))
    w.kube.clear_requests()
    alice.type("start my-release")
    error = alice.error_message()
    shown = "\n".join(render_blocks(error.blocks))
    assert "the flush did not finish in 1s" in shown
    db, coll, seg = w.milvus("my-release").unflushed()[0]
    assert f"{db}.{coll}" in shown and str(seg) in shown
    assert [r for r in w.kube.requests if r.method == "DELETE"] == []


def test_reinstall_that_does_not_render_is_refused_before_any_change(world: World, slack: SlackClient) -> None:
    # Stale Pulsar V3 values that the running (V2) release never renders, but the reinstall would.
    values = {**PULSAR_V2, **SMALL, "pulsarv3": {"enabled": False, "components": "broken"}}
    world.install("stale-release", values=values)
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start stale-release")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "the reinstall does not render with chart zilliztech/milvus 4.2.40" in refusal
    assert "can't evaluate field zookeeper" in refusal
    assert cluster_writes(world) == []
    assert _release(world, "stale-release").status == "deployed"


def test_pinned_chart_with_milvus_2_6_is_refused(world: World, make_bot: Callable[..., BotProcess]) -> None:
    alice = person(world, make_bot(world, MILVUS_HELM_CHART_VERSION="5.0.19"))
    alice.type("start my-release")
    assert alice.outcome() == "failed"
    assert "chart 5.0.19 ships Milvus 2.6.15, not 2.5.x" in alice.thread()[1].text
    assert _release(world).status == "deployed"


def test_unknown_pinned_chart_is_refused_at_preflight(world: World, make_bot: Callable[..., BotProcess]) -> None:
    alice = person(world, make_bot(world, MILVUS_HELM_CHART_VERSION="4.9.99"))
    alice.type("start my-release")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "cannot read chart zilliztech/milvus 4.9.99" in refusal
    assert _release(world).status == "deployed"


def test_pvcs_that_take_seconds_to_go_are_watched_and_deleted_once(
    world: World, slack: SlackClient, bot: BotProcess
) -> None:
    """A PVC stays Terminating while its pod shuts down (here 2 s): the bot sends each DELETE once
    and follows the claims through a watch, not by listing them again every poll (0.2 s here)."""
    world.cluster.config.pvc_release_seconds = 2.0
    alice = Person(world, slack)
    _to_pvc_list(alice)
    world.kube.clear_requests()
    alice.approve("pvc_list")
    alice.checkpoint("reinstall")
    bots = [r for r in world.kube.requests if r.user_agent.startswith("OpenAPI-Generator")]
    v2 = "app=pulsar,release=my-release"
    claims = [r for r in bots if r.path == "/api/v1/namespaces/default/persistentvolumeclaims"]
    watches = [r for r in claims if r.query.get("watch") == "true" and r.query.get("labelSelector") == v2]
    lists = [r for r in claims if r.query.get("watch") != "true" and r.query.get("labelSelector") == v2]
    deletes = [r for r in bots if r.method == "DELETE" and "/persistentvolumeclaims/" in r.path]
    assert len(deletes) == 9 and len({r.path for r in deletes}) == 9  # each once, none again while terminating
    assert watches, "the PVCs were not watched"
    # the checkpoint's re-check, the list the watch starts from, and no more (a 0.2 s poll: ~10)
    assert len(lists) <= 3, [r.time for r in lists]
    assert world.pvcs("default", v2) == []
