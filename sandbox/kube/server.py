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
- authorization: by default everything is allowed but a deny list (``deny``); with
  ``enforce_rbac`` the Roles, ClusterRoles and bindings in the store decide, as the real RBAC
  authorizer does (``sandbox.kube.rbac``: the default bootstrap policy, aggregated ClusterRoles,
  escalation prevention on writing Roles and bindings), the deny list still applying on top;
  a refusal is a 403 with the real message. ``SelfSubjectAccessReview`` and
  ``SelfSubjectRulesReview`` answer from that same state (a rules review of a namespace lists
  exactly what is allowed there; without ``spec.namespace`` it is a 400, as for real);
- bearer-token authentication (401 without a known token): the server's own token is
  ``user`` in ``system:masters`` (a cluster admin); ``add_token`` adds other identities, e.g.
  a ServiceAccount's (``rbac.service_account``) for a client whose RBAC is to be enforced;
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
import logging
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
from sandbox.kube import crds, discovery, managed, openapi, protobuf, rbac, tables
from sandbox.kube.rbac import Attributes, Identity
from sandbox.kube.store import (
    RESOURCES,
    ApiError,
    Event,
    Manage,
    ResourceType,
    Store,
    bad_request,
    method_not_allowed,
    unsupported_patch,
)
from sandbox.tls import ServerCert

log = logging.getLogger(__name__)

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
_REVIEWS = ("selfsubjectaccessreviews.authorization.k8s.io", "selfsubjectrulesreviews.authorization.k8s.io")
_RBAC_WRITABLE = {
    "roles.rbac.authorization.k8s.io",
    "clusterroles.rbac.authorization.k8s.io",
    "rolebindings.rbac.authorization.k8s.io",
    "clusterrolebindings.rbac.authorization.k8s.io",
}
_IDENTITY = web.RequestKey("identity", Identity)  # who the request's token authenticates as
_ADMIN_REASON = 'RBAC: allowed by ClusterRoleBinding "sandbox-admin" of ClusterRole "cluster-admin" to User "{user}"'
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
    user: str = ""  # who its bearer token authenticated as ('' when it did not, or none was needed)


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
        self._token = token
        self.user = user
        self._identities: dict[str, Identity] = {token: Identity(user, (rbac.MASTERS, rbac.AUTHENTICATED))}
        self._rbac: rbac.Rbac | None = None  # set by enforce_rbac
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._denies: list[_Deny] = []
        self._backends: dict[tuple[str, str, int], str] = {}
        self._snapshots: collections.OrderedDict[str, _Snapshot] = collections.OrderedDict()
        self._hub = _WatchHub()
        self.store.listen(self._hub.on_event)
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

    def write_kubeconfig(
        self, path: str, context: str = "sandbox", namespace: str = "default", token: str | None = None
    ) -> str:
        """Write a standard kubeconfig for this server and ``token`` (default: the server's own,
        an admin's); return the path."""
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
            "users": [{"name": f"{context}-user", "user": {"token": token or self.token}}],
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

    @property
    def token(self) -> str:
        """The server's own token (the one its kubeconfig carries unless told otherwise)."""
        return self._token

    @token.setter
    def token(self, value: str) -> None:
        """Replace the server's own token: the old one stops authenticating, the new one is who it was."""
        with self._lock:
            who = self._identities.pop(self._token)
            self._identities[value] = who
            self._token = value

    def add_token(self, token: str, user: str, groups: tuple[str, ...] | list[str] = ()) -> Identity:
        """Accept ``token`` as ``user`` in ``groups`` (``system:authenticated`` is added, as every
        authenticator adds it). A ServiceAccount: ``add_token(t, *rbac.service_account(ns, n))``."""
        all_groups = tuple(groups) + (() if rbac.AUTHENTICATED in groups else (rbac.AUTHENTICATED,))
        who = Identity(user, all_groups)
        with self._lock:
            self._identities[token] = who
        return who

    def enforce_rbac(
        self, user: str | None = None, groups: tuple[str, ...] | list[str] = (), *, token: str | None = None
    ) -> None:
        """From now on authorize every request by RBAC, from the RBAC objects in the store.

        The default policy (cluster-admin for ``system:masters``, system:basic-user,
        system:discovery and system:public-info-viewer for ``system:authenticated``) is created
        if missing. With ``user``, ``token`` (default: the server's own) authenticates as that
        user in ``groups`` instead of as an admin. Identities in ``system:masters`` keep every
        right (the cluster-admin binding). The deny list still applies on top."""
        for key, obj in rbac.bootstrap_policy():
            if self.store.try_get(key, None, obj["metadata"]["name"]) is None:
                with contextlib.suppress(ApiError):  # created meanwhile
                    self.store.create(key, obj)
        if user is not None:
            self.add_token(token or self.token, user, groups)
            if (token or self.token) == self.token:
                self.user = user
        with self._lock:
            self._rbac = rbac.Rbac(self.store)

    def relax_rbac(self) -> None:
        """Back to allow-all (but the deny list)."""
        with self._lock:
            self._rbac = None

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
        who = self._authenticate(request)
        record.user = who.user
        await self._maybe_fault(request)
        if not _is_resource_path(path):
            self._authorize_path(who, request.method, path)
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

    def _authenticate(self, request: web.Request) -> Identity:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        with self._lock:
            who = self._identities.get(token.strip()) if scheme.lower() == "bearer" else None
        if who is None:
            raise ApiError(401, "Unauthorized", "Unauthorized")
        request[_IDENTITY] = who
        return who

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

    def _enforcer(self) -> rbac.Rbac | None:
        with self._lock:
            return self._rbac

    def _decide(
        self,
        who: Identity,
        verb: str,
        group: str,
        resource: str,
        namespace: str | None,
        name: str | None,
        namespaced: bool,
    ) -> tuple[bool, str]:
        """(allowed, reason): the deny list, then RBAC when enforced (else everything is allowed)."""
        if self._denied(verb, group, resource, namespace, namespaced):
            return False, ""
        enforcer = self._enforcer()
        if enforcer is None:
            return True, _ADMIN_REASON.format(user=who.user)
        plural, _, sub = resource.partition("/")
        return enforcer.authorize(who, Attributes(verb, group, plural, sub, namespace or "", name or ""))

    def _authorize(
        self,
        who: Identity,
        verb: str,
        rt: ResourceType,
        resource: str,
        namespace: str | None,
        name: str | None,
    ) -> None:
        allowed, reason = self._decide(who, verb, rt.group, resource, namespace, name, rt.namespaced)
        if allowed:
            return
        scope = f'in the namespace "{namespace}"' if rt.namespaced and namespace else "at the cluster scope"
        why = f'User "{who.user}" cannot {verb} resource "{resource}" in API group "{rt.group}" {scope}'
        if reason:
            why = f"{why}: {reason}"
        qualified = resource if not rt.group else f"{resource.split('/')[0]}.{rt.group}"
        if "/" in resource and rt.group:
            qualified = f"{qualified}/{resource.split('/', 1)[1]}"
        subject = f'{qualified} "{name}"' if name else qualified
        details: dict[str, Any] = {"name": name} if name else {}
        if rt.group:
            details["group"] = rt.group
        details["kind"] = resource.split("/")[0]
        raise ApiError(403, "Forbidden", f"{subject} is forbidden: {why}", details)

    def _authorize_path(self, who: Identity, method: str, path: str) -> None:
        """A non-resource request (discovery, OpenAPI): only RBAC, when enforced, decides."""
        enforcer = self._enforcer()
        if enforcer is None:
            return
        verb = method.lower()
        allowed, reason = enforcer.authorize(who, Attributes(verb, path=path, resource_request=False))
        if not allowed:
            why = f'User "{who.user}" cannot {verb} path "{path}"' + (f": {reason}" if reason else "")
            raise ApiError(403, "Forbidden", f"forbidden: {why}", {})

    def _authorize_review(self, who: Identity, rt: ResourceType) -> None:
        """Creating an access or rules review: allowed to every user (system:basic-user); under
        RBAC, as that binding (or its absence) decides. The deny list never applies."""
        enforcer = self._enforcer()
        if enforcer is None:
            return
        allowed, reason = enforcer.authorize(who, Attributes("create", rt.group, rt.plural))
        if not allowed:
            why = (
                f'User "{who.user}" cannot create resource "{rt.plural}" in API group "{rt.group}" at the cluster scope'
            )
            why += f": {reason}" if reason else ""
            raise ApiError(
                403, "Forbidden", f"{rt.plural}.{rt.group} is forbidden: {why}", {"group": rt.group, "kind": rt.plural}
            )

    def _access_review(self, who: Identity, body: Any) -> web.Response:
        if not isinstance(body, dict):
            raise bad_request("couldn't get version/kind; json parse error: expected a JSON object")
        spec = body.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        non_resource = spec.get("nonResourceAttributes")
        allowed, reason = True, ""
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
            allowed, reason = self._decide(
                who,
                str(attrs.get("verb", "")),
                group,
                resource,
                attrs.get("namespace") or None,
                attrs.get("name") or None,
                namespaced,
            )
        elif isinstance(non_resource, dict) and (enforcer := self._enforcer()) is not None:
            verb, path = str(non_resource.get("verb", "")), str(non_resource.get("path", ""))
            allowed, reason = enforcer.authorize(who, Attributes(verb, path=path, resource_request=False))
        elif self._enforcer() is None:
            reason = _ADMIN_REASON.format(user=who.user)
        status: dict[str, Any] = {"allowed": allowed}
        if reason:
            status["reason"] = reason
        out = {
            "kind": "SelfSubjectAccessReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": spec,
            "status": status,
        }
        return _json_response(out, 201)

    def _rules_review(self, who: Identity, body: Any) -> web.Response:
        """SelfSubjectRulesReview (pkg/registry/authorization/selfsubjectrulesreview): the rules
        that apply to ``who`` in ``spec.namespace``; the answer carries no spec."""
        if not isinstance(body, dict):
            raise bad_request("couldn't get version/kind; json parse error: expected a JSON object")
        spec = body.get("spec") or {}
        namespace = spec.get("namespace") if isinstance(spec, dict) else None
        if not namespace:
            raise bad_request("no namespace on request")
        rules, errors = self._rules_in(who, str(namespace))
        status: dict[str, Any] = {
            "resourceRules": [_resource_rule(r) for r in rules if r.get("resources")],
            "nonResourceRules": [
                {"verbs": list(r.get("verbs") or []), "nonResourceURLs": list(r["nonResourceURLs"])}
                for r in rules
                if r.get("nonResourceURLs")
            ],
            "incomplete": False,
        }
        if errors:
            status["evaluationError"] = rbac.aggregate(errors)
        out = {
            "kind": "SelfSubjectRulesReview",
            "apiVersion": "authorization.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {},
            "status": status,
        }
        return _json_response(out, 201)

    def _rules_in(self, who: Identity, namespace: str) -> tuple[list[rbac.Rule], list[str]]:
        """(the rules that hold for ``who`` in ``namespace``, RBAC resolution errors).

        Without a deny applying there: RBAC's rules as they are (allow-all: cluster-admin's, plus
        the default grants every user has). With one: every served resource and subresource
        listed explicitly with the verbs still allowed (rules are allow-only, so nothing denied
        may appear in them)."""
        enforcer = self._enforcer()
        if enforcer is None:
            rules: list[rbac.Rule] = [
                {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
                {"verbs": ["*"], "nonResourceURLs": ["*"]},
                *rbac.BASIC_USER_RULES,
                *rbac.DISCOVERY_RULES,
                *rbac.PUBLIC_INFO_RULES,
            ]
            errors: list[str] = []
        else:
            rules, errors = enforcer.rules_for(who, namespace)
        with self._lock:
            applying = [d for d in self._denies if d.namespace in (None, namespace)]
        if not applying:
            return [copy.deepcopy(r) for r in rules], errors
        return self._explicit_rules(rules, applying, namespace), errors

    def _explicit_rules(self, rules: list[rbac.Rule], applying: list[_Deny], namespace: str) -> list[rbac.Rule]:
        """``rules`` minus what the deny list takes away in ``namespace``, spelled out per served
        resource (grouped by API group and verb set)."""
        simple = [r for r in rules if r.get("resources") and not r.get("resourceNames")]

        def allowed(verb: str, rt: ResourceType, resource: str) -> bool:
            plural, _, sub = resource.partition("/")
            ns = namespace if rt.namespaced else None
            if rt.key not in _REVIEWS and self._denied(verb, rt.group, resource, ns, rt.namespaced):
                return False
            attrs = Attributes(verb, rt.group, plural, sub, ns or "")
            return any(rbac.rule_allows(r, attrs) for r in simple)

        out: list[rbac.Rule] = []
        by_group: dict[str, dict[tuple[str, ...], list[str]]] = {}
        for rt, resource, verbs in _served_resources():
            ok = tuple(sorted(v for v in verbs if allowed(v, rt, resource)))
            if ok:
                by_group.setdefault(rt.group, {}).setdefault(ok, []).append(resource)
        for group, sets in by_group.items():
            for verbs, resources in sets.items():
                out.append({"verbs": list(verbs), "apiGroups": [group], "resources": sorted(resources)})
        for r in rules:  # rules naming objects: kept without any verb a deny could touch
            if r.get("resourceNames") and r.get("resources"):
                kept = [v for v in r.get("verbs") or [] if not _deny_may_touch(applying, v, r)]
                if kept:
                    out.append({**copy.deepcopy(r), "verbs": kept})
            elif r.get("nonResourceURLs"):
                out.append(copy.deepcopy(r))
        return out

    def _guarded(self, request: web.Request, rt: ResourceType, namespace: str | None, hook: Manage) -> Manage:
        """``hook`` (a store ``manage`` callback), preceded by the escalation check of the object
        about to be written when one applies (a refusal raised there writes nothing)."""
        guard = self._escalation_guard(request[_IDENTITY], rt, namespace)
        if guard is None:
            return hook

        def run(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
            guard(new)
            hook(old, new)

        return run

    def _escalation_guard(
        self, who: Identity, rt: ResourceType, namespace: str | None
    ) -> Callable[[dict[str, Any]], None] | None:
        """RBAC escalation prevention (pkg/registry/rbac/*/policybased) for writing ``rt``: a
        check of the object about to be stored, or None when nothing is to be checked."""
        enforcer = self._enforcer()
        if rt.key not in _RBAC_WRITABLE or enforcer is None or who.privileged:
            return None
        ns = namespace or ""

        def check(obj: dict[str, Any]) -> None:
            name = (obj.get("metadata") or {}).get("name", "")
            if rt.kind in ("Role", "ClusterRole"):
                if self._decide(who, "escalate", rt.group, rt.plural, namespace, name, rt.namespaced)[0]:
                    return
                granted = list(obj.get("rules") or [])
            else:
                ref = obj.get("roleRef") or {}
                bound = {"Role": "roles", "ClusterRole": "clusterroles"}.get(str(ref.get("kind")))
                if (
                    bound
                    and self._decide(
                        who, "bind", str(ref.get("apiGroup", "")), bound, namespace, str(ref.get("name", "")), bool(ns)
                    )[0]
                ):
                    return
                try:
                    granted = enforcer.role_ref_rules(ref, ns)
                except rbac.RoleNotFound as exc:
                    raise ApiError(
                        404, "NotFound", str(exc), {"name": exc.name, "group": rbac.GROUP, "kind": exc.kind}
                    ) from None
            error = enforcer.escalation_error(who, ns, granted)
            if error is not None:
                raise ApiError(
                    403,
                    "Forbidden",
                    f'{rt.plural}.{rt.group} "{name}" is forbidden: {error}',
                    {"name": name, "group": rt.group, "kind": rt.plural},
                )

        return check

    # ---- resources ----

    async def _serve_resource(
        self, request: web.Request, raw: bytes, target: _Target, record: RequestRecord
    ) -> web.StreamResponse:
        verb = _verb(request, target)
        if verb not in target.rt.verbs:
            raise method_not_allowed()
        who: Identity = request[_IDENTITY]
        if target.rt.key in _REVIEWS:
            self._authorize_review(who, target.rt)  # allowed to everyone, as system:basic-user is
            body = _parse_body(request, raw)
            if target.rt.plural == "selfsubjectaccessreviews":
                return self._access_review(who, body)
            return self._rules_review(who, body)
        resource = target.rt.plural + (f"/{target.subresource}" if target.subresource else "")
        self._authorize(who, verb, target.rt, resource, target.namespace, target.name)
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

        def record(old: dict[str, Any] | None, new: dict[str, Any]) -> None:
            managed.record_update(old, new, manager, sub)

        track = self._guarded(request, rt, target.namespace, record)

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
            config = _load_yaml(raw) if raw else None
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

            def keep_fields(_old: dict[str, Any] | None, new: dict[str, Any]) -> None:
                new["metadata"]["managedFields"] = copy.deepcopy(fields_entries)

            keep = self._guarded(request, rt, target.namespace, keep_fields)

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
        queue: asyncio.Queue[_Seen] = asyncio.Queue()
        initial_events = _send_initial_events(query)
        stream = _WatchStream(rt, target.namespace, matches)
        stream.initial_events_end = initial_events is True
        as_table = self._table_renderer(request, target)
        if as_table is not None:
            render = as_table
            stream.render = lambda obj: render([obj], {"resourceVersion": obj["metadata"].get("resourceVersion", "")})
            stream.shared_encoding = False
        watcher = _Watcher(stream, loop, queue)
        stream.bookmark_rv = lambda: self._hub.bookmark_rv(watcher, self.store.lock)
        with self.store.lock:
            unlisten = self._hub.add(watcher, self.store.lock)
            try:
                backlog: list[Event] = []
                if initial_events is True or (initial_events is None and rv_param in ("", "0")):
                    stream.initial = self.store.list_shared(rt.key, target.namespace)  # read only
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
        self._authorize(request[_IDENTITY], verb, services, "services/proxy", namespace, svc_part)
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


@dataclass
class _Seen:
    """One store event as one watch sees it (the store's shared object, never mutated)."""

    rv: int
    kind: str  # ADDED / MODIFIED / DELETED, as this watch sees it
    obj: dict[str, Any]
    encoded: dict[str, bytes]  # kind -> the event's JSON line, shared by every watch of the event


@dataclass(eq=False)
class _Watcher:
    stream: _WatchStream
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[_Seen]
    posted_rv: int = 0  # the newest event handed to this watch (written and read under the store lock)


class _WatchHub:
    """Hands each store event only to the watches of its resource and namespace.

    One store listener for all the server's watches, indexed by (resource key, namespace; None
    for a watch of every namespace or of a cluster-scoped kind). The selection (namespace,
    label and field selectors, and an object entering or leaving it) is decided here, on the
    writing thread under the store's lock, so an event no watch selects never reaches the
    event loop; the watches that do see it share one JSON encoding of it.

    Bookmarks: a watch that ends with a BOOKMARK reports the newest resourceVersion of its
    resource it is sure of, as before when it saw (and skipped) every event of its resource:
    ``bookmark_rv`` is the newest event of the resource once everything handed to the watch
    has been written, else the last event written.
    """

    def __init__(self) -> None:
        self._by_key: dict[str, dict[str | None, list[_Watcher]]] = {}
        self._latest: dict[str, int] = {}  # resource key -> resourceVersion of its newest event

    def add(self, watcher: _Watcher, lock: Any) -> Callable[[], None]:
        """Register (call with the store lock held, as with ``Store.listen``); returns the removal."""
        stream = watcher.stream
        ns = stream.namespace if stream.rt.namespaced and stream.namespace else None
        with lock:
            self._by_key.setdefault(stream.rt.key, {}).setdefault(ns, []).append(watcher)

        def remove() -> None:
            with lock:
                group = self._by_key.get(stream.rt.key, {})
                watchers = group.get(ns, [])
                if watcher in watchers:
                    watchers.remove(watcher)
                if not watchers:
                    group.pop(ns, None)

        return remove

    def on_event(self, event: Event) -> None:
        """The store listener (on the writing thread, with the store lock held)."""
        rv, _, key, obj, _ = event
        self._latest[key] = rv
        group = self._by_key.get(key)
        if not group:
            return
        ns = (obj.get("metadata") or {}).get("namespace")
        watchers = [*group.get(None, ()), *(group.get(ns, ()) if ns else ())]
        encoded: dict[str, bytes] = {}
        posts: dict[asyncio.AbstractEventLoop, list[tuple[_Watcher, _Seen]]] = {}
        for watcher in watchers:
            try:
                seen = watcher.stream.translate(event)
            except Exception:
                log.exception("watch filter failed on %s %s", event[1], key)
                continue
            if seen is None:
                continue
            watcher.posted_rv = rv
            posts.setdefault(watcher.loop, []).append((watcher, _Seen(rv, seen[0], seen[1], encoded)))
        for loop, items in posts.items():
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(_post, items)

    def bookmark_rv(self, watcher: _Watcher, lock: Any) -> int:
        stream = watcher.stream
        with lock:
            if watcher.posted_rv > stream.last_rv:  # handed over, not yet written
                return stream.last_rv
            return max(stream.last_rv, self._latest.get(stream.rt.key, 0))


def _post(items: list[tuple[_Watcher, _Seen]]) -> None:
    for watcher, seen in items:
        watcher.queue.put_nowait(seen)


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
        self.shared_encoding = True  # False when render makes this watch's lines its own
        self.bookmark_rv: Callable[[], int] = lambda: self.last_rv

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
        queue: asyncio.Queue[_Seen],
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
                seen = await asyncio.wait_for(queue.get(), min(remaining, 1.0))
            except TimeoutError:
                if request.transport is None or request.transport.is_closing():
                    return
                continue
            await self._emit_seen(resp, seen)
        if bookmarks:
            meta = {"resourceVersion": str(self.bookmark_rv() or 0)}
            await _send(resp, "BOOKMARK", {"kind": self.rt.kind, "apiVersion": self.rt.api_version, "metadata": meta})
        await resp.write_eof()

    async def _emit(self, resp: web.StreamResponse, event: Event) -> None:
        if event[0] <= self.last_rv:
            return
        self.last_rv = event[0]
        seen = self.translate(event)
        if seen is not None:
            await _send(resp, seen[0], self.render(seen[1]))

    async def _emit_seen(self, resp: web.StreamResponse, seen: _Seen) -> None:
        """A live event the hub already selected for this watch."""
        if seen.rv <= self.last_rv:  # already sent from the backlog
            return
        self.last_rv = seen.rv
        if not self.shared_encoding:
            await _send(resp, seen.kind, self.render(seen.obj))
            return
        line = seen.encoded.get(seen.kind)
        if line is None:
            line = seen.encoded[seen.kind] = _line(seen.kind, seen.obj)
        await resp.write(line)


def _line(kind: str, obj: dict[str, Any]) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


async def _send(resp: web.StreamResponse, kind: str, obj: dict[str, Any]) -> None:
    await resp.write(_line(kind, obj))


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


def _is_resource_path(path: str) -> bool:
    """As the real RequestInfo resolver: ``/api/<v>/<resource>...`` and ``/apis/<g>/<v>/<resource>...``
    are resource requests; everything else (discovery, OpenAPI, ...) is a non-resource URL."""
    parts = path.strip("/").split("/")
    return (parts[0] == "api" and len(parts) >= 3) or (parts[0] == "apis" and len(parts) >= 4)


def _served_resources() -> list[tuple[ResourceType, str, tuple[str, ...]]]:
    """(type, resource or resource/subresource, verbs) for everything the server serves and
    authorizes (roles and clusterroles also ``bind`` and ``escalate``, as RBAC checks them)."""
    out: list[tuple[ResourceType, str, tuple[str, ...]]] = []
    for rt in RESOURCES.values():
        verbs = rt.verbs
        if rt.key in ("roles.rbac.authorization.k8s.io", "clusterroles.rbac.authorization.k8s.io"):
            verbs = (*verbs, "bind", "escalate")
        out.append((rt, rt.plural, verbs))
        if rt.status_subresource:
            out.append((rt, f"{rt.plural}/status", ("get", "patch", "update")))
        if rt.key in SCALABLE:
            out.append((rt, f"{rt.plural}/scale", ("get", "patch", "update")))
        if rt.key == "services":
            out.append((rt, "services/proxy", ("create", "delete", "get", "patch", "update")))
    return out


def _deny_may_touch(denies: list[_Deny], verb: str, rule: dict[str, Any]) -> bool:
    groups, resources = rule.get("apiGroups") or [], rule.get("resources") or []
    return any(
        d.verb in ("*", verb)
        and (d.group == "*" or "*" in groups or d.group in groups)
        and (d.resource == "*" or "*" in resources or d.resource in resources or "/" in d.resource)
        for d in denies
    )


def _resource_rule(rule: dict[str, Any]) -> dict[str, Any]:
    """authorizationv1.ResourceRule: verbs, and apiGroups/resources/resourceNames when set."""
    out: dict[str, Any] = {"verbs": list(rule.get("verbs") or [])}
    for key in ("apiGroups", "resources", "resourceNames"):
        if rule.get(key):
            out[key] = list(rule[key])
    return out


def _raise(exc: ApiError) -> dict[str, Any]:
    raise exc


def _load_yaml(raw: bytes) -> Any:
    """``yaml.safe_load``, parsed by libyaml when PyYAML has it (the same loader's resolver and
    constructor, so the same result); a document libyaml refuses is parsed again by the Python
    loader, so the error is the one ``yaml.safe_load`` reports."""
    loader = getattr(yaml, "CSafeLoader", None)
    if loader is not None:
        try:
            return yaml.load(raw, Loader=loader)
        except yaml.YAMLError:
            pass
    return yaml.safe_load(raw)


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
        return _load_yaml(raw) if ctype.endswith("yaml") else json.loads(raw)
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
