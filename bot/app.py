"""Wiring of the running bot: settings -> Redis store, runner, engine, Bolt app, HTTP server.

``serve()`` is what ``milvus-pulsar-upgrade-bot serve`` runs. In HTTP mode it listens on
0.0.0.0:$PORT with ``POST /slack/events`` (slash commands and interactivity), ``GET /healthz``
(200 once serving) and ``GET /readyz`` (200 when Redis answers). With SLACK_APP_TOKEN set it
uses Socket Mode instead and still serves the health endpoints.

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
from collections.abc import Callable
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
from bot.procedure.engine import Engine
from bot.settings import Settings, SettingsError
from handlers import slack as slack_handlers
from handlers.auth import Authorizer
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
    runner_state: Callable[[], str] | None = None,
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
    _add_operations(web_app, store, runner_state)
    return web_app


def _add_operations(web_app: web.Application, store: UpgradeStore, runner_state: Callable[[], str] | None) -> None:
    """``/healthz`` (alive), ``/readyz`` (Redis answers and the runner leads or stands by), ``/metrics``."""

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        """Ready: Redis answers, and the runner either holds the lease or stands by for it."""
        ok = await asyncio.to_thread(store.ping)
        runner = runner_state() if runner_state is not None else "standby"
        ready = ok and runner in ("leader", "standby")
        return web.json_response(
            {"redis": "ok" if ok else "unreachable", "runner": runner}, status=200 if ready else 503
        )

    async def metrics_page(_: web.Request) -> web.Response:
        body = await asyncio.to_thread(metrics.exposition)
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


async def _run(settings: Settings, engine: Engine) -> None:
    deps = slack_handlers.Deps(
        store=engine.store,
        runner=engine.runner,
        authorizer=Authorizer(settings.operator_users, settings.operator_groups),
        second_approver=settings.require_second_approver,
        channels=settings.channels,
        scan=lambda namespace: engine.scan(namespace, slack_handlers.COMMAND),
    )
    bolt = build_bolt_app(settings, deps)
    if settings.slack_app_token is not None:
        await _check_app_token(bolt, settings.slack_app_token)  # before anything is served or started

    def runner_state() -> str:
        if engine.stopping:
            return "stopping"
        return "leader" if engine.runner.is_leader else "standby"

    metrics.REGISTRY.register(metrics.StateCollector(engine.metrics_rows, lambda: engine.runner.is_leader))
    web_app = build_web_app(
        None if settings.socket_mode else bolt, engine.store, settings.slack_signing_secret or "", runner_state
    )
    runner = web.AppRunner(web_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", settings.port).start()
    engine.start()
    socket_handler = None
    if settings.socket_mode:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        socket_handler = AsyncSocketModeHandler(bolt, settings.slack_app_token)
        await socket_handler.connect_async()
    log.info("serving", extra={"port": settings.port, "mode": "socket" if socket_handler else "http"})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down: no new work; waiting up to %gs for the steps under way", settings.shutdown_grace_seconds)
    if socket_handler is not None:
        await socket_handler.close_async()
    await runner.cleanup()
    drained = await asyncio.to_thread(engine.stop, settings.shutdown_grace_seconds)
    log.info("stopped" if drained else "stopped with steps cut short; the next runner resumes them")


def serve(settings: Settings) -> None:
    """Connect to Redis and Kubernetes (a bad KUBECONFIG is a SettingsError), then serve until SIGTERM."""
    engine = Engine.from_settings(settings)
    asyncio.run(_run(settings, engine))
