"""Field ownership (``metadata.managedFields``) and server-side apply for the simulated API server.

Why: Helm 4 installs and upgrades with server-side apply (``PATCH`` with
``application/apply-patch+yaml``, ``fieldManager=helm``) and ``kubectl apply --server-side``
is how operators fix drift; both rely on the server tracking which manager owns which
field and refusing (409) to let one manager silently take another's field.

What it does, as the real server's fieldmanager does:
- every create/update/patch records an ``Update`` entry for its manager (``fieldManager``
  query, else the User-Agent's product, e.g. ``kubectl``) owning the fields it set or
  changed; those fields leave every other manager's set;
- ``apply()`` merges an applied configuration into the live object: fields the manager
  applied before and no longer applies are removed (unless another manager owns them),
  applied fields are set; a field owned by another manager with a different value is a
  conflict (409 ``Apply failed with N conflict(s)``, one ``FieldManagerConflict`` cause per
  field) unless ``force``, which takes the field over.
Simplification: lists are atomic (owned as a whole), as for ``x-kubernetes-list-type:
atomic``; the real server tracks associative lists (containers by name) per item.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from sandbox.kube.store import ApiError, now_rfc3339

Path = tuple[str, ...]
_SERVER_META = {
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "generateName",
}


def leaves(obj: Any, prefix: Path = (), *, status: bool = False) -> dict[Path, Any]:
    """Leaf paths of an object's user-visible fields (lists and empty maps are leaves)."""
    out: dict[Path, Any] = {}
    if not isinstance(obj, dict) or (not obj and prefix):
        out[prefix] = obj
        return out
    for key, value in obj.items():
        if not prefix and (key in ("apiVersion", "kind") or (key == "status") != status):
            continue
        if prefix == ("metadata",) and key in _SERVER_META:
            continue
        out.update(leaves(value, (*prefix, key)))
    return out


def to_fields_v1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(f"f:{part}", {})
    return root


def from_fields_v1(fields: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(fields, dict):
        return out
    children = [k for k in fields if k.startswith("f:")]
    if not children and prefix:
        out.add(prefix)
    if any(k.startswith(("k:", "v:", "i:")) for k in fields) and prefix:
        out.add(prefix)  # an associative list item: owned here as a whole list
    for key in children:
        out |= from_fields_v1(fields[key], (*prefix, key[2:]))
    return out


def _get(obj: Any, path: Path) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return _MISSING
        obj = obj[part]
    return obj


class _Missing:
    pass


_MISSING = _Missing()


def _set(obj: dict[str, Any], path: Path, value: Any) -> None:
    for part in path[:-1]:
        nxt = obj.get(part)
        if not isinstance(nxt, dict):
            nxt = obj[part] = {}
        obj = nxt
    obj[path[-1]] = copy.deepcopy(value)


def _remove(obj: dict[str, Any], path: Path) -> None:
    parents = []
    node: Any = obj
    for part in path[:-1]:
        if not isinstance(node, dict) or part not in node:
            return
        parents.append((node, part))
        node = node[part]
    if isinstance(node, dict):
        node.pop(path[-1], None)
    for parent, part in reversed(parents):  # prune maps left empty
        if parent[part] == {}:
            parent.pop(part)
        else:
            break


def _overlaps(a: Path, b: Path) -> bool:
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def _entries(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [e for e in (obj.get("metadata") or {}).get("managedFields") or [] if isinstance(e, dict)]


def _owned(entry: dict[str, Any]) -> set[Path]:
    return from_fields_v1(entry.get("fieldsV1") or {})


def _entry(manager: str, operation: str, api_version: str, paths: set[Path], subresource: str | None) -> dict[str, Any]:
    e: dict[str, Any] = {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": now_rfc3339(),
        "fieldsType": "FieldsV1",
        "fieldsV1": to_fields_v1(paths),
    }
    if subresource:
        e["subresource"] = subresource
    return e


def _same(e: dict[str, Any], manager: str, operation: str, subresource: str | None) -> bool:
    return e.get("manager") == manager and e.get("operation") == operation and e.get("subresource") == subresource


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in obj.items() if k != "metadata"}
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k not in ("managedFields", "resourceVersion")}
    out["metadata"] = meta
    return out


def record_update(
    old: dict[str, Any] | None, new: dict[str, Any], manager: str, subresource: str | None = None
) -> None:
    """Set ``new.metadata.managedFields`` after a non-apply write by ``manager`` (in place)."""
    meta = new.setdefault("metadata", {})
    if old is not None and _content(old) == _content(new):
        meta["managedFields"] = copy.deepcopy(_entries(old))  # a no-op writes nothing
        return
    status = subresource == "status"
    now = leaves(new, status=status)
    if old is None:
        changed = set(now)
        entries: list[dict[str, Any]] = []
    else:
        before = leaves(old, status=status)
        changed = {p for p, v in now.items() if before.get(p, _MISSING) != v}
        gone = {p for p in before if p not in now}
        entries = []
        for e in _entries(old):
            owned = {p for p in _owned(e) if not any(_overlaps(p, c) for c in changed | gone)}
            if _same(e, manager, "Update", subresource):
                continue
            if owned:
                entries.append({**e, "fieldsV1": to_fields_v1(owned)})
        mine = next((e for e in _entries(old) if _same(e, manager, "Update", subresource)), None)
        if mine is not None:
            changed |= {p for p in _owned(mine) if p in now}
    if changed:
        entries.append(_entry(manager, "Update", str(new.get("apiVersion", "")), changed, subresource))
    meta["managedFields"] = entries


def _conflict_error(conflicts: list[tuple[dict[str, Any], Path]]) -> ApiError:
    def who(e: dict[str, Any]) -> str:
        name = json.dumps(e.get("manager", ""))
        if e.get("operation") == "Update":
            return f"{name} using {e.get('apiVersion', '')}" + (f" at {e['time']}" if e.get("time") else "")
        return name

    def dotted(p: Path) -> str:
        return "".join(f".{part}" for part in p)

    causes = [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who(e)}", "field": dotted(p)}
        for e, p in conflicts
    ]
    if len(conflicts) == 1:
        e, p = conflicts[0]
        message = f"Apply failed with 1 conflict: conflict with {who(e)}: {dotted(p)}"
    else:
        by: dict[str, list[str]] = {}
        for e, p in conflicts:
            by.setdefault(who(e), []).append(dotted(p))
        lines = []
        for m in sorted(by):
            lines.append(f"conflicts with {m}:")
            lines.extend(f"- {p}" for p in by[m])
        message = f"Apply failed with {len(conflicts)} conflicts: " + "\n".join(lines)
    return ApiError(409, "Conflict", message, {"causes": causes})


def _conflicts(
    others: list[dict[str, Any]], manager: str, applied: dict[Path, Any], live: dict[str, Any], config: dict[str, Any]
) -> list[tuple[dict[str, Any], Path]]:
    out: list[tuple[dict[str, Any], Path]] = []
    for e in others:
        if e.get("manager") == manager:
            continue  # the same manager's Update entry never conflicts with its Apply
        for p in sorted(_owned(e)):
            if any(_overlaps(p, a) for a in applied) and _get(live, p) != _get(config, p):
                out.append((e, p))
    return out


def apply(
    live: dict[str, Any] | None,
    config: dict[str, Any],
    manager: str,
    *,
    force: bool,
    subresource: str | None = None,
) -> dict[str, Any]:
    """The object after ``manager`` applies ``config`` to ``live`` (None: create); raises 409 on conflicts."""
    status = subresource == "status"
    applied = leaves(config, status=status)
    if live is None:
        obj = copy.deepcopy(config)
        obj.setdefault("metadata", {})["managedFields"] = [
            _entry(manager, "Apply", str(config.get("apiVersion", "")), set(applied), subresource)
        ]
        return obj
    obj = copy.deepcopy(live)
    entries = _entries(live)
    mine = next((e for e in entries if _same(e, manager, "Apply", subresource)), None)
    others = [e for e in entries if e is not mine]
    conflicts = _conflicts(others, manager, applied, live, config)
    if conflicts and not force:
        raise _conflict_error(conflicts)
    taken = {p for _, p in conflicts}
    still_owned: set[Path] = set()
    new_entries: list[dict[str, Any]] = []
    for e in others:
        owned = _owned(e)
        if e.get("manager") == manager:
            owned = {p for p in owned if not any(_overlaps(p, a) for a in applied)}
        owned -= taken
        still_owned |= owned
        if owned:
            new_entries.append({**e, "fieldsV1": to_fields_v1(owned)})
    if mine is not None:
        for p in _owned(mine):
            if p not in applied and not any(_overlaps(p, a) for a in applied) and p not in still_owned:
                _remove(obj, p)
    for p, v in applied.items():
        if p:
            _set(obj, p, v)
    new_entries.append(_entry(manager, "Apply", str(config.get("apiVersion", "")), set(applied), subresource))
    if _content(obj) == _content(live) and _untimed(new_entries) == _untimed(entries):
        new_entries = copy.deepcopy(entries)  # nothing changed: keep the times, so nothing is written
    obj.setdefault("metadata", {})["managedFields"] = new_entries
    return obj


def _untimed(entries: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return sorted(
        (str(e.get("manager")), str(e.get("operation")), str(e.get("subresource")), json.dumps(e.get("fieldsV1")))
        for e in entries
    )
