"""The Job controller (batch/v1) and the PodDisruptionBudget controller (policy/v1).

Job (NonIndexed): while fewer than ``spec.completions`` pods have Succeeded and the Job is neither
suspended nor finished, it keeps ``min(parallelism, completions - succeeded)`` active pods named
``<job>-<5 random>`` (generateName) from the template, controlled by the Job. The kubelet
simulation (``pods.py``) runs a Job's pod to ``Succeeded``. Status as 1.31+ writes it:
``startTime``, ``active``/``succeeded``/``failed`` (omitempty), ``ready`` and ``terminating``
(always present), ``uncountedTerminatedPods: {}``; once enough pods succeeded ``completionTime``
and the conditions ``SuccessCriteriaMet`` then ``Complete`` (reason ``CompletionsReached``); more
failures than ``backoffLimit``: ``FailureTarget`` and ``Failed`` (``BackoffLimitExceeded``). A
finished Job creates no more pods. Its pods stay until the Job goes (garbage collector).

PodDisruptionBudget: status from the pods its selector matches in its namespace (expectedPods,
currentHealthy = Ready pods, desiredHealthy from minAvailable or maxUnavailable, int or percent,
disruptionsAllowed, observedGeneration) and condition ``DisruptionAllowed``
(SufficientPods / InsufficientPods), which kstatus and ``kubectl get pdb`` read.
"""

from __future__ import annotations

import copy
import math
from typing import Any

from sandbox.kube.controllers._base import (
    Context,
    Obj,
    condition,
    controller_of,
    deleting,
    now,
    pod_from_template,
    pod_ready,
    selector_string,
    write_status,
)

JOB_KEY = "jobs.batch"
PDB_KEY = "poddisruptionbudgets.policy"
_DONE_MESSAGE = "Reached expected number of succeeded pods"


def is_job_pod(pod: Obj) -> bool:
    return (controller_of(pod) or {}).get("kind") == "Job"


def _cond(ctype: str, reason: str, message: str, stamp: str) -> Obj:
    return {
        "type": ctype,
        "status": "True",
        "lastProbeTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }


class JobController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def reconcile(self, namespace: str, name: str) -> None:
        job = self.ctx.store.try_get(JOB_KEY, namespace, name)
        if job is None or deleting(job):
            return
        spec = job["spec"]
        uid = job["metadata"]["uid"]
        pods = [p for p in self.ctx.store.list("pods", namespace) if (controller_of(p) or {}).get("uid") == uid]
        phase = {p["metadata"]["name"]: (p.get("status") or {}).get("phase") for p in pods}
        active = [p for p in pods if phase[p["metadata"]["name"]] not in ("Succeeded", "Failed") and not deleting(p)]
        succeeded = sum(1 for v in phase.values() if v == "Succeeded")
        failed = sum(1 for v in phase.values() if v == "Failed")
        status = copy.deepcopy(job.get("status") or {})
        finished = any((condition(job, t) or {}).get("status") == "True" for t in ("Complete", "Failed"))
        completions = spec.get("completions")
        parallelism = int(spec.get("parallelism", 1))
        stamp = now()
        if not finished and not spec.get("suspend"):
            status.setdefault("startTime", stamp)
            if completions is not None and succeeded >= int(completions):
                conditions = [
                    _cond("SuccessCriteriaMet", "CompletionsReached", _DONE_MESSAGE, stamp),
                    _cond("Complete", "CompletionsReached", _DONE_MESSAGE, stamp),
                ]
                status["conditions"] = [*(status.get("conditions") or []), *conditions]
                status["completionTime"] = stamp
                finished = True
            elif failed > int(spec.get("backoffLimit", 6)):
                message = "Job has reached the specified backoff limit"
                conditions = [
                    _cond("FailureTarget", "BackoffLimitExceeded", message, stamp),
                    _cond("Failed", "BackoffLimitExceeded", message, stamp),
                ]
                status["conditions"] = [*(status.get("conditions") or []), *conditions]
                finished = True
            else:
                remaining = (int(completions) - succeeded) if completions is not None else parallelism
                want = min(parallelism, max(remaining, 0))
                while len(active) < want:
                    active.append(self._create_pod(job))
        self._write(job, status, active, succeeded, failed, finished)

    def _create_pod(self, job: Obj) -> Obj:
        created = self.ctx.store.create("pods", pod_from_template(job), namespace=job["metadata"]["namespace"])
        self.ctx.record_event(
            job, "SuccessfulCreate", f"Created pod: {created['metadata']['name']}", component="job-controller"
        )
        return created

    def _write(self, job: Obj, status: Obj, active: list[Obj], succeeded: int, failed: int, finished: bool) -> None:
        out: dict[str, Any] = {k: v for k, v in status.items() if k not in ("active", "succeeded", "failed")}
        running = 0 if finished else len(active)
        if running:
            out["active"] = running
        if succeeded:
            out["succeeded"] = succeeded
        if failed:
            out["failed"] = failed
        out["ready"] = 0 if finished else sum(1 for p in active if pod_ready(p))
        out["terminating"] = 0
        out["uncountedTerminatedPods"] = {}
        if job["spec"].get("suspend") and not finished and not out.get("startTime"):
            out.pop("ready", None)
        was_complete = (condition(job, "Complete") or {}).get("status") == "True"
        if finished and not was_complete and "completionTime" in out:
            self.ctx.record_event(job, "Completed", "Job completed", component="job-controller")
        write_status(self.ctx.store, JOB_KEY, job, out)


class DisruptionController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def reconcile(self, namespace: str, name: str) -> None:
        pdb = self.ctx.store.try_get(PDB_KEY, namespace, name)
        if pdb is None or deleting(pdb):
            return
        spec = pdb.get("spec") or {}
        selector = spec.get("selector") or {}
        if selector.get("matchExpressions"):
            pods = [p for p in self.ctx.store.list("pods", namespace) if _matches(selector, p)]
        else:
            labels = selector.get("matchLabels") or {}
            pods = self.ctx.store.list("pods", namespace, label_selector=selector_string(labels)) if labels else []
        pods = [
            p for p in pods if not deleting(p) and (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
        ]
        expected = len(pods)
        healthy = sum(1 for p in pods if pod_ready(p))
        if spec.get("minAvailable") is not None:
            desired = _resolve(spec["minAvailable"], expected, round_up=True)
        elif spec.get("maxUnavailable") is not None:
            desired = max(expected - _resolve(spec["maxUnavailable"], expected, round_up=True), 0)
        else:
            desired = expected
        allowed = max(healthy - desired, 0)
        prev = condition(pdb, "DisruptionAllowed")
        value = "True" if allowed > 0 else "False"
        reason = "SufficientPods" if allowed > 0 else "InsufficientPods"
        since = prev["lastTransitionTime"] if prev and prev.get("status") == value else now()
        status = {
            "observedGeneration": pdb["metadata"].get("generation", 1),
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [
                {
                    "type": "DisruptionAllowed",
                    "status": value,
                    "reason": reason,
                    "message": "",
                    "observedGeneration": pdb["metadata"].get("generation", 1),
                    "lastTransitionTime": since,
                }
            ],
        }
        write_status(self.ctx.store, PDB_KEY, pdb, status)


def _resolve(value: Any, total: int, *, round_up: bool) -> int:
    if isinstance(value, str) and value.endswith("%"):
        scaled = int(value[:-1]) * total / 100
        return math.ceil(scaled) if round_up else math.floor(scaled)
    return int(value)


def _matches(selector: Obj, pod: Obj) -> bool:
    labels = pod["metadata"].get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key"), expr.get("operator"), expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True
