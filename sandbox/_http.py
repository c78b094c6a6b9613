"""Run an aiohttp application on a free 127.0.0.1 port in a background thread.

Every simulator in the sandbox is an aiohttp ``web.Application``; this module gives them one
way to start and stop, so tests and ``demo`` can run several side by side in one process
while the bot under test talks to them over real HTTP.

Guarantees: ``start()`` returns only once the socket is listening; ``stop()`` closes the
listener and the loop and joins the thread (``ssl_context`` makes it serve HTTPS and
``url`` start with ``https://``); ``call()`` runs a coroutine on the server's loop
from any thread and returns its result.

For the benchmark (``tests/bench.py``): while ``ThreadedServer.timings`` is a list, every request
any simulator serves is appended to it as a ``Served`` (which server, method, path, query,
User-Agent, and when handling began and ended on ``time.monotonic()``), so that the time a client spent
waiting inside the simulators can be told from its own. ``None`` (the default) records nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ssl
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler

T = TypeVar("T")


@dataclass(frozen=True)
class Served:
    """One request a simulator served: handling began at ``start`` and ended at ``end`` (monotonic)."""

    server: str
    method: str
    path: str
    query: str
    user_agent: str
    start: float
    end: float


class ThreadedServer:
    """An aiohttp app served from its own thread and event loop."""

    timings: ClassVar[list[Served] | None] = None  # see the module docstring

    def __init__(
        self,
        app: web.Application,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.app = app
        self.ssl_context = ssl_context
        self.host = host
        self._requested_port = port
        self.port = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=f"sim-{id(app):x}", daemon=True)
        self._ready = threading.Event()
        self._runner: web.AppRunner | None = None
        self._error: BaseException | None = None
        if not app.frozen:
            app.middlewares.insert(0, self._timed)

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{self.host}:{self.port}"

    @web.middleware
    async def _timed(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        sink = ThreadedServer.timings
        if sink is None:
            return await handler(request)
        start = time.monotonic()
        try:
            return await handler(request)
        finally:
            ua = request.headers.get("User-Agent", "")
            served = Served(self.url, request.method, request.path, request.query_string, ua, start, time.monotonic())
            sink.append(served)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._start())
        except BaseException as exc:  # reported to start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self._cleanup())
        self.loop.close()

    async def _start(self) -> None:
        self._runner = web.AppRunner(self.app, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._requested_port, ssl_context=self.ssl_context)
        await site.start()
        server = site._server
        assert server is not None
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1]

    async def _cleanup(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def start(self) -> ThreadedServer:
        self._thread.start()
        self._ready.wait(10)
        if self._error is not None:
            raise RuntimeError(f"simulator failed to start: {self._error}") from self._error
        return self

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        fut: concurrent.futures.Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ThreadedServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
