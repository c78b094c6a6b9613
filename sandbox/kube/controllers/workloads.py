"""StatefulSet and Deployment controllers, plus the garbage collection of the pods they own.

StatefulSet (apps/v1): pods ``<sts>-<i>`` for ``i < spec.replicas``; before a pod, one PVC per
``spec.volumeClaimTemplates`` entry named ``<template>-<sts>-<i>`` (labels: the template's labels
merged with ``spec.selector.matchLabels``), never deleted by this controller. A PVC that is being
deleted blocks its pod until it is gone, then a fresh one is made (like the real controller).
``podManagementPolicy: OrderedReady`` (the default) creates one pod at a time and waits for it to
be Ready; ``Parallel`` creates them all. A template change rolls pods (highest ordinal first, one
at a time, only while all are Ready) unless ``updateStrategy`` is ``OnDelete``.

Deployment (apps/v1): pods ``<deploy>-<10 char template hash>-<5 random>`` labelled
``pod-template-hash``; a template change starts new pods and removes the old ones once the new
ones are Ready (``Recreate``: old ones first). The simulated API has no ReplicaSets, so pods are
owned by the Deployment directly.

Garbage collection: pods whose controller reference points at a StatefulSet/Deployment that is
gone (or has another uid) are deleted; an owner deleted with ``foregroundDeletion`` loses that
finalizer once its pods are gone. Statuses carry the counters with Go's ``omitempty`` behaviour.
"""

from __future__ import annotations

import copy
import random
from typing import Any

from sandbox.kube.controllers._base import (
    FOREGROUND,
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
    pod_ready,
    set_finalizers,
    short_hash,
    write_status,
)

_RANDOM_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


def _template_hash(template: Obj, length: int) -> str:
    return short_hash(template, length)


class _OwnerBase:
    kind = ""
    key = ""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def _owned_pods(self, namespace: str, name: str, owner: Obj | None) -> list[Obj]:
        """Live pods of this owner; pods of a gone (or replaced) owner are garbage-collected."""
        all_pods = self.ctx.store.list("pods", namespace)
        pods = owned_by_name(all_pods, self.kind, name)
        uid = owner["metadata"]["uid"] if owner is not None and not deleting(owner) else None
        live = self._adopt(owner, all_pods) if uid is not None and owner is not None else []
        for pod in pods:
            if uid is not None and (controller_of(pod) or {}).get("uid") == uid:
                live.append(pod)
            elif not deleting(pod):
                delete_quietly(self.ctx.store, "pods", namespace, pod["metadata"]["name"])
        if owner is not None and deleting(owner) and not live:
            finalizers = owner["metadata"].get("finalizers") or []
            if FOREGROUND in finalizers:
                set_finalizers(self.ctx.store, self.key, owner, [f for f in finalizers if f != FOREGROUND])
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
            adopted.append(self.ctx.store.replace("pods", claimed))
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
        self._create_missing(sts, by_ordinal, replicas, revision, parallel)
        self._roll(sts, by_ordinal, revision)
        self._update_status(sts, revision)

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
                "storageClassName": tspec.get("storageClassName") or self.ctx.config.storage_class,
                "volumeMode": tspec.get("volumeMode") or "Filesystem",
            }
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
                    },
                    "spec": claim_spec,
                }
            )
        return claims

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
        pods = [p for p in owned_by_name(self.ctx.store.list("pods", sts["metadata"]["namespace"]), self.kind, name)]
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


class DeploymentController(_OwnerBase):
    kind = "Deployment"
    key = "deployments.apps"

    def reconcile(self, namespace: str, name: str) -> None:
        deploy = self.ctx.store.try_get(self.key, namespace, name)
        pods = self._owned_pods(namespace, name, deploy)
        if deploy is None or deleting(deploy):
            return
        spec = deploy["spec"]
        replicas = int(spec.get("replicas", 1))
        template_hash = _template_hash(spec["template"], 10)
        new = [p for p in pods if p["metadata"]["labels"].get("pod-template-hash") == template_hash]
        old = [p for p in pods if p not in new]
        recreate = (spec.get("strategy") or {}).get("type") == "Recreate"
        if old and (recreate or sum(1 for p in new if pod_ready(p)) >= replicas):
            for pod in old:
                delete_quietly(self.ctx.store, "pods", namespace, pod["metadata"]["name"])
            old = []
        if not (recreate and old):
            new = self._scale(deploy, new, replicas, template_hash)
        self._update_status(deploy, new, old, replicas, template_hash)

    def _scale(self, deploy: Obj, pods: list[Obj], replicas: int, template_hash: str) -> list[Obj]:
        namespace = deploy["metadata"]["namespace"]
        pods = sorted(pods, key=lambda p: (pod_ready(p), p["metadata"].get("creationTimestamp") or ""))
        while len(pods) > replicas:
            victim = pods.pop(0)
            delete_quietly(self.ctx.store, "pods", namespace, victim["metadata"]["name"])
        while len(pods) < replicas:
            pods.append(self._create_pod(deploy, template_hash))
        return pods

    def _create_pod(self, deploy: Obj, template_hash: str) -> Obj:
        meta = deploy["metadata"]
        template = copy.deepcopy(deploy["spec"]["template"])
        tmeta = template.get("metadata") or {}
        suffix = "".join(random.choice(_RANDOM_ALPHABET) for _ in range(5))
        labels = dict(tmeta.get("labels") or {})
        labels["pod-template-hash"] = template_hash
        pod: Obj = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": f"{meta['name']}-{template_hash}-{suffix}",
                "namespace": meta["namespace"],
                "labels": labels,
                "annotations": dict(tmeta.get("annotations") or {}),
                "ownerReferences": [owner_ref(deploy)],
            },
            "spec": template.get("spec") or {},
        }
        return self.ctx.store.create("pods", pod, namespace=meta["namespace"])

    def _update_status(self, deploy: Obj, new: list[Obj], old: list[Obj], replicas: int, template_hash: str) -> None:
        ready = sum(1 for p in new + old if pod_ready(p))
        total = len(new) + len(old)
        available = ready >= replicas
        prev = {c["type"]: c for c in (deploy.get("status") or {}).get("conditions") or []}
        conditions = [
            _deploy_condition(
                prev.get("Available"),
                "Available",
                available,
                "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                "Deployment has minimum availability."
                if available
                else "Deployment does not have minimum availability.",
            ),
            _deploy_condition(
                prev.get("Progressing"),
                "Progressing",
                True,
                "NewReplicaSetAvailable" if not old and available else "ReplicaSetUpdated",
                f'ReplicaSet "{deploy["metadata"]["name"]}-{template_hash}" '
                + ("has successfully progressed." if not old and available else "is progressing."),
            ),
        ]
        status = drop_zero(
            {
                "observedGeneration": deploy["metadata"].get("generation", 1),
                "replicas": total,
                "updatedReplicas": len(new),
                "readyReplicas": ready,
                "availableReplicas": ready,
                "unavailableReplicas": max(replicas - ready, 0),
                "conditions": conditions,
            }
        )
        write_status(self.ctx.store, self.key, deploy, status)


def _deploy_condition(prev: dict[str, Any] | None, ctype: str, ok: bool, reason: str, message: str) -> Obj:
    value = "True" if ok else "False"
    stamp = now()
    same = prev is not None and prev.get("status") == value and prev.get("reason") == reason
    return {
        "type": ctype,
        "status": value,
        "lastUpdateTime": prev["lastUpdateTime"] if same and prev else stamp,
        "lastTransitionTime": prev["lastTransitionTime"] if same and prev else stamp,
        "reason": reason,
        "message": message,
    }
