"""OpenAPI v3 documents of the simulated API server (``/openapi/v3`` and ``/openapi/v3/<gv>``).

Why: helm (both 3 and 4) and kubectl download OpenAPI v3 before they send objects: the
per-group-version document tells them whether the server supports the ``fieldValidation``
query parameter (the PATCH operation of the kind's path lists it, tagged with
``x-kubernetes-group-version-kind``), and ``kubectl explain`` / client-side apply read the
schemas (``x-kubernetes-patch-merge-key`` and friends). Without them helm fails with
"failed to download openapi".

Schemas are the real Kubernetes v1.31 ones: ``data/openapi-schemas-v1.31.json.gz`` is the
``_definitions.json`` shipped by the ``kubernetes-validate`` 1.37.0 package for v1.31.0
(derived from the upstream OpenAPI spec), converted back to OpenAPI form (``$ref`` into
``#/components/schemas``, nullable type lists collapsed, IntOrString as
``format: int-or-string``) and trimmed to the API groups the sandbox can serve. Paths and
operations are built from ``RESOURCES`` so the documents never disagree with discovery; a
custom resource gets a ``x-kubernetes-preserve-unknown-fields`` schema, as a CRD without a
structural schema would. Each document is addressed by the SHA-512 of its bytes
(``?hash=``), like the real server's.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

from sandbox.kube.discovery import SCALABLE, SERVER_VERSION
from sandbox.kube.store import RESOURCES, ResourceType

_DATA = Path(__file__).with_name("data") / "openapi-schemas-v1.31.json.gz"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1"
_REF = "#/components/schemas/"
_PATCH_TYPES = (
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
)


@functools.cache
def schemas() -> dict[str, Any]:
    """Every vendored schema by its OpenAPI name (e.g. ``io.k8s.api.core.v1.Pod``)."""
    loaded: dict[str, Any] = json.loads(gzip.decompress(_DATA.read_bytes()))
    return loaded


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in schemas().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or []:
            out.setdefault((gvk.get("group", ""), gvk["version"], gvk["kind"]), name)
    return out


def _gv_path(group: str, version: str) -> str:
    return f"api/{version}" if not group else f"apis/{group}/{version}"


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "kind": kind, "version": version}


def _custom_schema(rt: ResourceType) -> dict[str, Any]:
    obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"allOf": [{"$ref": f"{_REF}{_META}.ObjectMeta"}]},
            "spec": dict(obj),
            "status": dict(obj),
        },
        "x-kubernetes-preserve-unknown-fields": True,
        "x-kubernetes-group-version-kind": [_gvk(rt.group, rt.version, rt.kind)],
    }


def _schema_names(rt: ResourceType) -> tuple[str, str]:
    """(object schema, list schema) names for a resource."""
    if rt.crd:
        base = ".".join(reversed(rt.group.split("."))) + f".{rt.version}.{rt.kind}"
        return base, f"{base}List"
    name = _by_gvk().get((rt.group, rt.version, rt.kind))
    if name is None:
        return f"{_META}.Status", f"{_META}.Status"
    return name, f"{name}List"


def _param(name: str, where: str = "query", required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required, "schema": {"type": "string", "uniqueItems": True}}


def _op(rt: ResourceType, action: str, op_id: str, schema: str, params: list[str], **extra: Any) -> dict[str, Any]:
    content = {"application/json": {"schema": {"$ref": _REF + schema}}}
    op: dict[str, Any] = {
        "tags": [rt.group.replace(".", "") + "_" + rt.version if rt.group else "core_v1"],
        "operationId": op_id,
        "parameters": [_param(p) for p in params],
        "responses": {"200": {"description": "OK", "content": content}, "401": {"description": "Unauthorized"}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": _gvk(rt.group, rt.version, rt.kind),
    }
    op.update(extra)
    return op


def _body(schema: str, types: tuple[str, ...] = ("*/*",)) -> dict[str, Any]:
    return {"content": {t: {"schema": {"$ref": _REF + schema}} for t in types}, "required": True}


def _paths(rt: ResourceType) -> dict[str, Any]:
    obj, lst = _schema_names(rt)
    prefix = "/" + _gv_path(rt.group, rt.version)
    base = f"{prefix}/namespaces/{{namespace}}/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"
    kind = rt.kind
    ns_params = [_param("namespace", "path", True)] if rt.namespaced else []
    write = ["dryRun", "fieldManager", "fieldValidation"]
    out: dict[str, Any] = {}
    coll: dict[str, Any] = {"parameters": [*ns_params, _param("pretty")]}
    if "list" in rt.verbs:
        coll["get"] = _op(rt, "list", f"list{kind}", lst, ["labelSelector", "fieldSelector", "limit", "continue"])
    if "create" in rt.verbs:
        coll["post"] = _op(rt, "post", f"create{kind}", obj, write, requestBody=_body(obj))
    if "deletecollection" in rt.verbs:
        coll["delete"] = _op(rt, "deletecollection", f"deletecollection{kind}", f"{_META}.Status", ["dryRun"])
    out[base] = coll
    if "get" not in rt.verbs:
        return out
    item_params = [_param("name", "path", True), *ns_params, _param("pretty")]
    patch_params = [*write, "force"]

    def item(schema: str, kind_rt: ResourceType, suffix: str) -> dict[str, Any]:
        return {
            "parameters": item_params,
            "get": _op(kind_rt, "get", f"read{kind}{suffix}", schema, []),
            "put": _op(kind_rt, "put", f"replace{kind}{suffix}", schema, write, requestBody=_body(schema)),
            "patch": _op(
                kind_rt,
                "patch",
                f"patch{kind}{suffix}",
                schema,
                patch_params,
                requestBody=_body(f"{_META}.Patch", _PATCH_TYPES),
            ),
        }

    one = item(obj, rt, "")
    one["delete"] = _op(rt, "delete", f"delete{kind}", obj, ["dryRun", "gracePeriodSeconds", "propagationPolicy"])
    out[f"{base}/{{name}}"] = one
    if rt.status_subresource:
        out[f"{base}/{{name}}/status"] = item(obj, rt, "Status")
    if rt.key in SCALABLE:
        scale_rt = ResourceType("autoscaling", "v1", rt.plural, "Scale", rt.namespaced)
        out[f"{base}/{{name}}/scale"] = item("io.k8s.api.autoscaling.v1.Scale", scale_rt, "Scale")
    return out


def _closure(names: list[str], pool: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in out or name not in pool:
            continue
        out[name] = pool[name]
        stack: list[Any] = [pool[name]]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                ref = node.get("$ref")
                if isinstance(ref, str) and ref.startswith(_REF):
                    todo.append(ref[len(_REF) :])
                stack.extend(node.values())
            elif isinstance(node, list):
                stack.extend(node)
    return dict(sorted(out.items()))


@functools.cache
def group_version_document(group: str, version: str) -> bytes | None:
    """The JSON bytes of ``/openapi/v3/<api|apis/group>/<version>``, or None if not served."""
    types = [rt for rt in RESOURCES.values() if rt.group == group and rt.version == version]
    if not types:
        return None
    pool = dict(schemas())
    paths: dict[str, Any] = {}
    for rt in types:
        if rt.crd:
            obj, lst = _schema_names(rt)
            pool[obj] = _custom_schema(rt)
            pool[lst] = {
                "type": "object",
                "required": ["items"],
                "properties": {
                    "apiVersion": {"type": "string"},
                    "items": {"type": "array", "items": {"$ref": _REF + obj}},
                    "kind": {"type": "string"},
                    "metadata": {"$ref": f"{_REF}{_META}.ListMeta"},
                },
                "x-kubernetes-group-version-kind": [_gvk(rt.group, rt.version, f"{rt.kind}List")],
            }
        paths.update(_paths(rt))
    roots = [f"{_META}.{n}" for n in ("DeleteOptions", "Status", "Patch", "WatchEvent", "APIResourceList")]
    for path in paths.values():
        for op in path.values():
            if isinstance(op, dict):
                for resp in op.get("responses", {}).values():
                    for media in (resp.get("content") or {}).values():
                        roots.append(media["schema"]["$ref"][len(_REF) :])
    doc = {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": SERVER_VERSION["gitVersion"]},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": _closure(roots, pool),
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                }
            },
        },
        "security": [{"BearerToken": []}],
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def document_hash(group: str, version: str) -> str:
    doc = group_version_document(group, version)
    return hashlib.sha512(doc or b"").hexdigest().upper()


def root() -> dict[str, Any]:
    """``/openapi/v3``: every served group-version with the URL of its document."""
    gvs = sorted({(rt.group, rt.version) for rt in RESOURCES.values()})
    paths = {
        _gv_path(g, v): {"serverRelativeURL": f"/openapi/v3/{_gv_path(g, v)}?hash={document_hash(g, v)}"}
        for g, v in gvs
    }
    return {"paths": paths}


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    for _ in range(8):
        ref = schema.get("$ref")
        if ref is None and len(schema.get("allOf") or []) == 1:
            ref = schema["allOf"][0].get("$ref")
        if not isinstance(ref, str) or not ref.startswith(_REF):
            return schema
        schema = schemas().get(ref[len(_REF) :], {})
    return schema


def unknown_fields(group: str, version: str, kind: str, obj: Any) -> list[str]:
    """Paths of fields in ``obj`` that the kind's schema does not define ("spec.foo", "a.b[0].c")."""
    name = _by_gvk().get((group, version, kind))
    if name is None:
        return []
    out: list[str] = []

    def walk(schema: dict[str, Any], value: Any, path: str) -> None:
        schema = _resolve(schema)
        if schema.get("x-kubernetes-preserve-unknown-fields"):
            return
        if isinstance(value, dict):
            props = schema.get("properties")
            extra = schema.get("additionalProperties")
            for key, item in value.items():
                sub = f"{path}.{key}" if path else key
                if isinstance(props, dict) and key in props:
                    walk(props[key], item, sub)
                elif isinstance(extra, dict):
                    walk(extra, item, sub)
                elif isinstance(props, dict):
                    out.append(sub)
        elif isinstance(value, list) and isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                walk(schema["items"], item, f"{path}[{i}]")

    walk(schemas()[name], obj, "")
    return out
