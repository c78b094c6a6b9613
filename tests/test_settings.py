"""Configuration from the environment.

Covers: the contract table's names and defaults; every required variable missing gives a
one-line error naming it; malformed values are refused with what is expected; the real CLI
exits with status 2 and one line (no traceback) for a missing setting; secrets stay out of
repr and are listed for redaction.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bot import settings

BASE = {
    "SLACK_BOT_TOKEN": "xoxb-1-abc",
    "SLACK_SIGNING_SECRET": "shhh-secret",
    "BOT_OPERATORS": "U0ALICE,S0OPS",
}


def test_defaults_match_the_contract_table() -> None:
    s = settings.load(BASE)
    assert s.slack_api_url == "https://slack.com/api/"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.helm_bin == "helm"
    assert s.milvus_mgmt_url is None and s.milvus_url is None and s.milvus_token is None
    assert s.require_second_approver is False
    assert s.poll_interval_seconds == 5
    assert s.helm_repo_url == "https://zilliztech.github.io/milvus-helm"
    assert s.helm_chart == "zilliztech/milvus"
    assert s.helm_chart_version is None
    assert s.port == 3000
    assert s.socket_mode is False
    assert s.operator_users == {"U0ALICE"} and s.operator_groups == {"S0OPS"}


@pytest.mark.parametrize("name", ["SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET", "BOT_OPERATORS"])
def test_missing_required_setting_names_it(name: str) -> None:
    env = {k: v for k, v in BASE.items() if k != name}
    with pytest.raises(settings.SettingsError) as err:
        settings.load(env)
    assert name in str(err.value)
    assert "\n" not in str(err.value)


def test_signing_secret_not_required_in_socket_mode() -> None:
    env = {k: v for k, v in BASE.items() if k != "SLACK_SIGNING_SECRET"} | {"SLACK_APP_TOKEN": "xapp-1-x"}
    assert settings.load(env).socket_mode is True


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("PORT", "70000", "TCP port"),
        ("PORT", "abc", "TCP port"),
        ("POLL_INTERVAL_SECONDS", "-1", "between"),
        ("POLL_INTERVAL_SECONDS", "soon", "number"),
        ("REDIS_URL", "http://x", "redis://"),
        ("SLACK_API_URL", "not a url", "http(s) URL"),
        ("BOT_REQUIRE_SECOND_APPROVER", "maybe", "true or false"),
        ("BOT_OPERATORS", "alice", "user IDs"),
        ("MILVUS_MGMT_URL", "http://{release}.{ns}:9091", "placeholders"),
        ("MILVUS_HELM_CHART_VERSION", "latest", "chart version"),
        ("SLACK_BOT_TOKEN", "xoxp-user-token", "xoxb-"),
    ],
)
def test_malformed_values_are_refused(name: str, value: str, expected: str) -> None:
    with pytest.raises(settings.SettingsError) as err:
        settings.load(BASE | {name: value})
    assert name in str(err.value) and expected in str(err.value)


def test_templates_and_flags_are_read() -> None:
    s = settings.load(
        BASE
        | {
            "MILVUS_MGMT_URL": "http://{release}-milvus.{namespace}:9091",
            "BOT_REQUIRE_SECOND_APPROVER": "true",
            "SLACK_API_URL": "http://127.0.0.1:9/api",
            "MILVUS_HELM_CHART_VERSION": "4.2.58",
        }
    )
    assert s.milvus_mgmt_url == "http://{release}-milvus.{namespace}:9091"
    assert s.require_second_approver is True
    assert s.slack_api_url == "http://127.0.0.1:9/api/"
    assert s.helm_chart_version == "4.2.58"


def test_secrets_stay_out_of_repr_and_are_listed() -> None:
    s = settings.load(BASE | {"MILVUS_TOKEN": "root:Milvus", "REDIS_URL": "redis://:hunter22@r:6379/0"})
    text = repr(s)
    for secret in ("xoxb-1-abc", "shhh-secret", "root:Milvus", "hunter22"):
        assert secret not in text
        assert secret in s.secrets()


def test_cli_prints_one_line_and_exits_2_for_a_missing_setting() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("SLACK_BOT_TOKEN", "SLACK_SIGNING_SECRET")}
    env |= {"BOT_OPERATORS": "U0ALICE", "SLACK_SIGNING_SECRET": "x" * 8}
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "configuration error: SLACK_BOT_TOKEN is required: the bot token (xoxb-…)"
    ]
    assert "Traceback" not in proc.stderr


def test_cli_help_lists_both_subcommands() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0
    assert "serve" in proc.stdout and "demo" in proc.stdout


def test_runner_workers_setting() -> None:
    base = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_OPERATORS": "U01"}
    assert settings.load(base).runner_workers == 32
    assert settings.load({**base, "RUNNER_WORKERS": "8"}).runner_workers == 8
    for bad in ("0", "-1", "many", "1000"):
        with pytest.raises(settings.SettingsError, match="RUNNER_WORKERS"):
            settings.load({**base, "RUNNER_WORKERS": bad})


def test_slack_pace_setting() -> None:
    base = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_OPERATORS": "U01"}
    assert settings.load(base).slack_pace == 10
    assert settings.load({**base, "BOT_SLACK_PACE": "0"}).slack_pace == 0  # not paced
    for bad in ("-1", "fast", "101", "1.5"):
        with pytest.raises(settings.SettingsError, match="BOT_SLACK_PACE"):
            settings.load({**base, "BOT_SLACK_PACE": bad})


def test_bot_namespaces_setting() -> None:
    base = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_SIGNING_SECRET": "s", "BOT_OPERATORS": "U01"}
    assert settings.load(base).namespaces == ()
    assert settings.load({**base, "BOT_NAMESPACES": "milvus, default,milvus"}).namespaces == ("milvus", "default")
    with pytest.raises(settings.SettingsError, match="BOT_NAMESPACES"):
        settings.load({**base, "BOT_NAMESPACES": "Bad_NS"})
