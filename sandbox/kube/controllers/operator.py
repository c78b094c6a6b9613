"""A simulated milvus-operator: reconciles ``milvuses.milvus.io`` (kind Milvus, v1beta1).

What it does, as zilliztech/milvus-operator does (pkg/controllers/milvus.go, milvus_controller.go):
- Runs as Deployment ``milvus-operator`` in its namespace (image
  ``milvusdb/milvus-operator:<version>``) and does nothing while that Deployment has no Ready pod.
- A live CR gets the finalizer ``milvus.milvus.io/finalizer`` and the label
  ``milvus.io/operator-version: <version>``; its status starts ``Pending``.
- Dependencies, each a "Helm release" made of StatefulSets (reused when they already exist,
  e.g. Retained from an earlier CR), unless ``spec.dependencies.<dep>.external``:
  etcd ``<name>-etcd``; MinIO ``<name>-minio``; Pulsar ``<name>-pulsar`` (zookeeper, bookie,
  broker, proxy; ``apachepulsar/pulsar:2.8.2`` for chartVersion pulsar-v2 or unset,
  ``3.0.7`` for pulsar-v3) when the message stream is Pulsar: ``msgStreamType`` defaults, like
  the operator's webhook, to ``rocksmq`` in standalone mode and ``pulsar`` in cluster mode.
- Once the dependencies are Ready: Deployments ``<name>-milvus-<component>`` and Service
  ``<name>-milvus`` (ports milvus 19530, metrics 9091). All Ready -> ``Healthy`` with
  ``MilvusReady`` True and ``status.endpoint``. pulsar-v3 on an operator older than v1.1.2 ->
  ``Unhealthy`` with a ``MsgStreamReady`` condition saying so (and no Pulsar is created).
- A deleted CR: status ``Deleting``; the Milvus Deployments and Service go; each dependency with
  ``inCluster.deletionPolicy: Delete`` loses its StatefulSets, and with ``pvcDeletion: true`` its
  PVCs (labels ``app.kubernetes.io/instance=<release>`` and ``release=<release>``); after
  ``operator_delete_seconds`` the finalizer is removed and the CR goes.
The Kubernetes garbage collector's part is here too: Deployments/Services controlled by a
Milvus that no longer exists are deleted (whether or not the operator runs).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

from sandbox.kube.controllers._base import (
    FOREGROUND,
    Context,
    Obj,
    controller_of,
    delete_quietly,
    deleting,
    now,
    owner_ref,
    pod_ready,
    selector_string,
    set_finalizers,
    write_status,
)

KEY = "milvuses.milvus.io"
OPERATOR_NAME = "milvus-operator"
FINALIZER = "milvus.milvus.io/finalizer"
VERSION_LABEL = "milvus.io/operator-version"
DEFAULT_MILVUS_IMAGE = "milvusdb/milvus:v2.5.10"
ETCD_IMAGE = "milvusdb/etcd:3.5.18-r1"
MINIO_IMAGE = "minio/minio:RELEASE.2023-03-20T20-16-18Z"
PULSAR_IMAGES = {"pulsar-v2": "apachepulsar/pulsar:2.8.2", "pulsar-v3": "apachepulsar/pulsar:3.0.7"}
PULSAR_V3_MIN_OPERATOR = (1, 1, 2)
CLUSTER_COMPONENTS = ("proxy", "mixcoord", "datanode", "querynode", "indexnode")
_SPEC_COMPONENT = {
    "standalone": "standalone",
    "proxy": "proxy",
    "mixcoord": "mixCoord",
    "datanode": "dataNode",
    "querynode": "queryNode",
    "indexnode": "indexNode",
}
_MILVUS_PORTS = [
    {"name": "milvus", "containerPort": 19530, "protocol": "TCP"},
    {"name": "metrics", "containerPort": 9091, "protocol": "TCP"},
]


def parse_version(version: str) -> tuple[int, ...]:
    """'v1.1.2' -> (1, 1, 2); pre-release suffixes are ignored."""
    core = version.lstrip("v").split("-", 1)[0].split("+", 1)[0]
    out = []
    for part in core.split("."):
        digits = "".join(ch for ch in part if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def _get(data: Any, *path: str) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


@dataclass
class Release:
    """One dependency as the operator installs it: a release of StatefulSets."""

    dep: str  # "etcd" | "storage" | "pulsar"
    name: str  # the release name, e.g. "<milvus>-pulsar"
    statefulsets: list[Obj]
    deletion_policy: str
    pvc_deletion: bool


class MilvusView:
    """Read-only accessors over a Milvus CR's spec (with the webhook's defaults applied)."""

    def __init__(self, cr: Obj) -> None:
        self.cr = cr
        self.name: str = cr["metadata"]["name"]
        self.namespace: str = cr["metadata"]["namespace"]
        self.spec: Obj = cr.get("spec") or {}

    @property
    def cluster(self) -> bool:
        return self.spec.get("mode") == "cluster"

    def dep(self, dep: str) -> Obj:
        return _get(self.spec, "dependencies", dep) or {}

    def external(self, dep: str) -> bool:
        return bool(self.dep(dep).get("external"))

    def in_cluster(self, dep: str) -> Obj:
        return self.dep(dep).get("inCluster") or {}

    def values(self, dep: str) -> Obj:
        return self.in_cluster(dep).get("values") or {}

    @property
    def msg_stream(self) -> str:
        explicit = _get(self.spec, "dependencies", "msgStreamType")
        return explicit or ("pulsar" if self.cluster else "rocksmq")

    @property
    def uses_pulsar(self) -> bool:
        return self.msg_stream == "pulsar" and not self.external("pulsar")

    @property
    def pulsar_chart(self) -> str:
        return self.in_cluster("pulsar").get("chartVersion") or "pulsar-v2"

    @property
    def image(self) -> str:
        return _get(self.spec, "components", "image") or DEFAULT_MILVUS_IMAGE

    @property
    def components(self) -> tuple[str, ...]:
        return CLUSTER_COMPONENTS if self.cluster else ("standalone",)

    def replicas(self, component: str) -> int:
        value = _get(self.spec, "components", _SPEC_COMPONENT[component], "replicas")
        return 1 if value is None else int(value)

    def labels(self, component: str | None = None) -> dict[str, str]:
        out = {"app.kubernetes.io/name": "milvus", "app.kubernetes.io/instance": self.name}
        if component:
            out["app.kubernetes.io/component"] = component
        return out


def _statefulset(
    view: MilvusView,
    release: str,
    name: str,
    selector: dict[str, str],
    labels: dict[str, str],
    container: Obj,
    claims: list[tuple[str, str]],
    replicas: int,
) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {
            "name": name,
            "namespace": view.namespace,
            "labels": {**labels, "app.kubernetes.io/managed-by": "Helm"},
            "annotations": {
                "meta.helm.sh/release-name": release,
                "meta.helm.sh/release-namespace": view.namespace,
            },
        },
        "spec": {
            "replicas": replicas,
            "serviceName": f"{name}-headless",
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": dict(selector)},
            "template": {"metadata": {"labels": dict(labels)}, "spec": {"containers": [container]}},
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": claim},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
                }
                for claim, size in claims
            ],
        },
    }


def _int(value: Any, default: int) -> int:
    return default if value is None else int(value)


def etcd_release(view: MilvusView) -> Release:
    release = f"{view.name}-etcd"
    selector = {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": release}
    replicas = _int(view.values("etcd").get("replicaCount"), 3 if view.cluster else 1)
    container = {"name": "etcd", "image": ETCD_IMAGE, "ports": [{"name": "client", "containerPort": 2379}]}
    sts = _statefulset(view, release, release, selector, selector, container, [("data", "10Gi")], replicas)
    return _release(view, "etcd", release, [sts])


def minio_release(view: MilvusView) -> Release:
    release = f"{view.name}-minio"
    selector = {"app": "minio", "release": release}
    replicas = _int(view.values("storage").get("replicas"), 4 if view.cluster else 1)
    container = {"name": "minio", "image": MINIO_IMAGE, "ports": [{"name": "http", "containerPort": 9000}]}
    sts = _statefulset(view, release, release, selector, selector, container, [("export", "20Gi")], replicas)
    return _release(view, "storage", release, [sts])


def pulsar_release(view: MilvusView) -> Release:
    release = f"{view.name}-pulsar"
    image = PULSAR_IMAGES.get(view.pulsar_chart, PULSAR_IMAGES["pulsar-v2"])
    values = view.values("pulsar")
    parts = [
        ("zookeeper", "zookeeper", [("zookeeper-data", "20Gi")], 3),
        ("bookie", "bookkeeper", [("bookie-journal", "100Gi"), ("bookie-ledgers", "200Gi")], 3),
        ("broker", "broker", [], 1),
        ("proxy", "proxy", [], 1),
    ]
    statefulsets = []
    for component, values_key, claims, default in parts:
        selector = {"app": "pulsar", "release": release, "component": component}
        labels = {**selector, "cluster": release}
        replicas = _int(_get(values, values_key, "replicaCount"), default)
        container = {"name": f"{release}-{component}", "image": image}
        named_claims = [(f"{release}-{claim}", size) for claim, size in claims]
        statefulsets.append(
            _statefulset(view, release, f"{release}-{component}", selector, labels, container, named_claims, replicas)
        )
    return _release(view, "pulsar", release, statefulsets)


def _release(view: MilvusView, dep: str, release: str, statefulsets: list[Obj]) -> Release:
    in_cluster = view.in_cluster(dep)
    return Release(
        dep=dep,
        name=release,
        statefulsets=statefulsets,
        deletion_policy=in_cluster.get("deletionPolicy") or "Retain",
        pvc_deletion=bool(in_cluster.get("pvcDeletion")),
    )


def _condition(prev: Obj | None, ctype: str, ok: bool, reason: str, message: str) -> Obj:
    value = "True" if ok else "False"
    since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now()
    return {"type": ctype, "status": value, "reason": reason, "message": message, "lastTransitionTime": since}


class MilvusOperator:
    """Reconciles Milvus custom resources while the operator Deployment has a Ready pod."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.version = ctx.config.operator_version or ""
        self.namespace = ctx.config.operator_namespace
        self._finalize_at: dict[str, float] = {}  # CR uid -> when its finalizer goes

    # -- the operator's own Deployment ---------------------------------------------------
    def install(self) -> None:
        self.ctx.store.ensure_namespace(self.namespace)
        if self.ctx.store.try_get("deployments.apps", self.namespace, OPERATOR_NAME) is not None:
            return
        labels = {"app.kubernetes.io/name": OPERATOR_NAME, "app.kubernetes.io/instance": OPERATOR_NAME}
        deploy = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": OPERATOR_NAME,
                "namespace": self.namespace,
                "labels": {**labels, "app.kubernetes.io/version": self.version},
            },
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": OPERATOR_NAME,
                        "containers": [
                            {
                                "name": "manager",
                                "image": f"milvusdb/milvus-operator:{self.version}",
                                "args": ["-namespace", self.namespace, "-name", OPERATOR_NAME],
                            }
                        ],
                    },
                },
            },
        }
        self.ctx.store.create("deployments.apps", deploy, namespace=self.namespace)

    def active(self) -> bool:
        deploy = self.ctx.store.try_get("deployments.apps", self.namespace, OPERATOR_NAME)
        if deploy is None or deleting(deploy):
            return False
        selector = selector_string(deploy["spec"]["selector"].get("matchLabels") or {})
        return any(pod_ready(p) for p in self.ctx.store.list("pods", self.namespace, label_selector=selector))

    # -- reconcile -------------------------------------------------------------------------
    def reconcile(self, namespace: str, name: str) -> None:
        self._collect_garbage(namespace, name, self.ctx.store.try_get(KEY, namespace, name))
        cr = self.ctx.store.try_get(KEY, namespace, name)
        if cr is None or not self.active():
            return
        if deleting(cr):
            self._finalize(cr)
        else:
            self._reconcile_live(cr)

    def _collect_garbage(self, namespace: str, name: str, cr: Obj | None) -> None:
        """The garbage collector: dependents of a gone CR go; a foreground delete waits for them."""
        uid = cr["metadata"]["uid"] if cr is not None else None
        foreground = cr is not None and deleting(cr) and FOREGROUND in (cr["metadata"].get("finalizers") or [])
        for key in ("deployments.apps", "services"):
            for obj in self.ctx.store.list(key, namespace):
                ref = controller_of(obj)
                if not ref or ref.get("kind") != "Milvus" or ref.get("name") != name:
                    continue
                if ref.get("uid") != uid or foreground:
                    delete_quietly(self.ctx.store, key, namespace, obj["metadata"]["name"])
        if cr is not None and foreground:
            finalizers = cr["metadata"]["finalizers"]
            set_finalizers(self.ctx.store, KEY, cr, [f for f in finalizers if f != FOREGROUND])

    def _reconcile_live(self, cr: Obj) -> None:
        cr = self._ensure_metadata(cr)
        view = MilvusView(cr)
        blocked = self._pulsar_blocked(view)
        releases = self._releases(view, include_blocked=False)
        for release in releases:
            for sts in release.statefulsets:
                self._ensure_statefulset(sts)
        conditions = self._dependency_conditions(view, releases, blocked)
        milvus_ready = False
        if all(c["status"] == "True" for c in conditions):
            self._ensure_milvus(view)
            milvus_ready = self._milvus_ready(view)
        self._write_status(view, conditions, milvus_ready, blocked)

    def _ensure_metadata(self, cr: Obj) -> Obj:
        meta = cr["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        labels = dict(meta.get("labels") or {})
        if FINALIZER in finalizers and labels.get(VERSION_LABEL) == self.version:
            return cr
        new = copy.deepcopy(cr)
        if FINALIZER not in finalizers:
            new["metadata"]["finalizers"] = [*finalizers, FINALIZER]
        new["metadata"]["labels"] = {**labels, VERSION_LABEL: self.version}
        return self.ctx.store.replace(KEY, new)

    def _pulsar_blocked(self, view: MilvusView) -> str | None:
        """Why the requested Pulsar chart cannot be installed by this operator, if it cannot."""
        too_old = parse_version(self.version) < PULSAR_V3_MIN_OPERATOR
        if view.uses_pulsar and view.pulsar_chart == "pulsar-v3" and too_old:
            return (
                f"chartVersion pulsar-v3 needs milvus-operator >= v1.1.2; "
                f"this operator is {self.version}: upgrade the operator first"
            )
        return None

    def _releases(self, view: MilvusView, *, include_blocked: bool) -> list[Release]:
        releases = []
        if not view.external("etcd"):
            releases.append(etcd_release(view))
        if not view.external("storage"):
            releases.append(minio_release(view))
        if view.uses_pulsar and (include_blocked or self._pulsar_blocked(view) is None):
            releases.append(pulsar_release(view))
        return releases

    def _ensure_statefulset(self, sts: Obj) -> None:
        meta = sts["metadata"]
        if self.ctx.store.try_get("statefulsets.apps", meta["namespace"], meta["name"]) is None:
            self.ctx.store.create("statefulsets.apps", sts, namespace=meta["namespace"])

    def _release_ready(self, release: Release) -> bool:
        for sts in release.statefulsets:
            meta = sts["metadata"]
            live = self.ctx.store.try_get("statefulsets.apps", meta["namespace"], meta["name"])
            if live is None or deleting(live):
                return False
            status = live.get("status") or {}
            if status.get("readyReplicas", 0) < live["spec"].get("replicas", 1):
                return False
        return True

    def _dependency_conditions(self, view: MilvusView, releases: list[Release], blocked: str | None) -> list[Obj]:
        prev = {c["type"]: c for c in (view.cr.get("status") or {}).get("conditions") or []}
        by_dep = {r.dep: r for r in releases}
        out = []
        for dep, ctype, label in (
            ("etcd", "EtcdReady", "Etcd"),
            ("storage", "StorageReady", "Storage"),
            ("pulsar", "MsgStreamReady", "MsgStream"),
        ):
            release = by_dep.get(dep)
            ok = release is None or self._release_ready(release)
            message = f"{label} is ready" if ok else f"{label} pods are not all ready"
            if dep == "pulsar" and blocked is not None:
                ok, message = False, blocked
            reason = f"{label}Ready" if ok else f"{label}NotReady"
            out.append(_condition(prev.get(ctype), ctype, ok, reason, message))
        return out

    # -- Milvus itself ---------------------------------------------------------------------
    def _deployment(self, view: MilvusView, component: str) -> Obj:
        labels = view.labels(component)
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": f"{view.name}-milvus-{component}",
                "namespace": view.namespace,
                "labels": {**labels, "app.kubernetes.io/managed-by": "milvus-operator"},
                "ownerReferences": [owner_ref(view.cr)],
            },
            "spec": {
                "replicas": view.replicas(component),
                "selector": {"matchLabels": dict(labels)},
                "template": {
                    "metadata": {"labels": dict(labels)},
                    "spec": {
                        "containers": [
                            {
                                "name": "milvus",
                                "image": view.image,
                                "args": ["milvus", "run", component],
                                "ports": copy.deepcopy(_MILVUS_PORTS),
                            }
                        ]
                    },
                },
            },
        }

    def _ensure_milvus(self, view: MilvusView) -> None:
        for component in view.components:
            desired = self._deployment(view, component)
            live = self.ctx.store.try_get("deployments.apps", view.namespace, desired["metadata"]["name"])
            if live is None:
                self.ctx.store.create("deployments.apps", desired, namespace=view.namespace)
            elif not deleting(live) and live["spec"] != {**live["spec"], **desired["spec"]}:
                updated = copy.deepcopy(live)
                updated["spec"].update(desired["spec"])
                self.ctx.store.replace("deployments.apps", updated)
        if self.ctx.store.try_get("services", view.namespace, f"{view.name}-milvus") is None:
            self.ctx.store.create("services", self._service(view), namespace=view.namespace)

    def _service(self, view: MilvusView) -> Obj:
        front = "proxy" if view.cluster else "standalone"
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": f"{view.name}-milvus",
                "namespace": view.namespace,
                "labels": view.labels(),
                "ownerReferences": [owner_ref(view.cr)],
            },
            "spec": {
                "type": "ClusterIP",
                "selector": view.labels(front),
                "ports": [
                    {"name": "milvus", "port": 19530, "protocol": "TCP", "targetPort": "milvus"},
                    {"name": "metrics", "port": 9091, "protocol": "TCP", "targetPort": "metrics"},
                ],
            },
        }

    def _milvus_ready(self, view: MilvusView) -> bool:
        for component in view.components:
            live = self.ctx.store.try_get("deployments.apps", view.namespace, f"{view.name}-milvus-{component}")
            if live is None:
                return False
            status = live.get("status") or {}
            want = live["spec"].get("replicas", 1)
            if status.get("readyReplicas", 0) < want or status.get("replicas", 0) != want:
                return False
        return True

    def _write_status(self, view: MilvusView, conditions: list[Obj], milvus_ready: bool, blocked: str | None) -> None:
        old = view.cr.get("status") or {}
        prev = {c["type"]: c for c in old.get("conditions") or []}
        message = "All Milvus components are healthy" if milvus_ready else "Milvus components are not all ready"
        reason = "ReasonMilvusHealthy" if milvus_ready else "MilvusComponentNotHealthy"
        conditions = [
            *conditions,
            _condition(prev.get("MilvusReady"), "MilvusReady", milvus_ready, reason, message),
        ]
        if milvus_ready:
            state = "Healthy"
        elif blocked is not None or old.get("status") in ("Healthy", "Unhealthy"):
            state = "Unhealthy"
        else:
            state = "Pending"
        status: Obj = {
            "status": state,
            "conditions": conditions,
            "observedGeneration": view.cr["metadata"].get("generation", 1),
        }
        if self.ctx.store.try_get("services", view.namespace, f"{view.name}-milvus") is not None:
            status["endpoint"] = f"{view.name}-milvus.{view.namespace}:19530"
            status["currentImage"] = view.image
        write_status(self.ctx.store, KEY, view.cr, status)

    # -- deletion --------------------------------------------------------------------------
    def _finalize(self, cr: Obj) -> None:
        meta = cr["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if FINALIZER not in finalizers:
            return
        uid = meta["uid"]
        request = (KEY, meta["namespace"], meta["name"])
        due = self._finalize_at.get(uid)
        if due is None:
            self._tear_down(cr)
            self._finalize_at[uid] = time.monotonic() + self.ctx.config.operator_delete_seconds
            self.ctx.schedule(self.ctx.config.operator_delete_seconds, request)
            return
        remaining = due - time.monotonic()
        if remaining > 0:
            self.ctx.schedule(remaining, request)
            return
        set_finalizers(self.ctx.store, KEY, cr, [f for f in finalizers if f != FINALIZER])
        self._finalize_at.pop(uid, None)

    def _tear_down(self, cr: Obj) -> None:
        view = MilvusView(cr)
        status = copy.deepcopy(cr.get("status") or {})
        status["status"] = "Deleting"
        write_status(self.ctx.store, KEY, cr, status)
        for component in (*CLUSTER_COMPONENTS, "standalone"):
            delete_quietly(self.ctx.store, "deployments.apps", view.namespace, f"{view.name}-milvus-{component}")
        delete_quietly(self.ctx.store, "services", view.namespace, f"{view.name}-milvus")
        for release in self._releases(view, include_blocked=True):
            if release.deletion_policy != "Delete":
                continue
            for sts in release.statefulsets:
                delete_quietly(self.ctx.store, "statefulsets.apps", view.namespace, sts["metadata"]["name"])
            if release.pvc_deletion:
                for label in ("app.kubernetes.io/instance", "release"):
                    selector = f"{label}={release.name}"
                    for pvc in self.ctx.store.list("persistentvolumeclaims", view.namespace, label_selector=selector):
                        delete_quietly(
                            self.ctx.store, "persistentvolumeclaims", view.namespace, pvc["metadata"]["name"]
                        )
