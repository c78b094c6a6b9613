"""The cluster adapters under faults and mixed hosts (no bot process: bot.cluster against the sandbox).

- Credentials go only to their host: the Kubernetes token goes to the API server only (and any
  other Authorization is replaced there), MILVUS_TOKEN reaches both Milvus ports when Milvus is
  reached directly; a 9091 that requires auth refuses a client without it with a clear error.
- Every Kubernetes call has a timeout: a hung list/get/delete raises a KubeTemporary
  saying the API server did not answer, in bounded time.
- A 429 is resent after its Retry-After a few times; then it is temporary and carries the
  server's Retry-After, which the engine's automatic retry waits for at least (bounded).
- A watch whose connection is cut resumes from the last resourceVersion (no event lost or
  repeated).
- A PVC delete carries its uid as a precondition: a same-named re-created PVC is refused (409)
  and left alone.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiohttp import web
from kubernetes import client

from bot.cluster.kube import AccessCheck, Kube, KubeConflict, KubeTemporary, rules_allow
from bot.cluster.milvus import MilvusAuthError, MilvusClient, service_proxy_url
from bot.cluster.throttle import THROTTLED_TRIES
from bot.procedure.classify import MAX_RETRY_AFTER, classify, retry_delay
from bot.procedure.outcome import Temporary
from sandbox._http import ThreadedServer
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import Store
from sandbox.milvus import MilvusSim

K8S_TOKEN = "k8s-secret-token"
MILVUS_TOKEN = "root:Milvus"


# ---------------------------------------------------------------- helpers


class Recorder:
    """An HTTP server that answers every request with Milvus-like success and records headers."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self.server = ThreadedServer(app)

    async def _answer(self, request: web.Request) -> web.Response:
        self.seen.append((request.path, request.headers.get("Authorization")))
        if request.path.endswith("/v2/vectordb/databases/list"):
            return web.json_response({"code": 0, "data": ["default"]})
        if request.path.endswith("/api/v1/health"):
            return web.json_response({"status": "ok"})
        return web.json_response({"status": {}, "collection_names": ["c"]})


@pytest.fixture
def recorders() -> Iterator[tuple[Recorder, Recorder]]:
    api, milvus = Recorder(), Recorder()
    api.server.start()
    milvus.server.start()
    yield api, milvus
    api.server.stop()
    milvus.server.stop()


def _kube_at(url: str) -> Kube:
    cfg = client.Configuration()
    cfg.host = url
    cfg.api_key = {"authorization": K8S_TOKEN}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    return Kube(client.ApiClient(cfg))


@pytest.fixture
def apiserver(tmp_path: Any) -> Iterator[tuple[KubeApiServer, Kube]]:
    store = Store()
    store.ensure_namespace("default")
    server = KubeApiServer(store).start()
    kube = Kube.connect(server.write_kubeconfig(str(tmp_path / "kubeconfig")), None)
    yield server, kube
    server.stop()


def _pvc(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": {"app": "pulsar"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _pod(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox"}]},
    }


# ---------------------------------------------------------------- A. credentials only to their host


def test_kubernetes_token_only_to_the_api_server_milvus_token_only_to_milvus(
    recorders: tuple[Recorder, Recorder],
) -> None:
    api, milvus = recorders
    kube = _kube_at(api.server.url)
    with kube.http_client(timeout=5) as http:
        direct = MilvusClient(milvus.server.url, milvus.server.url, http=http, token=MILVUS_TOKEN)
        direct.health()
        direct.list_collections("default")
        direct.list_databases()
        # Through the service proxy: the API server gets its own credentials, never the Milvus token.
        via_proxy = MilvusClient(
            service_proxy_url(kube.host, "default", "r-milvus", 9091),
            service_proxy_url(kube.host, "default", "r-milvus", 19530),
            http=http,
            token=MILVUS_TOKEN,
        )
        via_proxy.list_collections("default")
        via_proxy.list_databases()

    assert [path for path, _ in milvus.seen] == [
        "/api/v1/health",
        "/api/v1/collections",
        "/v2/vectordb/databases/list",
    ]
    assert all(auth == f"Bearer {MILVUS_TOKEN}" for _, auth in milvus.seen), milvus.seen
    assert len(api.seen) == 2
    assert all(auth == f"Bearer {K8S_TOKEN}" for _, auth in api.seen), api.seen


def test_milvus_token_reaches_both_ports_of_an_authenticating_milvus(
    apiserver: tuple[KubeApiServer, Kube],
) -> None:
    server, kube = apiserver
    with MilvusSim(token=MILVUS_TOKEN) as sim, kube.http_client(timeout=5) as http:
        sim.add_collection("default", "docs", segments=1)
        good = MilvusClient(sim.mgmt_url, sim.rest_url, http=http, token=MILVUS_TOKEN)
        assert good.list_databases() == ["default"]
        assert good.list_collections("default") == ["docs"]
        assert good.flush_all(timeout=10, interval=0.01)[0].segment_count == 1
        assert {r.server for r in sim.requests} == {"mgmt", "rest"}
        assert all(r.authorization == f"Bearer {MILVUS_TOKEN}" for r in sim.requests)
        assert not any(server.token in (r.authorization or "") for r in sim.requests)

        anonymous = MilvusClient(sim.mgmt_url, sim.rest_url, http=http)
        with pytest.raises(MilvusAuthError) as info:
            anonymous.list_collections("default")
        assert info.value.http_status == 401 and "MILVUS_TOKEN" in str(info.value)
        with pytest.raises(MilvusAuthError):
            anonymous.list_databases()
        assert anonymous.healthz() == (True, "OK")  # /healthz stays public


# ---------------------------------------------------------------- B. every call has a timeout


@pytest.mark.parametrize(
    ("method", "path", "call"),
    [
        ("GET", r"/persistentvolumeclaims$", lambda k: k.list_pvcs("default", "app=pulsar")),
        ("GET", r"/persistentvolumes$", lambda k: k.list_pvs()),
        ("DELETE", r"/persistentvolumeclaims/data-0$", lambda k: k.delete_pvc("default", "data-0")),
    ],
    ids=["list", "list-cluster", "delete"],
)
def test_a_hung_call_is_a_temporary_error_in_bounded_time(
    apiserver: tuple[KubeApiServer, Kube], method: str, path: str, call: Any
) -> None:
    server, kube = apiserver
    kube.request_timeout = 1.0
    server.inject_fault(method, path, hang_seconds=6)
    started = time.monotonic()
    with pytest.raises(KubeTemporary) as info:
        call(kube)
    elapsed = time.monotonic() - started
    assert elapsed < 3, elapsed
    assert info.value.temporary
    assert "did not answer within 1s" in str(info.value)
    assert len([r for r in server.requests if r.method == method]) == 1  # not retried inside urllib3


def test_a_throttled_call_is_resent_after_its_retry_after_then_temporary(
    apiserver: tuple[KubeApiServer, Kube],
) -> None:
    """A 429 was not executed: it is sent again after its Retry-After, as client-go does; only
    when it stays throttled (THROTTLED_TRIES answers) is it a KubeTemporary, carrying Retry-After."""
    server, kube = apiserver
    once = server.inject_fault("GET", r"/persistentvolumeclaims$", status=429, retry_after=0)
    assert kube.list_pvcs("default", "app=pulsar") == []
    assert once.hits == 1
    statuses = [r.status for r in server.requests if r.path.endswith("/persistentvolumeclaims")]
    assert statuses == [429, 200]

    server.clear_requests()
    server.inject_fault("GET", r"/persistentvolumeclaims$", status=429, retry_after=0, count=THROTTLED_TRIES)
    with pytest.raises(KubeTemporary) as info:
        kube.list_pvcs("default", "app=pulsar")
    assert info.value.status == 429
    assert info.value.retry_after == 0.0
    assert len([r for r in server.requests if r.path.endswith("/persistentvolumeclaims")]) == THROTTLED_TRIES
    assert kube.list_pvcs("default", "app=pulsar") == []


def test_an_automatic_retry_waits_at_least_the_retry_after_the_server_asked_for() -> None:
    assert retry_delay(Temporary("x"), 0) == 2.0  # no Retry-After: the backoff, 2, 4, 8 ...
    assert retry_delay(Temporary("x"), 2) == 8.0
    assert retry_delay(Temporary("x", retry_after=1.0), 0) == 2.0  # shorter than the backoff
    assert retry_delay(Temporary("x", retry_after=30.0), 0) == 30.0
    assert retry_delay(Temporary("x", retry_after=86400.0), 0) == MAX_RETRY_AFTER  # bounded
    error = classify(KubeTemporary("list pods", 429, "slow down", retry_after=12.0))
    assert isinstance(error, Temporary) and retry_delay(error, 0) == 12.0


class _Cuttable:
    """A TCP forwarder to the API server whose open connections the test can cut."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                down, _ = self.listener.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self.conns += [down, up]
                self.accepted += 1
            for a, b in ((down, up), (up, down)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        with self._lock:
            for s in self.conns:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self.conns.clear()

    def close(self) -> None:
        self.listener.close()
        self.cut()


def test_a_cut_watch_resumes_from_the_last_resource_version(
    apiserver: tuple[KubeApiServer, Kube], tmp_path: Any
) -> None:
    server, _ = apiserver
    cuttable = _Cuttable(int(server.url.rsplit(":", 1)[1]))
    try:
        path = tmp_path / "through-cuttable"
        server.write_kubeconfig(str(path))
        path.write_text(path.read_text().replace(server.url, f"https://127.0.0.1:{cuttable.port}"))
        kube = Kube.connect(str(path), None)
        _items, rv = kube.pods_resource_version("default", "")
        events = kube.watch_pods("default", "", rv, 20)
        server.store.create("pods", _pod("a"), namespace="default")
        first = next(events)
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", "a")
        cuttable.cut()
        server.store.create("pods", _pod("b"), namespace="default")
        second = next(events)  # after a reconnect from a's resourceVersion: b, not a again
        assert (second["type"], second["object"]["metadata"]["name"]) == ("ADDED", "b")
        assert cuttable.accepted >= 2
        watches = [r for r in server.requests if r.query.get("watch") in ("true", "1", "True")]
        assert watches[-1].query["resourceVersion"] == first["object"]["metadata"]["resourceVersion"]
        assert all("timeoutSeconds" in r.query for r in watches)
        events.close()  # type: ignore[attr-defined]
    finally:
        cuttable.close()


# ---------------------------------------------------------------- C. uid preconditions


def test_pvc_delete_with_a_stale_uid_is_refused_and_keeps_the_new_pvc(
    apiserver: tuple[KubeApiServer, Kube],
) -> None:
    server, kube = apiserver
    old = server.store.create("persistentvolumeclaims", _pvc("data-0"), namespace="default")
    server.store.delete("persistentvolumeclaims", "default", "data-0")
    new = server.store.create("persistentvolumeclaims", _pvc("data-0"), namespace="default")
    with pytest.raises(KubeConflict) as info:
        kube.delete_pvc("default", "data-0", uid=old["metadata"]["uid"])
    assert info.value.status == 409 and not info.value.temporary
    assert server.store.get("persistentvolumeclaims", "default", "data-0")["metadata"]["uid"] == new["metadata"]["uid"]
    assert kube.delete_pvc("default", "data-0", uid=new["metadata"]["uid"]) is True
    assert kube.delete_pvc("default", "data-0", uid=new["metadata"]["uid"]) is False  # NotFound is success


# ---------------------------------------------------------------- preflight: rules reviews


def _reviews(server: KubeApiServer) -> tuple[list[str], list[dict[str, Any]]]:
    """(namespaces of the rules reviews, attributes of the access reviews) the client sent."""
    rules = [r.body["spec"]["namespace"] for r in server.requests if r.path.endswith("/selfsubjectrulesreviews")]
    access = [
        r.body["spec"]["resourceAttributes"] for r in server.requests if r.path.endswith("/selfsubjectaccessreviews")
    ]
    return rules, access


CHECKS = [
    AccessCheck("delete", "persistentvolumeclaims", "default"),
    AccessCheck("watch", "pods", "default"),
    AccessCheck("get", "services/proxy", "default"),
    AccessCheck("create", "deployments", "default", "apps"),
    AccessCheck("list", "secrets", "staging"),
    AccessCheck("delete", "persistentvolumes", None),
]


def test_preflight_asks_one_rules_review_per_namespace_and_reviews_only_cluster_scoped_checks(
    apiserver: tuple[KubeApiServer, Kube],
) -> None:
    server, kube = apiserver
    server.clear_requests()
    assert kube.denied(CHECKS) == []
    rules, access = _reviews(server)
    assert rules == ["default", "staging"]  # one each, whatever the number of checks there
    assert access == [{"verb": "delete", "resource": "persistentvolumes", "group": ""}]


def test_what_the_rules_do_not_show_is_asked_and_refused_only_if_the_server_refuses(
    apiserver: tuple[KubeApiServer, Kube],
) -> None:
    server, kube = apiserver
    server.deny("delete", "persistentvolumeclaims", namespace="default")
    server.deny("delete", "persistentvolumes")
    server.clear_requests()
    assert kube.denied(CHECKS) == [CHECKS[0], CHECKS[5]]
    _, access = _reviews(server)
    assert [(a["verb"], a["resource"]) for a in access] == [
        ("delete", "persistentvolumeclaims"),
        ("delete", "persistentvolumes"),
    ]


def test_preflight_under_real_rbac_refuses_exactly_what_the_role_lacks(
    apiserver: tuple[KubeApiServer, Kube], tmp_path: Any
) -> None:
    server, _ = apiserver
    store = server.store
    store.ensure_namespace("staging")
    rules = [
        {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "list", "delete"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["*"]},
        {"apiGroups": [""], "resources": ["services/proxy"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["create"], "resourceNames": ["only-this"]},
    ]
    store.create("roles.rbac.authorization.k8s.io", {"metadata": {"name": "bot"}, "rules": rules}, "default")
    binding = {
        "metadata": {"name": "bot"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "bot"},
        "subjects": [{"kind": "User", "name": "the-bot"}],
    }
    store.create("rolebindings.rbac.authorization.k8s.io", binding, "default")
    server.add_token("bot-token", "the-bot")
    kube = Kube.connect(server.write_kubeconfig(str(tmp_path / "bot-kubeconfig"), token="bot-token"), None)
    server.enforce_rbac()
    # a create limited to one name does not allow creating; nothing is granted in staging or cluster-wide
    assert kube.denied(CHECKS) == [CHECKS[3], CHECKS[4], CHECKS[5]]


def test_without_rules_reviews_every_check_gets_its_access_review(apiserver: tuple[KubeApiServer, Kube]) -> None:
    server, kube = apiserver
    server.inject_fault("POST", r"/selfsubjectrulesreviews$", status=404, count=2)
    server.deny("watch", "pods", namespace="default")
    server.clear_requests()
    assert kube.denied(CHECKS) == [CHECKS[1]]
    _, access = _reviews(server)
    assert len(access) == len(CHECKS)


@pytest.mark.parametrize(
    ("rule", "check", "allowed"),
    [
        ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, AccessCheck("get", "services/proxy", "ns"), True),
        (
            {"apiGroups": [""], "resources": ["*/proxy"], "verbs": ["get"]},
            AccessCheck("get", "services/proxy", "ns"),
            True,
        ),
        (
            {"apiGroups": [""], "resources": ["services"], "verbs": ["get"]},
            AccessCheck("get", "services/proxy", "ns"),
            False,
        ),
        (
            {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["list"]},
            AccessCheck("list", "deployments", "ns"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"], "resourceNames": ["p"]},
            AccessCheck("list", "pods", "ns"),
            False,
        ),
        (
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
            AccessCheck("watch", "pods", "ns"),
            True,
        ),
    ],
    ids=["all", "star-subresource", "not-the-subresource", "other-group", "resource-names", "listed"],
)
def test_rules_are_matched_as_rbac_does(rule: dict[str, Any], check: AccessCheck, allowed: bool) -> None:
    assert rules_allow([rule], check) is allowed
