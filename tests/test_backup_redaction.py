"""What of a backup may reach Slack: ``redact_secrets`` and BOT_BACKUP_TO_SLACK.

Covers: every value under a key containing password, secret, token, key or credential (any
case, any depth, in lists too) is replaced and its path reported; other values, and empty
secret-looking ones, are kept as they are; the input is not changed; BOT_BACKUP_TO_SLACK
accepts redacted (default) and full, and refuses anything else, naming the variable.
"""

from __future__ import annotations

import copy

import pytest

from bot import settings
from bot.procedure.shared import REDACTED, redact_secrets

VALUES = {
    "minio": {"mode": "standalone", "accessKey": "AKIA123", "secretKey": "s3cr3t"},
    "externalS3": {"enabled": True, "password": "hunter2", "host": "s3.example.com"},
    "extraEnv": [
        {"name": "API_TOKEN", "value": "x"},
        {"name": "DB_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "db"}}},
    ],
    "Credentials": {"user": "u", "pass": "p"},
    "etcd": {"auth": {"rbac": {"rootPassword": ""}}},
    "image": {"all": {"tag": "v2.5.5"}},
}


def test_secret_looking_values_are_replaced_and_named() -> None:
    before = copy.deepcopy(VALUES)
    shown, hits = redact_secrets(VALUES)
    assert before == VALUES
    assert hits == [
        "minio.accessKey",
        "minio.secretKey",
        "externalS3.password",
        "extraEnv[1].valueFrom.secretKeyRef",
        "Credentials",
    ]
    assert shown["minio"] == {"mode": "standalone", "accessKey": REDACTED, "secretKey": REDACTED}
    assert shown["externalS3"] == {"enabled": True, "password": REDACTED, "host": "s3.example.com"}
    assert shown["Credentials"] == REDACTED
    assert shown["etcd"] == VALUES["etcd"]  # an empty password hides nothing
    assert shown["image"] == VALUES["image"]


def _env(**extra: str) -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s", "BOT_OPERATORS": "U0ALICE", **extra}


def test_backup_to_slack_setting() -> None:
    assert settings.load(_env()).backup_to_slack == "redacted"
    assert settings.load(_env(BOT_BACKUP_TO_SLACK="FULL")).backup_to_slack == "full"
    with pytest.raises(settings.SettingsError) as err:
        settings.load(_env(BOT_BACKUP_TO_SLACK="everything"))
    assert err.value.name == "BOT_BACKUP_TO_SLACK"
