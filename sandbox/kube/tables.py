"""Server-side printing: ``meta.k8s.io/v1`` Table answers for ``kubectl get``.

Why: kubectl asks for ``Accept: application/json;as=Table;v=v1;g=meta.k8s.io, ...`` and
prints the columns the server chose (READY, STATUS, RESTARTS for pods, ...); without a Table
it falls back to NAME/AGE only, which no real cluster shows. This module renders the columns
the real API server's printers (k8s.io/kubernetes/pkg/printers/internalversion) produce for
the kinds the sandbox serves, ``additionalPrinterColumns`` for custom resources (read from
their CRD in the store), and Name / Created At for anything else. Priority 1 columns are the
ones ``-o wide`` adds. Ages are rendered like ``duration.HumanDuration``.

Each row carries the object as ``includeObject`` asks (default ``Metadata``: a
``PartialObjectMetadata``; ``Object``: the whole object; ``None``: nothing).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sandbox.kube.store import ResourceType, bad_request

Obj = dict[str, Any]
Column = tuple[str, str, int, str]  # name, type, priority, format
_NAME: Column = ("Name", "string", 0, "name")
_AGE: Column = ("Age", "string", 0, "")


def table_version(accept: str) -> str | None:
    """'v1' / 'v1beta1' when the Accept header's first usable media range asks for a Table."""
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        opts = dict(p.split("=", 1) for p in params if "=" in p)
        if media not in ("application/json", "*/*", "application/*"):
            continue
        if opts.get("as") == "Table" and opts.get("g") == "meta.k8s.io" and opts.get("v") in ("v1", "v1beta1"):
            return opts["v"]
        if "as" not in opts:
            return None
    return None


def human_duration(seconds: float) -> str:
    s = int(seconds)
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m" if s % 60 == 0 else f"{minutes}m{s % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" if hours % 24 == 0 else f"{hours // 24}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if days == 0 else f"{hours // 24 // 365}y{days}d"
    return f"{hours // 24 // 365}y"


def _age(obj: Obj) -> str:
    stamp = (obj.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return "<unknown>"
    then = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    return human_duration((datetime.now(UTC) - then).total_seconds())


def _containers(spec: Obj) -> tuple[str, str]:
    containers = spec.get("containers") or []
    return ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)


def _selector(sel: Obj | None) -> str:
    if not sel:
        return "<none>"
    parts = [f"{k}={v}" for k, v in sorted((sel.get("matchLabels") or {}).items())]
    for expr in sel.get("matchExpressions") or []:
        op, values = expr.get("operator"), ",".join(expr.get("values") or [])
        key = expr.get("key", "")
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": key}.get(op or "", f"!{key}")
        )
    return ",".join(parts) or "<none>"


def _pod(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    statuses = status.get("containerStatuses") or []
    ready = sum(1 for c in statuses if c.get("ready"))
    restarts = sum(int(c.get("restartCount") or 0) for c in statuses)
    reason = status.get("reason") or status.get("phase") or ""
    for c in statuses:
        state = c.get("state") or {}
        if (state.get("waiting") or {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif (state.get("terminated") or {}).get("reason"):
            reason = state["terminated"]["reason"]
    if obj["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    gates = spec.get("readinessGates") or []
    return [
        obj["metadata"]["name"],
        f"{ready}/{len(spec.get('containers') or [])}",
        reason,
        str(restarts),
        _age(obj),
        status.get("podIP") or "<none>",
        spec.get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        "<none>" if not gates else f"0/{len(gates)}",
    ]


def _deployment(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        status.get("updatedReplicas", 0),
        status.get("availableReplicas", 0),
        _age(obj),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _statefulset(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [
        obj["metadata"]["name"],
        f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}",
        _age(obj),
        names,
        images,
    ]


def _replicaset(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    names, images = _containers((spec.get("template") or {}).get("spec") or {})
    return [
        obj["metadata"]["name"],
        spec.get("replicas", 1),
        status.get("replicas", 0),
        status.get("readyReplicas", 0),
        _age(obj),
        names,
        images,
        _selector(spec.get("selector")),
    ]


def _service(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ports = ",".join(
        f"{p.get('port')}{':' + str(p['nodePort']) if p.get('nodePort') else ''}/{p.get('protocol', 'TCP')}"
        for p in spec.get("ports") or []
    )
    external = ",".join(spec.get("externalIPs") or []) or (
        "<pending>" if spec.get("type") == "LoadBalancer" else "<none>"
    )
    selector = spec.get("selector") or {}
    return [
        obj["metadata"]["name"],
        spec.get("type", "ClusterIP"),
        spec.get("clusterIP") or "<none>",
        external,
        ports or "<none>",
        _age(obj),
        ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "<none>",
    ]


def _count(obj: Obj, *fields: str) -> int:
    return sum(len(obj.get(f) or {}) for f in fields)


def _pvc(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    phase = "Terminating" if obj["metadata"].get("deletionTimestamp") else status.get("phase", "")
    bound = bool(spec.get("volumeName"))
    return [
        obj["metadata"]["name"],
        phase,
        spec.get("volumeName", ""),
        (status.get("capacity") or {}).get("storage", "") if bound else "",
        _modes(status.get("accessModes") or []) if bound else "",
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
        _age(obj),
        spec.get("volumeMode", "Filesystem"),
    ]


def _modes(modes: list[str]) -> str:
    short = {"ReadWriteOnce": "RWO", "ReadOnlyMany": "ROX", "ReadWriteMany": "RWX", "ReadWriteOncePod": "RWOP"}
    return ",".join(short.get(m, m) for m in modes)


def _pv(obj: Obj) -> list[Any]:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    ref = spec.get("claimRef") or {}
    claim = f"{ref.get('namespace')}/{ref.get('name')}" if ref else ""
    return [
        obj["metadata"]["name"],
        (spec.get("capacity") or {}).get("storage", ""),
        _modes(spec.get("accessModes") or []),
        spec.get("persistentVolumeReclaimPolicy", ""),
        "Terminating" if obj["metadata"].get("deletionTimestamp") else status.get("phase", ""),
        claim,
        spec.get("storageClassName", ""),
        spec.get("volumeAttributesClassName") or "<unset>",
        status.get("reason", ""),
        _age(obj),
        spec.get("volumeMode", "Filesystem"),
    ]


_PRINTERS: dict[str, tuple[list[Column], Callable[[Obj], list[Any]]]] = {
    "pods": (
        [
            _NAME,
            ("Ready", "string", 0, ""),
            ("Status", "string", 0, ""),
            ("Restarts", "string", 0, ""),
            _AGE,
            ("IP", "string", 1, ""),
            ("Node", "string", 1, ""),
            ("Nominated Node", "string", 1, ""),
            ("Readiness Gates", "string", 1, ""),
        ],
        _pod,
    ),
    "deployments.apps": (
        [
            _NAME,
            ("Ready", "string", 0, ""),
            ("Up-to-date", "integer", 0, ""),
            ("Available", "integer", 0, ""),
            _AGE,
            ("Containers", "string", 1, ""),
            ("Images", "string", 1, ""),
            ("Selector", "string", 1, ""),
        ],
        _deployment,
    ),
    "statefulsets.apps": (
        [_NAME, ("Ready", "string", 0, ""), _AGE, ("Containers", "string", 1, ""), ("Images", "string", 1, "")],
        _statefulset,
    ),
    "replicasets.apps": (
        [
            _NAME,
            ("Desired", "integer", 0, ""),
            ("Current", "integer", 0, ""),
            ("Ready", "integer", 0, ""),
            _AGE,
            ("Containers", "string", 1, ""),
            ("Images", "string", 1, ""),
            ("Selector", "string", 1, ""),
        ],
        _replicaset,
    ),
    "services": (
        [
            _NAME,
            ("Type", "string", 0, ""),
            ("Cluster-IP", "string", 0, ""),
            ("External-IP", "string", 0, ""),
            ("Port(s)", "string", 0, ""),
            _AGE,
            ("Selector", "string", 1, ""),
        ],
        _service,
    ),
    "configmaps": (
        [_NAME, ("Data", "integer", 0, ""), _AGE],
        lambda o: [o["metadata"]["name"], _count(o, "data", "binaryData"), _age(o)],
    ),
    "secrets": (
        [_NAME, ("Type", "string", 0, ""), ("Data", "integer", 0, ""), _AGE],
        lambda o: [o["metadata"]["name"], o.get("type", ""), _count(o, "data"), _age(o)],
    ),
    "namespaces": (
        [_NAME, ("Status", "string", 0, ""), _AGE],
        lambda o: [o["metadata"]["name"], (o.get("status") or {}).get("phase", ""), _age(o)],
    ),
    "serviceaccounts": (
        [_NAME, ("Secrets", "string", 0, ""), _AGE],
        lambda o: [o["metadata"]["name"], len(o.get("secrets") or []), _age(o)],
    ),
    "persistentvolumeclaims": (
        [
            _NAME,
            ("Status", "string", 0, ""),
            ("Volume", "string", 0, ""),
            ("Capacity", "string", 0, ""),
            ("Access Modes", "string", 0, ""),
            ("StorageClass", "string", 0, ""),
            ("VolumeAttributesClass", "string", 0, ""),
            _AGE,
            ("VolumeMode", "string", 1, ""),
        ],
        _pvc,
    ),
    "persistentvolumes": (
        [
            _NAME,
            ("Capacity", "string", 0, ""),
            ("Access Modes", "string", 0, ""),
            ("Reclaim Policy", "string", 0, ""),
            ("Status", "string", 0, ""),
            ("Claim", "string", 0, ""),
            ("StorageClass", "string", 0, ""),
            ("VolumeAttributesClass", "string", 0, ""),
            ("Reason", "string", 0, ""),
            _AGE,
            ("VolumeMode", "string", 1, ""),
        ],
        _pv,
    ),
}


def _json_path(obj: Any, path: str) -> Any:
    """The subset of kubectl JSONPath that printer columns use: .a.b, [n], [?(@.k=="v")]."""
    tokens = re.findall(r'\.([A-Za-z0-9_\-]+)|\[(\d+)\]|\[\?\(@\.([A-Za-z0-9_]+)=="([^"]*)"\)\]', path)
    cur: Any = obj
    for key, index, fkey, fval in tokens:
        if cur is None:
            return None
        if key:
            cur = cur.get(key) if isinstance(cur, dict) else None
        elif index:
            cur = cur[int(index)] if isinstance(cur, list) and int(index) < len(cur) else None
        else:
            cur = next((i for i in cur or [] if isinstance(i, dict) and i.get(fkey) == fval), None)
    return cur


def _custom_printer(crd: Obj | None, version: str) -> tuple[list[Column], Callable[[Obj], list[Any]]]:
    columns: list[dict[str, Any]] = []
    for v in ((crd or {}).get("spec") or {}).get("versions") or []:
        if v.get("name") == version:
            columns = v.get("additionalPrinterColumns") or []
    if not columns:
        return [_NAME, _AGE], lambda o: [o["metadata"]["name"], _age(o)]
    defs: list[Column] = [_NAME]
    for c in columns:
        defs.append(
            (c["name"], "string" if c.get("type") == "date" else c.get("type", "string"), c.get("priority", 0), "")
        )

    def row(o: Obj) -> list[Any]:
        cells: list[Any] = [o["metadata"]["name"]]
        for c in columns:
            value = _json_path(o, c.get("jsonPath", ""))
            if c.get("type") == "date":
                value = _age({"metadata": {"creationTimestamp": value}}) if value else "<unknown>"
            cells.append(value)
        return cells

    return defs, row


def printer(rt: ResourceType, crd: Obj | None) -> tuple[list[Column], Callable[[Obj], list[Any]]]:
    if rt.crd:
        return _custom_printer(crd, rt.version)
    found = _PRINTERS.get(rt.key)
    if found is not None:
        return found
    return [_NAME, ("Created At", "date", 0, "")], lambda o: [
        o["metadata"]["name"],
        (o.get("metadata") or {}).get("creationTimestamp"),
    ]


def _row_object(obj: Obj, include: str, version: str) -> Obj | None:
    if include == "None":
        return None
    if include == "Object":
        return obj
    return {"kind": "PartialObjectMetadata", "apiVersion": f"meta.k8s.io/{version}", "metadata": obj["metadata"]}


def include_object(query: Any) -> str:
    value = query.get("includeObject") or "Metadata"
    if value not in ("None", "Metadata", "Object"):
        raise bad_request(
            f'includeObject: Unsupported value: "{value}": supported values: "Metadata", "None", "Object"'
        )
    return str(value)


def table(
    rt: ResourceType,
    objects: list[Obj],
    crd: Obj | None,
    *,
    version: str = "v1",
    include: str = "Metadata",
    list_meta: Obj | None = None,
) -> Obj:
    columns, row = printer(rt, crd)
    rows = []
    for obj in objects:
        r: Obj = {"cells": row(obj)}
        shown = _row_object(obj, include, version)
        if shown is not None:
            r["object"] = shown
        rows.append(r)
    return {
        "kind": "Table",
        "apiVersion": f"meta.k8s.io/{version}",
        "metadata": list_meta or {},
        "columnDefinitions": [
            {"name": n, "type": t, "format": f, "description": "", "priority": p} for n, t, p, f in columns
        ],
        "rows": rows,
    }
