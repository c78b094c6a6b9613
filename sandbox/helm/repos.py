"""Chart repositories as helm keeps them on disk, and finding a chart version.

- Paths follow helm's helmpath/cli settings: ``--repository-config`` / ``HELM_REPOSITORY_CONFIG``
  / ``$HELM_CONFIG_HOME`` / ``$XDG_CONFIG_HOME/helm`` / ``~/.config/helm`` ``/repositories.yaml``,
  and the cache ``--repository-cache`` / ``HELM_REPOSITORY_CACHE`` / ``$HELM_CACHE_HOME`` /
  ``$XDG_CACHE_HOME/helm`` / ``~/.cache/helm`` ``/repository``.
- ``repositories.yaml`` has helm's shape (``apiVersion``, ``generated``, ``repositories`` with
  every Entry field); the index is cached as ``<name>-index.yaml`` plus ``<name>-charts.txt``.
- ``locate_chart`` resolves ``repo/chart`` through the *cached* index (so ``repo update`` matters,
  as with real helm) or ``chart`` with ``--repo URL``; version constraints are Masterminds/semver
  style (``4.2.40``, ``~4.2``, ``^4``, ``>=4.2.27 <5``, ``4.2.x``, ``a || b``); no version means
  the latest. Errors carry helm's wording.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from sandbox.helm import charts
from sandbox.helm.flags import CliError
from sandbox.helm.output import go_yaml


@dataclass(frozen=True)
class Paths:
    repository_config: str
    repository_cache: str


def resolve_paths(flag_config: str, flag_cache: str, env: Mapping[str, str]) -> Paths:
    home = env.get("HOME") or os.path.expanduser("~")
    config_home = env.get("HELM_CONFIG_HOME") or os.path.join(
        env.get("XDG_CONFIG_HOME") or os.path.join(home, ".config"), "helm"
    )
    cache_home = env.get("HELM_CACHE_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"), "helm"
    )
    config = flag_config or env.get("HELM_REPOSITORY_CONFIG") or os.path.join(config_home, "repositories.yaml")
    cache = flag_cache or env.get("HELM_REPOSITORY_CACHE") or os.path.join(cache_home, "repository")
    return Paths(config, cache)


def new_entry(name: str, url: str) -> dict[str, Any]:
    return {
        "caFile": "",
        "certFile": "",
        "insecure_skip_tls_verify": False,
        "keyFile": "",
        "name": name,
        "pass_credentials_all": False,
        "password": "",
        "url": url,
        "username": "",
    }


def load_repo_file(path: str, *, missing_ok: bool = True) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        if not missing_ok:
            raise
        doc = {}
    except yaml.YAMLError as exc:
        raise CliError(f"error converting YAML to JSON: {exc}") from None
    doc.setdefault("apiVersion", "")
    doc.setdefault("generated", "0001-01-01T00:00:00Z")
    doc["repositories"] = doc.get("repositories") or []
    return doc


def write_repo_file(path: str, doc: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    text = go_yaml(doc)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)


def find_entry(doc: dict[str, Any], name: str) -> dict[str, Any] | None:
    for entry in doc["repositories"]:
        if entry.get("name") == name:
            return dict(entry)
    return None


def fetch_index(url: str) -> dict[str, Any]:
    """'Download' a repository index; only the known repository answers."""
    if not charts.is_known_repo(url):
        index_url = url.rstrip("/") + "/index.yaml"
        raise CliError(
            f'looks like "{url}" is not a valid chart repository or cannot be reached: '
            f"failed to fetch {index_url} : 404 Not Found"
        )
    return charts.index_document()


def index_paths(cache: str, name: str) -> tuple[str, str]:
    return os.path.join(cache, f"{name}-index.yaml"), os.path.join(cache, f"{name}-charts.txt")


def write_index(cache: str, name: str, index: dict[str, Any]) -> None:
    os.makedirs(cache, exist_ok=True)
    index_path, charts_path = index_paths(cache, name)
    with open(index_path, "w", encoding="utf-8") as fh:
        fh.write(go_yaml(index))
    with open(charts_path, "w", encoding="utf-8") as fh:
        fh.write("".join(f"{chart}\n" for chart in index.get("entries", {})))


# --- semver constraints (Masterminds/semver v3, enough of it) -----------------------------------
_VERSION_RE = re.compile(r"^v?(\d+)(?:\.(\d+|[xX*]))?(?:\.(\d+|[xX*]))?(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?$")
_CONSTRAINT_RE = re.compile(r"^(=|!=|>=|<=|>|<|~>|~|\^)?\s*(\S+)$")


def _version_tuple(text: str) -> tuple[int, int, int] | None:
    match = _VERSION_RE.match(text)
    if not match or any(g and g in "xX*" for g in match.groups()[1:3]):
        return None
    return (int(match.group(1)), int(match.group(2) or 0), int(match.group(3) or 0))


def _check(op: str, bound: str, version: tuple[int, int, int]) -> bool:
    match = _VERSION_RE.match(bound)
    if bound in ("*", "x", "X"):
        return True
    if not match:
        raise ValueError
    parts = [match.group(1), match.group(2), match.group(3)]
    wild = next((i for i, p in enumerate(parts) if p is None or p in "xX*"), 3)
    nums = tuple(int(p) if p is not None and p not in "xX*" else 0 for p in parts)
    low = (nums[0], nums[1], nums[2])
    if op in ("", "="):
        return version[:wild] == low[:wild]
    if op == "!=":
        return version[:wild] != low[:wild]
    if op in ("~", "~>"):
        return version >= low and version[: max(1, min(wild, 2))] == low[: max(1, min(wild, 2))]
    if op == "^":
        lead = next((i for i, n in enumerate(low) if n != 0), 2)
        return version >= low and version[: lead + 1] == low[: lead + 1]
    compare = {">": version > low, "<": version < low, ">=": version >= low, "<=": version <= low}
    return compare[op]


def matches(constraint: str, version: str) -> bool:
    """Whether ``version`` satisfies ``constraint``; ``ValueError`` for an improper constraint."""
    ver = _version_tuple(version)
    if ver is None:
        return False
    for alternative in constraint.split("||"):
        terms = [t for t in re.split(r"[\s,]+", alternative.strip().replace(", ", ",")) if t]
        joined: list[str] = []
        for term in terms:  # re-attach operators written apart from their version (">= 4.2")
            if joined and re.fullmatch(r"=|!=|>=|<=|>|<|~>|~|\^", joined[-1]):
                joined[-1] += term
            else:
                joined.append(term)
        if not joined:
            raise ValueError
        ok = True
        for term in joined:
            match = _CONSTRAINT_RE.match(term)
            if not match:
                raise ValueError
            ok = ok and _check(match.group(1) or "", match.group(2), ver)
        if ok:
            return True
    return False


def select_version(entries: list[dict[str, Any]], version: str) -> dict[str, Any]:
    """helm's IndexFile.Get: exact match first, else the newest matching the constraint."""
    ordered = sorted(entries, key=lambda e: _version_tuple(str(e.get("version"))) or (0, 0, 0), reverse=True)
    if not version:
        version = "*"
    for entry in ordered:
        if str(entry.get("version")) == version:
            return entry
    for entry in ordered:
        try:
            if matches(version, str(entry.get("version"))):
                return entry
        except ValueError:
            raise LookupError(f"improper constraint: {version}") from None
    raise LookupError("no chart version found")


@dataclass(frozen=True)
class ChartRef:
    version: charts.ChartVersion
    source: str  # the repository URL it came from


def _from_entry(entry: dict[str, Any], repo_url: str) -> ChartRef:
    found = charts.find_version(str(entry.get("version")))
    if found is None:  # an index entry we cannot "download"
        url = (entry.get("urls") or [""])[0]
        raise CliError(f"failed to fetch {url} : 404 Not Found")
    return ChartRef(found, repo_url)


def locate_chart(ref: str, version: str, repo_url: str, paths: Paths) -> ChartRef:
    """ChartPathOptions.LocateChart for the cases the simulator serves."""
    ref = ref.strip()
    version = version.strip()
    if os.path.exists(ref):
        raise CliError(f"the helm simulator cannot load local charts: {ref}")
    if ref.startswith(("/", ".")):
        raise CliError(f'path "{ref}" not found')
    if repo_url:
        index = fetch_index(repo_url)
        what = f'chart "{ref}"' + (f' version "{version}"' if version else "")
        try:
            entry = select_version(index["entries"].get(ref) or [], version)
        except LookupError:
            raise CliError(f"{what} not found in {repo_url} repository") from None
        return _from_entry(entry, repo_url)
    if ref.startswith("oci://") or "://" in ref:
        raise CliError(f"failed to fetch {ref} : 404 Not Found")
    if "/" not in ref:
        raise CliError(f"non-absolute URLs should be in form of repo_name/path_to_chart, got: {ref}")
    repo_name, chart_name = ref.split("/", 1)
    entry_cfg = find_entry(load_repo_file(paths.repository_config), repo_name)
    if entry_cfg is None:
        raise CliError(f"repo {repo_name} not found")
    index_path, _ = index_paths(paths.repository_cache, repo_name)
    try:
        with open(index_path, encoding="utf-8") as fh:
            index = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise CliError(
            f"no cached repo found. (try 'helm repo update'): open {index_path}: no such file or directory"
        ) from None
    entries = (index.get("entries") or {}).get(chart_name)
    try:
        if not entries:
            raise LookupError("no chart name found")
        entry = select_version(entries, version)
    except LookupError as exc:
        raise CliError(
            f"chart \"{chart_name}\" matching {version} not found in {repo_name} index. (try 'helm repo update'): {exc}"
        ) from None
    return _from_entry(entry, str(entry_cfg.get("url", "")))
