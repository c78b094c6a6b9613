"""Slack output of the runner: the root message, thread replies, files and ephemeral answers.

A thin layer over slack_sdk's ``WebClient`` pointed at SLACK_API_URL, with retries on rate
limits (429 + Retry-After) and connection errors. Every text is passed through ``redact``
before it leaves, so a token in a helm error can never reach a channel.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import ConnectionErrorRetryHandler, RateLimitErrorRetryHandler

from bot.logs import redact

log = logging.getLogger(__name__)
Block = dict[str, Any]


def _clean_blocks(blocks: list[Block]) -> list[Block]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (redact(v) if k == "text" and isinstance(v, str) else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return [walk(b) for b in blocks]


class Notifier:
    def __init__(self, token: str, base_url: str) -> None:
        self.client = WebClient(
            token=token,
            base_url=base_url,
            retry_handlers=[
                ConnectionErrorRetryHandler(max_retry_count=3),
                RateLimitErrorRetryHandler(max_retry_count=5),
            ],
        )

    def post(self, channel: str, text: str, blocks: list[Block], thread_ts: str | None = None) -> str:
        resp = self.client.chat_postMessage(
            channel=channel,
            text=redact(text)[:3900],
            blocks=_clean_blocks(blocks),
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(resp["ts"])

    def update(self, channel: str, ts: str, text: str, blocks: list[Block]) -> None:
        self.client.chat_update(channel=channel, ts=ts, text=redact(text)[:3900], blocks=_clean_blocks(blocks))

    def upload(self, channel: str, thread_ts: str, filename: str, content: str, title: str, comment: str) -> None:
        self.client.files_upload_v2(
            channel=channel,
            thread_ts=thread_ts,
            filename=filename,
            content=content,
            title=title,
            initial_comment=redact(comment),
        )

    def respond(self, response_url: str, text: str) -> None:
        """Answer the person who typed the command, ephemerally, through the command's response_url."""
        try:
            httpx.post(
                response_url,
                json={"response_type": "ephemeral", "replace_original": False, "text": redact(text)},
                timeout=10,
            ).raise_for_status()
        except httpx.HTTPError as err:
            log.warning("cannot answer through response_url: %s", err)

    def ephemeral(self, channel: str, user: str, text: str) -> None:
        try:
            self.client.chat_postEphemeral(channel=channel, user=user, text=redact(text))
        except SlackApiError as err:
            log.warning("cannot post ephemeral: %s", err.response.get("error"))
