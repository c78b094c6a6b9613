"""Helm 3 release storage in Secrets (helm/helm pkg/storage, ``driver.Secrets``), over the API.

One Secret per revision: name ``sh.helm.release.v1.<name>.v<revision>``, type
``helm.sh/release.v1``, labels ``name``, ``owner=helm``, ``status``, ``version`` plus
``createdAt`` on create and ``modifiedAt`` on update; ``data.release`` is produced by the bot's
own ``encode_release_data`` (base64 of base64(gzip(JSON))), so the simulator and the bot's
decoder agree by construction. Errors carry the driver's wording (``release: not found``,
``"x" has no deployed releases``, ``create: failed to create: ...``).

A release is a plain dict in Helm's JSON shape (``new_release`` builds one).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from bot.cluster.helm import RELEASE_SECRET_TYPE, decode_release_data, encode_release_data
from sandbox.helm.kubeclient import KubeApiError, KubeClient
from sandbox.helm.values import sort_maps

Release = dict[str, Any]


class StorageError(Exception):
    """A storage failure, worded like Helm's driver."""


class ReleaseNotFound(StorageError):
    def __init__(self) -> None:
        super().__init__("release: not found")


class NoDeployedReleases(StorageError):
    def __init__(self, name: str) -> None:
        super().__init__(f'"{name}" has no deployed releases')


def now_rfc3339() -> str:
    """Go's RFC3339Nano for the current UTC time (trailing zeros of the fraction dropped)."""
    stamp = datetime.now(UTC)
    frac = f"{stamp.microsecond:06d}".rstrip("0")
    return stamp.strftime("%Y-%m-%dT%H:%M:%S") + (f".{frac}" if frac else "") + "Z"


def parse_time(text: str) -> datetime | None:
    if not text:
        return None
    main, _, rest = text.partition(".")
    if rest:
        digits = "".join(ch for ch in rest if ch.isdigit())
        zone = rest[len(digits) :]
        text = f"{main}.{digits[:6].ljust(6, '0')}{zone}"
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def secret_name(name: str, version: int) -> str:
    return f"sh.helm.release.v1.{name}.v{version}"


def new_release(
    name: str,
    namespace: str,
    version: int,
    chart: dict[str, Any],
    config: dict[str, Any],
    manifest: str,
    status: str,
    description: str,
) -> Release:
    stamp = now_rfc3339()
    release: Release = {
        "name": name,
        "info": {
            "first_deployed": stamp,
            "last_deployed": stamp,
            "deleted": "",
            "description": description,
            "status": status,
        },
        "chart": chart,
    }
    if config:
        release["config"] = sort_maps(config)
    if manifest:
        release["manifest"] = manifest
    release["version"] = version
    release["namespace"] = namespace
    return release


def set_status(release: Release, status: str, description: str) -> None:
    release["info"]["status"] = status
    release["info"]["description"] = description


class ReleaseStorage:
    """Releases of one namespace (or of all namespaces, for ``list -A``)."""

    def __init__(self, kube: KubeClient, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def _query(self, selector: str, namespace: str | None) -> list[Release]:
        try:
            items = self.kube.list("v1", "Secret", namespace, selector)
        except KubeApiError as err:
            raise StorageError(f"query: failed to query with labels: {err.message}") from None
        releases = []
        for item in items:
            if item.get("type") != RELEASE_SECRET_TYPE:
                continue
            data = (item.get("data") or {}).get("release")
            if isinstance(data, str):
                releases.append(decode_release_data(data))
        return releases

    def history(self, name: str) -> list[Release]:
        found = self._query(f"name={name},owner=helm", self.namespace)
        if not found:
            raise ReleaseNotFound
        return sorted(found, key=lambda r: int(r.get("version", 0)))

    def last(self, name: str) -> Release:
        return self.history(name)[-1]

    def deployed(self, name: str) -> Release:
        found = self._query(f"name={name},owner=helm,status=deployed", self.namespace)
        if not found:
            raise NoDeployedReleases(name)
        return max(found, key=lambda r: int(r.get("version", 0)))

    def get(self, name: str, version: int) -> Release:
        try:
            secret = self.kube.get("v1", "Secret", self.namespace, secret_name(name, version))
        except KubeApiError as err:
            raise StorageError(f'get: failed to get "{secret_name(name, version)}": {err.message}') from None
        if secret is None:
            raise ReleaseNotFound
        return decode_release_data(secret["data"]["release"])

    def list_all(self, all_namespaces: bool) -> list[Release]:
        try:
            items = self.kube.list("v1", "Secret", None if all_namespaces else self.namespace, "owner=helm")
        except KubeApiError as err:
            raise StorageError(f"list: failed to list: {err.message}") from None
        return [
            decode_release_data(i["data"]["release"])
            for i in items
            if i.get("type") == RELEASE_SECRET_TYPE and isinstance((i.get("data") or {}).get("release"), str)
        ]

    def _secret(self, release: Release, stamp_label: str) -> dict[str, Any]:
        labels = {
            stamp_label: str(int(time.time())),
            "name": release["name"],
            "owner": "helm",
            "status": release["info"]["status"],
            "version": str(release["version"]),
        }
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": secret_name(release["name"], release["version"]), "labels": labels},
            "type": RELEASE_SECRET_TYPE,
            "data": {"release": encode_release_data(release)},
        }

    def create(self, release: Release) -> None:
        try:
            self.kube.create(self._secret(release, "createdAt"), release["namespace"])
        except KubeApiError as err:
            if err.conflict:
                raise StorageError("release: already exists") from None
            raise StorageError(f"create: failed to create: {err.message}") from None

    def update(self, release: Release) -> None:
        try:
            self.kube.replace(self._secret(release, "modifiedAt"), release["namespace"])
        except KubeApiError as err:
            raise StorageError(f"update: failed to update: {err.message}") from None

    def delete(self, release: Release) -> None:
        name = secret_name(release["name"], release["version"])
        try:
            self.kube.delete("v1", "Secret", release["namespace"], name)
        except KubeApiError as err:
            if not err.not_found:
                raise StorageError(f"delete: failed to delete: {err.message}") from None
