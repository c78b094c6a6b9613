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
posts the plan without changing anything). Example: `{COMMAND} start my-release --namespace milvus`
• `{COMMAND} scan [--namespace NS]`: which Milvus installations need this upgrade (read-only). \
Example: `{COMMAND} scan --namespace milvus`
• `{COMMAND} status [ID]`: where one upgrade stands; without an ID, the upgrades of this channel. \
Example: `{COMMAND} status 20261201-021500-a1b2c3`
• `{COMMAND} list`: every active upgrade and the last 20 that ended. Example: `{COMMAND} list`
• `{COMMAND} cancel <ID>`: stop an upgrade safely (at a checkpoint it is Abort; a destructive step under way \
finishes first). Example: `{COMMAND} cancel 20261201-021500-a1b2c3`
• `{COMMAND} audit <ID>`: attach the upgrade's audit trail (JSON lines) to its thread. \
Example: `{COMMAND} audit 20261201-021500-a1b2c3`
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


@dataclass(frozen=True)
class StatusCommand:
    upgrade_id: str | None = None  # None: the upgrades of this channel


@dataclass(frozen=True)
class ListCommand:
    pass


@dataclass(frozen=True)
class CancelCommand:
    upgrade_id: str


@dataclass(frozen=True)
class AuditCommand:
    upgrade_id: str


@dataclass(frozen=True)
class ScanCommand:
    namespace: str | None = None  # None: every namespace the bot may see


Command = StartCommand | HelpCommand | StatusCommand | ListCommand | CancelCommand | AuditCommand | ScanCommand
# The commands only operators may give (they change something, or reveal the whole cluster).
OPERATOR_ONLY = (CancelCommand, AuditCommand, ScanCommand)
_UPGRADE_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


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


def _parse_id(verb: str, args: list[str], required: bool) -> str | None:
    example = f"`{COMMAND} {verb} 20261201-021500-a1b2c3`"
    if not args:
        if required:
            raise UsageError(f"Which upgrade? Give its ID, e.g. {example} (`{COMMAND} list` shows them).")
        return None
    if len(args) > 1:
        raise UsageError(f"One upgrade ID at a time, e.g. {example}.")
    if not _UPGRADE_ID.match(args[0]):
        raise UsageError(
            f"`{_echo(args[0])}` is not an upgrade ID (they look like `20261201-021500-a1b2c3`); "
            f"`{COMMAND} list` shows them."
        )
    return args[0]


def _parse_scan(args: list[str]) -> ScanCommand:
    namespace = None
    i = 0
    while i < len(args):
        flag, eq, inline = args[i].partition("=")
        if flag in ("--namespace", "-n"):
            namespace = _check_name("namespace", inline if eq else _take_value(args, i, flag), 63)
            i += 1 if eq else 2
            continue
        raise UsageError(f"`scan` takes only `--namespace NS`, not `{_echo(args[i])}`.")
    return ScanCommand(namespace)


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
    if verb == "status":
        return StatusCommand(_parse_id(verb, rest, required=False))
    if verb == "list":
        if rest:
            raise UsageError(f"`list` takes nothing more; `{COMMAND} status <ID>` shows one upgrade.")
        return ListCommand()
    if verb == "cancel":
        return CancelCommand(str(_parse_id(verb, rest, required=True)))
    if verb == "audit":
        return AuditCommand(str(_parse_id(verb, rest, required=True)))
    if verb == "scan":
        return _parse_scan(rest)
    raise UsageError(f"Unknown command `{_echo(verb)}`. Try `{COMMAND} help`.")
