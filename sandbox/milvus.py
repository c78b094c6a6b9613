"""A Milvus 2.5 instance, as the bot sees it over HTTP: the proxy's management port and RESTful port.

Why it exists: the upgrade's first step flushes what Pulsar still holds into object storage through
the proxy's HTTP API (``/api/v1/*`` on port 9091) and lists databases through the RESTful v2 API
(port 19530). The bot's client (``bot.cluster.milvus``) and the scenario tests talk to this
simulator over real HTTP, with the real wire formats (upgrade-facts.md, "The proxy's HTTP API";
milvus internal/distributed/proxy/httpserver/handler.go and wrapper.go, internal/proxy/task_flush.go,
internal/datacoord/services.go and segment_manager.go, internal/http/healthz/healthz_handler.go).

The data model: databases -> collections -> segments, each segment Growing, Sealed or Flushed.
It lives in the ``MilvusSim`` object, not in the HTTP servers, so ``stop()``/``start()`` (the
release uninstalled and installed again: the data is in object storage) keep it; ``start()``
reuses the previous ports. ``set_down(True)`` models a running but unhealthy Milvus.

What is faithful (and therefore strict):
- Bodies are bound like gin + Go ``encoding/json`` into the protobuf request structs: GET requests
  carry a JSON body; an empty body is an empty request; a malformed body, a non-object, a float or
  string where an int64/uint64 goes, an int out of range -> HTTP 400
  ``{"error_code":5,"reason":"..."}``. Unknown keys are ignored; keys match case-insensitively.
- Responses are Go ``encoding/json`` of the protobuf structs: every field omitempty, success is
  ``"status":{}``, failures are HTTP 200 with a non-empty status (``error_code`` as a number, as
  encoding/json writes protobuf enums, ``reason``, ``code``, ``detail``, ``retriable``).
  A collection with nothing sealed gives ``{}`` in ``coll_segIDs``; zero collections drop the map;
  ``flushed`` is absent until true; ``collection_names`` etc. are absent for an empty database.
- IDs (collection and segment) and hybrid timestamps are int64/uint64 above 2**53 that a double
  cannot hold (no ID is a multiple of 64), emitted and parsed as exact JSON integers.
- Persist (datacoord ``Flush``/``SealAllSegments``): seals every Growing segment of each named
  collection; ``coll_segIDs`` = every Sealed-but-not-Flushed segment (the ones this call sealed
  plus any sealed earlier and still not flushed); ``flush_coll_segIDs`` = segments already flushed;
  ``coll_flush_ts`` = a fresh hybrid timestamp (physical ms << 18) per collection; the collections
  are processed in order and an unknown one fails the call after the earlier ones were sealed.
- Flush state (datacoord ``GetFlushState``): ``collection_name`` is required (the proxy resolves it);
  **unknown segment IDs count as flushed** (real semantics); the answer is flushed when no *known*
  requested segment is unflushed and the collection's channel checkpoint is >= ``flush_ts``.
- ``/api/v1/health`` answers ``{"status":"ok"}`` even while down (the real handler does);
  ``/healthz`` answers 200 ``OK`` or 500 with a reason (JSON when the request's Content-Type is
  application/json). Unknown paths and wrong methods answer gin's 404 ``404 page not found``;
  ``remove_v1_routes()`` makes ``/api/v1/*`` answer that too (Milvus 2.6).
- RESTful port: ``POST /v2/vectordb/databases/list`` -> ``{"code":0,"data":[...]}``. With a
  ``token`` a request without ``Authorization: Bearer <token>`` gets HTTP 401
  ``{"code":1800,"message":"user hasn't authenticated"}`` (milvus internal/distributed/proxy/service.go
  ``authenticate`` aborts with http.StatusUnauthorized). With a token and ``mgmt_auth`` (the
  default: Milvus 2.5/2.6 releases from early 2026, milvus PRs #47277/#47278/#47405) the 9091
  ``/api/v1`` routes require the same header and answer the same HTTP 401 without it;
  ``/healthz`` stays public. ``mgmt_auth=False`` is an older release (no auth on 9091).
  Every request's ``Authorization`` header is kept in the request log.
- RESTful ``collections/get_stats`` and ``collections/get_load_state`` (milvus 2.5
  internal/distributed/proxy/httpserver/handler_v2.go ``getCollectionStats`` /
  ``getCollectionLoadState``, bodies bound into ``CollectionNameReq``; responses are gin.H maps,
  so nothing is omitted by omitempty: keys are present or absent by construction):
  ``rowCount`` is datacoord's row count, the rows of Sealed and Flushed segments (Growing rows are
  not counted before a flush) -> ``{"code":0,"data":{"rowCount":N}}``. Load state:
  ``{"code":0,"data":{"loadProgress":P,"loadState":"LoadStateLoaded"|"LoadStateLoading"},"message":""}``
  (``loadProgress`` present even when 0), not loaded -> ``{"code":0,"data":{"loadState":"LoadStateNotLoad"}}``
  (no ``loadProgress``, no ``message``); an unknown collection **or database** is the proxy's
  ``LoadStateNotExist`` turned into ``{"code":100,"message":"collection not found[collection=<name>]"}``;
  an unknown partition ``{"code":200,"message":"partition not found[partition=<name>]"}`` (only
  ``_default`` exists). get_stats: unknown collection or database (2.5's rootcoord looks the name up
  before the database) -> ``{"code":100,"message":"collection not found[database=<db>][collection=<name>]"}``.
  Bodies: empty -> 1801 "...the request body should be nil, however {} is valid"; not JSON, not an
  object or a wrong type -> 1801; no/empty ``collectionName`` -> 1802 "missing required parameters".

What is simulated, not real (documented so tests rely on it knowingly):
- There is no background flush. A Sealed segment becomes Flushed only when ``/api/v1/persist/state``
  has been asked ``flush_polls`` times **with its exact ID**; a collection's channel checkpoint moves
  to a persist's ``flush_ts`` once every segment that persist returned is Flushed (at once for a
  persist that returned none). So a client that corrupts IDs never gets its data flushed: with the
  exact ``flush_ts`` it waits until its timeout; with ``flush_ts`` 0 it is told ``flushed: true``
  (unknown IDs count as flushed) while ``unflushed()`` still lists the segments. Tests assert
  ``unflushed()`` and the recorded state queries, which is how a rounding client is caught.
  With ``flush_seconds`` (for the benchmark: seconds, or a function of database and collection
  name) the flush is timed instead, as datacoord's is: a segment is Flushed ``flush_seconds`` after
  it was sealed, whoever asks (``flush_time`` says when, on ``time.monotonic()``), as seen by the
  next state query or persist of its collection.
- Loading: collections are loaded when created (``add_collection(..., loaded=False)`` or
  ``set_loaded`` to change it). ``start()`` after a ``stop()`` (``restart()``; the pods came back)
  or ``start_loading()`` puts the loaded collections in ``LoadStateLoading``: the next
  ``load_polls`` get_load_state answers for such a collection say Loading (progress 0, then rising)
  and the following one Loaded 100; ``finish_loading()`` ends it at once. No wall clock involved.
- ``lose_rows`` removes rows from flushed segments and ``drop_collection`` removes a collection:
  test hooks for data loss a verification must catch.
- Error reasons follow Milvus' merr wording but are not byte-for-byte (e.g. Go's JSON error text).
- ``fail_next`` injects a failure status before the real work (a persist that fails this way seals
  nothing).
- ``hold`` keeps the next matching requests waiting before any work, until the test calls
  ``release()``; ``Hold.held`` says how many are waiting now, so a test can act (kill the client)
  while a request is known to be in flight. A released request is then served normally, even
  if its client is gone by then (as when Milvus did the work but the answer was lost).

Thread-safety: all state is guarded by one lock; the servers run in their own threads
(``sandbox._http.ThreadedServer``) while tests drive ``add_collection``/``insert``/``unflushed``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sandbox._http import ThreadedServer

INT64_MAX = 2**63 - 1
UINT64_MAX = 2**64 - 1
FIRST_ID = 454097953998181111
ID_STEP = 1031

# commonpb.ErrorCode (milvus-proto common.proto), written as numbers by encoding/json.
EC_UNEXPECTED_ERROR = 1
EC_COLLECTION_NOT_EXISTS = 4
EC_ILLEGAL_ARGUMENT = 5
EC_NOT_READY_SERVE = 56
# merr codes (milvus pkg/util/merr/errors.go).
CODE_SERVICE_NOT_READY = 1
CODE_COLLECTION_NOT_FOUND = 100
CODE_PARTITION_NOT_FOUND = 200
CODE_DATABASE_NOT_FOUND = 800
CODE_PARAMETER_INVALID = 1100
CODE_NEED_AUTHENTICATE = 1800
CODE_INCORRECT_PARAMETER_FORMAT = 1801
CODE_MISSING_REQUIRED_PARAMETERS = 1802
CODE_UNEXPECTED = 65535

GROWING, SEALED, FLUSHED = "Growing", "Sealed", "Flushed"
# commonpb.LoadState names, as the RESTful handler writes them (State.String()).
LOAD_NOT_EXIST, LOAD_NOT_LOAD = "LoadStateNotExist", "LoadStateNotLoad"
LOAD_LOADING, LOAD_LOADED = "LoadStateLoading", "LoadStateLoaded"
DEFAULT_PARTITION = "_default"
GIN_404 = "404 page not found"
DEFAULT_DOWN_REASON = "Not all components are healthy, 0/1"

V1 = "/api/v1"
ROUTE_HEALTH = f"{V1}/health"
ROUTE_COLLECTIONS = f"{V1}/collections"
ROUTE_PERSIST = f"{V1}/persist"
ROUTE_PERSIST_STATE = f"{V1}/persist/state"
ROUTE_HEALTHZ = "/healthz"
ROUTE_LIST_DATABASES = "/v2/vectordb/databases/list"
ROUTE_GET_STATS = "/v2/vectordb/collections/get_stats"
ROUTE_GET_LOAD_STATE = "/v2/vectordb/collections/get_load_state"

# Request structs: field name -> kind (see _convert).
_SHOW_COLLECTIONS = ("ShowCollectionsRequest", {"db_name": "string", "collection_names": "strings"})
_FLUSH = ("FlushRequest", {"db_name": "string", "collection_names": "strings"})
_FLUSH_STATE = (
    "GetFlushStateRequest",
    {"segmentIDs": "int64s", "flush_ts": "uint64", "db_name": "string", "collection_name": "string"},
)
# RESTful v2 request struct (httpserver.CollectionNameReq): JSON key -> kind.
_COLLECTION_NAME_REQ = (
    "CollectionNameReq",
    {"dbName": "string", "collectionName": "string", "partitionNames": "strings"},
)


@dataclass
class SimSegment:
    id: int
    rows: int
    state: str = GROWING
    polls: int = 0
    flush_at: float | None = None  # with flush_seconds: when (monotonic) this Sealed segment is Flushed


@dataclass
class SimCollection:
    id: int
    name: str
    db: str
    created_ts: int
    created_ms: int
    channel: str
    checkpoint_ts: int
    segments: dict[int, SimSegment] = field(default_factory=dict)
    # (flush_ts, segment ids returned by that persist) waiting for the checkpoint to move
    pending: list[tuple[int, frozenset[int]]] = field(default_factory=list)
    loaded: bool = True  # loaded (or loading) into the query nodes' memory
    loading_left: int = 0  # get_load_state answers still to say Loading
    loading_total: int = 0  # loading_left when the loading began (for the progress)


@dataclass
class RequestRecord:
    """One request as the simulator saw it. ``body`` is the parsed JSON (exact ints) or raw text."""

    time: float
    server: str  # "mgmt" (9091) or "rest" (19530)
    method: str
    path: str
    body: Any
    status: int
    response: Any
    authorization: str | None = None  # the request's Authorization header, as received


@dataclass
class _FailRule:
    route: str
    db: str | None
    collection: str | None
    reason: str
    count: int
    code: int
    error_code: int
    retriable: bool = False


class Hold:
    """Requests kept waiting by ``MilvusSim.hold`` until ``release()``.

    ``held``: how many are waiting right now; ``caught``: how many it caught in all (at most
    ``count``). After ``release()`` the waiting ones are served and it catches no more."""

    def __init__(self, method: str, pattern: re.Pattern[str], server: str | None, count: int) -> None:
        self.method = method
        self.pattern = pattern
        self.server = server
        self.remaining = count
        self.caught = 0
        self.released = False
        self._held = 0
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def held(self) -> int:
        with self._lock:
            return self._held

    def _catch(self, server: str, method: str, path: str) -> asyncio.Future[None] | None:
        with self._lock:
            if self.released or self.remaining <= 0:
                return None
            if self.method not in ("*", method) or (self.server is not None and self.server != server):
                return None
            if self.pattern.search(path) is None:
                return None
            self.remaining -= 1
            self.caught += 1
            self._held += 1
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiters.append((loop, fut))
            return fut

    def _done(self) -> None:
        with self._lock:
            self._held -= 1

    def release(self) -> None:
        """Serve the waiting requests (normally) and catch no more."""
        with self._lock:
            self.released = True
            waiters, self._waiters = self._waiters, []
        for loop, fut in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(_resolve, fut)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


@dataclass
class _Reply:
    status: int
    payload: Any = None
    text: str | None = None


class _BindError(Exception):
    """A body gin/encoding/json would refuse (HTTP 400)."""


def _go_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _mismatch(value: Any, where: str, go_type: str) -> _BindError:
    kind = _go_kind(value)
    shown = f"number {value!r}" if kind == "number" else kind
    return _BindError(f"json: cannot unmarshal {shown} into Go struct field {where} of type {go_type}")


def _to_int(value: Any, where: str, go_type: str, low: int, high: int) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _mismatch(value, where, go_type)
    return value


def _to_str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _mismatch(value, where, "string")
    return value


def _to_list(value: Any, where: str, go_type: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise _mismatch(value, where, go_type)
    return value


def _convert(value: Any, kind: str, where: str) -> Any:
    if kind == "string":
        return _to_str(value, where)
    if kind == "uint64":
        return _to_int(value, where, "uint64", 0, UINT64_MAX)
    if kind == "int64s":
        return [_to_int(v, where, "int64", -INT64_MAX - 1, INT64_MAX) for v in _to_list(value, where, "[]int64")]
    return [_to_str(v, where) for v in _to_list(value, where, "[]string")]


def bind_request(raw: bytes, struct: tuple[str, dict[str, str]]) -> dict[str, Any]:
    """Bind a JSON body the way gin's JSON binding fills a Go protobuf struct; raise _BindError."""
    go_type, fields = struct
    if not raw.strip():
        return {}  # io.EOF: shouldBind treats an empty body as an empty request
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _BindError(f"invalid character in JSON body: {exc}") from exc
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise _BindError(f"json: cannot unmarshal {_go_kind(doc)} into Go value of type milvuspb.{go_type}")
    out: dict[str, Any] = {}
    folded = {name.lower(): name for name in fields}
    for key, value in doc.items():  # in order: a later key for the same field wins, as in Go
        name = key if key in fields else folded.get(key.lower())
        if name is not None:
            out[name] = _convert(value, fields[name], f"{go_type}.{name}")
    return out


def status(code: int, error_code: int, reason: str, *, retriable: bool = False) -> dict[str, Any]:
    """A non-empty commonpb.Status as merr.Status builds it (omitempty: no false ``retriable``)."""
    out: dict[str, Any] = {"error_code": error_code, "reason": reason, "code": code, "detail": reason}
    if retriable:
        out["retriable"] = True
    return out


def _normalize_route(route: str) -> str:
    if route.startswith("/"):
        return route
    if route == "healthz":
        return ROUTE_HEALTHZ
    if route in ("get_stats", "get_load_state"):
        return f"/v2/vectordb/collections/{route}"
    if route.startswith("v2/"):
        return "/" + route
    return f"{V1}/{route}"


def _parse_for_log(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


class MilvusSim:
    """One Milvus instance: its data, and its two HTTP ports when started."""

    def __init__(
        self,
        *,
        flush_polls: int = 2,
        version: str = "v2.5.10",
        token: str | None = None,
        mgmt_auth: bool = True,
        segment_capacity: int = 100_000,
        load_polls: int = 2,
        flush_seconds: float | Callable[[str, str], float] | None = None,
    ) -> None:
        self.flush_polls = flush_polls
        self.flush_seconds = flush_seconds  # None: flushed by state queries (flush_polls); else timed
        self.load_polls = load_polls  # get_load_state answers saying Loading after a restart
        self.version = version
        self.token = token
        self.mgmt_auth = mgmt_auth
        self.segment_capacity = segment_capacity
        self.requests: list[RequestRecord] = []
        self._lock = threading.RLock()
        self._next_id = FIRST_ID
        self._last_ts = 0
        self._dbs: dict[str, dict[str, SimCollection]] = {"default": {}}
        self._segments: dict[int, SimCollection] = {}  # segment id -> owning collection
        self._fail_rules: list[_FailRule] = []
        self._holds: list[Hold] = []
        self._down = False
        self._down_reason = DEFAULT_DOWN_REASON
        self._v1_removed = False
        self._mgmt: ThreadedServer | None = None
        self._rest: ThreadedServer | None = None
        self._ports = (0, 0)
        self._was_stopped = False  # the next start() is a restart: loaded collections reload

    # ------------------------------------------------------------------ allocation

    def _alloc_id(self) -> int:
        value = self._next_id
        self._next_id += ID_STEP
        if value % 64 == 0:  # exactly representable as a double: skip it
            return self._alloc_id()
        return value

    def _alloc_ts(self) -> int:
        """A hybrid timestamp: physical milliseconds << 18 | logical, strictly increasing, never a
        value a double holds exactly (the logical part is never a multiple of 64)."""
        ts = max((int(time.time() * 1000) << 18) | 1, self._last_ts + 1)
        if ts % 64 == 0:
            ts += 1
        self._last_ts = ts
        return ts

    # ------------------------------------------------------------------ data, driven by tests

    def add_database(self, name: str) -> None:
        with self._lock:
            if name in self._dbs:
                raise ValueError(f"database {name!r} already exists")
            self._dbs[name] = {}

    def add_collection(
        self,
        db: str,
        name: str,
        *,
        segments: int = 2,
        rows_per_segment: int = 1000,
        flushed_segments: int = 0,
        loaded: bool = True,
    ) -> int:
        """Create a collection with ``segments`` growing (unflushed) and ``flushed_segments`` flushed
        segments, loaded unless ``loaded=False``; return its ID."""
        with self._lock:
            colls = self._database(db)
            if name in colls:
                raise ValueError(f"collection {db}.{name} already exists")
            cid = self._alloc_id()
            ts = self._alloc_ts()
            coll = SimCollection(
                id=cid,
                name=name,
                db=db,
                created_ts=ts,
                created_ms=ts >> 18,
                channel=f"by-dev-rootcoord-dml_{cid % 16}_{cid}v0",
                checkpoint_ts=ts,
                loaded=loaded,
            )
            colls[name] = coll
            for i in range(segments + flushed_segments):
                self._new_segment(coll, rows_per_segment, FLUSHED if i >= segments else GROWING)
            return cid

    def insert(self, db: str, collection: str, rows: int) -> list[int]:
        """Write ``rows`` rows: grow the collection's growing segment(s), opening new ones as they
        fill; return the IDs of the segments written to."""
        with self._lock:
            coll = self._collection(db, collection)
            touched: list[int] = []
            while rows > 0:
                seg = next(
                    (s for s in coll.segments.values() if s.state == GROWING and s.rows < self.segment_capacity),
                    None,
                )
                if seg is None:
                    seg = self._new_segment(coll, 0, GROWING)
                take = min(rows, self.segment_capacity - seg.rows)
                seg.rows += take
                rows -= take
                touched.append(seg.id)
            return touched

    def _new_segment(self, coll: SimCollection, rows: int, state: str) -> SimSegment:
        seg = SimSegment(id=self._alloc_id(), rows=rows, state=state)
        coll.segments[seg.id] = seg
        self._segments[seg.id] = coll
        return seg

    def _database(self, db: str) -> dict[str, SimCollection]:
        if db not in self._dbs:
            raise KeyError(f"no database {db!r}")
        return self._dbs[db]

    def _collection(self, db: str, name: str) -> SimCollection:
        colls = self._database(db)
        if name not in colls:
            raise KeyError(f"no collection {db}.{name}")
        return colls[name]

    # ------------------------------------------------------------------ inspection

    def databases(self) -> list[str]:
        with self._lock:
            return list(self._dbs)

    def collection_id(self, db: str, collection: str) -> int:
        with self._lock:
            return self._collection(db, collection).id

    def segments(self, db: str, collection: str) -> dict[int, str]:
        """Segment ID -> state (Growing, Sealed, Flushed)."""
        with self._lock:
            return {s.id: s.state for s in self._collection(db, collection).segments.values()}

    def unflushed(self) -> list[tuple[str, str, int]]:
        """(db, collection, segment id) of every segment whose data is not yet in object storage."""
        with self._lock:
            return [
                (db, name, seg.id)
                for db, colls in self._dbs.items()
                for name, coll in colls.items()
                for seg in coll.segments.values()
                if seg.state != FLUSHED
            ]

    def flushed_segments(self, db: str, collection: str) -> set[int]:
        with self._lock:
            return {s.id for s in self._collection(db, collection).segments.values() if s.state == FLUSHED}

    def drop_unflushed(self) -> list[tuple[str, str, int]]:
        """Lose what only Pulsar held (Pulsar V2 deleted): remove every unflushed segment; return them."""
        with self._lock:
            lost = self.unflushed()
            for db, name, sid in lost:
                del self._dbs[db][name].segments[sid]
                del self._segments[sid]
            return lost

    def lose_rows(self, db: str, collection: str, n: int) -> list[int]:
        """Lose ``n`` rows of flushed data (newest flushed segments first), as a broken object store
        would; return the IDs of the segments that lost rows. ValueError if fewer are flushed."""
        with self._lock:
            coll = self._collection(db, collection)
            flushed = [s for s in coll.segments.values() if s.state == FLUSHED]
            if n < 0 or n > sum(s.rows for s in flushed):
                raise ValueError(f"cannot lose {n} rows: {db}.{collection} has fewer flushed rows")
            touched: list[int] = []
            for seg in reversed(flushed):
                if n == 0:
                    break
                take = min(n, seg.rows)
                if take:
                    seg.rows -= take
                    n -= take
                    touched.append(seg.id)
            return touched

    def drop_collection(self, db: str, collection: str) -> None:
        """The collection vanishes (dropped, or its metadata lost) with all its segments."""
        with self._lock:
            coll = self._collection(db, collection)
            for sid in coll.segments:
                self._segments.pop(sid, None)
            del self._dbs[db][collection]

    def row_count(self, db: str, collection: str) -> int:
        """What get_stats answers: the rows of the Sealed and Flushed segments."""
        with self._lock:
            return self._row_count(self._collection(db, collection))

    def total_rows(self, db: str, collection: str) -> int:
        """Every row written and not lost, Growing segments included."""
        with self._lock:
            return sum(s.rows for s in self._collection(db, collection).segments.values())

    @staticmethod
    def _row_count(coll: SimCollection) -> int:
        return sum(s.rows for s in coll.segments.values() if s.state != GROWING)

    # ------------------------------------------------------------------ load state, driven by tests

    def load_state(self, db: str, collection: str) -> str:
        """``LoadStateNotLoad``, ``LoadStateLoading`` or ``LoadStateLoaded`` (does not count as a poll)."""
        with self._lock:
            coll = self._collection(db, collection)
            if not coll.loaded:
                return LOAD_NOT_LOAD
            return LOAD_LOADING if coll.loading_left > 0 else LOAD_LOADED

    def set_loaded(self, db: str, collection: str, loaded: bool) -> None:
        """Loaded (at once, no Loading phase) or released."""
        with self._lock:
            coll = self._collection(db, collection)
            coll.loaded = loaded
            coll.loading_left = coll.loading_total = 0

    def start_loading(self, db: str | None = None, collection: str | None = None, *, polls: int | None = None) -> None:
        """Put the loaded collections (of ``db``, or just ``db.collection``, which becomes loaded) in
        LoadStateLoading for the next ``polls`` (default ``load_polls``) get_load_state answers each,
        as query nodes reloading them after a restart. ``start()`` after ``stop()`` calls this."""
        with self._lock:
            polls = self.load_polls if polls is None else polls
            for coll in self._select(db, collection):
                if collection is not None:
                    coll.loaded = True
                if coll.loaded:
                    coll.loading_left = coll.loading_total = polls

    def finish_loading(self, db: str | None = None, collection: str | None = None) -> None:
        """End the Loading phase of the matching collections now (they answer Loaded)."""
        with self._lock:
            for coll in self._select(db, collection):
                coll.loading_left = coll.loading_total = 0

    def restart(self) -> MilvusSim:
        """Milvus' pods went away and came back: ``stop()`` then ``start()`` (same ports, same data;
        loaded collections are Loading again)."""
        self.stop()
        return self.start()

    def _select(self, db: str | None, collection: str | None) -> list[SimCollection]:
        if collection is not None:
            if db is None:
                raise ValueError("a collection needs its database")
            return [self._collection(db, collection)]
        if db is not None:
            return list(self._database(db).values())
        return [c for colls in self._dbs.values() for c in colls.values()]

    def calls(self, path: str) -> list[RequestRecord]:
        """The recorded requests to ``path`` (e.g. ``/api/v1/persist/state``)."""
        return [r for r in list(self.requests) if r.path == _normalize_route(path)]

    # ------------------------------------------------------------------ fault injection

    def set_down(self, down: bool, *, reason: str = DEFAULT_DOWN_REASON) -> None:
        """A running but unhealthy Milvus: /healthz 500 ``reason``; API calls answer a not-ready status."""
        with self._lock:
            self._down = down
            self._down_reason = reason

    def fail_next(
        self,
        route: str,
        *,
        db: str | None = None,
        collection: str | None = None,
        reason: str = "injected failure",
        count: int = 1,
        code: int = CODE_UNEXPECTED,
        error_code: int = EC_UNEXPECTED_ERROR,
        retriable: bool = False,
    ) -> None:
        """The next ``count`` matching calls fail: HTTP 200 with a non-empty status (``/healthz``:
        500 with ``reason``; RESTful: ``{"code":code,"message":reason}``). ``route`` is a path or a
        short name (``persist``, ``persist/state``, ``collections``, ``healthz``, ``get_stats``,
        ``get_load_state``, ``v2/vectordb/databases/list``); ``db``/``collection`` narrow the match. ``retriable``
        sets the status's ``retriable`` (as merr does for e.g. service-not-ready) on the
        ``/api/v1`` routes that answer a status."""
        rule = _FailRule(_normalize_route(route), db, collection, reason, count, code, error_code, retriable)
        with self._lock:
            self._fail_rules.append(rule)

    def hold(self, path_regex: str, *, method: str = "*", server: str | None = None, count: int = 1) -> Hold:
        """Keep the next ``count`` requests whose path matches ``path_regex`` (re.search; method
        ``'*'`` = any, ``server`` "mgmt"/"rest"/None = either) waiting, before any work and before
        they are logged, until ``release()`` on the returned ``Hold``."""
        hold = Hold(method.upper(), re.compile(path_regex), server, count)
        with self._lock:
            self._holds.append(hold)
        return hold

    def release_holds(self) -> None:
        """Release every hold (``stop()`` does this first)."""
        with self._lock:
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release()

    def _caught(self, server: str, request: web.Request) -> tuple[Hold, asyncio.Future[None]] | None:
        with self._lock:
            holds = list(self._holds)
        for hold in holds:
            fut = hold._catch(server, request.method, request.path)
            if fut is not None:
                return hold, fut
        return None

    def remove_v1_routes(self, removed: bool = True) -> None:
        """Behave like Milvus 2.6: /api/v1/* answer gin's plain 404."""
        with self._lock:
            self._v1_removed = removed

    def _take_failure(self, path: str, req: dict[str, Any]) -> _FailRule | None:
        db = req.get("db_name") or "default"
        names = set(req.get("collection_names") or []) | {req.get("collection_name") or ""}
        for rule in self._fail_rules:
            if rule.route != path or (rule.db is not None and rule.db != db):
                continue
            if rule.collection is not None and rule.collection not in names:
                continue
            rule.count -= 1
            if rule.count <= 0:
                self._fail_rules.remove(rule)
            return rule
        return None

    # ------------------------------------------------------------------ servers

    @property
    def mgmt_url(self) -> str:
        if self._mgmt is None:
            raise RuntimeError("MilvusSim not started")
        return self._mgmt.url

    @property
    def rest_url(self) -> str:
        if self._rest is None:
            raise RuntimeError("MilvusSim not started")
        return self._rest.url

    def start(self) -> MilvusSim:
        """Serve both ports (again on the previous ports after a stop())."""
        if self._mgmt is not None:
            return self
        if self._was_stopped:  # a restart: the query nodes load the loaded collections again
            self._was_stopped = False
            self.start_loading()
        self._mgmt = ThreadedServer(self._mgmt_app(), port=self._ports[0]).start()
        self._rest = ThreadedServer(self._rest_app(), port=self._ports[1]).start()
        self._ports = (self._mgmt.port, self._rest.port)
        return self

    def stop(self) -> None:
        """Stop serving (the release is uninstalled); the data stays. Held requests are released."""
        self.release_holds()
        for server in (self._mgmt, self._rest):
            if server is not None:
                server.stop()
        if self._mgmt is not None:
            self._was_stopped = True
        self._mgmt = self._rest = None

    def __enter__(self) -> MilvusSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _mgmt_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gin_not_found("mgmt")])
        routes: list[tuple[str, str, Callable[[web.Request, bytes], _Reply]]] = [
            ("GET", ROUTE_HEALTH, self._h_health),
            ("GET", ROUTE_COLLECTIONS, self._h_collections),
            ("POST", ROUTE_PERSIST, self._h_persist),
            ("GET", ROUTE_PERSIST_STATE, self._h_persist_state),
            ("GET", ROUTE_HEALTHZ, self._h_healthz),
        ]
        for method, path, fn in routes:
            app.router.add_route(method, path, self._wrap("mgmt", fn))
        return app

    def _rest_app(self) -> web.Application:
        app = web.Application(middlewares=[self._gin_not_found("rest")])
        app.router.add_route("POST", ROUTE_LIST_DATABASES, self._wrap("rest", self._h_list_databases))
        app.router.add_route("POST", ROUTE_GET_STATS, self._wrap("rest", self._h_get_stats))
        app.router.add_route("POST", ROUTE_GET_LOAD_STATE, self._wrap("rest", self._h_get_load_state))
        return app

    def _unauthenticated(self, server: str, request: web.Request) -> _Reply | None:
        """The proxy's ``authenticate`` middleware: HTTP 401 code 1800 without the right token."""
        if self.token is None or (server == "mgmt" and (not self.mgmt_auth or request.path == ROUTE_HEALTHZ)):
            return None
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return None
        return _Reply(401, {"code": CODE_NEED_AUTHENTICATE, "message": "user hasn't authenticated"})

    def _wrap(self, server: str, fn: Callable[[web.Request, bytes], _Reply]) -> Handler:
        async def handler(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            await self._wait_if_held(server, request)
            with self._lock:
                reply = self._unauthenticated(server, request) or fn(request, raw)
            return self._respond(server, request, raw, reply)

        return handler

    async def _wait_if_held(self, server: str, request: web.Request) -> None:
        caught = self._caught(server, request)
        if caught is None:
            return
        hold, fut = caught
        try:
            await fut
        finally:
            hold._done()

    def _gin_not_found(self, server: str) -> Middleware:
        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            try:
                return await handler(request)
            except web.HTTPException as exc:
                if exc.status not in (404, 405):  # gin: no HandleMethodNotAllowed, both are 404
                    raise
                raw = await request.read()
                return self._respond(server, request, raw, _Reply(404, text=GIN_404))

        return middleware

    def _respond(self, server: str, request: web.Request, raw: bytes, reply: _Reply) -> web.Response:
        if reply.text is not None:
            resp = web.Response(status=reply.status, text=reply.text, content_type="text/plain")
            logged: Any = reply.text
        else:
            body = json.dumps(reply.payload, separators=(",", ":")).encode()
            resp = web.Response(status=reply.status, body=body, content_type="application/json")
            logged = reply.payload
        self.requests.append(
            RequestRecord(
                time.monotonic(),
                server,
                request.method,
                request.path,
                _parse_for_log(raw),
                reply.status,
                logged,
                request.headers.get("Authorization"),
            )
        )
        return resp

    # ------------------------------------------------------------------ 9091 handlers

    def _not_ready(self) -> dict[str, Any]:
        reason = "service not ready[proxy=1][state=Abnormal]"
        return status(CODE_SERVICE_NOT_READY, EC_NOT_READY_SERVE, reason, retriable=True)

    def _v1(
        self,
        path: str,
        raw: bytes,
        struct: tuple[str, dict[str, str]],
        work: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> _Reply:
        """wrapHandler + shouldBind + the proxy's health check, around one route's work."""
        if self._v1_removed:
            return _Reply(404, text=GIN_404)
        try:
            req = bind_request(raw, struct)
        except _BindError as exc:
            reason = f"bad request: parse body failed: {exc}"
            return _Reply(400, {"error_code": EC_ILLEGAL_ARGUMENT, "reason": reason})
        rule = self._take_failure(path, req)
        if rule is not None:
            return _Reply(200, {"status": status(rule.code, rule.error_code, rule.reason, retriable=rule.retriable)})
        if self._down:
            return _Reply(200, {"status": self._not_ready()})
        return _Reply(200, work(req))

    def _h_health(self, request: web.Request, raw: bytes) -> _Reply:
        if self._v1_removed:
            return _Reply(404, text=GIN_404)
        rule = self._take_failure(ROUTE_HEALTH, {})
        if rule is not None:  # wrapHandler's error branch
            return _Reply(500, {"error_code": rule.error_code, "reason": rule.reason})
        return _Reply(200, {"status": "ok"})

    def _h_healthz(self, request: web.Request, raw: bytes) -> _Reply:
        rule = self._take_failure(ROUTE_HEALTHZ, {})
        state = rule.reason if rule else (self._down_reason if self._down else "OK")
        code = 200 if state == "OK" else 500
        if request.headers.get("Content-Type") == "application/json":
            detail = [{"name": "proxy", "code": 1 if code == 200 else 2}]
            return _Reply(code, {"state": state, "detail": detail})
        return _Reply(code, text=state)

    def _h_collections(self, request: web.Request, raw: bytes) -> _Reply:
        return self._v1(ROUTE_COLLECTIONS, raw, _SHOW_COLLECTIONS, self._show_collections)

    def _h_persist(self, request: web.Request, raw: bytes) -> _Reply:
        return self._v1(ROUTE_PERSIST, raw, _FLUSH, self._persist)

    def _h_persist_state(self, request: web.Request, raw: bytes) -> _Reply:
        return self._v1(ROUTE_PERSIST_STATE, raw, _FLUSH_STATE, self._flush_state)

    @staticmethod
    def _db_not_found(db: str) -> dict[str, Any]:
        return {"status": status(CODE_DATABASE_NOT_FOUND, EC_UNEXPECTED_ERROR, f"database not found[database={db}]")}

    @staticmethod
    def _coll_not_found(db: str, name: str) -> dict[str, Any]:
        reason = f"collection not found[database={db}][collection={name}]"
        return {"status": status(CODE_COLLECTION_NOT_FOUND, EC_COLLECTION_NOT_EXISTS, reason)}

    def _show_collections(self, req: dict[str, Any]) -> dict[str, Any]:
        db = req.get("db_name") or "default"
        if db not in self._dbs:
            return self._db_not_found(db)
        colls = list(self._dbs[db].values())
        out: dict[str, Any] = {"status": {}}
        if colls:  # omitempty: an empty database has none of these keys
            out["collection_names"] = [c.name for c in colls]
            out["collection_ids"] = [c.id for c in colls]
            out["created_timestamps"] = [c.created_ts for c in colls]
            out["created_utc_timestamps"] = [c.created_ms for c in colls]
        return out

    def _seal_all(self, coll: SimCollection) -> list[int]:
        """SealAllSegments: the already Sealed ones plus the Growing ones, now Sealed."""
        self._catch_up(coll)
        sealed = [s.id for s in coll.segments.values() if s.state == SEALED]
        for seg in coll.segments.values():
            if seg.state == GROWING:
                seg.state = SEALED
                sealed.append(seg.id)
        if self.flush_seconds is not None:
            delay = self.flush_seconds(coll.db, coll.name) if callable(self.flush_seconds) else self.flush_seconds
            due = time.monotonic() + delay
            for sid in sealed:
                seg = coll.segments[sid]
                seg.flush_at = due if seg.flush_at is None else seg.flush_at
        return sealed

    def _catch_up(self, coll: SimCollection) -> None:
        """Timed flush (``flush_seconds``): every Sealed segment whose time has come is Flushed now."""
        if self.flush_seconds is None:
            return
        clock = time.monotonic()
        changed = False
        for seg in coll.segments.values():
            if seg.state == SEALED and seg.flush_at is not None and seg.flush_at <= clock:
                seg.state = FLUSHED
                changed = True
        if changed:
            self._advance_checkpoint(coll)

    def flush_time(self, segment_id: int) -> float | None:
        """With ``flush_seconds``: when (``time.monotonic()``) the segment is (or was) Flushed."""
        with self._lock:
            owner = self._segments.get(segment_id)
            return owner.segments[segment_id].flush_at if owner is not None else None

    def _persist(self, req: dict[str, Any]) -> dict[str, Any]:
        db = req.get("db_name") or "default"
        if db not in self._dbs:
            return self._db_not_found(db)
        maps: dict[str, dict[str, Any]] = {
            "coll_segIDs": {},
            "flush_coll_segIDs": {},
            "coll_seal_times": {},
            "coll_flush_ts": {},
            "channel_cps": {},
        }
        for name in req.get("collection_names", []):
            coll = self._dbs[db].get(name)
            if coll is None:  # the earlier collections stay sealed, as in the proxy's flush task
                return self._coll_not_found(db, name)
            self._persist_one(coll, maps)
        out: dict[str, Any] = {"status": {}}
        if req.get("db_name"):
            out["db_name"] = req["db_name"]
        out.update({key: value for key, value in maps.items() if value})  # omitempty maps
        return out

    def _persist_one(self, coll: SimCollection, maps: dict[str, dict[str, Any]]) -> None:
        sealed = self._seal_all(coll)
        flushed = [s.id for s in coll.segments.values() if s.state == FLUSHED]
        flush_ts = self._alloc_ts()
        coll.pending.append((flush_ts, frozenset(sealed)))
        self._advance_checkpoint(coll)
        maps["coll_segIDs"][coll.name] = {"data": sealed} if sealed else {}
        maps["flush_coll_segIDs"][coll.name] = {"data": flushed} if flushed else {}
        maps["coll_seal_times"][coll.name] = int(time.time())
        maps["coll_flush_ts"][coll.name] = flush_ts
        msg_id = base64.b64encode(coll.checkpoint_ts.to_bytes(8, "little")).decode()
        maps["channel_cps"][coll.channel] = {
            "channel_name": coll.channel,
            "msgID": msg_id,
            "timestamp": coll.checkpoint_ts,
        }

    def _advance_checkpoint(self, coll: SimCollection) -> None:
        """Move the channel checkpoint past every persist whose segments are all flushed."""
        still: list[tuple[int, frozenset[int]]] = []
        for flush_ts, ids in coll.pending:
            done = all(i not in coll.segments or coll.segments[i].state == FLUSHED for i in ids)
            if done:
                coll.checkpoint_ts = max(coll.checkpoint_ts, flush_ts)
            else:
                still.append((flush_ts, ids))
        coll.pending = still

    def _poll_segments(self, ids: list[int]) -> None:
        """Count one state query for each known Sealed segment; flush those polled enough times."""
        touched: dict[int, SimCollection] = {}
        for sid in dict.fromkeys(ids):
            owner = self._segments.get(sid)
            if owner is None:
                continue
            seg = owner.segments[sid]
            if seg.state == SEALED:
                seg.polls += 1
                if seg.polls >= self.flush_polls:
                    seg.state = FLUSHED
                    touched[owner.id] = owner
        for owner in touched.values():
            self._advance_checkpoint(owner)

    def _flush_state(self, req: dict[str, Any]) -> dict[str, Any]:
        name = req.get("collection_name", "")
        db = req.get("db_name") or "default"
        if not name:
            reason = "collection name should be not empty: invalid parameter"
            return {"status": status(CODE_PARAMETER_INVALID, EC_ILLEGAL_ARGUMENT, reason)}
        if db not in self._dbs:
            return self._db_not_found(db)
        coll = self._dbs[db].get(name)
        if coll is None:
            return self._coll_not_found(db, name)
        ids: list[int] = req.get("segmentIDs", [])
        if self.flush_seconds is None:
            self._poll_segments(ids)
        else:
            self._catch_up(coll)
        for sid in ids:
            owner = self._segments.get(sid)
            if owner is not None and owner.segments[sid].state != FLUSHED:
                return {"status": {}}  # flushed=false is omitted
        if coll.checkpoint_ts < req.get("flush_ts", 0):
            return {"status": {}}
        return {"status": {}, "flushed": True}

    # ------------------------------------------------------------------ 19530 handler

    def _h_list_databases(self, request: web.Request, raw: bytes) -> _Reply:
        if raw:
            try:
                doc = json.loads(raw)
                if not isinstance(doc, dict):
                    raise ValueError(f"cannot unmarshal {_go_kind(doc)} into Go value")
            except (ValueError, UnicodeDecodeError) as exc:
                message = f"can only accept json format request, error: {exc}"
                return _Reply(200, {"code": CODE_INCORRECT_PARAMETER_FORMAT, "message": message})
        rule = self._take_failure(ROUTE_LIST_DATABASES, {})
        if rule is not None:
            return _Reply(200, {"code": rule.code, "message": rule.reason})
        if self._down:
            return _Reply(200, {"code": CODE_SERVICE_NOT_READY, "message": self._not_ready()["reason"]})
        return _Reply(200, {"code": 0, "data": list(self._dbs)})

    @staticmethod
    def _bind_collection_req(raw: bytes) -> dict[str, Any] | _Reply:
        """wrapperPost: gin's ShouldBindBodyWith into CollectionNameReq, then its ``binding:"required"``."""
        go_type, fields = _COLLECTION_NAME_REQ
        if not raw.strip():  # io.EOF
            message = "can only accept json format request, the request body should be nil, however {} is valid"
            return _Reply(200, {"code": CODE_INCORRECT_PARAMETER_FORMAT, "message": message})
        try:
            try:
                doc = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                raise _BindError(f"invalid character in JSON body: {exc}") from exc
            if doc is not None and not isinstance(doc, dict):
                raise _BindError(f"json: cannot unmarshal {_go_kind(doc)} into Go value of type httpserver.{go_type}")
            req: dict[str, Any] = {}
            folded = {name.lower(): name for name in fields}
            for key, value in (doc or {}).items():  # keys match case-insensitively, a later one wins
                name = key if key in fields else folded.get(key.lower())
                if name is not None:
                    req[name] = _convert(value, fields[name], f"{go_type}.{name}")
        except _BindError as exc:
            message = f"can only accept json format request, error: {exc}"
            return _Reply(200, {"code": CODE_INCORRECT_PARAMETER_FORMAT, "message": message})
        if not req.get("collectionName"):
            message = (
                "missing required parameters, error: Key: 'CollectionNameReq.CollectionName' "
                "Error:Field validation for 'CollectionName' failed on the 'required' tag"
            )
            return _Reply(200, {"code": CODE_MISSING_REQUIRED_PARAMETERS, "message": message})
        return req

    def _rest_collection_call(self, route: str, raw: bytes) -> tuple[str, str, dict[str, Any]] | _Reply:
        """Bind, then the injected failure, then the proxy's health check (as databases/list)."""
        req = self._bind_collection_req(raw)
        if isinstance(req, _Reply):
            return req
        db, name = req.get("dbName") or "default", req["collectionName"]
        rule = self._take_failure(route, {"db_name": db, "collection_name": name})
        if rule is not None:
            return _Reply(200, {"code": rule.code, "message": rule.reason})
        if self._down:
            return _Reply(200, {"code": CODE_SERVICE_NOT_READY, "message": self._not_ready()["reason"]})
        return db, name, req

    def _h_get_stats(self, request: web.Request, raw: bytes) -> _Reply:
        call = self._rest_collection_call(ROUTE_GET_STATS, raw)
        if isinstance(call, _Reply):
            return call
        db, name, _ = call
        coll = self._dbs.get(db, {}).get(name)
        if coll is None:  # 2.5 rootcoord: the name is looked up before the database
            reason = f"collection not found[database={db}][collection={name}]"
            return _Reply(200, {"code": CODE_COLLECTION_NOT_FOUND, "message": reason})
        return _Reply(200, {"code": 0, "data": {"rowCount": self._row_count(coll)}})

    def _h_get_load_state(self, request: web.Request, raw: bytes) -> _Reply:
        call = self._rest_collection_call(ROUTE_GET_LOAD_STATE, raw)
        if isinstance(call, _Reply):
            return call
        db, name, req = call
        coll = self._dbs.get(db, {}).get(name)
        if coll is None:  # GetLoadState answers LoadStateNotExist; the handler wraps it (no database)
            reason = f"collection not found[collection={name}]"
            return _Reply(200, {"code": CODE_COLLECTION_NOT_FOUND, "message": reason})
        unknown = [p for p in req.get("partitionNames", []) if p != DEFAULT_PARTITION]
        if unknown:
            reason = f"partition not found[partition={unknown[0]}]"
            return _Reply(200, {"code": CODE_PARTITION_NOT_FOUND, "message": reason})
        if not coll.loaded:  # no loadProgress, no message
            return _Reply(200, {"code": 0, "data": {"loadState": LOAD_NOT_LOAD}})
        if coll.loading_left > 0:
            progress = 100 * (coll.loading_total - coll.loading_left) // coll.loading_total
            coll.loading_left -= 1
            state = LOAD_LOADING
        else:
            progress, state = 100, LOAD_LOADED
        return _Reply(200, {"code": 0, "data": {"loadProgress": progress, "loadState": state}, "message": ""})
