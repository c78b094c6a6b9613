"""Structured logging that can never print a secret.

``setup()`` installs one handler on the root logger that writes one JSON object per line
(``--log-format text`` gives a readable line for a terminal). A ``Redactor`` filter replaces
every configured secret, and anything shaped like a Slack token or a bearer token, with
``[REDACTED]`` in the message, its arguments and the exception text, before formatting.
The same ``redact()`` is used on text that goes to Slack (helm stderr, API messages).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import Any

_TOKEN_PATTERNS = [
    re.compile(r"xox[abposr]-[A-Za-z0-9-]+"),
    re.compile(r"xapp-[A-Za-z0-9-]+"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)((?:token|password|secret)[\"']?\s*[:=]\s*[\"']?)[^\s\"',}]+"),
    re.compile(r"(rediss?://[^:/@\s]*:)[^@\s]+(@)"),
]
# A field whose name says it holds a secret has its text value replaced whole.
_SECRET_FIELD = re.compile(r"(?i)token|password|secret|authorization")
_secrets: list[str] = []


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so that ``redact`` removes them wherever they appear."""
    for value in values:
        if value and len(value) >= 4 and value not in _secrets:
            _secrets.append(value)
    _secrets.sort(key=len, reverse=True)


def redact(text: str) -> str:
    """Return ``text`` with every known secret and token-shaped string replaced."""
    for secret in _secrets:
        text = text.replace(secret, "[REDACTED]")
    for pattern in _TOKEN_PATTERNS:
        if pattern.groups:
            text = pattern.sub(lambda m: m.group(1) + "[REDACTED]" + (m.group(2) if m.re.groups > 1 else ""), text)
        else:
            text = pattern.sub("[REDACTED]", text)
    return text


class RedactingFilter(logging.Filter):
    """Redacts the fully formatted message (and exception text) of every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            message = str(record.msg)
        record.msg = redact(message)
        record.args = None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def redact_value(value: Any, key: str = "") -> Any:
    """``value`` with ``redact`` applied to every text inside it, keeping its structure.

    Numbers, booleans and None stay as they are (a numeric fencing token is not a secret);
    the text value of a field named like a secret (``*token*``, ``*password*``...) is replaced
    whole; anything else becomes its ``str()``, redacted. The result always serializes to JSON.
    """
    if value is None or isinstance(value, bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, dict):
        return {redact(str(k)): redact_value(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v, key) for v in value]
    text = value if isinstance(value, str) else str(value)
    if key and text and _SECRET_FIELD.search(key):
        return "[REDACTED]"
    return redact(text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and any ``extra`` fields.

    Redaction is applied to the values before they are serialized, never to the serialized
    line, so that a line is always valid JSON.
    """

    _skip = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self._skip and not key.startswith("_"):
                entry[key] = value
        if record.exc_text:
            entry["exception"] = record.exc_text
        return json.dumps({key: redact_value(value, key) for key, value in entry.items()}, allow_nan=False)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        upgrade = getattr(record, "upgrade_id", None)
        step = getattr(record, "step", None)
        where = f" [{upgrade}{' ' + step if step else ''}]" if upgrade else ""
        return redact(f"{line}{where}")


_context: ContextVar[dict[str, Any] | None] = ContextVar("log_context", default=None)


@contextlib.contextmanager
def context(**fields: Any) -> Iterator[None]:
    """Every log line inside carries ``fields`` (the upgrade ID and step), whoever logs it."""
    token = _context.set({**(_context.get() or {}), **fields})
    try:
        yield
    finally:
        _context.reset(token)


class ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_context.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


FORMATS = ("json", "text")
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def setup(level: str = "INFO", fmt: str = "json", secrets: Iterable[str | None] = ()) -> None:
    register_secrets(secrets)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("urllib3", "kubernetes", "httpx", "httpcore", "apscheduler", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
