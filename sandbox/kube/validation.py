"""Admission-time defaulting and validation for the simulated Kubernetes API server.

Only what a real API server would reject or fill in and what the bot or the simulated
controllers could plausibly get wrong is modelled: object names (RFC 1123 subdomain / label,
RFC 1035 label for Services), label keys and values, string-only labels/annotations/ConfigMap
data, base64 Secret data (and ``stringData`` folded into ``data``), required fields of Pods,
Deployments, StatefulSets, PVCs and PVs, and the defaults the real server sets (Namespace
phase and finalizer, Secret type, Service type and cluster IP, initial ``status``).

Validators return ``Cause`` tuples; the store turns them into a 422 Invalid ``Status``.
Type errors that the real server reports while decoding JSON raise ``DecodeError`` (400).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from sandbox.kube.selectors import label_key_error, label_value_error

_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1035_RE = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")

_SUBDOMAIN_MSG = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must "
    "start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_DNS1035_MSG = (
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
    "alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', "
    "regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
)

_PV_NON_SOURCE_KEYS = {
    "accessModes",
    "capacity",
    "claimRef",
    "persistentVolumeReclaimPolicy",
    "storageClassName",
    "mountOptions",
    "volumeMode",
    "nodeAffinity",
    "volumeAttributesClassName",
}

_cluster_ips = itertools.count(10)


class Cause(NamedTuple):
    """One field error: reason (FieldValueRequired, FieldValueInvalid, ...), field path, detail."""

    reason: str
    field: str
    message: str


class DecodeError(ValueError):
    """The body could not be decoded into the kind's Go type (the real server answers 400)."""


def required(field: str, detail: str = "") -> Cause:
    return Cause("FieldValueRequired", field, "Required value" + (f": {detail}" if detail else ""))


def invalid(field: str, value: Any, detail: str) -> Cause:
    shown = f'"{value}"' if isinstance(value, str) else str(value)
    return Cause("FieldValueInvalid", field, f"Invalid value: {shown}: {detail}")


def forbidden(field: str, detail: str) -> Cause:
    return Cause("FieldValueForbidden", field, f"Forbidden: {detail}")


def name_causes(name: str, rule: str) -> list[Cause]:
    """Validate metadata.name under rule 'subdomain' (253), 'label' (63) or 'dns1035' (63)."""
    if rule == "subdomain":
        if len(name) > 253:
            return [invalid("metadata.name", name, "must be no more than 253 characters")]
        return [] if _SUBDOMAIN_RE.match(name) else [invalid("metadata.name", name, _SUBDOMAIN_MSG)]
    if len(name) > 63:
        return [invalid("metadata.name", name, "must be no more than 63 characters")]
    regex, msg = (_LABEL_RE, _LABEL_MSG) if rule == "label" else (_DNS1035_RE, _DNS1035_MSG)
    return [] if regex.match(name) else [invalid("metadata.name", name, msg)]


def check_string_map(obj: dict[str, Any], path: str, go_type: str) -> None:
    """Raise DecodeError when a map[string]string field holds anything but strings."""
    cur: Any = obj
    for part in path.split("."):
        cur = cur.get(part) if isinstance(cur, dict) else None
    if cur is None:
        return
    if not isinstance(cur, dict):
        raise DecodeError(
            f"json: cannot unmarshal {_json_type(cur)} into Go struct field {go_type}.{path} of type map[string]string"
        )
    for value in cur.values():
        if not isinstance(value, str):
            raise DecodeError(
                f"json: cannot unmarshal {_json_type(value)} into Go struct field {go_type}.{path} of type string"
            )


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def metadata_causes(meta: dict[str, Any]) -> list[Cause]:
    causes: list[Cause] = []
    for key, value in (meta.get("labels") or {}).items():
        reason = label_key_error(key)
        if reason is not None:
            causes.append(invalid("metadata.labels", key, reason))
        reason = label_value_error(value)
        if reason is not None:
            causes.append(invalid("metadata.labels", value, reason))
    for key in meta.get("annotations") or {}:
        reason = label_key_error(key.lower())
        if reason is not None:
            causes.append(invalid("metadata.annotations", key, reason))
    finalizers = meta.get("finalizers") or []
    if not isinstance(finalizers, list) or not all(isinstance(f, str) for f in finalizers):
        raise DecodeError("json: cannot unmarshal into Go struct field ObjectMeta.metadata.finalizers of type string")
    return causes


def _pod_causes(obj: dict[str, Any]) -> list[Cause]:
    containers = (obj.get("spec") or {}).get("containers")
    if not containers:
        return [required("spec.containers")]
    return [required(f"spec.containers[{i}].name") for i, c in enumerate(containers) if not c.get("name")]


def _workload_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes: list[Cause] = []
    if not spec.get("selector"):
        causes.append(required("spec.selector"))
    template = spec.get("template")
    if not template:
        causes.append(required("spec.template"))
        return causes
    selector_labels = (spec.get("selector") or {}).get("matchLabels") or {}
    template_labels = (template.get("metadata") or {}).get("labels") or {}
    if any(template_labels.get(k) != v for k, v in selector_labels.items()):
        causes.append(
            invalid(
                "spec.template.metadata.labels",
                f"map[string]string{template_labels}",
                "`selector` does not match template `labels`",
            )
        )
    return causes


def _access_modes_causes(spec: dict[str, Any]) -> list[Cause]:
    if not spec.get("accessModes"):
        return [required("spec.accessModes", "at least 1 access mode is required")]
    return []


def _pvc_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = _access_modes_causes(spec)
    if not ((spec.get("resources") or {}).get("requests") or {}).get("storage"):
        causes.append(required("spec.resources[storage]"))
    return causes


def _pv_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    causes = _access_modes_causes(spec)
    if not (spec.get("capacity") or {}).get("storage"):
        causes.append(required("spec.capacity"))
    if not set(spec) - _PV_NON_SOURCE_KEYS:
        causes.append(required("spec", "must specify a volume type"))
    return causes


def _secret_decode(obj: dict[str, Any]) -> None:
    check_string_map(obj, "data", "Secret")
    check_string_map(obj, "stringData", "Secret")
    for value in (obj.get("data") or {}).values():
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise DecodeError(f"illegal base64 data at input byte {_bad_byte(value)}") from exc


def _bad_byte(value: str) -> int:
    for i, ch in enumerate(value):
        if not (ch.isalnum() or ch in "+/="):
            return i
    return max(len(value) - 1, 0)


KIND_VALIDATORS: dict[str, Callable[[dict[str, Any]], list[Cause]]] = {
    "pods": _pod_causes,
    "deployments.apps": _workload_causes,
    "statefulsets.apps": _workload_causes,
    "persistentvolumeclaims": _pvc_causes,
    "persistentvolumes": _pv_causes,
}


def decode_checks(key: str, obj: dict[str, Any]) -> None:
    """Type checks the real server does while decoding; raise DecodeError (400)."""
    for path in ("metadata.labels", "metadata.annotations"):
        check_string_map(obj, path, "ObjectMeta")
    if key == "configmaps":
        check_string_map(obj, "data", "ConfigMap")
    elif key == "secrets":
        _secret_decode(obj)


def kind_causes(key: str, obj: dict[str, Any]) -> list[Cause]:
    validator = KIND_VALIDATORS.get(key)
    return validator(obj) if validator else []


def _default_secret(obj: dict[str, Any]) -> None:
    obj.setdefault("type", "Opaque")
    string_data = obj.pop("stringData", None)
    if string_data:
        data = obj.setdefault("data", {})
        for k, v in string_data.items():
            data[k] = base64.b64encode(v.encode()).decode()


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
        n = next(_cluster_ips)
        spec["clusterIP"] = f"10.96.{(n // 250) % 250}.{n % 250 + 1}"
    if spec.get("clusterIP"):
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        port.setdefault("targetPort", port.get("port"))


def _default_namespace(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _default_workload(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is None:
        spec["replicas"] = 1


KIND_DEFAULTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "secrets": _default_secret,
    "services": _default_service,
    "namespaces": _default_namespace,
    "deployments.apps": _default_workload,
    "statefulsets.apps": _default_workload,
}

# The status a freshly created object carries (the real server resets status on create for
# kinds with a status subresource); None means "no status field at all".
INITIAL_STATUS: dict[str, dict[str, Any] | None] = {
    "pods": {"phase": "Pending"},
    "persistentvolumeclaims": {"phase": "Pending"},
    "persistentvolumes": {"phase": "Pending"},
    "deployments.apps": {},
    "statefulsets.apps": {"replicas": 0, "availableReplicas": 0},
    "namespaces": {"phase": "Active"},
}


def apply_defaults(key: str, obj: dict[str, Any]) -> None:
    defaulter = KIND_DEFAULTERS.get(key)
    if defaulter is not None:
        defaulter(obj)
