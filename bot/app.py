"""Wiring of the running bot: settings -> Redis store, runner, engine, Bolt app, HTTP server.

``serve()`` is what ``milvus-pulsar-upgrade-bot serve`` runs. In HTTP mode it listens on
0.0.0.0:$PORT with ``POST /slack/events`` (slash commands and interactivity, verified by
Bolt's signature and timestamp check before anything else), ``GET /healthz`` (200 once
serving) and ``GET /readyz`` (200 when Redis answers). With SLACK_APP_TOKEN set it uses
Socket Mode instead and still serves the health endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from bot.procedure.engine import Engine
from bot.settings import Settings
from handlers import slack as slack_handlers
from handlers.auth import Authorizer
from state.store import UpgradeStore

log = logging.getLogger(__name__)
EVENTS_PATH = "/slack/events"


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


def build_web_app(bolt: AsyncApp | None, store: UpgradeStore) -> web.Application:
    web_app = web.Application()

    async def events(request: web.Request) -> web.StreamResponse:
        assert bolt is not None
        return await to_aiohttp_response(await bolt.async_dispatch(await to_bolt_request(request)))

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        ok = await asyncio.to_thread(store.ping)
        return web.json_response({"redis": "ok" if ok else "unreachable"}, status=200 if ok else 503)

    if bolt is not None:
        web_app.router.add_post(EVENTS_PATH, events)
    web_app.router.add_get("/healthz", healthz)
    web_app.router.add_get("/readyz", readyz)
    return web_app


async def _run(settings: Settings, engine: Engine) -> None:
    deps = slack_handlers.Deps(
        store=engine.store,
        runner=engine.runner,
        authorizer=Authorizer(settings.operator_users, settings.operator_groups),
        second_approver=settings.require_second_approver,
    )
    bolt = build_bolt_app(settings, deps)
    web_app = build_web_app(None if settings.socket_mode else bolt, engine.store)
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
    log.info("shutting down")
    if socket_handler is not None:
        await socket_handler.close_async()
    await runner.cleanup()
    await asyncio.to_thread(engine.stop)


def serve(settings: Settings) -> None:
    """Connect to Redis and Kubernetes (a bad KUBECONFIG is a SettingsError), then serve until SIGTERM."""
    engine = Engine.from_settings(settings)
    asyncio.run(_run(settings, engine))
