"""The real kubectl and helm binaries against the simulated API server and cluster.

Why: the sandbox is only worth its tests if real clients cannot tell it from a cluster. Each
test runs a pinned binary (``.tools/``, fetched by ``sandbox/tools/fetch.sh`` when missing)
as a subprocess against a ``KubeApiServer`` + ``ClusterSim`` over HTTPS, and asserts what a
real cluster answers: output, exit codes, and the objects stored. Conditions are polled with
deadlines, never slept for.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from sandbox.kube.controllers import ClusterSim
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import Store

ROOT = Path(__file__).resolve().parents[1]
TOOLS = ROOT / ".tools"
BINARIES = ("kubectl", "kubectl-1.31", "helm3", "helm4")
CHART = ROOT / "sandbox" / "charts" / "milvus-4.2.58.tgz"
HELMS = ("helm4", "helm3")


@dataclass
class Cluster:
    store: Store
    server: KubeApiServer
    kubeconfig: Path
    env: dict[str, str]
    sim: ClusterSim

    def run(
        self, tool: str, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        cmd = [str(TOOLS / tool), "--kubeconfig", str(self.kubeconfig), *args]
        proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=self.env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.run("kubectl", *args, **kw)


def wait_for(cond: Callable[[], Any], timeout: float = 20.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="session")
def tools() -> Path:
    if not all((TOOLS / b).exists() for b in BINARIES):
        subprocess.run(["bash", str(ROOT / "sandbox" / "tools" / "fetch.sh"), str(TOOLS)], check=True)
    return TOOLS


@pytest.fixture(scope="module")
def cluster(tools: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("home")
    store = Store()
    server = KubeApiServer(store).start()
    sim = ClusterSim(store).start()
    kubeconfig = Path(server.write_kubeconfig(str(home / "kubeconfig")))
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "KUBECACHEDIR": str(home / "kube-cache"),
        "HELM_CACHE_HOME": str(home / "helm-cache"),
        "HELM_CONFIG_HOME": str(home / "helm-config"),
        "HELM_DATA_HOME": str(home / "helm-data"),
    }
    try:
        yield Cluster(store, server, kubeconfig, env, sim)
    finally:
        sim.stop()
        server.stop()


def _deployment(name: str, replicas: int = 1, image: str = "nginx:1.27") -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    }


# ---- kubectl: reads ----


def test_get_with_selectors_and_json(cluster: Cluster) -> None:
    for name, tier in (("sel-a", "web"), ("sel-b", "db"), ("sel-c", "web")):
        cluster.store.create("configmaps", {"metadata": {"name": name, "labels": {"tier": tier}}}, "default")
    out = json.loads(cluster.kubectl("get", "configmaps", "-l", "tier=web", "-o", "json").stdout)
    assert out["kind"] == "List"
    assert [i["metadata"]["name"] for i in out["items"]] == ["sel-a", "sel-c"]
    assert all(i["kind"] == "ConfigMap" and i["apiVersion"] == "v1" for i in out["items"])
    names = cluster.kubectl("get", "cm", "-l", "tier in (db,cache),tier!=web", "-o", "name").stdout.split()
    assert names == ["configmap/sel-b"]
    missing = cluster.kubectl("get", "cm", "nope", check=False)
    assert missing.returncode == 1
    assert 'Error from server (NotFound): configmaps "nope" not found' in missing.stderr
    bad = cluster.kubectl("get", "cm", "-l", "tier in web", check=False)
    assert bad.returncode == 1


class _Lines:
    """A running command's stdout, line by line, with timeouts."""

    def __init__(self, cluster: Cluster, *args: str) -> None:
        cmd = [str(TOOLS / "kubectl"), "--kubeconfig", str(cluster.kubeconfig), *args]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cluster.env)
        self.lines: queue.Queue[str] = queue.Queue()
        assert self.proc.stdout is not None
        stdout = self.proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = 20) -> str:
        return self.lines.get(timeout=timeout)

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


def _watching(cluster: Cluster, name: str) -> bool:
    return any(
        r.query.get("watch") in ("true", "1") and name in r.query.get("fieldSelector", "")
        for r in list(cluster.server.requests)
    )


def test_get_watch_prints_changes(cluster: Cluster) -> None:
    cluster.store.create("configmaps", {"metadata": {"name": "watched"}, "data": {"v": "1"}}, "default")
    out = _Lines(cluster, "get", "cm", "watched", "--watch", "-o", "jsonpath={.data.v}{'\\n'}")
    try:
        assert out.next() == "1"
        wait_for(lambda: _watching(cluster, "watched"), what="kubectl's watch request")
        cluster.store.patch("configmaps", "default", "watched", {"data": {"v": "2"}}, "merge")
        assert out.next() == "2"
    finally:
        out.close()


def test_get_watch_prints_table_rows(cluster: Cluster) -> None:
    cluster.store.create("configmaps", {"metadata": {"name": "tw"}, "data": {"a": "1"}}, "default")
    out = _Lines(cluster, "get", "cm", "tw", "--watch")
    try:
        assert out.next().split() == ["NAME", "DATA", "AGE"]
        assert out.next().split()[:2] == ["tw", "1"]
        wait_for(lambda: _watching(cluster, "tw"), what="kubectl's watch request")
        cluster.store.patch("configmaps", "default", "tw", {"data": {"b": "2"}}, "merge")
        assert out.next().split()[:2] == ["tw", "2"]
    finally:
        out.close()


def test_get_prints_the_servers_table_columns(cluster: Cluster) -> None:
    cluster.store.create("deployments.apps", _deployment("tabled", replicas=2), "default")
    wait_for(
        lambda: (
            (cluster.store.get("deployments.apps", "default", "tabled").get("status") or {}).get("availableReplicas")
            == 2
        ),
        what="tabled to be available",
    )
    lines = cluster.kubectl("get", "deployment", "tabled").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert lines[1].split()[:4] == ["tabled", "2/2", "2", "2"]
    wide = cluster.kubectl("get", "pods", "-l", "app=tabled", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:5] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert "NODE" in wide[0].split() and len(wide) == 3
    assert all(line.split()[1:4] == ["1/1", "Running", "0"] for line in wide[1:])
    labels = cluster.kubectl("get", "deploy", "tabled", "--show-labels").stdout.splitlines()
    assert labels[0].split()[-1] == "LABELS" and labels[1].split()[-1] == "app=tabled"


# ---- kubectl: writes (protobuf bodies) ----


def test_create_configmap_secret_namespace_send_protobuf(cluster: Cluster) -> None:
    cluster.server.clear_requests()
    assert cluster.kubectl("create", "configmap", "pb-cm", "--from-literal=a=b").stdout.strip() == (
        "configmap/pb-cm created"
    )
    cluster.kubectl("create", "secret", "generic", "pb-secret", "--from-literal=pw=s3cr3t")
    cluster.kubectl("create", "namespace", "pb-ns")
    posts = [r for r in cluster.server.requests if r.method == "POST"]
    assert {r.content_type for r in posts} == {"application/vnd.kubernetes.protobuf"}
    cm = cluster.store.get("configmaps", "default", "pb-cm")
    assert cm["data"] == {"a": "b"}
    assert [(e["manager"], e["operation"]) for e in cm["metadata"]["managedFields"]] == [("kubectl-create", "Update")]
    secret = cluster.store.get("secrets", "default", "pb-secret")
    assert secret["data"] == {"pw": "czNjcjN0"} and secret["type"] == "Opaque"
    assert cluster.store.get("namespaces", None, "pb-ns")["status"]["phase"] == "Active"
    again = cluster.kubectl("create", "configmap", "pb-cm", "--from-literal=a=b", check=False)
    assert again.returncode == 1
    assert 'configmaps "pb-cm" already exists' in again.stderr


def test_create_dry_run_server_stores_nothing(cluster: Cluster) -> None:
    before = cluster.store.resource_version
    out = cluster.kubectl("create", "configmap", "dry", "--from-literal=a=b", "--dry-run=server", "-o", "json")
    obj = json.loads(out.stdout)
    assert obj["metadata"]["name"] == "dry" and obj["metadata"]["uid"]
    assert cluster.store.try_get("configmaps", "default", "dry") is None
    assert cluster.store.resource_version == before


def test_delete(cluster: Cluster) -> None:
    cluster.store.create("configmaps", {"metadata": {"name": "doomed"}}, "default")
    out = cluster.kubectl("delete", "configmap", "doomed")
    assert 'configmap "doomed" deleted' in out.stdout
    assert cluster.store.try_get("configmaps", "default", "doomed") is None
    again = cluster.kubectl("delete", "configmap", "doomed", check=False)
    assert again.returncode == 1
    assert 'Error from server (NotFound): configmaps "doomed" not found' in again.stderr


def test_patch_merge_json_strategic(cluster: Cluster) -> None:
    cluster.store.create("deployments.apps", _deployment("patched"), "default")
    cluster.kubectl("patch", "deployment", "patched", "--type=merge", "-p", '{"metadata":{"labels":{"m":"1"}}}')
    cluster.kubectl(
        "patch", "deployment", "patched", "--type=json", "-p", '[{"op":"replace","path":"/spec/replicas","value":2}]'
    )
    cluster.kubectl(
        "patch",
        "deployment",
        "patched",
        "-p",
        '{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"nginx:1.28"}]}}}}',
    )
    obj = cluster.store.get("deployments.apps", "default", "patched")
    assert obj["metadata"]["labels"]["m"] == "1"
    assert obj["spec"]["replicas"] == 2
    assert obj["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.28"
    assert obj["metadata"]["generation"] == 3


def test_patch_json_test_failure_is_rejected(cluster: Cluster) -> None:
    cluster.store.create("configmaps", {"metadata": {"name": "jp"}, "data": {"a": "1"}}, "default")
    bad = cluster.kubectl(
        "patch", "cm", "jp", "--type=json", "-p", '[{"op":"test","path":"/data/a","value":"9"}]', check=False
    )
    assert bad.returncode == 1
    assert cluster.store.get("configmaps", "default", "jp")["data"] == {"a": "1"}


# ---- kubectl apply ----


def test_apply_client_side_twice(cluster: Cluster, tmp_path: Path) -> None:
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "csa"}, "data": {"k": "1"}}
    path = tmp_path / "cm.yaml"
    path.write_text(yaml.safe_dump(manifest))
    assert cluster.kubectl("apply", "-f", str(path)).stdout.strip() == "configmap/csa created"
    assert cluster.kubectl("apply", "-f", str(path)).stdout.strip() == "configmap/csa unchanged"
    manifest["data"] = {"k": "2"}
    path.write_text(yaml.safe_dump(manifest))
    assert cluster.kubectl("apply", "-f", str(path)).stdout.strip() == "configmap/csa configured"
    obj = cluster.store.get("configmaps", "default", "csa")
    assert obj["data"] == {"k": "2"}
    last = json.loads(obj["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"])
    assert last["data"] == {"k": "2"}


def test_apply_server_side_twice_and_conflict(cluster: Cluster) -> None:
    manifest = yaml.safe_dump(_deployment("ssa"))
    assert cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifest).stdout.strip() == (
        "deployment.apps/ssa serverside-applied"
    )
    # The controllers first roll the Deployment out (a ReplicaSet, a pod Ready after 0.2 s, the
    # status written back): only then is a second write by the apply itself to be told apart.
    cluster.sim.settle()
    rv = cluster.store.get("deployments.apps", "default", "ssa")["metadata"]["resourceVersion"]
    cluster.kubectl("apply", "--server-side", "-f", "-", stdin=manifest)
    obj = cluster.store.get("deployments.apps", "default", "ssa")
    assert obj["metadata"]["resourceVersion"] == rv  # re-applying the same config writes nothing
    entries = obj["metadata"]["managedFields"]
    assert [(e["manager"], e["operation"]) for e in entries] == [("kubectl", "Apply")]
    assert "f:replicas" in entries[0]["fieldsV1"]["f:spec"]
    other = yaml.safe_dump(_deployment("ssa", replicas=3))
    refused = cluster.kubectl("apply", "--server-side", "--field-manager=other", "-f", "-", stdin=other, check=False)
    assert refused.returncode == 1
    assert 'Apply failed with 1 conflict: conflict with "kubectl": .spec.replicas' in refused.stderr
    assert cluster.store.get("deployments.apps", "default", "ssa")["spec"]["replicas"] == 1
    cluster.kubectl("apply", "--server-side", "--field-manager=other", "--force-conflicts", "-f", "-", stdin=other)
    obj = cluster.store.get("deployments.apps", "default", "ssa")
    assert obj["spec"]["replicas"] == 3
    owners = {e["manager"]: e["fieldsV1"] for e in obj["metadata"]["managedFields"]}
    assert "f:replicas" in owners["other"]["f:spec"] and "f:replicas" not in owners["kubectl"]["f:spec"]


def test_apply_strict_field_validation(cluster: Cluster) -> None:
    bad = _deployment("strict")
    bad["spec"]["foo"] = 1
    created = cluster.kubectl("create", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert created.returncode == 1
    assert 'strict decoding error: unknown field "spec.foo"' in created.stderr
    assert cluster.store.try_get("deployments.apps", "default", "strict") is None


def test_explain_reads_openapi_v3(cluster: Cluster) -> None:
    out = cluster.kubectl("explain", "deployment.spec.replicas").stdout
    assert "KIND:       Deployment" in out and "FIELD: replicas <integer>" in out


def test_kubectl_1_31_smoke(cluster: Cluster) -> None:
    old = "kubectl-1.31"
    assert cluster.run(old, "create", "configmap", "old-cm", "--from-literal=a=b").stdout.strip() == (
        "configmap/old-cm created"
    )
    assert cluster.run(old, "get", "cm", "old-cm").stdout.split()[:5] == ["NAME", "DATA", "AGE", "old-cm", "1"]
    applied = cluster.run(old, "apply", "--server-side", "-f", "-", stdin=yaml.safe_dump(_deployment("old-ssa")))
    assert applied.stdout.strip() == "deployment.apps/old-ssa serverside-applied"
    cluster.run(old, "scale", "deployment", "old-ssa", "--replicas=2")
    assert cluster.store.get("deployments.apps", "default", "old-ssa")["spec"]["replicas"] == 2
    assert cluster.run(old, "auth", "can-i", "create", "pods").stdout.strip() == "yes"
    cluster.run(old, "delete", "configmap", "old-cm")
    assert cluster.store.try_get("configmaps", "default", "old-cm") is None


# ---- auth and scale ----


def test_auth_can_i_allowed_and_denied(cluster: Cluster) -> None:
    assert cluster.kubectl("auth", "can-i", "get", "pods").stdout.strip() == "yes"
    cluster.server.deny("delete", "pods", namespace="kube-system")
    try:
        denied = cluster.kubectl("auth", "can-i", "delete", "pods", "-n", "kube-system", check=False)
        assert denied.returncode == 1 and denied.stdout.strip() == "no"
        assert cluster.kubectl("auth", "can-i", "delete", "pods", "-n", "default").stdout.strip() == "yes"
    finally:
        cluster.server.clear_denies()


def test_scale_deployment_and_statefulset(cluster: Cluster) -> None:
    cluster.store.create("deployments.apps", _deployment("scaled"), "default")
    assert cluster.kubectl("scale", "deployment", "scaled", "--replicas=3").stdout.strip() == (
        "deployment.apps/scaled scaled"
    )
    assert cluster.store.get("deployments.apps", "default", "scaled")["spec"]["replicas"] == 3
    sts = _deployment("scaled-sts")
    sts["kind"] = "StatefulSet"
    sts["spec"]["serviceName"] = "scaled-sts"
    cluster.store.create("statefulsets.apps", sts, "default")
    cluster.kubectl("scale", "statefulset", "scaled-sts", "--replicas=2", "--current-replicas=1")
    assert cluster.store.get("statefulsets.apps", "default", "scaled-sts")["spec"]["replicas"] == 2
    stale = cluster.kubectl("scale", "sts", "scaled-sts", "--replicas=5", "--current-replicas=1", check=False)
    assert stale.returncode == 1
    assert cluster.store.get("statefulsets.apps", "default", "scaled-sts")["spec"]["replicas"] == 2


# ---- watch-list, as helm 4's --wait uses it ----


def test_watch_list_sends_initial_events_then_bookmark(cluster: Cluster) -> None:
    cluster.store.create("namespaces", {"metadata": {"name": "wl"}})
    for i in range(2):
        cluster.store.create("configmaps", {"metadata": {"name": f"wl-{i}"}}, "wl")
    url = (
        f"{cluster.server.url}/api/v1/namespaces/wl/configmaps?watch=1&sendInitialEvents=true"
        "&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=10"
    )
    headers = {"Authorization": f"Bearer {cluster.server.token}"}
    with (
        httpx.Client(verify=cluster.server.ssl_context(), timeout=15) as http,
        http.stream("GET", url, headers=headers) as resp,
    ):
        assert resp.status_code == 200
        events = resp.iter_lines()
        first = [json.loads(next(events)) for _ in range(3)]
        assert [(e["type"], e["object"]["metadata"].get("name")) for e in first[:2]] == [
            ("ADDED", "wl-0"),
            ("ADDED", "wl-1"),
        ]
        assert first[2]["type"] == "BOOKMARK"
        assert first[2]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        cluster.store.create("configmaps", {"metadata": {"name": "wl-2"}}, "wl")
        live = json.loads(next(events))
        assert (live["type"], live["object"]["metadata"]["name"]) == ("ADDED", "wl-2")
    bad = httpx.get(url.replace("&allowWatchBookmarks=true", ""), headers=headers, verify=cluster.server.ssl_context())
    assert bad.status_code == 422


# ---- helm ----


def _release_secrets(cluster: Cluster, name: str, namespace: str) -> list[dict[str, Any]]:
    return cluster.store.list("secrets", namespace, f"owner=helm,name={name}")


@pytest.mark.parametrize("helm", HELMS)
def test_helm_lifecycle(cluster: Cluster, helm: str) -> None:
    ns = f"life-{helm}"
    rel = "m"
    common = ("-n", ns)
    cluster.run(helm, "install", rel, str(CHART), "--set", "cluster.enabled=true", "--create-namespace", *common)
    secrets = _release_secrets(cluster, rel, ns)
    assert [s["metadata"]["name"] for s in secrets] == [f"sh.helm.release.v1.{rel}.v1"]
    assert secrets[0]["type"] == "helm.sh/release.v1"
    assert cluster.store.list("statefulsets.apps", ns, f"app.kubernetes.io/instance={rel}")
    status = cluster.run(helm, "status", rel, *common).stdout
    assert "STATUS: deployed" in status and "REVISION: 1" in status
    values = json.loads(cluster.run(helm, "get", "values", rel, "-o", "json", *common).stdout)
    assert values == {"cluster": {"enabled": True}}
    cluster.run(helm, "upgrade", rel, str(CHART), "--reuse-values", "--set", "metrics.enabled=false", *common)
    cluster.run(helm, "rollback", rel, "1", *common)
    history = cluster.run(helm, "history", rel, "-o", "json", *common).stdout
    rows = [(h["revision"], h["status"], h["description"]) for h in json.loads(history)]
    assert rows == [
        (1, "superseded", "Install complete"),
        (2, "superseded", "Upgrade complete"),
        (3, "deployed", "Rollback to 1"),
    ]
    assert json.loads(cluster.run(helm, "get", "values", rel, "-o", "json", *common).stdout) == values
    out = cluster.run(helm, "uninstall", rel, *common).stdout
    assert f'release "{rel}" uninstalled' in out
    assert _release_secrets(cluster, rel, ns) == []
    assert cluster.store.list("statefulsets.apps", ns) == []
    assert cluster.store.list("deployments.apps", ns) == []
    gone = cluster.run(helm, "status", rel, *common, check=False)
    assert gone.returncode == 1 and "release: not found" in gone.stderr


def test_helm4_installs_with_server_side_apply(cluster: Cluster) -> None:
    ns = "ssa-helm"
    cluster.run("helm4", "install", "s", str(CHART), "--set", "cluster.enabled=true", "--create-namespace", "-n", ns)
    applies = [
        r
        for r in cluster.server.requests
        if r.method == "PATCH" and f"/namespaces/{ns}/" in r.path and r.content_type == "application/apply-patch+yaml"
    ]
    assert applies and all(r.query.get("fieldManager") == "helm" for r in applies)
    sts = cluster.store.get("statefulsets.apps", ns, "s-etcd")
    first = sts["metadata"]["managedFields"][0]
    assert (first["manager"], first["operation"]) == ("helm", "Apply")
    cluster.run("helm4", "uninstall", "s", "-n", ns)


@pytest.mark.parametrize("helm", HELMS)
def test_helm_install_wait_small_chart(cluster: Cluster, helm: str, tmp_path: Path) -> None:
    chart = tmp_path / "tiny"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: tiny\nversion: 0.1.0\n")
    (chart / "templates" / "deploy.yaml").write_text(yaml.safe_dump(_deployment("{{ .Release.Name }}-web")))
    ns = f"tiny-{helm}"
    cluster.run(helm, "install", "t", str(chart), "--wait", "--timeout", "60s", "--create-namespace", "-n", ns)
    deploy = cluster.store.get("deployments.apps", ns, "t-web")
    assert deploy["status"].get("availableReplicas") == 1


@pytest.mark.parametrize("helm", HELMS)
def test_helm_install_milvus_wait(cluster: Cluster, helm: str) -> None:
    ns = f"wait-{helm}"
    cluster.run(
        helm,
        "install",
        "w",
        str(CHART),
        "--set",
        "cluster.enabled=true",
        "--wait",
        "--timeout",
        "120s",
        "--create-namespace",
        "-n",
        ns,
        timeout=150,
    )
    for sts in cluster.store.list("statefulsets.apps", ns):
        assert sts["status"].get("readyReplicas") == sts["spec"]["replicas"]
