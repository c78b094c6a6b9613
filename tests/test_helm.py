"""The helm CLI simulator (sandbox/helm) and the bot's Helm adapter (bot/cluster/helm.py).

Behaviours covered:
- the bot's decoder reads a release Secret built by hand (gzip + base64 + base64 of a JSON
  literal, and the un-gzipped variant Helm also accepts), keeps int64 values exact, and
  ``find_release`` picks the latest revision of the right release only;
- the simulator's release Secrets have Helm 3's name, type and labels, and their
  ``data.release`` decodes by hand (base64, base64, gunzip, JSON) as well as with the bot's decoder;
- strict command line (real subprocess through ``HelmCli``): ``install --reset-values`` is an
  unknown flag, missing arguments and unknown commands fail like helm; a hung helm is killed
  on timeout and raises ``HelmError``;
- repositories: ``install zilliztech/milvus`` without the repo fails (``repo zilliztech not
  found``), ``repo add``/``update`` write helm's files, an unknown repository URL is rejected,
  ``show chart`` prints the pinned version and appVersion (latest without a pin);
- install of chart 4.2.40 with Pulsar V2 values: objects with the chart's labels (StatefulSets
  ``app=pulsar,release=R``, etcd/MinIO/Milvus names), helm ownership metadata, name in use on a
  second install, ``get values -o json`` equal to the values, ``status``/``list``/``history``;
- uninstall deletes Deployments, StatefulSets, Services and the release Secrets but keeps the
  ``helm.sh/resource-policy: keep`` PVC; reinstall with Pulsar V3 values makes ``app=pulsarv3``
  StatefulSets; ``upgrade --install --reset-values`` installs and later upgrades (previous
  revision superseded); ``upgrade`` without ``--install`` on a missing release fails;
- failures as helm words them: both Pulsar subcharts enabled, an existing object not owned by
  the release, ``--wait`` running out of time (release stored as failed), a rejected token.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from bot.cluster.helm import (
    HelmCli,
    HelmError,
    HelmRelease,
    decode_release_data,
    encode_release_data,
    find_release,
    release_from_secret,
)
from sandbox.helm.cli import run
from sandbox.kube.server import KubeApiServer

REPO = "https://zilliztech.github.io/milvus-helm"
HELM_BIN = str(Path(sys.executable).with_name("sandbox-helm"))
PULSAR_V2_VALUES: dict[str, Any] = {
    "pulsar": {"enabled": True},
    "pulsarv3": {"enabled": False},
    "etcd": {"replicaCount": 1},
    "minio": {"mode": "standalone"},
    "queryNode": {"replicas": 2},
}
PULSAR_V3_VALUES: dict[str, Any] = {
    **PULSAR_V2_VALUES,
    "pulsar": {"enabled": False},
    "pulsarv3": {"enabled": True},
}


# --- fixtures -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[KubeApiServer]:
    srv = KubeApiServer().start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm-home")


@pytest.fixture(scope="module")
def kubeconfig(server: KubeApiServer, home: Path) -> str:
    path = server.write_kubeconfig(str(home / "kubeconfig"))
    os.chmod(path, 0o600)
    return path


@pytest.fixture(scope="module")
def env(home: Path, kubeconfig: str) -> dict[str, str]:
    return {"HOME": str(home), "PATH": os.environ.get("PATH", ""), "KUBECONFIG": kubeconfig}


@pytest.fixture(scope="module")
def cli(env: dict[str, str], kubeconfig: str) -> HelmCli:
    return HelmCli(HELM_BIN, kubeconfig=kubeconfig, context=None, env=env, timeout=30)


@pytest.fixture(scope="module")
def api(server: KubeApiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.token}"}) as client:
        yield client


@pytest.fixture(scope="module")
def with_repo(cli: HelmCli) -> None:
    cli.repo_add_update("zilliztech", REPO)


def helm(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return run(list(args), env)


def ok(env: dict[str, str], *args: str) -> str:
    code, out, err = run(list(args), env)
    assert code == 0, err
    return out


def items(api: httpx.Client, path: str, selector: str | None = None) -> list[dict[str, Any]]:
    resp = api.get(path, params={"labelSelector": selector} if selector else None)
    resp.raise_for_status()
    return list(resp.json()["items"])


def names(objects: list[dict[str, Any]]) -> list[str]:
    return sorted(o["metadata"]["name"] for o in objects)


# --- the decoder against a hand-built secret ----------------------------------------------------
RELEASE_JSON = (
    '{"name":"my-release","info":{"first_deployed":"2025-03-01T10:00:00.123456789+01:00",'
    '"last_deployed":"2025-03-01T10:00:00.123456789+01:00","deleted":"","description":"Install complete",'
    '"status":"deployed"},"chart":{"metadata":{"name":"milvus","version":"4.2.18","description":"Milvus",'
    '"apiVersion":"v2","appVersion":"2.5.4"},"lock":null,"templates":[],"values":{"cluster":{"enabled":true}},'
    '"schema":null,"files":[]},"config":{"pulsar":{"enabled":true},"seed":454097953998180737},'
    '"manifest":"---\\n# Source: milvus/templates/service.yaml\\napiVersion: v1\\nkind: Service\\n",'
    '"version":3,"namespace":"milvus"}'
)


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
    assert decode_release_data(encode_release_data(json.loads(RELEASE_JSON))) == json.loads(RELEASE_JSON)


def test_find_release_picks_latest_revision_of_that_release() -> None:
    def encoded(version: int, status: str, name: str = "my-release") -> str:
        rel = json.loads(RELEASE_JSON)
        rel.update(version=version, name=name)
        rel["info"]["status"] = status
        return encode_release_data(rel)

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


# --- strict command line (real subprocess) ------------------------------------------------------
def test_install_rejects_reset_values_like_helm(cli: HelmCli) -> None:
    with pytest.raises(HelmError) as info:
        cli.run(["install", "r", "zilliztech/milvus", "--reset-values"], namespace="default")
    assert info.value.exit_code == 1
    assert "Error: unknown flag: --reset-values" in info.value.stderr
    assert cli.version() == "v3.16.2+g13654a5"


def test_cli_errors_match_helm(env: dict[str, str]) -> None:
    assert helm(env, "install") == (
        1,
        "",
        'Error: "helm install" requires at least 1 argument\n\nUsage:  helm install [NAME] [CHART] [flags]\n',
    )
    assert helm(env, "upgrade", "r")[2].startswith('Error: "helm upgrade" requires 2 arguments\n')
    assert helm(env, "status", "-x", "r")[2] == "Error: unknown shorthand flag: 'x' in -x\n"
    code, _, err = helm(env, "frobnicate")
    assert code == 1 and err.startswith('Error: unknown command "frobnicate" for "helm"\n')
    assert helm(env, "get", "values", "r", "-o", "xml")[2] == (
        'Error: invalid argument "xml" for "-o, --output" flag: invalid format type\n'
    )
    assert helm(env, "install", "r", "milvus", "--repo", REPO, "--timeout", "300")[2] == (
        'Error: invalid argument "300" for "--timeout" flag: time: missing unit in duration "300"\n'
    )


def test_hung_helm_is_killed_on_timeout() -> None:
    slow = HelmCli("/bin/sleep", kubeconfig=None, context=None, timeout=0.2)
    with pytest.raises(HelmError) as info:
        slow.run(["5"])
    assert info.value.exit_code == -9
    assert "timeout" in info.value.stderr


# --- repositories and charts --------------------------------------------------------------------
def test_install_without_repo_fails(tmp_path: Path, kubeconfig: str) -> None:
    fresh = HelmCli(HELM_BIN, kubeconfig=kubeconfig, context=None, env={"HOME": str(tmp_path)}, timeout=30)
    with pytest.raises(HelmError) as info:
        fresh.install("r", "default", "zilliztech/milvus", {}, "4.2.40")
    assert "Error: INSTALLATION FAILED: repo zilliztech not found" in info.value.stderr


def test_repo_files_and_show_chart(cli: HelmCli, with_repo: None, home: Path, env: dict[str, str]) -> None:
    repo_file = yaml.safe_load((home / ".config/helm/repositories.yaml").read_text())
    assert [(r["name"], r["url"]) for r in repo_file["repositories"]] == [("zilliztech", REPO)]
    index = yaml.safe_load((home / ".cache/helm/repository/zilliztech-index.yaml").read_text())
    assert {e["version"] for e in index["entries"]["milvus"]} >= {"4.2.18", "4.2.40", "4.2.58", "5.0.4"}
    chart = cli.show_chart("zilliztech/milvus", "4.2.40")
    assert (chart["version"], chart["appVersion"], chart["apiVersion"]) == ("4.2.40", "2.5.10", "v2")
    assert [d.get("alias", d["name"]) for d in chart["dependencies"]][:4] == [
        "etcd",
        "minio",
        "pulsar",
        "pulsarv3",
    ]
    latest = cli.show_chart("milvus", None, repo_url=REPO + "/")
    assert (latest["version"], latest["appVersion"]) == ("5.0.4", "2.6.3")
    assert "pulsarv3" not in ok(env, "show", "values", "zilliztech/milvus", "--version", "4.2.18")
    out = ok(env, "repo", "update")
    assert 'Successfully got an update from the "zilliztech" chart repository' in out
    assert out.endswith("Update Complete. ⎈Happy Helming!⎈\n")


def test_unknown_repository_url_is_rejected(env: dict[str, str]) -> None:
    code, _, err = helm(env, "repo", "add", "other", "https://charts.example.com/milvus")
    assert code == 1
    assert err.startswith('Error: looks like "https://charts.example.com/milvus" is not a valid chart repository')
    code, _, err = helm(env, "install", "r", "milvus", "--repo", "https://charts.example.com/milvus")
    assert code == 1 and "INSTALLATION FAILED: looks like" in err


# --- install, read, uninstall, reinstall --------------------------------------------------------
def _decode_by_hand(secret: dict[str, Any]) -> dict[str, Any]:
    raw = base64.b64decode(base64.b64decode(secret["data"]["release"]))
    assert raw[:3] == b"\x1f\x8b\x08"
    release: dict[str, Any] = json.loads(gzip.decompress(raw))
    return release


def test_install_read_uninstall_reinstall(
    cli: HelmCli, with_repo: None, api: httpx.Client, env: dict[str, str], server: KubeApiServer
) -> None:
    ns, rel = "milvus", "my-release"
    server.store.ensure_namespace(ns)
    out = cli.install(rel, ns, "zilliztech/milvus", PULSAR_V2_VALUES, "4.2.40")
    assert "STATUS: deployed" in out and "REVISION: 1" in out

    secrets = items(api, f"/api/v1/namespaces/{ns}/secrets", f"owner=helm,name={rel}")
    assert [s["metadata"]["name"] for s in secrets] == ["sh.helm.release.v1.my-release.v1"]
    assert secrets[0]["type"] == "helm.sh/release.v1"
    labels = secrets[0]["metadata"]["labels"]
    assert {k: labels[k] for k in ("name", "owner", "status", "version")} == {
        "name": rel,
        "owner": "helm",
        "status": "deployed",
        "version": "1",
    }
    by_hand = _decode_by_hand(secrets[0])
    assert by_hand["chart"]["metadata"]["version"] == "4.2.40" and by_hand["config"] == PULSAR_V2_VALUES
    found = find_release(secrets, rel)
    assert found is not None
    assert (found.chart_version, found.app_version, found.status, found.revision) == (
        "4.2.40",
        "2.5.10",
        "deployed",
        1,
    )
    assert found.config == PULSAR_V2_VALUES and "# Source: milvus/charts/pulsar/templates/" in found.manifest

    pulsar = items(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets", f"app=pulsar,release={rel}")
    assert names(pulsar) == [f"{rel}-pulsar-{c}" for c in ("bookie", "broker", "proxy", "zookeeper")]
    bookie = next(s for s in pulsar if s["metadata"]["name"].endswith("bookie"))
    assert [t["metadata"]["name"] for t in bookie["spec"]["volumeClaimTemplates"]] == [
        f"{rel}-pulsar-bookie-journal",
        f"{rel}-pulsar-bookie-ledgers",
    ]
    assert bookie["spec"]["template"]["metadata"]["labels"]["component"] == "bookie"
    assert bookie["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm"
    assert bookie["metadata"]["annotations"]["meta.helm.sh/release-name"] == rel
    etcd = items(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets", f"app.kubernetes.io/instance={rel}")
    assert names(etcd) == [f"{rel}-etcd"] and etcd[0]["spec"]["replicas"] == 1
    deployments = items(api, f"/apis/apps/v1/namespaces/{ns}/deployments")
    milvus = [d for d in deployments if d["metadata"]["labels"].get("app.kubernetes.io/name") == "milvus"]
    assert names(milvus) == [f"{rel}-milvus-{c}" for c in ("datanode", "indexnode", "mixcoord", "proxy", "querynode")]
    querynode = next(d for d in milvus if d["metadata"]["name"].endswith("querynode"))
    assert querynode["spec"]["replicas"] == 2
    assert querynode["spec"]["template"]["spec"]["containers"][0]["image"] == "milvusdb/milvus:v2.5.10"
    pvcs = items(api, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")
    assert names(pvcs) == [f"{rel}-minio"]

    with pytest.raises(HelmError) as info:
        cli.install(rel, ns, "zilliztech/milvus", PULSAR_V2_VALUES, "4.2.40")
    assert "Error: INSTALLATION FAILED: cannot re-use a name that is still in use" in info.value.stderr
    assert cli.get_values(rel, ns) == PULSAR_V2_VALUES
    assert ok(env, "get", "values", rel, "-n", ns).startswith("USER-SUPPLIED VALUES:\netcd:\n  replicaCount: 1\n")
    listed = json.loads(ok(env, "list", "-n", ns, "-o", "json"))
    assert [(r["name"], r["revision"], r["status"], r["chart"]) for r in listed] == [
        (rel, "1", "deployed", "milvus-4.2.40")
    ]

    out = cli.uninstall(rel, ns)
    assert out.endswith(f'release "{rel}" uninstalled\n')
    assert f"These resources were kept due to the resource policy:\n[PersistentVolumeClaim] {rel}-minio\n" in out
    assert items(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets") == []
    assert items(api, f"/apis/apps/v1/namespaces/{ns}/deployments") == []
    assert items(api, f"/api/v1/namespaces/{ns}/services") == []
    assert items(api, f"/api/v1/namespaces/{ns}/secrets", "owner=helm") == []
    assert names(items(api, f"/api/v1/namespaces/{ns}/persistentvolumeclaims")) == [f"{rel}-minio"]
    assert helm(env, "status", rel, "-n", ns)[2] == "Error: release: not found\n"
    assert helm(env, "uninstall", rel, "-n", ns)[2] == (
        f"Error: uninstall: Release not loaded: {rel}: release: not found\n"
    )

    # Reinstall with Pulsar V3 values: the adopted keep-PVC carries this release's ownership.
    ok(
        env,
        "install",
        rel,
        "zilliztech/milvus",
        "--version",
        "4.2.40",
        "-n",
        ns,
        "-f",
        _values_file(env, PULSAR_V3_VALUES),
    )
    v3 = items(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets", f"app=pulsarv3,release={rel}")
    assert names(v3) == [f"{rel}-pulsarv3-{c}" for c in ("bookie", "broker", "proxy", "zookeeper")]
    assert items(api, f"/apis/apps/v1/namespaces/{ns}/statefulsets", "app=pulsar") == []
    assert v3[0]["spec"]["template"]["spec"]["containers"][0]["image"] == "apachepulsar/pulsar:3.0.7"
    assert cli.get_values(rel, ns) == PULSAR_V3_VALUES


def _values_file(env: dict[str, str], values: dict[str, Any]) -> str:
    path = Path(env["HOME"]) / "values-v3.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_upgrade_install_reset_values_and_upgrade(with_repo: None, env: dict[str, str], api: httpx.Client) -> None:
    ns, rel = "upg", "up-release"
    code, _, err = helm(env, "upgrade", rel, "zilliztech/milvus", "-n", ns)
    assert (code, err) == (1, f'Error: UPGRADE FAILED: "{rel}" has no deployed releases\n')
    out = ok(
        env,
        "upgrade",
        "--install",
        "--create-namespace",
        "--reset-values",
        rel,
        "zilliztech/milvus",
        "--version",
        "4.2.58",
        "-n",
        ns,
        "--set",
        "cluster.enabled=false,etcd.replicaCount=1",
    )
    assert out.startswith(f'Release "{rel}" does not exist. Installing it now.\nNAME: {rel}\n')
    assert names(items(api, f"/apis/apps/v1/namespaces/{ns}/deployments")) == [f"{rel}-milvus-standalone"]
    out = ok(env, "upgrade", "-i", rel, "zilliztech/milvus", "--version", "4.2.58", "-n", ns, "--reset-values")
    assert out.startswith(f'Release "{rel}" has been upgraded. Happy Helming!\n') and "REVISION: 2" in out
    history = json.loads(ok(env, "history", rel, "-n", ns, "-o", "json"))
    assert [(h["revision"], h["status"], h["description"]) for h in history] == [
        (1, "superseded", "Install complete"),
        (2, "deployed", "Upgrade complete"),
    ]
    assert json.loads(ok(env, "get", "values", rel, "-n", ns, "-o", "json")) is None  # reset: no user values
    deployments = names(items(api, f"/apis/apps/v1/namespaces/{ns}/deployments"))
    assert f"{rel}-milvus-proxy" in deployments and f"{rel}-milvus-standalone" not in deployments
    assert len(items(api, f"/api/v1/namespaces/{ns}/secrets", f"owner=helm,name={rel}")) == 2


# --- failures worded like helm ------------------------------------------------------------------
def test_both_pulsar_charts_enabled_fail_to_render(with_repo: None, env: dict[str, str]) -> None:
    code, _, err = helm(env, "install", "both", "zilliztech/milvus", "--set", "pulsar.enabled=true")
    assert code == 1
    assert err == (
        "Error: INSTALLATION FAILED: execution error at (milvus/templates/config.tpl:3:4): "
        "only one of pulsar and pulsarv3 can be enabled\n"
    )
    # 4.2.18 has no pulsarv3 subchart: its values are ignored.
    ok(
        env,
        "install",
        "old",
        "zilliztech/milvus",
        "--version",
        "4.2.18",
        "--set",
        "pulsarv3.enabled=true",
        "--dry-run",
    )


def test_existing_object_not_owned_blocks_install(with_repo: None, env: dict[str, str], api: httpx.Client) -> None:
    ns = "conflict"
    api.post("/api/v1/namespaces", json={"metadata": {"name": ns}}).raise_for_status()
    svc = {"metadata": {"name": "taken-milvus"}, "spec": {"ports": [{"port": 19530}]}}
    api.post(f"/api/v1/namespaces/{ns}/services", json=svc).raise_for_status()
    code, _, err = helm(env, "install", "taken", "zilliztech/milvus", "-n", ns)
    assert code == 1
    assert err == (
        "Error: INSTALLATION FAILED: Unable to continue with install: "
        'Service "taken-milvus" in namespace "conflict" exists and cannot be imported into the current '
        "release: invalid ownership metadata; "
        'label validation error: missing key "app.kubernetes.io/managed-by": must be set to "Helm"; '
        'annotation validation error: missing key "meta.helm.sh/release-name": must be set to "taken"; '
        'annotation validation error: missing key "meta.helm.sh/release-namespace": '
        'must be set to "conflict"\n'
    )
    assert items(api, f"/api/v1/namespaces/{ns}/secrets", "owner=helm") == []


def test_wait_times_out_and_records_failure(with_repo: None, env: dict[str, str]) -> None:
    fast = {**env, "SANDBOX_HELM_POLL_INTERVAL": "0.05"}
    code, _, err = helm(
        fast,
        "install",
        "slow",
        "zilliztech/milvus",
        "-n",
        "waits",
        "--create-namespace",
        "--wait",
        "--timeout",
        "300ms",
    )
    assert (code, err) == (1, "Error: INSTALLATION FAILED: context deadline exceeded\n")
    status = json.loads(ok(env, "status", "slow", "-n", "waits", "-o", "json"))
    assert status["info"]["status"] == "failed"
    assert status["info"]["description"] == 'Release "slow" failed: context deadline exceeded'


def test_bad_token_means_cluster_unreachable(server: KubeApiServer, home: Path, env: dict[str, str]) -> None:
    config = yaml.safe_load(Path(env["KUBECONFIG"]).read_text())
    config["users"][0]["user"]["token"] = "wrong"
    bad = home / "bad-kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    bad.chmod(0o600)
    code, _, err = helm({**env, "KUBECONFIG": str(bad)}, "list")
    assert code == 1
    assert err in (  # the reachability probe (GET /version) may be public on the API server
        "Error: Kubernetes cluster unreachable: the server has asked for the client to provide credentials\n",
        "Error: list: failed to list: Unauthorized\n",
    )
    code, _, err = helm({**env, "KUBECONFIG": str(bad)}, "get", "values", "x")
    assert (code, err) == (1, "Error: query: failed to query with labels: Unauthorized\n")
