"""``python -m bot runner``: the child process of ``serve`` that holds the runner lease and runs
the engine's steps (the Slack edge, its parent, is bot/app.py).

Light on purpose: it imports the engine and what the steps need, and neither the Slack edge's
web stack (aiohttp, slack_bolt) nor its handlers; its answers to the edge (``GET /state``,
``/metrics``, ``/scan``) are served by the standard library's HTTP server on a unix socket in
the edge's private directory. That keeps the second interpreter's memory and start-up small:
every start of the bot waits for this process to answer.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import logging
import os
import signal
import socketserver
import sys
import threading
from http.server import BaseHTTPRequestHandler
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

from bot import metrics
from bot.settings import Settings

if TYPE_CHECKING:
    from bot.procedure.engine import Engine

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1
RUNNER_NICENESS = 10  # added to the runner's (and so its helm's) scheduling niceness


def settle_heap() -> None:
    """Once started: move everything built so far out of the garbage collector's sight, so a full
    collection only walks what was made since (the idle stalls of a few hundred ms otherwise)."""
    gc.collect()
    gc.freeze()


def _die_with_parent(parent: int) -> None:
    """Linux: SIGKILL this process when the edge dies, however it dies (a crash leaves no runner
    holding the lease); and exit at once if it is already gone."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:
        log.error("the serving process is gone: not starting the runner")
        sys.exit(1)


def _yield_to_the_edge() -> None:
    """Acks first: the runner and the helm it starts get a lower CPU priority than the Slack edge,
    so that on a busy node (20 upgrades' helm and YAML) an ack still gets the CPU it needs within
    Slack's 3 s (the bench saw one click time out without this). The runner mostly waits on the
    cluster; it loses CPU only while the edge is busy."""
    try:
        os.nice(RUNNER_NICENESS)
    except OSError as err:  # not allowed here: run at the same priority
        log.warning("could not lower the runner's CPU priority: %s", err)


def run_runner(settings: Settings, control: str, parent: int) -> int:
    """The engine and the runner, until SIGTERM; the exit status."""
    _die_with_parent(parent)
    _yield_to_the_edge()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    from bot.procedure.engine import Engine

    engine = Engine.from_settings(settings)  # a SettingsError (KUBECONFIG) ends it with status 2
    metrics.REGISTRY.register(metrics.StateCollector(engine.metrics_rows, lambda: engine.runner.is_leader))
    engine.start()
    server = _ControlServer(control, engine)
    serving = threading.Thread(target=server.serve_forever, name="control", daemon=True)
    serving.start()
    settle_heap()
    log.info("runner process started", extra={"pid": os.getpid(), "instance": engine.runner.instance})
    while not stop.wait(1.0):  # a signal's handler runs in this thread, between the waits
        pass
    log.info("runner: no new work; waiting up to %gs for the steps under way", settings.shutdown_grace_seconds)
    drained = engine.stop(settings.shutdown_grace_seconds)
    server.shutdown()
    server.server_close()
    log.info("stopped" if drained else "stopped with steps cut short; the next runner resumes them")
    return 0


class _ControlServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """The edge's questions, one thread each (a scan may take minutes; /state must not wait)."""

    daemon_threads = True

    def __init__(self, path: str, engine: Engine) -> None:
        self.engine = engine
        super().__init__(path, _ControlHandler)


class _ControlHandler(BaseHTTPRequestHandler):
    server: _ControlServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        try:
            self._route()
        except Exception:  # the edge answers the person; the details belong in the log only
            log.exception("the runner could not answer %s", urlsplit(self.path).path)
            self._answer(500, b"the runner could not answer\n", "text/plain; charset=utf-8")

    def _route(self) -> None:
        engine = self.server.engine
        url = urlsplit(self.path)
        if url.path == "/state":
            state = "stopping" if engine.stopping else "leader" if engine.runner.is_leader else "standby"
            body = {"runner": state, "instance": engine.runner.instance, "pid": os.getpid()}
            self._answer(200, json.dumps(body).encode(), "application/json")
        elif url.path == "/metrics":
            self._answer(200, metrics.exposition(), metrics.CONTENT_TYPE)
        elif url.path == "/scan":
            from handlers.commands import COMMAND

            namespace = (parse_qs(url.query).get("namespace") or [""])[0] or None
            self._answer(200, engine.scan(namespace, COMMAND).encode(), "text/plain; charset=utf-8")
        else:
            self._answer(404, b"not found\n", "text/plain; charset=utf-8")

    def _answer(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the edge gave up waiting
            self.wfile.write(body)

    def address_string(self) -> str:
        return "edge"  # a unix socket's peer has no address

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the edge's own log says what it asked and what came of it."""
