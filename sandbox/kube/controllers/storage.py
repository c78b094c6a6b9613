"""Storage in the simulated cluster: dynamic provisioning, binding, PVC/PV protection, reclaim.

- Every PVC gets the ``kubernetes.io/pvc-protection`` finalizer and every PV
  ``kubernetes.io/pv-protection`` (the real API server's admission plugin adds them at create;
  here the controller adds them right after).
- ``ClusterSim.start`` creates the default StorageClass ``storage_class`` (annotated
  ``storageclass.kubernetes.io/is-default-class: "true"``, provisioner ``rancher.io/local-path``,
  ``reclaimPolicy`` from ``reclaim_policy``, ``volumeBindingMode: Immediate``);
  ``set_reclaim_policy`` re-creates it (reclaimPolicy is immutable).
- A PVC with no ``storageClassName`` gets the default class (retroactive default assignment, as
  the PV controller does since 1.28); ``""`` means static binding only. A PVC of an existing class
  is provisioned (WaitForFirstConsumer: once a scheduled pod mounts it): a PV ``pvc-<pvc uid>``
  with ``spec.claimRef`` {kind, namespace, name, uid, apiVersion, resourceVersion}, the claim's
  capacity, access modes and class, and the class's reclaim policy and provisioner; both become
  ``Bound`` and the PVC gets ``spec.volumeName`` and the bind annotations. A claim of a missing
  class stays Pending with a Warning ``ProvisioningFailed`` Event. A PVC naming a free PV binds it.
- A deleted PVC keeps its finalizer while a pod that is not being deleted and has not finished
  mounts it (``spec.volumes[].persistentVolumeClaim.claimName``), and at least
  ``pvc_release_seconds`` after its deletion (0 by default; the benchmark's slow pod shutdown); then
  the finalizer goes.
- Once a PV's claim is gone (or replaced by another uid) the PV is ``Released`` (claimRef kept);
  with reclaim policy ``Delete`` it is then deleted. A PV being deleted keeps its finalizer while
  it is still ``Bound``. A Bound PVC whose PV disappears turns ``Lost``.
"""

from __future__ import annotations

import copy
import time

from sandbox.kube.controllers._base import (
    NODE_NAME,
    PV_PROTECTION,
    PVC_PROTECTION,
    Context,
    Obj,
    delete_quietly,
    deleting,
    set_finalizers,
    write_status,
)
from sandbox.kube.store import ApiError, Store

PVC = "persistentvolumeclaims"
PV = "persistentvolumes"
SC = "storageclasses.storage.k8s.io"
PROVISIONER = "rancher.io/local-path"
DEFAULT_CLASS_ANNOTATION = "storageclass.kubernetes.io/is-default-class"


def storage_class(name: str, reclaim_policy: str) -> Obj:
    """The cluster's default StorageClass, as local-path-provisioner installs it."""
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": {DEFAULT_CLASS_ANNOTATION: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": reclaim_policy,
        "volumeBindingMode": "Immediate",
    }


def ensure_storage_class(store: Store, name: str, reclaim_policy: str) -> None:
    """Create the default class, or replace it (delete + create: reclaimPolicy is immutable)."""
    existing = store.try_get(SC, None, name)
    if existing is not None and existing.get("reclaimPolicy") == reclaim_policy:
        return
    if existing is not None:
        delete_quietly(store, SC, None, name)
    try:
        store.create(SC, storage_class(name, reclaim_policy))
    except ApiError as exc:
        if exc.code != 409:
            raise


def default_class(store: Store) -> Obj | None:
    """The newest class annotated as default (what the DefaultStorageClass admission picks)."""
    defaults = [
        sc for sc in store.list(SC) if (sc["metadata"].get("annotations") or {}).get(DEFAULT_CLASS_ANNOTATION) == "true"
    ]
    defaults.sort(key=lambda sc: (sc["metadata"].get("creationTimestamp") or "", sc["metadata"]["name"]))
    return defaults[-1] if defaults else None


def claim_names(pod: Obj) -> set[str]:
    """Names of the PVCs a pod mounts."""
    names = set()
    for volume in (pod.get("spec") or {}).get("volumes") or []:
        claim = volume.get("persistentVolumeClaim") or {}
        if claim.get("claimName"):
            names.add(claim["claimName"])
    return names


class StorageController:
    """The PV controller, the local-path provisioner and the PVC/PV protection controllers."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._reported: set[str] = set()  # "<PVC uid>/<reason>" of Events already recorded
        self._release_at: dict[str, float] = {}  # deleted PVC uid -> when pvc_release_seconds is over

    # -- PVCs ------------------------------------------------------------------------------
    def reconcile_claim(self, namespace: str, name: str) -> None:
        pvc = self.ctx.store.try_get(PVC, namespace, name)
        if pvc is None:
            return
        finalizers = list(pvc["metadata"].get("finalizers") or [])
        if deleting(pvc):
            if PVC_PROTECTION in finalizers and not self._in_use(namespace, name) and not self._held(pvc):
                set_finalizers(self.ctx.store, PVC, pvc, [f for f in finalizers if f != PVC_PROTECTION])
            return
        if PVC_PROTECTION not in finalizers:
            set_finalizers(self.ctx.store, PVC, pvc, [*finalizers, PVC_PROTECTION])
            return
        volume_name = pvc["spec"].get("volumeName")
        if not volume_name:
            self._provision(pvc)
        elif (pvc.get("status") or {}).get("phase") != "Bound":
            self._bind_static(pvc, volume_name)
        elif self.ctx.store.try_get(PV, None, volume_name) is None:
            status = copy.deepcopy(pvc.get("status") or {})
            status["phase"] = "Lost"
            write_status(self.ctx.store, PVC, pvc, status)

    def _held(self, pvc: Obj) -> bool:
        """Still within ``pvc_release_seconds`` of its deletion: reconcile again when that is over."""
        config = self.ctx.config.pvc_release_seconds
        hold = config(pvc) if callable(config) else config
        if hold <= 0:
            return False
        meta = pvc["metadata"]
        due = self._release_at.setdefault(meta["uid"], time.monotonic() + hold)
        remaining = due - time.monotonic()
        if remaining <= 0:
            self._release_at.pop(meta["uid"], None)
            return False
        self.ctx.schedule(remaining, (PVC, meta["namespace"], meta["name"]))
        return True

    def _in_use(self, namespace: str, claim: str) -> bool:
        for pod in self.ctx.store.list_shared("pods", namespace):  # read only
            phase = (pod.get("status") or {}).get("phase")
            if not deleting(pod) and phase not in ("Succeeded", "Failed") and claim in claim_names(pod):
                return True
        return False

    def _provision(self, pvc: Obj) -> None:
        meta = pvc["metadata"]
        spec = pvc["spec"]
        storage_class = spec.get("storageClassName")
        if storage_class is None:
            # retroactive default StorageClass assignment (GA in 1.28): the PV controller sets it
            default = default_class(self.ctx.store)
            if default is not None:
                assigned = copy.deepcopy(pvc)
                assigned["spec"]["storageClassName"] = default["metadata"]["name"]
                self.ctx.store.replace(PVC, assigned)
            else:
                self._warn_once(
                    pvc,
                    "FailedBinding",
                    "no persistent volumes available for this claim and no storage class is set",
                    component="persistentvolume-controller",
                    type_="Normal",
                )
            return
        if storage_class == "":
            return  # "" asks for no dynamic provisioning: only a pre-bound PV will do
        sc = self.ctx.store.try_get(SC, None, storage_class)
        if sc is None:
            self._warn_once(pvc, "ProvisioningFailed", f'storageclass.storage.k8s.io "{storage_class}" not found')
            return
        if sc.get("volumeBindingMode") == "WaitForFirstConsumer" and not self._consumed(
            meta["namespace"], meta["name"]
        ):
            self._warn_once(
                pvc,
                "WaitForFirstConsumer",
                "waiting for first consumer to be created before binding",
                type_="Normal",
            )
            return
        provisioner = sc.get("provisioner") or PROVISIONER
        reclaim = sc.get("reclaimPolicy") or "Delete"
        pv_name = f"pvc-{meta['uid']}"
        pv: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": provisioner},
                "finalizers": [PV_PROTECTION],
            },
            "spec": {
                "accessModes": list(spec.get("accessModes") or ["ReadWriteOnce"]),
                "capacity": {"storage": spec["resources"]["requests"]["storage"]},
                "claimRef": {
                    "kind": "PersistentVolumeClaim",
                    "namespace": meta["namespace"],
                    "name": meta["name"],
                    "uid": meta["uid"],
                    "apiVersion": "v1",
                    "resourceVersion": meta["resourceVersion"],
                },
                "persistentVolumeReclaimPolicy": reclaim,
                "storageClassName": storage_class,
                "volumeMode": spec.get("volumeMode") or "Filesystem",
                "hostPath": {
                    "path": f"/var/local-path-provisioner/{pv_name}_{meta['namespace']}_{meta['name']}",
                    "type": "DirectoryOrCreate",
                },
            },
        }
        if self.ctx.store.try_get(PV, None, pv_name) is None:
            pv = self.ctx.store.create(PV, pv)
        else:
            pv = self.ctx.store.get(PV, None, pv_name)
        write_status(self.ctx.store, PV, pv, {"phase": "Bound"})
        self._finish_bind(
            pvc, pv, storage_class, provisioner, waited=sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        )

    def _finish_bind(
        self, pvc: Obj, pv: Obj, storage_class: str, provisioner: str | None = None, *, waited: bool = False
    ) -> None:
        bound = copy.deepcopy(pvc)
        bound["spec"]["volumeName"] = pv["metadata"]["name"]
        bound["spec"]["storageClassName"] = storage_class
        annotations = bound["metadata"].setdefault("annotations", {})
        annotations.update({"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"})
        if provisioner is not None:
            annotations["volume.beta.kubernetes.io/storage-provisioner"] = provisioner
            annotations["volume.kubernetes.io/storage-provisioner"] = provisioner
        if waited:
            annotations["volume.kubernetes.io/selected-node"] = NODE_NAME
        written = self.ctx.store.replace(PVC, bound)
        status = {
            "phase": "Bound",
            "accessModes": list(pv["spec"]["accessModes"]),
            "capacity": dict(pv["spec"]["capacity"]),
        }
        write_status(self.ctx.store, PVC, written, status)

    def _warn_once(
        self,
        pvc: Obj,
        reason: str,
        message: str,
        *,
        component: str = "persistentvolume-controller",
        type_: str = "Warning",
    ) -> None:
        key = f"{pvc['metadata']['uid']}/{reason}"
        if key in self._reported:
            return
        self._reported.add(key)
        self.ctx.record_event(pvc, reason, message, type_=type_, component=component)

    def _consumed(self, namespace: str, claim: str) -> bool:
        """A scheduled pod that is not going away mounts the claim (WaitForFirstConsumer)."""
        return any(
            claim in claim_names(pod) and pod["spec"].get("nodeName") and not deleting(pod)
            for pod in self.ctx.store.list_shared("pods", namespace)  # read only
        )

    def _bind_static(self, pvc: Obj, volume_name: str) -> None:
        pv = self.ctx.store.try_get(PV, None, volume_name)
        if pv is None or deleting(pv):
            return
        meta = pvc["metadata"]
        ref = pv["spec"].get("claimRef")
        if ref and (ref.get("namespace"), ref.get("name")) != (meta["namespace"], meta["name"]):
            return
        if not ref or ref.get("uid") != meta["uid"]:
            claimed = copy.deepcopy(pv)
            claimed["spec"]["claimRef"] = {
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
                "apiVersion": "v1",
                "resourceVersion": meta["resourceVersion"],
            }
            pv = self.ctx.store.replace(PV, claimed)
        write_status(self.ctx.store, PV, pv, {"phase": "Bound"})
        self._finish_bind(pvc, pv, pv["spec"].get("storageClassName") or self.ctx.config.storage_class)

    # -- PVs -------------------------------------------------------------------------------
    def reconcile_volume(self, name: str) -> None:
        pv = self.ctx.store.try_get(PV, None, name)
        if pv is None:
            return
        finalizers = list(pv["metadata"].get("finalizers") or [])
        phase = (pv.get("status") or {}).get("phase")
        if deleting(pv):
            if PV_PROTECTION in finalizers and phase != "Bound":
                set_finalizers(self.ctx.store, PV, pv, [f for f in finalizers if f != PV_PROTECTION])
                return
        elif PV_PROTECTION not in finalizers:
            set_finalizers(self.ctx.store, PV, pv, [*finalizers, PV_PROTECTION])
            return
        ref = pv["spec"].get("claimRef")
        if phase != "Bound" or not ref:
            return
        claim = self.ctx.store.try_get(PVC, ref.get("namespace"), ref.get("name", ""))
        if claim is not None and claim["metadata"]["uid"] == ref.get("uid"):
            return
        released = write_status(self.ctx.store, PV, pv, {"phase": "Released"})
        if released is not None and pv["spec"].get("persistentVolumeReclaimPolicy") == "Delete":
            delete_quietly(self.ctx.store, PV, None, name)
