"""The protobuf request-body decoder (``sandbox.kube.protobuf``) on bytes real clients send.

The constants were captured from kubectl v1.33.9 and helm v4.1.4 against the sandbox server
(``RequestRecord.raw``); the live tests capture again with the pinned kubectl so a client
upgrade that changes the encoding is noticed. Hand-encoded messages cover fields the
clients did not send in those captures (ownerReferences, managedFields, timestamps,
DeleteOptions preconditions).
"""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path

import httpx
import pytest

from sandbox.kube import protobuf
from sandbox.kube.server import KubeApiServer

ROOT = Path(__file__).resolve().parents[1]
KUBECTL = ROOT / ".tools" / "kubectl"

# kubectl create configmap cap-cm --from-literal=a=b --from-literal=c=d
CONFIGMAP = "azhzAAoPCgJ2MRIJQ29uZmlnTWFwEigKFgoGY2FwLWNtEgAaACIAKgAyADgAQgASBgoBYRIBYhIGCgFjEgFkGgAiAA=="
# kubectl create namespace cap-ns
NAMESPACE = "azhzAAoPCgJ2MRIJTmFtZXNwYWNlEh4KFgoGY2FwLW5zEgAaACIAKgAyADgAQgASABoCCgAaACIA"
# kubectl auth can-i get /healthz
ACCESS_REVIEW = (
    "azhzAAoyChdhdXRob3JpemF0aW9uLms4cy5pby92MRIXU2VsZlN1YmplY3RBY2Nlc3NSZXZpZXcSLwoQCgASABoAIgAqADIAOABCABIREg8K"
    "CC9oZWFsdGh6EgNnZXQaCAgAEgAaACAAGgAiAA=="
)
# helm uninstall: DELETE of a release Secret
DELETE_OPTIONS = "azhzAAoTCgJ2MRINRGVsZXRlT3B0aW9ucxIAGgAiAA=="


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len(num: int, payload: bytes | str) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    return _varint(num << 3 | 2) + _varint(len(data)) + data


def _int(num: int, value: int) -> bytes:
    return _varint(num << 3) + _varint(value)


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = _len(1, api_version) + _len(2, kind)
    return protobuf.MAGIC + _len(1, type_meta) + _len(2, raw) + _len(3, "") + _len(4, "")


def test_captured_kubectl_bodies_decode_like_json() -> None:
    assert protobuf.decode(base64.b64decode(CONFIGMAP)) == {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": "cap-cm"},
        "data": {"a": "b", "c": "d"},
    }
    assert protobuf.decode(base64.b64decode(NAMESPACE)) == {
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": "cap-ns"},
    }
    review = protobuf.decode(base64.b64decode(ACCESS_REVIEW))
    assert review["spec"] == {"nonResourceAttributes": {"path": "/healthz", "verb": "get"}}
    assert protobuf.decode(base64.b64decode(DELETE_OPTIONS)) == {"kind": "DeleteOptions", "apiVersion": "v1"}


def test_object_meta_and_secret_fields() -> None:
    owner = _len(5, "apps/v1") + _len(1, "StatefulSet") + _len(3, "db") + _len(4, "u-1") + _int(6, 1)
    entry = (
        _len(1, "helm")
        + _len(2, "Apply")
        + _len(3, "v1")
        + _len(4, _int(1, 1_700_000_000))
        + _len(6, "FieldsV1")
        + _len(7, _len(1, '{"f:data":{}}'))
    )
    meta = (
        _len(1, "s")
        + _len(3, "ns")
        + _len(6, "42")
        + _len(8, _int(1, 1_700_000_000))
        + _len(11, _len(1, "app") + _len(2, "x"))
        + _len(12, _len(1, "note") + _len(2, "y"))
        + _len(13, owner)
        + _len(14, "example.com/fin")
        + _len(17, entry)
        + _len(99, "unknown fields are skipped")
    )
    raw = _len(1, meta) + _len(2, _len(1, "bin") + _len(2, b"\x00\xff")) + _len(3, "Opaque") + _int(5, 0)
    obj = protobuf.decode(_envelope("v1", "Secret", raw))
    assert obj == {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": "s",
            "namespace": "ns",
            "resourceVersion": "42",
            "creationTimestamp": "2023-11-14T22:13:20Z",
            "labels": {"app": "x"},
            "annotations": {"note": "y"},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "StatefulSet",
                    "name": "db",
                    "uid": "u-1",
                    "controller": True,
                }
            ],
            "finalizers": ["example.com/fin"],
            "managedFields": [
                {
                    "manager": "helm",
                    "operation": "Apply",
                    "apiVersion": "v1",
                    "time": "2023-11-14T22:13:20Z",
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:data": {}},
                }
            ],
        },
        "data": {"bin": "AP8="},
        "type": "Opaque",
        "immutable": False,
    }


def test_delete_options_fields() -> None:
    raw = _int(1, 0) + _len(2, _len(1, "u-1") + _len(2, "7")) + _len(4, "Foreground") + _len(5, "All")
    assert protobuf.decode(_envelope("meta.k8s.io/v1", "DeleteOptions", raw)) == {
        "kind": "DeleteOptions",
        "apiVersion": "meta.k8s.io/v1",
        "gracePeriodSeconds": 0,
        "preconditions": {"uid": "u-1", "resourceVersion": "7"},
        "propagationPolicy": "Foreground",
        "dryRun": ["All"],
    }


def test_unknown_kind_and_garbage() -> None:
    with pytest.raises(protobuf.UnsupportedKind):
        protobuf.decode(_envelope("v1", "Pod", b""))
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(b'{"kind": "ConfigMap"}')
    with pytest.raises(protobuf.ProtobufError):
        protobuf.decode(protobuf.MAGIC + b"\x0a\x7f")  # length beyond the end


def test_server_answers_415_for_unknown_protobuf_kinds(server: KubeApiServer) -> None:
    resp = httpx.post(
        f"{server.url}/api/v1/namespaces/default/pods",
        content=_envelope("v1", "Pod", b""),
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": protobuf.MEDIA_TYPE},
        verify=server.ssl_context(),
    )
    assert resp.status_code == 415
    assert resp.json()["reason"] == "UnsupportedMediaType"


def test_live_kubectl_capture(server: KubeApiServer, tmp_path: Path) -> None:
    kubeconfig = server.write_kubeconfig(str(tmp_path / "kubeconfig"))
    env = {"HOME": str(tmp_path), "KUBECACHEDIR": str(tmp_path / "cache")}
    base = [str(KUBECTL), "--kubeconfig", kubeconfig]
    subprocess.run([*base, "create", "secret", "generic", "live", "--from-literal=pw=s3cr3t"], check=True, env=env)
    subprocess.run([*base, "auth", "can-i", "list", "pods", "-n", "kube-system"], check=True, env=env)
    posts = [r for r in server.requests if r.method == "POST"]
    assert all(r.raw.startswith(protobuf.MAGIC) for r in posts)
    secret = protobuf.decode(posts[0].raw)
    assert secret["metadata"] == {"name": "live"} and secret["data"] == {"pw": "czNjcjN0"}
    assert "type" not in secret  # empty on the wire: the server defaults it to Opaque
    review = protobuf.decode(posts[1].raw)
    assert review["spec"]["resourceAttributes"] == {"namespace": "kube-system", "verb": "list", "resource": "pods"}
    assert server.store.get("secrets", "default", "live")["data"] == {"pw": "czNjcjN0"}
