"""The one chart repository the simulator knows: zilliztech/milvus-helm, chart ``milvus``.

Guarantees: the repository index (``index_document``) and each version's Chart.yaml
(``chart_metadata``) and values.yaml (``chart_values``) have the real shapes and the facts the
upgrade depends on (upgrade-facts.md, "The Helm chart"): 4.2.18 ships Milvus 2.5.4 with only the
Pulsar V2 subchart (``pulsar.enabled: true``); from 4.2.21 the chart also carries the ``pulsarv3``
alias, and from 4.2.27 ``pulsarv3.enabled: true`` / ``pulsar.enabled: false`` are the defaults;
4.2.58 (Milvus 2.5.16) is the last 2.5 chart; 5.x ships Milvus 2.6. Any other repository URL
is unreachable, as an unknown host would be.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

REPO_URL = "https://zilliztech.github.io/milvus-helm"
CHART_NAME = "milvus"
DESCRIPTION = "Milvus is an open-source vector database built to power AI applications and vector similarity search."
INDEX_GENERATED = "2025-09-25T08:12:40.112435912Z"


@dataclass(frozen=True)
class ChartVersion:
    version: str
    app_version: str
    created: str

    @property
    def digest(self) -> str:
        return hashlib.sha256(f"{CHART_NAME}-{self.version}.tgz".encode()).hexdigest()

    @property
    def url(self) -> str:
        return f"https://github.com/zilliztech/milvus-helm/releases/download/{CHART_NAME}-{self.version}/{CHART_NAME}-{self.version}.tgz"

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(int(p) for p in self.version.split("."))

    @property
    def has_pulsarv3(self) -> bool:
        return self.key >= (4, 2, 21)

    @property
    def pulsarv3_default(self) -> bool:
        return self.key >= (4, 2, 27)


VERSIONS: tuple[ChartVersion, ...] = (
    ChartVersion("5.0.4", "2.6.3", "2025-09-25T08:12:39.412815234Z"),
    ChartVersion("5.0.0", "2.6.0", "2025-08-06T09:30:11.503927412Z"),
    ChartVersion("4.2.58", "2.5.16", "2025-08-01T03:41:57.288131007Z"),
    ChartVersion("4.2.40", "2.5.10", "2025-04-15T10:02:33.871203581Z"),
    ChartVersion("4.2.27", "2.5.6", "2025-03-11T06:15:48.100932812Z"),
    ChartVersion("4.2.18", "2.5.4", "2025-01-24T02:58:19.662048319Z"),
)


def normalize_repo_url(url: str) -> str:
    return url.strip().rstrip("/")


def is_known_repo(url: str) -> bool:
    return normalize_repo_url(url) == REPO_URL


def find_version(version: str) -> ChartVersion | None:
    for cv in VERSIONS:
        if cv.version == version:
            return cv
    return None


def _dependencies(cv: ChartVersion) -> list[dict[str, Any]]:
    deps: list[dict[str, Any]] = [
        {"condition": "etcd.enabled", "name": "etcd", "repository": REPO_URL, "version": "6.3.3"},
        {"condition": "minio.enabled", "name": "minio", "repository": REPO_URL, "version": "8.0.17"},
        {"condition": "pulsar.enabled", "name": "pulsar", "repository": REPO_URL, "version": "2.7.8"},
    ]
    if cv.has_pulsarv3:
        deps.append(
            {
                "alias": "pulsarv3",
                "condition": "pulsarv3.enabled",
                "name": "pulsar",
                "repository": "https://pulsar.apache.org/charts",
                "version": "3.3.0",
            }
        )
    deps.append(
        {
            "condition": "kafka.enabled",
            "name": "kafka",
            "repository": "https://charts.bitnami.com/bitnami",
            "version": "15.5.1",
        }
    )
    return deps


def chart_metadata(cv: ChartVersion) -> dict[str, Any]:
    """Chart.yaml of this version (keys as ``helm show chart`` prints them, sorted)."""
    return {
        "apiVersion": "v2",
        "appVersion": cv.app_version,
        "dependencies": _dependencies(cv),
        "description": DESCRIPTION,
        "home": "https://milvus.io/",
        "icon": "https://milvus.io/favicon-32x32.png",
        "keywords": ["milvus", "elastic", "vector", "search", "deploy"],
        "kubeVersion": "^1.10.0-0",
        "maintainers": [{"email": "milvus-team@zilliz.com", "name": "milvus", "url": "https://milvus.io"}],
        "name": CHART_NAME,
        "sources": ["https://github.com/milvus-io/milvus"],
        "version": cv.version,
    }


def index_document() -> dict[str, Any]:
    """The repository's index.yaml."""
    entries = []
    for cv in VERSIONS:
        entry = chart_metadata(cv)
        entry.update({"created": cv.created, "digest": cv.digest, "urls": [cv.url]})
        entries.append(dict(sorted(entry.items())))
    return {"apiVersion": "v1", "entries": {CHART_NAME: entries}, "generated": INDEX_GENERATED}


def _pulsar_values(name: str, enabled: bool, tag: str) -> dict[str, Any]:
    image = {"repository": "apachepulsar/pulsar", "tag": tag, "pullPolicy": "IfNotPresent"}
    return {
        "enabled": enabled,
        "name": name,
        "fullnameOverride": "",
        "persistence": True,
        "components": {
            "zookeeper": True,
            "bookkeeper": True,
            "autorecovery": False,
            "broker": True,
            "functions": False,
            "proxy": True,
            "toolset": False,
            "pulsar_manager": False,
        },
        "images": {
            "zookeeper": dict(image),
            "bookie": dict(image),
            "broker": dict(image),
            "proxy": dict(image),
        },
        "zookeeper": {
            "replicaCount": 3,
            "volumes": {
                "persistence": True,
                "data": {"name": "data", "size": "20Gi", "storageClassName": None},
            },
        },
        "bookkeeper": {
            "replicaCount": 3,
            "volumes": {
                "persistence": True,
                "journal": {"name": "journal", "size": "100Gi", "storageClassName": None},
                "ledgers": {"name": "ledgers", "size": "200Gi", "storageClassName": None},
            },
        },
        "broker": {"replicaCount": 1},
        "proxy": {"replicaCount": 1, "ports": {"http": 80, "pulsar": 6650}},
    }


def _component(replicas: int = 1) -> dict[str, Any]:
    return {"enabled": True, "replicas": replicas, "resources": {}, "extraEnv": []}


def chart_values(cv: ChartVersion) -> dict[str, Any]:
    """values.yaml of this version (only what the simulator renders, plus common neighbours)."""
    values: dict[str, Any] = {
        "nameOverride": "",
        "fullnameOverride": "",
        "cluster": {"enabled": True},
        "image": {
            "all": {
                "repository": "milvusdb/milvus",
                "tag": f"v{cv.app_version}",
                "pullPolicy": "IfNotPresent",
            },
        },
        "service": {"type": "ClusterIP", "port": 19530},
        "metrics": {"enabled": True},
        "log": {"level": "info"},
        "standalone": {"replicas": 1, "messageQueue": "rocksmq"},
        "proxy": {**_component(), "http": {"enabled": True}},
        "mixCoordinator": _component(),
        "queryNode": _component(),
        "dataNode": _component(),
        "indexNode": _component(),
        "etcd": {
            "enabled": True,
            "name": "etcd",
            "replicaCount": 3,
            "image": {"repository": "milvusdb/etcd", "tag": "3.5.18-r1"},
            "persistence": {
                "enabled": True,
                "storageClass": None,
                "accessMode": "ReadWriteOnce",
                "size": "10Gi",
            },
        },
        "minio": {
            "enabled": True,
            "name": "minio",
            "mode": "distributed",
            "replicas": 4,
            "image": {"repository": "minio/minio", "tag": "RELEASE.2023-03-20T20-16-18Z"},
            "accessKey": "minioadmin",
            "secretKey": "minioadmin",
            "bucketName": "milvus-bucket",
            "persistence": {
                "enabled": True,
                "storageClass": None,
                "accessMode": "ReadWriteOnce",
                "size": "500Gi",
            },
        },
        "pulsar": _pulsar_values("pulsar", not cv.pulsarv3_default, "2.9.5"),
        "kafka": {"enabled": False},
        "externalS3": {"enabled": False},
        "externalEtcd": {"enabled": False},
        "externalPulsar": {"enabled": False},
    }
    if cv.has_pulsarv3:
        values["pulsarv3"] = _pulsar_values("pulsarv3", cv.pulsarv3_default, "3.0.7")
    return values
