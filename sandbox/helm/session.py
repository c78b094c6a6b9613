"""What every cluster-facing helm command shares: settings, the API client and release storage.

``Session`` resolves helm's settings the way ``pkg/cli.EnvSettings`` does (flags over
``HELM_*`` environment over the kubeconfig), connects lazily, and offers ``reachable()`` (helm's
``IsReachable``: ``GET /version``, failing as ``Kubernetes cluster unreachable: ...``).
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

from sandbox.helm.flags import CliError, Parsed
from sandbox.helm.kubeclient import (
    ClusterConfig,
    KubeApiError,
    KubeClient,
    KubeConfigError,
    load_cluster_config,
)
from sandbox.helm.repos import Paths, resolve_paths
from sandbox.helm.storage import ReleaseStorage


class Session:
    def __init__(
        self, parsed: Parsed, env: Mapping[str, str], out: io.StringIO, err: io.StringIO, stdin: str = ""
    ) -> None:
        self.parsed = parsed
        self.env = env
        self.stdin = stdin
        self.out = out
        self.err = err
        self._config: ClusterConfig | None = None
        self._kube: KubeClient | None = None
        self._storage: ReleaseStorage | None = None

    def flag(self, name: str) -> Any:
        return self.parsed.values[name]

    def changed(self, name: str) -> bool:
        return name in self.parsed.changed

    @property
    def paths(self) -> Paths:
        return resolve_paths(self.flag("repository-config"), self.flag("repository-cache"), self.env)

    @property
    def debug(self) -> bool:
        return bool(self.flag("debug")) or self.env.get("HELM_DEBUG", "").lower() in ("1", "true")

    def cluster_config(self) -> ClusterConfig:
        if self._config is None:
            context = self.flag("kube-context") or None
            kubeconfig = self.flag("kubeconfig") or None
            try:
                self._config = load_cluster_config(kubeconfig, context, self.env)
            except KubeConfigError as exc:
                raise CliError(f"Kubernetes cluster unreachable: {exc}") from None
            if self.flag("kube-token"):
                self._config.token = self.flag("kube-token")
            if self.flag("kube-apiserver"):
                self._config.server = str(self.flag("kube-apiserver")).rstrip("/")
        return self._config

    @property
    def namespace(self) -> str:
        if self.flag("namespace"):
            return str(self.flag("namespace"))
        if self.env.get("HELM_NAMESPACE"):
            return self.env["HELM_NAMESPACE"]
        return self.cluster_config().namespace or "default"

    @property
    def kube(self) -> KubeClient:
        if self._kube is None:
            driver = self.env.get("HELM_DRIVER", "")
            if driver not in ("", "secret", "secrets"):
                raise CliError(f'the helm simulator only implements the "secret" storage driver, not "{driver}"')
            self._kube = KubeClient(self.cluster_config())
        return self._kube

    @property
    def storage(self) -> ReleaseStorage:
        if self._storage is None:
            self._storage = ReleaseStorage(self.kube, self.namespace)
        return self._storage

    def reachable(self) -> None:
        try:
            self.kube.server_version()
        except KubeApiError as err:
            raise CliError(f"Kubernetes cluster unreachable: {err.message}") from None

    def close(self) -> None:
        if self._kube is not None:
            self._kube.close()
