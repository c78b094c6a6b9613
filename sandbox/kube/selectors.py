"""Label and field selectors, parsed and matched the way the Kubernetes API server does.

The store and the HTTP server share this module so a selector means the same thing on every
path. The label-selector grammar and its error messages follow k8s.io/apimachinery
pkg/labels/selector.go (``=``, ``==``, ``!=``, ``in (..)``, ``notin (..)``, ``key``, ``!key``,
``>``/``<`` on integers, comma = AND); a malformed selector raises ``SelectorError`` whose
message matches the real one (the store turns it into a 400 BadRequest). Field selectors
support ``=``, ``==`` and ``!=`` on the field labels a resource declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_SPECIAL = "=!(),<>"
_BINARY_OPERATORS = "in, notin, =, ==, !=, gt, lt"
_NAME_RE = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_DNS_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class SelectorError(ValueError):
    """A selector string the real API server would reject (message as the real one)."""


@dataclass(frozen=True)
class Requirement:
    """One label requirement: key, operator and values."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        return present and _compare_int(value, self.op, self.values[0])


def _compare_int(value: str | None, op: str, bound: str) -> bool:
    try:
        number = int(value or "")
    except ValueError:
        return False
    return number > int(bound) if op == "gt" else number < int(bound)


def label_key_error(key: str) -> str | None:
    """The reason a label (or annotation) key is invalid, or None when it is valid."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and not prefix:
        return "prefix part must be non-empty"
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN_RE.match(prefix)):
        return "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _NAME_RE.match(name):
        return (
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
            " with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for"
            " validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
        )
    return None


def label_value_error(value: str) -> str | None:
    """The reason a label value is invalid, or None when it is valid."""
    if value == "":
        return None
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _NAME_RE.match(value):
        return (
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.',"
            " and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or"
            " '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
        )
    return None


def _lex(text: str) -> list[str]:
    tokens: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch.isspace():
            i += 1
            continue
        if ch in _SPECIAL:
            two = text[i : i + 2]
            if two in ("==", "!="):
                tokens.append(two)
                i += 2
            else:
                tokens.append(ch)
                i += 1
            continue
        j = i
        while j < len(text) and not text[j].isspace() and text[j] not in _SPECIAL:
            j += 1
        tokens.append(text[i:j])
        i = j
    return tokens


def _is_identifier(tok: str | None) -> bool:
    return tok is not None and tok not in ("==", "!=") and tok not in _SPECIAL


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _lex(text)
        self.pos = 0

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str | None:
        tok = self.peek()
        self.pos += 1
        return tok

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok = self.peek()
            if tok is None:
                return reqs
            if not (_is_identifier(tok) or tok == "!"):
                raise SelectorError(f"found '{tok}', expected: !, identifier, or 'end of string'")
            try:
                reqs.append(self.requirement())
            except SelectorError as exc:
                raise SelectorError(f"unable to parse requirement: {exc}") from None
            after = self.take()
            if after is None:
                return reqs
            if after != ",":
                raise SelectorError(f"found '{after}', expected: ',' or 'end of string'")
            nxt = self.peek()
            if not (_is_identifier(nxt) or nxt == "!"):
                raise SelectorError(f"found '{nxt or ''}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        tok = self.take()
        if tok == "!":
            key = self.take()
            if not _is_identifier(key):
                raise SelectorError(f"found '{key or ''}', expected: identifier after '!'")
            assert key is not None
            _check_key(key)
            return Requirement(key, "!")
        assert tok is not None
        _check_key(tok)
        if self.peek() in (None, ","):
            return Requirement(tok, "exists")
        return self.operator_and_values(tok)

    def operator_and_values(self, key: str) -> Requirement:
        op = self.take() or ""
        if op in ("=", "=="):
            return Requirement(key, "=", (self.single_value(key),))
        if op == "!=":
            return Requirement(key, "!=", (self.single_value(key),))
        if op in ("in", "notin"):
            return Requirement(key, op, self.value_set(key))
        if op in (">", "<"):
            bound = self.single_value(key)
            if not re.fullmatch(r"-?\d+", bound):
                raise SelectorError(f"for 'gt', 'lt' operators, exactly one value is required: {bound!r}")
            return Requirement(key, "gt" if op == ">" else "lt", (bound,))
        raise SelectorError(f"found '{op}', expected: {_BINARY_OPERATORS}")

    def single_value(self, key: str) -> str:
        tok = self.peek()
        if tok is None or tok == ",":
            return ""
        if not _is_identifier(tok):
            raise SelectorError(f"found '{tok}', expected: identifier")
        self.pos += 1
        _check_value(key, tok)
        return tok

    def value_set(self, key: str) -> tuple[str, ...]:
        if self.take() != "(":
            raise SelectorError("found '', expected: '('")
        values: list[str] = []
        while True:
            tok = self.take()
            if tok == ")" and not values:
                return ()
            if tok in (",", ")"):  # empty element, e.g. "(a,,b)"
                values.append("")
            elif _is_identifier(tok):
                assert tok is not None
                _check_value(key, tok)
                values.append(tok)
                tok = self.take()
            else:
                raise SelectorError(f"found '{tok or ''}', expected: ',', ')' or identifier")
            if tok == ")":
                return tuple(values)
            if tok != ",":
                raise SelectorError(f"found '{tok or ''}', expected: ',' or ')'")


def _check_key(key: str) -> None:
    reason = label_key_error(key)
    if reason is not None:
        raise SelectorError(f'invalid label key "{key}": {reason}')


def _check_value(key: str, value: str) -> None:
    reason = label_value_error(value)
    if reason is not None:
        raise SelectorError(f'invalid label value: "{value}": at key: "{key}": {reason}')


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse a label selector; an empty or None selector matches everything."""
    if not text:
        return []
    return _Parser(text).parse()


def labels_match(reqs: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    """True when every requirement holds for these labels."""
    have = labels or {}
    return all(r.matches(have) for r in reqs)


@dataclass(frozen=True)
class FieldRequirement:
    """One field-selector term: field path, '=' or '!=', value."""

    field: str
    op: str
    value: str

    def matches(self, obj: Mapping[str, Any]) -> bool:
        actual = field_value(obj, self.field)
        return (actual == self.value) if self.op == "=" else (actual != self.value)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string value of a dotted field path ('' when absent), as field selectors see it."""
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text: str | None, supported: Iterable[str]) -> list[FieldRequirement]:
    """Parse a field selector, rejecting fields the resource does not index."""
    if not text:
        return []
    allowed = set(supported)
    reqs: list[FieldRequirement] = []
    for term in text.split(","):
        if not term:
            continue
        for op in ("!=", "==", "="):
            if op in term:
                field, _, value = term.partition(op)
                break
        else:
            raise SelectorError(f"invalid selector: '{text}'; can't understand '{term}'")
        field = field.strip()
        if field not in allowed:
            raise SelectorError(f"field label not supported: {field}")
        reqs.append(FieldRequirement(field, "!=" if op == "!=" else "=", value.strip()))
    return reqs
