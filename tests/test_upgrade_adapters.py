"""The adapters' guarantees through the real bot process (scenario level).

- Milvus with auth on, reached directly (MILVUS_URL / MILVUS_MGMT_URL): MILVUS_TOKEN reaches
  both ports, preflight and flush work, and Milvus never sees the Kubernetes token.
- A Kubernetes call that hangs is cut by the client timeout, retried by the engine, and the
  upgrade still succeeds.
- A PVC re-created under an approved name after the approval is not deleted (uid
  precondition): nothing more is deleted and the operators are asked again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.botproc import BotProcess
from sandbox.slack.model import Message
from sandbox.world import World
from tests.conftest import person
from tests.scenario import Person, has_button

MILVUS_TOKEN = "root:Milvus-sandbox"
V2 = "app=pulsar,release=my-release"


def _next_checkpoint(alice: Person, kind: str, after: Message, timeout: float = 60.0) -> Message:
    """The next open checkpoint of ``kind`` posted after ``after`` (a re-ask is a new message)."""
    found: list[Message] = []

    def ready() -> bool:
        found[:] = [
            m
            for m in alice.thread()[1:]
            if m.ts != after.ts
            and float(m.ts) > float(after.ts)
            and has_button(m, "upgrade_approve")
            and any(str(b.get("block_id", "")).startswith(f"cp:{kind}-") for b in m.blocks)
        ]
        return bool(found)

    alice.wait(ready, timeout, f"a new {kind} checkpoint")
    return found[-1]


def test_milvus_token_goes_direct_and_the_kubernetes_token_stays_home(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world(milvus_token=MILVUS_TOKEN)
    mgmt, rest = world.milvus_direct_urls("my-release")
    bot = make_bot(world, MILVUS_URL=rest, MILVUS_MGMT_URL=mgmt, MILVUS_TOKEN=MILVUS_TOKEN)
    milvus = world.milvus("my-release")
    assert milvus.unflushed()
    alice = person(world, bot)
    alice.type("start my-release")
    alice.approve("flush_done")  # preflight and the first flush ran; approving flushes again, uninstalls
    alice.checkpoint("pvc_list")

    assert milvus.unflushed() == []
    calls = [r for r in milvus.requests if r.path != "/healthz"]
    assert {r.server for r in calls} == {"mgmt", "rest"}
    assert any(r.path == "/api/v1/persist" for r in calls)
    assert all(r.status == 200 for r in calls), [(r.path, r.status) for r in calls if r.status != 200]
    assert all(r.authorization == f"Bearer {MILVUS_TOKEN}" for r in calls)
    assert not any(world.kube.token in (r.authorization or "") for r in milvus.requests)
    # Nothing went through the service proxy, so the token had no way to reach the API server.
    assert not any("/proxy" in r.path for r in world.kube.requests)
    assert MILVUS_TOKEN not in bot.log()


def test_a_hung_kubernetes_call_is_retried_and_the_upgrade_succeeds(
    world: World, make_bot: Callable[..., BotProcess]
) -> None:
    bot = make_bot(world, KUBE_REQUEST_TIMEOUT_SECONDS="1")
    alice = person(world, bot)
    alice.type("start my-release")
    alice.approve("flush_done")
    pvc_cp = alice.checkpoint("pvc_list")
    # The bot's next PVC list (in the delete step) hangs far longer than its 1 s timeout.
    world.kube.inject_fault("GET", r"/namespaces/default/persistentvolumeclaims$", hang_seconds=30)
    alice.click(pvc_cp, "upgrade_approve")
    alice.approve("reinstall")
    assert alice.outcome(timeout=120) == "succeeded"
    assert world.pvcs("default", V2) == []
    assert "did not answer within 1s" in bot.log()


def test_a_pvc_recreated_after_approval_is_not_deleted_and_is_asked_again(
    world: World, make_bot: Callable[..., BotProcess]
) -> None:
    bot = make_bot(world)
    alice = person(world, bot)
    alice.type("start my-release")
    alice.approve("flush_done")
    pvc_cp = alice.checkpoint("pvc_list")
    names = [p.split("/")[1] for p in world.pvcs("default", V2)]
    first, victim, untouched = names[0], names[1], names[2:]
    old_uid = world.store.get("persistentvolumeclaims", "default", victim)["metadata"]["uid"]
    new_uid: list[str] = []

    def replace_victim(event: Any) -> None:
        """When the bot deletes the first approved PVC, re-create the second one under its name
        (before the bot's DELETE of it arrives): the deterministic race an approval can lose."""
        _rv, _type, key, obj, _prev = event
        if new_uid or key != "persistentvolumeclaims" or obj["metadata"]["name"] != first:
            return
        if not obj["metadata"].get("deletionTimestamp") and _type != "DELETED":
            return
        new_uid.append("pending")
        store = world.store
        old = store.get("persistentvolumeclaims", "default", victim)
        store.patch(
            "persistentvolumeclaims",
            "default",
            victim,
            {"metadata": {"finalizers": None}},
            "merge",
        )
        store.delete("persistentvolumeclaims", "default", victim)
        fresh = {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "metadata": {"name": victim, "labels": old["metadata"].get("labels", {})},
            "spec": {k: v for k, v in old["spec"].items() if k != "volumeName"},
        }
        new_uid[0] = store.create("persistentvolumeclaims", fresh, namespace="default")["metadata"]["uid"]

    unlisten = world.store.listen(replace_victim)
    try:
        alice.click(pvc_cp, "upgrade_approve")
        again = _next_checkpoint(alice, "pvc_list", pvc_cp)
    finally:
        unlisten()

    assert new_uid and new_uid[0] != old_uid
    assert world.store.get("persistentvolumeclaims", "default", victim)["metadata"]["uid"] == new_uid[0]
    assert victim in again.text and "re-created" in again.text
    deletes = [r for r in world.kube.requests if r.method == "DELETE" and "/persistentvolumeclaims/" in r.path]
    assert [r.status for r in deletes if r.path.endswith(f"/{victim}")] == [409]
    assert not [r for r in deletes if r.path.rsplit("/", 1)[1] in untouched]  # nothing more was deleted
    assert f"default/{first}" not in world.pvcs("default", V2)

    # Approving the fresh list deletes what it showed, the new PVC included, and the upgrade goes on.
    alice.click(again, "upgrade_approve")
    alice.checkpoint("reinstall", timeout=60)
    assert world.pvcs("default", V2) == []
