"""Render the milvus chart for a release: the objects ``helm install`` would send to the API.

The names, labels, selectors and volume claim templates follow the real charts (milvus-helm,
bitnami etcd, minio 8.x, apache pulsar 2.x/3.x as the ``pulsar``/``pulsarv3`` aliases), because
the bot and the simulated controllers find things by them (upgrade-facts.md, "The Helm chart").
Output is a list of ``Manifest`` (template path + object) in Helm's install order; ``manifest_text``
writes them the way Helm stores a release manifest (``---\\n# Source: <path>\\n<yaml>``).
A template ``fail`` (both Pulsar subcharts enabled) raises ``RenderError`` with Helm's
``execution error at (...)`` wording.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

import yaml

from sandbox.helm.charts import ChartVersion

INSTALL_ORDER = [
    "Namespace",
    "NetworkPolicy",
    "ResourceQuota",
    "LimitRange",
    "PodSecurityPolicy",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Secret",
    "SecretList",
    "ConfigMap",
    "StorageClass",
    "PersistentVolume",
    "PersistentVolumeClaim",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleList",
    "ClusterRoleBinding",
    "ClusterRoleBindingList",
    "Role",
    "RoleList",
    "RoleBinding",
    "RoleBindingList",
    "Service",
    "DaemonSet",
    "Pod",
    "ReplicationController",
    "ReplicaSet",
    "Deployment",
    "HorizontalPodAutoscaler",
    "StatefulSet",
    "Job",
    "CronJob",
    "IngressClass",
    "Ingress",
    "APIService",
]
UNINSTALL_ORDER = [
    "APIService",
    "Ingress",
    "IngressClass",
    "Service",
    "CronJob",
    "Job",
    "StatefulSet",
    "HorizontalPodAutoscaler",
    "Deployment",
    "ReplicaSet",
    "ReplicationController",
    "Pod",
    "DaemonSet",
    "RoleBindingList",
    "RoleBinding",
    "RoleList",
    "Role",
    "ClusterRoleBindingList",
    "ClusterRoleBinding",
    "ClusterRoleList",
    "ClusterRole",
    "CustomResourceDefinition",
    "PersistentVolumeClaim",
    "PersistentVolume",
    "StorageClass",
    "ConfigMap",
    "SecretList",
    "Secret",
    "ServiceAccount",
    "PodDisruptionBudget",
    "PodSecurityPolicy",
    "LimitRange",
    "ResourceQuota",
    "NetworkPolicy",
    "Namespace",
]

MILVUS_COMPONENTS = [
    ("proxy", "proxy"),
    ("mixcoord", "mixCoordinator"),
    ("datanode", "dataNode"),
    ("querynode", "queryNode"),
    ("indexnode", "indexNode"),
]
PULSAR_CHART_VERSION = {"pulsar": "2.7.8", "pulsarv3": "3.3.0"}


class RenderError(Exception):
    """A template failed (message as Helm prints it, without the action prefix)."""


@dataclass(frozen=True)
class Manifest:
    source: str
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.obj.get("metadata") or {}).get("name", ""))


def _get(values: dict[str, Any], path: str, default: Any = None) -> Any:
    cur: Any = values
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return default if cur is None else cur


def _truthy(value: Any) -> bool:
    return bool(value) and value not in ("false", "0")


def _meta(name: str, labels: dict[str, str], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _claim(name: str, size: str, storage_class: Any, access_mode: str = "ReadWriteOnce") -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": [access_mode], "resources": {"requests": {"storage": str(size)}}}
    if storage_class:
        spec["storageClassName"] = "" if storage_class == "-" else str(storage_class)
    return {"metadata": {"name": name}, "spec": spec}


def _container(name: str, image: str, ports: list[tuple[str, int]], args: list[str] | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": name, "image": image, "imagePullPolicy": "IfNotPresent"}
    if args:
        container["args"] = args
    container["ports"] = [{"name": n, "containerPort": p, "protocol": "TCP"} for n, p in ports]
    return container


def _workload(
    kind: str,
    name: str,
    labels: dict[str, str],
    selector: dict[str, str],
    pod_labels: dict[str, str],
    replicas: int,
    containers: list[dict[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"replicas": int(replicas), "selector": {"matchLabels": selector}}
    spec.update({k: v for k, v in extra.items() if k != "volumeClaimTemplates"})
    spec["template"] = {"metadata": {"labels": pod_labels}, "spec": {"containers": containers}}
    if extra.get("volumeClaimTemplates"):
        spec["volumeClaimTemplates"] = extra["volumeClaimTemplates"]
    api = "apps/v1"
    return {"apiVersion": api, "kind": kind, "metadata": _meta(name, labels), "spec": spec}


def _service(
    name: str,
    labels: dict[str, str],
    selector: dict[str, str],
    ports: list[tuple[str, int]],
    headless: bool = False,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "ClusterIP"}
    if headless:
        spec["clusterIP"] = "None"
    spec["ports"] = [{"name": n, "port": p, "targetPort": p, "protocol": "TCP"} for n, p in ports]
    spec["selector"] = selector
    return {"apiVersion": "v1", "kind": "Service", "metadata": _meta(name, labels), "spec": spec}


class _Renderer:
    def __init__(self, release: str, namespace: str, chart: ChartVersion, values: dict[str, Any]) -> None:
        self.release = release
        self.namespace = namespace
        self.chart = chart
        self.values = values
        self.out: list[Manifest] = []

    def add(self, source: str, obj: dict[str, Any]) -> None:
        self.out.append(Manifest(source, obj))

    def image(self, subchart: str, repository: str) -> str:
        repo = _get(self.values, f"{subchart}.image.repository", repository)
        return f"{repo}:{_get(self.values, f'{subchart}.image.tag', 'latest')}"

    # --- milvus -----------------------------------------------------------------------------
    def milvus_labels(self, component: str | None = None) -> dict[str, str]:
        labels = {
            "helm.sh/chart": f"milvus-{self.chart.version}",
            "app.kubernetes.io/name": "milvus",
            "app.kubernetes.io/instance": self.release,
            "app.kubernetes.io/version": self.chart.app_version,
            "app.kubernetes.io/managed-by": "Helm",
        }
        if component:
            labels["component"] = component
        return labels

    def milvus_selector(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "milvus",
            "app.kubernetes.io/instance": self.release,
            "component": component,
        }

    def milvus(self) -> None:
        image_repo = _get(self.values, "image.all.repository", "milvusdb/milvus")
        image = f"{image_repo}:{_get(self.values, 'image.all.tag', 'v' + self.chart.app_version)}"
        cluster = _truthy(_get(self.values, "cluster.enabled", True))
        components = MILVUS_COMPONENTS if cluster else [("standalone", "standalone")]
        self.add("milvus/templates/configmap.yaml", self.milvus_config())
        front = "proxy" if cluster else "standalone"
        self.add(
            "milvus/templates/service.yaml",
            _service(
                f"{self.release}-milvus",
                self.milvus_labels(),
                self.milvus_selector(front),
                [("milvus", int(_get(self.values, "service.port", 19530))), ("metrics", 9091)],
            ),
        )
        for component, key in components:
            if key != "standalone" and not _truthy(_get(self.values, f"{key}.enabled", True)):
                continue
            ports = [("milvus", 19530)] if component in ("proxy", "standalone") else []
            ports.append(("metrics", 9091))
            self.add(
                f"milvus/templates/{component}-deployment.yaml",
                _workload(
                    "Deployment",
                    f"{self.release}-milvus-{component}",
                    self.milvus_labels(component),
                    self.milvus_selector(component),
                    self.milvus_selector(component),
                    int(_get(self.values, f"{key}.replicas", 1)),
                    [_container(component, image, ports, ["milvus", "run", component])],
                    strategy={"type": "RollingUpdate"},
                ),
            )

    def milvus_config(self) -> dict[str, Any]:
        mq = "rocksmq"
        pulsar_host = ""
        for alias in ("pulsar", "pulsarv3"):
            if alias in self.values and _truthy(_get(self.values, f"{alias}.enabled")):
                mq, pulsar_host = "pulsar", f"{self.release}-{alias}-proxy"
        user = {
            "etcd": {"endpoints": [f"{self.release}-etcd:2379"]},
            "minio": {"address": f"{self.release}-minio", "port": 9000},
            "mq": {"type": mq},
            "pulsar": {"address": pulsar_host, "port": 6650} if pulsar_host else {},
        }
        return {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta(f"{self.release}-milvus", self.milvus_labels()),
            "data": {"milvus.yaml": yaml.safe_dump(user, sort_keys=False)},
        }

    # --- etcd ---------------------------------------------------------------------------------
    def etcd(self) -> None:
        if not _truthy(_get(self.values, "etcd.enabled", True)):
            return
        selector = {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/instance": self.release}
        labels = {**selector, "helm.sh/chart": "etcd-6.3.3", "app.kubernetes.io/managed-by": "Helm"}
        name = f"{self.release}-etcd"
        ports = [("client", 2379), ("peer", 2380)]
        self.add(
            "milvus/charts/etcd/templates/svc-headless.yaml",
            _service(f"{name}-headless", labels, selector, ports, True),
        )
        self.add("milvus/charts/etcd/templates/svc.yaml", _service(name, labels, selector, ports))
        image = self.image("etcd", "milvusdb/etcd")
        claims = []
        if _truthy(_get(self.values, "etcd.persistence.enabled", True)):
            claims = [
                _claim(
                    "data",
                    _get(self.values, "etcd.persistence.size", "10Gi"),
                    _get(self.values, "etcd.persistence.storageClass"),
                    _get(self.values, "etcd.persistence.accessMode", "ReadWriteOnce"),
                )
            ]
        self.add(
            "milvus/charts/etcd/templates/statefulset.yaml",
            _workload(
                "StatefulSet",
                name,
                labels,
                selector,
                labels,
                int(_get(self.values, "etcd.replicaCount", 3)),
                [_container("etcd", image, ports)],
                serviceName=f"{name}-headless",
                podManagementPolicy="Parallel",
                updateStrategy={"type": "RollingUpdate"},
                volumeClaimTemplates=claims,
            ),
        )

    # --- minio --------------------------------------------------------------------------------
    def minio(self) -> None:
        if not _truthy(_get(self.values, "minio.enabled", True)):
            return
        name = f"{self.release}-minio"
        selector = {"app": "minio", "release": self.release}
        labels = {"app": "minio", "chart": "minio-8.0.17", "release": self.release, "heritage": "Helm"}
        self.add("milvus/charts/minio/templates/secrets.yaml", self.minio_secret(name, labels))
        image = self.image("minio", "minio/minio")
        container = _container("minio", image, [("http", 9000)])
        size = _get(self.values, "minio.persistence.size", "500Gi")
        storage_class = _get(self.values, "minio.persistence.storageClass")
        access = _get(self.values, "minio.persistence.accessMode", "ReadWriteOnce")
        persistent = _truthy(_get(self.values, "minio.persistence.enabled", True))
        if _get(self.values, "minio.mode", "standalone") == "distributed":
            self.add(
                "milvus/charts/minio/templates/service.yaml",
                _service(name, labels, selector, [("http", 9000)]),
            )
            self.add(
                "milvus/charts/minio/templates/statefulset.yaml",
                _workload(
                    "StatefulSet",
                    name,
                    labels,
                    selector,
                    selector,
                    int(_get(self.values, "minio.replicas", 4)),
                    [container],
                    serviceName=f"{name}-svc",
                    podManagementPolicy="Parallel",
                    updateStrategy={"type": "RollingUpdate"},
                    volumeClaimTemplates=[_claim("export", size, storage_class, access)] if persistent else [],
                ),
            )
            svc = _service(f"{name}-svc", labels, selector, [("http", 9000)], headless=True)
            self.add("milvus/charts/minio/templates/statefulset.yaml", svc)
            return
        if persistent:
            claim = _claim(name, size, storage_class, access)
            pvc = {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "metadata": _meta(name, labels, {"helm.sh/resource-policy": "keep"}),
                "spec": claim["spec"],
            }
            self.add("milvus/charts/minio/templates/pvc.yaml", pvc)
        self.add("milvus/charts/minio/templates/service.yaml", _service(name, labels, selector, [("http", 9000)]))
        self.add(
            "milvus/charts/minio/templates/deployment.yaml",
            _workload("Deployment", name, labels, selector, selector, 1, [container], strategy={"type": "Recreate"}),
        )

    def minio_secret(self, name: str, labels: dict[str, str]) -> dict[str, Any]:
        def b64(key: str) -> str:
            return base64.b64encode(str(_get(self.values, key, "")).encode()).decode()

        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(name, labels),
            "type": "Opaque",
            "data": {"accesskey": b64("minio.accessKey"), "secretkey": b64("minio.secretKey")},
        }

    # --- pulsar (v2 as "pulsar", v3 as "pulsarv3") --------------------------------------------
    def pulsar(self, alias: str) -> None:
        base = f"{self.release}-{alias}"
        tag = _get(self.values, f"{alias}.images.broker.tag", "2.9.5" if alias == "pulsar" else "3.0.7")
        repo = _get(self.values, f"{alias}.images.broker.repository", "apachepulsar/pulsar")
        image = f"{repo}:{tag}"
        src = f"milvus/charts/{alias}/templates"
        specs = [
            (
                "zookeeper",
                "zookeeper",
                "zookeeper",
                [("client", 2181), ("follower", 2888), ("leader-election", 3888)],
            ),
            ("bookkeeper", "bookie", "bookkeeper", [("bookie", 3181), ("http", 8000)]),
            ("broker", "broker", "broker", [("http", 8080), ("pulsar", 6650)]),
            ("proxy", "proxy", "proxy", [("http", 80), ("pulsar", 6650)]),
        ]
        for key, component, file_prefix, ports in specs:
            if not _truthy(_get(self.values, f"{alias}.components.{key}", True)):
                continue
            name = f"{base}-{component}"
            selector = {"app": alias, "release": self.release, "component": component}
            labels = {
                "app": alias,
                "chart": f"pulsar-{PULSAR_CHART_VERSION[alias]}",
                "release": self.release,
                "heritage": "Helm",
                "cluster": base,
                "component": component,
            }
            pod_labels = {"app": alias, "release": self.release, "cluster": base, "component": component}
            headless = key in ("zookeeper", "bookkeeper")
            self.add(f"{src}/{file_prefix}-service.yaml", _service(name, labels, selector, ports, headless))
            self.add(
                f"{src}/{file_prefix}-statefulset.yaml",
                _workload(
                    "StatefulSet",
                    name,
                    labels,
                    selector,
                    pod_labels,
                    int(_get(self.values, f"{alias}.{key}.replicaCount", 1)),
                    [_container(name, image, ports, ["bin/pulsar", component])],
                    serviceName=name,
                    podManagementPolicy="Parallel",
                    updateStrategy={"type": "RollingUpdate"},
                    volumeClaimTemplates=self.pulsar_claims(alias, key, name),
                ),
            )

    def pulsar_claims(self, alias: str, key: str, name: str) -> list[dict[str, Any]]:
        if not _truthy(_get(self.values, f"{alias}.persistence", True)):
            return []
        volumes = {"zookeeper": ["data"], "bookkeeper": ["journal", "ledgers"]}.get(key, [])
        claims = []
        for volume in volumes:
            prefix = f"{alias}.{key}.volumes.{volume}"
            claims.append(
                _claim(
                    f"{name}-{_get(self.values, prefix + '.name', volume)}",
                    _get(self.values, prefix + ".size", "20Gi"),
                    _get(self.values, prefix + ".storageClassName"),
                )
            )
        return claims


def _pulsar_aliases(chart: ChartVersion, values: dict[str, Any]) -> list[str]:
    enabled = [
        alias
        for alias in ("pulsar", "pulsarv3")
        if (alias == "pulsar" or chart.has_pulsarv3) and _truthy(_get(values, f"{alias}.enabled"))
    ]
    if len(enabled) == 2:
        raise RenderError(
            "execution error at (milvus/templates/config.tpl:3:4): only one of pulsar and pulsarv3 can be enabled"
        )
    return enabled


def render(release: str, namespace: str, chart: ChartVersion, values: dict[str, Any]) -> list[Manifest]:
    """All objects of the release in Helm's install order (kind order, then template order)."""
    renderer = _Renderer(release, namespace, chart, values)
    aliases = _pulsar_aliases(chart, values)
    renderer.milvus()
    renderer.etcd()
    renderer.minio()
    for alias in aliases:
        renderer.pulsar(alias)
    order = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    indexed = sorted(enumerate(renderer.out), key=lambda p: (order.get(p[1].kind, len(order)), p[1].source, p[0]))
    return [m for _, m in indexed]


class _ManifestDumper(yaml.SafeDumper):
    pass


def _str_presenter(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    if "\n" in data:
        return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", data)


_ManifestDumper.add_representer(str, _str_presenter)


def dump_yaml(obj: Any) -> str:
    return yaml.dump(obj, Dumper=_ManifestDumper, sort_keys=False, default_flow_style=False, width=1 << 20)


def manifest_text(manifests: list[Manifest]) -> str:
    """The release manifest exactly as Helm joins rendered templates."""
    return "".join(f"---\n# Source: {m.source}\n{dump_yaml(m.obj).rstrip()}\n" for m in manifests)


def parse_manifest(text: str) -> list[dict[str, Any]]:
    """The objects of a stored release manifest (documents split on ``---``; empty ones skipped)."""
    objects = []
    for doc in yaml.safe_load_all(text or ""):
        if isinstance(doc, dict) and doc.get("kind"):
            objects.append(doc)
    return objects
