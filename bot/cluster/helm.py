"""The bot's door to Helm: read Helm 3 release records, and drive the ``helm`` CLI.

Two halves, because a release is read and written differently:

- Reading needs no helm binary. Helm 3 keeps every revision of a release in a Secret
  ``sh.helm.release.v1.<name>.v<revision>`` (type ``helm.sh/release.v1``, labels ``owner=helm``,
  ``name``, ``status``, ``version``) whose ``data.release`` is, as the Kubernetes API returns it,
  base64(base64(gzip(JSON))) (helm/helm pkg/storage/driver/util.go). ``decode_release_data``
  undoes exactly that (and, like Helm, accepts an un-gzipped payload); ``release_from_secret``
  and ``find_release`` turn the Secrets the caller listed into a ``HelmRelease``. JSON integers
  are kept exact (Python ints), never rounded through floats.
- Writing goes through the real CLI (``HelmCli``), so the cluster sees exactly what ``helm``
  does. Values always travel in a private temporary file (``-f``), never on the command line;
  ``install`` never passes ``--reset-values`` (an upgrade-only flag: ``helm install`` rejects it).
  A non-zero exit or a timeout raises ``HelmError`` carrying the command (arguments only: no
  environment, no values), the exit code and helm's stderr.

Values reach helm as JSON (``values_document``), never as YAML written by a Python dumper: Helm
parses values files with YAML 1.1 rules, where an unquoted ``1e3`` is a number, ``y``/``on`` are
booleans and ``0755`` is octal, and PyYAML leaves such strings unquoted. JSON is YAML too, and in
it every string is quoted, so helm reads exactly the values ``helm get values -o json`` gave.

The decoder is checked against Secrets that the real Helm 3 and Helm 4 wrote (tests/test_helm.py)
and against hand-built ones; nothing in the sandbox shares this code.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gzip
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from bot import audit

RELEASE_SECRET_TYPE = "helm.sh/release.v1"
RELEASE_SECRET_PREFIX = "sh.helm.release.v1."
_GZIP_MAGIC = b"\x1f\x8b\x08"
# Characters a YAML parser must not see raw inside a quoted scalar: not "printable" in YAML 1.1
# (DEL, C1 controls, lone surrogates, BOM, U+FFFE/U+FFFF) or read as line breaks (NEL, LS, PS).
_YAML_UNSAFE = re.compile("[\x7f-\x9f\u2028\u2029\ud800-\udfff\ufeff\ufffe\uffff]")


def values_document(values: Mapping[str, Any]) -> str:
    """``values`` as a document Helm reads back type for type: JSON, human-readable.

    Non-ASCII text stays as it is (readable in the backup); the few characters YAML would
    misread are written as ``\\uXXXX`` escapes, which JSON and YAML both understand.
    """
    text = json.dumps(values, indent=2, ensure_ascii=False, allow_nan=False)
    return _YAML_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"


@contextlib.contextmanager
def values_file(values: Mapping[str, Any]) -> Iterator[str]:
    """A private (0600) temporary file holding ``values_document(values)``; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="helm-values-") as tmp:
        path = os.path.join(tmp, "values.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(values_document(values))
        yield path


class ReleaseDecodeError(ValueError):
    """A Secret that claims to hold a Helm release cannot be decoded."""


@dataclass(frozen=True)
class HelmRelease:
    """One revision of a Helm release, as stored in its Secret."""

    name: str
    namespace: str
    revision: int
    status: str
    chart_name: str
    chart_version: str
    app_version: str
    config: dict[str, Any]
    manifest: str
    secret_name: str


def decode_release_data(data_release_b64: str) -> dict[str, Any]:
    """Decode a release Secret's ``data.release`` (as the API returns it) to the release JSON."""
    try:
        helm_b64 = base64.b64decode(data_release_b64, validate=True)
        raw = base64.b64decode(helm_b64, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReleaseDecodeError(f"release data is not base64: {exc}") from None
    if raw[:3] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise ReleaseDecodeError(f"release data is not valid gzip: {exc}") from None
    try:
        release = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReleaseDecodeError(f"release data is not JSON: {exc}") from None
    if not isinstance(release, dict):
        raise ReleaseDecodeError("release data is not a JSON object")
    return release


def _str(value: Any) -> str:
    return "" if value is None else str(value)


def release_from_secret(secret: dict[str, Any]) -> HelmRelease:
    """Read a Helm release Secret (a plain dict, as the API's JSON) into a ``HelmRelease``."""
    meta = secret.get("metadata") or {}
    secret_name = _str(meta.get("name"))
    if secret.get("type") != RELEASE_SECRET_TYPE:
        raise ReleaseDecodeError(f"secret {secret_name!r} is not of type {RELEASE_SECRET_TYPE}")
    data = (secret.get("data") or {}).get("release")
    if not isinstance(data, str):
        raise ReleaseDecodeError(f"secret {secret_name!r} has no data.release")
    release = decode_release_data(data)
    info = release.get("info") or {}
    chart_meta = (release.get("chart") or {}).get("metadata") or {}
    config = release.get("config")
    return HelmRelease(
        name=_str(release.get("name")),
        namespace=_str(release.get("namespace") or meta.get("namespace")),
        revision=int(release.get("version") or 0),
        status=_str(info.get("status")),
        chart_name=_str(chart_meta.get("name")),
        chart_version=_str(chart_meta.get("version")),
        app_version=_str(chart_meta.get("appVersion")),
        config=config if isinstance(config, dict) else {},
        manifest=_str(release.get("manifest")),
        secret_name=secret_name,
    )


def _label_revision(secret: dict[str, Any]) -> int:
    labels = (secret.get("metadata") or {}).get("labels") or {}
    try:
        return int(labels.get("version", ""))
    except ValueError:
        return -1


def _release_secrets(secrets: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The Secrets among ``secrets`` that Helm's storage driver wrote for release ``name``."""
    return [
        s
        for s in secrets
        if s.get("type") == RELEASE_SECRET_TYPE
        and ((s.get("metadata") or {}).get("labels") or {}).get("owner") == "helm"
        and ((s.get("metadata") or {}).get("labels") or {}).get("name") == name
    ]


def find_release(secrets: list[dict[str, Any]], name: str) -> HelmRelease | None:
    """The latest revision of release ``name`` among ``secrets`` (None when there is none).

    Only Secrets of type ``helm.sh/release.v1`` labelled ``owner=helm`` and ``name=<name>`` count,
    whatever else the caller passes. The revision is the ``version`` label, as Helm's own
    storage driver orders them; the chosen Secret is then decoded and must agree with it.
    """
    candidates = _release_secrets(secrets, name)
    if not candidates:
        return None
    latest = max(candidates, key=_label_revision)
    release = release_from_secret(latest)
    if release.name != name:
        raise ReleaseDecodeError(f"secret {release.secret_name!r} holds release {release.name!r}, not {name!r}")
    return release


SUPPORTED_HELM = "Helm 3.14 or newer, or Helm 4"
_VERSION = re.compile(r"v?(\d+)\.(\d+)\.(\d+)")


@dataclass(frozen=True)
class HelmVersion:
    """A helm binary's version. Both majors keep the same release storage and every flag the bot
    passes (``install``/``upgrade --install --reset-values``/``uninstall``/``template``/``get
    values``/``show chart``/``repo add --force-update``/``repo update``), so nothing is chosen
    per version; Helm 4 applies objects server-side by default, Helm 3 client-side."""

    text: str
    major: int
    minor: int
    patch: int

    @classmethod
    def parse(cls, output: str) -> HelmVersion:
        text = output.strip()
        match = _VERSION.match(text)
        if match is None:
            raise HelmError(["version", "--short"], 0, f"unexpected helm version output: {text[:100]}")
        major, minor, patch = (int(g) for g in match.groups())
        return cls(text, major, minor, patch)

    @property
    def supported(self) -> bool:
        return (self.major == 3 and self.minor >= 14) or self.major == 4


def release_history(secrets: list[dict[str, Any]], name: str) -> list[HelmRelease]:
    """Every stored revision of release ``name`` (Helm's storage Secrets), oldest first."""
    return sorted((release_from_secret(s) for s in _release_secrets(secrets, name)), key=lambda r: r.revision)


class HelmError(Exception):
    """``helm`` exited non-zero (or was killed on timeout: ``exit_code`` -9 and a note in stderr)."""

    def __init__(self, command: list[str], exit_code: int, stderr: str) -> None:
        self.command = list(command)
        self.exit_code = exit_code
        self.stderr = stderr
        detail = stderr.strip() or "(no output on stderr)"
        super().__init__(f"`{' '.join(self.command)}` failed with exit code {exit_code}: {detail}")


def _chart_args(release: str, chart: str, values_path: str, version: str | None, repo_url: str | None) -> list[str]:
    """``RELEASE CHART -f VALUES [--version V] [--repo URL]``: what install and template share."""
    args = [release, chart, "-f", values_path]
    if version:
        args += ["--version", version]
    if repo_url:
        args += ["--repo", repo_url]
    return args


_MUTATING = ("install", "upgrade", "uninstall", "rollback", "repo")


def _record(args: list[str], namespace: str | None, exit_code: int) -> None:
    """A helm command that changes something, in the audit trail: its verb and what it names, never
    a values file's content (``-f`` is a private temporary path)."""
    shown, skip = [], False
    for arg in args:
        if skip:
            shown.append("<values file>")
            skip = False
            continue
        shown.append(arg)
        skip = arg in ("-f", "--values")
    audit.record(
        "helm",
        verb=" ".join(args[:2]) if args[0] == "repo" else args[0],
        command=" ".join(["helm", *shown]),
        namespace=namespace,
        result="ok" if exit_code == 0 else f"exit {exit_code}",
    )


class HelmCli:
    """Runs a ``helm`` binary against one kubeconfig/context; every call is one subprocess."""

    def __init__(
        self,
        binary: str,
        *,
        kubeconfig: str | None,
        context: str | None,
        env: Mapping[str, str] | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.binary = binary
        self.kubeconfig = kubeconfig
        self.context = context
        self.env = dict(env) if env is not None else None
        self.timeout = timeout
        self._version: HelmVersion | None = None

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        if self.kubeconfig:
            env["KUBECONFIG"] = self.kubeconfig
        return env

    def run(self, args: list[str], *, namespace: str | None = None, input: str | None = None) -> str:
        """Run ``helm <args>`` and return its stdout; raise ``HelmError`` on failure or timeout."""
        command = [self.binary, *args]
        if namespace:
            command += ["--namespace", namespace]
        if self.context:
            command += ["--kube-context", self.context]
        try:
            proc = subprocess.run(
                command,
                input=input,
                capture_output=True,
                text=True,
                env=self._environment(),
                timeout=self.timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:  # subprocess.run has already killed it
            if args and args[0] in _MUTATING:
                _record(args, namespace, -9)
            stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else exc.stderr or ""
            raise HelmError(command, -9, f"{stderr}\nkilled after {self.timeout:g}s timeout".lstrip()) from None
        except OSError as exc:
            raise HelmError(command, 127, f"cannot run {self.binary}: {exc}") from None
        if args and args[0] in _MUTATING:
            _record(args, namespace, proc.returncode)
        if proc.returncode != 0:
            raise HelmError(command, proc.returncode, proc.stderr)
        return proc.stdout

    def version(self) -> HelmVersion:
        """``helm version --short`` (``v4.1.4+g05fa379``), read once per ``HelmCli``."""
        if self._version is None:
            self._version = HelmVersion.parse(self.run(["version", "--short"]))
        return self._version

    def template(
        self,
        release: str,
        namespace: str,
        chart: str,
        values: dict[str, Any],
        version: str | None,
        repo_url: str | None = None,
    ) -> str:
        """``helm template`` of exactly what ``install`` would install: the rendered manifest."""
        with values_file(values) as path:
            return self.run(["template", *_chart_args(release, chart, path, version, repo_url)], namespace=namespace)

    def get_values(self, release: str, namespace: str) -> dict[str, Any]:
        """The release's user-supplied values (``helm get values -o json``); none -> ``{}``."""
        out = self.run(["get", "values", release, "-o", "json"], namespace=namespace)
        values = json.loads(out) if out.strip() else None
        if values is None:
            return {}
        if not isinstance(values, dict):
            raise HelmError(["get", "values", release], 0, f"unexpected values output: {out[:200]}")
        return values

    def uninstall(self, release: str, namespace: str) -> str:
        return self.run(["uninstall", release], namespace=namespace)

    def rollback(self, release: str, namespace: str, revision: int) -> str:
        return self.run(["rollback", release, str(revision)], namespace=namespace)

    def show_chart(self, chart: str, version: str | None, repo_url: str | None = None) -> dict[str, Any]:
        """The chart's Chart.yaml (``helm show chart``) as a dict."""
        args = ["show", "chart", chart]
        if version:
            args += ["--version", version]
        if repo_url:
            args += ["--repo", repo_url]
        out = self.run(args)
        meta = yaml.safe_load(out)
        if not isinstance(meta, dict):
            raise HelmError(args, 0, f"unexpected chart metadata: {out[:200]}")
        return meta

    def install(
        self,
        release: str,
        namespace: str,
        chart: str,
        values: dict[str, Any],
        version: str | None,
        repo_url: str | None = None,
        *,
        upgrade: bool = False,
        wait: bool = False,
        timeout: str | None = None,
    ) -> str:
        """``helm install RELEASE CHART -f <values file>``; the values file is private and removed.

        With ``upgrade`` (a release record is left over from a failed attempt) it runs
        ``helm upgrade RELEASE CHART --install --reset-values -f ...`` instead: the one command
        that both replaces such a record and installs when there is none.
        """
        with values_file(values) as path:
            args = ["upgrade", "--install", "--reset-values"] if upgrade else ["install"]
            args += _chart_args(release, chart, path, version, repo_url)
            if wait:
                args.append("--wait")
            if timeout:
                args += ["--timeout", timeout]
            return self.run(args, namespace=namespace)
