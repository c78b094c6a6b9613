"""User values the way helm builds them: ``-f`` files, ``--set``/``--set-string``/``--set-json``,
and how they meet the chart's defaults.

- ``merge_maps`` is helm's pkg/cli/values ``mergeMaps`` (later files win, maps merge deeply).
- ``parse_set`` ports helm's pkg/strvals parser: ``a.b=c,d=e``, ``list[0]=x``, ``{a,b}`` lists,
  backslash escapes, typed scalars (``true``/``false``/``null``/int64; floats stay strings) and
  its error messages (``key "x" has no value``...).
- ``coalesce`` is chartutil ``CoalesceValues``: user values over chart defaults, where a user
  ``null`` deletes a default key.
- ``merge_tables`` is chartutil ``CoalesceTables`` (used by ``--reuse-values``).
"""

from __future__ import annotations

import copy
import json
from typing import Any

MAX_INDEX = 65536
MAX_NESTED = 30


class ValuesError(ValueError):
    """A --set expression or values file helm would refuse (message as helm's)."""


def sort_maps(value: Any) -> Any:
    """Maps with sorted keys, recursively (Go's encoding/json writes map keys sorted)."""
    if isinstance(value, dict):
        return {k: sort_maps(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sort_maps(v) for v in value]
    return value


def merge_maps(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_maps(out[key], value)
        else:
            out[key] = value
    return out


def coalesce(defaults: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Chart defaults under user values; a user ``null`` removes the default."""
    out = copy.deepcopy(user)
    for key, default in defaults.items():
        if key in out:
            value = out[key]
            if value is None:
                del out[key]
            elif isinstance(value, dict) and isinstance(default, dict):
                out[key] = coalesce(default, value)
        else:
            out[key] = copy.deepcopy(default)
    return out


def merge_tables(dst: dict[str, Any], src: dict[str, Any]) -> dict[str, Any]:
    """``CoalesceTables(dst, src)``: keys of ``src`` fill the gaps of ``dst``; ``dst`` wins."""
    out = copy.deepcopy(dst)
    for key, value in src.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge_tables(out[key], value)
    return out


def typed_value(text: str, as_string: bool) -> Any:
    if as_string:
        return text
    lowered = text.lower()
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if lowered == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0" and _is_int64(text):
        return int(text)
    return text


def _is_int64(text: str) -> bool:
    body = text[1:] if text[0] in "+-" else text
    return body.isascii() and body.isdigit() and -(2**63) <= int(text) < 2**63


class _EOF(Exception):
    pass


class _NotList(Exception):
    pass


class _Parser:
    def __init__(self, text: str, *, as_string: bool = False, as_json: bool = False) -> None:
        self.text = text
        self.pos = 0
        self.as_string = as_string
        self.as_json = as_json

    def read(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def until(self, stops: str) -> tuple[str, str | None]:
        """Characters up to one of ``stops`` (consumed); raises _EOF with what was read."""
        buf: list[str] = []
        while True:
            ch = self.read()
            if ch is None:
                raise _EOFWith("".join(buf))
            if ch == "\\":
                nxt = self.read()
                if nxt is not None:
                    buf.append(nxt)
                continue
            if ch in stops:
                return "".join(buf), ch
            buf.append(ch)

    def parse(self, data: dict[str, Any]) -> None:
        while True:
            try:
                self.key(data, 0)
            except _EOF:
                return

    def key(self, data: dict[str, Any], level: int) -> None:
        try:
            key, last = self.until("=[,.")
        except _EOFWith as end:
            if not end.text:
                raise _EOF from None
            raise ValuesError(f'key "{end.text}" has no value') from None
        if last == "[":
            index = self.key_index()
            current = data.get(key)
            data_list = current if isinstance(current, list) else []
            items, ended = self.list_item(data_list, index, level)
            _set(data, key, items)
            if ended:
                raise _EOF
        elif last == "=":
            self.assign(data, key)
        elif last == ",":
            _set(data, key, "")
            raise ValuesError(f'key "{key}" has no value (cannot end with ,)')
        else:
            self.nested(data, key, level + 1)

    def nested(self, data: dict[str, Any], key: str, level: int) -> None:
        if level > MAX_NESTED:
            raise ValuesError(f"value name nested level is greater than maximum supported nested level of {MAX_NESTED}")
        current = data.get(key)
        inner: dict[str, Any] = current if isinstance(current, dict) else {}
        try:
            self.key(inner, level)
        except _EOF:
            if inner:
                _set(data, key, inner)
            raise
        if not inner:
            raise ValuesError(f'key map "{key}" has no value')
        _set(data, key, inner)

    def assign(self, data: dict[str, Any], key: str) -> None:
        if self.as_json:
            try:
                value, end = json.JSONDecoder().raw_decode(self.text, self.pos)
            except ValueError as exc:
                raise ValuesError(f"failed to parse json: {exc.args[0]}") from None
            _set(data, key, value)
            self.pos = end
            if self.read() is None:
                raise _EOF
            return
        try:
            _set(data, key, self.value_list())
            return
        except _EOF:
            _set(data, key, "")
            raise
        except _NotList:
            pass
        raw, eof = self.raw_value()
        _set(data, key, typed_value(raw, self.as_string))
        if eof:
            raise _EOF

    def raw_value(self) -> tuple[str, bool]:
        try:
            text, _ = self.until(",")
            return text, False
        except _EOFWith as eof:
            return eof.text, True

    def value_list(self) -> list[Any]:
        ch = self.read()
        if ch is None:
            raise _EOF
        if ch != "{" or self.as_string:
            self.pos -= 1
            raise _NotList
        items: list[Any] = []
        while True:
            try:
                text, last = self.until(",}")
            except _EOFWith:
                raise ValuesError("list must terminate with '}'") from None
            items.append(typed_value(text, self.as_string))
            if last == "}":
                nxt = self.read()
                if nxt is not None and nxt != ",":
                    self.pos -= 1
                return items

    def key_index(self) -> int:
        try:
            text, _ = self.until("]")
        except _EOFWith:
            raise ValuesError("error parsing index: EOF") from None
        try:
            index = int(text)
        except ValueError:
            raise ValuesError(f'error parsing index: strconv.Atoi: parsing "{text}": invalid syntax') from None
        if index > MAX_INDEX:
            raise ValuesError(
                f"error parsing index: index of {index} is greater than maximum supported index of {MAX_INDEX}"
            )
        return index

    def list_item(self, items: list[Any], index: int, level: int) -> tuple[list[Any], bool]:
        """Set ``items[index]`` from what follows ``]``; also says whether the input ended."""
        if index < 0:
            raise ValuesError(f"negative {index} index not allowed")
        try:
            rest, last = self.until("[.=")
        except _EOFWith as eof:
            if eof.text:
                raise ValuesError(f'unexpected data at end of array index: "{eof.text}"') from None
            raise _EOF from None
        if rest:
            raise ValuesError(f'unexpected data at end of array index: "{rest}"')
        if last == "=":
            holder: dict[str, Any] = {}
            try:
                self.assign(holder, "v")
            except _EOF:
                return _set_index(items, index, holder.get("v", "")), True
            return _set_index(items, index, holder["v"]), False
        if last == "[":
            inner_index = self.key_index()
            current = items[index] if index < len(items) and isinstance(items[index], list) else []
            inner, ended = self.list_item(current, inner_index, level)
            return _set_index(items, index, inner), ended
        current_map = items[index] if index < len(items) and isinstance(items[index], dict) else {}
        ended = False
        try:
            self.key(current_map, level)
        except _EOF:
            ended = True
        return _set_index(items, index, current_map), ended


class _EOFWith(Exception):
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    if key:
        data[key] = value


def _set_index(items: list[Any], index: int, value: Any) -> list[Any]:
    items = list(items)
    while len(items) <= index:
        items.append(None)
    items[index] = value
    return items


def parse_set(expression: str, data: dict[str, Any], *, as_string: bool = False, as_json: bool = False) -> None:
    """Parse one ``--set`` expression into ``data`` (in place); raises ``ValuesError``."""
    _Parser(expression, as_string=as_string, as_json=as_json).parse(data)
