"""The engine of the simulated cluster: one background thread that runs every controller.

``ClusterSim`` subscribes to the store; the subscriber only appends the change to a queue (the
store calls it with its lock held, so it must never block). The worker thread turns each change
into reconcile requests (deduplicated, in arrival order), runs them one at a time, and fires
timers (pods turning Ready, the operator's finalizer delay) from a heap. Controllers read and
write only through the store, so every change they make is seen by the API server's watchers
and comes back to the engine as a new event. A reconcile that hits a write conflict (409) is
retried with backoff; anything else unexpected is logged and kept in ``ClusterSim.errors``.

``settle()`` returns once there is nothing queued, nothing running and no timer pending (a pod
held unready by ``hold_unready`` waits on nothing, so it does not keep the cluster unsettled).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from sandbox.kube.controllers._base import Context, Hold, Obj, Request, SimConfig, controller_of
from sandbox.kube.controllers.accounts import SA_KEY, ServiceAccountController
from sandbox.kube.controllers.gc import GarbageCollector
from sandbox.kube.controllers.jobs import JOB_KEY, PDB_KEY, DisruptionController, JobController
from sandbox.kube.controllers.operator import KEY as MILVUS_KEY
from sandbox.kube.controllers.operator import MilvusOperator
from sandbox.kube.controllers.pods import PodController
from sandbox.kube.controllers.storage import PV, PVC, SC, StorageController, claim_names, ensure_storage_class
from sandbox.kube.controllers.workloads import DeploymentController, ReplicaSetController, StatefulSetController
from sandbox.kube.store import ApiError, Event, Store

log = logging.getLogger(__name__)

_OWNER_KEYS = {
    "StatefulSet": "statefulsets.apps",
    "Deployment": "deployments.apps",
    "ReplicaSet": "replicasets.apps",
    "Job": JOB_KEY,
}
_WORKLOAD_KEYS = ("statefulsets.apps", "deployments.apps", "replicasets.apps", JOB_KEY)
_RESYNC_KEYS = (*_WORKLOAD_KEYS, "pods", PVC, PV, PDB_KEY, "namespaces", MILVUS_KEY)
_GC = "_gc"
_MAX_RETRIES = 8
RECLAIM_POLICIES = ("Delete", "Retain")


class ClusterSim:
    """The controllers of a simulated cluster (and a milvus-operator), driven by store events."""

    def __init__(
        self,
        store: Store,
        *,
        pod_ready_seconds: float = 0.2,
        reclaim_policy: str = "Delete",
        storage_class: str = "standard",
        operator_version: str | None = "v1.1.2",
        operator_namespace: str = "milvus-operator",
        operator_delete_seconds: float = 0.3,
    ) -> None:
        if reclaim_policy not in RECLAIM_POLICIES:
            raise ValueError(f"reclaim_policy must be one of {RECLAIM_POLICIES}, not {reclaim_policy!r}")
        self.store = store
        self.config = SimConfig(
            pod_ready_seconds=pod_ready_seconds,
            reclaim_policy=reclaim_policy,
            storage_class=storage_class,
            operator_version=operator_version,
            operator_namespace=operator_namespace,
            operator_delete_seconds=operator_delete_seconds,
        )
        self.errors: list[str] = []
        self._cond = threading.Condition()
        self._events: deque[tuple[str, str, Obj]] = deque()
        self._pending: dict[Request, None] = {}
        self._timers: list[tuple[float, int, Request]] = []
        self._timer_due: dict[Request, float] = {}
        self._retries: dict[Request, int] = {}
        self._seq = itertools.count()
        self._active = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.ctx = Context(store=store, config=self.config, enqueue=self._enqueue, schedule=self._schedule)
        self.pods = PodController(self.ctx)
        self.statefulsets = StatefulSetController(self.ctx)
        self.deployments = DeploymentController(self.ctx)
        self.replicasets = ReplicaSetController(self.ctx)
        self.jobs = JobController(self.ctx)
        self.disruption = DisruptionController(self.ctx)
        self.accounts = ServiceAccountController(self.ctx)
        self.gc = GarbageCollector(self.ctx)
        self.storage = StorageController(self.ctx)
        self.operator = MilvusOperator(self.ctx) if operator_version is not None else None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ClusterSim:
        if self._thread is not None:
            return self
        # a watch listener, not a subscriber: the engine only reads the object (no copy per event)
        self._unsubscribe = self.store.listen(self._on_store_event)
        ensure_storage_class(self.store, self.config.storage_class, self.config.reclaim_policy)
        self._thread = threading.Thread(target=self._run, name="cluster-sim", daemon=True)
        self._thread.start()
        if self.operator is not None:
            self._enqueue(("_operator", None, "install"))
        for key in _RESYNC_KEYS:
            self._enqueue((key, None, "*"))
        self._enqueue((_GC, None, "scan"))
        return self

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None

    def __enter__(self) -> ClusterSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def settle(self, timeout: float = 10.0) -> None:
        """Block until no work is queued or running and no timer is pending; TimeoutError if not."""
        if self._thread is None:
            raise RuntimeError("ClusterSim is not started")
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._events or self._pending or self._timers or self._active:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"cluster did not settle within {timeout}s: {len(self._events)} events, "
                        f"{len(self._pending)} requests, {len(self._timers)} timers queued"
                    )
                self._cond.wait(remaining)

    # -- knobs -----------------------------------------------------------------------------
    def hold_unready(
        self,
        namespace: str,
        label_selector: str,
        reason: str = "Readiness probe failed: HTTP probe failed with statuscode: 503",
    ) -> None:
        """Keep matching pods (now and later) Running but not Ready, with Unhealthy events."""
        self.store.list("pods", namespace, label_selector=label_selector)  # 400 on a bad selector
        with self.ctx.holds_lock:
            self.ctx.holds.append(Hold(namespace, label_selector, reason))
        self._enqueue(("pods", namespace, "*"))

    def release_unready(self, namespace: str, label_selector: str) -> None:
        with self.ctx.holds_lock:
            self.ctx.holds[:] = [h for h in self.ctx.holds if (h.namespace, h.selector) != (namespace, label_selector)]
        self._enqueue(("pods", namespace, "*"))

    def set_reclaim_policy(self, policy: str) -> None:
        """Reclaim policy for PVs provisioned from now on: the default StorageClass is replaced
        by one with this ``reclaimPolicy`` (the field is immutable, so an admin re-creates it)."""
        if policy not in RECLAIM_POLICIES:
            raise ValueError(f"reclaim policy must be one of {RECLAIM_POLICIES}, not {policy!r}")
        self.config.reclaim_policy = policy
        if self._thread is not None:
            ensure_storage_class(self.store, self.config.storage_class, policy)

    # -- queueing --------------------------------------------------------------------------
    def _on_store_event(self, entry: Event) -> None:
        with self._cond:
            self._events.append((entry[1], entry[2], entry[3]))  # shared with the store: read only
            self._cond.notify_all()

    def _enqueue(self, request: Request) -> None:
        with self._cond:
            self._pending[request] = None
            self._cond.notify_all()

    def _schedule(self, delay: float, request: Request) -> None:
        due = time.monotonic() + max(delay, 0.0)
        with self._cond:
            known = self._timer_due.get(request)
            if known is not None and known <= due + 0.001:
                return
            self._timer_due[request] = due
            heapq.heappush(self._timers, (due, next(self._seq), request))
            self._cond.notify_all()

    def _fire_timers(self) -> None:
        clock = time.monotonic()
        while self._timers and self._timers[0][0] <= clock:
            due, _, request = heapq.heappop(self._timers)
            if self._timer_due.get(request) == due:
                del self._timer_due[request]
            self._pending[request] = None

    def _take(self) -> tuple[str, Any] | None:
        """Next unit of work (called with the condition held); None once stopping."""
        while not self._stopping:
            self._fire_timers()
            if self._events:
                self._active = True
                return "event", self._events.popleft()
            if self._pending:
                request = next(iter(self._pending))
                del self._pending[request]
                self._active = True
                return "request", request
            self._active = False
            self._cond.notify_all()
            self._cond.wait(self._timers[0][0] - time.monotonic() if self._timers else None)
        return None

    def _run(self) -> None:
        while True:
            with self._cond:
                item = self._take()
            if item is None:
                return
            kind, payload = item
            if kind == "event":
                requests = self._fanout(*payload)
                with self._cond:
                    for request in requests:
                        self._pending[request] = None
            else:
                self._run_request(payload)

    # -- dispatch --------------------------------------------------------------------------
    def _fanout(self, event_type: str, key: str, obj: Obj) -> list[Request]:
        """Which reconciles a store change calls for."""
        meta = obj.get("metadata") or {}
        ns, name = meta.get("namespace"), meta.get("name", "")
        requests = self._gc_requests(event_type, meta)
        if key == "pods":
            requests.append(("pods", ns, name))
            ref = controller_of(obj)
            if ref and ref.get("kind") in _OWNER_KEYS:
                requests.append((_OWNER_KEYS[ref["kind"]], ns, ref["name"]))
            requests += [(PVC, ns, claim) for claim in sorted(claim_names(obj))]
            requests.append((PDB_KEY, ns, "*"))
            requests += self._milvus_watchers(ns)
        elif key in _WORKLOAD_KEYS:
            requests.append((key, ns, name))
            ref = controller_of(obj)
            if ref and ref.get("kind") in _OWNER_KEYS:
                requests.append((_OWNER_KEYS[ref["kind"]], ns, ref["name"]))
            requests += self._milvus_watchers(ns)
        elif key == PVC:
            requests.append((PVC, ns, name))
            volume = (obj.get("spec") or {}).get("volumeName")
            if volume:
                requests.append((PV, None, volume))
            if event_type == "DELETED":
                requests.append(("statefulsets.apps", ns, "*"))
        elif key == PV:
            requests.append((PV, None, name))
        else:
            requests += self._other_requests(event_type, key, ns, name)
        return requests

    @staticmethod
    def _gc_requests(event_type: str, meta: Obj) -> list[Request]:
        """A deletion, or a new dependent (its owner may already be gone), calls the collector."""
        ns = meta.get("namespace") or ""
        refs = meta.get("ownerReferences") or []
        if not (event_type == "DELETED" or meta.get("deletionTimestamp") or (event_type == "ADDED" and refs)):
            return []
        requests: list[Request] = [(_GC, ns, "scan")]
        if ns and event_type == "DELETED":
            requests.append((_GC, "", "scan"))  # cluster-scoped objects may name it as owner
        return requests

    @staticmethod
    def _other_requests(event_type: str, key: str, ns: str | None, name: str) -> list[Request]:
        if key == SC:
            return [(PVC, None, "*")]
        if key in (PDB_KEY, MILVUS_KEY):
            return [(key, ns, name)]
        if key == "namespaces":
            return [("namespaces", None, name)]
        if key == SA_KEY and event_type == "DELETED" and name == "default":
            return [("namespaces", None, ns or "")]
        return []

    def _milvus_watchers(self, namespace: str | None) -> list[Request]:
        if self.operator is None:
            return []
        if namespace == self.config.operator_namespace:
            return [(MILVUS_KEY, None, "*")]
        return [(MILVUS_KEY, namespace, "*")]

    def _run_request(self, request: Request) -> None:
        try:
            self._dispatch(request)
        except ApiError as exc:
            if exc.code == 409:
                self._retry(request, exc)
            elif exc.code == 403 and "being terminated" in exc.message:
                pass  # the namespace is going away: nothing more to build there
            elif exc.code != 404:
                self._fail(request, exc)
        except Exception as exc:
            self._fail(request, exc)
        else:
            self._retries.pop(request, None)

    def _retry(self, request: Request, exc: ApiError) -> None:
        attempt = self._retries.get(request, 0) + 1
        if attempt > _MAX_RETRIES:
            self._retries.pop(request, None)
            self._fail(request, exc)
            return
        self._retries[request] = attempt
        self._schedule(0.01 * 2**attempt, request)

    def _fail(self, request: Request, exc: BaseException) -> None:
        log.error("cluster-sim: reconcile %s failed", request, exc_info=exc)
        self.errors.append(f"{request}: {exc!r}")

    def _dispatch(self, request: Request) -> None:
        key, ns, name = request
        if key == _GC:
            self.gc.scan(ns or "")
        elif name == "*":
            self._expand(key, ns)
        elif key == "namespaces":
            self.accounts.reconcile(name)
        elif key == "_operator":
            if self.operator is not None:
                self.operator.install()
        elif key == PV:
            self.storage.reconcile_volume(name)
        elif ns is None:
            raise ValueError(f"namespaced request without a namespace: {request}")
        else:
            handlers: dict[str, Callable[[str, str], None]] = {
                "pods": self.pods.reconcile,
                "statefulsets.apps": self.statefulsets.reconcile,
                "deployments.apps": self.deployments.reconcile,
                "replicasets.apps": self.replicasets.reconcile,
                JOB_KEY: self.jobs.reconcile,
                PDB_KEY: self.disruption.reconcile,
                PVC: self.storage.reconcile_claim,
            }
            if self.operator is not None:
                handlers[MILVUS_KEY] = self.operator.reconcile
            handler = handlers.get(key)
            if handler is not None:
                handler(ns, name)

    def _expand(self, key: str, namespace: str | None) -> None:
        if key == MILVUS_KEY and self.operator is None:
            return
        objs = self.store.list_shared(key, namespace)  # never call the store with the condition held
        with self._cond:
            for obj in objs:
                meta = obj["metadata"]
                self._pending[(key, meta.get("namespace"), meta["name"])] = None
