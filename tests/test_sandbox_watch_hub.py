"""The API server's watch hub and the store's namespace index (sandbox.kube.server._WatchHub,
Store.list_shared): events reach only the watches of their resource and namespace, one JSON
encoding of an event is shared by every watch that sees it, and nothing a client sees changes
(selection, objects leaving it, end-of-watch BOOKMARKs, resume from a resourceVersion, 410)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import pytest

from sandbox.kube.server import KubeApiServer
from sandbox.kube.store import Store


def _client(kube: KubeApiServer) -> httpx.Client:
    return httpx.Client(verify=kube.ssl_context(), headers={"Authorization": f"Bearer {kube.token}"})


def _pod(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels or {}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}


class _Watch(threading.Thread):
    """One watch over HTTP in a thread: its decoded lines once it ends."""

    def __init__(self, kube: KubeApiServer, path: str, **params: str) -> None:
        super().__init__(daemon=True)
        self.url = kube.url + path
        self.params = {"watch": "true", "timeoutSeconds": "2", "allowWatchBookmarks": "true", **params}
        self.kube = kube
        self.lines: list[dict[str, Any]] = []

    def run(self) -> None:
        with _client(self.kube) as http, http.stream("GET", self.url, params=self.params, timeout=10) as resp:
            for line in resp.iter_lines():
                if line:
                    self.lines.append(json.loads(line))

    def events(self) -> list[tuple[str, str]]:
        return [(e["type"], e["object"]["metadata"].get("name", "")) for e in self.lines if e["type"] != "BOOKMARK"]

    def bookmark_rv(self) -> int:
        assert self.lines[-1]["type"] == "BOOKMARK"
        return int(self.lines[-1]["object"]["metadata"]["resourceVersion"])


def _open(server: KubeApiServer, *watches: _Watch) -> None:
    for w in watches:
        w.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        open_watches = sum(len(ws) for group in server._hub._by_key.values() for ws in group.values())
        if open_watches >= len(watches):
            return
        time.sleep(0.02)
    raise AssertionError("watches did not start")


@pytest.fixture
def kube() -> Any:
    srv = KubeApiServer(Store()).start()
    for ns in ("a", "b"):
        srv.store.ensure_namespace(ns)
    try:
        yield srv
    finally:
        srv.stop()


def test_events_reach_only_the_watches_of_their_kind_namespace_and_selection(kube: KubeApiServer) -> None:
    rv0 = str(kube.store.resource_version)
    pods_a = _Watch(kube, "/api/v1/namespaces/a/pods", resourceVersion=rv0)
    pods_b = _Watch(kube, "/api/v1/namespaces/b/pods", resourceVersion=rv0)
    cms_a = _Watch(kube, "/api/v1/namespaces/a/configmaps", resourceVersion=rv0)
    all_pods = _Watch(kube, "/api/v1/pods", resourceVersion=rv0)
    selected = _Watch(kube, "/api/v1/namespaces/a/pods", resourceVersion=rv0, labelSelector="app=x")
    _open(kube, pods_a, pods_b, cms_a, all_pods, selected)
    kube.store.create("pods", _pod("p1", {"app": "x"}), namespace="a")
    kube.store.create("pods", _pod("p2"), namespace="a")
    kube.store.patch("pods", "a", "p1", {"metadata": {"labels": {"app": "y"}}}, "merge")  # leaves app=x
    kube.store.patch("pods", "a", "p2", {"metadata": {"labels": {"app": "x"}}}, "merge")  # enters app=x
    last = kube.store.create("pods", _pod("p3"), namespace="b")
    newest = int(last["metadata"]["resourceVersion"])
    for w in (pods_a, pods_b, cms_a, all_pods, selected):
        w.join(10)
    assert pods_a.events() == [("ADDED", "p1"), ("ADDED", "p2"), ("MODIFIED", "p1"), ("MODIFIED", "p2")]
    assert pods_b.events() == [("ADDED", "p3")]
    assert cms_a.events() == []
    assert all_pods.events() == [*pods_a.events(), ("ADDED", "p3")]
    assert selected.events() == [("ADDED", "p1"), ("DELETED", "p1"), ("ADDED", "p2")]
    # The closing BOOKMARK still covers every pod event, seen or not (as when each watch skipped them itself).
    for w in (pods_a, pods_b, all_pods, selected):
        assert w.bookmark_rv() == newest
    assert cms_a.bookmark_rv() == int(rv0)  # no configmap event since it started
    deadline = time.monotonic() + 5  # ended watches are unregistered (just after their last line)
    while any(kube._hub._by_key.get("pods", {}).values()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not any(kube._hub._by_key.get("pods", {}).values())


def test_watches_of_one_event_get_the_same_line(kube: KubeApiServer) -> None:
    rv0 = str(kube.store.resource_version)
    watches = [_Watch(kube, "/api/v1/namespaces/a/pods", resourceVersion=rv0) for _ in range(3)]
    _open(kube, *watches)
    kube.store.create("pods", _pod("p1"), namespace="a")
    for w in watches:
        w.join(10)
    first = [w.lines[0] for w in watches]
    assert first[0]["type"] == "ADDED" and first[0]["object"]["metadata"]["name"] == "p1"
    assert all(line == first[0] for line in first)


def test_hub_hands_one_shared_encoding_to_every_matching_watch() -> None:
    import asyncio

    from sandbox.kube.server import _Watcher, _WatchHub, _WatchStream
    from sandbox.kube.store import RESOURCES

    store = Store()
    hub = _WatchHub()
    store.listen(hub.on_event)
    loop = asyncio.new_event_loop()
    try:
        rt = RESOURCES["pods"]
        everything = Store.matcher(rt, None, None)
        watchers = [_Watcher(_WatchStream(rt, ns, everything), loop, asyncio.Queue()) for ns in ("a", "a", "b", None)]
        for w in watchers:
            hub.add(w, store.lock)
        store.ensure_namespace("a")
        store.create("pods", _pod("p1"), namespace="a")
        loop.run_until_complete(asyncio.sleep(0))  # run the posted callbacks
        seen = [w.queue.get_nowait() if not w.queue.empty() else None for w in watchers]
        assert seen[2] is None  # namespace b: nothing
        got = [s for s in seen if s is not None]
        assert len(got) == 3 and all(s.kind == "ADDED" for s in got)
        assert all(s.encoded is got[0].encoded for s in got)  # one cache of encoded lines
        assert all(s.obj is got[0].obj for s in got)  # the store's object, not a copy each
    finally:
        loop.close()


def test_resume_from_a_resource_version_and_too_old(kube: KubeApiServer) -> None:
    kube.store.create("pods", _pod("p1"), namespace="a")
    rv = str(kube.store.resource_version)
    kube.store.create("configmaps", {"metadata": {"name": "c"}}, namespace="a")
    kube.store.create("pods", _pod("p2"), namespace="a")
    kube.store.delete("pods", "a", "p1")
    resumed = _Watch(kube, "/api/v1/namespaces/a/pods", resourceVersion=rv, timeoutSeconds="1")
    resumed.start()
    resumed.join(10)
    assert resumed.events() == [("ADDED", "p2"), ("DELETED", "p1")]
    assert resumed.bookmark_rv() == kube.store.resource_version
    small = KubeApiServer(Store(history_limit=2)).start()
    try:
        for i in range(4):
            small.store.create("configmaps", {"metadata": {"name": f"c{i}"}}, namespace="default")
        old = _Watch(small, "/api/v1/namespaces/default/configmaps", resourceVersion="1", timeoutSeconds="1")
        old.start()
        old.join(10)
        assert old.lines[0]["type"] == "ERROR" and old.lines[0]["object"]["code"] == 410
    finally:
        small.stop()


def test_namespace_index_lists_and_deletes_like_a_scan() -> None:
    store = Store()
    for ns in ("a", "b"):
        store.ensure_namespace(ns)
    for name in ("z", "m", "a"):
        store.create("configmaps", {"metadata": {"name": name}}, namespace="a")
    store.create("configmaps", {"metadata": {"name": "k"}}, namespace="b")
    store.delete("configmaps", "a", "m")
    store.create("configmaps", {"metadata": {"name": "m"}}, namespace="a")
    names = [(o["metadata"]["namespace"], o["metadata"]["name"]) for o in store.list("configmaps")]
    assert names == sorted(names) and ("b", "k") in names
    assert [o["metadata"]["name"] for o in store.list("configmaps", "a")] == ["a", "m", "z"]
    assert [o["metadata"]["name"] for o in store.list_shared("configmaps", "a")] == ["a", "m", "z"]
    shared = store.list_shared("configmaps", "a")[0]
    copied = store.list("configmaps", "a")[0]
    assert copied == shared and copied is not shared
    store.delete("namespaces", None, "a")
    assert store.list("configmaps", "a") == [] and store.try_get("namespaces", None, "a") is None
    assert [o["metadata"]["name"] for o in store.list("configmaps")] == ["k"]
