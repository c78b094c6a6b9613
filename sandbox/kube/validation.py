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
_node_ports = itertools.count(0)


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
    if rule == "path":  # path.IsValidPathSegmentName (RBAC objects)
        for bad in (".", ".."):
            if name == bad:
                return [invalid("metadata.name", name, f"may not be '{bad}'")]
        for bad in ("/", "%"):
            if bad in name:
                return [invalid("metadata.name", name, f"may not contain '{bad}'")]
        return []
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


def _job_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    template = spec.get("template") or {}
    causes: list[Cause] = []
    pod_spec = template.get("spec") or {}
    if not pod_spec.get("containers"):
        causes.append(required("spec.template.spec.containers"))
    policy = pod_spec.get("restartPolicy") or "Always"  # what SetDefaults_PodSpec would fill in
    if policy not in ("OnFailure", "Never"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "spec.template.spec.restartPolicy",
                f'Unsupported value: "{policy}": supported values: "OnFailure", "Never"',
            )
        )
    selector = spec.get("selector")
    if not selector:
        causes.append(required("spec.selector"))
        return causes
    uid = obj["metadata"].get("uid", "")
    if spec.get("manualSelector") is not True and selector != {"matchLabels": {JOB_UID_LABELS[0]: uid}}:
        causes.append(invalid("spec.selector", go_selector(selector), "`selector` not auto-generated"))
    labels = (template.get("metadata") or {}).get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        causes.append(
            invalid("spec.template.metadata.labels", go_map(labels), "`selector` does not match template `labels`")
        )
    for field in ("parallelism", "completions", "backoffLimit"):
        value = spec.get(field)
        if isinstance(value, int) and value < 0:
            causes.append(invalid(f"spec.{field}", value, "must be greater than or equal to 0"))
    return causes


def _pdb_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        return [
            invalid("spec", "policy.PodDisruptionBudgetSpec{...}", "minAvailable and maxUnavailable cannot be both set")
        ]
    return []


def _binding_causes(obj: dict[str, Any]) -> list[Cause]:
    ref = obj.get("roleRef") or {}
    causes = []
    if not ref.get("kind"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "roleRef.kind",
                'Unsupported value: "": supported values: "Role", "ClusterRole"',
            )
        )
    if not ref.get("name"):
        causes.append(required("roleRef.name"))
    for i, subject in enumerate(obj.get("subjects") or []):
        if not subject.get("name"):
            causes.append(required(f"subjects[{i}].name"))
        if (
            subject.get("kind") == "ServiceAccount"
            and not subject.get("namespace")
            and obj["kind"] == "ClusterRoleBinding"
        ):
            causes.append(required(f"subjects[{i}].namespace"))
    return causes


def _storage_class_causes(obj: dict[str, Any]) -> list[Cause]:
    causes = []
    if not obj.get("provisioner"):
        causes.append(required("provisioner"))
    if obj.get("reclaimPolicy") not in ("Delete", "Retain"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "reclaimPolicy",
                f'Unsupported value: "{obj.get("reclaimPolicy")}": supported values: "Delete", "Retain"',
            )
        )
    if obj.get("volumeBindingMode") not in ("Immediate", "WaitForFirstConsumer"):
        causes.append(
            Cause(
                "FieldValueNotSupported",
                "volumeBindingMode",
                f'Unsupported value: "{obj.get("volumeBindingMode")}": '
                'supported values: "Immediate", "WaitForFirstConsumer"',
            )
        )
    return causes


def _crd_causes(obj: dict[str, Any]) -> list[Cause]:
    spec = obj.get("spec") or {}
    expected = f"{(spec.get('names') or {}).get('plural', '')}.{spec.get('group', '')}"
    if obj["metadata"].get("name") != expected:
        return [invalid("metadata.name", obj["metadata"].get("name", ""), 'must be spec.names.plural+"."+spec.group')]
    return []


KIND_VALIDATORS: dict[str, Callable[[dict[str, Any]], list[Cause]]] = {
    "pods": _pod_causes,
    "deployments.apps": _workload_causes,
    "statefulsets.apps": _workload_causes,
    "replicasets.apps": _workload_causes,
    "jobs.batch": _job_causes,
    "poddisruptionbudgets.policy": _pdb_causes,
    "rolebindings.rbac.authorization.k8s.io": _binding_causes,
    "clusterrolebindings.rbac.authorization.k8s.io": _binding_causes,
    "storageclasses.storage.k8s.io": _storage_class_causes,
    "customresourcedefinitions.apiextensions.k8s.io": _crd_causes,
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


def _next_cluster_ip() -> str:
    """The next free address of the service CIDR 10.96.0.0/12 (10.96.0.1 is the kubernetes Service)."""
    n = next(_cluster_ips) % (1 << 20)
    return f"10.{96 + (n >> 16)}.{(n >> 8) & 255}.{n & 255}"


def _default_service(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    spec.setdefault("type", "ClusterIP")
    spec.setdefault("sessionAffinity", "None")
    external_name = spec["type"] == "ExternalName"
    if not external_name:
        if not spec.get("clusterIP"):
            spec["clusterIP"] = _next_cluster_ip()
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        spec.setdefault("ipFamilies", ["IPv4"])
        headless_no_selector = spec["clusterIP"] == "None" and not spec.get("selector")
        spec.setdefault("ipFamilyPolicy", "RequireDualStack" if headless_no_selector else "SingleStack")
        spec.setdefault("internalTrafficPolicy", "Cluster")
    if spec["type"] in ("NodePort", "LoadBalancer"):
        spec.setdefault("externalTrafficPolicy", "Cluster")
        for port in spec.get("ports") or []:
            if not port.get("nodePort"):
                port["nodePort"] = 30000 + next(_node_ports) % 2768
    if spec["type"] == "LoadBalancer":
        spec.setdefault("allocateLoadBalancerNodePorts", True)
    for port in spec.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if port.get("targetPort") in (None, 0, ""):
            port["targetPort"] = port.get("port")


def _default_namespace(obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
    obj.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])


def _default_workload(obj: dict[str, Any]) -> None:
    spec = obj.setdefault("spec", {})
    if spec.get("replicas") is None:
        spec["replicas"] = 1


def _default_deployment(obj: dict[str, Any]) -> None:
    _default_workload(obj)
    spec = obj["spec"]
    strategy = spec.setdefault("strategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        rolling = strategy.setdefault("rollingUpdate", {})
        rolling.setdefault("maxUnavailable", "25%")
        rolling.setdefault("maxSurge", "25%")
    spec.setdefault("revisionHistoryLimit", 10)
    spec.setdefault("progressDeadlineSeconds", 600)


def _default_statefulset(obj: dict[str, Any]) -> None:
    _default_workload(obj)
    spec = obj["spec"]
    spec.setdefault("podManagementPolicy", "OrderedReady")
    strategy = spec.setdefault("updateStrategy", {})
    strategy.setdefault("type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        strategy.setdefault("rollingUpdate", {}).setdefault("partition", 0)
    spec.setdefault("revisionHistoryLimit", 10)
    retention = spec.setdefault("persistentVolumeClaimRetentionPolicy", {})
    retention.setdefault("whenDeleted", "Retain")
    retention.setdefault("whenScaled", "Retain")
    for template in spec.get("volumeClaimTemplates") or []:
        template.setdefault("apiVersion", "v1")
        template.setdefault("kind", "PersistentVolumeClaim")
        template.setdefault("spec", {}).setdefault("volumeMode", "Filesystem")


JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


def _default_job(obj: dict[str, Any]) -> None:
    """SetDefaults_Job plus the registry's generateSelector (create only: it needs the uid)."""
    spec = obj.setdefault("spec", {})
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None and spec.get("backoffLimitPerIndex") is None:
        spec["backoffLimit"] = 6
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "Failed" if spec.get("podFailurePolicy") else "TerminatingOrFailed")
    meta = obj["metadata"]
    if spec.get("manualSelector") is True or not meta.get("uid"):
        return
    template = spec.get("template") or {}
    spec["template"] = template
    tmeta = template.get("metadata") or {}
    template["metadata"] = tmeta
    labels = tmeta.get("labels") or {}
    tmeta["labels"] = labels
    for key in JOB_NAME_LABELS:
        labels.setdefault(key, meta.get("name", ""))
    for key in JOB_UID_LABELS:
        labels.setdefault(key, meta["uid"])
    selector = spec.get("selector") or {}
    spec["selector"] = selector
    match = selector.get("matchLabels") or {}
    selector["matchLabels"] = match
    match.setdefault(JOB_UID_LABELS[0], meta["uid"])


def _default_storage_class(obj: dict[str, Any]) -> None:
    obj.setdefault("reclaimPolicy", "Delete")
    obj.setdefault("volumeBindingMode", "Immediate")


KIND_DEFAULTERS: dict[str, Callable[[dict[str, Any]], None]] = {
    "secrets": _default_secret,
    "services": _default_service,
    "namespaces": _default_namespace,
    "deployments.apps": _default_deployment,
    "statefulsets.apps": _default_statefulset,
    "replicasets.apps": _default_workload,
    "jobs.batch": _default_job,
    "storageclasses.storage.k8s.io": _default_storage_class,
}

# The status a freshly created object carries (the real server resets status on create for
# kinds with a status subresource); None means "no status field at all".
INITIAL_STATUS: dict[str, dict[str, Any] | None] = {
    "pods": {"phase": "Pending"},
    "persistentvolumeclaims": {"phase": "Pending"},
    "persistentvolumes": {"phase": "Pending"},
    "deployments.apps": {},
    "statefulsets.apps": {"replicas": 0, "availableReplicas": 0},
    "replicasets.apps": {"replicas": 0},
    "jobs.batch": {},
    "poddisruptionbudgets.policy": {
        "disruptionsAllowed": 0,
        "currentHealthy": 0,
        "desiredHealthy": 0,
        "expectedPods": 0,
    },
    "namespaces": {"phase": "Active"},
}


def apply_defaults(key: str, obj: dict[str, Any]) -> None:
    defaulter = KIND_DEFAULTERS.get(key)
    if defaulter is not None:
        defaulter(obj)


def apply_update_defaults(key: str, old: dict[str, Any], merged: dict[str, Any]) -> None:
    """Defaulting of an update body (spec writes only): decode defaults, plus what the registry
    carries over from the stored object (a Service's allocated cluster IPs and node ports)."""
    if key == "services":
        _carry_service_allocations(old, merged)
    if key == "jobs.batch":
        merged.setdefault("spec", {})
        _default_job({**merged, "metadata": {**merged["metadata"], "uid": ""}})  # no generateSelector
        return
    apply_defaults(key, merged)


def _carry_service_allocations(old: dict[str, Any], new: dict[str, Any]) -> None:
    old_spec = old.get("spec") or {}
    spec = new.setdefault("spec", {})
    needs_ip = {"ExternalName"}.isdisjoint({old_spec.get("type", "ClusterIP"), spec.get("type", "ClusterIP")})
    if needs_ip and not spec.get("clusterIP") and old_spec.get("clusterIP"):
        spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec.get("clusterIPs") or [old_spec["clusterIP"]])
    old_ports = {(p.get("port"), p.get("protocol", "TCP")): p for p in old_spec.get("ports") or []}
    for port in spec.get("ports") or []:
        prev = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
        if (
            prev
            and prev.get("nodePort")
            and not port.get("nodePort")
            and spec.get("type") in ("NodePort", "LoadBalancer")
        ):
            port["nodePort"] = prev["nodePort"]


def go_map(labels: dict[str, Any] | None) -> str:
    if not labels:
        return "map[string]string(nil)"
    return "map[string]string{" + ", ".join(f'"{k}":"{v}"' for k, v in sorted(labels.items())) + "}"


def go_selector(selector: dict[str, Any] | None) -> str:
    if not selector:
        return "(*v1.LabelSelector)(nil)"
    expressions = "[]v1.LabelSelectorRequirement(nil)"
    if selector.get("matchExpressions"):
        expressions = "[]v1.LabelSelectorRequirement{...}"
    return f"v1.LabelSelector{{MatchLabels:{go_map(selector.get('matchLabels'))}, MatchExpressions:{expressions}}}"


def immutable(field: str, shown: str) -> Cause:
    return Cause("FieldValueInvalid", field, f"Invalid value: {shown}: field is immutable")


_STS_MUTABLE = (
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
)


def _selector_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    selector = (new.get("spec") or {}).get("selector")
    if selector != (old.get("spec") or {}).get("selector"):
        return [immutable("spec.selector", go_selector(selector))]
    return []


def _statefulset_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    causes = _selector_update(key, old, new)
    strip = [
        {k: v for k, v in (o.get("spec") or {}).items() if k not in (*_STS_MUTABLE, "selector")} for o in (old, new)
    ]
    if strip[0] != strip[1]:
        causes.append(
            forbidden(
                "spec",
                "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
                "'updateStrategy', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
            )
        )
    return causes


def _job_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    old_spec = old.get("spec") or {}
    spec = new.get("spec") or {}
    causes = _selector_update(key, old, new)
    if spec.get("template") != old_spec.get("template"):
        causes.append(immutable("spec.template", "core.PodTemplateSpec{...}"))
    if spec.get("completions") != old_spec.get("completions"):
        causes.append(immutable("spec.completions", str(spec.get("completions"))))
    if spec.get("completionMode") != old_spec.get("completionMode"):
        causes.append(immutable("spec.completionMode", f'"{spec.get("completionMode")}"'))
    return causes


def _service_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    old_spec = old.get("spec") or {}
    spec = new.get("spec") or {}
    if "ExternalName" in (old_spec.get("type"), spec.get("type")):
        return []
    causes = []
    new_ips = spec.get("clusterIPs") or []
    for i, ip in enumerate(old_spec.get("clusterIPs") or []):
        if i < len(new_ips) and new_ips[i] != ip:
            shown = "[]string{" + ", ".join(f'"{x}"' for x in new_ips) + "}"
            causes.append(
                Cause("FieldValueInvalid", f"spec.clusterIPs[{i}]", f"Invalid value: {shown}: may not change once set")
            )
    return causes


def _binding_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    if new.get("roleRef") == old.get("roleRef"):
        return []
    ref = new.get("roleRef") or {}
    shown = (
        f'rbac.RoleRef{{APIGroup:"{ref.get("apiGroup", "")}", Kind:"{ref.get("kind", "")}", '
        f'Name:"{ref.get("name", "")}"}}'
    )
    return [Cause("FieldValueInvalid", "roleRef", f"Invalid value: {shown}: cannot change roleRef")]


def _storage_class_update(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    causes = [
        forbidden(field, f"updates to {field} are forbidden.")
        for field in ("parameters", "provisioner", "reclaimPolicy")
        if new.get(field) != old.get(field)
    ]
    if new.get("volumeBindingMode") != old.get("volumeBindingMode"):
        causes.append(immutable("volumeBindingMode", f'"{new.get("volumeBindingMode")}"'))
    return causes


UPDATE_VALIDATORS: dict[str, Callable[[str, dict[str, Any], dict[str, Any]], list[Cause]]] = {
    "deployments.apps": _selector_update,
    "replicasets.apps": _selector_update,
    "statefulsets.apps": _statefulset_update,
    "jobs.batch": _job_update,
    "services": _service_update,
    "rolebindings.rbac.authorization.k8s.io": _binding_update,
    "clusterrolebindings.rbac.authorization.k8s.io": _binding_update,
    "storageclasses.storage.k8s.io": _storage_class_update,
}


def update_causes(key: str, old: dict[str, Any], new: dict[str, Any]) -> list[Cause]:
    """What ValidateXxxUpdate rejects (immutable fields), with the real messages."""
    validator = UPDATE_VALIDATORS.get(key)
    return validator(key, old, new) if validator else []
