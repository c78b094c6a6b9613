"""The milvus-operator path end to end: the real ``serve`` process, the sandbox's operator, Redis.

Covers: detection (a Milvus resource means the operator path; a Helm release and a resource
of the same name ask for --mode); the whole path to "succeeded"; the resource is patched
(etcd/MinIO Retain, Pulsar Delete + pvcDeletion) after the PVC approval and before it is
deleted; etcd and MinIO PVCs stay (same uids); the re-created resource equals the original
except the Pulsar fields and server-set metadata; the new Pulsar runs V3 images; an operator
at v1.0.0 is refused with how to upgrade it and not one write; a 409 or 422 on the patch stops
the run before any deletion; abort after the deletion offers "Restore previous release", which
re-creates the original resource.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

import pytest

from bot.procedure.operator_path import SERVER_SET
from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.conftest import person
from tests.scenario import Person

KEY = "milvuses.milvus.io"
WRITES = ("POST", "PUT", "PATCH", "DELETE")


WORLD_SEED = "operator"


def _kept(world: World) -> dict[str, str]:
    pvcs = world.store.list(
        "persistentvolumeclaims", "default", label_selector="app.kubernetes.io/instance=my-milvus-etcd"
    )
    pvcs += world.store.list("persistentvolumeclaims", "default", label_selector="app=minio,release=my-milvus-minio")
    return {p["metadata"]["name"]: p["metadata"]["uid"] for p in pvcs}


def _writes(world: World) -> list:
    return [
        r
        for r in world.kube.requests
        if r.method in WRITES and "/selfsubject" not in r.path and "/proxy/" not in r.path  # reviews write nothing
    ]


def _strip(cr: dict) -> dict:
    out = {k: v for k, v in cr.items() if k != "status"}
    out["metadata"] = {k: v for k, v in cr["metadata"].items() if k not in SERVER_SET}
    return out


def test_operator_upgrade_end_to_end(world: World, slack: SlackClient) -> None:
    original = world.store.get(KEY, "default", "my-milvus")
    kept = _kept(world)
    assert len(kept) == 2
    v2_pvcs = world.pvcs("default", "app=pulsar,release=my-milvus-pulsar")
    other = world.pvcs("default", "app=pulsar,release=other-release")
    assert v2_pvcs and other
    milvus = world.milvus("my-milvus")

    world.kube.clear_requests()
    alice = Person(world, slack)
    alice.type("start my-milvus")
    alice.approve("flush_done")
    pvc_cp = alice.checkpoint("pvc_list")
    assert "milvus-operator will delete these Pulsar PVCs" in pvc_cp.text
    assert _writes(world) and all("/secrets" in r.path for r in _writes(world)), (
        "only the backup Secret is written before the PVC approval"
    )
    world.kube.clear_requests()
    alice.click(pvc_cp, "upgrade_approve")
    reinstall = alice.checkpoint("reinstall")
    assert "chartVersion: 'pulsar-v2' -> 'pulsar-v3'" in reinstall.text
    alice.click(reinstall, "upgrade_approve")
    assert alice.outcome() == "succeeded"

    milvus_writes = [r for r in world.kube.requests if "/milvuses" in r.path and r.method in WRITES]
    assert [r.method for r in milvus_writes] == ["PATCH", "DELETE", "POST"]
    patch = milvus_writes[0].body
    assert patch["spec"]["dependencies"]["pulsar"]["inCluster"] == {"deletionPolicy": "Delete", "pvcDeletion": True}
    assert patch["spec"]["dependencies"]["etcd"]["inCluster"] == {"deletionPolicy": "Retain", "pvcDeletion": False}
    assert patch["spec"]["dependencies"]["storage"]["inCluster"] == {"deletionPolicy": "Retain", "pvcDeletion": False}
    # Flushed before the deletion.
    t_delete = milvus_writes[1].time
    assert all(r.time < t_delete for r in milvus.calls("/api/v1/persist"))
    assert milvus.unflushed() == []

    created = milvus_writes[2].body
    expected = _strip(original)
    expected["spec"]["dependencies"]["pulsar"]["inCluster"]["chartVersion"] = "pulsar-v3"
    expected["spec"]["dependencies"]["pulsar"]["inCluster"]["values"] = None
    assert created == expected
    assert not set(SERVER_SET) & set(created["metadata"])

    assert _kept(world) == kept
    now_pulsar = world.store.list(
        "persistentvolumeclaims", "default", label_selector="app=pulsar,release=my-milvus-pulsar"
    )
    assert now_pulsar and not {p["metadata"]["uid"] for p in now_pulsar} & set(v2_pvcs)
    images = {
        c["image"]
        for p in world.pods("default", "app=pulsar,release=my-milvus-pulsar")
        for c in p["spec"]["containers"]
    }
    assert images == {"apachepulsar/pulsar:3.0.7"}
    assert world.pvcs("default", "app=pulsar,release=other-release") == other
    secret = world.store.get("secrets", "default", "my-milvus-pulsar-upgrade-backup")
    saved = json.loads(base64.b64decode(secret["data"]["milvus.json"]))
    assert saved["spec"]["dependencies"]["pulsar"]["inCluster"]["chartVersion"] == "pulsar-v2"


@pytest.mark.parametrize("status", [409, 422])
def test_patch_rejected_stops_before_any_deletion(world: World, slack: SlackClient, status: int) -> None:
    alice = Person(world, slack)
    alice.type("start my-milvus")
    alice.approve("flush_done")
    cp = alice.checkpoint("pvc_list")
    world.kube.clear_requests()
    world.kube.inject_fault("PATCH", r"/milvuses/my-milvus", status=status, count=5)
    alice.click(cp, "upgrade_approve")
    error = alice.error_message()
    assert f"HTTP {status}" in error.text
    assert [r for r in world.kube.requests if r.method == "DELETE"] == []
    cr = world.store.get(KEY, "default", "my-milvus")
    assert not cr["metadata"].get("deletionTimestamp")
    assert world.pvcs("default", "app=pulsar,release=my-milvus-pulsar")


def test_abort_after_deletion_then_restore(world: World, slack: SlackClient) -> None:
    original = world.store.get(KEY, "default", "my-milvus")
    alice = Person(world, slack)
    alice.type("start my-milvus")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.click(alice.checkpoint("reinstall"), "upgrade_abort")
    assert alice.outcome() == "aborted"
    assert world.store.try_get(KEY, "default", "my-milvus") is None
    alice.approve("restore")
    alice.wait(lambda: world.store.try_get(KEY, "default", "my-milvus") is not None, 30, "the resource to return")
    back = world.store.get(KEY, "default", "my-milvus")
    assert _strip(back)["spec"] == _strip(original)["spec"]
    assert back["spec"]["dependencies"]["pulsar"]["inCluster"]["chartVersion"] == "pulsar-v2"


def test_helm_release_and_resource_of_the_same_name_ask_for_mode(world: World, slack: SlackClient) -> None:
    world.install("twin")
    world.create_milvus_cr("twin")
    alice = Person(world, slack)
    alice.type("start twin")
    assert "--mode helm" in alice.wait_ephemeral("Both a Helm release and a Milvus resource")


def test_old_operator_is_refused_without_a_single_write(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    w = make_world("operator", operator_version="v1.0.0")
    alice = person(w, make_bot(w))
    w.kube.clear_requests()
    alice.type("start my-milvus")
    assert alice.outcome() == "failed"
    refusal = alice.thread()[1].text
    assert "too old" in refusal and "v1.0.0" in refusal and "helm upgrade milvus-operator" in refusal
    assert _writes(w) == []
