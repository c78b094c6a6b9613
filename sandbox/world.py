"""A whole simulated world for the tests and the demo: cluster, helm, Milvus and Slack.

``World`` starts the Kubernetes API server with its controllers, a Slack Web API, and for
each Milvus release a Milvus HTTP simulator reachable through the API server's service proxy
at ``<release>-milvus`` (ports 9091 and 19530), exactly where the bot looks for it. Releases
are installed by the real helm (``helm_major`` 4 or 3, the pinned binaries of
``sandbox.tools``) from the real Milvus charts, served by ``ChartRepo`` as a chart repository,
so their storage Secrets, objects and PVCs are what real helm writes and what the simulated
controllers make of the real chart.

The default scenario (``seed_default``) is the one the README's demo rehearses:
- ``default/my-release``: chart 4.2.40 (Milvus 2.5.5), cluster mode, Pulsar V2, three
  databases with collections and unflushed writes;
- ``default/other-release``: another Milvus with its own Pulsar V2 (must stay untouched);
- ``staging/my-release``: a same-named release in another namespace (must stay untouched).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from dataclasses import dataclass, field
from typing import Any

from sandbox import tools
from sandbox.chartrepo import ChartRepo
from sandbox.kube.controllers import ClusterSim
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import Event, Store
from sandbox.milvus import MilvusSim
from sandbox.slack import SlackSim

CHANNEL = "C0UPGRADE"
OPERATOR = "U0ALICE"  # listed in BOT_OPERATORS by user id
GROUP_OPERATOR = "U0BOB"  # an operator through the user group S0OPS
GROUP = "S0OPS"
STRANGER = "U0MALLORY"  # not an operator
SIGNING_SECRET = "sandbox-signing-secret-0123456789"
BOT_TOKEN = "xoxb-sandbox-0000-bot-token"
APP_TOKEN = "xapp-1-A0SANDBOX-0000-app-level-token"  # Socket Mode (apps.connections.open)
UNSET = "\x00unset"  # a bot_env override with this value removes the variable (no env value holds NUL)
REPO_NAME = "zilliztech"

PULSAR_V2 = {"pulsar": {"enabled": True}, "pulsarv3": {"enabled": False}}
SMALL = {"etcd": {"replicaCount": 1}, "minio": {"mode": "standalone"}}
# As many real values files do: MinIO's keys in the values (the chart's minio.accessKey/secretKey).
MINIO_ACCESS_KEY = "sandbox-minio-access-7Qx"
MINIO_SECRET_KEY = "sandbox-minio-secret-9Jk2vW"
SMALL_WITH_KEYS = {
    **SMALL,
    "minio": {"mode": "standalone", "accessKey": MINIO_ACCESS_KEY, "secretKey": MINIO_SECRET_KEY},
}


@dataclass
class Release:
    name: str
    namespace: str
    milvus: MilvusSim
    values: dict[str, Any] = field(default_factory=dict)


class HelmFailed(RuntimeError):
    pass


class World:
    def __init__(
        self,
        workdir: str | None = None,
        *,
        pod_ready_seconds: float = 0.05,
        flush_polls: int = 2,
        reclaim_policy: str = "Delete",
        operator_version: str | None = "v1.1.2",
        helm_major: int = 4,
        milvus_token: str | None = None,
    ) -> None:
        self.milvus_token = milvus_token
        self.workdir = workdir or tempfile.mkdtemp(prefix="mpub-world-")
        self.helm_major = helm_major
        self.charts = ChartRepo()
        self.store = Store()
        self.kube = KubeApiServer(self.store)
        self.cluster = ClusterSim(
            self.store,
            pod_ready_seconds=pod_ready_seconds,
            reclaim_policy=reclaim_policy,
            operator_version=operator_version,
        )
        self.slack = SlackSim(bot_token=BOT_TOKEN, app_token=APP_TOKEN)
        self.flush_polls = flush_polls
        self.releases: dict[tuple[str, str], Release] = {}
        self.kubeconfig = os.path.join(self.workdir, "kubeconfig")
        self._repo_added = False

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> World:
        self.charts.start()
        self.kube.start()
        self.kube.write_kubeconfig(self.kubeconfig)
        os.chmod(self.kubeconfig, 0o600)
        self.cluster.start()
        self.slack.start()
        self.slack.add_user(OPERATOR, "alice")
        self.slack.add_user(GROUP_OPERATOR, "bob")
        self.slack.add_user(STRANGER, "mallory")
        self.slack.add_usergroup(GROUP, "milvus-oncall", [GROUP_OPERATOR])
        self.slack.add_channel(CHANNEL, "milvus-ops")
        return self

    def stop(self) -> None:
        for release in self.releases.values():
            release.milvus.stop()
        self.slack.stop()
        self.cluster.stop()
        self.kube.stop()
        self.charts.stop()

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ helm
    @property
    def helm_env(self) -> dict[str, str]:
        """Helm's own folders inside the world (the world's helm and the bot's share them)."""
        return {
            "KUBECONFIG": self.kubeconfig,
            "HELM_CONFIG_HOME": os.path.join(self.workdir, "helm-config"),
            "HELM_CACHE_HOME": os.path.join(self.workdir, "helm-cache"),
            "HELM_DATA_HOME": os.path.join(self.workdir, "helm-data"),
            "HOME": self.workdir,
            "PATH": os.environ.get("PATH", ""),
        }

    @property
    def helm_bin(self) -> str:
        """The pinned real helm of ``helm_major``."""
        return tools.helm(self.helm_major)

    @property
    def helm_version(self) -> str:
        """``helm version --short`` of the world's helm, e.g. ``v4.1.4+g05fa379``."""
        return self.helm("version", "--short").strip()

    def helm(self, *argv: str, timeout: float = 120) -> str:
        """Run the real helm against this world; raise ``HelmFailed`` with its stderr on failure."""
        proc = subprocess.run(
            [self.helm_bin, *argv], capture_output=True, text=True, env=self.helm_env, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise HelmFailed(f"helm {' '.join(argv)}: {proc.stderr.strip()}")
        return proc.stdout

    def install(
        self,
        name: str,
        namespace: str = "default",
        values: dict[str, Any] | None = None,
        chart_version: str = "4.2.40",
    ) -> Release:
        """Install a Milvus release with the real helm and give it a Milvus HTTP simulator."""
        if not self._repo_added:
            self.helm("repo", "add", REPO_NAME, self.charts.url)
            self._repo_added = True
        self.store.ensure_namespace(namespace)
        values = values if values is not None else {**PULSAR_V2, **SMALL}
        path = os.path.join(self.workdir, f"values-{namespace}-{name}.json")
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(values, fh)
        self.helm("install", name, f"{REPO_NAME}/milvus", "--version", chart_version, "-f", path, "-n", namespace)
        return self._attach_milvus(name, namespace, values)

    def create_milvus_cr(self, name: str, namespace: str = "default", *, pulsar_chart: str = "pulsar-v2") -> Release:
        """A Milvus managed by milvus-operator (as ``kubectl apply`` of a Milvus resource would create)."""
        self.store.ensure_namespace(namespace)
        manifest = milvus_manifest(name, namespace, pulsar_chart)
        self.store.create("milvuses.milvus.io", manifest, namespace=namespace)
        return self._attach_milvus(name, namespace, manifest)

    def _attach_milvus(self, name: str, namespace: str, config: dict[str, Any]) -> Release:
        """Give a release its Milvus simulator behind service ``<name>-milvus`` (ports 9091 and 19530)."""
        key = (namespace, name)
        if key not in self.releases:
            milvus = MilvusSim(flush_polls=self.flush_polls, token=self.milvus_token).start()
            self.kube.register_service_backend(namespace, f"{name}-milvus", 9091, milvus.mgmt_url)
            self.kube.register_service_backend(namespace, f"{name}-milvus", 19530, milvus.rest_url)
            self.releases[key] = Release(name, namespace, milvus, config)
            self.store.listen(_follow_service(milvus, namespace, f"{name}-milvus"))
        return self.releases[key]

    def seed_operator(self) -> None:
        """``default/my-milvus`` managed by milvus-operator with Pulsar V2, and a neighbour Helm release."""
        main = self.create_milvus_cr("my-milvus")
        seed_data(main.milvus)
        other = self.install("other-release")
        other.milvus.add_collection("default", "logs", segments=1)
        self.settle()

    def milvus(self, name: str, namespace: str = "default") -> MilvusSim:
        return self.releases[(namespace, name)].milvus

    def milvus_direct_urls(self, name: str, namespace: str = "default") -> tuple[str, str]:
        """(port 9091 URL, port 19530 URL) of a release's Milvus, reached directly rather than
        through the service proxy (as MILVUS_MGMT_URL / MILVUS_URL would point at it)."""
        sim = self.milvus(name, namespace)
        return sim.mgmt_url, sim.rest_url

    def settle(self, timeout: float = 30.0) -> None:
        self.cluster.settle(timeout)

    def seed_default(self) -> None:
        main = self.install("my-release", values={**PULSAR_V2, **SMALL_WITH_KEYS, "cluster": {"enabled": True}})
        seed_data(main.milvus)
        other = self.install("other-release")
        other.milvus.add_collection("default", "logs", segments=1)
        staging = self.install("my-release", "staging")
        staging.milvus.add_collection("default", "books", segments=1)
        self.settle()

    # ------------------------------------------------------------------ views of the cluster
    def pvcs(self, namespace: str | None = None, selector: str | None = None) -> list[str]:
        return sorted(
            f"{p['metadata']['namespace']}/{p['metadata']['name']}"
            for p in self.store.list("persistentvolumeclaims", namespace, label_selector=selector)
            if not p["metadata"].get("deletionTimestamp")
        )

    def pvs(self) -> list[str]:
        return sorted(p["metadata"]["name"] for p in self.store.list("persistentvolumes"))

    def pods(self, namespace: str | None = None, selector: str | None = None) -> list[dict[str, Any]]:
        return self.store.list("pods", namespace, label_selector=selector)

    def bot_env(self, redis_url: str, port: int, **overrides: str) -> dict[str, str]:
        """The environment for ``milvus-pulsar-upgrade-bot serve`` against this world.

        ``overrides`` replace or add variables; an override set to ``UNSET`` removes one (e.g.
        ``SLACK_SIGNING_SECRET=UNSET`` with ``SLACK_APP_TOKEN=APP_TOKEN`` for Socket Mode)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "MILVUS_", "BOT_"))}
        env.update(self.helm_env)
        env.update(
            {
                "SLACK_BOT_TOKEN": BOT_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": self.slack.api_url,
                "REDIS_URL": redis_url,
                "KUBECONFIG": self.kubeconfig,
                "HELM_BIN": self.helm_bin,
                "MILVUS_HELM_REPO_URL": self.charts.url,
                "BOT_OPERATORS": f"{OPERATOR},{GROUP}",
                "POLL_INTERVAL_SECONDS": "0.2",
                # Not paced: the tests read each note as its own message, at once (the pace has
                # its own tests; the demo and the benchmark run with the default).
                "BOT_SLACK_PACE": "0",
                "PORT": str(port),
                "UPGRADE_PODS_TIMEOUT_SECONDS": "60",
                "UPGRADE_FLUSH_TIMEOUT_SECONDS": "30",
                "RUNNER_LEASE_SECONDS": "3",
            }
        )
        env.update(overrides)
        return {k: v for k, v in env.items() if v != UNSET}


def milvus_manifest(name: str, namespace: str, pulsar_chart: str = "pulsar-v2") -> dict[str, Any]:
    return {
        "apiVersion": "milvus.io/v1beta1",
        "kind": "Milvus",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app": "milvus", "team": "search"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
        },
        "spec": {
            "mode": "cluster",
            "components": {"image": "milvusdb/milvus:v2.5.10", "proxy": {"replicas": 1}},
            "config": {"milvus": {"log": {"level": "info"}}},
            "dependencies": {
                "etcd": {"inCluster": {"values": {"replicaCount": 1}}},
                "storage": {"inCluster": {"values": {"mode": "standalone", "replicas": 1}}},
                "pulsar": {
                    "inCluster": {
                        "chartVersion": pulsar_chart,
                        "values": {"bookkeeper": {"replicaCount": 2}, "zookeeper": {"replicaCount": 1}},
                    }
                },
            },
        },
    }


def _follow_service(milvus: MilvusSim, namespace: str, service: str) -> Any:
    """Milvus runs while its Service exists: down when the release is uninstalled (or the Milvus
    resource deleted), back with its data when it is installed again, its loaded collections then
    reloading (LoadStateLoading for a few polls) as the query nodes do after a restart."""

    def on_event(entry: Event) -> None:  # a store listener: the object is shared, read only
        _, event, key, obj, _ = entry
        if key != "services":
            return
        meta = obj.get("metadata") or {}
        if key != "services" or meta.get("namespace") != namespace or meta.get("name") != service:
            return
        if event == "DELETED":
            milvus.set_down(True, reason="Milvus is not running: its pods are gone")
        elif event == "ADDED":
            milvus.set_down(False)
            milvus.start_loading()

    return on_event


def seed_data(milvus: MilvusSim) -> None:
    """Three databases, collections with flushed and growing segments, like a busy Milvus."""
    milvus.add_collection("default", "products", segments=3)
    milvus.add_collection("default", "empty_collection", segments=0)
    milvus.add_database("analytics")
    milvus.add_collection("analytics", "events", segments=2)
    milvus.add_collection("analytics", "sessions", segments=1)
    milvus.add_database("search")
    milvus.add_collection("search", "documents", segments=2)
    milvus.insert("default", "products", 500)
    milvus.insert("analytics", "events", 250)
    milvus.insert("search", "documents", 100)
