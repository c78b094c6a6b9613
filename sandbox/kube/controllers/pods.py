"""The scheduler and kubelet of the simulated cluster: what happens to a Pod after it is created.

A new Pod is bound to the single node ``sandbox-node`` and reported ``Pending`` with
``PodScheduled=True`` (Event ``Scheduled`` from default-scheduler). After ``pod_ready_seconds``
its containers start (Events ``Pulled``, ``Created``, ``Started`` from the kubelet) and it is
``Running`` with ``Ready``/``ContainersReady`` True, unless a ``hold_unready`` selector matches it:
then it is ``Running`` with ``Ready=False`` and a Warning Event ``Unhealthy`` carries the readiness
message. Releasing the hold turns it Ready. Container statuses report the image the way containerd
does (fully qualified: ``docker.io/milvusdb/milvus:v2.5.10``), with an imageID and containerID.
A pod controlled by a Job runs ``pod_ready_seconds`` more and then ``Succeeded``: containers
terminated with exitCode 0 / reason Completed, Ready and ContainersReady False (PodCompleted);
it is never Ready again.
"""

from __future__ import annotations

import copy
import hashlib
import time

from sandbox.kube.controllers._base import (
    HOST_IP,
    NODE_NAME,
    Context,
    Obj,
    condition,
    deleting,
    now,
    write_status,
)
from sandbox.kube.controllers.jobs import is_job_pod
from sandbox.kube.store import ApiError


def qualified_image(image: str) -> str:
    """Normalise an image reference like containerd reports it in containerStatuses[].image."""
    first, sep, _ = image.partition("/")
    name = image
    if not sep:
        name = f"docker.io/library/{image}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{image}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and "@" not in last:
        name += ":latest"
    return name


def _fake_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class PodController:
    """Schedules pods, starts their containers after a delay, and reports readiness."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self._start_at: dict[str, float] = {}  # pod uid -> monotonic time its containers start
        self._finish_at: dict[str, float] = {}  # Job pod uid -> monotonic time its containers exit 0

    def reconcile(self, namespace: str, name: str) -> None:
        pod = self.ctx.store.try_get("pods", namespace, name)
        if pod is None or deleting(pod):
            return
        scheduled = condition(pod, "PodScheduled")
        phase = (pod.get("status") or {}).get("phase")
        if scheduled is None or scheduled.get("status") != "True":
            self._schedule(pod)
        elif phase == "Pending":
            self._maybe_start(pod)
        elif phase == "Running" and is_job_pod(pod):
            self._maybe_finish(pod)
        elif phase == "Running":
            self._sync_ready(pod)

    # -- scheduler -------------------------------------------------------------------------
    def _schedule(self, pod: Obj) -> None:
        meta = pod["metadata"]
        if not pod["spec"].get("nodeName"):
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = NODE_NAME
            try:
                pod = self.ctx.store.replace("pods", bound)
            except ApiError as exc:
                if exc.code == 404:
                    return
                if exc.code != 422:  # an API server that forbids the spec change: keep it unbound
                    raise
        stamp = now()
        status: Obj = {
            "phase": "Pending",
            "conditions": [
                {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": stamp}
            ],
            "qosClass": "BestEffort",
        }
        if write_status(self.ctx.store, "pods", pod, status) is None:
            return
        self.ctx.record_event(
            pod,
            "Scheduled",
            f"Successfully assigned {meta['namespace']}/{meta['name']} to {NODE_NAME}",
            component="default-scheduler",
        )
        self._start_at[meta["uid"]] = time.monotonic() + self.ctx.config.pod_ready_seconds
        self.ctx.schedule(self.ctx.config.pod_ready_seconds, ("pods", meta["namespace"], meta["name"]))

    # -- kubelet ---------------------------------------------------------------------------
    def _maybe_start(self, pod: Obj) -> None:
        meta = pod["metadata"]
        request = ("pods", meta["namespace"], meta["name"])
        due = self._start_at.get(meta["uid"])
        if due is None:  # scheduled by someone else (or before a restart): start the clock now
            due = self._start_at[meta["uid"]] = time.monotonic() + self.ctx.config.pod_ready_seconds
        remaining = due - time.monotonic()
        if remaining > 0:
            self.ctx.schedule(remaining, request)
            return
        held = self.ctx.held_reason(pod)
        written = write_status(self.ctx.store, "pods", pod, self._running_status(pod, ready=held is None))
        if written is None:
            return
        self._start_at.pop(meta["uid"], None)
        if is_job_pod(pod):
            self._finish_at[meta["uid"]] = time.monotonic() + self.ctx.config.pod_ready_seconds
            self.ctx.schedule(self.ctx.config.pod_ready_seconds, request)
        for container in pod["spec"].get("containers") or []:
            path = f"spec.containers{{{container['name']}}}"
            image = container.get("image", "")
            self.ctx.record_event(
                written, "Pulled", f'Container image "{image}" already present on machine', field_path=path
            )
            self.ctx.record_event(written, "Created", f"Created container {container['name']}", field_path=path)
            self.ctx.record_event(written, "Started", f"Started container {container['name']}", field_path=path)
        if held is not None:
            self._unhealthy(written, held)

    def _maybe_finish(self, pod: Obj) -> None:
        """A Job's pod: its containers exit 0 ``pod_ready_seconds`` after they started."""
        meta = pod["metadata"]
        due = self._finish_at.get(meta["uid"])
        if due is None:
            due = self._finish_at[meta["uid"]] = time.monotonic() + self.ctx.config.pod_ready_seconds
        remaining = due - time.monotonic()
        if remaining > 0:
            self.ctx.schedule(remaining, ("pods", meta["namespace"], meta["name"]))
            return
        if write_status(self.ctx.store, "pods", pod, self._succeeded_status(pod)) is not None:
            self._finish_at.pop(meta["uid"], None)

    def _succeeded_status(self, pod: Obj) -> Obj:
        status = copy.deepcopy(pod.get("status") or {})
        stamp = now()
        conditions = []
        for cond in status.get("conditions") or []:
            cond = dict(cond)
            if cond["type"] in ("Ready", "ContainersReady", "PodReadyToStartContainers"):
                cond["status"] = "False"
                cond["lastTransitionTime"] = stamp
                if cond["type"] != "PodReadyToStartContainers":
                    cond["reason"] = "PodCompleted"
                    cond.pop("message", None)
            conditions.append(cond)
        status["phase"] = "Succeeded"
        status["conditions"] = conditions
        statuses = []
        for container in status.get("containerStatuses") or []:
            started = ((container.get("state") or {}).get("running") or {}).get("startedAt", stamp)
            done = dict(container)
            done.update(
                {
                    "ready": False,
                    "started": False,
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "startedAt": started,
                            "finishedAt": stamp,
                            "containerID": container.get("containerID"),
                        }
                    },
                }
            )
            statuses.append(done)
        status["containerStatuses"] = statuses
        return status

    def _sync_ready(self, pod: Obj) -> None:
        held = self.ctx.held_reason(pod)
        ready = condition(pod, "Ready")
        is_ready = ready is not None and ready.get("status") == "True"
        if is_ready == (held is None):
            return
        written = write_status(self.ctx.store, "pods", pod, self._running_status(pod, ready=held is None))
        if written is not None and held is not None:
            self._unhealthy(written, held)

    def _unhealthy(self, pod: Obj, message: str) -> None:
        containers = pod["spec"].get("containers") or [{"name": ""}]
        self.ctx.record_event(
            pod,
            "Unhealthy",
            message,
            type_="Warning",
            field_path=f"spec.containers{{{containers[0]['name']}}}",
        )

    def _running_status(self, pod: Obj, *, ready: bool) -> Obj:
        old = pod.get("status") or {}
        stamp = now()
        flag = "True" if ready else "False"
        names = [c["name"] for c in pod["spec"].get("containers") or []]
        conditions: list[Obj] = []
        for ctype, value in (
            ("PodReadyToStartContainers", "True"),
            ("Initialized", "True"),
            ("Ready", flag),
            ("ContainersReady", flag),
            ("PodScheduled", "True"),
        ):
            prev = condition(pod, ctype)
            since = prev["lastTransitionTime"] if prev and prev.get("status") == value else stamp
            cond: Obj = {"type": ctype, "status": value, "lastProbeTime": None, "lastTransitionTime": since}
            if value == "False":
                cond["reason"] = "ContainersNotReady"
                cond["message"] = f"containers with unready status: [{' '.join(names)}]"
            conditions.append(cond)
        ip = old.get("podIP") or self.ctx.next_ip()
        return {
            "phase": "Running",
            "conditions": conditions,
            "hostIP": HOST_IP,
            "hostIPs": [{"ip": HOST_IP}],
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "startTime": old.get("startTime") or stamp,
            "containerStatuses": self._container_statuses(pod, ready=ready, stamp=stamp),
            "qosClass": "BestEffort",
        }

    def _container_statuses(self, pod: Obj, *, ready: bool, stamp: str) -> list[Obj]:
        previous = {c["name"]: c for c in (pod.get("status") or {}).get("containerStatuses") or []}
        out = []
        for container in pod["spec"].get("containers") or []:
            prev = previous.get(container["name"], {})
            image = qualified_image(container.get("image", ""))
            repo = image.rsplit(":", 1)[0] if "@" not in image else image.split("@", 1)[0]
            out.append(
                {
                    "name": container["name"],
                    "image": image,
                    "imageID": prev.get("imageID") or f"{repo}@sha256:{_fake_digest(image)}",
                    "containerID": prev.get("containerID")
                    or f"containerd://{_fake_digest(pod['metadata']['uid'] + container['name'])}",
                    "ready": ready,
                    "started": True,
                    "restartCount": 0,
                    "lastState": {},
                    "state": prev.get("state") or {"running": {"startedAt": stamp}},
                }
            )
        return out
