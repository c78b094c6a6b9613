"""The bot's own Helm chart (``helm-chart/``) rendered by the real, pinned helm binaries.

Shared by ``test_helm_chart.py`` and ``test_rbac_from_traffic.py``: ``render(major, values)``
runs ``helm template`` of the chart with ``values`` (written as a JSON values file, so no value is
reinterpreted by ``--set`` parsing) and returns the manifests as dicts; ``helm(major, *args)``
runs any other helm command. Helm's own folders are private to the test session.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from sandbox import tools

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm-chart"
RELEASE = "upgrade-bot"
NAMESPACE = "ops"
_HOME = tempfile.mkdtemp(prefix="mpub-chart-helm-")


def helm_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": _HOME,
        "HELM_CACHE_HOME": os.path.join(_HOME, "cache"),
        "HELM_CONFIG_HOME": os.path.join(_HOME, "config"),
        "HELM_DATA_HOME": os.path.join(_HOME, "data"),
        "KUBECONFIG": os.path.join(_HOME, "no-kubeconfig"),
    }
    env.update(extra or {})
    return env


def helm(
    major: int, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the pinned helm ``major`` (3 or 4); the caller checks the return code."""
    return subprocess.run(
        [tools.helm(major), *args],
        capture_output=True,
        text=True,
        env=helm_env(env),
        timeout=timeout,
        check=False,
    )


def values_file(values: dict[str, Any]) -> str:
    fd, path = tempfile.mkstemp(prefix="values-", suffix=".json", dir=_HOME)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(values, fh)
    return path


def template(
    major: int, values: dict[str, Any], *, release: str = RELEASE, namespace: str = NAMESPACE
) -> subprocess.CompletedProcess[str]:
    return helm(major, "template", release, str(CHART), "--namespace", namespace, "-f", values_file(values))


def render(
    major: int, values: dict[str, Any], *, release: str = RELEASE, namespace: str = NAMESPACE
) -> list[dict[str, Any]]:
    """``helm template`` of the chart; the manifests (empty documents left out)."""
    proc = template(major, values, release=release, namespace=namespace)
    if proc.returncode != 0:
        raise AssertionError(f"helm {major} template failed:\n{proc.stderr}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [d for d in docs if d.get("kind") == kind and (name is None or d["metadata"]["name"] == name)]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]
