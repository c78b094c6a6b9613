"""The simulator's Kubernetes client: kubeconfig handling and REST calls over httpx.

Like helm (client-go underneath), it reads the kubeconfig from ``--kubeconfig`` or ``KUBECONFIG``
(a ``:``-separated list, first definition wins) or ``~/.kube/config``, picks ``--kube-context``
or the current context, and authenticates with the user's bearer token (``token`` or
``tokenFile``). With no kubeconfig at all it talks to ``http://localhost:8080``, as client-go
does. Namespace: ``-n``, else ``HELM_NAMESPACE``, else the context's, else ``default``.

Errors come back as ``KubeApiError`` whose text is what client-go would show: the API's Status
``message`` (``secrets "x" not found``), ``the server has asked for the client to provide
credentials`` for a 401 on the version probe, or a Go-style transport error
(``Get "http://...": dial tcp ...: connect: connection refused``).
"""

from __future__ import annotations

import base64
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import yaml

# (apiVersion, kind) -> (URL prefix, resource, namespaced)
RESOURCES: dict[tuple[str, str], tuple[str, str, bool]] = {
    ("v1", "Namespace"): ("/api/v1", "namespaces", False),
    ("v1", "Secret"): ("/api/v1", "secrets", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "Service"): ("/api/v1", "services", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("v1", "PersistentVolumeClaim"): ("/api/v1", "persistentvolumeclaims", True),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("apps/v1", "StatefulSet"): ("/apis/apps/v1", "statefulsets", True),
}


class KubeApiError(Exception):
    """A failed API call; ``status`` 0 means the server could not be reached."""

    def __init__(self, status: int, message: str, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.reason = reason

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        return self.status == 409


class KubeConfigError(Exception):
    """The kubeconfig could not be used (message as client-go words it)."""


@dataclass
class ClusterConfig:
    server: str
    token: str | None
    namespace: str | None
    verify: bool | ssl.SSLContext
    path: str | None


def _load_files(paths: list[str]) -> dict[str, Any]:
    merged: dict[str, Any] = {"clusters": {}, "contexts": {}, "users": {}, "current-context": ""}
    for path in paths:
        try:
            with open(path, encoding="utf-8") as fh:
                doc = yaml.safe_load(fh) or {}
        except FileNotFoundError:
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise KubeConfigError(f'error loading config file "{path}": {exc}') from None
        if not isinstance(doc, dict):
            raise KubeConfigError(f'error loading config file "{path}": not a kubeconfig')
        for section in ("clusters", "contexts", "users"):
            for entry in doc.get(section) or []:
                merged[section].setdefault(entry.get("name"), entry.get(section[:-1]) or {})
        if not merged["current-context"] and doc.get("current-context"):
            merged["current-context"] = doc["current-context"]
    return merged


def kubeconfig_paths(flag: str | None, env: Mapping[str, str]) -> tuple[list[str], bool]:
    """The files to read and whether they were named explicitly (flag or KUBECONFIG)."""
    if flag:
        return [flag], True
    if env.get("KUBECONFIG"):
        return [p for p in env["KUBECONFIG"].split(os.pathsep) if p], True
    home = env.get("HOME") or os.path.expanduser("~")
    return [os.path.join(home, ".kube", "config")], False


def _tls(cluster: dict[str, Any]) -> bool | ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        return False
    ca_data = cluster.get("certificate-authority-data")
    ca_file = cluster.get("certificate-authority")
    if ca_data:
        return ssl.create_default_context(cadata=base64.b64decode(ca_data).decode())
    if ca_file:
        return ssl.create_default_context(cafile=ca_file)
    return True


def _token(user: dict[str, Any]) -> str | None:
    if user.get("token"):
        return str(user["token"])
    if user.get("tokenFile"):
        with open(user["tokenFile"], encoding="utf-8") as fh:
            return fh.read().strip()
    return None


def permission_warnings(kubeconfig: str | None, env: Mapping[str, str]) -> list[str]:
    """helm's checkPerms (run before every command): warn about a group/world-readable kubeconfig.

    Like helm it stats the single path from ``--kubeconfig``/``KUBECONFIG`` (a list does not
    stat, so it gets no warning) or ``~/.kube/config``.
    """
    path = (
        kubeconfig
        or env.get("KUBECONFIG")
        or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")
    )
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    warnings = []
    if mode & 0o040:
        warnings.append(f"WARNING: Kubernetes configuration file is group-readable. This is insecure. Location: {path}")
    if mode & 0o004:
        warnings.append(f"WARNING: Kubernetes configuration file is world-readable. This is insecure. Location: {path}")
    return warnings


def load_cluster_config(kubeconfig: str | None, context: str | None, env: Mapping[str, str]) -> ClusterConfig:
    """Resolve server, token and default namespace from the kubeconfig(s)."""
    paths, explicit = kubeconfig_paths(kubeconfig, env)
    if kubeconfig and not os.path.exists(kubeconfig):
        raise KubeConfigError(f"stat {kubeconfig}: no such file or directory")
    existing = [p for p in paths if os.path.exists(p)]
    merged = _load_files(existing)
    name = context or env.get("HELM_KUBECONTEXT") or merged["current-context"]
    if not name and not merged["contexts"]:
        if explicit and existing:
            raise KubeConfigError("invalid configuration: no configuration has been provided")
        return ClusterConfig("http://localhost:8080", None, None, True, None)
    ctx = merged["contexts"].get(name)
    if ctx is None:
        raise KubeConfigError(f'context "{name}" does not exist')
    cluster = merged["clusters"].get(ctx.get("cluster"))
    if cluster is None or not cluster.get("server"):
        raise KubeConfigError(f'invalid configuration: cluster "{ctx.get("cluster")}" has no server defined')
    user = merged["users"].get(ctx.get("user")) or {}
    token = env.get("HELM_KUBETOKEN") or _token(user)
    server = env.get("HELM_KUBEAPISERVER") or str(cluster["server"])
    return ClusterConfig(server.rstrip("/"), token, ctx.get("namespace"), _tls(cluster), existing[0])


def _transport_error(method: str, url: str, exc: Exception) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if isinstance(exc, httpx.ConnectError):
        detail = f"dial tcp {host}:{port}: connect: connection refused"
    elif isinstance(exc, httpx.TimeoutException):
        detail = "context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
    else:
        detail = str(exc) or type(exc).__name__
    verb = method[:1] + method[1:].lower()
    return f'{verb} "{url}": {detail}'


class KubeClient:
    """Plain REST calls; every non-2xx answer raises ``KubeApiError`` with the Status message."""

    def __init__(self, config: ClusterConfig, timeout: float = 30.0) -> None:
        self.config = config
        headers = {
            "Accept": "application/json",
            "User-Agent": "helm/v3.16.2 (linux/amd64) kubernetes/2a5d9d5",
        }
        if config.token:
            headers["Authorization"] = f"Bearer {config.token}"
        self.http = httpx.Client(base_url=config.server, headers=headers, verify=config.verify, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        url = f"{self.config.server}{path}"
        headers = {"Content-Type": content_type} if body is not None else {}
        try:
            resp = self.http.request(method, path, json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise KubeApiError(0, _transport_error(method, url, exc)) from None
        if resp.status_code >= 400:
            raise _api_error(resp)
        try:
            data = resp.json()
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def server_version(self) -> dict[str, Any]:
        try:
            return self.request("GET", "/version")
        except KubeApiError as err:
            if err.status == 401:
                raise KubeApiError(401, "the server has asked for the client to provide credentials") from None
            raise

    # --- typed helpers -----------------------------------------------------------------------
    @staticmethod
    def path_for(api_version: str, kind: str, namespace: str | None, name: str | None = None) -> str:
        try:
            prefix, resource, namespaced = RESOURCES[(api_version, kind)]
        except KeyError:
            raise KubeApiError(404, f'no matches for kind "{kind}" in version "{api_version}"', "NoKindMatch") from None
        path = f"{prefix}/namespaces/{namespace}/{resource}" if namespaced and namespace else f"{prefix}/{resource}"
        return f"{path}/{name}" if name else path

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", self.path_for(api_version, kind, namespace, name))
        except KubeApiError as err:
            if err.not_found and err.reason != "NoKindMatch":
                return None
            raise

    def list(
        self, api_version: str, kind: str, namespace: str | None, label_selector: str | None = None
    ) -> list[dict[str, Any]]:
        params = {"labelSelector": label_selector} if label_selector else None
        data = self.request("GET", self.path_for(api_version, kind, namespace), params=params)
        return list(data.get("items") or [])

    def create(self, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        return self.request("POST", self.path_for(obj["apiVersion"], obj["kind"], namespace), body=obj)

    def replace(self, obj: dict[str, Any], namespace: str | None) -> dict[str, Any]:
        path = self.path_for(obj["apiVersion"], obj["kind"], namespace, obj["metadata"]["name"])
        return self.request("PUT", path, body=obj)

    def patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, patch: dict[str, Any]
    ) -> dict[str, Any]:
        path = self.path_for(api_version, kind, namespace, name)
        return self.request("PATCH", path, body=patch, content_type="application/strategic-merge-patch+json")

    def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, propagation: str = "Background"
    ) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": propagation}
        self.request("DELETE", self.path_for(api_version, kind, namespace, name), body=body)


def _api_error(resp: httpx.Response) -> KubeApiError:
    try:
        body = resp.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        return KubeApiError(
            resp.status_code, str(body.get("message") or resp.reason_phrase), str(body.get("reason", ""))
        )
    text = resp.text.strip()
    if resp.status_code == 401:
        return KubeApiError(401, "Unauthorized", "Unauthorized")
    if resp.status_code == 404:
        return KubeApiError(404, "the server could not find the requested resource", "NotFound")
    return KubeApiError(resp.status_code, text or resp.reason_phrase)
