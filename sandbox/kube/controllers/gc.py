"""The garbage collector (kube-controller-manager's garbagecollector), for every stored kind.

Per namespace (``scan``), over all objects with ``metadata.ownerReferences``:
- an owner "exists" when an object with that uid (and kind) is stored; references to owners that
  are gone are dropped when another owner still exists; a dependent whose owners are all gone is
  deleted with Background propagation (so chains such as Deployment -> ReplicaSet -> Pod and
  Job -> Pod go level by level after a default ``helm uninstall``);
- a dependent of an owner being deleted with the ``foregroundDeletion`` finalizer is deleted
  (Foreground itself, when it has dependents of its own) unless another owner is not being
  deleted, in which case only the reference goes;
- an owner with ``foregroundDeletion`` loses that finalizer once no dependent with
  ``blockOwnerDeletion: true`` is left (dependents being deleted still block until they are gone).
Orphan propagation is done by the store at delete time. Cluster-scoped owners are looked up too.
"""

from __future__ import annotations

import copy

from sandbox.kube.controllers._base import FOREGROUND, Context, Obj, deleting, ignore_missing
from sandbox.kube.store import RESOURCES, ResourceType

_SKIP = {"events"}


def _kinds(namespaced: bool) -> list[ResourceType]:
    return [
        rt
        for rt in RESOURCES.values()
        if rt.namespaced == namespaced and rt.storable and "list" in rt.verbs and rt.key not in _SKIP
    ]


class GarbageCollector:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def scan(self, namespace: str) -> None:
        store = self.ctx.store
        objects: list[tuple[ResourceType, Obj]] = []
        for rt in _kinds(namespaced=True) if namespace else []:
            objects += [(rt, o) for o in store.list_shared(rt.key, namespace)]
        # shared with the store (read only: every write below starts from a copy)
        cluster = [(rt, o) for rt in _kinds(namespaced=False) for o in store.list_shared(rt.key)]
        by_uid = {o["metadata"]["uid"]: (rt, o) for rt, o in objects + cluster}
        scoped = objects if namespace else cluster
        blocking: dict[str, int] = {}
        for rt, obj in scoped:
            refs = obj["metadata"].get("ownerReferences") or []
            if not refs:
                continue
            owners = [self._owner(by_uid, ref) for ref in refs]
            for ref, owner in zip(refs, owners, strict=True):
                if owner is not None and ref.get("blockOwnerDeletion"):
                    blocking[ref["uid"]] = blocking.get(ref["uid"], 0) + 1
            self._collect(rt, obj, refs, owners, by_uid)
        for rt, obj in scoped:
            meta = obj["metadata"]
            finalizers = meta.get("finalizers") or []
            if deleting(obj) and FOREGROUND in finalizers and not blocking.get(meta["uid"]):
                self._release(rt, obj, [f for f in finalizers if f != FOREGROUND])

    def _release(self, rt: ResourceType, obj: Obj, finalizers: list[str]) -> None:
        new = copy.deepcopy(obj)
        new["metadata"]["finalizers"] = finalizers
        ignore_missing(lambda: self.ctx.store.replace(rt.key, new))

    @staticmethod
    def _owner(by_uid: dict[str, tuple[ResourceType, Obj]], ref: Obj) -> Obj | None:
        found = by_uid.get(ref.get("uid", ""))
        if found is None or found[1].get("kind") != ref.get("kind"):
            return None
        return found[1]

    def _collect(
        self,
        rt: ResourceType,
        obj: Obj,
        refs: list[Obj],
        owners: list[Obj | None],
        by_uid: dict[str, tuple[ResourceType, Obj]],
    ) -> None:
        store = self.ctx.store
        meta = obj["metadata"]
        ns = meta.get("namespace")
        if deleting(obj):
            return  # already going; it keeps blocking a foreground owner until it is gone
        solid = [o for o in owners if o is not None and not deleting(o)]
        waiting = [
            o for o in owners if o is not None and deleting(o) and FOREGROUND in (o["metadata"].get("finalizers") or [])
        ]
        if not any(o is not None for o in owners) or (waiting and not solid):
            has_dependents = any(
                any(r.get("uid") == meta["uid"] for r in o["metadata"].get("ownerReferences") or [])
                for _, o in by_uid.values()
            )
            policy = "Foreground" if waiting and has_dependents else "Background"
            ignore_missing(lambda: store.delete(rt.key, ns, meta["name"], propagation_policy=policy))
            return
        dangling = {ref["uid"] for ref, owner in zip(refs, owners, strict=True) if owner is None}
        dangling |= {o["metadata"]["uid"] for o in waiting} if solid else set()
        if dangling:
            new = copy.deepcopy(obj)
            kept = [r for r in refs if r.get("uid") not in dangling]
            new["metadata"]["ownerReferences"] = kept
            ignore_missing(lambda: store.replace(rt.key, new))
