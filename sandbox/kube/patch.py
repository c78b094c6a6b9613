"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902) for the simulated API server.

Both functions are pure: they return a new document and never modify their inputs. A JSON
patch that cannot be applied (missing path, failed ``test``) raises ``PatchApplyError`` (the
real server answers 422); a patch document of the wrong shape raises ``PatchFormatError``
(the real server answers 400). Strategic merge patch is treated as a merge patch by the
store, which is what it is for everything but lists with merge keys.
"""

from __future__ import annotations

import copy
from typing import Any


class PatchFormatError(ValueError):
    """The patch document itself is malformed (HTTP 400)."""


class PatchApplyError(ValueError):
    """The patch is well-formed but cannot be applied to this document (HTTP 422)."""


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, null deletes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def _split_pointer(pointer: Any) -> list[str]:
    if not isinstance(pointer, str):
        raise PatchFormatError(f"invalid JSON pointer: {pointer!r}")
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PatchApplyError(f'JSON pointer must be empty or start with a "/": {pointer}')
    return [_unescape(p) for p in pointer[1:].split("/")]


def _index(container: list[Any], token: str, pointer: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchApplyError(f"invalid array index {token!r} in {pointer}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchApplyError(f"array index out of bounds: {idx} in {pointer}")
    return idx


def _parent(doc: Any, pointer: str) -> tuple[Any, str]:
    parts = _split_pointer(pointer)
    if not parts:
        raise PatchApplyError("cannot operate on the document root")
    cur = doc
    for token in parts[:-1]:
        if isinstance(cur, dict):
            if token not in cur:
                raise PatchApplyError(f"doc is missing path: {pointer}: missing value")
            cur = cur[token]
        elif isinstance(cur, list):
            cur = cur[_index(cur, token, pointer, allow_end=False)]
        else:
            raise PatchApplyError(f"doc is missing path: {pointer}: missing value")
    return cur, parts[-1]


def _get(doc: Any, pointer: str) -> Any:
    if pointer == "":
        return doc
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchApplyError(f"doc is missing path: {pointer}: missing value")
        return parent[token]
    if isinstance(parent, list):
        return parent[_index(parent, token, pointer, allow_end=False)]
    raise PatchApplyError(f"doc is missing path: {pointer}: missing value")


def _add(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        parent[token] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, token, pointer, allow_end=True), value)
    else:
        raise PatchApplyError(f"doc is missing path: {pointer}: missing value")
    return doc


def _remove(doc: Any, pointer: str) -> tuple[Any, Any]:
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchApplyError(f"Unable to remove nonexistent key: {token}: missing value")
        return doc, parent.pop(token)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, token, pointer, allow_end=False))
    raise PatchApplyError(f"doc is missing path: {pointer}: missing value")


def _replace(doc: Any, pointer: str, value: Any) -> Any:
    if pointer == "":
        return value
    parent, token = _parent(doc, pointer)
    if isinstance(parent, dict):
        if token not in parent:
            raise PatchApplyError(f"replace operation does not apply: doc is missing key: {pointer}: missing value")
        parent[token] = value
    elif isinstance(parent, list):
        parent[_index(parent, token, pointer, allow_end=False)] = value
    else:
        raise PatchApplyError(f"doc is missing path: {pointer}: missing value")
    return doc


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    path = op.get("path")
    if not isinstance(path, str):
        raise PatchApplyError(f"operation missing path: {op}")
    if kind in ("add", "replace", "test") and "value" not in op:
        raise PatchApplyError(f"missing value for {kind} operation")
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)[0]
    if kind == "replace":
        return _replace(doc, path, copy.deepcopy(op["value"]))
    if kind in ("move", "copy"):
        source = op.get("from")
        if not isinstance(source, str):
            raise PatchApplyError(f"missing from for {kind} operation")
        if kind == "move":
            doc, value = _remove(doc, source)
        else:
            value = copy.deepcopy(_get(doc, source))
        return _add(doc, path, value)
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise PatchApplyError(f"testing value {path} failed: test failed")
        return doc
    raise PatchApplyError(f"Unexpected kind: {kind}")


def json_patch(target: Any, ops: Any) -> Any:
    """RFC 6902: apply the operations in order to a copy of target; all or nothing."""
    if not isinstance(ops, list) or not all(isinstance(op, dict) for op in ops):
        raise PatchFormatError(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            if isinstance(ops, dict)
            else "invalid JSON patch: expected an array of operations"
        )
    doc = copy.deepcopy(target)
    for op in ops:
        doc = _apply_op(doc, op)
    return doc
