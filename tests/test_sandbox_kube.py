"""The simulated Kubernetes API server, driven by the official ``kubernetes`` client over HTTP.

Behaviours covered:
- list: every label-selector operator (=, ==, !=, in, notin, exists, !key), a malformed
  selector (400 with the real message), field selectors, limit/continue over a consistent
  snapshot, items without kind/apiVersion for built-in kinds;
- create of an existing name: 409 AlreadyExists Status; invalid name: 422 Invalid;
- replace with a stale resourceVersion: 409 Conflict with the real message;
- strategic/merge patch and JSON patch of a ConfigMap; a failed JSON-patch ``test``: 422;
- delete of an object with a finalizer: it stays with deletionTimestamp; removing the
  finalizer by patch makes it disappear (404);
- watch: ADDED/MODIFIED/DELETED live and in order, resume from a resourceVersion, objects
  leaving a label selection arrive as DELETED, timeoutSeconds ends the stream, a too-old
  resourceVersion gives 410;
- fault injection: a 500 then success; a hang answered with 504;
- deny list: SelfSubjectAccessReview allowed=false and 403 Forbidden on the real call;
- service proxy: forwards method, path, query, body and content type to a backend and relays
  the answer; 404 for a missing Service, 503 without a backend or when it refuses;
- authentication: no or wrong token is 401; /healthz needs none;
- CustomObjectsApi on milvuses.milvus.io: create/get/patch/list, status only via /status,
  strategic merge patch refused (415) as for real custom resources;
- DynamicClient discovery resolves Pod and Milvus;
- the store directly: status subresource rules, subscribers in commit order, namespace
  deletion, history window (410).
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from kubernetes import client, config, dynamic, watch

from sandbox._http import ThreadedServer
from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import ApiError, Store

_CLIENTS: weakref.WeakKeyDictionary[KubeApiServer, httpx.Client] = weakref.WeakKeyDictionary()


def _https(kube: KubeApiServer) -> httpx.Client:
    """An httpx client that verifies the server's certificate against its own CA (never verify=False)."""
    if kube not in _CLIENTS:
        _CLIENTS[kube] = httpx.Client(verify=kube.ssl_context())
    return _CLIENTS[kube]


@pytest.fixture
def api(server: KubeApiServer, tmp_path: Path) -> Any:
    kubeconfig = server.write_kubeconfig(str(tmp_path / "kubeconfig"))
    return config.new_client_from_config(config_file=kubeconfig)


@pytest.fixture
def core(api: Any) -> Any:
    return client.CoreV1Api(api)


def _status(exc: client.ApiException) -> dict[str, Any]:
    body = json.loads(exc.body or "")
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["code"] == exc.status
    return body


def _cm(name: str, labels: dict[str, str] | None = None, **data: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "data": data}


def _names(items: list[Any]) -> list[str]:
    return [i.metadata.name for i in items]


# ---- list ----


def test_list_with_each_label_selector_operator(core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("a", {"app": "milvus", "tier": "db"}))
    core.create_namespaced_config_map("default", _cm("b", {"app": "pulsar"}))
    core.create_namespaced_config_map("default", _cm("c", {}))
    cases = {
        "app=milvus": ["a"],
        "app==pulsar": ["b"],
        "app!=milvus": ["b", "c"],
        "app in (milvus,pulsar)": ["a", "b"],
        "app notin (milvus)": ["b", "c"],
        "tier": ["a"],
        "!tier": ["b", "c"],
        "app,!tier": ["b"],
    }
    for selector, expected in cases.items():
        got = _names(core.list_namespaced_config_map("default", label_selector=selector).items)
        assert got == expected, selector
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map("default", label_selector="app milvus")
    body = _status(err.value)
    assert err.value.status == 400 and body["reason"] == "BadRequest"
    assert body["message"] == "unable to parse requirement: found 'milvus', expected: in, notin, =, ==, !=, gt, lt"


def test_list_field_selector_limit_continue_and_wire_shape(server: KubeApiServer, core: Any) -> None:
    for name in ("a", "b", "c", "d", "e"):
        core.create_namespaced_config_map("default", _cm(name))
    assert _names(core.list_namespaced_config_map("default", field_selector="metadata.name!=c").items) == [
        "a",
        "b",
        "d",
        "e",
    ]
    first = core.list_namespaced_config_map("default", limit=2)
    assert _names(first.items) == ["a", "b"] and first.metadata.remaining_item_count == 3
    core.create_namespaced_config_map("default", _cm("bb"))  # not in the snapshot being paged
    second = core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    third = core.list_namespaced_config_map("default", limit=2, _continue=second.metadata._continue)
    assert _names(second.items) + _names(third.items) == ["c", "d", "e"]
    assert third.metadata._continue is None
    assert first.metadata.resource_version == second.metadata.resource_version == third.metadata.resource_version
    raw = (
        _https(server)
        .get(
            f"{server.url}/api/v1/pods",
            headers={"Authorization": f"Bearer {server.token}"},
            params={"limit": "1"},
        )
        .json()
    )
    assert raw["kind"] == "PodList" and raw["apiVersion"] == "v1" and raw["items"] == []
    listed = (
        _https(server)
        .get(
            f"{server.url}/api/v1/namespaces/default/configmaps",
            headers={"Authorization": f"Bearer {server.token}"},
        )
        .json()
    )
    assert "kind" not in listed["items"][0] and listed["items"][0]["metadata"]["uid"]
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map("default", field_selector="data.k=v")
    assert err.value.status == 400 and _status(err.value)["message"] == "field label not supported: data.k"


# ---- create / replace / patch / delete ----


def test_create_existing_name_is_409_already_exists(core: Any) -> None:
    created = core.create_namespaced_config_map("default", _cm("dup", k="v"))
    assert created.metadata.uid and created.metadata.creation_timestamp is not None
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map("default", _cm("dup"))
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (409, "AlreadyExists")
    assert body["message"] == 'configmaps "dup" already exists'
    assert body["details"] == {"name": "dup", "kind": "configmaps"}
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map("default", _cm("Bad_Name"))
    assert err.value.status == 422 and _status(err.value)["reason"] == "Invalid"
    with pytest.raises(client.ApiException) as err:
        core.create_namespaced_config_map("nowhere", _cm("x"))
    assert err.value.status == 404 and _status(err.value)["message"] == 'namespaces "nowhere" not found'


def test_malformed_requests_are_400(server: KubeApiServer, core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("x"))
    auth = {"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"}
    base = f"{server.url}/api/v1/namespaces/default/configmaps"
    cases = [
        _https(server).post(base, content=b"{not json", headers=auth),
        _https(server).put(f"{base}/x", json={"metadata": {"name": "y"}}, headers=auth),
        _https(server).post(base, json={"metadata": {"name": "z", "namespace": "other"}}, headers=auth),
        _https(server).post(base, json={"metadata": {"name": "z", "labels": {"n": 1}}}, headers=auth),
    ]
    assert [(r.status_code, r.json()["reason"]) for r in cases] == [(400, "BadRequest")] * 4
    assert cases[1].json()["message"] == "the name of the object (y) does not match the name on the URL (x)"


def test_replace_with_stale_resource_version_is_409_conflict(core: Any) -> None:
    stale = core.create_namespaced_config_map("default", _cm("cfg", k="1"))
    fresh = core.read_namespaced_config_map("cfg", "default")
    fresh.data = {"k": "2"}
    updated = core.replace_namespaced_config_map("cfg", "default", fresh)
    assert int(updated.metadata.resource_version) > int(stale.metadata.resource_version)
    stale.data = {"k": "3"}
    with pytest.raises(client.ApiException) as err:
        core.replace_namespaced_config_map("cfg", "default", stale)
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (409, "Conflict")
    assert body["message"] == (
        'Operation cannot be fulfilled on configmaps "cfg": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )
    assert core.read_namespaced_config_map("cfg", "default").data == {"k": "2"}


def test_merge_patch_and_json_patch_of_a_configmap(server: KubeApiServer, core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("p", a="1", b="2"))
    merged = core.patch_namespaced_config_map("p", "default", {"data": {"a": "10", "b": None, "c": "3"}})
    assert merged.data == {"a": "10", "c": "3"}
    assert server.requests[-1].content_type == "application/strategic-merge-patch+json"
    ops = [
        {"op": "test", "path": "/data/a", "value": "10"},
        {"op": "replace", "path": "/data/a", "value": "11"},
        {"op": "remove", "path": "/data/c"},
        {"op": "add", "path": "/metadata/labels", "value": {"x": "y"}},
    ]
    patched = core.patch_namespaced_config_map("p", "default", ops)
    assert patched.data == {"a": "11"} and patched.metadata.labels == {"x": "y"}
    assert server.requests[-1].content_type == "application/json-patch+json"
    with pytest.raises(client.ApiException) as err:
        core.patch_namespaced_config_map("p", "default", [{"op": "test", "path": "/data/a", "value": "nope"}])
    assert err.value.status == 422 and _status(err.value)["reason"] == "Invalid"
    assert core.read_namespaced_config_map("p", "default").data == {"a": "11"}
    resp = _https(server).patch(
        f"{server.url}/api/v1/namespaces/default/configmaps/p",
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "text/plain"},
        content=b"{}",
    )
    assert resp.status_code == 415 and resp.json()["reason"] == "UnsupportedMediaType"


def test_delete_with_finalizer_marks_then_patch_removes(core: Any) -> None:
    body = _cm("held")
    body["metadata"]["finalizers"] = ["example.com/hold"]
    core.create_namespaced_config_map("default", body)
    core.delete_namespaced_config_map("held", "default")
    marked = core.read_namespaced_config_map("held", "default")
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.finalizers == ["example.com/hold"]
    core.patch_namespaced_config_map("held", "default", {"metadata": {"finalizers": None}})
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("held", "default")
    assert err.value.status == 404 and _status(err.value)["message"] == 'configmaps "held" not found'


# ---- watch ----


def _wait_for_watch(server: KubeApiServer, deadline: float = 3.0) -> None:
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if any(r.query.get("watch") == "true" and r.status == 200 for r in server.requests):
            return
        time.sleep(0.01)
    raise AssertionError("watch never started")


def test_watch_sees_events_in_order_and_resumes(server: KubeApiServer, core: Any) -> None:
    start_rv = core.list_namespaced_config_map("default").metadata.resource_version
    seen: list[tuple[str, str, str]] = []
    w = watch.Watch()

    def consume() -> None:
        for ev in w.stream(core.list_namespaced_config_map, "default", timeout_seconds=5, resource_version=start_rv):
            seen.append(
                (
                    ev["type"],
                    ev["object"].metadata.name,
                    ev["object"].data.get("k") if ev["object"].data else "",
                )
            )
            if ev["type"] == "DELETED":
                w.stop()

    thread = threading.Thread(target=consume)
    thread.start()
    _wait_for_watch(server)
    core.create_namespaced_config_map("default", _cm("w", k="1"))
    core.patch_namespaced_config_map("w", "default", {"data": {"k": "2"}})
    core.delete_namespaced_config_map("w", "default")
    thread.join(5)
    assert seen == [("ADDED", "w", "1"), ("MODIFIED", "w", "2"), ("DELETED", "w", "2")]
    # resume from the resourceVersion of the ADDED event: the rest is replayed from history
    history = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            resource_version=str(int(start_rv) + 1),
            timeout_seconds=1,
        )
    ]
    assert history == [("MODIFIED", "w"), ("DELETED", "w")]


def test_watch_selection_timeout_and_too_old(server: KubeApiServer, core: Any) -> None:
    core.create_namespaced_config_map("default", _cm("sel", {"app": "x"}))
    rv = core.list_namespaced_config_map("default").metadata.resource_version
    core.patch_namespaced_config_map("sel", "default", {"metadata": {"labels": {"app": "y"}}})
    started = time.monotonic()
    events = [
        (e["type"], e["object"].metadata.name)
        for e in watch.Watch().stream(
            core.list_namespaced_config_map,
            "default",
            label_selector="app=x",
            resource_version=rv,
            timeout_seconds=1,
        )
    ]
    elapsed = time.monotonic() - started
    assert events == [("DELETED", "sel")]  # left the selection
    assert 0.9 <= elapsed < 3.0
    initial = [e["type"] for e in watch.Watch().stream(core.list_namespaced_config_map, "default", timeout_seconds=1)]
    assert initial == ["ADDED"]  # no resourceVersion: synthetic ADDED for what exists
    small = KubeApiServer(Store(history_limit=3)).start()
    try:
        for i in range(6):
            small.store.create("configmaps", _cm(f"c{i}"), namespace="default")
        raw = _https(small).get(
            f"{small.url}/api/v1/namespaces/default/configmaps",
            params={"watch": "true", "resourceVersion": "1", "timeoutSeconds": "1"},
            headers={"Authorization": f"Bearer {small.token}"},
        )
        event = json.loads(raw.text.splitlines()[0])
        assert event["type"] == "ERROR" and event["object"]["code"] == 410
        assert event["object"]["reason"] == "Expired"
    finally:
        small.stop()


# ---- faults, authorization, authentication ----


def test_fault_injection_500_then_success_and_hang(server: KubeApiServer, core: Any) -> None:
    server.inject_fault("GET", r"/configmaps$", status=500, count=1)
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_config_map("default")
    assert err.value.status == 500 and _status(err.value)["reason"] == "InternalError"
    assert core.list_namespaced_config_map("default").items == []
    assert [r.status for r in server.requests if r.path.endswith("/configmaps")] == [500, 200]
    server.inject_fault("*", r"/configmaps/slow", hang_seconds=0.2)
    started = time.monotonic()
    with pytest.raises(client.ApiException) as err:
        core.read_namespaced_config_map("slow", "default")
    assert err.value.status == 504 and time.monotonic() - started >= 0.2


def test_fault_skip_serves_that_many_requests_first(server: KubeApiServer, core: Any) -> None:
    server.clear_requests()
    server.inject_fault("GET", r"/secrets$", status=503, count=1, skip=2)
    core.list_namespaced_secret("default")
    core.list_namespaced_secret("default")
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_secret("default")
    assert err.value.status == 503
    core.list_namespaced_secret("default")
    assert [r.status for r in server.requests if r.path.endswith("/secrets")] == [200, 200, 503, 200]


def test_deny_list_answers_access_reviews_and_enforces(server: KubeApiServer, api: Any) -> None:
    server.deny("list", "pods", namespace="default")
    authz: Any = client.AuthorizationV1Api(api)

    def allowed(verb: str, resource: str, namespace: str) -> bool:
        review = authz.create_self_subject_access_review(
            {"spec": {"resourceAttributes": {"verb": verb, "resource": resource, "namespace": namespace}}}
        )
        return bool(review.status.allowed)

    assert not allowed("list", "pods", "default")
    assert allowed("get", "pods", "default") and allowed("list", "pods", "other")
    core: Any = client.CoreV1Api(api)
    with pytest.raises(client.ApiException) as err:
        core.list_namespaced_pod("default")
    body = _status(err.value)
    assert (err.value.status, body["reason"]) == (403, "Forbidden")
    assert body["message"] == (
        'pods is forbidden: User "sandbox" cannot list resource "pods" in API group "" in the namespace "default"'
    )
    assert core.list_namespaced_config_map("default").items == []


def test_missing_or_wrong_token_is_401(server: KubeApiServer) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        resp = _https(server).get(f"{server.url}/api/v1/namespaces/default/pods", headers=headers)
        assert resp.status_code == 401
        assert resp.json() == {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": "Unauthorized",
            "reason": "Unauthorized",
            "code": 401,
        }
    assert _https(server).get(f"{server.url}/healthz").text == "ok"


# ---- service proxy ----


def _echo_backend() -> ThreadedServer:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        payload = {
            "method": request.method,
            "path": request.path,
            "query": dict(request.query),
            "body": body.decode(),
            "content_type": request.headers.get("Content-Type", ""),
        }
        return web.json_response(payload, status=202 if request.method == "POST" else 200)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return ThreadedServer(app).start()


def test_service_proxy_forwards_and_reports_missing(server: KubeApiServer, core: Any) -> None:
    svc = {"metadata": {"name": "my-milvus"}, "spec": {"ports": [{"name": "metrics", "port": 9091}]}}
    core.create_namespaced_service("default", svc)
    auth = {"Authorization": f"Bearer {server.token}"}
    base = f"{server.url}/api/v1/namespaces/default/services"
    resp = _https(server).get(f"{base}/my-milvus:9091/proxy/api/v1/health", headers=auth)
    assert resp.status_code == 503
    assert resp.json()["message"] == 'no endpoints available for service "my-milvus"'
    backend = _echo_backend()
    try:
        server.register_service_backend("default", "my-milvus", 9091, backend.url)
        got = core.connect_get_namespaced_service_proxy_with_path(
            "my-milvus:9091", "default", "api/v1/health", _preload_content=False
        )
        assert json.loads(got.data)["path"] == "/api/v1/health"
        posted = _https(server).post(
            f"{base}/http:my-milvus:metrics/proxy/api/v1/persist",
            params={"x": "1"},
            content=b'{"db_name": "default"}',
            headers={**auth, "Content-Type": "application/json"},
        )
        assert posted.status_code == 202
        assert posted.json() == {
            "method": "POST",
            "path": "/api/v1/persist",
            "query": {"x": "1"},
            "body": '{"db_name": "default"}',
            "content_type": "application/json",
        }
    finally:
        backend.stop()
    refused = _https(server).get(f"{base}/my-milvus:9091/proxy/api/v1/health", headers=auth)
    assert refused.status_code == 503 and refused.json()["reason"] == "ServiceUnavailable"
    missing = _https(server).get(f"{base}/nope:9091/proxy/", headers=auth)
    assert missing.status_code == 404 and missing.json()["message"] == 'services "nope" not found'


# ---- custom resources and discovery ----


def test_custom_objects_api_on_milvuses(server: KubeApiServer, api: Any) -> None:
    co: Any = client.CustomObjectsApi(api)
    args = ("milvus.io", "v1beta1", "default", "milvuses")
    body = {
        "apiVersion": "milvus.io/v1beta1",
        "kind": "Milvus",
        "metadata": {"name": "my-release", "labels": {"milvus.io/operator-version": "v1.1.2"}},
        "spec": {"dependencies": {"pulsar": {"inCluster": {"deletionPolicy": "Retain"}}}},
        "status": {"status": "Healthy"},
    }
    created = co.create_namespaced_custom_object(*args, body)
    assert created["metadata"]["generation"] == 1 and "status" not in created  # status ignored on create
    patch = {"spec": {"dependencies": {"pulsar": {"inCluster": {"deletionPolicy": "Delete", "pvcDeletion": True}}}}}
    patched = co.patch_namespaced_custom_object(*args, "my-release", patch)
    assert patched["spec"]["dependencies"]["pulsar"]["inCluster"] == {
        "deletionPolicy": "Delete",
        "pvcDeletion": True,
    }
    assert patched["metadata"]["generation"] == 2
    status = co.patch_namespaced_custom_object_status(*args, "my-release", {"status": {"status": "Healthy"}})
    assert status["status"] == {"status": "Healthy"} and status["metadata"]["generation"] == 2
    assert co.get_namespaced_custom_object(*args, "my-release")["status"]["status"] == "Healthy"
    listed = co.list_namespaced_custom_object(*args, label_selector="milvus.io/operator-version=v1.1.2")
    assert [i["metadata"]["name"] for i in listed["items"]] == ["my-release"]
    assert listed["items"][0]["kind"] == "Milvus" and listed["kind"] == "MilvusList"
    resp = _https(server).patch(
        f"{server.url}/apis/milvus.io/v1beta1/namespaces/default/milvuses/my-release",
        headers={
            "Authorization": f"Bearer {server.token}",
            "Content-Type": "application/strategic-merge-patch+json",
        },
        content=b'{"spec": {}}',
    )
    assert resp.status_code == 415
    stale = dict(created, spec={})
    with pytest.raises(client.ApiException) as err:
        co.replace_namespaced_custom_object(*args, "my-release", stale)
    assert err.value.status == 409


def test_dynamic_client_discovery_resolves_pod_and_milvus(api: Any, tmp_path: Path) -> None:
    dyn = dynamic.DynamicClient(api, cache_file=str(tmp_path / "discovery.json"))
    pods = dyn.resources.get(api_version="v1", kind="Pod")
    milvus = dyn.resources.get(api_version="milvus.io/v1beta1", kind="Milvus")
    assert (pods.name, pods.namespaced) == ("pods", True)
    assert (milvus.name, milvus.group, milvus.short_names) == ("milvuses", "milvus.io", ["mi"])
    assert pods.subresources["status"] is not None
    pod = {
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "milvusdb/milvus:v2.5.16"}]},
    }
    pods.create(body=pod, namespace="default")
    assert pods.get(name="p", namespace="default").status.phase == "Pending"
    assert [i.metadata.name for i in milvus.get(namespace="default").items] == []


# ---- the store directly ----


def test_store_status_subresource_subscribers_and_namespace_deletion() -> None:
    store = Store()
    events: list[tuple[str, str, str]] = []
    unsubscribe = store.subscribe(lambda kind, key, obj: events.append((kind, key, obj["metadata"]["name"])))
    store.create("namespaces", {"metadata": {"name": "ns1"}})
    sts = {
        "metadata": {"name": "s"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}}},
        "status": {"readyReplicas": 3},
    }
    created = store.create("statefulsets.apps", sts, namespace="ns1")
    assert created["status"] == {"replicas": 0, "availableReplicas": 0}
    created["status"] = {"readyReplicas": 1}
    created["spec"]["replicas"] = 2
    replaced = store.replace("statefulsets.apps", created)
    assert replaced["status"] == {"replicas": 0, "availableReplicas": 0} and replaced["metadata"]["generation"] == 2
    status_only = store.patch(
        "statefulsets.apps", "ns1", "s", {"spec": {"replicas": 9}, "status": {"readyReplicas": 2}}, "merge",
        subresource="status",
    )  # fmt: skip
    assert status_only["status"]["readyReplicas"] == 2 and status_only["spec"]["replicas"] == 2
    store.delete("namespaces", None, "ns1")
    assert store.try_get("namespaces", None, "ns1") is None
    assert events[-3:] == [("MODIFIED", "namespaces", "ns1"), ("DELETED", "statefulsets.apps", "s"),
                           ("DELETED", "namespaces", "ns1")]  # fmt: skip
    unsubscribe()
    store.create("configmaps", _cm("after"), namespace="default")
    assert events[-1][2] == "ns1"
    history = store.events_since(0)
    assert [e[0] for e in history] == list(range(1, store.resource_version + 1))
    assert store.events_since(store.resource_version) == []
    with pytest.raises(ApiError) as err:
        store.get("configmaps", "default", "missing")
    assert err.value.status()["details"] == {"name": "missing", "kind": "configmaps"}


def test_watch_resumed_from_a_resource_version_only_replays_its_own_kind(tmp_path: Any) -> None:
    """Regression: the replayed history must not leak other kinds (StatefulSets, Events) into a pod watch."""
    from kubernetes import client as k8s
    from kubernetes import config as k8s_config
    from kubernetes import watch as k8s_watch

    from sandbox.kube.server import KubeApiServer

    with KubeApiServer() as server:
        api = k8s_config.new_client_from_config(server.write_kubeconfig(str(tmp_path / "kc")))
        core = k8s.CoreV1Api(api)
        listed = core.list_namespaced_pod("default").metadata
        assert listed is not None
        rv = listed.resource_version
        core.create_namespaced_config_map(
            "default", k8s.V1ConfigMap(metadata=k8s.V1ObjectMeta(name="noise"), data={"a": "b"})
        )
        core.create_namespaced_pod(
            "default",
            k8s.V1Pod(
                metadata=k8s.V1ObjectMeta(name="p1"),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="c", image="busybox")]),
            ),
        )
        w = k8s_watch.Watch()
        kinds = [
            (e["type"], e["raw_object"].get("kind", "Pod"), e["raw_object"]["metadata"]["name"])
            for e in w.stream(core.list_namespaced_pod, "default", resource_version=rv, timeout_seconds=1)
        ]
        assert kinds == [("ADDED", "Pod", "p1")]


def test_dry_run_validates_but_writes_nothing(server: KubeApiServer) -> None:
    http, auth = _https(server), {"Authorization": f"Bearer {server.token}"}
    base = f"{server.url}/api/v1/namespaces/default/configmaps"
    server.store.create("configmaps", _cm("live", a="1"), namespace="default")
    rv = server.store.resource_version
    created = http.post(f"{base}?dryRun=All", json=_cm("ghost", a="1"), headers=auth)
    assert created.status_code == 201 and created.json()["metadata"]["uid"]
    patched = http.patch(
        f"{base}/live?dryRun=All",
        json={"data": {"a": "2"}},
        headers={**auth, "Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200 and patched.json()["data"] == {"a": "2"}
    deleted = http.delete(f"{base}/live?dryRun=All", headers=auth)
    assert deleted.status_code == 200
    invalid = http.post(f"{base}?dryRun=All", json=_cm("Bad_Name"), headers=auth)
    assert invalid.status_code == 422
    assert http.post(f"{base}?dryRun=Some", json=_cm("x"), headers=auth).status_code == 400
    assert server.store.resource_version == rv
    assert server.store.get("configmaps", "default", "live")["data"] == {"a": "1"}
    assert server.store.try_get("configmaps", "default", "ghost") is None


def test_field_validation_strict_warn_ignore(server: KubeApiServer) -> None:
    http, auth = _https(server), {"Authorization": f"Bearer {server.token}"}
    base = f"{server.url}/api/v1/namespaces/default/configmaps"
    strict = http.post(f"{base}?fieldValidation=Strict", json={**_cm("s"), "bogus": 1}, headers=auth)
    assert strict.status_code == 400
    assert strict.json()["message"] == (
        'ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "bogus"'
    )
    warned = http.post(base, json={**_cm("w"), "metadata": {"name": "w", "nope": 1}}, headers=auth)
    assert warned.status_code == 201
    assert warned.headers.get_list("Warning") == ['299 - "unknown field "metadata.nope""']
    ignored = http.post(f"{base}?fieldValidation=Ignore", json={**_cm("i"), "bogus": 1}, headers=auth)
    assert ignored.status_code == 201 and "Warning" not in ignored.headers


def test_server_side_apply_needs_a_field_manager_and_tracks_owners(server: KubeApiServer) -> None:
    http, auth = _https(server), {"Authorization": f"Bearer {server.token}"}
    url = f"{server.url}/api/v1/namespaces/default/configmaps/ssa"
    apply = {**auth, "Content-Type": "application/apply-patch+yaml"}
    body = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1', b: '2'}\n"
    assert http.patch(url, content=body, headers=apply).status_code == 400
    created = http.patch(f"{url}?fieldManager=one", content=body, headers=apply)
    assert created.status_code == 201
    # dropping a field from the applied config removes it; another manager's update owns its change
    http.patch(
        f"{url}?fieldManager=two",
        json={"data": {"c": "3"}},
        headers={**auth, "Content-Type": "application/merge-patch+json"},
    )
    again = http.patch(
        f"{url}?fieldManager=one",
        content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1'}\n",
        headers=apply,
    )
    assert again.status_code == 200 and again.json()["data"] == {"a": "1", "c": "3"}
    managers = {(e["manager"], e["operation"]): e["fieldsV1"] for e in again.json()["metadata"]["managedFields"]}
    assert managers == {("two", "Update"): {"f:data": {"f:c": {}}}, ("one", "Apply"): {"f:data": {"f:a": {}}}}
    conflict = http.patch(
        f"{url}?fieldManager=one",
        content="apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ssa}\ndata: {a: '1', c: '9'}\n",
        headers=apply,
    )
    assert conflict.status_code == 409
    status = conflict.json()
    assert status["reason"] == "Conflict"
    assert status["message"].startswith('Apply failed with 1 conflict: conflict with "two" using v1 at ')
    assert status["details"]["causes"][0]["field"] == ".data.c"


def test_scale_subresource(server: KubeApiServer) -> None:
    http, auth = _https(server), {"Authorization": f"Bearer {server.token}"}
    labels = {"app": "s"}
    server.store.create(
        "deployments.apps",
        {
            "metadata": {"name": "s"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}},
            },
        },
        namespace="default",
    )
    url = f"{server.url}/apis/apps/v1/namespaces/default/deployments/s/scale"
    scale = http.get(url, headers=auth).json()
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 1} and scale["status"]["selector"] == "app=s"
    scale["spec"]["replicas"] = 4
    assert http.put(url, json=scale, headers=auth).json()["spec"] == {"replicas": 4}
    assert http.put(url, json=scale, headers=auth).status_code == 409  # stale resourceVersion
    bad = http.patch(
        url, json={"spec": {"replicas": -1}}, headers={**auth, "Content-Type": "application/merge-patch+json"}
    )
    assert bad.status_code == 422
    assert server.store.get("deployments.apps", "default", "s")["spec"]["replicas"] == 4
    resources = http.get(f"{server.url}/apis/apps/v1", headers=auth).json()["resources"]
    entry = next(r for r in resources if r["name"] == "deployments/scale")
    assert (entry["group"], entry["version"], entry["kind"]) == ("autoscaling", "v1", "Scale")


def test_reapplying_the_same_config_changes_nothing() -> None:
    from sandbox.kube import managed

    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}}
    live = managed.apply(None, config, "helm", force=False)
    live["metadata"]["managedFields"][0]["time"] = "2020-01-01T00:00:00Z"
    again = managed.apply(live, config, "helm", force=False)
    assert again == live
    changed = managed.apply(live, {**config, "data": {"a": "2"}}, "helm", force=False)
    assert changed["metadata"]["managedFields"][0]["time"] != "2020-01-01T00:00:00Z"
