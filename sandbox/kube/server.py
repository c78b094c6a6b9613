"""An HTTPS server that speaks the Kubernetes REST API over a ``sandbox.kube.store.Store``.

Why: the bot talks to Kubernetes only through the official ``kubernetes`` Python client, and
the tests also drive the real kubectl and helm binaries; this server lets all of them point
(via a written kubeconfig) at a local, strict, inspectable API server instead of a cluster.

What it serves, as the real API server does:
- HTTPS only, with a per-instance CA (``sandbox.tls``; the kubeconfig carries it as
  ``certificate-authority-data``, ``ca_pem`` / ``ca_file`` / ``ssl_context()`` for direct
  clients): client-go sends no bearer token over plain http;
- discovery (``/api``, ``/api/v1``, ``/apis``, ``/apis/<g>``, ``/apis/<g>/<v>``, ``/version``)
  and ``/healthz``, ``/readyz``, ``/livez`` (no token needed there); OpenAPI v3
  (``/openapi/v3`` and per group-version documents, ``sandbox.kube.openapi``);
- for every resource in ``RESOURCES``: list (label/field selectors, ``limit``/``continue``
  over a consistent snapshot), watch (chunked JSON lines, selectors, ``resourceVersion``
  resume, ``timeoutSeconds``, ERROR 410 when too old, BOOKMARKs on request, watch-list:
  ``sendInitialEvents=true`` sends every match then a BOOKMARK annotated
  ``k8s.io/initial-events-end``), get, create (201), replace, patch (merge / strategic-merge /
  JSON patch by Content-Type, server-side apply with field ownership and 409 conflicts,
  ``sandbox.kube.managed``, else 415), delete (DeleteOptions preconditions and
  propagationPolicy), deletecollection, the ``/status`` subresource and ``/scale``
  (autoscaling/v1) for deployments and statefulsets;
- request bodies in JSON, YAML or Kubernetes protobuf (``sandbox.kube.protobuf``: what
  client-go sends for Secrets, ConfigMaps, Namespaces, DeleteOptions, access reviews);
  answers are JSON, or a ``meta.k8s.io`` Table when the Accept header asks for one
  (``sandbox.kube.tables``, what ``kubectl get`` prints);
- write options: ``dryRun=All`` (everything checked, nothing stored, no events),
  ``fieldValidation`` Strict (400 on unknown fields) / Warn (default, ``Warning`` headers) /
  Ignore, ``fieldManager`` (recorded in ``metadata.managedFields``), ``force`` for apply;
- ``SelfSubjectAccessReview`` answered from a deny list that the server also enforces (403
  with the real message), bearer-token authentication (401 without it);
- the service proxy (``/api/v1/namespaces/<ns>/services/[http:]<name>[:<port>]/proxy/...``)
  forwarding to backends registered per service port (404 / 503 like the real one);
- fault injection (answer the next N matching requests with an error Status, or hang then 504;
  narrowed by User-Agent and by watch or not; ``inject_fault`` returns a ``Fault`` whose ``hits``
  says how many requests it caught) and a request log for assertions (``RequestRecord.raw``
  keeps the body bytes). A 429 always carries ``Retry-After`` (1 s unless the fault says).
Every error is a ``metav1.Status`` JSON body with the matching HTTP code.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import contextlib
import copy
import json
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from aiohttp import web

from sandbox._http import ThreadedServer
from sandbox.kube import crds, discovery, managed, openapi, protobuf, tables
from sandbox.kube.store import (
    RESOURCES,
    ApiError,
    Event,
    ResourceType,
    Store,
    bad_request,
    method_not_allowed,
    unsupported_patch,
)
from sandbox.tls import ServerCert

JSON = "application/json"
_PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}
_HEALTH_PATHS = ("/healthz", "/readyz", "/livez")
_METHOD_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
_FAULT_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_SNAPSHOT_LIMIT = 64
_DEFAULT_WATCH_SECONDS = 1800.0
_TOO_OLD_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - objects "
    "that were created, modified, or deleted between the time the first chunk was returned and now may show "
    "up in the list."
)
_BY_PATH: dict[tuple[str, str, str], ResourceType] = {
    (rt.group, rt.version, rt.plural): rt for rt in RESOURCES.values()
}


@dataclass
class RequestRecord:
    """One request as the server saw it (status is filled in when the answer is known)."""

    method: str
    path: str
    query: dict[str, str]
    status: int
    user_agent: str
    body: Any
    time: float
    content_type: str = ""
    raw: bytes = b""  # the request body as sent (e.g. protobuf bytes)


@dataclass
class Fault:
    """One injected fault, as ``inject_fault`` returns it: ``hits`` counts the requests it caught
    (answered with its error, or hung), ``remaining`` how many it may still catch."""

    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    hang_seconds: float | None
    reason: str | None
    message: str | None
    skip: int = 0  # matching requests served normally before the fault applies
    user_agent: re.Pattern[str] | None = None  # only requests whose User-Agent matches (re.search)
    watch: bool | None = None  # True: only watch requests; False: never a watch; None: either
    retry_after: int | None = None  # Retry-After (seconds) on the answer; a 429 gets 1 without it
    hits: int = 0

    def matches(self, method: str, path: str, user_agent: str, watch: bool) -> bool:
        return (
            self.remaining > 0
            and self.method in ("*", method)
            and self.pattern.search(path) is not None
            and (self.user_agent is None or self.user_agent.search(user_agent) is not None)
            and (self.watch is None or self.watch == watch)
        )


class _FaultError(ApiError):
    """An injected fault's answer (with the fault's Retry-After, if any)."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any], retry_after: int | None) -> None:
        super().__init__(code, reason, message, details)
        self.retry_after = retry_after


@dataclass(frozen=True)
class _Deny:
    verb: str
    resource: str
    namespace: str | None
    group: str


@dataclass
class _Target:
    """A parsed resource URL."""

    rt: ResourceType
    namespace: str | None
    name: str | None = None
    subresource: str | None = None


@dataclass
class _Snapshot:
    rv: int
    items: list[dict[str, Any]] = field(default_factory=list)


def not_found_path() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource", {})


def _json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(body), content_type=JSON)


def _status_response(exc: ApiError) -> web.Response:
    resp = _json_response(exc.status(), exc.code)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        resp.headers["Retry-After"] = str(retry_after)
    elif exc.code == 429:
        resp.headers["Retry-After"] = "1"
    return resp


class KubeApiServer:
    """The simulated API server: construct, ``start()``, use ``url``/``write_kubeconfig``, ``stop()``."""

    def __init__(self, store: Store | None = None, token: str = "sandbox-token", user: str = "sandbox") -> None:
        self.store = store if store is not None else Store()
        self.token = token
        self.user = user
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._denies: list[_Deny] = []
        self._backends: dict[tuple[str, str, int], str] = {}
        self._snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()
        self._session: aiohttp.ClientSession | None = None
        self.app = web.Application(client_max_size=16 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._handle)
        self.app.on_cleanup.append(self._close_session)
        self._server: ThreadedServer | None = None
        self.cert = ServerCert.generate()
        self._tmp = tempfile.TemporaryDirectory(prefix="sandbox-kube-")

    # ---- lifecycle ----

    def start(self) -> KubeApiServer:
        self._server = ThreadedServer(self.app, ssl_context=self.cert.server_context()).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()

    def __enter__(self) -> KubeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("KubeApiServer is not started")
        return self._server.url

    @property
    def ca_pem(self) -> bytes:
        """The PEM of this instance's CA (the only one that signed the serving certificate)."""
        return self.cert.ca_pem

    @property
    def ca_file(self) -> str:
        """A file holding ``ca_pem`` (removed when the server object is collected)."""
        path = Path(self._tmp.name, "ca.crt")
        if not path.exists():
            path.write_bytes(self.cert.ca_pem)
        return str(path)

    def ssl_context(self) -> ssl.SSLContext:
        """A client ``SSLContext`` that trusts this server (e.g. ``httpx.Client(verify=...)``)."""
        return self.cert.client_context()

    def write_kubeconfig(self, path: str, context: str = "sandbox", namespace: str = "default") -> str:
        """Write a standard kubeconfig for this server and token; return the path."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": context,
                    "cluster": {
                        "server": self.url,
                        "certificate-authority-data": base64.b64encode(self.cert.ca_pem).decode(),
                    },
                }
            ],
            "users": [{"name": f"{context}-user", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": context,
                    "context": {"cluster": context, "user": f"{context}-user", "namespace": namespace},
                }
            ],
            "current-context": context,
        }
        Path(path).write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    # ---- test controls ----

    def clear_requests(self) -> None:
        with self._lock:
            self.requests.clear()

    def inject_fault(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 500,
        count: int = 1,
        hang_seconds: float | None = None,
        reason: str | None = None,
        message: str | None = None,
        skip: int = 0,
        user_agent: str | None = None,
        watch: bool | None = None,
        retry_after: int | None = None,
    ) -> Fault:
        """Fail the next ``count`` requests matching method ('*' = any) and path (re.search).

        They answer a Status with ``status`` (reason from the code unless given), or, with
        ``hang_seconds``, hang that long and then answer 504 Timeout. With ``skip``, that many
        matching requests are served normally first (e.g. hang the second PVC DELETE).
        ``user_agent`` (re.search) limits it to one client's requests (e.g. the bot's, not
        helm's); ``watch`` True/False to watch requests only / never a watch. ``retry_after``
        is sent as the answer's Retry-After header (a 429 carries ``Retry-After: 1`` without it,
        as the real API server's priority-and-fairness rejections do). A request caught by a
        fault is not applied. The returned ``Fault`` counts what it caught (``hits``).
        """
        fault = Fault(
            method.upper(),
            re.compile(path_regex),
            status,
            count,
            hang_seconds,
            reason,
            message,
            skip,
            re.compile(user_agent) if user_agent is not None else None,
            watch,
            retry_after,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def deny(self, verb: str, resource: str, namespace: str | None = None, group: str = "") -> None:
        """Forbid ``verb`` ('*' = all) on ``resource`` ('pods', 'pods/status', 'services/proxy', '*').

        With a namespace, only there (and for cluster-wide requests of namespaced kinds).
        """
        with self._lock:
            self._denies.append(_Deny(verb, resource, namespace, group))

    def clear_denies(self) -> None:
        with self._lock:
            self._denies.clear()

    def register_service_backend(self, namespace: str, service: str, port: int, url: str) -> None:
        """Route the service proxy for ``namespace/service:port`` to ``url`` (e.g. a ThreadedServer)."""
        with self._lock:
            self._backends[(namespace, service, int(port))] = url.rstrip("/")

    def unregister_service_backend(self, namespace: str, service: str, port: int) -> None:
        with self._lock:
            self._backends.pop((namespace, service, int(port)), None)

    # ---- request entry ----

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            status=0,
            user_agent=request.headers.get("User-Agent", ""),
            body=_try_json(raw),
            time=time.monotonic(),
            content_type=_content_type(request),
            raw=raw,
        )
        with self._lock:
            self.requests.append(record)
        try:
            resp = await self._route(request, raw, record)
        except ApiError as exc:
            resp = _status_response(exc)
        if record.status == 0:
            record.status = resp.status
        return resp

    async def _route(self, request: web.Request, raw: bytes, record: RequestRecord) -> web.StreamResponse:
        path = request.path
        if path in _HEALTH_PATHS or path.startswith(tuple(p + "/" for p in _HEALTH_PATHS)):
            return web.Response(text="ok", content_type="text/plain")
        if path.rstrip("/") == "/version":  # public, like system:public-info-viewer
            return _json_response(dict(discovery.SERVER_VERSION))
        self._authenticate(request)
        await self._maybe_fault(request)
        if path.rstrip("/") == "/openapi/v3" or path.startswith("/openapi/v3/"):
            return _openapi_v3(path)
        doc = self._discovery(path, request)
        if doc is not None:
            return _json_response(doc)
        segments = [urllib.parse.unquote(s) for s in request.rel_url.raw_path.strip("/").split("/")]
        group, version, rest = _split_api_path(segments)
        if group == "" and len(rest) >= 5 and rest[0] == "namespaces" and rest[2] == "services" and rest[4] == "proxy":
            return await self._proxy(request, raw, rest)
        target = _parse_target(group, version, rest)
        return await self._serve_resource(request, raw, target, record)

    def _authenticate(self, request: web.Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.token:
            raise ApiError(401, "Unauthorized", "Unauthorized")

    async def _maybe_fault(self, request: web.Request) -> None:
        method, path = request.method, request.path
        user_agent = request.headers.get("User-Agent", "")
        watch = request.query.get("watch", "").lower() in ("1", "true")
        with self._lock:
            fault = next((f for f in self._faults if f.matches(method, path, user_agent, watch)), None)
            if fault is None:
                return
            if fault.skip > 0:
                fault.skip -= 1
                return
            fault.remaining -= 1
            fault.hits += 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
        if fault.hang_seconds is not None:
            await asyncio.sleep(fault.hang_seconds)
            raise _FaultError(
                504,
                "Timeout",
                "Timeout: request did not complete within the allotted timeout",
                {"causes": [{"reason": "UnexpectedServerResponse", "message": "injected hang"}]},
                fault.retry_after,
            )
        reason = fault.reason or _FAULT_REASONS.get(fault.status, "InternalError")
        message = fault.message or _fault_message(fault.status, path)
        raise _FaultError(fault.status, reason, message, {}, fault.retry_after)

    def _discovery(self, path: str, request: web.Request) -> dict[str, Any] | None:
        path = path.rstrip("/") or "/"
        if path == "/api":
            return discovery.api_versions(request.host)
        if path == "/apis":
            return discovery.api_group_list()
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return discovery.resource_list("", parts[1]) or _raise(not_found_path())
        if parts[0] == "apis" and len(parts) == 2:
            return discovery.api_group(parts[1]) or _raise(not_found_path())
        if parts[0] == "apis" and len(parts) == 3:
            return discovery.resource_list(parts[1], parts[2]) or _raise(not_found_path())
        return None

    # ---- authorization ----

    def _denied(self, verb: str, group: str, resource: str, namespace: str | None, namespaced: bool) -> bool:
        with self._lock:
            denies = list(self._denies)
        for d in denies:
            if d.verb not in ("*", verb) or d.resource not in ("*", resource) or d.group not in ("*", group):
                continue
            if d.namespace is None or (namespaced and (not namespace or namespace == d.namespace)):
                return True
        return False

    def _authorize(self, verb: str, rt: ResourceType, resource: str, namespace: str | None, name: str | None) -> None:
        if not self._denied(verb, rt.group, resource, namespace, rt.namespaced):
            return
        scope = f'in the namespace "{namespace}"' if rt.namespaced and namespace else "at the cluster scope"
        why = f'User "{self.user}" cannot {verb} resource "{resource}" in API group "{rt.group}" {scope}'
        qualified = resource if not rt.group else f"{resource.split('/')[0]}.{rt.group}"
        if "/" in resource and rt.group:
            qualified = f"{qualified}/{resource.split('/', 1)[1]}"
        subject = f'{qualified} "{name}"' if name else qualified
        details: dict[str, Any] = {"name": name} if name else {}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = resource.split("/")[0]
        raise ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)

    def _access_review(self, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise bad_request("couldn't get version/kind; json parse error: expected a JSON object")
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        allowed = True
        if isinstance(attrs, dict):
            resource = str(attrs.get("resource", ""))
            if attrs.get("subresource"):
                resource = f"{resource}/{attrs['subresource']}"
            group = str(attrs.get("group", ""))
            rt = next(
                (r for r in RESOURCES.values() if r.group == group and r.plural == attrs.get("resource")),
                None,
            )
            namespaced = rt.namespaced if rt is not None else True
            allowed = not self._denied(
                str(attrs.get("verb", "")), group, resource, attrs.get("namespace") or None, namespaced
            )
        status: dict[str, Any] = {"allowed": allowed}
        if allowed:
            status["reason"] = (
                f'RBAC: allowed by ClusterRoleBinding "sandbox-admin" of ClusterRole "cluster-admin" '
                f'to User "{self.user}"'
            )
        out = {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return _json_response(out, 201)

    # ---- resources ----

    async def _serve_resource(
        self, request: web.Request, raw: bytes, target: _Target, record: RequestRecord
    ) -> web.StreamResponse:
        verb = _verb(request, target)
        if verb not in target.rt.verbs:
            raise method_not_allowed()
        if target.rt.key == "selfsubjectaccessreviews.authorization.k8s.io":
            return self._access_review(_parse_body(request, raw))  # always allowed, as for system:basic-user
        resource = target.rt.plural + (f"/{target.subresource}" if target.subresource else "")
        self._authorize(verb, target.rt, resource, target.namespace, target.name)
        if verb == "watch":
            return await self._watch(request, target, record)
        if verb == "list":
            listed = self._list(target, request.query)
            as_table = self._table_renderer(request, target)
            if as_table is not None:
                items = [{"kind": target.rt.kind, "apiVersion": target.rt.api_version, **i} for i in listed["items"]]
                return _json_response(as_table(items, listed["metadata"]))
            return _json_response(listed)
        opts = _WriteOptions.parse(request, verb)
        if target.subresource == "scale":
            body, code = self._scale(verb, request, raw, target, opts)
        else:
            body, code = self._write(verb, request, raw, target, opts)
        resp = _json_response(body, code)
        for warning in opts.warnings:
            resp.headers.add("Warning", f'299 - "{warning}"')
        return resp

    def _write(
        self, verb: str, request: web.Request, raw: bytes, target: _Target, opts: _WriteOptions
    ) -> tuple[Any, int]:
        store, rt = self.store, target.rt
        if verb == "get":
            obj = store.get(rt.key, target.namespace, target.name or "")
            as_table = self._table_renderer(request, target)
            if as_table is not None:
                return as_table([obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")}), 200
            return obj, 200
        manager = opts.manager
        sub = target.subresource

        def track(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
            managed.record_update(old, new, manager, sub)

        if verb == "create":
            body = _parse_body(request, raw)
            opts.check_fields(rt, body)
            body = _with_namespace(rt, body, target.namespace)
            return store.create(rt.key, body, target.namespace, manage=track, dry_run=opts.dry_run), 201
        if verb == "update":
            body = _check_names(rt, _parse_body(request, raw), target)
            opts.check_fields(rt, body)
            return store.replace(rt.key, body, subresource=sub, manage=track, dry_run=opts.dry_run), 200
        if verb == "patch":
            if _content_type(request).startswith("application/apply-patch"):
                return self._apply(request, raw, target, opts)
            if opts.force:
                raise bad_request("Force flag is only supported for apply patches")  # as PatchOptions validation
            patch_type = _patch_type(request, rt)
            body = _try_json_strict(raw)
            if patch_type != "json":
                opts.check_fields(rt, body)
            result = store.patch(
                rt.key,
                target.namespace,
                target.name or "",
                body,
                patch_type,
                subresource=sub,
                manage=track,
                dry_run=opts.dry_run,
            )
            return result, 200
        if verb == "delete":
            return self._delete(request, raw, target, opts), 200
        return self._delete_collection(request, raw, target), 200

    def _apply(self, request: web.Request, raw: bytes, target: _Target, opts: _WriteOptions) -> tuple[Any, int]:
        """Server-side apply: create if missing, else merge with field ownership (see ``managed``)."""
        rt = target.rt
        if not opts.field_manager:
            raise bad_request("PATCH request requires fieldManager parameter to be set for apply")
        try:
            config = yaml.safe_load(raw) if raw else None
        except yaml.YAMLError as exc:
            raise bad_request(f"error decoding YAML: {exc}") from None
        if not isinstance(config, dict):
            raise bad_request("error decoding patch: the apply configuration must be an object")
        if not config.get("apiVersion") or not config.get("kind"):
            raise bad_request("apiVersion and kind must be set in an apply configuration")
        meta = config.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("json: cannot unmarshal into Go struct field of type v1.ObjectMeta")
        if meta.get("name") not in (None, target.name):
            raise bad_request(
                f"the name of the object ({meta.get('name')}) does not match the name on the URL ({target.name})"
            )
        meta["name"] = target.name
        if rt.namespaced:
            if meta.get("namespace") not in (None, "", target.namespace):
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = target.namespace
        opts.check_apply_fields(rt, config, target.namespace)
        with self.store.lock:
            live = self.store.try_get(rt.key, target.namespace, target.name or "")
            if live is None and target.subresource:
                raise ApiError(404, "NotFound", f'{rt.plural} "{target.name}" not found', {"name": target.name})
            merged = managed.apply(live, config, opts.field_manager, force=opts.force, subresource=target.subresource)
            fields_entries = merged["metadata"].get("managedFields")

            def keep(_old: dict[str, Any] | None, new: dict[str, Any]) -> None:
                new["metadata"]["managedFields"] = copy.deepcopy(fields_entries)

            if live is None:
                return self.store.create(rt.key, merged, target.namespace, manage=keep, dry_run=opts.dry_run), 201
            result = self.store.replace(
                rt.key, merged, subresource=target.subresource, manage=keep, dry_run=opts.dry_run
            )
            return result, 200

    def _scale(
        self, verb: str, request: web.Request, raw: bytes, target: _Target, opts: _WriteOptions
    ) -> tuple[Any, int]:
        """``/scale`` of deployments and statefulsets: an autoscaling/v1 Scale view of spec.replicas."""
        rt, name = target.rt, target.name or ""
        with self.store.lock:
            live = self.store.get(rt.key, target.namespace, name)
            if verb == "get":
                return _scale_of(live), 200
            current = _scale_of(live)
            if verb == "update":
                body = _parse_body(request, raw)
            else:
                if _content_type(request).startswith("application/apply-patch"):
                    raise ApiError(415, "UnsupportedMediaType", "apply patches are not supported on /scale here")
                body = self.store._apply_patch(rt, current, _try_json_strict(raw), _patch_type(request, rt))
            if not isinstance(body, dict):
                raise bad_request("the object provided is not a Scale: expected a JSON object")
            if body.get("kind") not in (None, "", "Scale"):
                raise bad_request(f"the kind in the body ({body['kind']}) does not match the expected kind (Scale)")
            replicas = (body.get("spec") or {}).get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
                cause = {
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                    "field": "spec.replicas",
                }
                raise ApiError(
                    422,
                    "Invalid",
                    f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                    f"{json.dumps(replicas)}: must be greater than or equal to 0",
                    {"name": name, "group": "autoscaling", "kind": "Scale", "causes": [cause]},
                )
            rv = (body.get("metadata") or {}).get("resourceVersion")
            update = copy.deepcopy(live)
            update["spec"]["replicas"] = replicas
            if verb == "update" and rv:
                update["metadata"]["resourceVersion"] = rv
            manager = opts.manager

            def track(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
                managed.record_update(old, new, manager, "scale")

            result = self.store.replace(rt.key, update, manage=track, dry_run=opts.dry_run)
            return _scale_of(result), 200

    def _delete(self, request: web.Request, raw: bytes, target: _Target, opts: _WriteOptions) -> dict[str, Any]:
        rt = target.rt
        delete_opts = _delete_options(request, raw)
        pre = delete_opts.get("preconditions") or {}
        dry_run = opts.dry_run or _dry_run_values(delete_opts.get("dryRun") or [])
        result = self.store.delete(
            rt.key,
            target.namespace,
            target.name or "",
            uid=pre.get("uid"),
            resource_version=pre.get("resourceVersion"),
            propagation_policy=delete_opts.get("propagationPolicy"),
            dry_run=dry_run,
        )
        if result["metadata"].get("deletionTimestamp") or rt.delete_returns_object:
            return result
        details: dict[str, Any] = {"name": result["metadata"]["name"]}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = rt.plural
        details["uid"] = result["metadata"]["uid"]
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}

    def _delete_collection(self, request: web.Request, raw: bytes, target: _Target) -> dict[str, Any]:
        rt = target.rt
        opts = _delete_options(request, raw)
        items = self.store.list(
            rt.key, target.namespace, request.query.get("labelSelector"), request.query.get("fieldSelector")
        )
        deleted = []
        for item in items:
            meta = item["metadata"]
            with contextlib.suppress(ApiError):
                deleted.append(
                    self.store.delete(
                        rt.key,
                        meta.get("namespace"),
                        meta["name"],
                        propagation_policy=opts.get("propagationPolicy"),
                    )
                )
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": {"resourceVersion": str(self.store.resource_version)},
            "items": [_list_item(rt, o) for o in deleted],
        }

    def _list(self, target: _Target, query: Any) -> dict[str, Any]:
        rt = target.rt
        limit = _int_param(query, "limit")
        token = query.get("continue")
        if token:
            snap = self._take_snapshot(token)
        else:
            with self.store.lock:
                rv = self.store.resource_version
                items = self.store.list(
                    rt.key, target.namespace, query.get("labelSelector"), query.get("fieldSelector")
                )
            snap = _Snapshot(rv, items)
        page, rest = (snap.items[:limit], snap.items[limit:]) if limit > 0 else (snap.items, [])
        meta: dict[str, Any] = {"resourceVersion": str(snap.rv)}
        if rest:
            meta["continue"] = self._save_snapshot(_Snapshot(snap.rv, rest), page[-1])
            meta["remainingItemCount"] = len(rest)
        return {
            "kind": f"{rt.kind}List",
            "apiVersion": rt.api_version,
            "metadata": meta,
            "items": [_list_item(rt, o) for o in page],
        }

    def _save_snapshot(self, snap: _Snapshot, last: dict[str, Any]) -> str:
        meta = last["metadata"]
        start = f"/{meta.get('namespace', '')}/{meta['name']}\x00"
        sid = uuid.uuid4().hex
        with self._lock:
            self._snapshots[sid] = snap
            while len(self._snapshots) > _SNAPSHOT_LIMIT:
                self._snapshots.popitem(last=False)
        payload = {"v": "meta.k8s.io/v1", "rv": snap.rv, "start": start, "sid": sid}
        return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")

    def _take_snapshot(self, token: str) -> _Snapshot:
        try:
            padded = token + "=" * (-len(token) % 4)
            payload = json.loads(base64.urlsafe_b64decode(padded.encode()))
            sid = payload["sid"]
        except (binascii.Error, ValueError, KeyError, TypeError):
            raise bad_request(f"continue key is not valid: {token}") from None
        with self._lock:
            snap = self._snapshots.pop(sid, None)
        if snap is None:
            raise ApiError(410, "Expired", _TOO_OLD_CONTINUE)
        return snap

    def _table_renderer(
        self, request: web.Request, target: _Target
    ) -> Callable[[list[dict[str, Any]], dict[str, Any]], dict[str, Any]] | None:
        """How to answer as a meta.k8s.io Table when the Accept header asks for one (kubectl get)."""
        version = tables.table_version(request.headers.get("Accept", ""))
        if version is None or target.subresource:
            return None
        rt = target.rt
        include = tables.include_object(request.query)
        crd = self.store.try_get(crds.CRD_KEY, None, f"{rt.plural}.{rt.group}") if rt.crd else None

        def render(objects: list[dict[str, Any]], list_meta: dict[str, Any]) -> dict[str, Any]:
            return tables.table(rt, objects, crd, version=version, include=include, list_meta=list_meta)

        return render

    # ---- watch ----

    async def _watch(self, request: web.Request, target: _Target, record: RequestRecord) -> web.StreamResponse:
        rt, query = target.rt, request.query
        field_selector = query.get("fieldSelector")
        if target.name:
            name_term = f"metadata.name={target.name}"
            field_selector = f"{field_selector},{name_term}" if field_selector else name_term
        matches = self.store.matcher(rt, query.get("labelSelector"), field_selector)
        timeout = float(_int_param(query, "timeoutSeconds") or _DEFAULT_WATCH_SECONDS)
        rv_param = query.get("resourceVersion", "")
        if rv_param not in ("", "0") and not rv_param.isdigit():
            raise bad_request(f'resourceVersion: Invalid value: "{rv_param}": invalid resource version')
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Event] = asyncio.Queue()

        def on_event(event: Event) -> None:
            if event[2] == rt.key:
                with contextlib.suppress(RuntimeError):  # loop already closed
                    loop.call_soon_threadsafe(queue.put_nowait, event)

        initial_events = _send_initial_events(query)
        stream = _WatchStream(rt, target.namespace, matches)
        stream.initial_events_end = initial_events is True
        as_table = self._table_renderer(request, target)
        if as_table is not None:
            render = as_table
            stream.render = lambda obj: render([obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")})
        with self.store.lock:
            unlisten = self.store.listen(on_event)
            try:
                backlog: list[Event] = []
                if initial_events is True or (initial_events is None and rv_param in ("", "0")):
                    stream.initial = self.store.list(rt.key, target.namespace)
                    stream.last_rv = self.store.resource_version
                elif rv_param in ("", "0"):  # sendInitialEvents=false: from now on
                    stream.last_rv = self.store.resource_version
                else:
                    stream.last_rv = int(rv_param)
                    # Only this resource's events: the history holds every kind.
                    backlog = [e for e in self.store.history_since(stream.last_rv) if e[2] == rt.key]
            except ApiError as exc:
                backlog, stream.error = [], exc
        try:
            resp = web.StreamResponse(status=200, headers={"Content-Type": JSON})
            resp.enable_chunked_encoding()
            await resp.prepare(request)
            record.status = 200
            with contextlib.suppress(ConnectionResetError):  # the client went away: the watch simply ends
                await stream.run(resp, request, queue, backlog, timeout, query.get("allowWatchBookmarks") == "true")
            return resp
        finally:
            unlisten()

    # ---- service proxy ----

    async def _proxy(self, request: web.Request, raw: bytes, rest: list[str]) -> web.StreamResponse:
        namespace, svc_part = rest[1], rest[3]
        services = RESOURCES["services"]
        verb = _METHOD_VERBS.get(request.method, "get")
        self._authorize(verb, services, "services/proxy", namespace, svc_part)
        name, port_spec = _split_service(svc_part)
        svc = self.store.try_get("services", namespace, name)
        if svc is None:
            raise ApiError(404, "NotFound", f'services "{name}" not found', {"name": name, "kind": "services"})
        port = _resolve_port(svc, port_spec)
        with self._lock:
            backend = self._backends.get((namespace, name, port)) if port is not None else None
        if backend is None:
            raise _no_endpoints(name)
        prefix = "/".join(request.rel_url.raw_path.strip("/").split("/")[:7])
        sub_path = request.rel_url.raw_path.strip("/")[len(prefix) :].lstrip("/")
        url = f"{backend}/{sub_path}"
        if request.rel_url.raw_query_string:
            url += "?" + request.rel_url.raw_query_string
        headers = {"Content-Type": request.headers["Content-Type"]} if "Content-Type" in request.headers else {}
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.request(request.method, url, data=raw or None, headers=headers) as upstream:
                body = await upstream.read()
                ctype = upstream.headers.get("Content-Type", "application/octet-stream")
                return web.Response(status=upstream.status, body=body, headers={"Content-Type": ctype})
        except aiohttp.ClientConnectionError as exc:
            ip = (svc.get("spec") or {}).get("clusterIP", "10.96.0.1")
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"error trying to reach service: dial tcp {ip}:{port}: connect: connection refused",
                {"causes": [{"reason": "UnexpectedServerResponse", "message": str(exc)}]},
            ) from None

    async def _close_session(self, _app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class _WatchStream:
    """Turns store events into the watch events one client should see, and writes them."""

    def __init__(self, rt: ResourceType, namespace: str | None, matches: Any) -> None:
        self.rt = rt
        self.namespace = namespace
        self.matches = matches
        self.initial: list[dict[str, Any]] = []
        self.error: ApiError | None = None
        self.last_rv = 0
        self.initial_events_end = False  # watch-list: a BOOKMARK marks the end of the initial ADDEDs
        self.render: Callable[[dict[str, Any]], dict[str, Any]] = lambda obj: obj  # e.g. into a Table

    def _visible(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        if self.namespace and self.rt.namespaced and obj["metadata"].get("namespace") != self.namespace:
            return False
        return bool(self.matches(obj))

    def translate(self, event: Event) -> tuple[str, dict[str, Any]] | None:
        """The event type this watcher sees (objects entering/leaving the selection become ADDED/DELETED)."""
        _, kind, _, obj, prev = event
        if kind == "ADDED":
            return ("ADDED", obj) if self._visible(obj) else None
        if kind == "DELETED":
            return ("DELETED", obj) if self._visible(obj) or self._visible(prev) else None
        now, before = self._visible(obj), self._visible(prev)
        if now:
            return ("MODIFIED" if before else "ADDED", obj)
        return ("DELETED", obj) if before else None

    async def run(
        self,
        resp: web.StreamResponse,
        request: web.Request,
        queue: asyncio.Queue[Event],
        backlog: list[Event],
        timeout: float,
        bookmarks: bool,
    ) -> None:
        if self.error is not None:
            await _send(resp, "ERROR", self.error.status())
            return
        for obj in self.initial:
            if self._visible(obj):
                await _send(resp, "ADDED", self.render(obj))
        if self.initial_events_end:
            meta = {
                "resourceVersion": str(self.last_rv),
                "annotations": {"k8s.io/initial-events-end": "true"},
            }
            await _send(resp, "BOOKMARK", {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta})
        for event in backlog:
            await self._emit(resp, event)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                event = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                continue
            await self._emit(resp, event)
        if bookmarks:
            meta = {"resourceVersion": str(self.last_rv or 0)}
            await _send(resp, "BOOKMARK", {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta})
        await resp.write_eof()

    async def _emit(self, resp: web.StreamResponse, event: Event) -> None:
        if event[0] <= self.last_rv:
            return
        self.last_rv = event[0]
        seen = self.translate(event)
        if seen is not None:
            await _send(resp, seen[0], self.render(seen[1]))


async def _send(resp: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await resp.write((json.dumps({"type": kind, "object": obj}) + "\n").encode())


# ---- helpers ----


def _send_initial_events(query: Any) -> bool | None:
    """Validate the watch-list parameters as ListOptions validation does.

    True: a watch-list (initial ADDEDs, then the end BOOKMARK); False: start from now (or from
    ``resourceVersion``) with no initial events; None: not asked (the legacy rules apply).
    """
    raw = query.get("sendInitialEvents")
    match = query.get("resourceVersionMatch", "")
    if raw is None:
        if match:
            raise ApiError(
                422,
                "Invalid",
                'ListOptions.meta.k8s.io "" is invalid: resourceVersionMatch: Forbidden: resourceVersionMatch is '
                "forbidden for watch unless sendInitialEvents is provided",
                {"kind": "ListOptions", "group": "meta.k8s.io"},
            )
        return None
    if raw not in ("true", "false"):
        raise bad_request(f'sendInitialEvents: Invalid value: "{raw}": must be a boolean')
    causes: list[str] = []
    if match != "NotOlderThan":
        causes.append(
            f'resourceVersionMatch: Unsupported value: "{match}": supported values: "NotOlderThan"'
            if match
            else "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to "
            "NotOlderThan"
        )
    if raw == "true" and query.get("allowWatchBookmarks") != "true":
        causes.append("allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true")
    if causes:
        raise ApiError(
            422,
            "Invalid",
            f'ListOptions.meta.k8s.io "" is invalid: {", ".join(causes)}',
            {"kind": "ListOptions", "group": "meta.k8s.io"},
        )
    return raw == "true"


SCALABLE = discovery.SCALABLE
_FIELD_VALIDATION = ("Ignore", "Warn", "Strict")


@dataclass
class _WriteOptions:
    """The write query parameters: dryRun, fieldManager, fieldValidation, force."""

    dry_run: bool
    field_manager: str
    manager: str  # fieldManager, else the User-Agent's product, as the real server names managers
    validation: str
    force: bool
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, request: web.Request, verb: str) -> _WriteOptions:
        query = request.query
        dry_run = _dry_run_values(query.getall("dryRun", []))
        validation = query.get("fieldValidation", "") or "Warn"
        if validation not in _FIELD_VALIDATION:
            raise bad_request(
                f'fieldValidation: Unsupported value: "{validation}": supported values: "Ignore", "Strict", "Warn"'
            )
        field_manager = query.get("fieldManager", "")
        if len(field_manager) > 128:
            raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
        agent = request.headers.get("User-Agent", "").split("/")[0][:128] or "unknown"
        force_raw = query.get("force", "")
        if force_raw not in ("", "true", "false"):
            raise bad_request(f'force: Invalid value: "{force_raw}": must be a boolean')
        return cls(dry_run, field_manager, field_manager or agent, validation, force_raw == "true")

    def check_fields(self, rt: ResourceType, body: Any) -> None:
        """Strict: unknown fields are a 400; Warn: a Warning header each; Ignore: nothing."""
        if self.validation == "Ignore" or not isinstance(body, dict) or rt.crd:
            return
        unknown = openapi.unknown_fields(rt.group, rt.version, rt.kind, body)
        if not unknown:
            return
        messages = [f'unknown field "{p}"' for p in unknown]
        if self.validation == "Strict":
            raise bad_request(
                f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: strict decoding error: '
                + ", ".join(messages)
            )
        self.warnings.extend(messages)

    def check_apply_fields(self, rt: ResourceType, config: dict[str, Any], namespace: str | None) -> None:
        """Apply configurations are typed against the schema: unknown fields fail even without Strict."""
        if rt.crd or self.validation == "Ignore":
            return
        unknown = openapi.unknown_fields(rt.group, rt.version, rt.kind, config)
        if not unknown:
            return
        name = (config.get("metadata") or {}).get("name", "")
        where = f"{namespace}/{name}" if namespace else name
        raise ApiError(
            400,
            "BadRequest",
            f"failed to create typed patch object ({where}; {rt.api_version}, Kind={rt.kind}): "
            + ", ".join(f".{p}: field not declared in schema" for p in unknown),
        )


def _dry_run_values(values: list[str]) -> bool:
    for value in values:
        if value != "All":
            raise bad_request(f'dryRun: Unsupported value: "{value}": supported values: "All"')
    return bool(values)


def _scale_of(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj["metadata"]
    selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
        },
        "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 1)},
        "status": {
            "replicas": (obj.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in sorted(selector.items())),
        },
    }


def _openapi_v3(path: str) -> web.Response:
    rest = path.rstrip("/")[len("/openapi/v3") :].strip("/")
    if not rest:
        return _json_response(openapi.root())
    parts = rest.split("/")
    if parts[0] == "api" and len(parts) == 2:
        group, version = "", parts[1]
    elif parts[0] == "apis" and len(parts) == 3:
        group, version = parts[1], parts[2]
    else:
        raise not_found_path()
    doc = openapi.group_version_document(group, version)
    if doc is None:
        raise not_found_path()
    headers = {"Cache-Control": "public, immutable", "Etag": f'"{openapi.document_hash(group, version)}"'}
    return web.Response(body=doc, content_type=JSON, headers=headers)


def _raise(exc: ApiError) -> dict[str, Any]:
    raise exc


def _try_json(raw: bytes) -> Any:
    if not raw:
        return None
    if raw.startswith(protobuf.MAGIC):
        try:
            return protobuf.decode(raw)
        except ValueError:
            return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _try_json_strict(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise bad_request(f"error decoding patch: {exc}") from None


_UNKNOWN_FORMAT = (
    "the body of the request was in an unknown format - accepted media types include: "
    "application/json, application/yaml, application/vnd.kubernetes.protobuf, application/cbor"
)


def _parse_body(request: web.Request, raw: bytes) -> Any:
    ctype = _content_type(request) or JSON
    if ctype == protobuf.MEDIA_TYPE:
        if not raw:
            raise bad_request("the body of the request was empty")
        try:
            return protobuf.decode(raw)
        except protobuf.UnsupportedKind:
            raise ApiError(415, "UnsupportedMediaType", _UNKNOWN_FORMAT) from None
        except (protobuf.ProtobufError, ValueError) as exc:
            raise bad_request(f"couldn't get version/kind; protobuf decode error: {exc}") from None
    if ctype and not (ctype.endswith("json") or ctype.endswith("yaml")):
        raise ApiError(415, "UnsupportedMediaType", _UNKNOWN_FORMAT)
    if not raw:
        raise bad_request("the body of the request was empty")
    try:
        return yaml.safe_load(raw) if ctype.endswith("yaml") else json.loads(raw)
    except (ValueError, yaml.YAMLError) as exc:
        raise bad_request(f"couldn't get version/kind; json parse error: {exc}") from None


def _content_type(request: web.Request) -> str:
    """The request's media type, '' when the header is absent (the real server then assumes JSON)."""
    return request.content_type if "Content-Type" in request.headers else ""


def _delete_options(request: web.Request, raw: bytes) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if raw:
        parsed = _parse_body(request, raw)
        if not isinstance(parsed, dict):
            raise bad_request("couldn't decode DeleteOptions: expected a JSON object")
        opts = parsed
    if "propagationPolicy" in request.query:
        opts["propagationPolicy"] = request.query["propagationPolicy"]
    return opts


def _patch_type(request: web.Request, rt: ResourceType) -> str:
    ctype = _content_type(request)
    patch_type = _PATCH_TYPES.get(ctype)
    if ctype.startswith("application/apply-patch"):
        raise ApiError(415, "UnsupportedMediaType", "server-side apply is not supported by the sandbox API server")
    if patch_type is None:
        raise unsupported_patch(rt)
    return patch_type


def _with_namespace(rt: ResourceType, body: Any, namespace: str | None) -> Any:
    if not isinstance(body, dict) or not rt.namespaced:
        return body
    meta = body.get("metadata")
    if isinstance(meta, dict) and meta.get("namespace") not in (None, "", namespace):
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    return body


def _check_names(rt: ResourceType, body: Any, target: _Target) -> Any:
    if not isinstance(body, dict):
        raise bad_request(f"the object provided is not a {rt.kind}: expected a JSON object")
    meta = body.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise bad_request("json: cannot unmarshal into Go struct field of type v1.ObjectMeta")
    if meta.get("name") != target.name:
        raise bad_request(
            f"the name of the object ({meta.get('name', '')}) does not match the name on the URL ({target.name})"
        )
    body = _with_namespace(rt, body, target.namespace)
    if rt.namespaced:
        meta["namespace"] = target.namespace
    return body


def _int_param(query: Any, name: str) -> int:
    value = query.get(name)
    if value in (None, ""):
        return 0
    try:
        return int(value)
    except ValueError:
        raise bad_request(f'{name}: Invalid value: "{value}": must be an integer') from None


def _list_item(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    """Items of a built-in list carry no kind/apiVersion on the wire; custom resources do."""
    if rt.crd:
        return obj
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _split_api_path(segments: list[str]) -> tuple[str, str, list[str]]:
    if len(segments) >= 3 and segments[0] == "api":
        return "", segments[1], segments[2:]
    if len(segments) >= 4 and segments[0] == "apis":
        return segments[1], segments[2], segments[3:]
    raise not_found_path()


def _parse_target(group: str, version: str, rest: list[str]) -> _Target:
    namespace: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3 and not (len(rest) == 3 and rest[2] in ("status", "finalize")):
        namespace, rest = rest[1], rest[2:]
    rt = _BY_PATH.get((group, version, rest[0]))
    if rt is None or len(rest) > 3 or (namespace is not None and not rt.namespaced):
        raise not_found_path()
    if rt.namespaced and namespace is None and len(rest) > 1:
        raise not_found_path()
    target = _Target(rt, namespace, rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)
    sub = target.subresource
    if sub is not None and not ((sub == "status" and rt.status_subresource) or (sub == "scale" and rt.key in SCALABLE)):
        raise not_found_path()
    return target


def _verb(request: web.Request, target: _Target) -> str:
    method = request.method
    watching = request.query.get("watch") in ("true", "1")
    if target.name is None:
        verbs = {"GET": "watch" if watching else "list", "POST": "create", "DELETE": "deletecollection"}
    else:
        verbs = {"GET": "watch" if watching else "get", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}
    verb = verbs.get(method)
    if verb is None:
        raise method_not_allowed()
    return verb


def _split_service(part: str) -> tuple[str, str]:
    pieces = part.split(":")
    if len(pieces) == 3:
        return pieces[1], pieces[2]
    if len(pieces) == 2:
        return pieces[0], pieces[1]
    return part, ""


def _resolve_port(svc: dict[str, Any], port_spec: str) -> int | None:
    ports = (svc.get("spec") or {}).get("ports") or []
    for p in ports:
        if (port_spec.isdigit() and p.get("port") == int(port_spec)) or (port_spec and p.get("name") == port_spec):
            return int(p["port"])
        if not port_spec and not p.get("name"):
            return int(p["port"])
    if not port_spec and len(ports) == 1:
        return int(ports[0]["port"])
    return None


def _no_endpoints(name: str) -> ApiError:
    return ApiError(503, "ServiceUnavailable", f'no endpoints available for service "{name}"', {})


def _fault_message(status: int, path: str) -> str:
    if status == 500:
        return "Internal error occurred: injected fault"
    if status == 409:
        return (
            "Operation cannot be fulfilled on the object: the object has been modified; please apply your "
            "changes to the latest version and try again"
        )
    if status == 429:
        return "Too many requests, please try again later."
    if status == 503:
        return "the server is currently unable to handle the request"
    return f"injected fault on {path}"
