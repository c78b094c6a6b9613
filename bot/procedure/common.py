"""Small shared helpers of the procedure: versions, values, PVC descriptions, pod readiness."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

import yaml

JSON = dict[str, Any]


def version_tuple(version: str) -> tuple[int, ...]:
    """'v2.5.10' / '4.2.40' / '2.5.10-gpu' -> (2, 5, 10); unknown parts become 0."""
    parts = re.findall(r"\d+", version.lstrip("v").split("-")[0].split("+")[0])
    return tuple(int(p) for p in parts[:3]) + (0,) * (3 - len(parts[:3]))


def is_milvus_25(version: str) -> bool:
    return version_tuple(version)[:2] == (2, 5)


def dig(values: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(values, dict):
            return None
        values = values.get(key)
    return values


def with_pulsar_v3(values: JSON) -> JSON:
    """The saved values with exactly two changes: pulsar.enabled false, pulsarv3.enabled true."""
    new = copy.deepcopy(values)
    pulsar = new.get("pulsar")
    new["pulsar"] = {**(pulsar if isinstance(pulsar, dict) else {}), "enabled": False}
    v3 = new.get("pulsarv3")
    new["pulsarv3"] = {**(v3 if isinstance(v3, dict) else {}), "enabled": True}
    return new


def values_diff(before: JSON, after: JSON, prefix: str = "") -> list[str]:
    """Lines like '~ pulsar.enabled: true -> false' / '+ pulsarv3.enabled: true'."""
    lines = []
    for key in sorted(set(before) | set(after), key=str):
        path = f"{prefix}{key}"
        a, b = before.get(key, _MISSING), after.get(key, _MISSING)
        if isinstance(a, dict) and isinstance(b, dict):
            lines += values_diff(a, b, path + ".")
        elif a is _MISSING and isinstance(b, dict):
            lines += [f"+ {line[2:]}" for line in values_diff({}, b, path + ".")]
        elif a is _MISSING:
            lines.append(f"+ {path}: {_show(b)}")
        elif b is _MISSING:
            lines.append(f"- {path}: {_show(a)}")
        elif a != b:
            lines.append(f"~ {path}: {_show(a)} -> {_show(b)}")
    return lines


_MISSING = object()


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, str) else str(value)


def describe_pvc(pvc: JSON) -> JSON:
    meta, spec = pvc.get("metadata", {}), pvc.get("spec", {})
    return {
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "size": dig(spec, "resources", "requests", "storage") or dig(pvc, "status", "capacity", "storage") or "?",
        "storage_class": spec.get("storageClassName") or "(default)",
        "volume": spec.get("volumeName") or "",
        "deleting": bool(meta.get("deletionTimestamp")),
    }


def describe_pv(pv: JSON) -> JSON:
    claim = dig(pv, "spec", "claimRef") or {}
    return {
        "name": dig(pv, "metadata", "name"),
        "reclaim": dig(pv, "spec", "persistentVolumeReclaimPolicy") or "?",
        "claim_namespace": claim.get("namespace"),
        "claim_name": claim.get("name"),
        "claim_uid": claim.get("uid"),
        "phase": dig(pv, "status", "phase") or "?",
    }


def pod_ready(pod: JSON) -> bool:
    """Ready, or finished: a Job's pod (the chart's pulsar-init, bookie-init) ends Succeeded and
    is never Ready again, and waiting for it would wait forever."""
    if dig(pod, "metadata", "deletionTimestamp"):
        return False
    if dig(pod, "status", "phase") == "Succeeded":
        return True
    for cond in dig(pod, "status", "conditions") or []:
        if cond.get("type") == "Ready":
            return cond.get("status") == "True"
    return False


def pod_row(pod: JSON) -> str:
    statuses = dig(pod, "status", "containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    restarts = sum(int(s.get("restartCount") or 0) for s in statuses)
    phase = dig(pod, "status", "phase") or "?"
    return f"{dig(pod, 'metadata', 'name')}  {ready}/{len(statuses) or '?'}  {phase}  restarts={restarts}"


def yaml_documents(text: str) -> list[Any]:
    """Every document of ``text`` (a release's manifest), parsed by libyaml when PyYAML has it
    (several times faster on a whole chart's manifest: it was the largest stretch of the bot's
    own time in an upgrade); a text libyaml refuses is parsed again by PyYAML itself, so that
    what is accepted and the error raised are PyYAML's (yaml.YAMLError)."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return list(yaml.load_all(text, Loader=loader))
        except yaml.YAMLError:
            pass
    return list(yaml.safe_load_all(text))


def watch_until(events: Iterable[JSON], done: Callable[[JSON], bool], seconds: float, poll: float) -> bool:
    """Give each watch event to ``done`` until it says the wait is over or ``seconds`` have passed:
    True. False when the watch ended before either (an error, or the server closed it), after
    sleeping what is left of ``seconds``, at most ``poll``: the caller then lists once instead."""
    until = time.monotonic() + seconds
    for event in events:
        if done(event) or time.monotonic() > until:
            return True
    if time.monotonic() < until:
        time.sleep(min(poll, max(0.0, until - time.monotonic())))
    return False
