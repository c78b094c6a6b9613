"""Discovery documents of the simulated Kubernetes API server.

Built from ``sandbox.kube.store.RESOURCES`` so discovery never disagrees with what the
server actually serves: ``/api`` (APIVersions), ``/apis`` (APIGroupList), ``/apis/<group>``
(APIGroup), ``/api/v1`` and ``/apis/<group>/<version>`` (APIResourceList, with
``<plural>/status`` and ``services/proxy`` sub-resource entries) and ``/version``.
These are what ``kubernetes.dynamic.DynamicClient`` and kubectl read.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

from sandbox.kube.store import RESOURCES, ResourceType

SERVER_VERSION: dict[str, str] = {
    "major": "1",
    "minor": "31",
    "emulationMajor": "1",
    "emulationMinor": "31",
    "gitVersion": "v1.31.4",
    "gitCommit": "a78aa47129b8539636eb86a9d00e31b2720fe06b",
    "gitTreeState": "clean",
    "buildDate": "2024-12-10T18:34:55Z",
    "goVersion": "go1.22.9",
    "compiler": "gc",
    "platform": "linux/amd64",
}


# Kinds with a /scale subresource (autoscaling/v1 Scale).
SCALABLE: frozenset[str] = frozenset({"deployments.apps", "statefulsets.apps", "replicasets.apps"})


def group_versions() -> dict[str, list[str]]:
    """Group name ('' for core) -> served versions, in first-seen order."""
    out: dict[str, list[str]] = {}
    for rt in RESOURCES.values():
        versions = out.setdefault(rt.group, [])
        if rt.version not in versions:
            versions.append(rt.version)
    return out


def api_versions(server_address: str) -> dict[str, Any]:
    return {
        "kind": "APIVersions",
        "versions": group_versions()[""],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def api_group(group: str) -> dict[str, Any] | None:
    versions = group_versions().get(group)
    if not group or versions is None:
        return None
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {
        "kind": "APIGroup",
        "apiVersion": "v1",
        "name": group,
        "versions": entries,
        "preferredVersion": entries[0],
    }


def api_group_list() -> dict[str, Any]:
    groups = []
    for group in group_versions():
        doc = api_group(group)
        if doc is not None:
            doc.pop("kind")
            doc.pop("apiVersion")
            groups.append(doc)
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def _storage_hash(rt: ResourceType) -> str:
    digest = hashlib.sha256(f"{rt.api_version}/{rt.kind}".encode()).digest()
    return base64.b64encode(digest[:8]).decode()


def _resource_entry(rt: ResourceType) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": rt.plural,
        "singularName": rt.singular,
        "namespaced": rt.namespaced,
        "kind": rt.kind,
        "verbs": sorted(rt.verbs),
    }
    if rt.short_names:
        entry["shortNames"] = list(rt.short_names)
    if rt.categories:
        entry["categories"] = list(rt.categories)
    if rt.storable:
        entry["storageVersionHash"] = _storage_hash(rt)
    return entry


def _sub_entries(rt: ResourceType) -> list[dict[str, Any]]:
    subs: list[dict[str, Any]] = []
    if rt.status_subresource:
        subs.append(
            {
                "name": f"{rt.plural}/status",
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }
        )
    if rt.key in SCALABLE:
        subs.append(
            {
                "name": f"{rt.plural}/scale",
                "singularName": "",
                "namespaced": rt.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }
        )
    if rt.key == "services":
        subs.append(
            {
                "name": "services/proxy",
                "singularName": "",
                "namespaced": True,
                "kind": "ServiceProxyOptions",
                "verbs": ["create", "delete", "get", "patch", "update"],
            }
        )
    return subs


def resource_list(group: str, version: str) -> dict[str, Any] | None:
    types = [rt for rt in RESOURCES.values() if rt.group == group and rt.version == version]
    if not types:
        return None
    resources: list[dict[str, Any]] = []
    for rt in types:
        resources.append(_resource_entry(rt))
        resources.extend(_sub_entries(rt))
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": version if not group else f"{group}/{version}",
        "resources": resources,
    }
