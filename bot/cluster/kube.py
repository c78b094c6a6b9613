"""The bot's only door to the Kubernetes API (the official ``kubernetes`` client).

Everything returns plain dicts parsed from the API's JSON (``_preload_content=False``), so
values such as resourceVersions and quantities arrive exactly as the server sent them. Errors
keep the API's own Status message (``KubeError.message``), which is what a person needs to see.
Every call has a client-side timeout (``_request_timeout`` = (connect, read)); a call the API
server does not answer in time is a temporary KubeError (the engine retries it). Watches also ask
the server to end them (``timeoutSeconds``), read with a slightly longer client timeout, and
reconnect from the last resourceVersion seen when the connection breaks.

``http_client()`` is an httpx client for the API server's service proxy (to reach the Milvus
proxy without a port-forward). It attaches the Kubernetes credentials (bearer token, client
certificate) only to requests whose scheme, host and port are the API server's, and strips any
other ``Authorization`` from them; requests to any other origin (a direct MILVUS_URL) go out
with neither.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import MaxRetryError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from bot import audit, metrics
from bot.cluster.throttle import THROTTLED_TRIES, resend_after

log = logging.getLogger(__name__)
JSON = dict[str, Any]

CONNECT_TIMEOUT = 5.0
DEFAULT_READ_TIMEOUT = 30.0
WATCH_READ_MARGIN = 5.0  # a watch's client read timeout: the server's timeoutSeconds plus this
WATCH_MAX_FAILURES = 3  # consecutive broken connections before a watch gives up (callers then list)


class RawWatch(watch.Watch):
    """A watch that yields the API's JSON as is: no model validation that could drop an event.

    Not ``stream(..., deserialize=False)``: that path skips the ``raw_object`` key its own ERROR
    handling then reads (kubernetes 37), so a 410 Gone would raise KeyError instead of ApiException."""

    def get_return_type(self, func: Callable[..., Any]) -> None:
        return None


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP code (0 when the server was unreachable).

    What is raised is one of the subclasses, which say how to retry:

    KubeError            anything else (403, 422, ...): retrying the same call will not help
    ├── KubeTemporary    no answer, 429 or 5xx: the same call may pass later (``retry_after``)
    ├── KubeConflict     409: the object is not in the state the call required (a precondition)
    └── KubeNotFound     404: no such object (or no such kind)
    """

    def __init__(self, action: str, status: int, message: str) -> None:
        super().__init__(f"{action}: {message}" + (f" (HTTP {status})" if status else ""))
        self.action = action
        self.status = status
        self.message = message

    @property
    def temporary(self) -> bool:
        return isinstance(self, KubeTemporary)

    @property
    def not_found(self) -> bool:
        return isinstance(self, KubeNotFound)


class KubeTemporary(KubeError):
    """No answer, 429 Too Many Requests or a 5xx: the same call may pass later.

    ``retry_after`` is the server's Retry-After (seconds) when it sent one."""

    def __init__(self, action: str, status: int, message: str, retry_after: float | None = None) -> None:
        super().__init__(action, status, message)
        self.retry_after = retry_after


class KubeConflict(KubeError):
    """409: a precondition (uid, resourceVersion) does not hold, or the object already exists."""


class KubeNotFound(KubeError):
    """404: the object (or its kind) does not exist."""


def kube_error(action: str, status: int, message: str, retry_after: float | None = None) -> KubeError:
    """The KubeError subclass for an HTTP ``status`` (0: no answer)."""
    if status == 0 or status == 429 or status >= 500:
        return KubeTemporary(action, status, message, retry_after)
    if status == 409:
        return KubeConflict(action, status, message)
    if status == 404:
        return KubeNotFound(action, status, message)
    return KubeError(action, status, message)


def _kind(err: KubeError) -> str:
    """The metrics label of an error: how it is retried."""
    if isinstance(err, KubeTemporary):
        return "temporary"
    if isinstance(err, KubeConflict):
        return "conflict"
    if isinstance(err, KubeNotFound):
        return "not_found"
    return "other"


def _retry_after(err: ApiException) -> float | None:
    """The Retry-After of an API answer, in seconds (the API server sends the delta-seconds form)."""
    value = (err.headers or {}).get("Retry-After")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _status_message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "{}")
        return str(body.get("message") or err.reason)
    except (ValueError, TypeError):
        return str(err.reason)


def _timeout_of(fn: Callable[..., Any]) -> tuple[float, float]:
    """The (connect, read) timeout of the Kube whose API client ``fn`` is bound to."""
    api = getattr(getattr(fn, "__self__", None), "api_client", None)
    return getattr(api, "bot_request_timeout", (CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT))


def _is_timeout(err: BaseException) -> bool:
    if isinstance(err, MaxRetryError):
        return isinstance(err.reason, Urllib3Timeout | TimeoutError)
    return isinstance(err, Urllib3Timeout | TimeoutError)


def _unreachable(action: str, err: BaseException, timeout: tuple[float, float]) -> KubeError:
    if _is_timeout(err):
        return KubeTemporary(action, 0, f"the Kubernetes API server did not answer within {timeout[1]:g}s")
    return KubeTemporary(action, 0, f"cannot reach the Kubernetes API: {err}")


def _call(action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
    """One API call with its (connect, read) timeout; every failure is a KubeError (status 0:
    no answer, e.g. the server did not answer in time: temporary).

    A 429 (the API server's priority and fairness: the request was not executed) is sent
    again after its Retry-After, a few times, as client-go does; only then is it an error."""
    timeout = kwargs.pop("_request_timeout", None) or _timeout_of(fn)
    for attempt in range(1, THROTTLED_TRIES + 1):
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=timeout, **kwargs)
        except ApiException as err:
            wait = resend_after(err.status or 0, attempt, _retry_after(err))
            if wait is not None:
                log.info("%s: throttled (429), again in %gs", action, wait)
                time.sleep(wait)
                continue
            failure = kube_error(action, err.status or 0, _status_message(err), _retry_after(err))
            metrics.kube_error(_kind(failure))
            raise failure from None
        except (Urllib3Error, OSError) as err:
            metrics.kube_error("temporary")
            raise _unreachable(action, err, timeout) from None
        data = resp.data
        return json.loads(data) if data else {}
    raise AssertionError("unreachable")  # the loop returns or raises


_MILVUS = ("milvus.io", "v1beta1")


def _audited(verb: str, obj: str, call: Callable[[], Any], result: Callable[[Any], str] | None = None) -> Any:
    """Run one mutating call and put it in the audit trail: verb, object and what came of it."""
    try:
        answer = call()
    except KubeError as err:
        audit.record("kubernetes", verb=verb, object=obj, result=f"HTTP {err.status}: {err.message}")
        raise
    audit.record("kubernetes", verb=verb, object=obj, result=result(answer) if result else "done")
    return answer


def _gone_or_deleted(deleted: bool) -> str:
    return "deleted" if deleted else "already gone"


def _unless_missing(action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON | None:
    """``_call``, with NotFound answered as None (reads of optional objects, deletes that may be done)."""
    try:
        return _call(action, fn, *args, **kwargs)
    except KubeNotFound:
        return None


@dataclass(frozen=True)
class AccessCheck:
    verb: str
    resource: str
    namespace: str | None
    group: str = ""


def rules_allow(rules: list[JSON], check: AccessCheck) -> bool:
    """Whether RBAC resource rules (a SelfSubjectRulesReview's) allow ``check``, matched as the
    RBAC authorizer does: verb, API group and resource each listed or ``*``; a subresource as
    ``resource/sub`` or ``*/sub``; a rule limited to resourceNames does not cover a check of no name."""
    sub = check.resource.partition("/")[2]
    names = {check.resource, "*"} | ({f"*/{sub}"} if sub else set())
    for rule in rules:
        if rule.get("resourceNames"):
            continue
        verbs, groups, resources = (set(rule.get(k) or []) for k in ("verbs", "apiGroups", "resources"))
        if {check.verb, "*"} & verbs and {check.group, "*"} & groups and names & resources:
            return True
    return False


def _delete_options(uid: str | None) -> JSON | None:
    """DeleteOptions with a uid precondition: the API answers 409 Conflict if the object by that
    name is not the one with this uid (re-created since it was seen)."""
    if not uid:
        return None
    return {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}


def _origin(url: httpx.URL | str) -> tuple[str, str, int]:
    """(scheme, host, port) with the scheme's default port made explicit."""
    u = httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    return u.scheme, u.host.lower(), port


class _ByOrigin(httpx.BaseTransport):
    """Requests to ``origin`` go through ``kube`` (its TLS client certificate and CA); all others
    through ``other`` (no client certificate, default verification)."""

    def __init__(self, origin: tuple[str, str, int], kube: httpx.BaseTransport, other: httpx.BaseTransport) -> None:
        self.origin = origin
        self.kube = kube
        self.other = other

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        transport = self.kube if _origin(request.url) == self.origin else self.other
        return transport.handle_request(request)

    def close(self) -> None:
        self.kube.close()
        self.other.close()


class Kube:
    def __init__(self, api: client.ApiClient, request_timeout: float = DEFAULT_READ_TIMEOUT) -> None:
        self.api = api
        self.request_timeout = request_timeout
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)
        self.authz = client.AuthorizationV1Api(api)

    @classmethod
    def connect(cls, kubeconfig: str | None, context: str | None) -> Kube:
        """Kubeconfig (KUBECONFIG / KUBE_CONTEXT) when given or present, else the pod's in-cluster config."""
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        except (config.ConfigException, FileNotFoundError, TypeError):
            if kubeconfig:
                raise
            config.load_incluster_config(client_configuration=configuration)
        configuration.retries = False  # a hung call is reported, not retried 3 more times inside urllib3
        return cls(client.ApiClient(configuration))

    @property
    def request_timeout(self) -> float:
        """Read timeout (seconds) of every ordinary call (KUBE_REQUEST_TIMEOUT_SECONDS)."""
        return float(_timeout_of(self.core.list_namespaced_pod)[1])

    @request_timeout.setter
    def request_timeout(self, seconds: float) -> None:
        # Stored on the API client, where ``_call`` finds it from the bound API method.
        setattr(self.api, "bot_request_timeout", (min(CONNECT_TIMEOUT, seconds), seconds))  # noqa: B010

    @property
    def host(self) -> str:
        return str(self.api.configuration.host).rstrip("/")

    def http_client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client for the service proxy that sends this API client's credentials to the
        API server only (same scheme, host and port); other hosts get neither token nor cert.

        A request to the API server has any ``Authorization`` it carried replaced by the
        Kubernetes one (or removed when the Kubernetes identity is a client certificate), so a
        Milvus token never reaches the API server."""
        cfg = self.api.configuration
        tls = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if not cfg.verify_ssl:  # insecure-skip-tls-verify
            tls.check_hostname = False
            tls.verify_mode = ssl.CERT_NONE
        if cfg.cert_file:
            tls.load_cert_chain(cfg.cert_file, cfg.key_file)
        api_origin = _origin(self.host)

        def auth(request: httpx.Request) -> httpx.Request:
            if _origin(request.url) != api_origin:
                return request
            request.headers.pop("Authorization", None)
            token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
            if token:
                request.headers["Authorization"] = token
            return request

        transport = _ByOrigin(api_origin, httpx.HTTPTransport(verify=tls), httpx.HTTPTransport())
        return httpx.Client(transport=transport, auth=auth, timeout=timeout)

    # --- reads -------------------------------------------------------------------------------
    def list_secrets(self, namespace: str, selector: str) -> list[JSON]:
        return _call("list secrets", self.core.list_namespaced_secret, namespace, label_selector=selector)["items"]

    def list_pvcs(self, namespace: str, selector: str) -> list[JSON]:
        return self.pvcs_resource_version(namespace, selector)[0]

    def pvcs_resource_version(self, namespace: str, selector: str) -> tuple[list[JSON], str]:
        """The PVCs with ``selector``, and the list's resourceVersion (to watch from)."""
        fn = self.core.list_namespaced_persistent_volume_claim
        data = _call("list persistentvolumeclaims", fn, namespace, label_selector=selector)
        return data["items"], data["metadata"].get("resourceVersion", "")

    def list_pvs(self) -> dict[str, JSON]:
        """Every PV by name: one LIST, not a GET per PV (PVs have no field to select by claim)."""
        items = _call("list persistentvolumes", self.core.list_persistent_volume)["items"]
        return {pv["metadata"]["name"]: pv for pv in items}

    def list_pods(self, namespace: str, selector: str) -> list[JSON]:
        return _call("list pods", self.core.list_namespaced_pod, namespace, label_selector=selector)["items"]

    def pods_resource_version(self, namespace: str, selector: str) -> tuple[list[JSON], str]:
        data = _call("list pods", self.core.list_namespaced_pod, namespace, label_selector=selector)
        return data["items"], data["metadata"].get("resourceVersion", "")

    def pod_events(self, namespace: str, pod: str, limit: int = 5) -> list[JSON]:
        items = [
            e
            for e in _call("list events", self.core.list_namespaced_event, namespace)["items"]
            if e.get("involvedObject", {}).get("name") == pod
        ]
        items.sort(key=lambda e: e.get("lastTimestamp") or e.get("eventTime") or "")
        return items[-limit:]

    def denied(self, checks: list[AccessCheck]) -> list[AccessCheck]:
        """The checks this identity may not do.

        One SelfSubjectRulesReview per namespace answers most of them at once: what its rules
        allow is allowed. Everything else, and every cluster-scoped check (a namespace's rules
        also list ClusterRoles bound in it, which do not reach cluster-scoped resources), is
        asked with a SelfSubjectAccessReview each, so a rule the review cannot show (another
        authorizer, ``incomplete``) never refuses an upgrade by mistake. About 45 questions
        become a few requests. Either way this is a preflight: each real request is still
        authorized by the API server itself."""
        rules = {ns: self._rules(ns) for ns in dict.fromkeys(c.namespace for c in checks if c.namespace)}
        return [
            check
            for check in checks
            if not (check.namespace and rules_allow(rules[check.namespace], check)) and not self._allowed(check)
        ]

    def _rules(self, namespace: str) -> list[JSON]:
        """The resource rules of this identity in ``namespace``; none if rules reviews are refused."""
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectRulesReview",
            "spec": {"namespace": namespace},
        }
        try:
            review = _call("create selfsubjectrulesreview", self.authz.create_self_subject_rules_review, body)
        except KubeTemporary:
            raise
        except KubeError as err:  # not served, or refused: every check gets its access review
            log.info("rules review in %s refused (%s); asking each check instead", namespace, err)
            return []
        status = review.get("status") or {}
        if status.get("incomplete"):
            log.info("rules review in %s is incomplete: %s", namespace, status.get("evaluationError", ""))
        return [r for r in status.get("resourceRules") or [] if isinstance(r, dict)]

    def _allowed(self, check: AccessCheck) -> bool:
        attrs: JSON = {"verb": check.verb, "resource": check.resource, "group": check.group}
        if "/" in check.resource:
            attrs["resource"], attrs["subresource"] = check.resource.split("/", 1)
        if check.namespace:
            attrs["namespace"] = check.namespace
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        review = _call("create selfsubjectaccessreview", self.authz.create_self_subject_access_review, body)
        return bool(review.get("status", {}).get("allowed"))

    # --- writes ------------------------------------------------------------------------------
    def delete_pvc(self, namespace: str, name: str, uid: str | None = None) -> bool:
        """Delete one PVC, only if it still has ``uid`` (409 KubeError otherwise); False when gone."""
        fn = self.core.delete_namespaced_persistent_volume_claim
        body = _delete_options(uid)
        extra = {"body": body} if body else {}
        return bool(
            _audited(
                "delete",
                f"persistentvolumeclaim {namespace}/{name}" + (f" (uid {uid})" if uid else ""),
                lambda: _unless_missing("delete persistentvolumeclaim", fn, name, namespace, **extra) is not None,
                _gone_or_deleted,
            )
        )

    def delete_pv(self, name: str, uid: str | None = None) -> bool:
        """Delete one PV, only if it still has ``uid`` (409 KubeError otherwise); False when gone."""
        body = _delete_options(uid)
        extra = {"body": body} if body else {}
        fn = self.core.delete_persistent_volume
        return bool(
            _audited(
                "delete",
                f"persistentvolume {name}" + (f" (uid {uid})" if uid else ""),
                lambda: _unless_missing("delete persistentvolume", fn, name, **extra) is not None,
                _gone_or_deleted,
            )
        )

    def upsert_secret(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
        """Create or replace an Opaque Secret holding ``data`` (text values, sent as stringData)."""
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {"name": name, "labels": labels},
            "stringData": data,
        }

        def upsert() -> str:
            try:
                _call("create secret", self.core.create_namespaced_secret, namespace, body)
                return "created"
            except KubeConflict:
                _call("replace secret", self.core.replace_namespaced_secret, name, namespace, body)
                return "replaced"

        _audited("write", f"secret {namespace}/{name}", upsert, str)

    # --- watches -----------------------------------------------------------------------------
    def watch_pods(self, namespace: str, selector: str, resource_version: str, seconds: int) -> Iterator[JSON]:
        """Raw watch events ({type, object}) after ``resource_version`` for up to ``seconds``.

        A broken connection is resumed from the last resourceVersion seen; a 410 Gone (too old)
        or repeated failures end the watch quietly, and the caller lists again."""
        fn = self.core.list_namespaced_pod
        yield from _watch("pod", fn, (namespace,), {"label_selector": selector}, resource_version, seconds)

    def watch_pvcs(self, namespace: str, selector: str, resource_version: str, seconds: int) -> Iterator[JSON]:
        """Raw watch events of the PVCs with ``selector`` (as ``watch_pods``)."""
        fn = self.core.list_namespaced_persistent_volume_claim
        yield from _watch("pvc", fn, (namespace,), {"label_selector": selector}, resource_version, seconds)

    # --- Milvus resources (milvuses.milvus.io/v1beta1) and the operator ----------------------
    def get_milvus(self, namespace: str, name: str) -> JSON | None:
        """The Milvus custom resource, or None (also when the CRD is absent)."""
        fn = self.custom.get_namespaced_custom_object
        return _unless_missing("get milvus", fn, *_MILVUS, namespace, "milvuses", name)

    def list_milvuses(self, namespace: str) -> list[JSON]:
        """The Milvus resources of a namespace; none when the CRD is not installed (404)."""
        fn = self.custom.list_namespaced_custom_object
        data = _unless_missing("list milvuses", fn, *_MILVUS, namespace, "milvuses")
        return list((data or {}).get("items") or [])

    def list_namespaces(self) -> list[str]:
        return sorted(n["metadata"]["name"] for n in _call("list namespaces", self.core.list_namespace)["items"])

    def list_deployments_all(self, selector: str) -> list[JSON]:
        """Deployments with ``selector`` in every namespace (to find the milvus-operator)."""
        return _call("list deployments", self.apps.list_deployment_for_all_namespaces, label_selector=selector)["items"]

    def patch_milvus(self, namespace: str, name: str, patch: JSON) -> JSON:
        """Merge-patch (RFC 7386) a Milvus resource."""
        fn = self.custom.patch_namespaced_custom_object
        return _audited(
            "merge-patch",
            f"milvus {namespace}/{name}",
            lambda: _call("patch milvus", fn, *_MILVUS, namespace, "milvuses", name, patch),
        )

    def delete_milvus(self, namespace: str, name: str) -> bool:
        """Delete a Milvus resource; False when it is already gone."""
        fn = self.custom.delete_namespaced_custom_object
        return bool(
            _audited(
                "delete",
                f"milvus {namespace}/{name}",
                lambda: _unless_missing("delete milvus", fn, *_MILVUS, namespace, "milvuses", name) is not None,
                _gone_or_deleted,
            )
        )

    def create_milvus(self, namespace: str, body: JSON) -> JSON:
        fn = self.custom.create_namespaced_custom_object
        name = str((body.get("metadata") or {}).get("name"))
        return _audited(
            "create",
            f"milvus {namespace}/{name}",
            lambda: _call("create milvus", fn, *_MILVUS, namespace, "milvuses", body),
        )

    def watch_milvus(self, namespace: str, name: str, resource_version: str, seconds: int) -> Iterator[JSON]:
        """Raw watch events of one Milvus resource after ``resource_version``, for up to ``seconds``
        (resumed after a broken connection; a 410 Gone ends it and the caller reads again)."""
        fn = self.custom.list_namespaced_custom_object
        args = (*_MILVUS, namespace, "milvuses")
        selector = {"field_selector": f"metadata.name={name}"}
        yield from _watch("milvus", fn, args, selector, resource_version, seconds)


def _watch(
    what: str,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    resource_version: str,
    seconds: float,
) -> Iterator[JSON]:
    """Watch until ``seconds`` have passed, reconnecting from the last resourceVersion seen.

    Each connection asks the server to end it at the deadline (``timeoutSeconds``) and reads with
    a client timeout a little longer, so a silent connection cannot block for ever."""
    deadline = time.monotonic() + seconds
    rv = resource_version
    failures = 0
    connect = _timeout_of(fn)[0]
    while (remaining := deadline - time.monotonic()) >= 1:
        w = RawWatch()
        server_seconds = int(remaining)
        opened = time.monotonic()
        try:
            for event in w.stream(
                fn,
                *args,
                resource_version=rv,
                timeout_seconds=server_seconds,
                _request_timeout=(connect, server_seconds + WATCH_READ_MARGIN),
                **kwargs,
            ):
                obj = event["object"]
                if isinstance(obj, dict):
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                failures = 0
                if event["type"] == "BOOKMARK":
                    continue
                yield {"type": event["type"], "object": obj}
        except ApiException as err:
            if err.status == 410:
                log.info("%s watch: resourceVersion %s is too old; the caller lists again", what, rv)
                return
            failures += 1
            log.info("%s watch refused (%s)", what, _status_message(err))
        except (Urllib3Error, OSError, ValueError) as err:
            failures += 1
            log.info("%s watch connection broke (%s); resuming from resourceVersion %s", what, err, rv)
        else:
            if time.monotonic() - opened >= server_seconds - 1:
                return  # the server ended it at timeoutSeconds: done
        finally:
            w.stop()
        if failures >= WATCH_MAX_FAILURES:
            log.info("%s watch failed %d times in a row; the caller lists again", what, failures)
            return
        # Not a stand-in for a condition: a pause before reconnecting so a failing server is not hammered.
        time.sleep(min(0.2 * failures, max(0.0, deadline - time.monotonic())))
