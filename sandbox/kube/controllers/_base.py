"""Shared plumbing for the simulated controllers: configuration, timestamps, owner references,
readiness checks, the Event recorder and the small write helpers every controller uses.

Guarantees: every helper writes through the store only (so the API server's watchers see each
change); status goes through the ``status`` subresource; writes that race a client come back as
``Conflict`` (HTTP 409) and are left to the engine, which retries the whole reconcile.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sandbox.kube.store import ApiError, Store

Obj = dict[str, Any]
# A unit of work: (store key or pseudo key, namespace, name). Name "*" means "every object of
# that key in the namespace" (namespace None: in every namespace).
Request = tuple[str, str | None, str]

NODE_NAME = "sandbox-node"
HOST_IP = "10.0.0.10"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
FOREGROUND = "foregroundDeletion"
_HASH_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"


@dataclass
class SimConfig:
    """Knobs of the simulated cluster (the reclaim policy may change while it runs)."""

    pod_ready_seconds: float = 0.2
    reclaim_policy: str = "Delete"
    storage_class: str = "standard"
    operator_version: str | None = "v1.1.2"
    operator_namespace: str = "milvus-operator"
    operator_delete_seconds: float = 0.3
    # A deleted PVC keeps kubernetes.io/pvc-protection at least this long (seconds, or a function of
    # the PVC), as while the pods that mounted it terminate; 0 = only while a live pod mounts it.
    # For the benchmark's waits.
    pvc_release_seconds: float | Callable[[Obj], float] = 0.0


@dataclass
class Hold:
    namespace: str
    selector: str
    reason: str


@dataclass
class Context:
    """What every controller may use: the store, the config, and ways to ask for more work."""

    store: Store
    config: SimConfig
    enqueue: Callable[[Request], None]
    schedule: Callable[[float, Request], None]
    holds: list[Hold] = field(default_factory=list)
    holds_lock: threading.Lock = field(default_factory=threading.Lock)
    _seq: itertools.count[int] = field(default_factory=itertools.count)
    _ips: itertools.count[int] = field(default_factory=lambda: itertools.count(2))

    def held_reason(self, pod: Obj) -> str | None:
        """The readiness-failure message if a hold_unready() selector matches this pod."""
        meta = pod["metadata"]
        with self.holds_lock:
            holds = [h for h in self.holds if h.namespace == meta.get("namespace")]
        for hold in holds:
            matching = self.store.list("pods", hold.namespace, label_selector=hold.selector)
            if any(p["metadata"]["name"] == meta["name"] for p in matching):
                return hold.reason
        return None

    def next_ip(self) -> str:
        n = next(self._ips)
        return f"10.244.{n // 250}.{n % 250 + 2}"

    def record_event(
        self,
        obj: Obj,
        reason: str,
        message: str,
        *,
        type_: str = "Normal",
        component: str = "kubelet",
        field_path: str | None = None,
    ) -> None:
        """Create a core/v1 Event about ``obj`` like the component's event recorder does."""
        meta = obj["metadata"]
        namespace = meta.get("namespace") or "default"
        stamp = now()
        involved: Obj = {
            "kind": obj.get("kind"),
            "namespace": meta.get("namespace"),
            "name": meta["name"],
            "uid": meta.get("uid"),
            "apiVersion": obj.get("apiVersion"),
            "resourceVersion": meta.get("resourceVersion"),
        }
        if field_path:
            involved["fieldPath"] = field_path
        event: Obj = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta['name']}.{time.time_ns() + next(self._seq):x}"},
            "involvedObject": involved,
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": component} | ({"host": NODE_NAME} if component == "kubelet" else {}),
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
            "eventTime": None,
            "reportingComponent": component,
            "reportingInstance": NODE_NAME if component == "kubelet" else "",
        }
        self.store.create("events", event, namespace=namespace)


def now() -> str:
    """An RFC 3339 timestamp with second precision, as the API server serialises metav1.Time."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def short_hash(data: Any, length: int = 10) -> str:
    """A stable hash of a JSON-able value spelled in the alphabet Kubernetes uses for names."""
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).digest()
    return "".join(_HASH_ALPHABET[b % len(_HASH_ALPHABET)] for b in digest[:length])


def owner_ref(owner: Obj) -> Obj:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def pod_from_template(owner: Obj) -> Obj:
    """A pod from ``owner``'s ``spec.template``, controlled by it, named ``<owner>-<random>``
    by the API server (generateName), as the ReplicaSet and Job controllers make them."""
    meta = owner["metadata"]
    template = copy.deepcopy(owner["spec"].get("template") or {})
    tmeta = template.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "generateName": f"{meta['name']}-",
            "namespace": meta["namespace"],
            "labels": dict(tmeta.get("labels") or {}),
            "annotations": dict(tmeta.get("annotations") or {}),
            "ownerReferences": [owner_ref(owner)],
        },
        "spec": template.get("spec") or {},
    }


def controller_of(obj: Obj) -> Obj | None:
    for ref in obj["metadata"].get("ownerReferences") or []:
        if ref.get("controller"):
            return dict(ref)
    return None


def owned_by_name(objs: Iterable[Obj], kind: str, name: str) -> list[Obj]:
    """Objects whose controller reference names an owner of this kind and name (any uid)."""
    out = []
    for obj in objs:
        ref = controller_of(obj)
        if ref and ref.get("kind") == kind and ref.get("name") == name:
            out.append(obj)
    return out


def deleting(obj: Obj | None) -> bool:
    return obj is not None and bool(obj["metadata"].get("deletionTimestamp"))


def condition(obj: Obj, ctype: str) -> Obj | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def pod_ready(pod: Obj) -> bool:
    cond = condition(pod, "Ready")
    return (
        not deleting(pod)
        and (pod.get("status") or {}).get("phase") == "Running"
        and cond is not None
        and cond.get("status") == "True"
    )


def selector_string(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def ignore_missing(fn: Callable[[], Any]) -> None:
    """Run a write; an object that is already gone (404) is fine."""
    try:
        fn()
    except ApiError as exc:
        if exc.code != 404:
            raise


def delete_quietly(store: Store, key: str, namespace: str | None, name: str) -> None:
    ignore_missing(lambda: store.delete(key, namespace, name))


def set_finalizers(store: Store, key: str, obj: Obj, finalizers: list[str]) -> None:
    """Replace the object's finalizer list (resourceVersion-checked: a race gives 409)."""
    new = copy.deepcopy(obj)
    new["metadata"]["finalizers"] = finalizers
    ignore_missing(lambda: store.replace(key, new))


def write_status(store: Store, key: str, obj: Obj, status: Obj) -> Obj | None:
    """Write ``status`` through the status subresource unless it is already what the object has."""
    if obj.get("status") == status:
        return obj
    new = copy.deepcopy(obj)
    new["status"] = status
    try:
        return store.replace(key, new, subresource="status")
    except ApiError as exc:
        if exc.code == 404:
            return None
        raise


def drop_zero(status: Obj, keep: Iterable[str] = ()) -> Obj:
    """Drop zero-valued ints like Go's ``omitempty`` does (so clients see the keys go missing)."""
    kept = set(keep)
    return {k: v for k, v in status.items() if k in kept or not (v is None or (type(v) is int and v == 0))}
