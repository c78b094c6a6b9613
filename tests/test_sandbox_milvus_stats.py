"""The Milvus simulator's RESTful ``collections/get_stats`` and ``collections/get_load_state``.

Behaviours covered (wire formats of milvus 2.5 internal/distributed/proxy/httpserver/handler_v2.go):
- rowCount counts Sealed and Flushed segments, not Growing ones; after a flush of everything it is
  every row written; a write after the flush is not counted; ``rowCount`` 0 is present.
- Load states: Loaded (with ``loadProgress`` 100 and an empty ``message``), NotLoad (no
  ``loadProgress``, no ``message``); after a restart the loaded collections answer Loading for
  ``load_polls`` polls (progress 0 included) and then Loaded; ``finish_loading`` ends it at once;
  nothing moves without a poll; a failed or not-ready poll does not count.
- Unknown collection or database: get_load_state code 100 ``collection not found[collection=...]``
  (the proxy's LoadStateNotExist), get_stats code 100 with the database in the reason; an unknown
  partition is code 200; a dropped collection vanishes from both.
- lose_rows takes rows out of flushed data and get_stats shows it.
- Malformed bodies: 1801 (empty, not JSON, not an object, wrong type), 1802 (no collectionName).
- Token: HTTP 401 code 1800 without the right Bearer token, like databases/list.
- fail_next on both routes (short names and paths), narrowed by db/collection; a down Milvus.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from bot.cluster.milvus import MilvusClient
from sandbox.milvus import MilvusSim
from tests import test_milvus

# The fixtures (sim: a started MilvusSim(flush_polls=2); http; client: the bot's MilvusClient on
# that sim) and the flush helper of tests/test_milvus.py, reused rather than copied.
sim = test_milvus.sim
http = test_milvus.http
client = test_milvus.client
flush = test_milvus.flush

STATS = "/v2/vectordb/collections/get_stats"
LOAD = "/v2/vectordb/collections/get_load_state"

LOADED = {"code": 0, "data": {"loadProgress": 100, "loadState": "LoadStateLoaded"}, "message": ""}
NOT_LOAD = {"code": 0, "data": {"loadState": "LoadStateNotLoad"}}


def loading(progress: int) -> dict[str, Any]:
    return {"code": 0, "data": {"loadProgress": progress, "loadState": "LoadStateLoading"}, "message": ""}


def post(
    http: httpx.Client,
    sim: MilvusSim,
    route: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    token: str | None = None,
) -> httpx.Response:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    content = raw if raw is not None else json.dumps(body).encode()
    return http.post(sim.rest_url + route, content=content, headers=headers)


def stats(http: httpx.Client, sim: MilvusSim, collection: str, db: str | None = None) -> Any:
    body = {"collectionName": collection} if db is None else {"dbName": db, "collectionName": collection}
    resp = post(http, sim, STATS, body)
    assert resp.status_code == 200
    return resp.json()


def load_state(http: httpx.Client, sim: MilvusSim, collection: str, db: str | None = None, **extra: Any) -> Any:
    body = {"collectionName": collection, **extra}
    if db is not None:
        body["dbName"] = db
    resp = post(http, sim, LOAD, body)
    assert resp.status_code == 200
    return resp.json()


# ---------------------------------------------------------------- get_stats


def test_row_count_counts_sealed_and_flushed_not_growing(
    sim: MilvusSim,
    client: MilvusClient,
    http: httpx.Client,
) -> None:
    sim.add_collection("default", "books", segments=2, rows_per_segment=1000, flushed_segments=1)
    assert stats(http, sim, "books") == {"code": 0, "data": {"rowCount": 1000}}  # the Growing 2000 not yet
    assert sim.row_count("default", "books") == 1000 and sim.total_rows("default", "books") == 3000

    client.persist("default", ["books"])  # sealed, not flushed yet: datacoord counts them
    assert sim.unflushed() and stats(http, sim, "books")["data"]["rowCount"] == 3000

    flush(client)
    assert sim.unflushed() == []
    assert stats(http, sim, "books", db="default") == {"code": 0, "data": {"rowCount": 3000}}

    sim.insert("default", "books", 5)  # a write after the flush is Growing again
    assert stats(http, sim, "books")["data"]["rowCount"] == 3000
    assert sim.total_rows("default", "books") == 3005


def test_row_count_zero_is_present_and_databases_are_separate(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "empty", segments=0)
    sim.add_database("db1")
    sim.add_collection("db1", "empty", segments=0, flushed_segments=2, rows_per_segment=7)
    resp = post(http, sim, STATS, {"collectionName": "empty"})
    assert resp.text == '{"code":0,"data":{"rowCount":0}}'
    assert stats(http, sim, "empty", db="db1") == {"code": 0, "data": {"rowCount": 14}}
    bodies = [r.body for r in sim.calls("get_stats")]
    assert bodies == [{"collectionName": "empty"}, {"dbName": "db1", "collectionName": "empty"}]


def test_lose_rows_shows_in_row_count(sim: MilvusSim, client: MilvusClient, http: httpx.Client) -> None:
    sim.add_collection("default", "books", segments=2, rows_per_segment=100)
    flush(client)
    assert stats(http, sim, "books")["data"]["rowCount"] == 200
    touched = sim.lose_rows("default", "books", 150)
    assert len(touched) == 2 and set(touched) <= sim.flushed_segments("default", "books")
    assert stats(http, sim, "books")["data"]["rowCount"] == 50
    with pytest.raises(ValueError, match="fewer flushed rows"):
        sim.lose_rows("default", "books", 51)
    sim.insert("default", "books", 10)  # Growing rows cannot be lost this way
    with pytest.raises(ValueError):
        sim.lose_rows("default", "books", 60)


# ---------------------------------------------------------------- get_load_state


def test_loaded_and_not_loaded_shapes(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    sim.add_collection("default", "cold", loaded=False)
    resp = post(http, sim, LOAD, {"collectionName": "books"})
    assert resp.text == '{"code":0,"data":{"loadProgress":100,"loadState":"LoadStateLoaded"},"message":""}'
    cold = load_state(http, sim, "cold")
    assert cold == NOT_LOAD and "loadProgress" not in cold["data"] and "message" not in cold
    assert load_state(http, sim, "books", partitionNames=["_default"]) == LOADED

    sim.set_loaded("default", "cold", True)
    assert load_state(http, sim, "cold") == LOADED and sim.load_state("default", "cold") == "LoadStateLoaded"
    sim.set_loaded("default", "books", False)
    assert load_state(http, sim, "books") == NOT_LOAD


def test_restart_reloads_loaded_collections_poll_by_poll(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books", flushed_segments=1)
    sim.add_collection("default", "cold", loaded=False)
    sim.add_database("db1")
    sim.add_collection("db1", "events")
    before = stats(http, sim, "books")
    rest = sim.rest_url

    sim.restart()
    assert sim.rest_url == rest
    assert sim.load_state("default", "books") == "LoadStateLoading"  # inspecting is not a poll
    assert load_state(http, sim, "books") == loading(0)  # progress 0 is written, not omitted
    assert load_state(http, sim, "books") == loading(50)
    assert load_state(http, sim, "books") == LOADED
    assert load_state(http, sim, "books") == LOADED
    assert load_state(http, sim, "cold") == NOT_LOAD  # a released collection stays released
    assert stats(http, sim, "books") == before  # the data survived

    assert load_state(http, sim, "events", db="db1")["data"]["loadState"] == "LoadStateLoading"
    sim.finish_loading()
    assert load_state(http, sim, "events", db="db1") == LOADED


def test_stop_start_and_start_loading(http: httpx.Client) -> None:
    with MilvusSim(load_polls=1) as sim:
        sim.add_collection("default", "books")
        sim.add_collection("default", "other")
        sim.stop()
        sim.start()
        assert load_state(http, sim, "books") == loading(0)
        assert load_state(http, sim, "books") == LOADED

        sim.start_loading("default", "books", polls=4)
        sim.start()  # already running: not a restart
        assert [load_state(http, sim, "books")["data"]["loadProgress"] for _ in range(5)] == [0, 25, 50, 75, 100]
        assert load_state(http, sim, "other") == loading(0)  # its own reload from the restart
        sim.finish_loading("default", "other")
        assert load_state(http, sim, "other") == LOADED

        sim.set_loaded("default", "books", False)
        sim.start_loading("default", "books")  # loading a released collection
        assert load_state(http, sim, "books") == loading(0)


def test_unknown_partition(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "cold", loaded=False)
    body = load_state(http, sim, "cold", partitionNames=["_default", "p1"])
    assert body == {"code": 200, "message": "partition not found[partition=p1]"}


# ---------------------------------------------------------------- unknown, dropped


def test_unknown_collection_and_database(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    assert load_state(http, sim, "ghost") == {"code": 100, "message": "collection not found[collection=ghost]"}
    # an unknown database is the same LoadStateNotExist to the proxy
    assert load_state(http, sim, "books", db="nope") == {
        "code": 100,
        "message": "collection not found[collection=books]",
    }
    assert stats(http, sim, "ghost") == {
        "code": 100,
        "message": "collection not found[database=default][collection=ghost]",
    }
    assert stats(http, sim, "books", db="nope") == {
        "code": 100,
        "message": "collection not found[database=nope][collection=books]",
    }


def test_dropped_collection_vanishes(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    sim.add_collection("default", "keep", segments=1)
    sim.drop_collection("default", "books")
    assert load_state(http, sim, "books")["code"] == 100
    assert stats(http, sim, "books")["code"] == 100
    assert {name for _, name, _ in sim.unflushed()} == {"keep"}
    with pytest.raises(KeyError):
        sim.row_count("default", "books")
    with pytest.raises(KeyError):
        sim.drop_collection("default", "books")


# ---------------------------------------------------------------- bodies, auth, faults


@pytest.mark.parametrize("route", [STATS, LOAD])
def test_malformed_bodies(sim: MilvusSim, http: httpx.Client, route: str) -> None:
    sim.add_collection("default", "books")
    cases: list[tuple[bytes, int, str]] = [
        (b"", 1801, "the request body should be nil, however {} is valid"),
        (b"  ", 1801, "the request body should be nil, however {} is valid"),
        (b"{", 1801, "can only accept json format request, error: "),
        (b"[1]", 1801, "cannot unmarshal array into Go value of type httpserver.CollectionNameReq"),
        (b'{"collectionName": 5}', 1801, "CollectionNameReq.collectionName of type string"),
        (b'{"collectionName": "books", "partitionNames": "p"}', 1801, "of type []string"),
        (b"{}", 1802, "missing required parameters, error: Key: 'CollectionNameReq.CollectionName'"),
        (b"null", 1802, "failed on the 'required' tag"),
        (b'{"collectionName": ""}', 1802, "missing required parameters"),
    ]
    for raw, code, fragment in cases:
        resp = post(http, sim, route, raw=raw)
        assert resp.status_code == 200, raw
        body = resp.json()
        assert body["code"] == code and fragment in body["message"], (raw, body)
        assert "data" not in body
    ok = post(http, sim, route, raw=b'{"COLLECTIONNAME": "books", "dbname": "default", "extra": 1}')
    assert ok.json()["code"] == 0  # keys match case-insensitively, unknown keys are ignored


@pytest.mark.parametrize("route", [STATS, LOAD])
def test_token_is_required_like_databases_list(http: httpx.Client, route: str) -> None:
    with MilvusSim(token="root:Milvus") as sim:
        sim.add_collection("default", "books")
        for token in (None, "root:wrong"):
            resp = post(http, sim, route, {"collectionName": "books"}, token=token)
            assert resp.status_code == 401
            assert resp.json() == {"code": 1800, "message": "user hasn't authenticated"}
        good = post(http, sim, route, {"collectionName": "books"}, token="root:Milvus")
        assert good.status_code == 200 and good.json()["code"] == 0
        assert [r.authorization for r in sim.calls(route)] == [None, "Bearer root:wrong", "Bearer root:Milvus"]


def test_fail_next_on_both_routes(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_database("db1")
    sim.add_collection("db1", "books", flushed_segments=1)
    sim.add_collection("default", "books", flushed_segments=1)
    sim.fail_next("get_stats", reason="datacoord is busy")
    assert stats(http, sim, "books") == {"code": 65535, "message": "datacoord is busy"}
    assert stats(http, sim, "books")["code"] == 0  # only the next call

    sim.fail_next(STATS, db="db1", collection="books", code=1, reason="not ready", count=2)
    assert stats(http, sim, "books")["code"] == 0  # another database is not affected
    assert stats(http, sim, "books", db="db1") == {"code": 1, "message": "not ready"}
    assert stats(http, sim, "books", db="db1")["code"] == 1
    assert stats(http, sim, "books", db="db1")["code"] == 0

    sim.restart()
    sim.fail_next("get_load_state", collection="books", reason="querycoord down")
    assert load_state(http, sim, "books") == {"code": 65535, "message": "querycoord down"}
    assert load_state(http, sim, "books") == loading(0)  # the failed poll did not count
    sim.fail_next("v2/vectordb/collections/get_load_state", reason="again")
    assert load_state(http, sim, "books", db="db1")["message"] == "again"
    assert load_state(http, sim, "books", db="db1") == loading(0)
    assert [r.response["code"] for r in sim.calls("get_load_state")] == [65535, 0, 65535, 0]


def test_down_milvus_answers_not_ready_and_polls_do_not_count(sim: MilvusSim, http: httpx.Client) -> None:
    sim.add_collection("default", "books")
    sim.restart()
    sim.set_down(True)
    for route in (STATS, LOAD):
        body = post(http, sim, route, {"collectionName": "books"}).json()
        assert body["code"] == 1 and "service not ready" in body["message"]
    sim.set_down(False)
    assert load_state(http, sim, "books") == loading(0)


def test_wrong_method_is_gin_404(sim: MilvusSim, http: httpx.Client) -> None:
    resp = http.get(sim.rest_url + LOAD)
    assert resp.status_code == 404 and resp.text == "404 page not found"
