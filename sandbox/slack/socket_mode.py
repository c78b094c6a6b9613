"""Socket Mode on the simulator: the WebSocket ``apps.connections.open`` hands out, its envelopes and acks.

Why: with SLACK_APP_TOKEN set the bot receives slash commands and clicks over a WebSocket instead of
HTTP requests (slack-bolt's ``AsyncSocketModeHandler``, which is slack_sdk's aiohttp
``SocketModeClient``). It calls ``apps.connections.open`` with the app-level token, connects to the
URL it gets, and must acknowledge every envelope within 3 seconds. ``SocketModeLink`` is Slack's end
of that link; ``SlackSim`` serves it at ``/link/`` next to the Web API and exposes it
(``deliver``, ``envelopes``, ``socket_mode_failures``, ``socket_connections``).

Wire behaviour, as Slack's (https://docs.slack.dev/apis/events-api/using-socket-mode):
- A URL from ``apps.connections.open`` is ``ws://127.0.0.1:<port>/link/?ticket=<t>&app_id=<A>``; a
  ticket opens one connection, within ``TICKET_TTL`` seconds (Slack's URLs are short-lived and
  single-use); any other request of ``/link/`` is HTTP 401 and is not upgraded.
- On connect the server sends ``{"type": "hello", "num_connections": n, "debug_info": {"host",
  "build_number", "approximate_connection_time"}, "connection_info": {"app_id"}}``.
- ``deliver()`` sends ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` on the newest
  open connection (Slack may use any of them): ``slash_commands`` (payload: the slash command's
  fields, accepts a response payload) and ``interactive`` (payload: e.g. ``block_actions``).
- The app acknowledges with a text frame ``{"envelope_id": id}``, optionally with ``"payload": {...}``
  (a slash command's answer: shown to the person as Slack shows the HTTP response body, i.e. an
  ephemeral, or a channel message for ``response_type: in_channel``).
- Pings are answered with pongs (aiohttp's autoping), as the client's heartbeat expects.

Each envelope records when it was sent and acknowledged and the ack's payload. Whatever Slack would
not accept is recorded in ``failures`` (one readable line each), never raised inside the server: an
envelope not acknowledged within ``ack_timeout`` (then, for a slash command, the person sees
``/cmd failed with the error "operation_timeout"`` and a late answer is dropped), an ack of an unknown
or already acknowledged envelope, a frame that is not a JSON object with a string ``envelope_id``, a
non-object payload, a payload on an envelope that accepts none, binary frames, and a delivery while
no connection is open. All state is guarded by the simulator's lock.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

TICKET_TTL = 30.0
ACK_TIMEOUT = 3.0
LINK_PATH = "/link/"


class NotConnectedError(ConnectionError):
    """A delivery while the app has no Socket Mode connection open (Slack could not reach it)."""


@dataclass
class SocketConnection:
    """One WebSocket the app opened with a ticket; ``closed_at`` is None while it is open."""

    number: int
    opened_at: float
    closed_at: float | None = None
    frames_received: int = 0

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass
class SocketEnvelope:
    """An envelope sent to the app, and its acknowledgement (times are ``time.monotonic()``)."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    connection: int
    sent_at: float
    acked_at: float | None = None
    ack_payload: dict[str, Any] | None = None
    timed_out: bool = False  # not acknowledged within the ack timeout (acked late, or never)

    @property
    def ack_seconds(self) -> float | None:
        return None if self.acked_at is None else self.acked_at - self.sent_at

    def wire(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "payload": self.payload,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
        }


class SocketModeLink:
    """Slack's end of Socket Mode. ``handle`` is the aiohttp handler of ``/link/``.

    ``show(envelope)`` is called (under the lock) when a slash command's ack carries a payload in
    time; ``timeout(envelope)`` when an envelope was not acknowledged in time.
    """

    def __init__(
        self,
        lock: threading.RLock,
        app_id: str,
        *,
        ack_timeout: float = ACK_TIMEOUT,
        show: Callable[[SocketEnvelope], None],
        timeout: Callable[[SocketEnvelope], None],
    ) -> None:
        self.lock = lock
        self.app_id = app_id
        self.ack_timeout = ack_timeout
        self._show = show
        self._timeout = timeout
        self.connections: list[SocketConnection] = []
        self.envelopes: list[SocketEnvelope] = []
        self.failures: list[str] = []
        self._tickets: dict[str, float] = {}
        self._live: dict[int, web.WebSocketResponse] = {}
        self._by_id: dict[str, SocketEnvelope] = {}
        self._decided: dict[str, threading.Event] = {}

    # -- tickets ---------------------------------------------------------------------------------

    def new_url(self, base_url: str) -> str:
        """A fresh single-use WebSocket URL (what apps.connections.open answers)."""
        ticket = secrets.token_urlsafe(18)
        with self.lock:
            self._tickets[ticket] = time.monotonic()
        ws_base = "ws://" + base_url.split("://", 1)[1]
        return f"{ws_base}{LINK_PATH}?ticket={ticket}&app_id={self.app_id}"

    def _take_ticket(self, ticket: str) -> bool:
        with self.lock:
            issued = self._tickets.pop(ticket, None)
        return issued is not None and time.monotonic() - issued <= TICKET_TTL

    # -- the WebSocket ---------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if not self._take_ticket(request.query.get("ticket", "")):
            return web.Response(status=401, text="invalid or used ticket", content_type="text/plain")
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        with self.lock:
            conn = SocketConnection(len(self.connections) + 1, time.monotonic())
            self.connections.append(conn)
            live = len(self._live) + 1
        hello = {
            "type": "hello",
            "num_connections": live,
            "debug_info": {"host": "applink-sandbox", "build_number": 1, "approximate_connection_time": 3600},
            "connection_info": {"app_id": self.app_id},
        }
        await ws.send_str(json.dumps(hello))
        with self.lock:
            self._live[conn.number] = ws
        try:
            async for msg in ws:
                with self.lock:
                    conn.frames_received += 1
                if msg.type == WSMsgType.TEXT:
                    self._on_frame(conn.number, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self._fail(f"connection {conn.number}: a binary frame ({len(msg.data)} bytes); Slack expects text")
        finally:
            with self.lock:
                self._live.pop(conn.number, None)
                conn.closed_at = time.monotonic()
        return ws

    async def close_all(self, _: web.Application | None = None) -> None:
        """Close every open connection (on the server's shutdown)."""
        with self.lock:
            live = list(self._live.values())
        for ws in live:
            await ws.close(code=WSCloseCode.GOING_AWAY, message=b"server shutting down")

    # -- envelopes -------------------------------------------------------------------------------

    async def deliver(self, kind: str, payload: dict[str, Any], accepts_response_payload: bool) -> SocketEnvelope:
        """Send an envelope on the newest open connection; its ack deadline starts now."""
        with self.lock:
            if not self._live:
                self._fail(f"a {kind} envelope while no Socket Mode connection is open")
                raise NotConnectedError(f"no Socket Mode connection is open to deliver a {kind} envelope")
            number = max(self._live)
            ws = self._live[number]
            envelope = SocketEnvelope(
                envelope_id=str(uuid.uuid4()),
                type=kind,
                payload=copy.deepcopy(payload),
                accepts_response_payload=accepts_response_payload,
                connection=number,
                sent_at=time.monotonic(),
            )
            self.envelopes.append(envelope)
            self._by_id[envelope.envelope_id] = envelope
            self._decided[envelope.envelope_id] = threading.Event()
            wire = json.dumps(envelope.wire())
        asyncio.get_running_loop().call_later(self.ack_timeout, self._deadline, envelope.envelope_id)
        await ws.send_str(wire)
        with self.lock:
            return copy.deepcopy(envelope)

    def wait_decided(self, envelope_id: str, timeout: float) -> SocketEnvelope:
        """Block until the envelope is acknowledged or its deadline passed; a copy of it then."""
        with self.lock:
            event = self._decided[envelope_id]
        if not event.wait(timeout):
            raise TimeoutError(f"envelope {envelope_id} neither acknowledged nor timed out within {timeout}s")
        with self.lock:
            return copy.deepcopy(self._by_id[envelope_id])

    def _deadline(self, envelope_id: str) -> None:
        with self.lock:
            envelope = self._by_id[envelope_id]
            if envelope.acked_at is None:
                envelope.timed_out = True
                self._fail(
                    f"envelope {envelope_id} ({_describe(envelope)}) was not acknowledged within {self.ack_timeout:g}s"
                )
                self._timeout(envelope)
            self._decided[envelope_id].set()

    def _on_frame(self, number: int, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            self._fail(f"connection {number}: a frame that is not JSON: {data[:200]!r}")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("envelope_id"), str):
            self._fail(f"connection {number}: a frame that is not an acknowledgement: {data[:200]!r}")
            return
        now = time.monotonic()
        with self.lock:
            envelope = self._by_id.get(frame["envelope_id"])
            if envelope is None:
                self._fail(f"connection {number}: an ack of unknown envelope {frame['envelope_id']!r}")
                return
            if envelope.acked_at is not None:
                self._fail(f"envelope {envelope.envelope_id} ({_describe(envelope)}) acknowledged twice")
                return
            envelope.acked_at = now
            payload = frame.get("payload")
            if payload is not None and not isinstance(payload, dict):
                self._fail(f"envelope {envelope.envelope_id}: the ack's payload is not an object: {payload!r}")
                payload = None
            envelope.ack_payload = copy.deepcopy(payload)
            late = now - envelope.sent_at > self.ack_timeout
            if late:
                envelope.timed_out = True
                self._fail(
                    f"envelope {envelope.envelope_id} ({_describe(envelope)}) acknowledged after "
                    f"{now - envelope.sent_at:.2f}s (limit {self.ack_timeout:g}s)"
                )
            elif payload and not envelope.accepts_response_payload:
                self._fail(
                    f"envelope {envelope.envelope_id} ({_describe(envelope)}) does not accept a response payload, "
                    f"got {json.dumps(payload)[:200]}"
                )
            elif payload and envelope.type == "slash_commands":
                self._show(envelope)
            self._decided[envelope.envelope_id].set()

    def _fail(self, line: str) -> None:
        with self.lock:
            self.failures.append(line)


def _describe(envelope: SocketEnvelope) -> str:
    if envelope.type == "slash_commands":
        return f"slash_commands {envelope.payload.get('command')} {envelope.payload.get('text', '')!r}".rstrip()
    actions = envelope.payload.get("actions") or [{}]
    return f"{envelope.type} {envelope.payload.get('type')} {actions[0].get('action_id', '')}".rstrip()
