"""``SlackSim``: the Slack Web API, upload URLs and response_urls over real HTTP on 127.0.0.1.

Why: the bot talks to Slack only through slack_sdk's (Async)WebClient with ``base_url`` set to
``SLACK_API_URL`` and through slack-bolt's ``respond()`` (response_url). Pointing both at this
server lets tests and ``demo`` watch exactly what a channel would show, and make Slack misbehave
(rate limits, errors) on purpose.

Wire behaviour, as Slack's:
- ``/api/<method>`` takes GET (query args) or POST with a form, multipart or JSON body (query args
  are merged in: AsyncWebClient sends form arguments in the query string). JSON bodies are read only
  by write methods, and a JSON body's ``token`` is ignored. The token comes from
  ``Authorization: Bearer`` or a ``token`` form/query argument: none -> ``not_authed``, wrong ->
  ``invalid_auth``. Unknown methods -> ``unknown_method``. A method needing a scope the app lacks ->
  ``missing_scope`` with ``needed``/``provided``. Answers are HTTP 200 JSON, except rate limiting:
  HTTP 429, ``Retry-After`` and ``{"ok": false, "error": "ratelimited"}``. Every answer carries
  ``x-oauth-scopes`` (slack-bolt reads it after auth.test).
- ``apps.connections.open`` takes only the app-level token (``app_token``, ``xapp-...``) and only in
  ``Authorization: Bearer`` (Slack refuses it as a POST parameter: ``invalid_auth``); a bot token
  there is ``not_allowed_token_type``, as is the app-level token on any other method. It answers
  ``{"ok": true, "url": "ws://.../link/?ticket=..."}``: Socket Mode, see ``socket_mode``.
- Fault injection (``rate_limit``, ``fail``, ``fail_http``, ``hang``): the next calls of a method
  (optionally only those whose ``text`` argument contains ``match``) are answered with a 429 +
  Retry-After, an ``ok: false`` error, an HTTP 5xx, or only after a delay (a client timeout). A
  faulted call changes nothing, as when Slack never got it.
- ``/upload/v1/<secret>`` (from files.getUploadURLExternal) stores the raw POST body and answers
  ``text/plain`` ``OK - <bytes>``, as files.slack.com does.
- ``/hooks/<commands|actions>/...`` response_urls accept JSON, at most 5 uses within 30 minutes
  (then HTTP 404 ``used_url`` / ``expired_url``); a body without text/blocks/attachments is HTTP 400
  ``no_text`` unless it deletes; ``delete_original`` deletes, ``replace_original`` edits the message
  the click came from, ``response_type: in_channel`` posts to the channel (``thread_ts`` honoured),
  anything else becomes an ephemeral for the user.

All state is guarded by one lock, so tests may read it from their own thread while the bot writes.
"""

from __future__ import annotations

import asyncio
import copy
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sandbox._http import ThreadedServer
from sandbox.slack.api import METHODS, ApiError, Content, WebApi, parse_content
from sandbox.slack.blocks import render_blocks
from sandbox.slack.model import (
    ApiCall,
    Channel,
    Ephemeral,
    Message,
    ResponseUrl,
    ResponseUrlPost,
    UploadedFile,
    User,
    UserGroup,
    Workspace,
)
from sandbox.slack.socket_mode import ACK_TIMEOUT, LINK_PATH, SocketConnection, SocketEnvelope, SocketModeLink

DEFAULT_SCOPES = (
    "chat:write",
    "commands",
    "files:write",
    "usergroups:read",
    "users:read",
    "channels:read",
    "channels:history",
    "groups:read",
    "groups:history",
)
RESPONSE_URL_MAX_USES = 5
RESPONSE_URL_TTL = 30 * 60.0
JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}
APP_TOKEN_METHODS = frozenset({"apps.connections.open"})  # methods that take the app-level token only


def _content_type(request: web.Request) -> str:
    return request.headers.get("Content-Type", "").split(";")[0].strip().lower()


@dataclass(frozen=True)
class Fault:
    """An injected answer: HTTP ``status`` with ``answer``, after ``delay`` seconds."""

    status: int
    answer: dict[str, Any]
    retry_after: int
    delay: float
    match: str | None


class SlackSim:
    """A Slack workspace with one bot, served over HTTP. Start it, point the bot at ``api_url``."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-sandbox",
        app_token: str = "xapp-1-A0SANDBOX-1-sandbox",
        team_id: str = "T0SANDBOX",
        bot_user_id: str = "U0BOT",
        app_id: str = "A0SANDBOX",
        bot_id: str = "B0SANDBOX",
        bot_name: str = "upgradebot",
        scopes: tuple[str, ...] = DEFAULT_SCOPES,
        trigger_ttl: float = 3.0,
        socket_ack_timeout: float = ACK_TIMEOUT,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.scopes = tuple(scopes)
        self.ws = Workspace(team_id=team_id, bot_user_id=bot_user_id, bot_id=bot_id, app_id=app_id)
        self.ws.users[bot_user_id] = User(bot_user_id, bot_name, is_bot=True)
        self.api = WebApi(self.ws, root_url="", trigger_ttl=trigger_ttl)
        self.calls: list[ApiCall] = []
        self.responses: list[ResponseUrlPost] = []
        self._response_urls: dict[str, ResponseUrl] = {}
        self._faults: dict[str, list[Fault]] = {}
        self.lock = threading.RLock()
        self._delay = 0.0
        self.socket = SocketModeLink(
            self.lock, app_id, ack_timeout=socket_ack_timeout, show=self._show_slash_ack, timeout=self._ack_timed_out
        )
        self.api.open_connection = lambda: self.socket.new_url(self.url)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get(LINK_PATH, self.socket.handle)
        app.on_shutdown.append(self.socket.close_all)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{secret}", self._handle_upload)
        app.router.add_post("/hooks/{kind}/{team}/{num}/{secret}", self._handle_hook)
        self._server = ThreadedServer(app)

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> SlackSim:
        self._server.start()
        self.api.root_url = self.url
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> SlackSim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def api_url(self) -> str:
        return f"{self.url}/api/"

    @property
    def team_id(self) -> str:
        return self.ws.team_id

    @property
    def bot_user_id(self) -> str:
        return self.ws.bot_user_id

    # -- setup and fault injection --------------------------------------------------------------

    def add_user(self, user_id: str, name: str) -> None:
        with self.lock:
            self.ws.users[user_id] = User(user_id, name)

    def add_usergroup(self, group_id: str, handle: str, members: list[str]) -> None:
        with self.lock:
            self.ws.groups[group_id] = UserGroup(group_id, handle, list(members))

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        bot_member: bool = True,
        is_private: bool = False,
        members: list[str] | None = None,
    ) -> None:
        """A channel; ``members`` None means every user of the workspace is in it."""
        with self.lock:
            self.ws.channels[channel_id] = Channel(channel_id, name, bot_member, is_private, members)

    def rate_limit(self, method: str, count: int = 1, retry_after: int = 1, match: str | None = None) -> None:
        """The next ``count`` calls of ``method`` get HTTP 429 with ``Retry-After: retry_after``."""
        self._add_faults(method, count, Fault(429, {"ok": False, "error": "ratelimited"}, retry_after, 0.0, match))

    def fail(self, method: str, error: str, count: int = 1, match: str | None = None) -> None:
        """The next ``count`` calls of ``method`` answer ``{"ok": false, "error": error}``."""
        self._add_faults(method, count, Fault(200, {"ok": False, "error": error}, 0, 0.0, match))

    def fail_http(self, method: str, status: int = 500, count: int = 1, match: str | None = None) -> None:
        """The next ``count`` calls of ``method`` get HTTP ``status`` (5xx), as when Slack has an outage."""
        self._add_faults(method, count, Fault(status, {"ok": False, "error": "internal_error"}, 0, 0.0, match))

    def hang(self, method: str, seconds: float, count: int = 1, match: str | None = None) -> None:
        """The next ``count`` calls of ``method`` are answered (HTTP 503) only after ``seconds``."""
        self._add_faults(method, count, Fault(503, {"ok": False, "error": "timeout"}, 0, seconds, match))

    def clear_faults(self) -> None:
        with self.lock:
            self._faults.clear()

    def pending_faults(self, method: str) -> int:
        with self.lock:
            return len(self._faults.get(method, []))

    def _add_faults(self, method: str, count: int, fault: Fault) -> None:
        with self.lock:
            self._faults.setdefault(method, []).extend([fault] * count)

    def _take_fault(self, method: str, args: dict[str, Any]) -> Fault | None:
        faults = self._faults.get(method, [])
        text = str(args.get("text") or "")
        for i, fault in enumerate(faults):
            if fault.match is None or fault.match in text:
                return faults.pop(i)
        return None

    def new_trigger_id(self, user: str) -> str:
        """A trigger_id views.open accepts once, within ``trigger_ttl`` seconds."""
        with self.lock:
            return self.api.new_trigger(user)

    def new_response_url(
        self,
        *,
        channel: str,
        user: str,
        kind: str = "commands",
        message_ts: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """A response_url on the simulator; ``message_ts`` is the message a click came from."""
        num = secrets.randbelow(10**12)
        url = f"{self.url}/hooks/{kind}/{self.ws.team_id}/{num}/{secrets.token_urlsafe(18)}"
        with self.lock:
            self._response_urls[url] = ResponseUrl(url, kind, channel, user, message_ts, thread_ts, time.monotonic())
        return url

    def add_message(self, channel: str, user: str, text: str, *, thread_ts: str | None = None) -> Message:
        """A message typed by a person (for threads a bot must read back or ignore)."""
        with self.lock:
            msg = Message(channel=channel, ts=self.ws.clock.next(), user=user, text=text, thread_ts=thread_ts)
            return self.ws.add_message(msg)

    # -- inspection ------------------------------------------------------------------------------

    # Everything returned below is a copy taken under the lock: safe to read while the bot writes.

    def messages(self, channel: str) -> list[Message]:
        """Top-level messages of ``channel``, oldest first (deleted ones left out)."""
        with self.lock:
            return copy.deepcopy(self.ws.roots(channel))

    def thread(self, channel: str, ts: str) -> list[Message]:
        """The root ``ts`` and then its replies, oldest first."""
        with self.lock:
            return [self.message(channel, ts), *copy.deepcopy(self.ws.replies(channel, ts))]

    def message(self, channel: str, ts: str) -> Message:
        """A root or reply by ``ts``; KeyError when there is none (or it was deleted)."""
        with self.lock:
            msg = self.ws.find(channel, ts)
            if msg is None:
                raise KeyError(f"no message {ts} in {channel}")
            return copy.deepcopy(msg)

    def message_json(self, channel: str, ts: str) -> dict[str, Any]:
        """The message as Slack's API and interaction payloads show it."""
        with self.lock:
            msg = self.message(channel, ts)
            data = self.ws.thread_json(msg, True) if msg.thread_ts is None else msg.to_api(self.ws.team_id)
            return copy.deepcopy(data)

    def ephemerals(self, user: str | None = None) -> list[Ephemeral]:
        with self.lock:
            return copy.deepcopy([e for e in self.ws.ephemerals if user is None or e.user == user])

    def files(self) -> list[UploadedFile]:
        """Files whose bytes were uploaded, in upload order (shared or not)."""
        with self.lock:
            return copy.deepcopy([f for f in self.ws.files.values() if f.content is not None])

    def show_response(self, channel: str, user: str, body: dict[str, Any], source: str) -> None:
        """Show a synchronous answer the way Slack does: in the channel or only to ``user``.

        An answer Slack would refuse (e.g. invalid blocks) shows Slack's error notice instead.
        """
        with self.lock:
            try:
                content = parse_content(body)
            except ApiError as err:
                body, source = {"text": f'failed with the error "{err.error}"'}, "slack"
                content = parse_content(body)
            if body.get("response_type") == "in_channel":
                self.api.post(channel, content, thread_ts=None)
                return
            self.ws.ephemerals.append(
                Ephemeral(
                    channel=channel,
                    user=user,
                    text=content.text or "",
                    blocks=content.blocks or [],
                    attachments=content.attachments or [],
                    source=source,
                    message_ts=self.ws.clock.next(),
                )
            )

    # -- Socket Mode ----------------------------------------------------------------------------

    @property
    def socket_ack_timeout(self) -> float:
        return self.socket.ack_timeout

    def deliver(self, kind: str, payload: dict[str, Any], *, accepts_response_payload: bool) -> SocketEnvelope:
        """Send an envelope (``slash_commands``, ``interactive``) to the app over its Socket Mode connection.

        Returns at once; ``wait_acked`` waits for its ack. ``NotConnectedError`` when none is open."""
        return self._server.call(self.socket.deliver(kind, payload, accepts_response_payload))

    def wait_acked(self, envelope_id: str, timeout: float | None = None) -> SocketEnvelope:
        """The envelope once acknowledged or past its ack deadline (``timed_out`` then says which)."""
        return self.socket.wait_decided(envelope_id, self.socket.ack_timeout + 5 if timeout is None else timeout)

    def envelopes(self) -> list[SocketEnvelope]:
        """Every envelope sent over Socket Mode, in order, with its ack time and payload."""
        with self.lock:
            return copy.deepcopy(self.socket.envelopes)

    def socket_mode_failures(self) -> list[str]:
        """What Slack would not have accepted on the Socket Mode link (an envelope not acked in time...)."""
        with self.lock:
            return list(self.socket.failures)

    def socket_connections(self) -> list[SocketConnection]:
        """Every WebSocket the app opened, in order (``open`` for those still open)."""
        with self.lock:
            return copy.deepcopy(self.socket.connections)

    def _show_slash_ack(self, envelope: SocketEnvelope) -> None:
        body = envelope.ack_payload or {}
        if body.get("text") or body.get("blocks") or body.get("attachments"):
            payload = envelope.payload
            self.show_response(str(payload.get("channel_id")), str(payload.get("user_id")), body, "slash_ack")

    def _ack_timed_out(self, envelope: SocketEnvelope) -> None:
        if envelope.type == "slash_commands":
            payload = envelope.payload
            notice = {"text": f'{payload.get("command")} failed with the error "operation_timeout"'}
            self.show_response(str(payload.get("channel_id")), str(payload.get("user_id")), notice, "slack")

    def channel_name(self, channel: str) -> str:
        with self.lock:
            found = self.ws.channels.get(channel)
            if found is None:
                raise KeyError(f"unknown channel {channel}: call add_channel first")
            return found.name

    def user(self, user_id: str) -> User:
        with self.lock:
            found = self.ws.users.get(user_id)
            if found is None:
                raise KeyError(f"unknown user {user_id}: call add_user first")
            return found

    def calls_of(self, method: str) -> list[ApiCall]:
        with self.lock:
            return [c for c in self.calls if c.method == method]

    @property
    def views(self) -> list[dict[str, Any]]:
        """Views opened with views.open: ``{"user": ..., "view": {...}}``."""
        with self.lock:
            return list(self.api.views)

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02) -> None:
        """Poll ``predicate`` until true; TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            if predicate():
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout}s")
            time.sleep(interval)

    def render_thread(self, channel: str, ts: str) -> str:
        """The thread as readable text: the root's current version, then each reply."""
        with self.lock:
            root, *replies = self.thread(channel, ts)
            lines = [f"#{self.ws.channels[channel].name if channel in self.ws.channels else channel}"]
            lines += self._render_message(root, indent="")
            for reply in replies:
                lines += self._render_message(reply, indent="    ")
            return "\n".join(lines)

    def _render_message(self, msg: Message, indent: str) -> list[str]:
        user = self.ws.users.get(msg.user)
        edited = f" (edited {msg.edit_count}x)" if msg.edits else ""
        head = f"{indent}{'└ ' if indent else ''}@{user.name if user else msg.user} {msg.ts}{edited}"
        body = render_blocks(msg.blocks) if msg.blocks else msg.text.splitlines()
        for att in msg.attachments:
            body += (
                render_blocks(att.get("blocks") or []) or str(att.get("text") or att.get("fallback", "")).splitlines()
            )
        body += [f'[file {f["name"]} "{f["title"]}" {f["size"]} bytes]' for f in msg.files]
        pad = indent + "  "
        return [head, *(pad + line for line in body)]

    # -- HTTP: Web API ---------------------------------------------------------------------------

    async def _read_args(self, request: web.Request, method: str) -> tuple[dict[str, Any], str | None]:
        """(arguments, token) of a Web API request, read like Slack reads them."""
        args: dict[str, Any] = dict(request.query)
        ctype = _content_type(request)
        body_token: str | None = args.get("token")
        if request.method == "POST" and ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            args.update({k: v for k, v in form.items() if isinstance(v, str)})
            body_token = args.get("token")
        elif request.method == "POST" and ctype == "application/json":
            raw = await request.read()
            try:
                data = json.loads(raw) if raw else {}
            except ValueError:
                raise ApiError("invalid_json") from None
            if not isinstance(data, dict):
                raise ApiError("invalid_json")
            if METHODS.get(method) is not None and METHODS[method].accepts_json:
                args.update({k: v for k, v in data.items() if k != "token" and v is not None})
        auth = request.headers.get("Authorization", "")
        token = auth[len("Bearer ") :].strip() if auth.startswith("Bearer ") else body_token
        args.pop("token", None)
        return args, token or None

    def _token_error(self, method: str, token: str, bearer: bool) -> str | None:
        """Slack's answer to the token of a call: None when the method may run with it."""
        if method in APP_TOKEN_METHODS:
            if not bearer:
                return "invalid_auth"  # the app-level token is taken from the Authorization header only
            if token == self.bot_token or token.startswith("xox"):
                return "not_allowed_token_type"
            return None if token == self.app_token else "invalid_auth"
        if token == self.app_token or token.startswith("xapp-"):
            return "not_allowed_token_type"
        return None if token == self.bot_token else "invalid_auth"

    def _gate(
        self, method: str, args: dict[str, Any], token: str | None, bearer: bool = True
    ) -> tuple[int, dict[str, Any], int]:
        """Checks before the method runs: (status, answer, retry_after) or status 0 to proceed.

        An injected delay (``hang``) is left in ``self._delay`` for the request handler to wait."""
        if method not in METHODS:
            return 200, {"ok": False, "error": "unknown_method", "req_method": method}, 0
        if token is None:
            return 200, {"ok": False, "error": "not_authed"}, 0
        error = self._token_error(method, token, bearer)
        if error is not None:
            return 200, {"ok": False, "error": error}, 0
        fault = self._take_fault(method, args)
        if fault is not None:
            self._delay = fault.delay
            return fault.status, dict(fault.answer), fault.retry_after
        needed = self.api.needed_scope(method, args)
        if needed is not None and needed not in self.scopes:
            answer = {
                "ok": False,
                "error": "missing_scope",
                "needed": needed,
                "provided": ",".join(self.scopes),
            }
            return 200, answer, 0
        return 0, {}, 0

    def _run(
        self, method: str, args: dict[str, Any], token: str | None, bearer: bool = True
    ) -> tuple[int, dict[str, Any], int]:
        status, answer, retry_after = self._gate(method, args, token, bearer)
        if status == 0:
            status = 200
            try:
                answer = self.api.call(method, args)
            except ApiError as err:
                answer = {"ok": False, "error": err.error, **err.extra}
        return status, answer, retry_after

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        token: str | None = None
        args: dict[str, Any] = {}
        answer: dict[str, Any]
        try:
            args, token = await self._read_args(request, method)
        except ApiError as err:
            status, answer, retry_after = 200, {"ok": False, "error": err.error}, 0
        else:
            with self.lock:
                self._delay = 0.0
                bearer = request.headers.get("Authorization", "").startswith("Bearer ")
                status, answer, retry_after = self._run(method, args, token, bearer)
                delay = self._delay
            if delay:
                await asyncio.sleep(delay)
        with self.lock:
            self.calls.append(
                ApiCall(method, args, token, time.monotonic(), request.method, status, answer.get("error"))
            )
        headers = {**JSON_HEADERS, "x-oauth-scopes": ",".join(self.scopes), "x-accepted-oauth-scopes": ""}
        if status == 429:
            headers["Retry-After"] = str(retry_after)
        return web.Response(status=status, body=json.dumps(answer).encode(), headers=headers)

    # -- HTTP: uploads and response_urls ---------------------------------------------------------

    async def _handle_upload(self, request: web.Request) -> web.Response:
        data = await request.read()
        with self.lock:
            file_id = self.api.upload_secrets.pop(request.match_info["secret"], None)
            if file_id is None:
                return web.Response(status=404, text="Not Found", content_type="text/plain")
            self.ws.files[file_id].content = data
        return web.Response(status=200, text=f"OK - {len(data)}", content_type="text/plain")

    def _check_response_url(self, url: str) -> tuple[ResponseUrl | None, str]:
        hook = self._response_urls.get(url)
        if hook is None:
            return None, "invalid_token"
        if time.monotonic() - hook.created > RESPONSE_URL_TTL:
            return None, "expired_url"
        if hook.uses >= RESPONSE_URL_MAX_USES:
            return None, "used_url"
        return hook, ""

    async def _handle_hook(self, request: web.Request) -> web.Response:
        raw = await request.read()
        url = f"{self.url}{request.path}"
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        with self.lock:
            status, answer = self._apply_hook(url, body)
            self.responses.append(
                ResponseUrlPost(url, body if isinstance(body, dict) else {}, time.monotonic(), status, answer)
            )
        return web.Response(status=status, text=answer, content_type="text/plain")

    def _apply_hook(self, url: str, body: Any) -> tuple[int, str]:
        hook, error = self._check_response_url(url)
        if hook is None:
            return 404, error
        if not isinstance(body, dict):
            return 400, "invalid_payload"
        try:
            content = parse_content(body)
        except ApiError as err:
            return 400, err.error
        if body.get("delete_original") is True:
            hook.uses += 1
            return self._delete_original(hook)
        if content.empty:
            return 400, "no_text"
        hook.uses += 1
        if body.get("replace_original") is True and hook.message_ts is not None:
            return self._replace_original(hook, content)
        if body.get("response_type") == "in_channel":
            thread_ts = body.get("thread_ts") or None
            root = self.ws.find(hook.channel, str(thread_ts)) if thread_ts else None
            if thread_ts is not None and (root is None or root.thread_ts is not None):
                return 404, "thread_not_found"
            self.api.post(hook.channel, content, thread_ts=thread_ts)
            return 200, "ok"
        self.ws.ephemerals.append(
            Ephemeral(
                channel=hook.channel,
                user=hook.user,
                text=content.text or "",
                blocks=content.blocks or [],
                attachments=content.attachments or [],
                thread_ts=body.get("thread_ts") or hook.thread_ts,
                source="response_url",
                message_ts=self.ws.clock.next(),
            )
        )
        return 200, "ok"

    def _original(self, hook: ResponseUrl) -> Message | None:
        return self.ws.find(hook.channel, hook.message_ts) if hook.message_ts else None

    def _delete_original(self, hook: ResponseUrl) -> tuple[int, str]:
        msg = self._original(hook)
        if msg is None:
            return 404, "message_not_found"
        self.ws.delete(msg)
        return 200, "ok"

    def _replace_original(self, hook: ResponseUrl, content: Content) -> tuple[int, str]:
        msg = self._original(hook)
        if msg is None:
            return 404, "message_not_found"
        self.ws.edit(msg, text=content.text or "", blocks=content.blocks or [], attachments=content.attachments or [])
        return 200, "ok"
