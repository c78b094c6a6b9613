"""The bot's Helm adapter (bot/cluster/helm.py) against the real helm 3 and 4 and the real chart.

Behaviours covered:
- the decoder reads a release Secret built by hand (gzip + base64 + base64 of a JSON literal,
  and the un-gzipped variant Helm also accepts), keeps int64 values exact, and
  ``find_release`` picks the latest revision of the right release only;
- for Helm 3.17 and Helm 4.1 (each test runs with both), against the sandbox API server:
  - ``HelmCli.version`` parses the real version and calls it supported;
  - ``show_chart`` with ``--repo`` reads the chart repository (pinned version, appVersion), with
    no shared repository state;
  - a release real helm installed (chart 4.2.40, Pulsar V2) is read by ``find_release`` from
    its storage Secret exactly as ``helm get values -o json`` / ``helm status`` see it, and its
    Secret decodes by hand (base64, base64, gunzip, JSON);
  - ``install`` refuses a name in use, ``get_values`` equals the values; ``template`` renders
    what install would; ``uninstall`` removes the release Secrets but leaves the StatefulSets'
    claims and the ``helm.sh/resource-policy: keep`` MinIO PVC; a reinstall with
    ``upgrade=True`` over a left-over release replaces it (revision 2, Pulsar V3 values);
  - ``helm install --reset-values`` is rejected by the real helm (why the bot never sends it);
- a hung helm is killed on timeout and raises ``HelmError``.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.cluster.helm import (
    HelmCli,
    HelmError,
    HelmRelease,
    decode_release_data,
    find_release,
    release_from_secret,
)
from sandbox import tools
from sandbox.chartrepo import ChartRepo
from sandbox.kube.controllers import ClusterSim
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import Store

PULSAR_V2_VALUES: dict[str, Any] = {
    "cluster": {"enabled": True},
    "pulsar": {"enabled": True},
    "pulsarv3": {"enabled": False},
    "etcd": {"replicaCount": 1},
    "minio": {"mode": "standalone"},
    "queryNode": {"replicas": 2},
}
PULSAR_V3_VALUES: dict[str, Any] = {**PULSAR_V2_VALUES, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}


# --- the decoder against hand-built secrets -----------------------------------------------------
RELEASE_JSON = (
    '{"name":"my-release","info":{"first_deployed":"2025-03-01T10:00:00.123456789+01:00",'
    '"last_deployed":"2025-03-01T10:00:00.123456789+01:00","deleted":"","description":"Install complete",'
    '"status":"deployed"},"chart":{"metadata":{"name":"milvus","version":"4.2.18","description":"Milvus",'
    '"apiVersion":"v2","appVersion":"2.5.4"},"lock":null,"templates":[],"values":{"cluster":{"enabled":true}},'
    '"schema":null,"files":[]},"config":{"pulsar":{"enabled":true},"seed":454097953998180737},'
    '"manifest":"---\\n# Source: milvus/templates/service.yaml\\napiVersion: v1\\nkind: Service\\n",'
    '"version":3,"namespace":"milvus"}'
)


def _encode(release: dict[str, Any]) -> str:
    """What Helm's storage driver writes, as the API returns it: base64(base64(gzip(JSON)))."""
    inner = base64.b64encode(gzip.compress(json.dumps(release).encode()))
    return base64.b64encode(inner).decode()


def _secret(data_release: str, revision: int = 3, name: str = "my-release", owner: str = "helm") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": f"sh.helm.release.v1.{name}.v{revision}",
            "namespace": "milvus",
            "labels": {"name": name, "owner": owner, "status": "deployed", "version": str(revision)},
        },
        "type": "helm.sh/release.v1",
        "data": {"release": data_release},
    }


def test_decoder_reads_a_hand_built_release_secret() -> None:
    helm_b64 = base64.b64encode(gzip.compress(RELEASE_JSON.encode()))
    release = release_from_secret(_secret(base64.b64encode(helm_b64).decode()))
    assert release == HelmRelease(
        name="my-release",
        namespace="milvus",
        revision=3,
        status="deployed",
        chart_name="milvus",
        chart_version="4.2.18",
        app_version="2.5.4",
        config={"pulsar": {"enabled": True}, "seed": 454097953998180737},
        manifest="---\n# Source: milvus/templates/service.yaml\napiVersion: v1\nkind: Service\n",
        secret_name="sh.helm.release.v1.my-release.v3",
    )
    plain = base64.b64encode(base64.b64encode(RELEASE_JSON.encode())).decode()  # helm also reads un-gzipped
    assert decode_release_data(plain)["config"]["seed"] == 454097953998180737


def test_find_release_picks_latest_revision_of_that_release() -> None:
    def encoded(version: int, status: str, name: str = "my-release") -> str:
        rel = json.loads(RELEASE_JSON)
        rel.update(version=version, name=name)
        rel["info"]["status"] = status
        return _encode(rel)

    secrets = [
        _secret(encoded(9, "deployed"), 9, owner="someone-else"),
        _secret(encoded(2, "superseded"), 2),
        _secret(encoded(10, "deployed"), 10),
        _secret(encoded(12, "deployed", "other"), 12, name="other"),
        _secret(encoded(3, "superseded"), 3),
    ]
    found = find_release(secrets, "my-release")
    assert found is not None and (found.revision, found.status) == (10, "deployed")
    assert find_release(secrets, "missing") is None


def test_hung_helm_is_killed_on_timeout() -> None:
    slow = HelmCli("/bin/sleep", kubeconfig=None, context=None, timeout=0.2)
    with pytest.raises(HelmError) as info:
        slow.run(["5"])
    assert info.value.exit_code == -9
    assert "timeout" in info.value.stderr


# --- against the real helm ----------------------------------------------------------------------
class Cluster:
    def __init__(self, home: Path) -> None:
        self.store = Store()
        self.server = KubeApiServer(self.store).start()
        self.sim = ClusterSim(self.store, pod_ready_seconds=0.01)
        self.sim.start()
        self.charts = ChartRepo().start()
        self.home = home
        self.kubeconfig = self.server.write_kubeconfig(str(home / "kubeconfig"))
        os.chmod(self.kubeconfig, 0o600)
        self.env = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}

    def stop(self) -> None:
        self.charts.stop()
        self.sim.stop()
        self.server.stop()

    def secrets(self, ns: str, name: str) -> list[dict[str, Any]]:
        return self.store.list("secrets", ns, label_selector=f"owner=helm,name={name}")

    def names(self, key: str, ns: str, selector: str | None = None) -> list[str]:
        return sorted(o["metadata"]["name"] for o in self.store.list(key, ns, label_selector=selector))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    c = Cluster(tmp_path_factory.mktemp("helm-home"))
    yield c
    c.stop()


@pytest.fixture(params=[3, 4], ids=["helm3", "helm4"])
def cli(request: pytest.FixtureRequest, cluster: Cluster) -> HelmCli:
    # context: every call also passes --kube-context, as the bot does with KUBE_CONTEXT set
    return HelmCli(
        tools.helm(request.param), kubeconfig=cluster.kubeconfig, context="sandbox", env=cluster.env, timeout=120
    )


def _decode_by_hand(secret: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    assert raw[:3] == b"\x1f\x8b\x08"
    release: dict[str, Any] = json.loads(gzip.decompress(raw))
    return release


def test_version_repo_and_chart(cli: HelmCli, cluster: Cluster) -> None:
    version = cli.version()
    assert version.supported and version.text.startswith(("v3.17.3+", "v4.1.4+"))
    meta = cli.show_chart("milvus", "4.2.40", cluster.charts.url)
    assert (meta["version"], str(meta["appVersion"])) == ("4.2.40", "2.5.5")
    assert cli.show_chart("milvus", None, cluster.charts.url)["version"] == "5.0.19"  # the latest, without a pin
    with pytest.raises(HelmError) as info:
        cli.show_chart("milvus", "4.9.99", cluster.charts.url)
    assert "4.9.99" in info.value.stderr


def test_release_written_by_real_helm_reads_back(cli: HelmCli, cluster: Cluster) -> None:
    ns = f"h{cli.version().major}"
    rel = "my-release"
    cluster.store.ensure_namespace(ns)
    out = cli.install(rel, ns, "milvus", PULSAR_V2_VALUES, "4.2.40", cluster.charts.url)
    assert "STATUS: deployed" in out and "REVISION: 1" in out

    secrets = cluster.secrets(ns, rel)
    assert [s["metadata"]["name"] for s in secrets] == [f"sh.helm.release.v1.{rel}.v1"]
    assert secrets[0]["type"] == "helm.sh/release.v1"
    labels = secrets[0]["metadata"]["labels"]
    assert {k: labels[k] for k in ("name", "owner", "status", "version")} == {
        "name": rel,
        "owner": "helm",
        "status": "deployed",
        "version": "1",
    }
    by_hand = _decode_by_hand(secrets[0])
    found = find_release(secrets, rel)
    assert found is not None
    assert (found.name, found.namespace, found.revision, found.status) == (rel, ns, 1, "deployed")
    assert (found.chart_name, found.chart_version, found.app_version) == ("milvus", "4.2.40", "2.5.5")
    assert found.config == by_hand["config"] == cli.get_values(rel, ns) == PULSAR_V2_VALUES
    assert found.manifest == by_hand["manifest"] and "# Source: milvus/charts/pulsar/templates/" in found.manifest
    status = json.loads(cli.run(["status", rel, "-o", "json"], namespace=ns))
    assert (status["version"], status["info"]["status"]) == (found.revision, found.status)

    rendered = cli.template(rel, ns, "milvus", PULSAR_V2_VALUES, "4.2.40", cluster.charts.url)
    assert {d["kind"] for d in yaml.safe_load_all(rendered) if d} >= {"StatefulSet", "Deployment", "Service"}

    with pytest.raises(HelmError) as info:
        cli.install(rel, ns, "milvus", PULSAR_V2_VALUES, "4.2.40", cluster.charts.url)
    assert re.search(r"cannot re-?use a name that is still in use", info.value.stderr)  # Helm 3 / Helm 4 wording

    cluster.sim.settle(60)
    claims = cluster.names("persistentvolumeclaims", ns, f"app=pulsar,release={rel}")
    assert claims and all(c.startswith(f"{rel}-pulsar-") for c in claims)
    cli.uninstall(rel, ns)
    assert cluster.secrets(ns, rel) == []
    assert find_release(cluster.secrets(ns, rel), rel) is None
    assert cluster.names("persistentvolumeclaims", ns, f"app=pulsar,release={rel}") == claims
    assert f"{rel}-minio" in cluster.names("persistentvolumeclaims", ns)
    assert cluster.names("statefulsets.apps", ns) == []

    out = cli.install(rel, ns, "milvus", PULSAR_V3_VALUES, "4.2.40", cluster.charts.url, upgrade=True)
    again = find_release(cluster.secrets(ns, rel), rel)
    assert again is not None and again.status == "deployed" and again.config == PULSAR_V3_VALUES
    assert cluster.names("statefulsets.apps", ns, f"app=pulsarv3,release={rel}")
    cli.uninstall(rel, ns)


def test_real_helm_rejects_install_reset_values(cli: HelmCli) -> None:
    with pytest.raises(HelmError) as info:
        cli.run(["install", "r", "milvus", "--repo", "http://127.0.0.1:1", "--reset-values"], namespace="default")
    assert info.value.exit_code == 1
    assert "unknown flag: --reset-values" in info.value.stderr


def test_helm_version_refuses_old_and_reads_both(tmp_path: Path) -> None:
    fake = tmp_path / "helm"
    fake.write_text("#!/bin/sh\necho v3.12.3+g3a31588\n")
    fake.chmod(0o755)
    old = HelmCli(str(fake), kubeconfig=None, context=None).version()
    assert (old.major, old.minor, old.supported) == (3, 12, False)
    for major in (3, 4):
        out = subprocess.run([tools.helm(major), "version", "--short"], capture_output=True, text=True, check=True)
        assert HelmCli(tools.helm(major), kubeconfig=None, context=None).version().text == out.stdout.strip()
