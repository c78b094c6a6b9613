"""Wiring of the running bot: settings -> Redis store, runner, engine, Bolt app, HTTP server.

``serve()`` is what ``milvus-pulsar-upgrade-bot serve`` runs: two processes. This one is the
Slack edge. In HTTP mode it listens on 0.0.0.0:$PORT with ``POST /slack/events`` (slash
commands and interactivity), ``GET /healthz`` (200 once serving), ``GET /readyz`` (200 when
Redis answers and the runner leads or stands by) and ``GET /metrics``; with SLACK_APP_TOKEN set
it uses Socket Mode instead and still serves those endpoints. It acks, authorizes, records and
queues runs (its ``Runner`` only queues, and wakes the active runner through Redis), and never
runs a step. Its child, ``python -m bot runner`` (bot/runner_main.py), holds or waits for the runner
lease and runs the engine's steps in its worker threads; it answers the edge's questions (its
state, its metrics, a ``scan``) on a unix socket in a private temporary directory. The steps'
CPU work (helm output, YAML, JSON, Kubernetes models) and their heap, and its garbage
collections, are thus never in the way of an ack. The child dies with the edge (Linux
PR_SET_PDEATHSIG); when the child ends, the edge logs it and exits non-zero; SIGTERM to the edge
is passed on to the child, whose exit status (after its grace) the edge exits with.

A request to ``/slack/events`` is judged in this order, each step before any work on what
follows: over 1 MiB (by Content-Length, or while reading) is 413; a bad signature or timestamp
is 401 (checked on the raw bytes, before the body is parsed: Bolt parses it as it builds its
request, which an unsigned body must never reach); a signed body that is not UTF-8, not a
form or JSON object, or that Bolt cannot make a request of is 400. Only then does Bolt see it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import ClientError, web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.internals import parse_body
from slack_bolt.request.payload_utils import (
    is_block_actions,
    to_action,
    to_command,
    to_event,
    to_message,
    to_options,
    to_shortcut,
    to_step,
    to_view,
)
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot import metrics
from bot.jobs import JOB_REF
from bot.runner_main import settle_heap
from bot.runner_process import RunnerProcess
from bot.settings import Settings, SettingsError
from handlers import slack as slack_handlers
from handlers.auth import Authorizer
from state.runner import Runner
from state.store import UpgradeStore

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"
_MAX_AGE = 60 * 5  # seconds, as Bolt and Slack's own SDKs allow
MAX_BODY_BYTES = 1024 * 1024  # Slack's own payloads are far smaller; anything bigger is refused unread


def build_bolt_app(settings: Settings, deps: slack_handlers.Deps) -> AsyncApp:
    client = AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ],
    )
    app = AsyncApp(
        client=client,
        signing_secret=settings.slack_signing_secret or "socket-mode-does-not-sign",
        request_verification_enabled=not settings.socket_mode,
        logger=logging.getLogger("slack_bolt"),
    )
    slack_handlers.register(app, deps)
    return app


def _refusal(status: int, error: str) -> web.Response:
    return web.json_response({"error": error}, status=status)


_CALLBACK_TYPES = ("interactive_message", "dialog_submission", "dialog_cancellation", "workflow_step_edit")
_OBJECT_FIELDS = ("user", "channel", "container", "team", "message")
_TEXT_FIELDS = ("response_url", "trigger_id", "user_id", "channel_id", "text", "command")


def _well_formed(body: dict[str, Any]) -> bool:
    """Whether Bolt's payload helpers and matchers can read ``body`` without tripping on a type.

    Bolt assumes Slack's shapes (``actions[0]["action_id"]``, ``view["callback_id"]``...); a
    signed body of another shape would make it raise inside its dispatch (a 500 and a
    traceback in the log), so it is refused here instead.
    """
    for convert in (to_options, to_shortcut, to_action, to_view, to_command, to_event, to_message, to_step):
        convert(body)  # raises on a wrong shape; the caller turns that into a 400
    if not isinstance(body.get("type", ""), str):
        return False
    if is_block_actions(body):
        action = to_action(body)
        if not isinstance(action, dict) or not isinstance(action.get("action_id"), str):
            return False
        if not isinstance(action.get("block_id", ""), str):
            return False
    if body.get("type") in _CALLBACK_TYPES and not isinstance(body.get("callback_id"), str):
        return False
    if any(not isinstance(body.get(key, ""), str) for key in _TEXT_FIELDS):
        return False
    url = body.get("response_url")
    if url is not None and not url.startswith(("https://", "http://")):
        return False
    if "view" in body and not isinstance(body["view"], dict):
        return False
    if "event" in body and not isinstance(body["event"], dict):
        return False
    if "actions" in body and not isinstance(body["actions"], list):
        return False
    return all(body.get(key) is None or isinstance(body[key], dict) for key in _OBJECT_FIELDS)


def _bolt_request(raw: bytes, request: web.Request) -> AsyncBoltRequest | None:
    """Bolt's request for a signed body, or None when the body is not one Slack would send."""
    try:
        text = raw.decode("utf-8")
        body = parse_body(text, request.content_type)
        if not isinstance(body, dict) or not _well_formed(body):
            return None
        return AsyncBoltRequest(body=text, query=request.query_string, headers=request.headers)  # type: ignore[arg-type]
    except (ValueError, TypeError, AttributeError, KeyError, IndexError):
        return None


def build_web_app(
    bolt: AsyncApp | None,
    store: UpgradeStore,
    signing_secret: str = "",
    runner_state: Callable[[], Awaitable[str]] | None = None,
    runner_metrics: Callable[[], Awaitable[bytes | None]] | None = None,
) -> web.Application:
    # aiohttp refuses (413) a body that grows past client_max_size while it is read.
    web_app = web.Application(client_max_size=MAX_BODY_BYTES + 1)
    secret = signing_secret.encode()

    def signed(raw: bytes, request: web.Request) -> bool:
        """Slack's v0 signature of the raw bytes, with a timestamp within five minutes."""
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (timestamp.isascii() and timestamp.isdigit()) or abs(time.time() - int(timestamp)) > _MAX_AGE:
            return False
        expected = "v0=" + hmac.new(secret, b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))

    async def events(request: web.Request) -> web.StreamResponse:
        assert bolt is not None
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return _refusal(413, "request too large")
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _refusal(413, "request too large")
        if not signed(raw, request):
            return _refusal(401, "invalid request")
        bolt_request = _bolt_request(raw, request)
        if bolt_request is None:
            return _refusal(400, "not a Slack request")
        try:
            return await to_aiohttp_response(await bolt.async_dispatch(bolt_request))
        except Exception:
            log.exception("could not handle a Slack request")
            return _refusal(500, "internal error")

    if bolt is not None:
        web_app.router.add_post(EVENTS_PATH, events)
    _add_operations(web_app, store, runner_state, runner_metrics)
    return web_app


def _add_operations(
    web_app: web.Application,
    store: UpgradeStore,
    runner_state: Callable[[], Awaitable[str]] | None,
    runner_metrics: Callable[[], Awaitable[bytes | None]] | None,
) -> None:
    """``/healthz`` (alive), ``/readyz`` (Redis answers and the runner leads or stands by), ``/metrics``
    (the runner process's metrics merged with this process's own, as one exposition)."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        """Ready: Redis answers, and the runner either holds the lease or stands by for it."""
        ok = await asyncio.to_thread(store.ping)
        runner = await runner_state() if runner_state is not None else "standby"
        ready = ok and runner in ("leader", "standby")
        return web.json_response(
            {"redis": "ok" if ok else "unreachable", "runner": runner}, status=200 if ready else 503
        )

    async def metrics_page(_: web.Request) -> web.Response:
        if runner_metrics is None:
            body = await asyncio.to_thread(metrics.exposition)
        else:
            theirs = await runner_metrics()
            if theirs is None:
                return web.Response(status=503, text="the runner process did not answer\n")
            body = await asyncio.to_thread(metrics.merged, theirs, metrics.exposition())
        return web.Response(body=body, headers={"Content-Type": metrics.CONTENT_TYPE})

    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    web_app.router.add_get("/metrics", metrics_page)


# apps.connections.open's answers that no retry will change: the app-level token itself is refused.
_APP_TOKEN_REFUSALS = frozenset(
    {"invalid_auth", "not_authed", "not_allowed_token_type", "account_inactive", "token_revoked", "token_expired"}
)


async def _check_app_token(bolt: AsyncApp, app_token: str) -> None:
    """Refuse to start (SettingsError: exit 2) when Slack refuses the app-level token.

    Bolt's Socket Mode client would otherwise retry apps.connections.open every few seconds
    forever, while /healthz answers 200 and no slash command can reach the bot. The URL issued
    here is not used (it expires unused); connect_async() asks for its own. Any other failure
    (Slack unreachable, 5xx) is left to the client's retries."""
    try:
        await bolt.client.apps_connections_open(app_token=app_token)
    except SlackApiError as err:
        error = str(err.response.get("error", ""))
        if error in _APP_TOKEN_REFUSALS:
            raise SettingsError("SLACK_APP_TOKEN", f"was refused by Slack (apps.connections.open: {error})") from None
        log.warning("apps.connections.open failed; Socket Mode will retry", extra={"error": error})
    except (TimeoutError, ClientError, OSError) as err:
        log.warning("apps.connections.open failed; Socket Mode will retry", extra={"error": type(err).__name__})


# ---------------------------------------------------------------------------------- the edge


async def _serve(settings: Settings, child: RunnerProcess) -> int:
    """The Slack edge (this process) and the runner (a child process); the exit status."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    store = UpgradeStore.from_url(settings.redis_url, settings.audit_retention_days * 86400)
    queue = Runner(store.redis, JOB_REF, run_jobs=False, workers=1)  # queues runs; never takes the lease
    deps = slack_handlers.Deps(
        store=store,
        runner=queue,
        authorizer=Authorizer(settings.operator_users, settings.operator_groups),
        second_approver=settings.require_second_approver,
        channels=settings.channels,
        scan=child.scan,
    )
    bolt = build_bolt_app(settings, deps)
    try:
        if settings.slack_app_token is not None:
            try:
                await _check_app_token(bolt, settings.slack_app_token)  # before anything is served
            except SettingsError:
                await child.stop()  # it may have taken the lease already: it hands it back
                raise
        status = await child.start(stop)
        if status is not None:  # it could not start (a bad KUBECONFIG: 2, its line already printed)
            return status
        if stop.is_set():
            return await child.stop()
        queue.start()

        async def runner_state() -> str:
            return "stopping" if stop.is_set() else await child.state()

        web_app = build_web_app(
            None if settings.socket_mode else bolt,
            store,
            settings.slack_signing_secret or "",
            runner_state,
            child.exposition,
        )
        site = web.AppRunner(web_app, access_log=None)
        await site.setup()
        await web.TCPSite(site, "0.0.0.0", settings.port).start()
        socket_handler = None
        if settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            socket_handler = AsyncSocketModeHandler(bolt, settings.slack_app_token)
            await socket_handler.connect_async()
        settle_heap()
        log.info(
            "serving",
            extra={"port": settings.port, "mode": "socket" if socket_handler else "http", "runner_pid": child.pid},
        )
        stopping = asyncio.ensure_future(stop.wait())
        exited = asyncio.ensure_future(child.wait())
        await asyncio.wait({stopping, exited}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():
            stopping.cancel()
            status = exited.result()
            log.error("the runner process exited (status %s): stopping the bot", status, extra={"status": status})
            if socket_handler is not None:
                await socket_handler.close_async()
            await site.cleanup()
            return status or 1  # never 0: the pod must be restarted, not look healthy
        exited.cancel()
        log.info(
            "shutting down: no new work; waiting up to %gs for the steps under way", settings.shutdown_grace_seconds
        )
        if socket_handler is not None:
            await socket_handler.close_async()
        await site.cleanup()
        return await child.stop()
    finally:
        child.kill()
        queue.stop()


def serve(settings: Settings, child: RunnerProcess) -> int:
    """Serve Slack here, with ``child`` (the runner process, already spawned), until SIGTERM; the
    exit status.

    The child (``python -m bot runner``) connects to Kubernetes (a bad KUBECONFIG: it exits 2,
    and so does this), holds or waits for the runner lease and runs the steps; this process only
    acks, authorizes, records and queues."""
    return asyncio.run(_serve(settings, child))
