"""The Milvus HTTP simulator (sandbox.milvus) and the bot's client (bot.cluster.milvus), over real HTTP.

Behaviours covered:
- IDs and flush timestamps returned by the client equal the simulator's exact int64/uint64 values,
  all above 2**53 and not representable as doubles.
- omitempty: an empty database has no ``collection_names``; a collection with nothing to seal gives
  ``{}`` in ``coll_segIDs``; an unflushed state has no ``flushed`` key; the client reads all as empty.
- GET requests carry their JSON body (recorded by the simulator as GET with the parsed body).
- flush_database/flush_all persist every collection of every database and poll each with its exact
  IDs and flush_ts: ``sim.unflushed()`` ends empty; already flushed segments are reported apart.
- A client that rounds IDs through floats never gets the data flushed (FlushTimeout, segments still
  unflushed); the guide's recipe (rounded IDs, no flush_ts) is told ``flushed`` while nothing was
  flushed; a client parsing JSON ints as floats is refused by the client's own checks.
- A non-empty status (fail_next, unknown database, not-ready Milvus) is MilvusHttpError with the reason.
- A timeout names the database, collection and segment IDs still unflushed.
- 404 from Milvus on /api/v1 is MilvusRoutesGone; a Kubernetes 404 Status is not.
- The simulator is strict: malformed JSON or a float segment ID is HTTP 400; the state route needs a
  collection_name; wrong methods and unknown paths are gin's 404.
- healthz while down; the data survives stop/start on the same ports.
- Databases are listed on the RESTful port with and without a token.
- base_urls: template and Kubernetes service proxy forms.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

import httpx
import pytest
from aiohttp import web

from bot.cluster.milvus import (
    FlushProgress,
    FlushTimeout,
    MilvusAuthError,
    MilvusClient,
    MilvusHttpError,
    MilvusRoutesGone,
    MilvusUnreachable,
    base_urls,
    service_proxy_url,
)
from sandbox._http import ThreadedServer
from sandbox.milvus import MilvusSim

TWO_53 = 2**53


class FakeClock:
    """A clock that only moves when the code under test sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(seconds, 0.001)


@pytest.fixture
def sim() -> Iterator[MilvusSim]:
    s = MilvusSim(flush_polls=2).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


@pytest.fixture
def client(sim: MilvusSim, http: httpx.Client) -> MilvusClient:
    return MilvusClient(sim.mgmt_url, sim.rest_url, http=http)


def flush(client: MilvusClient, db: str = "default", timeout: float = 5.0) -> Any:
    clock = FakeClock()
    return client.flush_database(db, timeout=timeout, interval=0.5, clock=clock, sleep=clock.sleep)


def raw_get(http: httpx.Client, url: str, body: Any) -> httpx.Response:
    return http.request("GET", url, content=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


class RoundingClient(MilvusClient):
    """What jq does: segment IDs and flush_ts pass through doubles before being sent back."""

    def flush_state(self, db: str, collection: str, seg_ids: Iterable[int], flush_ts: int) -> bool:
        rounded = [int(float(i)) for i in seg_ids]
        return super().flush_state(db, collection, rounded, int(float(flush_ts)))


class FloatParsingClient(MilvusClient):
    json_loads = staticmethod(lambda raw: json.loads(raw, parse_int=float))


# ---------------------------------------------------------------- exact IDs, omitempty, GET bodies


def test_ids_are_exact_int64_above_2_53(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_collection("default", "books", segments=3)
    growing = set(sim.segments("default", "books"))
    result = client.persist("default", ["books"])
    part = result.collections["books"]
    assert set(part.seg_ids) == growing and len(part.seg_ids) == 3
    for value in [*part.seg_ids, part.flush_ts, sim.collection_id("default", "books")]:
        assert value > TWO_53
        assert int(float(value)) != value  # a double would have changed it
    assert client.flush_state("default", "books", part.seg_ids, part.flush_ts) is False
    assert client.flush_state("default", "books", part.seg_ids, part.flush_ts) is True
    assert sim.flushed_segments("default", "books") == growing


def test_omitempty_shapes_are_read_as_empty(sim: MilvusSim, client: MilvusClient, http: httpx.Client) -> None:
    sim.add_database("empty")
    assert client.list_collections("empty") == []
    assert sim.calls("collections")[-1].response == {"status": {}}

    sim.add_collection("default", "cold", segments=0, flushed_segments=2)
    result = client.persist("default", ["cold"])
    raw = sim.calls("persist")[-1].response
    assert raw["coll_segIDs"] == {"cold": {}}
    assert raw["flush_coll_segIDs"]["cold"]["data"] == sorted(sim.flushed_segments("default", "cold"))
    assert result.collections["cold"].seg_ids == []
    assert set(result.collections["cold"].flushed_seg_ids) == sim.flushed_segments("default", "cold")

    none = raw_get(http, sim.mgmt_url + "/api/v1/collections", {"db_name": "empty"})
    assert none.json() == {"status": {}}
    zero = http.post(sim.mgmt_url + "/api/v1/persist", json={"db_name": "empty", "collection_names": []})
    assert zero.json() == {"status": {}, "db_name": "empty"}

    sim.add_collection("default", "hot", segments=1)
    part = client.persist("default", ["hot"]).collections["hot"]
    assert client.flush_state("default", "hot", part.seg_ids, part.flush_ts) is False
    assert sim.calls("persist/state")[-1].response == {"status": {}}


def test_get_requests_carry_their_json_body(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_database("db1")
    sim.add_collection("db1", "c1")
    assert client.list_collections("db1") == ["c1"]
    assert client.list_collections("default") == []
    record = sim.calls("collections")[0]
    assert (record.method, record.body) == ("GET", {"db_name": "db1"})


# ---------------------------------------------------------------- the flush procedure


def test_flush_all_databases_flushes_every_segment(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_database("db1")
    sim.add_database("db2")
    sim.add_collection("default", "a", segments=2)
    sim.add_collection("db1", "b", segments=1, flushed_segments=1)
    sim.add_collection("db1", "c", segments=0)
    sim.add_collection("db2", "d", segments=3)
    sim.insert("db2", "d", 10)
    expected = {(db, c, sid) for db, c, sid in sim.unflushed()}
    assert len(expected) == 6

    progress: list[FlushProgress] = []
    clock = FakeClock()
    reports = client.flush_all(timeout=5, interval=0.5, on_progress=progress.append, clock=clock, sleep=clock.sleep)

    assert sim.unflushed() == []
    assert [r.db for r in reports] == ["default", "db1", "db2"]
    flushed = {(r.db, c, sid) for r in reports for c, ids in r.segments.items() for sid in ids}
    assert flushed == expected
    assert reports[1].already_flushed["b"] == sorted(sim.flushed_segments("db1", "b") - {s for *_, s in expected})
    assert reports[1].segments["c"] == []
    # every state query named its collection and carried exactly that persist's IDs and flush_ts
    for record in sim.calls("persist/state"):
        body = record.body
        report = next(r for r in reports if r.db == body["db_name"])
        assert body["segmentIDs"] == report.segments[body["collection_name"]]
        assert body["flush_ts"] == report.flush_ts[body["collection_name"]]
    assert progress[-1].pending == {} and progress[-1].db == "db2"
    # every database persisted before any state query, and all polled together: flush_polls=2
    # means one wait in all, not one per database
    kinds = [r.path.rsplit("/api/v1/", 1)[-1] for r in sim.requests if "/api/v1/persist" in r.path]
    assert kinds.index("persist/state") == kinds.count("persist") == 3
    assert clock.sleeps == [0.5]


def test_rounding_client_never_gets_its_data_flushed(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books", segments=2)
    rounding = RoundingClient(sim.mgmt_url, sim.rest_url, http=http)
    with pytest.raises(FlushTimeout):
        flush(rounding, timeout=3)
    assert len(sim.unflushed()) == 2

    # the same data flushes with the exact client: the test above failed because of the rounding
    exact = MilvusClient(sim.mgmt_url, sim.rest_url, http=http)
    flush(exact)
    assert sim.unflushed() == []


def test_guide_recipe_is_told_flushed_while_nothing_is(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books", segments=2)
    persisted = http.post(sim.mgmt_url + "/api/v1/persist", json={"collection_names": ["books"]}).json()
    ids = json.loads(json.dumps(persisted), parse_int=float)["coll_segIDs"]["books"]["data"]  # jq
    body = {"segmentIDs": [int(i) for i in ids], "collection_name": "books"}
    answer = raw_get(http, sim.mgmt_url + "/api/v1/persist/state", body).json()
    assert answer == {"status": {}, "flushed": True}  # unknown IDs count as flushed, as in Milvus
    assert len(sim.unflushed()) == 2  # ... and nothing was flushed


def test_float_parsing_client_is_refused_by_its_own_checks(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    floaty = FloatParsingClient(sim.mgmt_url, sim.rest_url, http=http)
    with pytest.raises(MilvusHttpError, match="not an exact integer"):
        floaty.persist("default", ["books"])
    assert len(sim.unflushed()) == 2  # sealed, but the client refused to go on with rounded values


def test_timeout_names_what_is_unflushed(http: httpx.Client) -> None:
    with MilvusSim(flush_polls=1000) as sim:
        sim.add_database("db1")
        sim.add_collection("db1", "slow", segments=2)
        sim.add_collection("db1", "quick", segments=0)
        slow_ids = sorted(sim.segments("db1", "slow"))
        client = MilvusClient(sim.mgmt_url, sim.rest_url, http=http)
        with pytest.raises(FlushTimeout) as info:
            flush(client, "db1", timeout=2)
    err = info.value
    assert sorted(err.unflushed[("db1", "slow")]) == slow_ids and ("db1", "quick") not in err.unflushed
    for sid in slow_ids:
        assert str(sid) in str(err)
    assert "db1.slow" in str(err) and err.retriable


def test_write_after_flush_is_unflushed_and_lost(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_collection("default", "books")
    flush(client)
    late = sim.insert("default", "books", 5)
    assert sim.unflushed() == [("default", "books", late[0])]
    assert sim.drop_unflushed() == [("default", "books", late[0])]
    assert late[0] not in sim.segments("default", "books")


def test_repersist_after_crash_waits_for_earlier_sealed_segments(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_collection("default", "books", segments=2)
    first = client.persist("default", ["books"]).collections["books"]
    second = client.persist("default", ["books"]).collections["books"]
    assert second.seg_ids == first.seg_ids and second.flush_ts > first.flush_ts
    assert client.flush_state("default", "books", [], second.flush_ts) is False  # checkpoint not there yet
    flush(client)
    assert sim.unflushed() == []


# ---------------------------------------------------------------- errors


def test_fail_next_surfaces_the_reason(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_database("db1")
    sim.add_collection("db1", "books")
    sim.add_collection("default", "other")
    sim.fail_next("persist", db="db1", collection="books", reason="datacoord is busy")
    flush(client, "default")  # another database is not affected
    with pytest.raises(MilvusHttpError, match="datacoord is busy") as info:
        flush(client, "db1")
    assert info.value.route == "/api/v1/persist" and info.value.code == 65535
    assert sim.calls("persist")[-1].status == 200
    flush(client, "db1")  # only the next call failed
    assert sim.unflushed() == []

    sim.fail_next("persist/state", reason="state unavailable", count=2)
    sim.add_collection("db1", "more")
    with pytest.raises(MilvusHttpError, match="state unavailable"):
        flush(client, "db1")


def test_unknown_database_and_collection(sim: MilvusSim, client: MilvusClient) -> None:
    with pytest.raises(MilvusHttpError, match=r"database not found\[database=nope\]") as info:
        client.list_collections("nope")
    assert info.value.code == 800
    with pytest.raises(MilvusHttpError, match="collection not found"):
        client.persist("default", ["ghost"])


def test_down_milvus(sim: MilvusSim, client: MilvusClient, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    assert client.healthz() == (True, "OK")
    sim.set_down(True)
    healthy, reason = client.healthz()
    assert not healthy and "Not all components are healthy" in reason
    client.health()  # the real /api/v1/health handler answers ok regardless
    with pytest.raises(MilvusHttpError, match="service not ready") as info:
        client.persist("default", ["books"])
    assert info.value.retriable
    as_json = http.get(sim.mgmt_url + "/healthz", headers={"Content-Type": "application/json"})
    assert as_json.status_code == 500 and as_json.json()["state"] == reason
    sim.set_down(False)
    assert client.healthz() == (True, "OK")


def test_data_survives_stop_and_start(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_collection("default", "books")
    mgmt, rest = sim.mgmt_url, sim.rest_url
    sim.stop()
    with pytest.raises(MilvusUnreachable):
        client.list_collections("default")
    assert client.healthz()[0] is False
    sim.start()
    assert (sim.mgmt_url, sim.rest_url) == (mgmt, rest)
    assert client.list_collections("default") == ["books"]
    assert len(sim.unflushed()) == 2


def test_routes_gone_on_milvus_404(sim: MilvusSim, client: MilvusClient) -> None:
    client.health()
    sim.remove_v1_routes()
    with pytest.raises(MilvusRoutesGone, match="404 on /api/v1") as info:
        client.health()
    assert "2.6" not in str(info.value)  # a 404 says nothing about the version (2.6 serves these routes too)
    with pytest.raises(MilvusRoutesGone):
        client.list_collections("default")
    assert client.healthz() == (True, "OK")


def test_kubernetes_404_is_not_routes_gone(http: httpx.Client) -> None:
    async def not_found(request: web.Request) -> web.Response:
        status = {
            "kind": "Status",
            "apiVersion": "v1",
            "status": "Failure",
            "reason": "NotFound",
            "code": 404,
        }
        status["message"] = 'services "r1-milvus" not found'
        return web.json_response(status, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    with ThreadedServer(app) as kube:
        client = MilvusClient(kube.url, kube.url, http=http)
        with pytest.raises(MilvusHttpError, match='services "r1-milvus" not found') as info:
            client.health()
    assert not isinstance(info.value, MilvusRoutesGone)


# ---------------------------------------------------------------- simulator strictness


def test_malformed_bodies_are_http_400(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    url = sim.mgmt_url
    bad = http.request("GET", url + "/api/v1/collections", content=b"{not json")
    assert bad.status_code == 400 and bad.json()["error_code"] == 5
    ids = sorted(sim.segments("default", "books"))
    as_float = raw_get(http, url + "/api/v1/persist/state", {"segmentIDs": [float(i) for i in ids]})
    assert as_float.status_code == 400 and "int64" in as_float.json()["reason"]
    as_string = raw_get(http, url + "/api/v1/persist/state", {"segmentIDs": [str(i) for i in ids]})
    assert as_string.status_code == 400
    negative_ts = raw_get(http, url + "/api/v1/persist/state", {"collection_name": "books", "flush_ts": -1})
    assert negative_ts.status_code == 400
    array = http.post(url + "/api/v1/persist", content=b"[]")
    assert array.status_code == 400
    no_name = raw_get(http, url + "/api/v1/persist/state", {"segmentIDs": ids})
    assert no_name.status_code == 200 and no_name.json()["status"]["code"] == 1100
    folded = raw_get(http, url + "/api/v1/collections", {"DB_NAME": "default"})
    assert folded.json()["collection_names"] == ["books"]


def test_wrong_method_and_unknown_path_are_gin_404(sim: MilvusSim, http: httpx.Client) -> None:
    wrong = http.post(sim.mgmt_url + "/api/v1/collections", json={})
    assert (wrong.status_code, wrong.text) == (404, "404 page not found")
    unknown = http.get(sim.rest_url + "/v2/vectordb/nothing")
    assert (unknown.status_code, unknown.text) == (404, "404 page not found")


# ---------------------------------------------------------------- RESTful port


def test_list_databases_without_auth(sim: MilvusSim, client: MilvusClient) -> None:
    sim.add_database("db1")
    assert client.list_databases() == ["default", "db1"]
    assert sim.calls("/v2/vectordb/databases/list")[0].body == {}


def test_list_databases_with_token(http: httpx.Client) -> None:
    with MilvusSim(token="root:Milvus") as sim:
        sim.add_database("db1")
        good = MilvusClient(sim.mgmt_url, sim.rest_url, http=http, token="root:Milvus")
        assert good.list_databases() == ["default", "db1"]
        for token in (None, "root:wrong"):
            bad = MilvusClient(sim.mgmt_url, sim.rest_url, http=http, token=token)
            with pytest.raises(MilvusAuthError, match="hasn't authenticated") as info:
                bad.list_databases()
            assert "root:" not in str(info.value)  # the token is never echoed
        assert good.list_collections("db1") == []  # port 9091 has no authentication
        sim.fail_next("v2/vectordb/databases/list", reason="rootcoord down")
        with pytest.raises(MilvusHttpError, match="rootcoord down"):
            good.list_databases()


# ---------------------------------------------------------------- URLs


def test_base_urls_from_templates() -> None:
    mgmt, rest = base_urls(
        "http://{release}-milvus.{namespace}.svc:9091/",
        "http://{release}-milvus.{namespace}.svc:19530",
        release="r1",
        namespace="ns",
        kube_host="https://kube:6443",
    )
    assert mgmt == "http://r1-milvus.ns.svc:9091"
    assert rest == "http://r1-milvus.ns.svc:19530"
    with pytest.raises(ValueError, match="MILVUS_MGMT_URL"):
        base_urls("http://{cluster}:9091", None, release="r1", namespace="ns", kube_host="https://kube")


def test_base_urls_default_to_the_service_proxy() -> None:
    mgmt, rest = base_urls(None, None, release="r1", namespace="ns", kube_host="https://kube:6443/")
    assert mgmt == "https://kube:6443/api/v1/namespaces/ns/services/r1-milvus:9091/proxy"
    assert rest == "https://kube:6443/api/v1/namespaces/ns/services/r1-milvus:19530/proxy"
    assert service_proxy_url("https://k", "a", "b", 1) == "https://k/api/v1/namespaces/a/services/b:1/proxy"


def test_kubernetes_503_names_the_cause(http: httpx.Client) -> None:
    async def unavailable(request: web.Request) -> web.Response:
        status = {"kind": "Status", "status": "Failure", "reason": "ServiceUnavailable", "code": 503}
        status["message"] = 'no endpoints available for service "r1-milvus"'
        return web.json_response(status, status=503)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", unavailable)
    with ThreadedServer(app) as kube:
        client = MilvusClient(kube.url, kube.url, http=http)
        with pytest.raises(MilvusHttpError, match="no endpoints available") as info:
            client.persist("default", ["books"])
        assert info.value.retriable and info.value.http_status == 503
        assert client.healthz()[0] is False


def test_kubernetes_429_in_front_of_milvus_is_resent_then_retriable_after_its_retry_after(http: httpx.Client) -> None:
    """The API server's rate limit on the service proxy (429 + Retry-After): a short one is waited
    out and the call sent again in place; a long one is a retriable error carrying Retry-After."""
    answers: list[int] = []

    async def throttled(request: web.Request) -> web.Response:
        status = {"kind": "Status", "status": "Failure", "reason": "TooManyRequests", "code": 429}
        status["message"] = "too many requests, please try again later"
        if request.headers.get("X-Test") == "once" and answers:
            answers.append(200)
            return web.json_response({"status": {}, "coll_segIDs": {}, "flush_coll_segIDs": {}, "coll_flush_ts": {}})
        answers.append(429)
        wait = "0" if request.headers.get("X-Test") == "once" else "30"
        return web.json_response(status, status=429, headers={"Retry-After": wait})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", throttled)
    with ThreadedServer(app) as kube:
        client = MilvusClient(kube.url, kube.url, http=http)
        with pytest.raises(MilvusHttpError, match="too many requests") as info:
            client.persist("default", ["books"])
        assert info.value.retriable and info.value.http_status == 429
        assert info.value.retry_after == 30.0 and answers == [429]  # too long to wait in place
        answers.clear()
        once = MilvusClient(kube.url, kube.url, http=httpx.Client(headers={"X-Test": "once"}))
        assert once.persist("default", []).collections == {}
        assert answers == [429, 200]


class _Counting(httpx.BaseTransport):
    """The real HTTP transport, counting the requests in flight at once."""

    def __init__(self) -> None:
        self._inner = httpx.HTTPTransport()
        self._lock = threading.Lock()
        self.now = self.most = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.now += 1
            self.most = max(self.most, self.now)
        try:
            resp = self._inner.handle_request(request)
            resp.read()
            return resp
        finally:
            with self._lock:
                self.now -= 1


def test_state_queries_of_every_database_go_8_at_once_and_no_more(sim: MilvusSim) -> None:
    for db in ("db1", "db2", "db3"):
        sim.add_database(db)
        for i in range(10):
            sim.add_collection(db, f"c{i}", segments=1)
    held = sim.hold(r"/api/v1/persist/state$", count=8)
    counting = _Counting()
    with httpx.Client(transport=counting, timeout=10) as http:
        client = MilvusClient(sim.mgmt_url, sim.rest_url, http=http)
        done: list[Any] = []
        worker = threading.Thread(target=lambda: done.append(client.flush_all(timeout=30, interval=0.01)))
        worker.start()
        deadline = time.monotonic() + 10
        while held.held < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        try:
            # eight state queries wait in Milvus at once; every database was persisted before any query
            assert held.held == 8 and len(sim.calls("persist")) == 3  # "default" has no collection
        finally:
            held.release()
            worker.join(30)
    assert sim.unflushed() == [] and len(done[0]) == 4
    assert counting.most == 8  # never more than 8 requests in flight
