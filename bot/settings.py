"""The bot's configuration: the only module that reads the environment.

Every setting of the README's configuration table is read here, validated, and turned into
one frozen ``Settings`` object. A missing or malformed value raises ``SettingsError`` whose
message is one line naming the variable and what is expected; the CLI prints that line and
exits with status 2, never a traceback.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlparse

DEFAULT_SLACK_API_URL = "https://slack.com/api/"
DEFAULT_REDIS_URL = "redis://localhost:6379/0"
DEFAULT_HELM_REPO_URL = "https://zilliztech.github.io/milvus-helm"
DEFAULT_HELM_CHART = "zilliztech/milvus"

_SLACK_ID = re.compile(r"^[UWS][A-Z0-9]{2,}$")
_CHART_VERSION = re.compile(r"^v?\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting is missing or malformed; ``str(err)`` is the one-line explanation."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(f"configuration error: {name} {expected}")
        self.name = name


@dataclass(frozen=True)
class Settings:
    """Validated configuration. Secrets are kept out of ``repr`` so they never reach a log."""

    slack_bot_token: str = field(repr=False)
    slack_signing_secret: str | None = field(repr=False)
    slack_app_token: str | None = field(repr=False)
    slack_api_url: str
    redis_url: str = field(repr=False)
    kubeconfig: str | None
    kube_context: str | None
    helm_bin: str
    milvus_mgmt_url: str | None
    milvus_url: str | None
    milvus_token: str | None = field(repr=False)
    operators: frozenset[str]
    require_second_approver: bool
    poll_interval_seconds: float
    helm_repo_url: str
    helm_chart: str
    helm_chart_version: str | None
    port: int
    flush_timeout_seconds: float = 600.0
    pods_timeout_seconds: float = 900.0
    pvc_timeout_seconds: float = 300.0
    load_timeout_seconds: float = 600.0
    runner_lease_seconds: float = 15.0
    kube_request_timeout_seconds: float = 30.0
    backup_to_slack: str = "redacted"
    approval_ttl_seconds: float = 86400.0
    reminder_seconds: float = 3600.0
    channels: frozenset[str] = frozenset()  # empty: every channel the bot is in
    namespaces: tuple[str, ...] = ()  # where scan looks; empty: every namespace it may list
    audit_retention_days: float = 90.0
    shutdown_grace_seconds: float = 25.0
    slack_pace: int = 10  # messages per channel in any 10 s; 0: not paced
    runner_workers: int = 32

    @property
    def socket_mode(self) -> bool:
        return self.slack_app_token is not None

    @property
    def operator_users(self) -> frozenset[str]:
        return frozenset(i for i in self.operators if not i.startswith("S"))

    @property
    def operator_groups(self) -> frozenset[str]:
        return frozenset(i for i in self.operators if i.startswith("S"))

    def secrets(self) -> list[str]:
        """Every secret value, for log and message redaction."""
        values = [self.slack_bot_token, self.slack_signing_secret, self.slack_app_token, self.milvus_token]
        password = urlparse(self.redis_url).password
        return [v for v in [*values, password] if v]


def _get(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


def _required(env: Mapping[str, str], name: str, expected: str) -> str:
    value = _get(env, name)
    if value is None:
        raise SettingsError(name, f"is required: {expected}")
    return value


def _http_url(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = _get(env, name) or default
    if value is None:
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SettingsError(name, f"must be an http(s) URL, got {value!r}")
    return value


def _template(env: Mapping[str, str], name: str) -> str | None:
    value = _http_url(env, name, None)
    if value is None:
        return None
    try:
        value.format(release="r", namespace="n")
    except (KeyError, IndexError, ValueError):
        raise SettingsError(name, "may only use the placeholders {release} and {namespace}") from None
    return value


def _bool(env: Mapping[str, str], name: str) -> bool:
    value = (env.get(name) or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SettingsError(name, f"must be true or false, got {value!r}")


def _positive_float(
    env: Mapping[str, str], name: str, default: float, limit: float = 3600, unit: str = "seconds"
) -> float:
    raw = _get(env, name)
    if raw is None:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SettingsError(name, f"must be a number of {unit}, got {raw!r}") from None
    if not 0 < value <= limit:
        raise SettingsError(name, f"must be between 0 and {limit:g} {unit}, got {raw!r}")
    return value


def _port(env: Mapping[str, str]) -> int:
    raw = _get(env, "PORT") or "3000"
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise SettingsError("PORT", f"must be a TCP port number (1-65535), got {raw!r}")
    return int(raw)


def _operators(env: Mapping[str, str]) -> frozenset[str]:
    raw = _required(env, "BOT_OPERATORS", "comma-separated Slack user IDs (U…/W…) and user-group IDs (S…)")
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [i for i in ids if not _SLACK_ID.match(i)]
    if bad or not ids:
        raise SettingsError(
            "BOT_OPERATORS",
            f"must list Slack user IDs (U…/W…) or user-group IDs (S…), got {', '.join(bad)!r}",
        )
    return frozenset(ids)


def _redis_url(env: Mapping[str, str]) -> str:
    value = _get(env, "REDIS_URL") or DEFAULT_REDIS_URL
    parsed = urlparse(value)
    if parsed.scheme not in ("redis", "rediss", "unix") or not (parsed.netloc or parsed.path):
        raise SettingsError("REDIS_URL", "must be a redis:// or rediss:// URL")
    return value


def _slack_tokens(env: Mapping[str, str]) -> tuple[str, str | None, str | None]:
    bot_token = _required(env, "SLACK_BOT_TOKEN", "the bot token (xoxb-…)")
    if not bot_token.startswith("xoxb-"):
        raise SettingsError("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb-")
    app_token = _get(env, "SLACK_APP_TOKEN")
    if app_token is not None and not app_token.startswith("xapp-"):
        raise SettingsError("SLACK_APP_TOKEN", "must be an app-level token starting with xapp-")
    secret = _get(env, "SLACK_SIGNING_SECRET")
    if secret is None and app_token is None:
        raise SettingsError("SLACK_SIGNING_SECRET", "is required in HTTP mode (when SLACK_APP_TOKEN is unset)")
    return bot_token, secret, app_token


def _chart_version(env: Mapping[str, str]) -> str | None:
    value = _get(env, "MILVUS_HELM_CHART_VERSION")
    if value is not None and not _CHART_VERSION.match(value):
        raise SettingsError("MILVUS_HELM_CHART_VERSION", f"must be a chart version such as 4.2.58, got {value!r}")
    return value


def _backup_to_slack(env: Mapping[str, str]) -> str:
    value = (_get(env, "BOT_BACKUP_TO_SLACK") or "redacted").lower()
    if value not in ("redacted", "full"):
        raise SettingsError("BOT_BACKUP_TO_SLACK", f"must be redacted or full, got {value!r}")
    return value


_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{2,}$")


def _channels(env: Mapping[str, str]) -> frozenset[str]:
    raw = _get(env, "BOT_CHANNELS")
    if raw is None:
        return frozenset()
    ids = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [i for i in ids if not _CHANNEL_ID.match(i)]
    if bad or not ids:
        raise SettingsError("BOT_CHANNELS", f"must list Slack channel IDs (C…/G…), got {', '.join(bad) or raw!r}")
    return frozenset(ids)


def _count(env: Mapping[str, str], name: str, default: int, limit: int) -> int:
    raw = _get(env, name)
    if raw is None:
        return default
    if not raw.isdigit() or not 0 < int(raw) <= limit:
        raise SettingsError(name, f"must be a whole number from 1 to {limit}, got {raw!r}")
    return int(raw)


def _pace(env: Mapping[str, str]) -> int:
    raw = _get(env, "BOT_SLACK_PACE")
    if raw is None:
        return 10
    if not raw.isdigit() or int(raw) > 100:
        raise SettingsError("BOT_SLACK_PACE", f"must be a whole number from 0 (no pacing) to 100, got {raw!r}")
    return int(raw)


_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def _namespaces(env: Mapping[str, str]) -> tuple[str, ...]:
    raw = _get(env, "BOT_NAMESPACES")
    if raw is None:
        return ()
    names = [part.strip() for part in raw.split(",") if part.strip()]
    bad = [n for n in names if not _DNS_LABEL.match(n)]
    if bad or not names:
        raise SettingsError("BOT_NAMESPACES", f"must list Kubernetes namespace names, got {', '.join(bad) or raw!r}")
    return tuple(dict.fromkeys(names))


def load(env: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the configuration from ``env`` (default: the process environment)."""
    env = os.environ if env is None else env
    bot_token, signing_secret, app_token = _slack_tokens(env)
    api_url = _http_url(env, "SLACK_API_URL", DEFAULT_SLACK_API_URL)
    assert api_url is not None
    return Settings(
        slack_bot_token=bot_token,
        slack_signing_secret=signing_secret,
        slack_app_token=app_token,
        slack_api_url=api_url if api_url.endswith("/") else api_url + "/",
        redis_url=_redis_url(env),
        kubeconfig=_get(env, "KUBECONFIG"),
        kube_context=_get(env, "KUBE_CONTEXT"),
        helm_bin=_get(env, "HELM_BIN") or "helm",
        milvus_mgmt_url=_template(env, "MILVUS_MGMT_URL"),
        milvus_url=_template(env, "MILVUS_URL"),
        milvus_token=_get(env, "MILVUS_TOKEN"),
        operators=_operators(env),
        require_second_approver=_bool(env, "BOT_REQUIRE_SECOND_APPROVER"),
        poll_interval_seconds=_positive_float(env, "POLL_INTERVAL_SECONDS", 5.0),
        helm_repo_url=_http_url(env, "MILVUS_HELM_REPO_URL", DEFAULT_HELM_REPO_URL) or DEFAULT_HELM_REPO_URL,
        helm_chart=_get(env, "MILVUS_HELM_CHART") or DEFAULT_HELM_CHART,
        helm_chart_version=_chart_version(env),
        port=_port(env),
        flush_timeout_seconds=_positive_float(env, "UPGRADE_FLUSH_TIMEOUT_SECONDS", 600.0, 86400),
        pods_timeout_seconds=_positive_float(env, "UPGRADE_PODS_TIMEOUT_SECONDS", 900.0, 86400),
        pvc_timeout_seconds=_positive_float(env, "UPGRADE_PVC_TIMEOUT_SECONDS", 300.0, 86400),
        load_timeout_seconds=_positive_float(env, "UPGRADE_LOAD_TIMEOUT_SECONDS", 600.0, 86400),
        runner_lease_seconds=_positive_float(env, "RUNNER_LEASE_SECONDS", 15.0, 600),
        kube_request_timeout_seconds=_positive_float(env, "KUBE_REQUEST_TIMEOUT_SECONDS", 30.0, 600),
        backup_to_slack=_backup_to_slack(env),
        approval_ttl_seconds=_positive_float(env, "BOT_APPROVAL_TTL_SECONDS", 86400.0, 30 * 86400),
        reminder_seconds=_positive_float(env, "BOT_REMINDER_SECONDS", 3600.0, 86400),
        channels=_channels(env),
        namespaces=_namespaces(env),
        audit_retention_days=_positive_float(env, "BOT_AUDIT_RETENTION_DAYS", 90.0, 3650, "days"),
        shutdown_grace_seconds=_positive_float(env, "BOT_SHUTDOWN_GRACE_SECONDS", 25.0, 3600),
        slack_pace=_pace(env),
        runner_workers=_count(env, "RUNNER_WORKERS", 32, 256),
    )
