"""Secrets never reach a log line or a Slack text.

Covers: registered secrets and token-shaped strings (Slack tokens, bearer tokens, passwords
in URLs and key=value pairs) are replaced in messages, arguments and exception text; the JSON
formatter emits one object per line with extra fields such as upgrade_id.
"""

from __future__ import annotations

import io
import json
import logging

from bot import logs


def test_redact_known_secrets_and_token_shapes() -> None:
    logs.register_secrets(["s3cr3t-signing"])
    text = (
        "sig s3cr3t-signing token xoxb-123-456-abc app xapp-1-A-2 hdr Authorization: Bearer eyJhbGciOi.x.y "
        "url redis://:pw123@redis:6379/0 password=hunter2"
    )
    out = logs.redact(text)
    for secret in ("s3cr3t-signing", "xoxb-123-456-abc", "xapp-1-A-2", "eyJhbGciOi.x.y", "pw123", "hunter2"):
        assert secret not in out
    assert out.count("[REDACTED]") == 6


def test_log_records_are_redacted_including_args_and_exceptions() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(logs.RedactingFilter())
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("calling with %s", "xoxb-999-leak", extra={"upgrade_id": "u-1"})
        try:
            raise RuntimeError("helm failed: Bearer abc.def.ghi")
        except RuntimeError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().strip().splitlines()
    first, second = (json.loads(line) for line in lines)
    assert first["message"] == "calling with [REDACTED]" and first["upgrade_id"] == "u-1"
    assert "abc.def.ghi" not in second["exception"] and "[REDACTED]" in second["exception"]
