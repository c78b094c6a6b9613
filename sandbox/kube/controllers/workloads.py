"""StatefulSet, Deployment and ReplicaSet controllers (apps/v1).

StatefulSet: pods ``<sts>-<i>`` for ``i < spec.replicas`` (labels ``controller-revision-hash``,
``statefulset.kubernetes.io/pod-name``, ``apps.kubernetes.io/pod-index``); before a pod, one PVC
per ``spec.volumeClaimTemplates`` entry named ``<template>-<sts>-<i>`` (labels: the template's
labels merged with ``spec.selector.matchLabels``), never deleted by this controller (with
``persistentVolumeClaimRetentionPolicy.whenDeleted: Delete`` the claims are owned by the
StatefulSet, so the garbage collector takes them with it). A PVC that is being deleted blocks its
pod until it is gone, then a fresh one is made. ``OrderedReady`` (the default) creates one pod at
a time and waits for it to be Ready; ``Parallel`` creates them all. A template change rolls pods
(highest ordinal first, one at a time, only while all are Ready) unless ``OnDelete``. Each
template revision is kept as ControllerRevision ``<sts>-<hash>``; status has observedGeneration,
the replica counters, currentRevision/updateRevision and collisionCount.

ReplicaSet: ``spec.replicas`` active pods ``<rs>-<5 random>`` (generateName), excess ones deleted
unready/newest first; status replicas, fullyLabeledReplicas, readyReplicas, availableReplicas,
observedGeneration.

Deployment: ReplicaSet ``<deploy>-<pod-template-hash>`` per template (labels, selector and template
get ``pod-template-hash``; annotations ``deployment.kubernetes.io/revision`` (also on the
Deployment), ``desired-replicas``, ``max-replicas``). RollingUpdate follows maxSurge/maxUnavailable
(25%/25% by default): the new ReplicaSet grows within the surge, old ones shrink as long as enough
pods stay available. Recreate scales old ReplicaSets to 0 and waits for their pods to go before
the new one. Old ReplicaSets beyond ``revisionHistoryLimit`` are deleted. Status: the counters
(Go ``omitempty``), Available (MinimumReplicasAvailable) and Progressing (ReplicaSetUpdated, then
NewReplicaSetAvailable) -- what Helm 3's ``--wait`` (newest ReplicaSet's readyReplicas) and Helm 4's
kstatus (observedGeneration, counters, conditions) read.

Controllers only create and adopt (matching orphans get a controller reference); dependents of a
gone or foreground-deleted owner are the garbage collector's job (``gc.py``).
"""

from __future__ import annotations

import copy
from typing import Any

from sandbox.kube.controllers._base import (
    PVC_PROTECTION,
    Context,
    Obj,
    controller_of,
    delete_quietly,
    deleting,
    drop_zero,
    now,
    owned_by_name,
    owner_ref,
    pod_from_template,
    pod_ready,
    short_hash,
    write_status,
)
from sandbox.kube.store import ApiError


def _template_hash(template: Obj, length: int) -> str:
    return short_hash(template, length)


class _OwnerBase:
    kind = ""
    key = ""
    child_key = "pods"

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _owned_pods(self, namespace: str, name: str, owner: Obj | None) -> list[Obj]:
        """Live children (``child_key``) controlled by this owner (by uid), adopting matching orphans.

        Children of a gone owner are left to the garbage collector (``gc.py``)."""
        if owner is None or deleting(owner):
            return []
        uid = owner["metadata"]["uid"]
        children = self.ctx.store.list(self.child_key, namespace)
        live = self._adopt(owner, children)
        live += [c for c in children if (controller_of(c) or {}).get("uid") == uid and not deleting(c)]
        return live

    def _adoptable(self, owner: Obj, pod: Obj) -> bool:
        selector = (owner["spec"].get("selector") or {}).get("matchLabels") or {}
        labels = pod["metadata"].get("labels") or {}
        return bool(selector) and all(labels.get(k) == v for k, v in selector.items())

    def _adopt(self, owner: Obj, pods: list[Obj]) -> list[Obj]:
        """Take over orphaned pods that match the selector (e.g. left by an Orphan delete)."""
        adopted = []
        for pod in pods:
            if controller_of(pod) is not None or deleting(pod) or not self._adoptable(owner, pod):
                continue
            claimed = copy.deepcopy(pod)
            claimed["metadata"]["ownerReferences"] = [
                *(pod["metadata"].get("ownerReferences") or []),
                owner_ref(owner),
            ]
            adopted.append(self.ctx.store.replace(self.child_key, claimed))
        return adopted

    def _event(self, owner: Obj, reason: str, message: str) -> None:
        self.ctx.record_event(owner, reason, message, component=f"{self.kind.lower()}-controller")


class StatefulSetController(_OwnerBase):
    kind = "StatefulSet"
    key = "statefulsets.apps"

    def _adoptable(self, owner: Obj, pod: Obj) -> bool:
        name = owner["metadata"]["name"]
        suffix = pod["metadata"]["name"][len(name) + 1 :]
        return pod["metadata"]["name"].startswith(f"{name}-") and suffix.isdigit() and super()._adoptable(owner, pod)

    def reconcile(self, namespace: str, name: str) -> None:
        sts = self.ctx.store.try_get(self.key, namespace, name)
        pods = self._owned_pods(namespace, name, sts)
        if sts is None or deleting(sts):
            return
        spec = sts["spec"]
        revision = f"{name}-{_template_hash(spec['template'], 10)}"
        replicas = int(spec.get("replicas", 1))
        parallel = spec.get("podManagementPolicy") == "Parallel"
        by_ordinal: dict[int, Obj] = {}
        for pod in sorted(pods, key=lambda p: self._ordinal(name, p), reverse=True):
            ordinal = self._ordinal(name, pod)
            if 0 <= ordinal < replicas:
                by_ordinal[ordinal] = pod
            else:  # scale down (highest ordinal first) and strays
                self._delete_pod(sts, pod)
        self._ensure_revision(sts, revision)
        self._create_missing(sts, by_ordinal, replicas, revision, parallel)
        self._roll(sts, by_ordinal, revision)
        self._update_status(sts, revision)

    def _ensure_revision(self, sts: Obj, revision: str) -> None:
        """The ControllerRevision ``<sts>-<hash>`` holding the template (what rollout history reads)."""
        meta = sts["metadata"]
        revisions = [
            r
            for r in self.ctx.store.list("controllerrevisions.apps", meta["namespace"])
            if (controller_of(r) or {}).get("uid") == meta["uid"]
        ]
        if any(r["metadata"]["name"] == revision for r in revisions):
            return
        template = copy.deepcopy(sts["spec"]["template"])
        template["$patch"] = "replace"
        labels = dict((sts["spec"].get("selector") or {}).get("matchLabels") or {})
        labels["controller.kubernetes.io/hash"] = revision[len(meta["name"]) + 1 :]
        body: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ControllerRevision",
            "metadata": {
                "name": revision,
                "namespace": meta["namespace"],
                "labels": labels,
                "ownerReferences": [owner_ref(sts)],
            },
            "data": {"spec": {"template": template}},
            "revision": max([int(r.get("revision", 0)) for r in revisions] + [0]) + 1,
        }
        try:
            self.ctx.store.create("controllerrevisions.apps", body, namespace=meta["namespace"])
        except ApiError as exc:
            if exc.code != 409:
                raise

    @staticmethod
    def _ordinal(name: str, pod: Obj) -> int:
        suffix = pod["metadata"]["name"][len(name) + 1 :]
        return int(suffix) if suffix.isdigit() else -1

    def _create_missing(
        self, sts: Obj, by_ordinal: dict[int, Obj], replicas: int, revision: str, parallel: bool
    ) -> None:
        for ordinal in range(replicas):
            pod = by_ordinal.get(ordinal)
            if pod is not None:
                if not parallel and not pod_ready(pod):
                    return
                continue
            if not self._ensure_claims(sts, ordinal):
                if parallel:
                    continue
                return
            by_ordinal[ordinal] = self._create_pod(sts, ordinal, revision)
            if not parallel:
                return

    def _claims(self, sts: Obj, ordinal: int) -> list[Obj]:
        spec = sts["spec"]
        meta = sts["metadata"]
        claims = []
        for template in spec.get("volumeClaimTemplates") or []:
            tmeta = template.get("metadata") or {}
            tspec = template.get("spec") or {}
            labels = dict(tmeta.get("labels") or {})
            labels.update((spec.get("selector") or {}).get("matchLabels") or {})
            claim_spec: Obj = {
                "accessModes": tspec.get("accessModes") or ["ReadWriteOnce"],
                "resources": copy.deepcopy(tspec.get("resources") or {"requests": {"storage": "1Gi"}}),
                "volumeMode": tspec.get("volumeMode") or "Filesystem",
            }
            if tspec.get("storageClassName") is not None:  # unset: the default class is assigned
                claim_spec["storageClassName"] = tspec["storageClassName"]
            claims.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolumeClaim",
                    "metadata": {
                        "name": f"{tmeta['name']}-{meta['name']}-{ordinal}",
                        "namespace": meta["namespace"],
                        "labels": labels,
                        "annotations": dict(tmeta.get("annotations") or {}),
                        "finalizers": [PVC_PROTECTION],
                        **self._claim_owners(sts),
                    },
                    "spec": claim_spec,
                }
            )
        return claims

    @staticmethod
    def _claim_owners(sts: Obj) -> Obj:
        """persistentVolumeClaimRetentionPolicy.whenDeleted=Delete: the StatefulSet owns its claims."""
        policy = sts["spec"].get("persistentVolumeClaimRetentionPolicy") or {}
        if policy.get("whenDeleted") != "Delete":
            return {}
        return {"ownerReferences": [owner_ref(sts)]}

    def _ensure_claims(self, sts: Obj, ordinal: int) -> bool:
        """Create the pod's missing PVCs; False while one of them is still being deleted."""
        ok = True
        for claim in self._claims(sts, ordinal):
            ns, cname = claim["metadata"]["namespace"], claim["metadata"]["name"]
            existing = self.ctx.store.try_get("persistentvolumeclaims", ns, cname)
            if existing is None:
                self.ctx.store.create("persistentvolumeclaims", claim, namespace=ns)
                self._event(
                    sts,
                    "SuccessfulCreate",
                    f"create Claim {cname} Pod {sts['metadata']['name']}-{ordinal} "
                    f"in StatefulSet {sts['metadata']['name']} success",
                )
            elif deleting(existing):
                ok = False
        return ok

    def _create_pod(self, sts: Obj, ordinal: int, revision: str) -> Obj:
        meta = sts["metadata"]
        template = copy.deepcopy(sts["spec"]["template"])
        tmeta = template.get("metadata") or {}
        pod_name = f"{meta['name']}-{ordinal}"
        labels = dict(tmeta.get("labels") or {})
        labels.update(
            {
                "controller-revision-hash": revision,
                "statefulset.kubernetes.io/pod-name": pod_name,
                "apps.kubernetes.io/pod-index": str(ordinal),
            }
        )
        pod_spec = template.get("spec") or {}
        volumes = [v for v in pod_spec.get("volumes") or []]
        for claim_template in sts["spec"].get("volumeClaimTemplates") or []:
            vname = claim_template["metadata"]["name"]
            volumes = [v for v in volumes if v.get("name") != vname]
            volumes.append({"name": vname, "persistentVolumeClaim": {"claimName": f"{vname}-{meta['name']}-{ordinal}"}})
        if volumes:
            pod_spec["volumes"] = volumes
        pod_spec["hostname"] = pod_name
        if sts["spec"].get("serviceName"):
            pod_spec["subdomain"] = sts["spec"]["serviceName"]
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": pod_name,
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner_ref(sts)],
            },
            "spec": pod_spec,
        }
        created = self.ctx.store.create("pods", pod, namespace=meta["namespace"])
        self._event(sts, "SuccessfulCreate", f"create Pod {pod_name} in StatefulSet {meta['name']} successful")
        return created

    def _delete_pod(self, sts: Obj, pod: Obj) -> None:
        name = pod["metadata"]["name"]
        delete_quietly(self.ctx.store, "pods", sts["metadata"]["namespace"], name)
        self._event(sts, "SuccessfulDelete", f"delete Pod {name} in StatefulSet {sts['metadata']['name']} successful")

    def _roll(self, sts: Obj, by_ordinal: dict[int, Obj], revision: str) -> None:
        strategy = (sts["spec"].get("updateStrategy") or {}).get("type", "RollingUpdate")
        if strategy == "OnDelete" or not all(pod_ready(p) for p in by_ordinal.values()):
            return
        outdated = [
            o for o, p in by_ordinal.items() if p["metadata"]["labels"].get("controller-revision-hash") != revision
        ]
        if outdated:
            self._delete_pod(sts, by_ordinal.pop(max(outdated)))

    def _update_status(self, sts: Obj, revision: str) -> None:
        name = sts["metadata"]["name"]
        shared = self.ctx.store.list_shared("pods", sts["metadata"]["namespace"])  # read only
        pods = [p for p in owned_by_name(shared, self.kind, name)]
        pods = [p for p in pods if p["metadata"]["ownerReferences"][0].get("uid") == sts["metadata"]["uid"]]
        ready = sum(1 for p in pods if pod_ready(p))
        current = sum(1 for p in pods if p["metadata"]["labels"].get("controller-revision-hash") == revision)
        status = drop_zero(
            {
                "observedGeneration": sts["metadata"].get("generation", 1),
                "replicas": len(pods),
                "readyReplicas": ready,
                "currentReplicas": current,
                "updatedReplicas": current,
                "availableReplicas": ready,
                "currentRevision": revision,
                "updateRevision": revision,
                "collisionCount": 0,
            },
            keep=("replicas", "availableReplicas", "collisionCount"),
        )
        write_status(self.ctx.store, self.key, sts, status)


class ReplicaSetController(_OwnerBase):
    """apps/v1 ReplicaSet: ``spec.replicas`` pods named ``<rs>-<5 random>`` (generateName)."""

    kind = "ReplicaSet"
    key = "replicasets.apps"

    def reconcile(self, namespace: str, name: str) -> None:
        rs = self.ctx.store.try_get(self.key, namespace, name)
        if rs is None or deleting(rs):
            return
        pods = [p for p in self._owned_pods(namespace, name, rs) if _active(p)]
        replicas = int(rs["spec"].get("replicas", 1))
        if len(pods) > replicas:
            # the real controller deletes unready and newest pods first
            pods.sort(key=lambda p: (pod_ready(p), p["metadata"].get("creationTimestamp") or ""), reverse=True)
            for victim in pods[replicas:]:
                delete_quietly(self.ctx.store, "pods", namespace, victim["metadata"]["name"])
                self._event(rs, "SuccessfulDelete", f"Deleted pod: {victim['metadata']['name']}")
            pods = pods[:replicas]
        while len(pods) < replicas:
            pods.append(self._create_pod(rs))
        ready = sum(1 for p in pods if pod_ready(p))
        status = drop_zero(
            {
                "replicas": len(pods),
                "fullyLabeledReplicas": len(pods),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "observedGeneration": rs["metadata"].get("generation", 1),
            },
            keep=("replicas",),
        )
        write_status(self.ctx.store, self.key, rs, status)

    def _create_pod(self, rs: Obj) -> Obj:
        created = self.ctx.store.create("pods", pod_from_template(rs), namespace=rs["metadata"]["namespace"])
        self._event(rs, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}")
        return created


REVISION = "deployment.kubernetes.io/revision"
HASH_LABEL = "pod-template-hash"


def _percent(value: Any, total: int, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total
        return -(-scaled // 100) if round_up else scaled // 100
    return int(value or 0)


def _without_hash(template: Obj) -> Obj:
    out = copy.deepcopy(template)
    ((out.get("metadata") or {}).get("labels") or {}).pop(HASH_LABEL, None)
    return out


class DeploymentController(_OwnerBase):
    """apps/v1 Deployment -> ReplicaSets ``<deploy>-<pod-template-hash>`` (RollingUpdate/Recreate)."""

    kind = "Deployment"
    key = "deployments.apps"
    child_key = "replicasets.apps"

    def reconcile(self, namespace: str, name: str) -> None:
        deploy = self.ctx.store.try_get(self.key, namespace, name)
        if deploy is None or deleting(deploy):
            return
        spec = deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        owned = self._owned_pods(namespace, name, deploy)
        template = spec["template"]
        new = next((rs for rs in owned if _without_hash(rs["spec"].get("template") or {}) == template), None)
        olds = sorted((rs for rs in owned if rs is not new), key=lambda rs: _revision(rs))
        max_surge, max_unavailable = self._limits(deploy, replicas)
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if spec.get("paused"):
            self._update_status(deploy, new, olds, replicas, max_unavailable)
            return
        if recreate:
            for rs in olds:
                self._scale(rs, 0, deploy, max_surge)
            if any(self._pods_of(rs) for rs in olds):
                self._update_status(deploy, new, olds, replicas, max_unavailable)
                return
            new = self._ensure_new(deploy, new, olds, replicas, max_surge)
            new = self._scale(new, replicas, deploy, max_surge)
        else:
            current = sum(int(rs["spec"].get("replicas", 0)) for rs in olds)
            if new is None:
                want = max(min(replicas, replicas + max_surge - current), 0) if olds else replicas
                new = self._ensure_new(deploy, None, olds, want, max_surge)
            else:
                new = self._ensure_new(deploy, new, olds, int(new["spec"].get("replicas", 0)), max_surge)
                total = current + int(new["spec"].get("replicas", 0))
                room = replicas + max_surge - total
                target = replicas if not olds else min(replicas, int(new["spec"].get("replicas", 0)) + max(room, 0))
                if int(new["spec"].get("replicas", 0)) > replicas:
                    target = replicas
                new = self._scale(new, target, deploy, max_surge)
            olds = self._scale_down_olds(deploy, new, olds, replicas, max_unavailable, max_surge)
        self._cleanup(deploy, olds)
        self._update_status(deploy, new, olds, replicas, max_unavailable)

    @staticmethod
    def _limits(deploy: Obj, replicas: int) -> tuple[int, int]:
        rolling = (deploy["spec"].get("strategy") or {}).get("rollingUpdate") or {}
        if (deploy["spec"].get("strategy") or {}).get("type") == "Recreate":
            return 0, replicas
        surge = _percent(rolling.get("maxSurge", "25%"), replicas, round_up=True)
        unavailable = _percent(rolling.get("maxUnavailable", "25%"), replicas, round_up=False)
        if surge == 0 and unavailable == 0:
            unavailable = 1
        return surge, min(unavailable, replicas)

    def _pods_of(self, rs: Obj) -> list[Obj]:
        uid = rs["metadata"]["uid"]
        return [
            p
            for p in self.ctx.store.list("pods", rs["metadata"]["namespace"])
            if (controller_of(p) or {}).get("uid") == uid and _active(p)
        ]

    def _ensure_new(self, deploy: Obj, new: Obj | None, olds: list[Obj], replicas: int, max_surge: int) -> Obj:
        meta = deploy["metadata"]
        revision = str(max([_revision(rs) for rs in olds] + [0]) + 1)
        if new is not None:
            if _revision(new) <= int(revision) - 1:
                new = self._annotate(new, {REVISION: revision})  # a rollback makes an old template new again
            self._annotate_deploy(deploy, new)
            return new
        template_hash = _template_hash(deploy["spec"]["template"], 10)
        template = copy.deepcopy(deploy["spec"]["template"])
        _map(_map(template, "metadata"), "labels")[HASH_LABEL] = template_hash
        selector = copy.deepcopy(deploy["spec"].get("selector") or {})
        _map(selector, "matchLabels")[HASH_LABEL] = template_hash
        desired = int(deploy["spec"].get("replicas", 1))
        rs: Obj = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}",
                "namespace": meta["namespace"],
                "labels": dict(template["metadata"]["labels"]),
                "annotations": {
                    "deployment.kubernetes.io/desired-replicas": str(desired),
                    "deployment.kubernetes.io/max-replicas": str(desired + max_surge),
                    REVISION: revision,
                },
                "ownerReferences": [owner_ref(deploy)],
            },
            "spec": {
                "replicas": replicas,
                "selector": selector,
                "template": template,
                **(
                    {"minReadySeconds": deploy["spec"]["minReadySeconds"]}
                    if deploy["spec"].get("minReadySeconds")
                    else {}
                ),
            },
        }
        created = self.ctx.store.create(self.child_key, rs, namespace=meta["namespace"])
        self._event(
            deploy, "ScalingReplicaSet", f"Scaled up replica set {created['metadata']['name']} from 0 to {replicas}"
        )
        self._annotate_deploy(deploy, created)
        return created

    def _annotate(self, rs: Obj, annotations: dict[str, str]) -> Obj:
        current = rs["metadata"].get("annotations") or {}
        if all(current.get(k) == v for k, v in annotations.items()):
            return rs
        updated = copy.deepcopy(rs)
        _map(updated["metadata"], "annotations").update(annotations)
        return self.ctx.store.replace(self.child_key, updated)

    def _annotate_deploy(self, deploy: Obj, new: Obj) -> None:
        revision = (new["metadata"].get("annotations") or {}).get(REVISION)
        if revision and (deploy["metadata"].get("annotations") or {}).get(REVISION) != revision:
            updated = copy.deepcopy(deploy)
            _map(updated["metadata"], "annotations")[REVISION] = revision
            written = self.ctx.store.replace(self.key, updated)
            deploy["metadata"] = written["metadata"]

    def _scale(self, rs: Obj | None, replicas: int, deploy: Obj, max_surge: int) -> Obj:
        assert rs is not None
        desired = int(deploy["spec"].get("replicas", 1))
        annotations = {
            "deployment.kubernetes.io/desired-replicas": str(desired),
            "deployment.kubernetes.io/max-replicas": str(desired + max_surge),
        }
        current = int(rs["spec"].get("replicas", 0))
        if current == replicas and all(
            (rs["metadata"].get("annotations") or {}).get(k) == v for k, v in annotations.items()
        ):
            return rs
        updated = copy.deepcopy(rs)
        updated["spec"]["replicas"] = replicas
        _map(updated["metadata"], "annotations").update(annotations)
        written = self.ctx.store.replace(self.child_key, updated)
        if current != replicas:
            verb = "up" if replicas > current else "down"
            self._event(
                deploy,
                "ScalingReplicaSet",
                f"Scaled {verb} replica set {rs['metadata']['name']} from {current} to {replicas}",
            )
        return written

    def _scale_down_olds(
        self, deploy: Obj, new: Obj, olds: list[Obj], replicas: int, max_unavailable: int, max_surge: int
    ) -> list[Obj]:
        everything = [*olds, new]
        available = sum(int((rs.get("status") or {}).get("availableReplicas", 0)) for rs in everything)
        budget = available - (replicas - max_unavailable)
        out = []
        for rs in olds:  # oldest revision first
            current = int(rs["spec"].get("replicas", 0))
            unhealthy = current - int((rs.get("status") or {}).get("availableReplicas", 0))
            cut = min(current, max(unhealthy, 0) + max(budget, 0))
            if cut > 0:
                budget -= max(cut - max(unhealthy, 0), 0)
                rs = self._scale(rs, current - cut, deploy, max_surge)
            out.append(rs)
        return out

    def _cleanup(self, deploy: Obj, olds: list[Obj]) -> None:
        limit = int(deploy["spec"].get("revisionHistoryLimit", 10))
        idle = [
            rs
            for rs in olds
            if int(rs["spec"].get("replicas", 0)) == 0 and int((rs.get("status") or {}).get("replicas", 0)) == 0
        ]
        for rs in idle[: max(len(idle) - limit, 0)]:
            delete_quietly(self.ctx.store, self.child_key, rs["metadata"]["namespace"], rs["metadata"]["name"])

    def _update_status(
        self, deploy: Obj, new: Obj | None, olds: list[Obj], replicas: int, max_unavailable: int
    ) -> None:
        everything = [rs for rs in [*olds, new] if rs is not None]

        def total(field: str, sets: list[Obj]) -> int:
            return sum(int((rs.get("status") or {}).get(field, 0)) for rs in sets)

        available = total("availableReplicas", everything)
        updated = total("replicas", [new]) if new is not None else 0
        current = total("replicas", everything)
        is_available = available >= replicas - max_unavailable
        complete = new is not None and updated == replicas and current == replicas and available == replicas
        new_name = new["metadata"]["name"] if new is not None else f"{deploy['metadata']['name']}"
        prev = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}
        progressing_reason = "NewReplicaSetAvailable" if complete else "ReplicaSetUpdated"
        conditions = [
            _deploy_condition(
                prev.get("Available"),
                "Available",
                is_available,
                "MinimumReplicasAvailable" if is_available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if is_available
                else "Deployment does not have minimum availability.",
            ),
            _deploy_condition(
                prev.get("Progressing"),
                "Progressing",
                True,
                progressing_reason,
                f'ReplicaSet "{new_name}" ' + ("has successfully progressed." if complete else "is progressing."),
            ),
        ]
        status = drop_zero(
            {
                "observedGeneration": deploy["metadata"].get("generation", 1),
                "replicas": current,
                "updatedReplicas": updated,
                "readyReplicas": total("readyReplicas", everything),
                "availableReplicas": available,
                "unavailableReplicas": max(replicas - available, 0),
                "conditions": conditions,
            }
        )
        write_status(self.ctx.store, self.key, deploy, status)


def _map(obj: Obj, key: str) -> Obj:
    """obj[key] as a dict, replacing a missing or null value (YAML ``annotations:``) by {}."""
    value = obj.get(key)
    if not isinstance(value, dict):
        value = obj[key] = {}
    return value


def _revision(rs: Obj) -> int:
    value = (rs["metadata"].get("annotations") or {}).get(REVISION, "0")
    return int(value) if value.isdigit() else 0


def _active(pod: Obj) -> bool:
    return not deleting(pod) and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")


def _deploy_condition(prev: dict[str, Any] | None, ctype: str, ok: bool, reason: str, message: str) -> Obj:
    value = "True" if ok else "False"
    stamp = now()
    same = prev is not None and prev.get("status") == value and prev.get("reason") == reason
    return {
        "type": ctype,
        "status": value,
        "lastUpdateTime": prev["lastUpdateTime"] if same and prev else stamp,
        "lastTransitionTime": prev["lastTransitionTime"] if prev is not None and prev.get("status") == value else stamp,
        "reason": reason,
        "message": message,
    }
