"""Decode Kubernetes protobuf request bodies (``application/vnd.kubernetes.protobuf``).

Why: client-go sends built-in types as protobuf (helm's release Secrets, ``kubectl create
configmap|secret|namespace``, ``kubectl auth can-i`` and ``can-i --list``, DeleteOptions), so the simulated API
server must read them. Responses stay JSON: every client that sends protobuf also accepts
``*/*``.

The wire format: a 4-byte magic ``k8s\\x00``, then a ``runtime.Unknown`` message
(``typeMeta``=1 {apiVersion=1, kind=2}, ``raw``=2, ``contentEncoding``=3, ``contentType``=4)
whose ``raw`` is the typed message. Field numbers come from k8s.io/api and
k8s.io/apimachinery ``generated.proto``. ``decode()`` returns the same dict the JSON path
would produce (``omitempty`` fields absent, ``bytes`` base64, ``metav1.Time`` RFC 3339);
unknown field numbers are skipped as the generated Go unmarshallers skip them. A kind with
no table here raises ``UnsupportedKind`` (the server answers 415); malformed bytes raise
``ProtobufError`` (400).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"


class ProtobufError(ValueError):
    """The body is not a valid Kubernetes protobuf envelope or message."""


class UnsupportedKind(ProtobufError):
    """The envelope names a kind this decoder has no field table for."""

    def __init__(self, api_version: str, kind: str) -> None:
        super().__init__(f"no protobuf decoder for {api_version}, Kind={kind}")
        self.api_version = api_version
        self.kind = kind


@dataclass(frozen=True)
class F:
    """One field: JSON name and type.

    Types: ``string``, ``bytes``, ``int64``, ``int32``, ``bool``, ``time``, ``fields-v1``
    (FieldsV1, whose raw bytes are JSON), ``map`` (string->string), ``map-bytes``,
    or the name of another message in ``MESSAGES``. ``repeated`` makes a list;
    ``keep_zero`` keeps ''/0/false (pointer fields in Go, which are sent only when set).
    """

    name: str
    type: str
    repeated: bool = False
    keep_zero: bool = False


# Field tables, from k8s.io/apimachinery/pkg/apis/meta/v1/generated.proto and
# k8s.io/api/{core,authorization}/v1/generated.proto.
MESSAGES: dict[str, dict[int, F]] = {
    "TypeMeta": {1: F("apiVersion", "string"), 2: F("kind", "string")},
    "Unknown": {
        1: F("typeMeta", "TypeMeta"),
        2: F("raw", "raw-bytes"),
        3: F("contentEncoding", "string"),
        4: F("contentType", "string"),
    },
    "ObjectMeta": {
        1: F("name", "string"),
        2: F("generateName", "string"),
        3: F("namespace", "string"),
        4: F("selfLink", "string"),
        5: F("uid", "string"),
        6: F("resourceVersion", "string"),
        7: F("generation", "int64"),
        8: F("creationTimestamp", "time"),
        9: F("deletionTimestamp", "time"),
        10: F("deletionGracePeriodSeconds", "int64", keep_zero=True),
        11: F("labels", "map"),
        12: F("annotations", "map"),
        13: F("ownerReferences", "OwnerReference", repeated=True),
        14: F("finalizers", "string", repeated=True),
        17: F("managedFields", "ManagedFieldsEntry", repeated=True),
    },
    "OwnerReference": {
        5: F("apiVersion", "string", keep_zero=True),
        1: F("kind", "string", keep_zero=True),
        3: F("name", "string", keep_zero=True),
        4: F("uid", "string", keep_zero=True),
        6: F("controller", "bool", keep_zero=True),
        7: F("blockOwnerDeletion", "bool", keep_zero=True),
    },
    "ManagedFieldsEntry": {
        1: F("manager", "string"),
        2: F("operation", "string"),
        3: F("apiVersion", "string"),
        4: F("time", "time"),
        6: F("fieldsType", "string"),
        7: F("fieldsV1", "fields-v1"),
        8: F("subresource", "string"),
    },
    "Preconditions": {1: F("uid", "string", keep_zero=True), 2: F("resourceVersion", "string", keep_zero=True)},
    "DeleteOptions": {
        1: F("gracePeriodSeconds", "int64", keep_zero=True),
        2: F("preconditions", "Preconditions"),
        3: F("orphanDependents", "bool", keep_zero=True),
        4: F("propagationPolicy", "string", keep_zero=True),
        5: F("dryRun", "string", repeated=True),
        6: F("ignoreStoreReadErrorWithClusterBreakingPotential", "bool", keep_zero=True),
    },
    "Secret": {
        1: F("metadata", "ObjectMeta"),
        2: F("data", "map-bytes"),
        3: F("type", "string"),
        4: F("stringData", "map"),
        5: F("immutable", "bool", keep_zero=True),
    },
    "ConfigMap": {
        1: F("metadata", "ObjectMeta"),
        2: F("data", "map"),
        3: F("binaryData", "map-bytes"),
        4: F("immutable", "bool", keep_zero=True),
    },
    "Namespace": {1: F("metadata", "ObjectMeta"), 2: F("spec", "NamespaceSpec"), 3: F("status", "NamespaceStatus")},
    "NamespaceSpec": {1: F("finalizers", "string", repeated=True)},
    "NamespaceStatus": {1: F("phase", "string")},
    "SelfSubjectAccessReview": {
        1: F("metadata", "ObjectMeta"),
        2: F("spec", "SelfSubjectAccessReviewSpec"),
        3: F("status", "SubjectAccessReviewStatus"),
    },
    "SelfSubjectAccessReviewSpec": {
        1: F("resourceAttributes", "ResourceAttributes"),
        2: F("nonResourceAttributes", "NonResourceAttributes"),
    },
    "ResourceAttributes": {
        1: F("namespace", "string"),
        2: F("verb", "string"),
        3: F("group", "string"),
        4: F("version", "string"),
        5: F("resource", "string"),
        6: F("subresource", "string"),
        7: F("name", "string"),
    },
    "NonResourceAttributes": {1: F("path", "string"), 2: F("verb", "string")},
    "SelfSubjectRulesReview": {
        1: F("metadata", "ObjectMeta"),
        2: F("spec", "SelfSubjectRulesReviewSpec"),
    },
    "SelfSubjectRulesReviewSpec": {1: F("namespace", "string")},
    "SubjectAccessReviewStatus": {
        1: F("allowed", "bool", keep_zero=True),
        4: F("denied", "bool"),
        2: F("reason", "string"),
        3: F("evaluationError", "string"),
    },
}

# (apiVersion, kind) -> top-level message
KINDS: dict[tuple[str, str], str] = {
    ("v1", "Secret"): "Secret",
    ("v1", "ConfigMap"): "ConfigMap",
    ("v1", "Namespace"): "Namespace",
    ("v1", "DeleteOptions"): "DeleteOptions",
    ("meta.k8s.io/v1", "DeleteOptions"): "DeleteOptions",
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"): "SelfSubjectAccessReview",
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"): "SelfSubjectRulesReview",
}


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ProtobufError("unexpected EOF")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift >= 64:
            raise ProtobufError("proto: integer overflow")


def fields(buf: bytes) -> list[tuple[int, int, Any]]:
    """Split one message into (field number, wire type, value) in wire order."""
    out: list[tuple[int, int, Any]] = []
    pos = 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        num, wire = tag >> 3, tag & 7
        if num == 0:
            raise ProtobufError("proto: illegal tag 0")
        value: Any
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            if pos + length > len(buf):
                raise ProtobufError("unexpected EOF")
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise ProtobufError(f"proto: illegal wireType {wire}")
        if pos > len(buf):
            raise ProtobufError("unexpected EOF")
        out.append((num, wire, value))
    return out


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _time(buf: bytes) -> str | None:
    seconds = nanos = 0
    for num, wire, value in fields(buf):
        if num == 1 and wire == 0:
            seconds = _signed(value)
        elif num == 2 and wire == 0:
            nanos = _signed(value)
    if seconds == 0 and nanos == 0:
        return None  # the zero Time marshals as null in JSON
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map_entry(buf: bytes, value_type: str) -> tuple[str, Any]:
    key, val = "", b""
    for num, wire, value in fields(buf):
        if num == 1 and wire == 2:
            key = value.decode()
        elif num == 2 and wire == 2:
            val = value
    if value_type == "map-bytes":
        return key, base64.b64encode(val).decode()
    return key, val.decode() if isinstance(val, bytes) else str(val)


def _scalar(f: F, wire: int, value: Any) -> Any:
    expected = 0 if f.type in ("int64", "int32", "bool") else 2
    if wire != expected:
        raise ProtobufError(f"proto: wrong wireType = {wire} for field {f.name}")
    if f.type == "string":
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise ProtobufError(f"proto: invalid UTF-8 in field {f.name}") from None
    if f.type == "bytes":
        return base64.b64encode(value).decode()
    if f.type == "raw-bytes":
        return bytes(value)
    if f.type == "fields-v1":  # FieldsV1{raw=1}: its JSON form is the raw JSON itself
        raw = next((v for n, w, v in fields(value) if n == 1 and w == 2), b"")
        return json.loads(raw) if raw else {}
    if f.type in ("int64", "int32"):
        return _signed(value)
    if f.type == "bool":
        return bool(value)
    if f.type == "time":
        return _time(value)
    return decode_message(f.type, value)


def _is_zero(v: Any) -> bool:
    return v is None or v == "" or v == 0 or v is False or v == {} or v == []


def decode_message(message: str, buf: bytes) -> dict[str, Any]:
    """Decode ``buf`` as ``message`` (a key of ``MESSAGES``) into its JSON form."""
    table = MESSAGES[message]
    out: dict[str, Any] = {}
    for num, wire, value in fields(buf):
        f = table.get(num)
        if f is None:
            continue
        if f.type in ("map", "map-bytes"):
            if wire != 2:
                raise ProtobufError(f"proto: wrong wireType = {wire} for field {f.name}")
            k, v = _map_entry(value, f.type)
            out.setdefault(f.name, {})[k] = v
            continue
        decoded = _scalar(f, wire, value)
        if f.repeated:
            out.setdefault(f.name, []).append(decoded)
        else:
            out[f.name] = decoded
    by_name = {f.name: f for f in table.values()}
    return {k: v for k, v in out.items() if v is not None and (by_name[k].keep_zero or not _is_zero(v))}


def envelope(body: bytes) -> tuple[str, str, bytes]:
    """(apiVersion, kind, raw message bytes) of a protobuf-encoded object."""
    if not body.startswith(MAGIC):
        raise ProtobufError("provided data does not appear to be a protobuf message, expected prefix [107 56 115 0]")
    unknown = decode_message("Unknown", body[len(MAGIC) :])
    meta = unknown.get("typeMeta") or {}
    return str(meta.get("apiVersion", "")), str(meta.get("kind", "")), bytes(unknown.get("raw") or b"")


def decode(body: bytes) -> dict[str, Any]:
    """The JSON-equivalent dict of a protobuf request body (with apiVersion and kind)."""
    api_version, kind, raw = envelope(body)
    message = KINDS.get((api_version, kind))
    if message is None:
        raise UnsupportedKind(api_version, kind)
    obj = decode_message(message, raw)
    return {"kind": kind, "apiVersion": api_version, **obj}
