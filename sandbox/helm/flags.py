"""Command-line parsing with the behaviour and error messages of cobra + pflag (helm v3.16).

Helm's CLI is strict and the bot must not get away with anything real helm refuses, so this
module reproduces what matters: subcommand lookup (names and aliases, ``unknown command``),
interspersed flags, ``--flag=value`` / ``--flag value`` / ``-fvalue`` / ``-f=value`` / grouped
boolean shorthands, ``--`` ending flag parsing, optional-value flags (``--dry-run``), and the
exact pflag errors (``unknown flag: --x``, ``unknown shorthand flag: 'x' in -x``,
``flag needs an argument: --x``, ``invalid argument "v" for "-o, --output" flag: ...``).
Values are converted like pflag does (Go ``strconv.ParseBool``, ``ParseInt``,
``time.ParseDuration``, comma-split string slices).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class CliError(Exception):
    """An error helm prints as ``Error: <message>`` on stderr, exiting 1."""


class HelpRequested(Exception):
    """``-h``/``--help`` was given."""


_BOOL_TRUE = {"1", "t", "T", "TRUE", "true", "True"}
_BOOL_FALSE = {"0", "f", "F", "FALSE", "false", "False"}
_DURATION_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_DURATION_RE = re.compile(r"([0-9]*(?:\.[0-9]*)?)([a-zµμ]*)")


def parse_bool(value: str) -> bool:
    if value in _BOOL_TRUE:
        return True
    if value in _BOOL_FALSE:
        return False
    raise ValueError(f'strconv.ParseBool: parsing "{value}": invalid syntax')


def parse_int(value: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", value):
        raise ValueError(f'strconv.ParseInt: parsing "{value}": invalid syntax')
    number = int(value)
    if not -(2**63) <= number < 2**63:
        raise ValueError(f'strconv.ParseInt: parsing "{value}": value out of range')
    return number


def parse_duration(value: str) -> float:
    """Go ``time.ParseDuration``: ``5m0s``, ``300s``, ``1.5h``; a bare number other than 0 is an error."""
    text = value
    sign = 1.0
    if text[:1] in "+-" and text:
        sign = -1.0 if text[0] == "-" else 1.0
        text = text[1:]
    if text == "0":
        return 0.0
    if not text:
        raise ValueError(f'time: invalid duration "{value}"')
    total = 0.0
    while text:
        match = _DURATION_RE.match(text)
        number, unit = (match.group(1), match.group(2)) if match else ("", "")
        if number in ("", "."):
            raise ValueError(f'time: invalid duration "{value}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{value}"')
        if unit not in _DURATION_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{value}"')
        total += float(number) * _DURATION_UNITS[unit]
        text = text[len(number) + len(unit) :]
    return sign * total


def format_duration(seconds: float) -> str:
    """Go ``time.Duration.String`` for whole seconds and up (``5m0s``, ``1h0m0s``, ``30s``)."""
    if seconds == 0:
        return "0s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    frac = seconds - whole
    sec_text = f"{secs + frac:g}s"
    if hours:
        return f"{hours}h{minutes}m{sec_text}"
    if minutes:
        return f"{minutes}m{sec_text}"
    return sec_text


def _parse_output(value: str) -> str:
    if value not in ("table", "json", "yaml"):
        raise ValueError("invalid format type")
    return value


@dataclass
class Flag:
    """One flag. ``kind``: bool, string, int, duration, output, string_array, string_slice."""

    name: str
    kind: str = "string"
    shorthand: str = ""
    default: Any = None
    no_opt_default: str | None = None  # value used when the flag is given without one

    def __post_init__(self) -> None:
        if self.kind == "bool" and self.no_opt_default is None:
            self.no_opt_default = "true"
        if self.default is None:
            self.default = {"bool": False, "int": 0, "string_array": [], "string_slice": []}.get(self.kind, "")

    @property
    def display(self) -> str:
        return f"-{self.shorthand}, --{self.name}" if self.shorthand else f"--{self.name}"

    def convert(self, value: str) -> Any:
        converters: dict[str, Callable[[str], Any]] = {
            "bool": parse_bool,
            "int": parse_int,
            "duration": parse_duration,
            "output": _parse_output,
        }
        conv = converters.get(self.kind)
        try:
            return conv(value) if conv else value
        except ValueError as exc:
            raise CliError(f'invalid argument "{value}" for "{self.display}" flag: {exc}') from None


ArgsCheck = Callable[["Command", list[str]], None]


@dataclass
class Command:
    """A cobra command: ``use`` is cobra's Use string (name first)."""

    use: str
    flags: list[Flag] = field(default_factory=list)
    args: ArgsCheck | None = None
    run: Callable[..., None] | None = None
    aliases: tuple[str, ...] = ()
    subcommands: list[Command] = field(default_factory=list)
    short: str = ""
    parent: Command | None = None

    def __post_init__(self) -> None:
        for sub in self.subcommands:
            sub.parent = self

    @property
    def name(self) -> str:
        return self.use.split(" ", 1)[0]

    @property
    def path(self) -> str:
        return f"{self.parent.path} {self.name}" if self.parent else self.name

    @property
    def use_line(self) -> str:
        line = f"{self.parent.path} {self.use}" if self.parent else self.use
        return line if "[flags]" in line else f"{line} [flags]"

    def all_flags(self) -> list[Flag]:
        """Local flags, then persistent flags of the ancestors, then ``-h/--help``."""
        flags = list(self.flags)
        node = self.parent
        while node is not None:
            if node.parent is None:  # only the root's flags are persistent in helm
                flags += node.flags
            node = node.parent
        flags.append(Flag("help", "bool", "h"))
        return flags

    def find_sub(self, word: str) -> Command | None:
        for sub in self.subcommands:
            if word == sub.name or word in sub.aliases:
                return sub
        return None


def require_exact(n: int) -> ArgsCheck:
    def check(cmd: Command, args: list[str]) -> None:
        if len(args) != n:
            noun = "argument" if n == 1 else "arguments"
            raise CliError(f'"{cmd.path}" requires {n} {noun}\n\nUsage:  {cmd.use_line}')

    return check


def require_min(n: int) -> ArgsCheck:
    def check(cmd: Command, args: list[str]) -> None:
        if len(args) < n:
            noun = "argument" if n == 1 else "arguments"
            raise CliError(f'"{cmd.path}" requires at least {n} {noun}\n\nUsage:  {cmd.use_line}')

    return check


def require_none(cmd: Command, args: list[str]) -> None:
    if args:
        raise CliError(f'"{cmd.path}" accepts no arguments\n\nUsage:  {cmd.use_line}')


@dataclass
class Parsed:
    command: Command
    values: dict[str, Any]
    args: list[str]
    changed: set[str]

    def get(self, name: str) -> Any:
        return self.values[name]


def _levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def _suggestions(root: Command, word: str) -> str:
    found = [
        sub.name
        for sub in root.subcommands
        if _levenshtein(word.lower(), sub.name.lower()) <= 2 or sub.name.lower().startswith(word.lower())
    ]
    if not found:
        return ""
    return "\n\nDid you mean this?\n" + "".join(f"\t{name}\n" for name in found)


def _takes_value(word: str, flags: list[Flag]) -> bool:
    """Whether ``word`` (a flag without ``=``) consumes the next argument (cobra's stripFlags)."""
    for flag in flags:
        if (word.startswith("--") and word[2:] == flag.name) or (word[:1] == "-" and word[1:] == flag.shorthand):
            return flag.no_opt_default is None
    return False


def find_command(root: Command, argv: list[str]) -> tuple[Command, list[str]]:
    """cobra ``Find``: walk the non-flag words down the command tree."""
    cmd = root
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            if "=" not in word and _takes_value(word, cmd.all_flags()):
                i += 1
            i += 1
            continue
        sub = cmd.find_sub(word)
        if sub is None:
            break
        cmd = sub
        argv = argv[:i] + argv[i + 1 :]
        continue
    if cmd is root and _first_positional(argv, root) is not None:
        word = _first_positional(argv, root) or ""
        raise CliError(f'unknown command "{word}" for "{root.name}"{_suggestions(root, word)}')
    return cmd, argv


def _first_positional(argv: list[str], cmd: Command) -> str | None:
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            return argv[i + 1] if i + 1 < len(argv) else None
        if word.startswith("-") and word != "-":
            if "=" not in word and _takes_value(word, cmd.all_flags()):
                i += 1
            i += 1
            continue
        return word
    return None


class _FlagParser:
    def __init__(self, cmd: Command) -> None:
        self.flags = cmd.all_flags()
        self.values: dict[str, Any] = {f.name: _copy_default(f.default) for f in self.flags}
        self.changed: set[str] = set()

    def long(self, name: str) -> Flag:
        for flag in self.flags:
            if flag.name == name:
                return flag
        raise CliError(f"unknown flag: --{name}")

    def short(self, char: str, group: str) -> Flag:
        for flag in self.flags:
            if flag.shorthand == char:
                return flag
        raise CliError(f"unknown shorthand flag: '{char}' in -{group}")

    def set(self, flag: Flag, raw: str) -> None:
        value = flag.convert(raw)
        if flag.kind in ("string_array", "string_slice"):
            items = [raw] if flag.kind == "string_array" else ([p for p in raw.split(",")] if raw else [])
            previous = self.values[flag.name] if flag.name in self.changed else []
            self.values[flag.name] = [*previous, *items]
        else:
            self.values[flag.name] = value
        self.changed.add(flag.name)


def _copy_default(value: Any) -> Any:
    return list(value) if isinstance(value, list) else value


def _parse_long(parser: _FlagParser, argv: list[str], i: int) -> int:
    name, has_value, value = argv[i][2:].partition("=")
    flag = parser.long(name)
    if has_value:
        parser.set(flag, value)
    elif flag.no_opt_default is not None:
        parser.set(flag, flag.no_opt_default)
    elif i + 1 < len(argv):
        parser.set(flag, argv[i + 1])
        return i + 2
    else:
        raise CliError(f"flag needs an argument: --{name}")
    return i + 1


def _parse_short(parser: _FlagParser, argv: list[str], i: int) -> int:
    group = argv[i][1:]
    rest = group
    consumed_next = False
    while rest:
        char = rest[0]
        flag = parser.short(char, group)
        if len(rest) > 2 and rest[1] == "=":
            parser.set(flag, rest[2:])
            rest = ""
        elif flag.no_opt_default is not None:
            parser.set(flag, flag.no_opt_default)
            rest = rest[1:]
        elif len(rest) > 1:
            parser.set(flag, rest[1:])
            rest = ""
        elif i + 1 < len(argv):
            parser.set(flag, argv[i + 1])
            consumed_next = True
            rest = ""
        else:
            raise CliError(f"flag needs an argument: '{char}' in -{group}")
    return i + (2 if consumed_next else 1)


def parse_flags(cmd: Command, argv: list[str]) -> Parsed:
    """pflag ``Parse`` with interspersed arguments; raises ``CliError`` / ``HelpRequested``."""
    parser = _FlagParser(cmd)
    positional: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word == "--":
            positional += argv[i + 1 :]
            break
        if word.startswith("--"):
            i = _parse_long(parser, argv, i)
        elif word.startswith("-") and word != "-":
            i = _parse_short(parser, argv, i)
        else:
            positional.append(word)
            i += 1
    if parser.values.get("help"):
        raise HelpRequested
    return Parsed(cmd, parser.values, positional, parser.changed)


def help_text(cmd: Command) -> str:
    lines = [cmd.short or cmd.path, "", "Usage:", f"  {cmd.use_line}"]
    if cmd.subcommands:
        lines += ["", "Available Commands:"]
        lines += [f"  {sub.name:<12} {sub.short}" for sub in cmd.subcommands]
    lines += ["", "Flags:"]
    lines += [f"  {f.display}" for f in cmd.all_flags()]
    return "\n".join(lines) + "\n"
