"""Storage in the simulated cluster: dynamic provisioning, binding, PVC/PV protection, reclaim.

- Every PVC gets the ``kubernetes.io/pvc-protection`` finalizer and every PV
  ``kubernetes.io/pv-protection`` (the real API server's admission plugin adds them at create;
  here the controller adds them right after).
- A PVC without ``spec.volumeName`` of the one storage class (``storage_class``, also the
  default when the claim names none) is provisioned at once (it binds immediately): a PV
  ``pvc-<pvc uid>`` with ``spec.claimRef`` {kind, namespace, name, uid, apiVersion,
  resourceVersion}, the claim's capacity, access modes and storage class, and the reclaim
  policy current at that moment; both become ``Bound`` and the PVC gets ``spec.volumeName`` and
  the bind annotations. A claim of another class stays Pending with a Warning
  ``ProvisioningFailed`` Event (class not found). A PVC naming an existing free PV binds to it.
- A deleted PVC keeps its finalizer while a pod that is not being deleted and has not finished
  mounts it (``spec.volumes[].persistentVolumeClaim.claimName``); then the finalizer goes.
- Once a PV's claim is gone (or replaced by another uid) the PV is ``Released`` (claimRef kept);
  with reclaim policy ``Delete`` it is then deleted. A PV being deleted keeps its finalizer while
  it is still ``Bound``. A Bound PVC whose PV disappears turns ``Lost``.
"""

from __future__ import annotations

import copy

from sandbox.kube.controllers._base import (
    PV_PROTECTION,
    PVC_PROTECTION,
    Context,
    Obj,
    delete_quietly,
    deleting,
    set_finalizers,
    write_status,
)

PVC = "persistentvolumeclaims"
PV = "persistentvolumes"
PROVISIONER = "rancher.io/local-path"


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
        self._reported: set[str] = set()  # PVC uids already told their class does not exist

    # -- PVCs ------------------------------------------------------------------------------
    def reconcile_claim(self, namespace: str, name: str) -> None:
        pvc = self.ctx.store.try_get(PVC, namespace, name)
        if pvc is None:
            return
        finalizers = list(pvc["metadata"].get("finalizers") or [])
        if deleting(pvc):
            if PVC_PROTECTION in finalizers and not self._in_use(namespace, name):
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

    def _in_use(self, namespace: str, claim: str) -> bool:
        for pod in self.ctx.store.list("pods", namespace):
            phase = (pod.get("status") or {}).get("phase")
            if not deleting(pod) and phase not in ("Succeeded", "Failed") and claim in claim_names(pod):
                return True
        return False

    def _provision(self, pvc: Obj) -> None:
        meta = pvc["metadata"]
        spec = pvc["spec"]
        storage_class = spec.get("storageClassName")
        if storage_class is None:
            storage_class = self.ctx.config.storage_class
        if storage_class != self.ctx.config.storage_class:
            # "" asks for no dynamic provisioning; any other class does not exist here: stay Pending
            if storage_class and meta["uid"] not in self._reported:
                self._reported.add(meta["uid"])
                self.ctx.record_event(
                    pvc,
                    "ProvisioningFailed",
                    f'storageclass.storage.k8s.io "{storage_class}" not found',
                    type_="Warning",
                    component="persistentvolume-controller",
                )
            return
        pv_name = f"pvc-{meta['uid']}"
        pv: Obj = {
            "apiVersion": "v1",
            "kind": "PersistentVolume",
            "metadata": {
                "name": pv_name,
                "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
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
                "persistentVolumeReclaimPolicy": self.ctx.config.reclaim_policy,
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
        self._finish_bind(pvc, pv, storage_class)

    def _finish_bind(self, pvc: Obj, pv: Obj, storage_class: str) -> None:
        bound = copy.deepcopy(pvc)
        bound["spec"]["volumeName"] = pv["metadata"]["name"]
        bound["spec"]["storageClassName"] = storage_class
        annotations = bound["metadata"].setdefault("annotations", {})
        annotations.update(
            {
                "pv.kubernetes.io/bind-completed": "yes",
                "pv.kubernetes.io/bound-by-controller": "yes",
                "volume.beta.kubernetes.io/storage-provisioner": PROVISIONER,
                "volume.kubernetes.io/storage-provisioner": PROVISIONER,
            }
        )
        written = self.ctx.store.replace(PVC, bound)
        status = {
            "phase": "Bound",
            "accessModes": list(pv["spec"]["accessModes"]),
            "capacity": dict(pv["spec"]["capacity"]),
        }
        write_status(self.ctx.store, PVC, written, status)

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
