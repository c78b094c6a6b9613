"""Parsing of the ``/milvus-pulsar-upgrade`` slash command (pure functions, no I/O).

``parse()`` turns the command text into a ``Command`` or raises ``UsageError`` whose message
is the specific, human answer the person gets (ephemerally). Names are validated the way
Kubernetes and Helm validate them, so a typo is caught before anything starts.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

COMMAND = "/milvus-pulsar-upgrade"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MODES = ("helm", "operator")

HELP = f"""*{COMMAND}* runs the Milvus 2.5 Pulsar V2 → V3 upgrade, with an approval before every destructive step.
• `{COMMAND} start <release> [--namespace NS] [--mode helm|operator] [--dry-run]`: start an upgrade \
(namespace defaults to `default`; the mode is detected when not given; `--dry-run` runs the read-only checks and \
posts the plan without changing anything)
• `{COMMAND} help`: this message
The upgrade stops Milvus for several minutes: every client must stop writing first."""


class UsageError(ValueError):
    """The command text is wrong; the message says how, in one or two lines."""


_ECHO_MAX = 40


def _echo(value: str) -> str:
    """``value`` as it may be shown back in a message: one line, at most 40 characters, no
    backticks, and Slack's control characters escaped (so ``<!channel>`` is text, not a mention)."""
    flat = "".join(c if c.isprintable() else " " for c in value).replace("`", "'")
    if len(flat) > _ECHO_MAX:
        flat = flat[: _ECHO_MAX - 1] + "…"
    return flat.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@dataclass(frozen=True)
class StartCommand:
    release: str
    namespace: str = "default"
    mode: str | None = None
    dry_run: bool = False


@dataclass(frozen=True)
class HelpCommand:
    pass


Command = StartCommand | HelpCommand


def _check_name(kind: str, value: str, max_len: int) -> str:
    if len(value) > max_len or not _DNS_LABEL.match(value):
        raise UsageError(
            f"`{_echo(value)}` is not a valid {kind}: use at most {max_len} lowercase letters, digits and '-', "
            "starting and ending with a letter or digit."
        )
    return value


def _take_value(args: list[str], i: int, flag: str) -> str:
    if i + 1 >= len(args) or args[i + 1].startswith("--"):
        raise UsageError(f"`{flag}` needs a value, e.g. `{flag} {'helm' if flag == '--mode' else 'milvus'}`.")
    return args[i + 1]


def _parse_start(args: list[str]) -> StartCommand:
    release: str | None = None
    namespace, mode, dry_run = "default", None, False
    i = 0
    while i < len(args):
        arg = args[i]
        flag, eq, inline = arg.partition("=")
        if flag in ("--namespace", "-n", "--mode"):
            value = inline if eq else _take_value(args, i, flag)
            i += 1 if eq else 2
            if flag == "--mode":
                if value not in MODES:
                    raise UsageError(f"`--mode` must be `helm` or `operator`, not `{_echo(value)}`.")
                mode = value
            else:
                namespace = _check_name("namespace", value, 63)
            continue
        if arg == "--dry-run":
            dry_run = True
        elif arg.startswith("-"):
            raise UsageError(
                f"Unknown option `{_echo(arg)}`. Options: `--namespace NS`, `--mode helm|operator`, `--dry-run`."
            )
        elif release is not None:
            raise UsageError(f"One release at a time: got `{release}` and `{_echo(arg)}`.")
        else:
            release = _check_name("release name", arg, 53)
        i += 1
    if release is None:
        raise UsageError(f"Which release? Usage: `{COMMAND} start <release> [--namespace NS]`.")
    return StartCommand(release=release, namespace=namespace, mode=mode, dry_run=dry_run)


def parse(text: str) -> Command:
    """Parse the text after the slash command."""
    try:
        args = shlex.split(text or "")
    except ValueError:
        raise UsageError("Unbalanced quotes in the command.") from None
    if not args or args[0] in ("help", "--help", "-h"):
        return HelpCommand()
    verb, rest = args[0], args[1:]
    if verb == "start":
        return _parse_start(rest)
    raise UsageError(f"Unknown command `{_echo(verb)}`. Try `{COMMAND} help`.")
