"""Tests of the simulated cluster behaviour (sandbox.kube.controllers.ClusterSim).

Behaviours covered:
- StatefulSet: pods ``<sts>-<i>`` with the template labels and an owner reference; one PVC per
  claim template (selector + template labels, pvc-protection finalizer, storage class) bound to
  a PV ``pvc-<uid>`` whose claimRef points back; OrderedReady waits for each pod; scale down;
  deleting the StatefulSet removes its pods but keeps its PVCs.
- Pods: Pending + PodScheduled first, Running + Ready only after ``pod_ready_seconds``; Events
  Scheduled/Pulled/Created/Started; containerd-style image names.
- PVC protection: a deleted PVC stays while a pod mounts it, then goes; PV reclaim Delete (the
  PV goes) vs Retain (Released, claimRef kept); a bare PVC gets the finalizer and is bound, one
  of an unknown storage class stays Pending with a ProvisioningFailed event.
- Delete propagation: Orphan leaves the pods (a new StatefulSet adopts them), Foreground waits
  for them.
- hold_unready: Running but not Ready, Warning Events ``Unhealthy`` with the message; release.
- Deployment: pods ``<deploy>-<hash>-<rand>`` with pod-template-hash, status counters, template
  change rolls the pods, deletion cascades.
- milvus-operator: finalizer + operator-version label, Pending -> Healthy with endpoint;
  pulsar-v2 vs pulsar-v3 images; pulsar-v3 on an operator older than v1.1.2 -> Unhealthy;
  deleting with Pulsar Delete/pvcDeletion and etcd/storage Retain removes only the Pulsar PVCs
  (PVs too) while etcd/MinIO keep running, and a re-created CR reuses them; the default (all
  Retain) keeps every dependency; an operator scaled to 0 does nothing until it is back.
- End to end through the API server with the real ``kubernetes`` client: a watch sees the
  StatefulSet's pod turn Ready.
"""

from __future__ import annotations

import copy
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client, config, watch

from sandbox import tools
from sandbox.chartrepo import chart_path
from sandbox.kube.controllers import ClusterSim
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import RESOURCES, ApiError, Store

NS = "team"
MILVUS = "milvuses.milvus.io"
Obj = dict[str, Any]


# ---- fixtures and helpers ------------------------------------------------------------------


@pytest.fixture
def store() -> Store:
    s = Store()
    s.ensure_namespace(NS)
    return s


def _start(store: Store, **kwargs: Any) -> ClusterSim:
    options: dict[str, Any] = {"pod_ready_seconds": 0.05, "operator_delete_seconds": 0.05}
    options.update(kwargs)
    return ClusterSim(store, **options).start()


@pytest.fixture
def sim(store: Store) -> Iterator[ClusterSim]:
    cluster = _start(store, operator_version=None)
    yield cluster
    cluster.stop()
    assert cluster.errors == []


@pytest.fixture
def operator_sim(store: Store) -> Iterator[ClusterSim]:
    cluster = _start(store)
    cluster.settle()
    yield cluster
    cluster.stop()
    assert cluster.errors == []


def statefulset(name: str, replicas: int = 2, *, claims: tuple[str, ...] = ("data",), **spec: Any) -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "serviceName": name,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": {**labels, "tier": "db"}},
                "spec": {"containers": [{"name": "main", "image": "busybox:1.36"}]},
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": claim, "labels": {"purpose": claim}},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
                for claim in claims
            ],
            **spec,
        },
    }


def deployment(name: str, replicas: int = 2, image: str = "nginx:1.27") -> Obj:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "web", "image": image}]},
            },
        },
    }


def milvus(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "milvus.io/v1beta1",
        "kind": "Milvus",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def names(store: Store, key: str, selector: str | None = None, namespace: str | None = NS) -> list[str]:
    return sorted(o["metadata"]["name"] for o in store.list(key, namespace, label_selector=selector))


def ready(pod: Obj) -> bool:
    conds = {c["type"]: c["status"] for c in pod.get("status", {}).get("conditions", [])}
    return pod.get("status", {}).get("phase") == "Running" and conds.get("Ready") == "True"


def events_for(store: Store, name: str) -> list[Obj]:
    return [e for e in store.list("events", NS) if e["involvedObject"]["name"] == name]


def record_statuses(store: Store, key: str, name: str) -> tuple[list[str], Callable[[], None]]:
    """Every distinct status.status a Milvus CR passes through, in order."""
    seen: list[str] = []

    def on_change(_event: str, changed_key: str, obj: Obj) -> None:
        if changed_key == key and obj["metadata"]["name"] == name:
            state = (obj.get("status") or {}).get("status")
            if state and (not seen or seen[-1] != state):
                seen.append(state)

    return seen, store.subscribe(on_change)


# ---- StatefulSets, pods, volumes ----------------------------------------------------------


def test_statefulset_creates_pods_and_labelled_pvcs_bound_to_pvs(store: Store, sim: ClusterSim) -> None:
    sts = store.create("statefulsets.apps", statefulset("db", claims=("data", "logs")))
    sim.settle()

    assert names(store, "pods") == ["db-0", "db-1"]
    pod = store.get("pods", NS, "db-1")
    assert pod["metadata"]["labels"]["app"] == "db" and pod["metadata"]["labels"]["tier"] == "db"
    assert pod["metadata"]["ownerReferences"][0] == {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "name": "db",
        "uid": sts["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]}
    assert claims == {"data": "data-db-1", "logs": "logs-db-1"}

    assert names(store, "persistentvolumeclaims") == ["data-db-0", "data-db-1", "logs-db-0", "logs-db-1"]
    assert names(store, "persistentvolumeclaims", "app=db,purpose=logs") == ["logs-db-0", "logs-db-1"]
    pvc = store.get("persistentvolumeclaims", NS, "data-db-0")
    assert pvc["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert pvc["spec"]["storageClassName"] == "standard"
    assert pvc["spec"]["resources"]["requests"]["storage"] == "1Gi"
    assert pvc["status"]["phase"] == "Bound"
    assert pvc["spec"]["volumeName"] == f"pvc-{pvc['metadata']['uid']}"

    pv = store.get("persistentvolumes", None, pvc["spec"]["volumeName"])
    ref = pv["spec"]["claimRef"]
    assert (ref["kind"], ref["apiVersion"], ref["namespace"], ref["name"], ref["uid"]) == (
        "PersistentVolumeClaim",
        "v1",
        NS,
        "data-db-0",
        pvc["metadata"]["uid"],
    )
    assert pv["spec"]["capacity"] == {"storage": "1Gi"}
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert pv["spec"]["storageClassName"] == "standard"
    assert pv["status"]["phase"] == "Bound"

    status = store.get("statefulsets.apps", NS, "db")["status"]
    assert status["replicas"] == status["readyReplicas"] == status["availableReplicas"] == 2
    assert status["currentReplicas"] == 2 and status["observedGeneration"] == 1


def test_ordered_ready_waits_for_each_pod_and_scale_down_removes_the_highest(store: Store, sim: ClusterSim) -> None:
    sim.hold_unready(NS, "statefulset.kubernetes.io/pod-name=web-0")
    store.create("statefulsets.apps", statefulset("web", replicas=3))
    sim.settle()
    assert names(store, "pods") == ["web-0"]  # OrderedReady: web-1 waits for web-0 to be Ready

    sim.release_unready(NS, "statefulset.kubernetes.io/pod-name=web-0")
    sim.settle()
    assert names(store, "pods") == ["web-0", "web-1", "web-2"]

    store.patch("statefulsets.apps", NS, "web", {"spec": {"replicas": 1}}, "merge")
    sim.settle()
    assert names(store, "pods") == ["web-0"]
    assert len(names(store, "persistentvolumeclaims")) == 3  # PVCs of removed pods stay
    status = store.get("statefulsets.apps", NS, "web")["status"]
    assert status["replicas"] == 1 and status["observedGeneration"] == 2


def test_pods_turn_ready_only_after_the_delay(store: Store) -> None:
    cluster = _start(store, pod_ready_seconds=0.4, operator_version=None)
    try:
        started = time.monotonic()
        store.create("statefulsets.apps", statefulset("slow", replicas=1, claims=()))
        deadline = time.monotonic() + 2
        while not store.list("pods", NS) or "conditions" not in store.get("pods", NS, "slow-0")["status"]:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        pod = store.get("pods", NS, "slow-0")
        assert pod["status"]["phase"] == "Pending"
        assert [c["type"] for c in pod["status"]["conditions"]] == ["PodScheduled"]
        assert pod["spec"]["nodeName"] == "sandbox-node"

        cluster.settle()
        assert time.monotonic() - started >= 0.4
        pod = store.get("pods", NS, "slow-0")
        assert ready(pod)
        conds = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert conds["ContainersReady"] == "True"
        (container,) = pod["status"]["containerStatuses"]
        assert container["ready"] is True and container["image"] == "docker.io/library/busybox:1.36"
        assert "running" in container["state"]
        reasons = [e["reason"] for e in events_for(store, "slow-0")]
        assert reasons == ["Scheduled", "Pulled", "Created", "Started"]
        assert {e["type"] for e in events_for(store, "slow-0")} == {"Normal"}
        assert cluster.errors == []
    finally:
        cluster.stop()


def test_deleting_the_statefulset_removes_its_pods_but_keeps_the_pvcs(store: Store, sim: ClusterSim) -> None:
    store.create("statefulsets.apps", statefulset("kv"))
    sim.settle()
    store.delete("statefulsets.apps", NS, "kv")
    sim.settle()
    assert names(store, "pods") == []
    assert names(store, "persistentvolumeclaims") == ["data-kv-0", "data-kv-1"]
    assert all(p["status"]["phase"] == "Bound" for p in store.list("persistentvolumes"))


def test_deleted_pvc_waits_for_its_pod_then_goes_with_its_pv(store: Store, sim: ClusterSim) -> None:
    store.create("statefulsets.apps", statefulset("q", replicas=1))
    sim.settle()
    volume = store.get("persistentvolumeclaims", NS, "data-q-0")["spec"]["volumeName"]

    store.delete("persistentvolumeclaims", NS, "data-q-0")
    sim.settle()
    pvc = store.get("persistentvolumeclaims", NS, "data-q-0")  # still there: q-0 mounts it
    assert pvc["metadata"]["deletionTimestamp"]
    assert pvc["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]

    store.delete("statefulsets.apps", NS, "q")
    sim.settle()
    assert store.try_get("persistentvolumeclaims", NS, "data-q-0") is None
    assert store.try_get("persistentvolumes", None, volume) is None  # reclaim policy Delete


def test_reclaim_policy_delete_removes_the_pv_and_retain_releases_it(store: Store, sim: ClusterSim) -> None:
    sim.set_reclaim_policy("Retain")
    store.create("statefulsets.apps", statefulset("kept", replicas=1, claims=("data",)))
    sim.settle()
    sim.set_reclaim_policy("Delete")
    store.create("statefulsets.apps", statefulset("gone", replicas=1, claims=("data",)))
    sim.settle()
    kept = store.get("persistentvolumeclaims", NS, "data-kept-0")
    gone = store.get("persistentvolumeclaims", NS, "data-gone-0")
    assert (
        store.get("persistentvolumes", None, kept["spec"]["volumeName"])["spec"]["persistentVolumeReclaimPolicy"]
        == "Retain"
    )

    for name in ("kept", "gone"):
        store.delete("statefulsets.apps", NS, name)
        store.delete("persistentvolumeclaims", NS, f"data-{name}-0")
    sim.settle()

    assert names(store, "persistentvolumeclaims") == []
    assert store.try_get("persistentvolumes", None, gone["spec"]["volumeName"]) is None
    released = store.get("persistentvolumes", None, kept["spec"]["volumeName"])
    assert released["status"]["phase"] == "Released"
    assert released["spec"]["claimRef"]["name"] == "data-kept-0"
    assert released["spec"]["claimRef"]["uid"] == kept["metadata"]["uid"]

    store.delete("persistentvolumes", None, released["metadata"]["name"])  # Released: not protected
    sim.settle()
    assert store.list("persistentvolumes") == []


def test_bare_pvc_is_protected_and_bound_and_unknown_class_stays_pending(store: Store, sim: ClusterSim) -> None:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}}}
    store.create("persistentvolumeclaims", {"metadata": {"name": "plain", "namespace": NS}, "spec": spec})
    fast = {"name": "fast", "namespace": NS}
    store.create("persistentvolumeclaims", {"metadata": fast, "spec": {**spec, "storageClassName": "fast"}})
    sim.settle()
    plain = store.get("persistentvolumeclaims", NS, "plain")
    assert plain["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    assert plain["status"] == {
        "phase": "Bound",
        "accessModes": ["ReadWriteOnce"],
        "capacity": {"storage": "2Gi"},
    }
    assert plain["spec"]["storageClassName"] == "standard"
    pending = store.get("persistentvolumeclaims", NS, "fast")
    assert pending["status"]["phase"] == "Pending" and "volumeName" not in pending["spec"]
    (event,) = events_for(store, "fast")
    assert (event["reason"], event["type"]) == ("ProvisioningFailed", "Warning")
    assert len(store.list("persistentvolumes")) == 1


def test_hold_unready_keeps_pods_unready_with_unhealthy_events(store: Store, sim: ClusterSim) -> None:
    sim.hold_unready(NS, "app=api", "Readiness probe failed: connection refused")
    store.create("deployments.apps", deployment("api", replicas=1))
    sim.settle()
    (pod,) = store.list("pods", NS)
    assert pod["status"]["phase"] == "Running" and not ready(pod)
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    unhealthy = [e for e in events_for(store, pod["metadata"]["name"]) if e["reason"] == "Unhealthy"]
    assert len(unhealthy) == 1
    assert unhealthy[0]["type"] == "Warning"
    assert unhealthy[0]["message"] == "Readiness probe failed: connection refused"
    assert unhealthy[0]["involvedObject"]["kind"] == "Pod"
    assert unhealthy[0]["involvedObject"]["uid"] == pod["metadata"]["uid"]
    status = store.get("deployments.apps", NS, "api")["status"]
    assert "readyReplicas" not in status and status["unavailableReplicas"] == 1

    sim.release_unready(NS, "app=api")
    sim.settle()
    assert ready(store.get("pods", NS, pod["metadata"]["name"]))
    assert store.get("deployments.apps", NS, "api")["status"]["readyReplicas"] == 1


def test_deployment_pods_roll_on_template_change_and_cascade_on_delete(store: Store, sim: ClusterSim) -> None:
    store.create("deployments.apps", deployment("web", replicas=2))
    sim.settle()
    pods = store.list("pods", NS)
    assert len(pods) == 2
    template_hash = pods[0]["metadata"]["labels"]["pod-template-hash"]
    for pod in pods:
        assert re.fullmatch(rf"web-{template_hash}-[a-z0-9]{{5}}", pod["metadata"]["name"])
        assert len(template_hash) == 10
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
    status = store.get("deployments.apps", NS, "web")["status"]
    assert status["replicas"] == status["readyReplicas"] == status["availableReplicas"] == 2
    assert status["observedGeneration"] == 1

    store.patch(
        "deployments.apps",
        NS,
        "web",
        {"spec": {"template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.28"}]}}}},
        "merge",
    )
    sim.settle()
    pods = store.list("pods", NS)
    assert len(pods) == 2 and all(p["spec"]["containers"][0]["image"] == "nginx:1.28" for p in pods)
    assert all(p["metadata"]["labels"]["pod-template-hash"] != template_hash for p in pods)
    assert store.get("deployments.apps", NS, "web")["status"]["observedGeneration"] == 2

    store.delete("deployments.apps", NS, "web")
    sim.settle()
    assert store.list("pods", NS) == []


def test_delete_propagation_orphan_pods_are_adopted_and_foreground_waits(store: Store, sim: ClusterSim) -> None:
    store.create("statefulsets.apps", statefulset("orph", replicas=2, claims=()))
    sim.settle()
    uids = {p["metadata"]["name"]: p["metadata"]["uid"] for p in store.list("pods", NS)}
    store.delete("statefulsets.apps", NS, "orph", propagation_policy="Orphan")
    sim.settle()
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in store.list("pods", NS)} == uids
    assert all("ownerReferences" not in p["metadata"] for p in store.list("pods", NS))

    sts = store.create("statefulsets.apps", statefulset("orph", replicas=2, claims=()))
    sim.settle()
    pods = store.list("pods", NS)
    assert {p["metadata"]["name"]: p["metadata"]["uid"] for p in pods} == uids  # adopted, not recreated
    assert all(p["metadata"]["ownerReferences"][0]["uid"] == sts["metadata"]["uid"] for p in pods)

    marked = store.delete("statefulsets.apps", NS, "orph", propagation_policy="Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    sim.settle()
    assert store.try_get("statefulsets.apps", NS, "orph") is None
    assert store.list("pods", NS) == []


# ---- milvus-operator -----------------------------------------------------------------------


def test_operator_runs_as_a_deployment(store: Store, operator_sim: ClusterSim) -> None:
    deploy = store.get("deployments.apps", "milvus-operator", "milvus-operator")
    assert deploy["spec"]["template"]["spec"]["containers"][0]["image"] == "milvusdb/milvus-operator:v1.1.2"
    (pod,) = store.list("pods", "milvus-operator", "app.kubernetes.io/name=milvus-operator")
    assert ready(pod)


def test_operator_adds_finalizer_and_label_then_pending_to_healthy(store: Store, operator_sim: ClusterSim) -> None:
    seen, unsubscribe = record_statuses(store, MILVUS, "m1")
    store.create(MILVUS, milvus("m1"))
    operator_sim.settle()
    unsubscribe()

    cr = store.get(MILVUS, NS, "m1")
    assert cr["metadata"]["finalizers"] == ["milvus.milvus.io/finalizer"]
    assert cr["metadata"]["labels"]["milvus.io/operator-version"] == "v1.1.2"
    assert seen == ["Pending", "Healthy"]
    assert cr["status"]["endpoint"] == f"m1-milvus.{NS}:19530"
    assert cr["status"]["observedGeneration"] == cr["metadata"]["generation"]
    conds = {c["type"]: c["status"] for c in cr["status"]["conditions"]}
    assert conds["MilvusReady"] == "True"

    # standalone defaults to rocksmq: etcd + MinIO, no Pulsar
    assert names(store, "statefulsets.apps") == ["m1-etcd", "m1-minio"]
    assert names(store, "persistentvolumeclaims") == ["data-m1-etcd-0", "export-m1-minio-0"]
    assert names(store, "persistentvolumeclaims", "app.kubernetes.io/name=etcd,app.kubernetes.io/instance=m1-etcd")
    assert names(store, "deployments.apps") == ["m1-milvus-standalone"]
    (pod,) = store.list("pods", NS, "app.kubernetes.io/instance=m1,app.kubernetes.io/component=standalone")
    assert pod["spec"]["containers"][0]["image"] == "milvusdb/milvus:v2.5.10"
    service = store.get("services", NS, "m1-milvus")
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"milvus": 19530, "metrics": 9091}


def _pulsar_images(store: Store, release: str) -> set[str]:
    pods = store.list("pods", NS, f"app=pulsar,release={release}")
    assert {p["metadata"]["labels"]["component"] for p in pods} == {"zookeeper", "bookie", "broker", "proxy"}
    return {c["image"] for p in pods for c in p["spec"]["containers"]}


def test_pulsar_v2_and_v3_charts_run_different_images(store: Store, operator_sim: ClusterSim) -> None:
    store.create(MILVUS, milvus("old", mode="cluster"))
    v3 = {"msgStreamType": "pulsar", "pulsar": {"inCluster": {"chartVersion": "pulsar-v3"}}}
    store.create(MILVUS, milvus("new", dependencies=v3))
    operator_sim.settle()

    assert _pulsar_images(store, "old-pulsar") == {"apachepulsar/pulsar:2.8.2"}
    assert _pulsar_images(store, "new-pulsar") == {"apachepulsar/pulsar:3.0.7"}
    assert names(store, "persistentvolumeclaims", "app=pulsar,release=new-pulsar,component=bookie") == [
        "new-pulsar-bookie-journal-new-pulsar-bookie-0",
        "new-pulsar-bookie-journal-new-pulsar-bookie-1",
        "new-pulsar-bookie-journal-new-pulsar-bookie-2",
        "new-pulsar-bookie-ledgers-new-pulsar-bookie-0",
        "new-pulsar-bookie-ledgers-new-pulsar-bookie-1",
        "new-pulsar-bookie-ledgers-new-pulsar-bookie-2",
    ]
    assert "new-pulsar-zookeeper-data-new-pulsar-zookeeper-0" in names(store, "persistentvolumeclaims")
    assert len(names(store, "deployments.apps", "app.kubernetes.io/instance=old")) == 5  # cluster mode
    for name in ("old", "new"):
        assert store.get(MILVUS, NS, name)["status"]["status"] == "Healthy"


def test_pulsar_v3_needs_operator_1_1_2(store: Store) -> None:
    cluster = _start(store, operator_version="v1.1.1")
    try:
        cluster.settle()
        v3 = {"pulsar": {"inCluster": {"chartVersion": "pulsar-v3"}}}
        store.create(MILVUS, milvus("m", mode="cluster", dependencies=v3))
        cluster.settle()
        cr = store.get(MILVUS, NS, "m")
        assert cr["metadata"]["labels"]["milvus.io/operator-version"] == "v1.1.1"
        assert cr["status"]["status"] == "Unhealthy"
        stream = next(c for c in cr["status"]["conditions"] if c["type"] == "MsgStreamReady")
        assert stream["status"] == "False" and "pulsar-v3" in stream["message"] and "v1.1.2" in stream["message"]
        assert names(store, "statefulsets.apps", "app=pulsar") == []
        assert cluster.errors == []
    finally:
        cluster.stop()


def test_delete_with_pulsar_delete_removes_only_pulsar_pvcs_and_recreate_reuses_the_rest(
    store: Store, operator_sim: ClusterSim
) -> None:
    store.create(MILVUS, milvus("rel", mode="cluster"))
    operator_sim.settle()
    kept_sts = {n: store.get("statefulsets.apps", NS, n)["metadata"]["uid"] for n in ("rel-etcd", "rel-minio")}
    kept_pvcs = names(store, "persistentvolumeclaims", "app.kubernetes.io/instance=rel-etcd") + names(
        store, "persistentvolumeclaims", "release=rel-minio"
    )
    assert len(kept_pvcs) == 7
    pulsar_pvs = {p["spec"]["volumeName"] for p in store.list("persistentvolumeclaims", NS, "release=rel-pulsar")}
    assert len(pulsar_pvs) == 9

    retain = {"deletionPolicy": "Retain", "pvcDeletion": False}
    patch = {
        "spec": {
            "dependencies": {
                "etcd": {"inCluster": retain},
                "storage": {"inCluster": retain},
                "pulsar": {"inCluster": {"deletionPolicy": "Delete", "pvcDeletion": True}},
            }
        }
    }
    store.patch(MILVUS, NS, "rel", patch, "merge")
    seen, unsubscribe = record_statuses(store, MILVUS, "rel")
    store.delete(MILVUS, NS, "rel")
    operator_sim.settle()
    unsubscribe()

    assert store.try_get(MILVUS, NS, "rel") is None
    assert "Deleting" in seen
    assert names(store, "deployments.apps") == [] and store.try_get("services", NS, "rel-milvus") is None
    assert names(store, "statefulsets.apps") == ["rel-etcd", "rel-minio"]
    assert names(store, "persistentvolumeclaims") == sorted(kept_pvcs)
    assert names(store, "pods") == [
        *(f"rel-etcd-{i}" for i in range(3)),
        *(f"rel-minio-{i}" for i in range(4)),
    ]
    assert all(ready(p) for p in store.list("pods", NS))
    remaining_pvs = set(names(store, "persistentvolumes", namespace=None))
    assert remaining_pvs.isdisjoint(pulsar_pvs) and len(remaining_pvs) == 7

    v3 = {"pulsar": {"inCluster": {"chartVersion": "pulsar-v3", "values": None}}}
    store.create(MILVUS, milvus("rel", mode="cluster", dependencies=v3))
    operator_sim.settle()
    assert store.get(MILVUS, NS, "rel")["status"]["status"] == "Healthy"
    assert {n: store.get("statefulsets.apps", NS, n)["metadata"]["uid"] for n in kept_sts} == kept_sts
    assert _pulsar_images(store, "rel-pulsar") == {"apachepulsar/pulsar:3.0.7"}


def test_delete_with_default_policies_keeps_every_dependency(store: Store, operator_sim: ClusterSim) -> None:
    store.create(MILVUS, milvus("keep", mode="cluster"))
    operator_sim.settle()
    pvcs = names(store, "persistentvolumeclaims")
    store.delete(MILVUS, NS, "keep")
    operator_sim.settle()
    assert store.try_get(MILVUS, NS, "keep") is None
    assert names(store, "deployments.apps") == []
    assert names(store, "statefulsets.apps") == [
        "keep-etcd",
        "keep-minio",
        "keep-pulsar-bookie",
        "keep-pulsar-broker",
        "keep-pulsar-proxy",
        "keep-pulsar-zookeeper",
    ]
    assert names(store, "persistentvolumeclaims") == pvcs and len(pvcs) == 16


def test_operator_scaled_to_zero_does_nothing(store: Store, operator_sim: ClusterSim) -> None:
    store.patch("deployments.apps", "milvus-operator", "milvus-operator", {"spec": {"replicas": 0}}, "merge")
    operator_sim.settle()
    assert store.list("pods", "milvus-operator") == []
    store.create(MILVUS, milvus("idle"))
    operator_sim.settle()
    cr = store.get(MILVUS, NS, "idle")
    assert "finalizers" not in cr["metadata"] and "status" not in cr
    assert store.list("statefulsets.apps", NS) == []

    store.patch("deployments.apps", "milvus-operator", "milvus-operator", {"spec": {"replicas": 1}}, "merge")
    operator_sim.settle()
    assert store.get(MILVUS, NS, "idle")["status"]["status"] == "Healthy"


# ---- end to end through the API server ------------------------------------------------------


def test_kubernetes_client_watch_sees_pod_turn_ready(store: Store, sim: ClusterSim, tmp_path: Path) -> None:
    with KubeApiServer(store) as server:
        api = config.new_client_from_config(server.write_kubeconfig(str(tmp_path / "kubeconfig")))
        core = client.CoreV1Api(api)
        apps = client.AppsV1Api(api)
        apps.create_namespaced_stateful_set(NS, cast(Any, statefulset("e2e", replicas=1)))

        seen: list[tuple[str, bool]] = []
        w = watch.Watch()
        for event in w.stream(core.list_namespaced_pod, NS, label_selector="app=e2e", timeout_seconds=5):
            pod = event["object"]
            is_ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
            seen.append((pod.status.phase, is_ready))
            if is_ready:
                w.stop()
        assert seen[0] == ("Pending", False) and seen[-1] == ("Running", True), seen
        pvc = core.read_namespaced_persistent_volume_claim("data-e2e-0", NS)
        assert pvc.status is not None and pvc.spec is not None and pvc.metadata is not None
        assert pvc.status.phase == "Bound" and pvc.spec.volume_name == f"pvc-{pvc.metadata.uid}"
        sts = apps.read_namespaced_stateful_set("e2e", NS)
        assert sts.status is not None and sts.status.ready_replicas == 1
        api.close()


# ---- ReplicaSets, Jobs, GC, StorageClass, defaults ------------------------------------------


def job(name: str, **spec: Any) -> Obj:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "init", "image": "busybox"}]}},
            **spec,
        },
    }


def test_deployment_owns_a_replicaset_which_owns_the_pods(store: Store, sim: ClusterSim) -> None:
    deploy = store.create("deployments.apps", deployment("web", replicas=2))
    sim.settle()
    (rs,) = store.list("replicasets.apps", NS)
    template_hash = rs["metadata"]["labels"]["pod-template-hash"]
    assert rs["metadata"]["name"] == f"web-{template_hash}"
    assert rs["metadata"]["ownerReferences"][0]["uid"] == deploy["metadata"]["uid"]
    assert rs["metadata"]["ownerReferences"][0]["controller"] is True
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": template_hash}
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert rs["status"]["readyReplicas"] == rs["status"]["availableReplicas"] == 2
    for pod in store.list("pods", NS):
        assert pod["metadata"]["ownerReferences"][0]["kind"] == "ReplicaSet"
        assert pod["metadata"]["ownerReferences"][0]["uid"] == rs["metadata"]["uid"]
    live = store.get("deployments.apps", NS, "web")
    assert live["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert live["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
    }
    status = live["status"]
    assert status["observedGeneration"] == 1 and status["updatedReplicas"] == 2
    assert "unavailableReplicas" not in status
    conds = {c["type"]: c for c in status["conditions"]}
    assert conds["Available"]["status"] == "True" and conds["Available"]["reason"] == "MinimumReplicasAvailable"
    assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
    assert conds["Progressing"]["message"] == f'ReplicaSet "web-{template_hash}" has successfully progressed.'
    assert all(c["lastUpdateTime"] and c["lastTransitionTime"] for c in conds.values())


def test_recreate_strategy_removes_old_pods_before_new_ones(store: Store, sim: ClusterSim) -> None:
    body = deployment("rec", replicas=2)
    body["spec"]["strategy"] = {"type": "Recreate"}
    store.create("deployments.apps", body)
    sim.settle()
    old_pods = {p["metadata"]["name"] for p in store.list("pods", NS)}
    overlap: list[bool] = []

    def on_change(event: str, key: str, obj: Obj) -> None:
        if key == "pods" and event == "ADDED":
            overlap.append(bool(old_pods & {p["metadata"]["name"] for p in store.list("pods", NS)}))

    unsubscribe = store.subscribe(on_change)
    store.patch("deployments.apps", NS, "rec", {"spec": {"template": {"metadata": {"labels": {"v": "2"}}}}}, "merge")
    sim.settle()
    unsubscribe()
    assert overlap and not any(overlap)
    rss = {
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"]: rs
        for rs in store.list("replicasets.apps", NS)
    }
    assert rss["1"]["spec"]["replicas"] == 0 and rss["2"]["spec"]["replicas"] == 2
    assert (
        store.get("deployments.apps", NS, "rec")["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    )


def test_background_delete_of_a_deployment_cascades_through_the_replicaset(store: Store, sim: ClusterSim) -> None:
    store.create("deployments.apps", deployment("bg", replicas=2))
    sim.settle()
    store.delete("deployments.apps", NS, "bg")
    sim.settle()
    assert store.list("replicasets.apps", NS) == [] and store.list("pods", NS) == []


def test_foreground_delete_of_a_deployment_waits_for_replicasets_and_pods(store: Store, sim: ClusterSim) -> None:
    store.create("deployments.apps", deployment("fg", replicas=1))
    sim.settle()
    marked = store.delete("deployments.apps", NS, "fg", propagation_policy="Foreground")
    assert marked["metadata"]["finalizers"] == ["foregroundDeletion"]
    sim.settle()
    assert store.try_get("deployments.apps", NS, "fg") is None
    assert store.list("replicasets.apps", NS) == [] and store.list("pods", NS) == []


def test_job_defaults_selector_and_immutable_fields(store: Store) -> None:
    created = store.create("jobs.batch", job("init"))
    uid = created["metadata"]["uid"]
    spec = created["spec"]
    assert spec["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}
    assert spec["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": uid,
        "batch.kubernetes.io/job-name": "init",
        "controller-uid": uid,
        "job-name": "init",
    }
    assert (spec["parallelism"], spec["completions"], spec["backoffLimit"]) == (1, 1, 6)
    assert spec["completionMode"] == "NonIndexed" and spec["suspend"] is False
    assert spec["podReplacementPolicy"] == "TerminatingOrFailed" and "manualSelector" not in spec
    assert created["status"] == {}
    changed = copy.deepcopy(created)
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = "busybox:2"
    with pytest.raises(ApiError) as err:
        store.replace("jobs.batch", changed)
    assert err.value.code == 422
    assert 'Job.batch "init" is invalid: spec.template: Invalid value: ' in err.value.message
    assert err.value.message.endswith("field is immutable")
    bad = job("always")
    bad["spec"]["template"]["spec"].pop("restartPolicy")
    with pytest.raises(ApiError) as err:
        store.create("jobs.batch", bad)
    assert err.value.message == (
        'Job.batch "always" is invalid: spec.template.spec.restartPolicy: '
        'Unsupported value: "Always": supported values: "OnFailure", "Never"'
    )


def test_job_runs_a_pod_to_completion(store: Store, sim: ClusterSim) -> None:
    created = store.create("jobs.batch", job("init"))
    sim.settle()
    (pod,) = store.list("pods", NS)
    assert re.fullmatch(r"init-[a-z0-9]{5}", pod["metadata"]["name"])
    assert pod["metadata"]["ownerReferences"][0]["uid"] == created["metadata"]["uid"]
    assert pod["metadata"]["labels"]["job-name"] == "init"
    assert pod["status"]["phase"] == "Succeeded" and not ready(pod)
    (cs,) = pod["status"]["containerStatuses"]
    assert cs["state"]["terminated"]["exitCode"] == 0 and cs["state"]["terminated"]["reason"] == "Completed"
    assert cs["ready"] is False
    status = store.get("jobs.batch", NS, "init")["status"]
    assert status["succeeded"] == 1 and "active" not in status
    assert status["ready"] == 0 and status["terminating"] == 0 and status["uncountedTerminatedPods"] == {}
    assert status["startTime"] and status["completionTime"]
    assert [(c["type"], c["status"], c["reason"]) for c in status["conditions"]] == [
        ("SuccessCriteriaMet", "True", "CompletionsReached"),
        ("Complete", "True", "CompletionsReached"),
    ]
    store.delete("jobs.batch", NS, "init")
    sim.settle()
    assert store.list("pods", NS) == []


def test_service_defaults_and_immutable_cluster_ip(store: Store) -> None:
    svc = store.create(
        "services",
        {"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}},
        namespace=NS,
    )
    spec = svc["spec"]
    ip = spec["clusterIP"]
    parts = [int(x) for x in ip.split(".")]
    assert parts[0] == 10 and 96 <= parts[1] <= 111 and spec["clusterIPs"] == [ip]
    assert spec["ipFamilies"] == ["IPv4"] and spec["ipFamilyPolicy"] == "SingleStack"
    assert spec["sessionAffinity"] == "None" and spec["internalTrafficPolicy"] == "Cluster"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    headless = store.create(
        "services",
        {"metadata": {"name": "db"}, "spec": {"clusterIP": "None", "selector": {"app": "db"}}},
        namespace=NS,
    )
    assert headless["spec"]["clusterIPs"] == ["None"]
    again = copy.deepcopy(svc)  # an update without clusterIP keeps the allocated one
    del again["spec"]["clusterIP"], again["spec"]["clusterIPs"]
    again["metadata"]["labels"] = {"x": "y"}
    assert store.replace("services", again)["spec"]["clusterIP"] == ip
    moved = store.get("services", NS, "web")
    moved["spec"]["clusterIP"] = "10.96.200.200"
    moved["spec"]["clusterIPs"] = ["10.96.200.200"]
    with pytest.raises(ApiError) as err:
        store.replace("services", moved)
    assert err.value.message == (
        'Service "web" is invalid: spec.clusterIPs[0]: '
        'Invalid value: []string{"10.96.200.200"}: may not change once set'
    )


def test_default_storage_class_and_crd_and_default_service_account(store: Store, sim: ClusterSim) -> None:
    sim.settle()
    sc = store.get("storageclasses.storage.k8s.io", None, "standard")
    assert sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"] == "true"
    assert sc["reclaimPolicy"] == "Delete" and sc["volumeBindingMode"] == "Immediate"
    crd = store.get("customresourcedefinitions.apiextensions.k8s.io", None, "milvuses.milvus.io")
    assert crd["spec"]["names"]["plural"] == "milvuses"
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]}["Established"] == "True"
    assert store.try_get("serviceaccounts", NS, "default") is not None
    sim.set_reclaim_policy("Retain")
    assert store.get("storageclasses.storage.k8s.io", None, "standard")["reclaimPolicy"] == "Retain"
    store.create(
        "persistentvolumeclaims",
        {
            "metadata": {"name": "bare"},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        },
        namespace=NS,
    )
    sim.settle()
    pvc = store.get("persistentvolumeclaims", NS, "bare")
    assert pvc["spec"]["storageClassName"] == "standard" and pvc["status"]["phase"] == "Bound"
    pv = store.get("persistentvolumes", None, pvc["spec"]["volumeName"])
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    with pytest.raises(ApiError) as err:
        sc = store.get("storageclasses.storage.k8s.io", None, "standard")
        sc["reclaimPolicy"] = "Delete"
        store.replace("storageclasses.storage.k8s.io", sc)
    assert err.value.message.endswith("reclaimPolicy: Forbidden: updates to reclaimPolicy are forbidden.")


def test_pod_disruption_budget_status(store: Store, sim: ClusterSim) -> None:
    store.create("deployments.apps", deployment("pdbd", replicas=2))
    store.create(
        "poddisruptionbudgets.policy",
        {"metadata": {"name": "pdbd"}, "spec": {"maxUnavailable": 1, "selector": {"matchLabels": {"app": "pdbd"}}}},
        namespace=NS,
    )
    sim.settle()
    status = store.get("poddisruptionbudgets.policy", NS, "pdbd")["status"]
    assert (status["expectedPods"], status["currentHealthy"], status["desiredHealthy"]) == (2, 2, 1)
    assert status["disruptionsAllowed"] == 1 and status["observedGeneration"] == 1
    assert status["conditions"][0]["reason"] == "SufficientPods"


CHART = chart_path("4.2.58")
V2_VALUES = (
    "cluster.enabled=true",
    "pulsar.enabled=true",
    "pulsarv3.enabled=false",
    "etcd.replicaCount=1",
    "minio.mode=standalone",
)


def test_real_milvus_chart_with_pulsar_v2_settles(store: Store) -> None:
    args = [tools.helm(4), "template", "my-release", str(CHART)]
    for value in V2_VALUES:
        args += ["--set", value]
    rendered = subprocess.run(args, check=True, capture_output=True, text=True, timeout=120).stdout
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    by_kind = {(rt.api_version, rt.kind): rt.key for rt in RESOURCES.values()}
    cluster = _start(store, operator_version=None, pod_ready_seconds=0.01)
    try:
        for doc in docs:
            store.create(by_kind[(doc["apiVersion"], doc["kind"])], doc, namespace="default")
        cluster.settle(timeout=120)
        assert cluster.errors == []
        kinds = {d["kind"] for d in docs}
        assert {"Deployment", "StatefulSet", "Job", "ServiceAccount", "Role", "RoleBinding"} <= kinds
        for deploy in store.list("deployments.apps", "default"):
            conds = {c["type"]: c for c in deploy["status"]["conditions"]}
            assert conds["Available"]["status"] == "True", deploy["metadata"]["name"]
            assert conds["Progressing"]["reason"] == "NewReplicaSetAvailable"
            assert deploy["status"]["observedGeneration"] == deploy["metadata"]["generation"]
        for sts in store.list("statefulsets.apps", "default"):
            status = sts["status"]
            assert status.get("readyReplicas") == sts["spec"]["replicas"], sts["metadata"]["name"]
            assert status["currentRevision"] == status["updateRevision"]
        jobs = store.list("jobs.batch", "default")
        assert len(jobs) == 2
        for j in jobs:
            assert {c["type"]: c["status"] for c in j["status"]["conditions"]}["Complete"] == "True"
        for pod in store.list("pods", "default"):
            if (pod["metadata"]["ownerReferences"][0]["kind"]) == "Job":
                assert pod["status"]["phase"] == "Succeeded"
            else:
                assert ready(pod), pod["metadata"]["name"]
        _assert_pulsar_v2_claims(store)
        assert store.try_get("persistentvolumeclaims", "default", "data-my-release-etcd-0") is not None
        assert store.get("persistentvolumeclaims", "default", "my-release-minio")["status"]["phase"] == "Bound"
        _uninstall(store, docs, by_kind)
        cluster.settle(timeout=60)
        for key in ("pods", "replicasets.apps", "controllerrevisions.apps", "deployments.apps", "statefulsets.apps"):
            assert store.list(key, "default") == [], key
        assert store.try_get("persistentvolumeclaims", "default", "data-my-release-etcd-0") is not None
        assert store.try_get("persistentvolumeclaims", "default", "my-release-minio") is not None
        assert cluster.errors == []
    finally:
        cluster.stop()


def _uninstall(store: Store, docs: list[Obj], by_kind: dict[tuple[str, str], str]) -> None:
    """What `helm uninstall` does: delete every manifest object (background) but the kept ones."""
    for doc in docs:
        if (doc["metadata"].get("annotations") or {}).get("helm.sh/resource-policy") != "keep":
            store.delete(by_kind[(doc["apiVersion"], doc["kind"])], "default", doc["metadata"]["name"])


def _assert_pulsar_v2_claims(store: Store) -> None:
    for component in ("bookie", "zookeeper"):
        pvcs = store.list(
            "persistentvolumeclaims",
            "default",
            label_selector=f"app=pulsar,release=my-release,component={component}",
        )
        assert pvcs, component
        for pvc in pvcs:
            assert pvc["status"]["phase"] == "Bound"
            pv = store.get("persistentvolumes", None, pvc["spec"]["volumeName"])
            assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
