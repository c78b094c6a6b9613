"""The bot's only door to the Kubernetes API (the official ``kubernetes`` client).

Everything returns plain dicts parsed from the API's JSON (``_preload_content=False``), so
values such as resourceVersions and quantities arrive exactly as the server sent them. Errors
keep the API's own Status message (``KubeError.message``), which is what a person needs to see.
The same credentials serve ``http_client()``, an httpx client for the API server's service
proxy, used to reach the Milvus proxy without a port-forward.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3Error

log = logging.getLogger(__name__)
JSON = dict[str, Any]


class RawWatch(watch.Watch):
    """A watch that yields the API's JSON as is: no model validation that could drop an event.

    Not ``stream(..., deserialize=False)``: that path skips the ``raw_object`` key its own ERROR
    handling then reads (kubernetes 37), so a 410 Gone would raise KeyError instead of ApiException."""

    def get_return_type(self, func: Callable[..., Any]) -> None:
        return None


class KubeError(Exception):
    """An API call failed; ``status`` is the HTTP code (0 when the server was unreachable)."""

    def __init__(self, action: str, status: int, message: str) -> None:
        super().__init__(f"{action}: {message}" + (f" (HTTP {status})" if status else ""))
        self.action = action
        self.status = status
        self.message = message

    @property
    def temporary(self) -> bool:
        return self.status == 0 or self.status == 429 or self.status >= 500

    @property
    def not_found(self) -> bool:
        return self.status == 404


def _status_message(err: ApiException) -> str:
    try:
        body = json.loads(err.body or "{}")
        return str(body.get("message") or err.reason)
    except (ValueError, TypeError):
        return str(err.reason)


def _call(action: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> JSON:
    try:
        resp = fn(*args, _preload_content=False, **kwargs)
    except ApiException as err:
        raise KubeError(action, err.status or 0, _status_message(err)) from None
    except (Urllib3Error, OSError) as err:
        raise KubeError(action, 0, f"cannot reach the Kubernetes API: {err}") from None
    data = resp.data
    return json.loads(data) if data else {}


_MILVUS = ("milvus.io", "v1beta1")


def _unless_missing(action: str, fn: Callable[..., Any], *args: Any) -> JSON | None:
    """``_call``, with NotFound answered as None (reads of optional objects, deletes that may be done)."""
    try:
        return _call(action, fn, *args)
    except KubeError as err:
        if err.not_found:
            return None
        raise


@dataclass(frozen=True)
class AccessCheck:
    verb: str
    resource: str
    namespace: str | None
    group: str = ""


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
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
        return cls(client.ApiClient(configuration))

    @property
    def host(self) -> str:
        return str(self.api.configuration.host).rstrip("/")

    def http_client(self, timeout: float = 30.0) -> httpx.Client:
        """An httpx client carrying this API client's credentials, for the service proxy."""
        cfg = self.api.configuration
        verify: Any = cfg.ssl_ca_cert or cfg.verify_ssl
        cert = (cfg.cert_file, cfg.key_file) if cfg.cert_file else None

        def auth(request: httpx.Request) -> httpx.Request:
            token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix("BearerToken")
            if token:
                request.headers["Authorization"] = token
            return request

        return httpx.Client(verify=verify, cert=cert, auth=auth, timeout=timeout)

    # --- reads -------------------------------------------------------------------------------
    def list_secrets(self, namespace: str, selector: str) -> list[JSON]:
        return _call("list secrets", self.core.list_namespaced_secret, namespace, label_selector=selector)["items"]

    def list_pvcs(self, namespace: str, selector: str) -> list[JSON]:
        return _call(
            "list persistentvolumeclaims",
            self.core.list_namespaced_persistent_volume_claim,
            namespace,
            label_selector=selector,
        )["items"]

    def get_pv(self, name: str) -> JSON | None:
        return _unless_missing("get persistentvolume", self.core.read_persistent_volume, name)

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
        """The checks that a SelfSubjectAccessReview says this identity may not do."""
        refused = []
        for check in checks:
            attrs: JSON = {"verb": check.verb, "resource": check.resource, "group": check.group}
            if check.namespace:
                attrs["namespace"] = check.namespace
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SelfSubjectAccessReview",
                "spec": {"resourceAttributes": attrs},
            }
            review = _call("create selfsubjectaccessreview", self.authz.create_self_subject_access_review, body)
            if not review.get("status", {}).get("allowed"):
                refused.append(check)
        return refused

    # --- writes ------------------------------------------------------------------------------
    def delete_pvc(self, namespace: str, name: str) -> bool:
        """Delete one PVC; False when it was already gone."""
        fn = self.core.delete_namespaced_persistent_volume_claim
        return _unless_missing("delete persistentvolumeclaim", fn, name, namespace) is not None

    def delete_pv(self, name: str) -> bool:
        return _unless_missing("delete persistentvolume", self.core.delete_persistent_volume, name) is not None

    def upsert_configmap(self, namespace: str, name: str, data: dict[str, str], labels: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "labels": labels},
            "data": data,
        }
        try:
            _call("create configmap", self.core.create_namespaced_config_map, namespace, body)
        except KubeError as err:
            if err.status != 409:
                raise
            _call("replace configmap", self.core.replace_namespaced_config_map, name, namespace, body)

    # --- watches -----------------------------------------------------------------------------
    def watch_pods(self, namespace: str, selector: str, resource_version: str, seconds: int) -> Iterator[JSON]:
        """Yield raw watch events ({type, object}) for up to ``seconds``; ends quietly on a watch error."""
        w = RawWatch()
        try:
            for event in w.stream(
                self.core.list_namespaced_pod,
                namespace,
                label_selector=selector,
                resource_version=resource_version,
                timeout_seconds=seconds,
            ):
                yield {"type": event["type"], "object": event["object"]}
        except (ApiException, Urllib3Error, OSError, ValueError) as err:
            log.info("pod watch ended early (%s); falling back to polling", err)
            time.sleep(0.1)
        finally:
            w.stop()


def get_milvus(kube: Kube, namespace: str, name: str) -> JSON | None:
    """The Milvus custom resource (milvuses.milvus.io/v1beta1), or None (also when the CRD is absent)."""
    return _unless_missing(
        "get milvus", kube.custom.get_namespaced_custom_object, *_MILVUS, namespace, "milvuses", name
    )


def list_deployments_all(kube: Kube, selector: str) -> list[JSON]:
    """Deployments with ``selector`` in every namespace (to find the milvus-operator)."""
    return _call("list deployments", kube.apps.list_deployment_for_all_namespaces, label_selector=selector)["items"]


def patch_milvus(kube: Kube, namespace: str, name: str, patch: JSON) -> JSON:
    """Merge-patch (RFC 7386) a Milvus resource."""
    return _call(
        "patch milvus", kube.custom.patch_namespaced_custom_object, *_MILVUS, namespace, "milvuses", name, patch
    )


def delete_milvus(kube: Kube, namespace: str, name: str) -> bool:
    fn = kube.custom.delete_namespaced_custom_object
    return _unless_missing("delete milvus", fn, *_MILVUS, namespace, "milvuses", name) is not None


def create_milvus(kube: Kube, namespace: str, body: JSON) -> JSON:
    return _call("create milvus", kube.custom.create_namespaced_custom_object, *_MILVUS, namespace, "milvuses", body)


def watch_milvus(kube: Kube, namespace: str, name: str, resource_version: str, seconds: int) -> Iterator[JSON]:
    """Raw watch events of one Milvus resource after ``resource_version``, for up to ``seconds``."""
    w = RawWatch()
    try:
        for event in w.stream(
            kube.custom.list_namespaced_custom_object,
            *_MILVUS,
            namespace,
            "milvuses",
            field_selector=f"metadata.name={name}",
            resource_version=resource_version,
            timeout_seconds=seconds,
        ):
            yield {"type": event["type"], "object": event["object"]}
    except (ApiException, Urllib3Error, OSError, ValueError) as err:
        log.info("milvus watch ended early (%s)", err)
    finally:
        w.stop()
