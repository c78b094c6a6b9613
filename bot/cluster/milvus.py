"""The bot's client for Milvus 2.5's HTTP APIs: what the flush step of the upgrade needs.

Why it exists: before Pulsar V2 is deleted, everything it still holds must be persisted to object
storage. This module does that the way pymilvus does (``_wait_for_flushed``), not the way the guide
does (upgrade-facts.md, "Where the guide is wrong"): for each database and each collection,
persist, then poll the flush state with that collection's own ``coll_segIDs``, ``coll_flush_ts``,
``db_name`` and ``collection_name`` until ``flushed`` is true.

What it guarantees:
- JSON is parsed from the raw bytes with ``json.loads`` (exact ints) and every segment ID and
  timestamp is checked to be an exact integer; IDs and ``flush_ts`` (> 2**53) are sent back exactly.
- GET requests with a JSON body are sent as real GETs with a body, as the proxy expects.
- omitempty is understood: ``{}`` for a collection means no segments, an absent ``flushed`` means
  false, absent lists mean empty.
- Every failure is an exception naming the route and the server's reason; nothing is swallowed.
  The Milvus token is never part of a message.
- The token (``Authorization: Bearer <token>``) goes with every ``/api/v1`` request on port 9091
  and every RESTful request on port 19530: Milvus 2.5/2.6 releases from early 2026 require it on
  9091 too when ``authorizationEnabled``. ``/healthz`` is public and gets none. Which host may see
  which credentials is the ``http`` client's business (``Kube.http_client`` replaces
  ``Authorization`` with the Kubernetes credentials on requests to the API server's service
  proxy, so through the proxy the Milvus token is not sent at all).

Exceptions (all carry ``route``, ``reason``, ``http_status``, ``code``, ``error_code``, ``retriable``)::

    MilvusHttpError         a call failed: non-empty status, HTTP error status, or a malformed answer
     +-- MilvusRoutesGone   /api/v1 answers gin's 404: the flush routes the procedure needs are missing
     +-- MilvusAuthError    Milvus refused the request: token missing or wrong (HTTP 401 / code 1800)
     +-- MilvusUnreachable  no HTTP answer at all (connect error, timeout); worth retrying
     +-- FlushTimeout       segments still unflushed at the deadline; ``unflushed`` names them
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx

from bot import audit, metrics
from bot.cluster.throttle import THROTTLED_TRIES, resend_after

log = logging.getLogger(__name__)

V1_HEALTH = "/api/v1/health"
V1_COLLECTIONS = "/api/v1/collections"
V1_PERSIST = "/api/v1/persist"
V1_PERSIST_STATE = "/api/v1/persist/state"
HEALTHZ = "/healthz"
V2_LIST_DATABASES = "/v2/vectordb/databases/list"
V2_GET_STATS = "/v2/vectordb/collections/get_stats"
V2_GET_LOAD_STATE = "/v2/vectordb/collections/get_load_state"
LOADED, LOADING = "LoadStateLoaded", "LoadStateLoading"

CODE_NEED_AUTHENTICATE = 1800
CODE_SERVICE_NOT_READY = 1  # merr.ErrServiceNotReady: passing (a component restarting)
MGMT_PORT = 9091
# The flush: state queries at once, and the rounds' spacing after the first FLUSH_FAST_SECONDS.
FLUSH_IN_FLIGHT = 8
FLUSH_FAST_SECONDS = 10.0
FLUSH_SLOW_INTERVAL = 1.0
REST_PORT = 19530


class MilvusHttpError(Exception):
    """A Milvus HTTP call failed; the message names the route and the server's reason."""

    def __init__(
        self,
        route: str,
        reason: str,
        *,
        http_status: int | None = None,
        code: int | None = None,
        error_code: Any = None,
        retriable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        metrics.milvus_error(retriable)  # every failed Milvus call is made into one of these
        self.route = route
        self.retry_after = retry_after
        self.reason = reason
        self.http_status = http_status
        self.code = code
        self.error_code = error_code
        self.retriable = retriable
        extra = [f"HTTP {http_status}"] if http_status not in (None, 200) else []
        extra += [f"code {code}"] if code else []
        suffix = f" ({', '.join(extra)})" if extra else ""
        super().__init__(f"Milvus {route}: {reason}{suffix}")


class MilvusRoutesGone(MilvusHttpError):
    """The /api/v1 routes answer 404: the flush cannot be done through this port.

    Not a sign of Milvus 2.6 (2.6 still serves them): the version is judged from the chart,
    the image tag or the Milvus resource, never from this answer."""


class MilvusAuthError(MilvusHttpError):
    """Milvus refused the request (either port): the token is missing or wrong."""


AUTH_HINT = (
    "Milvus requires authentication: set MILVUS_TOKEN, and MILVUS_URL / MILVUS_MGMT_URL to reach Milvus "
    "directly (through the Kubernetes service proxy only the Kubernetes credentials can be sent)"
)


class MilvusUnreachable(MilvusHttpError):
    """No HTTP answer (connection refused, timeout, ...)."""


class FlushTimeout(MilvusHttpError):
    """Some collections were still unflushed when the time ran out; ``unflushed`` maps each
    ``(database, collection)`` to the segment IDs still waited for."""

    def __init__(self, unflushed: dict[tuple[str, str], list[int]], elapsed: float) -> None:
        self.unflushed = unflushed
        self.elapsed = elapsed
        what = "; ".join(f"{db}.{name}: segments {ids}" for (db, name), ids in sorted(unflushed.items()))
        super().__init__(V1_PERSIST_STATE, f"still not flushed after {elapsed:.1f}s: {what}", retriable=True)


@dataclass(frozen=True)
class CollectionPersist:
    """One collection's part of a persist answer."""

    seg_ids: list[int]  # sealed and not yet flushed: what to wait for
    flushed_seg_ids: list[int]  # already flushed before this call
    flush_ts: int  # hybrid timestamp (uint64) to wait for
    seal_time: int | None = None


@dataclass(frozen=True)
class PersistResult:
    db: str
    collections: dict[str, CollectionPersist]


@dataclass(frozen=True)
class FlushProgress:
    """Reported after every polling round of ``flush_database``."""

    db: str
    done: tuple[str, ...]
    pending: dict[str, tuple[int, ...]]
    elapsed: float


@dataclass
class FlushReport:
    """What ``flush_database`` persisted: per collection, the segments that were flushed by it."""

    db: str
    segments: dict[str, list[int]] = field(default_factory=dict)
    already_flushed: dict[str, list[int]] = field(default_factory=dict)
    flush_ts: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    polls: int = 0

    @property
    def segment_count(self) -> int:
        return sum(len(ids) for ids in self.segments.values())


def service_proxy_url(kube_host: str, namespace: str, service: str, port: int) -> str:
    """The Kubernetes API server's proxy to a service port (no port-forward needed)."""
    return f"{kube_host.rstrip('/')}/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy"


def _expand(template: str, name: str, release: str, namespace: str) -> str:
    try:
        return template.format(release=release, namespace=namespace).rstrip("/")
    except (KeyError, IndexError, ValueError) as exc:
        raise ValueError(f"{name} template {template!r}: only {{release}} and {{namespace}} are allowed") from exc


def base_urls(
    template_mgmt: str | None,
    template_rest: str | None,
    *,
    release: str,
    namespace: str,
    kube_host: str,
) -> tuple[str, str]:
    """(management URL for port 9091, RESTful URL for port 19530) of one release.

    MILVUS_MGMT_URL / MILVUS_URL are templates with ``{release}`` and ``{namespace}``; when unset,
    the service ``<release>-milvus`` is reached through the Kubernetes API's service proxy."""
    service = f"{release}-milvus"
    mgmt = (
        _expand(template_mgmt, "MILVUS_MGMT_URL", release, namespace)
        if template_mgmt
        else service_proxy_url(kube_host, namespace, service, MGMT_PORT)
    )
    rest = (
        _expand(template_rest, "MILVUS_URL", release, namespace)
        if template_rest
        else service_proxy_url(kube_host, namespace, service, REST_PORT)
    )
    return mgmt, rest


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_ints(route: str, what: str, values: Any) -> list[int]:
    if not isinstance(values, list) or not all(_is_int(v) for v in values):
        raise MilvusHttpError(route, f"{what} are not exact integers: {values!r} (parsed as floats?)")
    return list(values)


def _long_array(route: str, what: str, value: Any) -> list[int]:
    """A schema.LongArray: ``{"data":[...]}``, or ``{}``/absent/null when empty (omitempty)."""
    if value is None:
        return []
    if not isinstance(value, dict):
        raise MilvusHttpError(route, f"{what} is not a LongArray: {value!r}")
    return _exact_ints(route, what, value.get("data", []))


def _map(route: str, doc: dict[str, Any], key: str) -> dict[str, Any]:
    value = doc.get(key) or {}
    if not isinstance(value, dict):
        raise MilvusHttpError(route, f"{key} is not an object: {value!r}")
    return value


def _status_failure(route: str, doc: Any) -> MilvusHttpError | None:
    """None when ``doc["status"]`` is a success status ({} or zero codes), else the error."""
    if not isinstance(doc, dict) or not isinstance(doc.get("status"), dict):
        return MilvusHttpError(route, f"answer has no status object: {str(doc)[:300]}")
    st = doc["status"]
    if st.get("error_code") in (None, 0, "Success") and st.get("code") in (None, 0):
        return None
    reason = st.get("reason") or st.get("detail") or json.dumps(st)
    return MilvusHttpError(
        route,
        str(reason),
        code=st.get("code"),
        error_code=st.get("error_code"),
        retriable=bool(st.get("retriable")),
    )


def _http_failure(route: str, resp: httpx.Response, doc: Any) -> MilvusHttpError:
    """A non-200 answer: Milvus' ErrResponse (400/500) or a Kubernetes Status from the service proxy."""
    body = doc if isinstance(doc, dict) else {}
    if body.get("kind") == "Status":
        reason = f"Kubernetes: {body.get('message') or body.get('reason') or 'error'}"
    else:
        reason = str(body.get("reason") or resp.text[:300])
    return MilvusHttpError(
        route,
        reason,
        http_status=resp.status_code,
        error_code=body.get("error_code"),
        retriable=_retriable(resp.status_code),
        retry_after=_retry_after(resp),
    )


def _retriable(status: int) -> bool:
    """Worth the same call again later: 429 Too Many Requests (Milvus' rate limit, or the API server's
    in front of the service proxy) and any 5xx."""
    return status == 429 or status >= 500


def _retry_after(resp: httpx.Response) -> float | None:
    try:
        value = resp.headers.get("Retry-After")
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class MilvusClient:
    """Synchronous client for one Milvus release: ``mgmt_base_url`` serves the proxy's port 9091
    routes, ``rest_base_url`` the RESTful v2 API on port 19530. ``http`` is owned by the caller
    (timeouts, TLS and Kubernetes credentials when going through the API server)."""

    # How response bytes become JSON: exact ints. Tests swap it to prove corruption is caught.
    json_loads: Callable[[bytes], Any] = staticmethod(json.loads)

    def __init__(self, mgmt_base_url: str, rest_base_url: str, *, http: httpx.Client, token: str | None = None) -> None:
        self.mgmt_base_url = mgmt_base_url.rstrip("/")
        self.rest_base_url = rest_base_url.rstrip("/")
        self._http = http
        self._token = token

    # ------------------------------------------------------------------ transport

    def _send(
        self, method: str, url: str, route: str, body: dict[str, Any] | None, headers: dict[str, str]
    ) -> httpx.Response:
        content = None
        if body is not None:
            content = json.dumps(body, separators=(",", ":")).encode()
            headers = {**headers, "Content-Type": "application/json"}
        for attempt in range(1, THROTTLED_TRIES + 1):
            try:
                resp = self._http.request(method, url, content=content, headers=headers)
            except httpx.TransportError as exc:
                raise MilvusUnreachable(route, f"{type(exc).__name__}: {exc}", retriable=True) from exc
            wait = resend_after(resp.status_code, attempt, _retry_after(resp))
            if wait is None:
                return resp
            # Throttled (Milvus' rate limit, or the API server's in front of the service proxy): the
            # call was not executed; send it again after Retry-After, as for the Kubernetes API.
            log.info("%s: throttled (429), again in %gs", route, wait)
            time.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _decode(self, route: str, resp: httpx.Response) -> Any:
        try:
            return self.json_loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            raise MilvusHttpError(
                route,
                f"answer is not JSON: {resp.text[:300]!r}",
                http_status=resp.status_code,
                retriable=_retriable(resp.status_code),
                retry_after=_retry_after(resp),
            ) from None

    def _not_found(self, route: str, resp: httpx.Response) -> MilvusHttpError:
        """A 404 from Kubernetes (a Status object: no such service) is not a 404 from Milvus."""
        try:
            doc = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            doc = None
        if isinstance(doc, dict) and doc.get("kind") == "Status":
            return MilvusHttpError(route, f"Kubernetes: {doc.get('message', 'not found')}", http_status=404)
        return MilvusRoutesGone(
            route,
            "Milvus answers 404 on /api/v1 (port 9091): the flush routes this procedure needs are not "
            "served there; check that MILVUS_MGMT_URL points at the proxy's management port",
            http_status=404,
        )

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def _refused(self, route: str, resp: httpx.Response) -> MilvusAuthError | None:
        """An authentication refusal (HTTP 401, or code 1800 in the body), else None."""
        try:
            doc = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError):
            doc = None
        code = doc.get("code") if isinstance(doc, dict) else None
        if isinstance(doc, dict) and isinstance(doc.get("status"), dict):
            code = doc["status"].get("code", code)
        if resp.status_code != 401 and code != CODE_NEED_AUTHENTICATE:
            return None
        if isinstance(doc, dict) and doc.get("kind") == "Status":  # the API server refused us, not Milvus
            return None
        message = str(doc.get("message") or "") if isinstance(doc, dict) else ""
        reason = f"{message or 'not authenticated'}. {AUTH_HINT}"
        return MilvusAuthError(route, reason, http_status=resp.status_code, code=code)

    def _call_v1(self, method: str, route: str, body: dict[str, Any] | None) -> dict[str, Any]:
        resp = self._send(method, self.mgmt_base_url + route, route, body, self._auth())
        if resp.status_code == 404:
            raise self._not_found(route, resp)
        refused = self._refused(route, resp)
        if refused is not None:
            raise refused
        doc = self._decode(route, resp)
        if resp.status_code != 200:
            raise _http_failure(route, resp, doc)
        failure = _status_failure(route, doc)
        if failure is not None:
            raise failure
        assert isinstance(doc, dict)
        return doc

    # ------------------------------------------------------------------ single calls

    def health(self) -> None:
        """GET /api/v1/health. Raises MilvusRoutesGone on a Milvus 404."""
        resp = self._send("GET", self.mgmt_base_url + V1_HEALTH, V1_HEALTH, None, self._auth())
        if resp.status_code == 404:
            raise self._not_found(V1_HEALTH, resp)
        refused = self._refused(V1_HEALTH, resp)
        if refused is not None:
            raise refused
        doc = self._decode(V1_HEALTH, resp)
        if resp.status_code != 200 or not isinstance(doc, dict) or doc.get("status") != "ok":
            raise MilvusHttpError(
                V1_HEALTH,
                f"unexpected answer: {resp.text[:300]!r}",
                http_status=resp.status_code,
                retriable=_retriable(resp.status_code),
            )

    def healthz(self) -> tuple[bool, str]:
        """GET /healthz: (healthy, reason). Unreachable is (False, why), not an exception."""
        try:
            resp = self._send("GET", self.mgmt_base_url + HEALTHZ, HEALTHZ, None, {})
        except MilvusUnreachable as exc:
            return False, f"unreachable: {exc.reason}"
        text = resp.text.strip()
        return resp.status_code == 200 and text == "OK", text or f"HTTP {resp.status_code}"

    def _call_rest(self, route: str, body: dict[str, Any]) -> Any:
        """POST a RESTful v2 route on port 19530; the ``data`` of a ``{"code": 0}`` answer."""
        resp = self._send("POST", self.rest_base_url + route, route, body, self._auth())
        refused = self._refused(route, resp)
        if refused is not None:
            raise refused
        doc = self._decode(route, resp)
        code = doc.get("code") if isinstance(doc, dict) else None
        message = str(doc.get("message", "")) if isinstance(doc, dict) else resp.text[:300]
        if resp.status_code != 200 or code != 0:
            raise MilvusHttpError(
                route,
                message or "unexpected answer",
                http_status=resp.status_code,
                code=code,
                retriable=_retriable(resp.status_code) or code == CODE_SERVICE_NOT_READY,
            )
        return doc.get("data")

    def list_databases(self) -> list[str]:
        """POST /v2/vectordb/databases/list on the RESTful port."""
        route = V2_LIST_DATABASES
        data = self._call_rest(route, {}) or []
        if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
            raise MilvusHttpError(route, f"data is not a list of names: {data!r}")
        return list(data)

    def row_count(self, db: str, collection: str) -> int:
        """POST /v2/vectordb/collections/get_stats: the collection's ``rowCount`` (exact integer)."""
        route = V2_GET_STATS
        data = self._call_rest(route, {"dbName": db, "collectionName": collection})
        count = data.get("rowCount") if isinstance(data, dict) else None
        if not isinstance(count, int) or isinstance(count, bool):
            raise MilvusHttpError(route, f"rowCount of {db}.{collection} is not an exact integer: {count!r}")
        return count

    def load_state(self, db: str, collection: str) -> str:
        """POST /v2/vectordb/collections/get_load_state: ``LoadStateLoaded``, ``LoadStateLoading``,
        ``LoadStateNotLoad`` or ``LoadStateNotExist`` (``loadProgress`` is left out when not loaded)."""
        route = V2_GET_LOAD_STATE
        data = self._call_rest(route, {"dbName": db, "collectionName": collection})
        state = data.get("loadState") if isinstance(data, dict) else None
        if not isinstance(state, str) or not state:
            raise MilvusHttpError(route, f"loadState of {db}.{collection} is missing: {data!r}")
        return state

    def list_collections(self, db: str) -> list[str]:
        """GET /api/v1/collections with ``{"db_name": db}``; an empty database has no keys at all."""
        doc = self._call_v1("GET", V1_COLLECTIONS, {"db_name": db})
        names = doc.get("collection_names") or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise MilvusHttpError(V1_COLLECTIONS, f"collection_names is not a list of names: {names!r}")
        return list(names)

    def persist(self, db: str, collections: list[str]) -> PersistResult:
        """POST /api/v1/persist: seal every growing segment of ``collections`` in ``db``."""
        route = V1_PERSIST
        try:
            doc = self._call_v1("POST", route, {"db_name": db, "collection_names": list(collections)})
        except MilvusHttpError as err:
            audit.record(
                "milvus", verb="flush", object=f"database {db}", collections=list(collections), result=str(err)
            )
            raise
        audit.record("milvus", verb="flush", object=f"database {db}", collections=list(collections), result="done")
        seg_map = _map(route, doc, "coll_segIDs")
        flushed_map = _map(route, doc, "flush_coll_segIDs")
        ts_map = _map(route, doc, "coll_flush_ts")
        seal_map = _map(route, doc, "coll_seal_times")
        out: dict[str, CollectionPersist] = {}
        for name in collections:
            flush_ts = ts_map.get(name)
            if not isinstance(flush_ts, int) or isinstance(flush_ts, bool):
                raise MilvusHttpError(route, f"coll_flush_ts of {db}.{name} is not an exact integer: {flush_ts!r}")
            seal = seal_map.get(name)
            out[name] = CollectionPersist(
                seg_ids=_long_array(route, f"coll_segIDs of {db}.{name}", seg_map.get(name)),
                flushed_seg_ids=_long_array(route, f"flush_coll_segIDs of {db}.{name}", flushed_map.get(name)),
                flush_ts=flush_ts,
                seal_time=seal if _is_int(seal) else None,
            )
        return PersistResult(db=db, collections=out)

    def flush_state(self, db: str, collection: str, seg_ids: Iterable[int], flush_ts: int) -> bool:
        """GET /api/v1/persist/state for one collection; ``flushed`` absent means false."""
        ids = list(seg_ids)
        if not all(_is_int(i) for i in ids) or not _is_int(flush_ts):
            raise TypeError("segment IDs and flush_ts must be exact ints")
        body = {"segmentIDs": ids, "flush_ts": flush_ts, "db_name": db, "collection_name": collection}
        doc = self._call_v1("GET", V1_PERSIST_STATE, body)
        flushed = doc.get("flushed", False)
        if not isinstance(flushed, bool):
            raise MilvusHttpError(V1_PERSIST_STATE, f"flushed is not a boolean: {flushed!r}")
        return flushed

    # ------------------------------------------------------------------ the flush procedure

    def flush_database(
        self,
        db: str,
        *,
        timeout: float,
        interval: float,
        on_progress: Callable[[FlushProgress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> FlushReport:
        """Flush one database (``flush_all`` of just ``db``)."""
        reports = self.flush_all(
            timeout=timeout, interval=interval, databases=[db], on_progress=on_progress, clock=clock, sleep=sleep
        )
        return reports[0]

    def flush_all(
        self,
        *,
        timeout: float,
        interval: float,
        databases: list[str] | None = None,
        on_progress: Callable[[FlushProgress], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        in_flight: int = FLUSH_IN_FLIGHT,
    ) -> list[FlushReport]:
        """Persist every collection of every database (listed on the RESTful port unless given),
        then poll every pending collection, of all databases together, with its own segment IDs
        and flush_ts until all are flushed; FlushTimeout after ``timeout`` seconds.

        The persists go first, one database after another, so that every database's flush runs
        at once in Milvus: the time is about the slowest collection's, not the sum of each
        database's slowest. Polling rounds are ``interval`` apart (``FLUSH_SLOW_INTERVAL`` once
        the flush has taken ``FLUSH_FAST_SECONDS``: a long flush does not hammer the proxy) with
        at most ``in_flight`` state queries at once."""
        start = clock()
        dbs = self.list_databases() if databases is None else databases
        reports = {db: FlushReport(db=db) for db in dbs}
        pending: dict[tuple[str, str], CollectionPersist] = {}
        for db in dbs:
            names = self.list_collections(db)
            if not names:
                continue
            persisted = self.persist(db, names)
            report = reports[db]
            for name, part in persisted.collections.items():
                report.segments[name] = part.seg_ids
                report.already_flushed[name] = part.flushed_seg_ids
                report.flush_ts[name] = part.flush_ts
                pending[(db, name)] = part
            log.info("milvus persist db=%s collections=%d sealed=%d", db, len(names), report.segment_count)
        for report in reports.values():
            report.elapsed = clock() - start  # until its last collection is seen flushed, below
        if not pending:
            return [reports[db] for db in dbs]
        with ThreadPoolExecutor(max(1, in_flight), thread_name_prefix="milvus-flush") as pool:
            while True:
                asked = self._poll_round(pool, pending, reports)
                elapsed = clock() - start
                for db in [d for d in dbs if any(a == d for a, _ in asked)]:
                    if not any(d == db for d, _ in pending):
                        reports[db].elapsed = elapsed  # its last collection just flushed
                    if on_progress is not None:
                        done = tuple(n for d, n in asked if d == db and (d, n) not in pending)
                        left = {n: tuple(p.seg_ids) for (d, n), p in pending.items() if d == db}
                        on_progress(FlushProgress(db=db, done=done, pending=left, elapsed=elapsed))
                if not pending:
                    return [reports[db] for db in dbs]
                if elapsed >= timeout:
                    raise FlushTimeout({k: list(p.seg_ids) for k, p in pending.items()}, elapsed)
                pause = interval if elapsed < FLUSH_FAST_SECONDS else max(interval, FLUSH_SLOW_INTERVAL)
                sleep(max(0.0, min(pause, timeout - elapsed)))

    def _poll_round(
        self,
        pool: ThreadPoolExecutor,
        pending: dict[tuple[str, str], CollectionPersist],
        reports: dict[str, FlushReport],
    ) -> list[tuple[str, str]]:
        """Ask once for every pending collection, ``pool``'s size at a time; drop the flushed ones.
        Returns the collections asked about. The first failure is raised once the round is over."""
        asked = list(pending)
        futures = [
            pool.submit(contextvars.copy_context().run, self.flush_state, db, name, p.seg_ids, p.flush_ts)
            for (db, name), p in ((k, pending[k]) for k in asked)
        ]
        error: BaseException | None = None
        for key, future in zip(asked, futures, strict=True):
            try:
                flushed = future.result()
            except Exception as err:  # raised below, once the round is over
                error = error or err
                continue
            reports[key[0]].polls += 1
            if flushed:
                del pending[key]
        if error is not None:
            raise error
        return asked
