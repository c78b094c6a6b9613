"""The Helm path end to end: the real ``serve`` process, the sandbox, a real Redis.

Covers: the whole upgrade from the slash command to "succeeded", every destructive step
behind an approval; the end state (values equal to the originals except the two Pulsar keys,
Pulsar V2 PVCs and PVs gone, etcd/MinIO PVCs and other releases' and namespaces' PVCs
untouched); every (database, collection) flushed with its exact segment IDs before the
uninstall, including writes that arrived while the first checkpoint waited; no DELETE before
its approval; every reply in the root's thread; the outcome words only at the end; the values
backup in a Secret (whole) and as a file with the secret-looking values redacted (whole with
BOT_BACKUP_TO_SLACK=full), no ConfigMap; checkpoint messages lose their buttons and name who
decided.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

from bot.cluster.helm import find_release
from sandbox.botproc import BotProcess
from sandbox.kube.server import KubeApiServer
from sandbox.slack import SlackClient
from sandbox.world import CHANNEL, MINIO_SECRET_KEY, OPERATOR, World
from tests.conftest import BOTH_HELMS, person
from tests.scenario import OUTCOMES, Person, cluster_writes, has_button


def _first(records: list, predicate) -> float:
    times = [r.time for r in records if predicate(r)]
    return min(times) if times else float("inf")


def _writes_statefulset(r) -> bool:
    """A create of a StatefulSet: POST (Helm 3) or a server-side apply PATCH (Helm 4)."""
    applied = r.method == "PATCH" and r.content_type.startswith("application/apply-patch")
    return "/statefulsets" in r.path and (r.method == "POST" or applied)


def _deletes(kube: KubeApiServer) -> list:
    return [r for r in kube.requests if r.method == "DELETE"]


def _release_secret(world: World, name: str, namespace: str) -> dict:
    secrets = world.store.list("secrets", namespace, label_selector=f"owner=helm,name={name}")
    return {"release": find_release(secrets, name)}


@BOTH_HELMS
def test_helm_upgrade_end_to_end(world: World, slack: SlackClient) -> None:
    milvus = world.milvus("my-release")
    original = world.releases[("default", "my-release")].values
    untouched = (
        world.pvcs("default", "app=pulsar,release=other-release")
        + world.pvcs("staging")
        + world.pvcs("default", "app.kubernetes.io/name=etcd")
        + world.pvcs("default", "app=minio")
        + [p for p in world.pvcs("default") if p.endswith("-minio")]
    )
    untouched_pvs = {
        p["metadata"]["name"]
        for p in world.store.list("persistentvolumes")
        if f"{p['spec']['claimRef']['namespace']}/{p['spec']['claimRef']['name']}" in untouched
    }
    v2_pvcs = world.pvcs("default", "app=pulsar,release=my-release")
    v2_pvs = {
        p["metadata"]["name"]
        for p in world.store.list("persistentvolumes")
        if f"{p['spec']['claimRef']['namespace']}/{p['spec']['claimRef']['name']}" in v2_pvcs
    }
    assert len(v2_pvcs) == 9 and len(v2_pvs) == 9
    unflushed_at_start = set(milvus.unflushed())
    assert unflushed_at_start

    alice = Person(world, slack)
    alice.type("start my-release")
    flush_cp = alice.checkpoint("flush_done")
    # Writes that arrive while the checkpoint waits must be flushed by the second flush.
    late = {("default", "products", s) for s in milvus.insert("default", "products", 40)}
    world.kube.clear_requests()
    t_flush_ok = time.monotonic()
    alice.click(flush_cp, "upgrade_approve")
    pvc_cp = alice.checkpoint("pvc_list")
    t_pvc_ok = time.monotonic()
    alice.click(pvc_cp, "upgrade_approve")
    reinstall_cp = alice.checkpoint("reinstall")
    assert "pulsar.enabled: true -> false" in reinstall_cp.text
    assert "pulsarv3.enabled: false -> true" in reinstall_cp.text
    t_reinstall_ok = time.monotonic()
    alice.click(reinstall_cp, "upgrade_approve")
    assert alice.outcome() == "succeeded"

    # --- no DELETE before its approval; nothing installed before the reinstall approval
    deletes = _deletes(world.kube)
    assert deletes and min(r.time for r in deletes) > t_flush_ok
    pvc_deletes = [r for r in deletes if "/persistentvolumeclaims/" in r.path]
    pv_deletes = [r for r in deletes if "/persistentvolumes/" in r.path]
    assert sorted(r.path.rsplit("/", 1)[1] for r in pvc_deletes) == sorted(p.split("/")[1] for p in v2_pvcs)
    assert all(r.time > t_pvc_ok for r in pvc_deletes + pv_deletes)
    creates = [r for r in world.kube.requests if _writes_statefulset(r)]
    assert creates and min(r.time for r in creates) > t_reinstall_ok

    # --- flushed with exact IDs before the uninstall (helm deletes the release secret)
    t_uninstall = _first(deletes, lambda r: "/secrets/sh.helm.release.v1.my-release" in r.path)
    assert t_uninstall < float("inf")
    states = [r for r in milvus.calls("/api/v1/persist/state") if r.time < t_uninstall]
    for db, coll, seg in unflushed_at_start | late:
        assert any(
            r.body["db_name"] == db
            and r.body["collection_name"] == coll
            and seg in r.body["segmentIDs"]
            and (r.response or {}).get("flushed") is True
            for r in states
        ), (db, coll, seg)
    assert milvus.unflushed() == []
    persisted_dbs = {r.body.get("db_name") for r in milvus.calls("/api/v1/persist")}
    assert persisted_dbs == {"default", "analytics", "search"}

    # --- end state
    release = _release_secret(world, "my-release", "default")["release"]
    assert release.status == "deployed"
    expected = {**original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
    assert release.config == expected
    assert world.pvcs("default", "app=pulsar,release=my-release") == []
    assert len(world.pvcs("default", "app=pulsarv3,release=my-release")) == 9
    assert not v2_pvs & set(world.pvs())
    remaining = set(world.pvcs())
    assert set(untouched) <= remaining
    assert untouched_pvs <= set(world.pvs())

    # --- backup: the whole values in a Secret, a redacted file in the thread, no ConfigMap
    secret = world.store.get("secrets", "default", "my-release-pulsar-upgrade-backup")
    assert json.loads(base64.b64decode(secret["data"]["values.json"])) == original
    assert (
        world.store.list(
            "configmaps", "default", label_selector="app.kubernetes.io/managed-by=milvus-pulsar-upgrade-bot"
        )
        == []
    )
    files = world.slack.files()
    assert [f.name for f in files] == ["my-release-values.json"]
    shown = json.loads(files[0].content or b"")
    assert shown["minio"]["secretKey"] == shown["minio"]["accessKey"] == "<redacted by milvus-pulsar-upgrade-bot>"
    assert {**shown, "minio": original["minio"]} == original
    assert MINIO_SECRET_KEY not in "".join(m.text for m in alice.thread())
    assert "2 secret-looking values are redacted in this file (`minio.accessKey`, `minio.secretKey`)" in "".join(
        m.text for m in alice.thread()
    )
    root = alice.root()
    assert files[0].thread_ts == root.ts

    # --- Slack: one root, everything else in its thread, outcome words only at the end
    posts = world.slack.calls_of("chat.postMessage")
    assert posts[0].args.get("thread_ts") in (None, "")
    assert all(p.args.get("thread_ts") == root.ts for p in posts[1:])
    assert len(world.slack.messages(CHANNEL)) == 1
    root_updates = [c.args["text"] for c in world.slack.calls_of("chat.update") if c.args.get("ts") == root.ts]
    assert sum(1 for w in OUTCOMES if w in root.text) == 1 and "succeeded" in root.text
    assert not any(w in text for text in root_updates[:-1] for w in OUTCOMES if "succeeded" not in text)
    first_end = next(i for i, t in enumerate(root_updates) if "succeeded" in t)
    assert all(not any(w in t for w in OUTCOMES) for t in root_updates[:first_end])
    for msg in alice.thread()[1:]:
        assert not has_button(msg, "upgrade_approve")
    decided = world.slack.message(CHANNEL, flush_cp.ts)
    assert f"Approved by <@{OPERATOR}>" in decided.text


def test_dry_run_changes_nothing(world: World, slack: SlackClient) -> None:
    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start my-release --dry-run")
    assert alice.outcome() == "succeeded"
    assert cluster_writes(world) == []
    plan = alice.thread()[1].text
    assert "Plan for `my-release`" in plan
    assert f"Runs with helm {world.helm_version}" in plan
    assert world.milvus("my-release").calls("/api/v1/persist") == []


def test_backup_file_is_whole_with_backup_to_slack_full(world: World, make_bot: Callable[..., BotProcess]) -> None:
    alice = person(world, make_bot(world, BOT_BACKUP_TO_SLACK="full"))
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.checkpoint("pvc_list")
    files = world.slack.files()
    assert [f.name for f in files] == ["my-release-values.json"]
    assert json.loads(files[0].content or b"")["minio"]["secretKey"] == MINIO_SECRET_KEY
