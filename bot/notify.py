"""Slack output of the runner: the root message, thread replies, files and ephemeral answers.

A thin layer over slack_sdk's ``WebClient`` pointed at SLACK_API_URL, with bounded retries
(three in all, whatever the cause): rate limits (429) wait what Retry-After says (up to
``MAX_RETRY_AFTER``; a longer wait raises ``RetryLater`` at once), 5xx, timeouts and connection
errors are retried with backoff. What still fails raises, and ``bot.procedure.thread`` shows it
on a later reconcile. Every text is passed through
``redact`` before it leaves, so a token in a helm error can never reach a channel.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from http.client import RemoteDisconnected
from typing import Any
from urllib.error import URLError

import httpx
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.builtin_interval_calculators import BackoffRetryIntervalCalculator
from slack_sdk.http_retry.handler import HttpRequest, HttpResponse, RetryState

from bot import metrics
from bot.logs import redact

log = logging.getLogger(__name__)
Block = dict[str, Any]
MAX_RETRY_AFTER = 10.0  # seconds the notifier itself waits on a 429; beyond, the reconciler retries
TIMEOUT = 15  # seconds per Web API call


# Slack allows about one message per second per channel, with short bursts: at most PACE_POSTS
# messages (posts and file shares) in any PACE_WINDOW seconds per channel; a message beyond that
# waits, unsent, for the reconciler's next run (consecutive notes then go as one message).
PACE_POSTS = 10
PACE_WINDOW = 10.0


class RetryLater(Exception):
    """Slack rate-limited the call for longer than the notifier waits, or the channel's pace
    (``paced``) says not yet: try again after ``seconds``."""

    def __init__(self, seconds: float, paced: bool = False) -> None:
        super().__init__(f"{'paced' if paced else 'rate limited'}; retry after {seconds:.2f}s")
        self.seconds = seconds
        self.paced = paced


class ChannelPace:
    """At most ``posts`` messages per channel in any ``window`` seconds (a sliding log per channel)."""

    def __init__(self, posts: int = PACE_POSTS, window: float = PACE_WINDOW, clock: Any = time.monotonic) -> None:
        self.posts = posts
        self.window = window
        self.clock = clock
        self._sent: dict[str, collections.deque[float]] = {}
        self._lock = threading.Lock()

    def take(self, channel: str) -> None:
        """Count one message to ``channel`` now, or raise RetryLater(paced) with the wait."""
        if self.posts <= 0:
            return  # not paced
        with self._lock:
            now = self.clock()
            sent = self._sent.setdefault(channel, collections.deque(maxlen=self.posts))
            if len(sent) == self.posts and (wait := sent[0] + self.window - now) > 0:
                raise RetryLater(wait, paced=True)
            sent.append(now)


def _retry_after(headers: dict[str, Any]) -> float:
    for key, value in headers.items():
        if key.lower() == "retry-after":
            raw = value[0] if isinstance(value, list) else value
            try:
                return float(raw)
            except (TypeError, ValueError):
                return 1.0
    return 1.0


class _RateLimitHandler(RateLimitErrorRetryHandler):
    """Waits what Retry-After says, when that is at most ``MAX_RETRY_AFTER``."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        metrics.SLACK_RATE_LIMITED.labels(method=request.url.rsplit("/", 1)[-1]).inc()  # a 429 waited out here
        return response is not None and _retry_after(dict(response.headers)) <= MAX_RETRY_AFTER


def _clean_blocks(blocks: list[Block]) -> list[Block]:
    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: (redact(v) if k == "text" and isinstance(v, str) else walk(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return [walk(b) for b in blocks]


@contextlib.contextmanager
def _rate_limited(method: str) -> Iterator[None]:
    """One Slack call, counted in the metrics by its result; a long rate limit becomes RetryLater."""
    try:
        yield
    except SlackApiError as err:
        if err.response.status_code == 429:
            metrics.slack_call(method, "ratelimited")
            raise RetryLater(_retry_after(dict(err.response.headers))) from err
        metrics.slack_call(method, str(err.response.get("error") or "error"))
        raise
    except Exception:
        metrics.slack_call(method, "unreachable")
        raise
    metrics.slack_call(method, "ok")


class Notifier:
    def __init__(self, token: str, base_url: str, pace: ChannelPace | None = None) -> None:
        self.pace = pace or ChannelPace()
        backoff = BackoffRetryIntervalCalculator(backoff_factor=0.5)
        self.client = WebClient(
            token=token,
            base_url=base_url,
            timeout=TIMEOUT,
            retry_handlers=[
                ConnectionErrorRetryHandler(
                    max_retry_count=3,
                    interval_calculator=backoff,
                    error_types=[URLError, ConnectionError, RemoteDisconnected, TimeoutError],
                ),
                ServerErrorRetryHandler(max_retry_count=3, interval_calculator=backoff),
                _RateLimitHandler(max_retry_count=3),
            ],
        )

    def post(self, channel: str, text: str, blocks: list[Block], thread_ts: str | None = None) -> str:
        self._pace(channel, "chat.postMessage")
        with _rate_limited("chat.postMessage"):
            return self._post(channel, text, blocks, thread_ts)

    def _pace(self, channel: str, method: str) -> None:
        try:
            self.pace.take(channel)
        except RetryLater as err:
            log.info("%s to %s waits %.2fs for the channel's pace", method, channel, err.seconds)
            raise

    def update(self, channel: str, ts: str, text: str, blocks: list[Block]) -> None:
        with _rate_limited("chat.update"):
            self.client.chat_update(channel=channel, ts=ts, text=redact(text)[:3900], blocks=_clean_blocks(blocks))

    def upload(self, channel: str, thread_ts: str, filename: str, content: str, title: str, comment: str) -> None:
        self._pace(channel, "files.upload_v2")  # the file is shared in the channel: a message
        with _rate_limited("files.upload_v2"):
            self.client.files_upload_v2(
                channel=channel,
                thread_ts=thread_ts,
                filename=filename,
                content=content,
                title=title,
                initial_comment=redact(comment),
            )

    def _post(self, channel: str, text: str, blocks: list[Block], thread_ts: str | None) -> str:
        resp = self.client.chat_postMessage(
            channel=channel,
            text=redact(text)[:3900],
            blocks=_clean_blocks(blocks),
            thread_ts=thread_ts,
            unfurl_links=False,
            unfurl_media=False,
        )
        return str(resp["ts"])

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
