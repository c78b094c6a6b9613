"""Parsing of the slash command text.

Covers: help; start with defaults and every option (also --opt=value); release and namespace
names validated like Kubernetes/Helm; unknown verbs and options, missing values and extra
arguments answered with a specific message.
"""

from __future__ import annotations

import pytest

from handlers.commands import (
    AuditCommand,
    CancelCommand,
    HelpCommand,
    ListCommand,
    ScanCommand,
    StartCommand,
    StatusCommand,
    UsageError,
    parse,
)


@pytest.mark.parametrize("text", ["", "help", "  help  ", "--help"])
def test_help(text: str) -> None:
    assert isinstance(parse(text), HelpCommand)


def test_start_defaults() -> None:
    assert parse("start my-release") == StartCommand("my-release", "default", None, False)


def test_start_with_every_option() -> None:
    cmd = parse("start my-release --namespace milvus --mode operator --dry-run")
    assert cmd == StartCommand("my-release", "milvus", "operator", True)
    assert parse("start r1 --namespace=prod --mode=helm") == StartCommand("r1", "prod", "helm", False)
    assert parse("start r1 -n prod") == StartCommand("r1", "prod", None, False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("start", "Which release?"),
        ("start My_Release", "not a valid release name"),
        ("start " + "a" * 54, "at most 53"),
        ("start r --namespace", "needs a value"),
        ("start r --namespace Bad_NS", "not a valid namespace"),
        ("start r --mode kubectl", "`helm` or `operator`"),
        ("start r --force", "Unknown option `--force`"),
        ("start r s", "One release at a time"),
        ("upgrade r", "Unknown command `upgrade`"),
        ('start "r', "Unbalanced quotes"),
        ("cancel", "Which upgrade?"),
        ("audit", "Which upgrade?"),
        ("cancel 123", "`123` is not an upgrade ID"),
        ("status 20261201-021500-A1B2C3", "is not an upgrade ID"),
        ("status 20261201-021500-a1b2c3 x", "One upgrade ID at a time"),
        ("list all", "`list` takes nothing more"),
        ("scan --all", "`scan` takes only `--namespace NS`"),
        ("scan --namespace Bad_NS", "not a valid namespace"),
    ],
)
def test_bad_input_gets_a_specific_answer(text: str, expected: str) -> None:
    with pytest.raises(UsageError) as err:
        parse(text)
    assert expected in str(err.value)


def test_on_call_commands_parse() -> None:
    uid = "20261201-021500-a1b2c3"
    assert parse("status") == StatusCommand(None)
    assert parse(f"status {uid}") == StatusCommand(uid)
    assert parse("list") == ListCommand()
    assert parse(f"cancel {uid}") == CancelCommand(uid)
    assert parse(f"audit {uid}") == AuditCommand(uid)
    assert parse("scan") == ScanCommand(None)
    assert parse("scan --namespace milvus") == ScanCommand("milvus")
    assert parse("scan -n=milvus") == ScanCommand("milvus")
