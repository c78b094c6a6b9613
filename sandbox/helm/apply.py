"""How helm's kube client applies a release to the cluster (helm/helm pkg/kube, pkg/action).

- ``with_ownership``: helm's ``setMetadataVisitor``: every object sent gets the label
  ``app.kubernetes.io/managed-by: Helm`` and the annotations ``meta.helm.sh/release-name`` /
  ``-namespace`` (the stored manifest does not carry them).
- ``existing_conflicts``: ``existingResourceConflict``: an object that already exists is adopted
  only when its ownership metadata names this release, else the install/upgrade fails with
  helm's ``... exists and cannot be imported into the current release: invalid ownership
  metadata; ...`` message.
- ``create_all`` / ``update_all``: ``Client.Create`` and ``Client.Update`` (create what is missing,
  patch what changed with a minimal patch so unchanged objects are not rewritten, delete what
  left the chart unless annotated ``helm.sh/resource-policy: keep``).
- ``delete_all``: uninstall's deletion (``keep`` objects survive; 404s ignored).
- ``wait_ready``: ``--wait``: Deployments/StatefulSets ready, PVCs bound, until the timeout.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from sandbox.helm.kubeclient import KubeApiError, KubeClient
from sandbox.helm.render import UNINSTALL_ORDER

Obj = dict[str, Any]
MANAGED_BY = "app.kubernetes.io/managed-by"
RELEASE_NAME = "meta.helm.sh/release-name"
RELEASE_NAMESPACE = "meta.helm.sh/release-namespace"
KEEP_POLICY = "helm.sh/resource-policy"


class WaitTimeout(Exception):
    def __init__(self) -> None:
        super().__init__("context deadline exceeded")


def key(obj: Obj) -> tuple[str, str, str]:
    return (str(obj.get("apiVersion")), str(obj.get("kind")), str(obj["metadata"]["name"]))


def with_ownership(obj: Obj, release: str, namespace: str) -> Obj:
    out = copy.deepcopy(obj)
    meta = out.setdefault("metadata", {})
    meta.setdefault("labels", {})[MANAGED_BY] = "Helm"
    annotations = meta.setdefault("annotations", {})
    annotations[RELEASE_NAME] = release
    annotations[RELEASE_NAMESPACE] = namespace
    return out


def kept(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("annotations") or {}).get(KEEP_POLICY) == "keep"


def _require(meta: dict[str, str], k: str, v: str) -> str | None:
    if k not in meta:
        return f'missing key "{k}": must be set to "{v}"'
    if meta[k] != v:
        return f'key "{k}" must equal "{v}": current value is "{meta[k]}"'
    return None


def ownership_error(existing: Obj, release: str, namespace: str) -> str | None:
    meta = existing.get("metadata") or {}
    labels = meta.get("labels") or {}
    annotations = meta.get("annotations") or {}
    problems = []
    if (msg := _require(labels, MANAGED_BY, "Helm")) is not None:
        problems.append(f"label validation error: {msg}")
    for k, v in ((RELEASE_NAME, release), (RELEASE_NAMESPACE, namespace)):
        if (msg := _require(annotations, k, v)) is not None:
            problems.append(f"annotation validation error: {msg}")
    if not problems:
        return None
    return "; ".join(["invalid ownership metadata", *problems])


def existing_conflicts(kube: KubeClient, targets: list[Obj], release: str, namespace: str) -> list[Obj]:
    """The targets that already exist and may be adopted; raises ``RuntimeError`` otherwise."""
    adopt = []
    for obj in targets:
        api, kind, name = key(obj)
        what = f'{kind} "{name}" in namespace "{namespace}"'
        try:
            live = kube.get(api, kind, namespace, name)
        except KubeApiError as err:
            raise RuntimeError(f"could not get information about the resource {what}: {err.message}") from None
        if live is None:
            continue
        problem = ownership_error(live, release, namespace)
        if problem is not None:
            raise RuntimeError(f"{what} exists and cannot be imported into the current release: {problem}")
        adopt.append(obj)
    return adopt


def create_all(kube: KubeClient, targets: list[Obj], namespace: str) -> None:
    for obj in targets:
        try:
            kube.create(obj, namespace)
        except KubeApiError as err:
            raise RuntimeError(err.message) from None


_SAME = object()


def _diff(live: Any, target: Any, original: Any) -> Any:
    """A merge patch taking ``live`` to ``target`` (``_SAME`` when equal); keys that were in
    ``original`` (the previous manifest) but left ``target`` are deleted with ``null``."""
    if not (isinstance(target, dict) and isinstance(live, dict)):
        return _SAME if live == target else copy.deepcopy(target)
    previous = original if isinstance(original, dict) else {}
    patch: dict[str, Any] = {}
    for k, value in target.items():
        sub = _diff(live[k], value, previous.get(k)) if k in live else copy.deepcopy(value)
        if sub is not _SAME:
            patch[k] = sub
    for k in previous:
        if k not in target and k in live:
            patch[k] = None
    return patch if patch else _SAME


def three_way_patch(original: Obj | None, target: Obj, live: Obj) -> Obj:
    """What helm's strategic three-way merge would send; ``{}`` when nothing changed."""
    patch = _diff({k: v for k, v in live.items() if k != "status"}, target, original)
    return patch if isinstance(patch, dict) else {}


def _apply_one(kube: KubeClient, obj: Obj, original: dict[tuple[str, str, str], Obj], namespace: str) -> str | None:
    """Create or patch one target; returns a patch error message (create errors raise)."""
    api, kind, name = key(obj)
    try:
        live = kube.get(api, kind, namespace, name)
    except KubeApiError as err:
        raise RuntimeError(f"could not get information about the resource: {err.message}") from None
    if live is None:
        try:
            kube.create(obj, namespace)
        except KubeApiError as err:
            raise RuntimeError(f"failed to create resource: {err.message}") from None
        return None
    if key(obj) not in original:
        raise RuntimeError(f'no {kind} with the name "{name}" found')
    patch = three_way_patch(original[key(obj)], obj, live)
    if not patch:
        return None
    try:
        kube.patch(api, kind, namespace, name, patch)
    except KubeApiError as err:
        return f'cannot patch "{name}" with kind {kind}: {err.message}'
    return None


def _delete_removed(kube: KubeClient, original: list[Obj], targets: list[Obj], namespace: str) -> None:
    """Delete what the previous release had and the new one has not (unless kept)."""
    target_keys = {key(o) for o in targets}
    for obj in original:
        if key(obj) in target_keys:
            continue
        api, kind, name = key(obj)
        try:
            live = kube.get(api, kind, namespace, name)
            if live is not None and not kept(live):
                kube.delete(api, kind, namespace, name)
        except KubeApiError:
            continue


def update_all(kube: KubeClient, original: list[Obj], targets: list[Obj], namespace: str) -> None:
    """helm's Client.Update: create missing, patch existing, delete what left the chart."""
    by_key = {key(o): o for o in original}
    errors = [e for obj in targets if (e := _apply_one(kube, obj, by_key, namespace)) is not None]
    if errors:
        raise RuntimeError(" && ".join(errors))
    _delete_removed(kube, original, targets, namespace)


def delete_all(kube: KubeClient, objects: list[Obj], namespace: str, propagation: str) -> tuple[list[Obj], list[str]]:
    """Delete in helm's uninstall order; returns (deleted objects, error messages)."""
    order = {kind: i for i, kind in enumerate(UNINSTALL_ORDER)}
    ordered = sorted(objects, key=lambda o: order.get(str(o.get("kind")), len(order)))
    deleted, errors = [], []
    for obj in ordered:
        api, kind, name = key(obj)
        try:
            kube.delete(api, kind, namespace, name, propagation)
        except KubeApiError as err:
            if not err.not_found:
                errors.append(err.message)
                continue
        deleted.append(obj)
    return deleted, errors


def _ready(obj: Obj, live: Obj | None) -> bool:
    if live is None:
        return False
    kind = obj.get("kind")
    spec = live.get("spec") or {}
    status = live.get("status") or {}
    replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    if kind == "Deployment":
        max_unavailable = replicas // 4  # the 25% default, rounded down
        return int(status.get("readyReplicas") or 0) >= replicas - max_unavailable
    if kind == "StatefulSet":
        return int(status.get("readyReplicas") or 0) == replicas
    if kind == "PersistentVolumeClaim":
        return status.get("phase") == "Bound"
    return True


def wait_ready(kube: KubeClient, objects: list[Obj], namespace: str, timeout: float, interval: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        pending = False
        for obj in objects:
            api, kind, name = key(obj)
            try:
                live = kube.get(api, kind, namespace, name)
            except KubeApiError:
                live = None
            if not _ready(obj, live):
                pending = True
                break
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise WaitTimeout
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def wait_deleted(kube: KubeClient, objects: list[Obj], namespace: str, timeout: float, interval: float) -> str | None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = []
        for obj in objects:
            api, kind, name = key(obj)
            try:
                if kube.get(api, kind, namespace, name) is not None:
                    remaining.append(obj)
            except KubeApiError:
                remaining.append(obj)
        if not remaining:
            return None
        if time.monotonic() >= deadline:
            return "timed out waiting for the condition"
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))
