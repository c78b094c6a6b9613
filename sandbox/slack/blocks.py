"""Block Kit as Slack's servers treat it: light validation, normalisation and plain-text rendering.

Why: the bot builds its checkpoints and progress views in Block Kit; Slack rejects a message whose
blocks break the documented limits with ``invalid_blocks`` and a ``response_metadata.messages`` list
of ``[ERROR] ... [json-pointer:/blocks/N/...]`` lines. This module applies the limits that a bot
realistically trips over, the same way, so the sandbox rejects what Slack rejects:

- ``blocks`` must be a JSON array of objects (else ``invalid_blocks_format``), at most 50 in a
  message (100 in a modal), each with a known ``type``;
- ``block_id`` and ``action_id`` are at most 255 characters and unique within the message/view;
- section text 1..3000 characters, at most 10 fields of at most 2000; header plain_text <= 150;
  context 1..10 elements; actions 1..25 elements;
- button text plain_text 1..75, value <= 2000, url <= 3000, style ``primary``/``danger``;
  confirm dialog title <= 100, text <= 300, confirm/deny <= 30 (all plain_text except text).

Normalisation does what Slack does to a stored message: every block gets a ``block_id`` and every
interactive element an ``action_id`` when they had none, and plain_text objects get ``emoji: true``.
Rendering turns blocks into terminal-friendly lines (buttons as ``[Approve] [Abort]``).
Everything here is pure (no I/O, no shared state).
"""

from __future__ import annotations

import copy
import json
import secrets
import string
from collections.abc import Callable, Iterator
from typing import Any

BLOCK_TYPES = frozenset(
    {
        "actions",
        "alert",
        "auth_provider",
        "call",
        "card",
        "carousel",
        "container",
        "context",
        "context_actions",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "plan",
        "rich_text",
        "section",
        "table",
        "task_card",
        "video",
    }
)
TEXT_TYPES = frozenset({"plain_text", "mrkdwn"})
MAX_MESSAGE_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ID = 255


class BlocksFormatError(ValueError):
    """``blocks`` is not a JSON array of objects (Slack: ``invalid_blocks_format``)."""


def parse_blocks(raw: Any) -> list[dict[str, Any]] | None:
    """Decode a ``blocks`` argument (JSON string from a form body, or a list from a JSON body).

    Returns None when the argument is absent; raises BlocksFormatError when it is not an array.
    """
    if raw is None:
        return None
    value = raw
    if isinstance(raw, str):
        try:
            value = json.loads(raw)
        except ValueError:
            raise BlocksFormatError("blocks is not valid JSON") from None
    if not isinstance(value, list):
        raise BlocksFormatError("blocks must be an array")
    return value


def _err(errors: list[str], message: str, pointer: str) -> None:
    errors.append(f"[ERROR] {message} [json-pointer:{pointer}]")


class _Checker:
    """Collects Slack-style errors for one message or view."""

    def __init__(self) -> None:
        self.errors: list[str] = []
        self.block_ids: set[str] = set()
        self.action_ids: set[str] = set()

    def err(self, message: str, pointer: str) -> None:
        _err(self.errors, message, pointer)

    def text(self, obj: Any, ptr: str, max_len: int, *, plain_only: bool = False) -> None:
        if not isinstance(obj, dict):
            self.err("must provide an object", ptr)
            return
        kind = obj.get("type")
        allowed = {"plain_text"} if plain_only else TEXT_TYPES
        if kind not in allowed:
            self.err(f"must be one of {sorted(allowed)}", f"{ptr}/type")
        value = obj.get("text")
        if not isinstance(value, str) or not value:
            self.err("must be more than 0 characters", f"{ptr}/text")
        elif len(value) > max_len:
            self.err(f"must be less than {max_len + 1} characters", f"{ptr}/text")

    def ident(self, value: Any, ptr: str, seen: set[str], what: str) -> None:
        if value is None:
            return
        if not isinstance(value, str) or not value or len(value) > MAX_ID:
            self.err(f"must be a string of 1..{MAX_ID} characters", ptr)
        elif value in seen:
            self.err(f"{what} already exists", ptr)
        else:
            seen.add(value)

    def length(self, value: Any, ptr: str, max_len: int) -> None:
        if value is not None and (not isinstance(value, str) or len(value) > max_len):
            self.err(f"must be a string of at most {max_len} characters", ptr)

    def items(self, value: Any, ptr: str, low: int, high: int) -> list[Any]:
        if not isinstance(value, list):
            self.err("must provide an array", ptr)
            return []
        if len(value) < low:
            self.err(f"must provide at least {low} items", ptr)
        if len(value) > high:
            self.err(f"no more than {high} items allowed", ptr)
        return value

    def confirm(self, obj: Any, ptr: str) -> None:
        if not isinstance(obj, dict):
            self.err("must provide an object", ptr)
            return
        self.text(obj.get("title"), f"{ptr}/title", 100, plain_only=True)
        self.text(obj.get("text"), f"{ptr}/text", 300)
        self.text(obj.get("confirm"), f"{ptr}/confirm", 30, plain_only=True)
        self.text(obj.get("deny"), f"{ptr}/deny", 30, plain_only=True)
        if obj.get("style") not in (None, "primary", "danger"):
            self.err("must be one of [primary, danger]", f"{ptr}/style")

    def element(self, el: Any, ptr: str) -> None:
        if not isinstance(el, dict) or not isinstance(el.get("type"), str):
            self.err("must provide an object with a type", ptr)
            return
        if el["type"] in TEXT_TYPES:
            self.text(el, ptr, 3000)
            return
        self.ident(el.get("action_id"), f"{ptr}/action_id", self.action_ids, "action_id")
        if el["type"] == "button":
            self.button(el, ptr)
        elif el["type"] == "image":
            self.length(el.get("alt_text"), f"{ptr}/alt_text", 2000)
        if "confirm" in el:
            self.confirm(el["confirm"], f"{ptr}/confirm")

    def button(self, el: dict[str, Any], ptr: str) -> None:
        self.text(el.get("text"), f"{ptr}/text", 75, plain_only=True)
        self.length(el.get("value"), f"{ptr}/value", 2000)
        self.length(el.get("url"), f"{ptr}/url", 3000)
        if el.get("style") not in (None, "primary", "danger"):
            self.err("must be one of [primary, danger]", f"{ptr}/style")

    def block(self, block: Any, ptr: str) -> None:
        if not isinstance(block, dict):
            self.err("must provide an object", ptr)
            return
        kind = block.get("type")
        if kind not in BLOCK_TYPES:
            self.err(f"unsupported type: {kind}", f"{ptr}/type")
            return
        self.ident(block.get("block_id"), f"{ptr}/block_id", self.block_ids, "block_id")
        check = _BLOCK_CHECKS.get(kind)
        if check is not None:
            check(self, block, ptr)


def _section(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    if "text" not in block and "fields" not in block:
        c.err("must provide either text or fields", ptr)
    if "text" in block:
        c.text(block["text"], f"{ptr}/text", 3000)
    if "fields" in block:
        for i, field in enumerate(c.items(block["fields"], f"{ptr}/fields", 1, 10)):
            c.text(field, f"{ptr}/fields/{i}", 2000)
    if "accessory" in block:
        c.element(block["accessory"], f"{ptr}/accessory")


def _header(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    c.text(block.get("text"), f"{ptr}/text", 150, plain_only=True)


def _context(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    for i, el in enumerate(c.items(block.get("elements"), f"{ptr}/elements", 1, 10)):
        c.element(el, f"{ptr}/elements/{i}")


def _actions(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    for i, el in enumerate(c.items(block.get("elements"), f"{ptr}/elements", 1, 25)):
        c.element(el, f"{ptr}/elements/{i}")


def _input(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    c.text(block.get("label"), f"{ptr}/label", 2000, plain_only=True)
    c.element(block.get("element"), f"{ptr}/element")


def _image(c: _Checker, block: dict[str, Any], ptr: str) -> None:
    if not isinstance(block.get("alt_text"), str):
        c.err("must provide alt_text", f"{ptr}/alt_text")
    c.length(block.get("alt_text"), f"{ptr}/alt_text", 2000)
    if "image_url" not in block and "slack_file" not in block:
        c.err("must provide either image_url or slack_file", ptr)


_BLOCK_CHECKS: dict[str, Callable[[_Checker, dict[str, Any], str], None]] = {
    "section": _section,
    "header": _header,
    "context": _context,
    "actions": _actions,
    "input": _input,
    "image": _image,
}


def validate_blocks(blocks: list[Any], *, max_blocks: int = MAX_MESSAGE_BLOCKS) -> list[str]:
    """Return Slack-style error lines for ``blocks`` (empty when Slack would accept them)."""
    checker = _Checker()
    if len(blocks) > max_blocks:
        checker.err(f"no more than {max_blocks} items allowed", "/blocks")
    for i, block in enumerate(blocks):
        checker.block(block, f"/blocks/{i}")
    return checker.errors


def _random_id(length: int = 5) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


INTERACTIVE = frozenset(
    {
        "button",
        "checkboxes",
        "channels_select",
        "conversations_select",
        "datepicker",
        "datetimepicker",
        "external_select",
        "multi_channels_select",
        "multi_conversations_select",
        "multi_external_select",
        "multi_static_select",
        "multi_users_select",
        "overflow",
        "plain_text_input",
        "radio_buttons",
        "static_select",
        "timepicker",
        "users_select",
    }
)


def normalize_blocks(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A deep copy with the ids and ``emoji`` flags Slack adds when it stores a message."""
    result = copy.deepcopy(blocks)
    for block in result:
        block.setdefault("block_id", _random_id())
    for node in _walk(result):
        kind = node.get("type")
        if kind == "plain_text" and isinstance(node.get("text"), str):
            node.setdefault("emoji", True)
        elif kind in INTERACTIVE:
            node.setdefault("action_id", _random_id(4))
    return result


def iter_elements(blocks: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (block_id, element) for every interactive element (actions blocks and accessories)."""
    for block in blocks:
        block_id = str(block.get("block_id", ""))
        if block.get("type") == "actions":
            for el in block.get("elements") or []:
                yield block_id, el
        elif isinstance(block.get("accessory"), dict):
            yield block_id, block["accessory"]


def find_button(blocks: list[dict[str, Any]], action_id: str) -> tuple[str, dict[str, Any]] | None:
    """The (block_id, button element) with ``action_id``, or None."""
    for block_id, el in iter_elements(blocks):
        if el.get("type") == "button" and el.get("action_id") == action_id:
            return block_id, el
    return None


def text_of(obj: Any) -> str:
    """The text of a text object (or "" when it is not one)."""
    if isinstance(obj, dict) and isinstance(obj.get("text"), str):
        return str(obj["text"])
    return ""


def _element_label(el: dict[str, Any]) -> str:
    kind = el.get("type")
    if kind in TEXT_TYPES:
        return text_of(el)
    if kind == "button":
        return f"[{text_of(el.get('text'))}]"
    if kind == "image":
        return f"(image: {el.get('alt_text', '')})"
    placeholder = text_of(el.get("placeholder"))
    return f"<{kind}{': ' + placeholder if placeholder else ''}>"


def _rich_text(node: Any) -> str:
    parts = [str(n.get("text", "")) for n in _walk(node) if n.get("type") in ("text", "link")]
    return "".join(parts)


def _render_section(block: dict[str, Any]) -> list[str]:
    lines = text_of(block.get("text")).splitlines() if "text" in block else []
    lines += [text_of(f) for f in block.get("fields") or []]
    if isinstance(block.get("accessory"), dict):
        lines.append(_element_label(block["accessory"]))
    return lines


def _render_block(block: dict[str, Any]) -> list[str]:
    kind = block.get("type")
    if kind == "section":
        return _render_section(block)
    if kind == "header":
        return [f"== {text_of(block.get('text'))} =="]
    if kind == "divider":
        return ["-" * 40]
    if kind in ("context", "actions"):
        sep = " | " if kind == "context" else " "
        return [sep.join(_element_label(el) for el in block.get("elements") or [])]
    if kind == "image":
        return [f"(image: {block.get('alt_text', '')})"]
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "rich_text":
        return _rich_text(block).splitlines()
    return [f"({kind} block)"]


def render_blocks(blocks: list[dict[str, Any]]) -> list[str]:
    """Plain-text lines for a list of blocks, in order."""
    lines: list[str] = []
    for block in blocks:
        lines.extend(_render_block(block))
    return lines
