"""Socket Mode, for real over a WebSocket: the simulator's side of it, and the real bot using it.

Behaviours covered:
- apps.connections.open: the app-level token in ``Authorization: Bearer`` gets a single-use
  ``ws://.../link/?ticket=...`` URL; a bot token there is ``not_allowed_token_type``, a wrong
  xapp token ``invalid_auth``, the app token as a form parameter ``invalid_auth``, none
  ``not_authed``; the app token on another method is ``not_allowed_token_type``; a used ticket
  or none is HTTP 401, not upgraded.
- The wire, with a bare aiohttp WebSocket: ``hello`` first; envelopes shaped as Slack's
  (``envelope_id``, ``type``, ``payload``, ``accepts_response_payload``); an ack with a payload
  shows a slash command's answer as an ephemeral; ack times recorded; an envelope not acked in
  time, a late, a second or an unknown ack, a non-JSON frame, and a payload on an envelope that
  accepts none are each recorded in ``socket_mode_failures``; a slash command not acked in time
  shows Slack's ``operation_timeout`` notice.
- slack-bolt's own AsyncSocketModeHandler (aiohttp client) against the simulator:
  ``SocketModeClient.slash`` / ``click`` reach its listeners, acks come back, respond() works.
- The real bot (``serve`` with SLACK_APP_TOKEN and no signing secret): the whole Helm path over
  Socket Mode through ``tests.scenario.Person`` unchanged, every envelope acked within 3 s and
  nothing failed on the link, ``/healthz`` 200 on PORT, ``POST /slack/events`` not served; the
  app token used only for apps.connections.open and never in the log.
- A bot token given as SLACK_APP_TOKEN is refused at start (exit 2, one line naming the variable)
  before anything calls Slack; a well-formed but revoked app token must be refused too (the bot
  must not come up healthy while Slack refuses its connection).
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlencode

import aiohttp
import httpx
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from sandbox.botproc import BotProcess
from sandbox.redis_server import free_port
from sandbox.slack import AckTimeoutError, SlackClient, SlackSim, SocketModeClient
from sandbox.world import APP_TOKEN, BOT_TOKEN, CHANNEL, OPERATOR, SIGNING_SECRET, UNSET, World
from tests.scenario import COMMAND, Person, has_button

USER = "U0ALICE"
ACK_LIMIT = 3.0  # Slack's


@pytest.fixture
def sim() -> Iterator[SlackSim]:
    """A bare simulator whose ack deadline is short, so that timeouts are quick to see."""
    s = SlackSim(socket_ack_timeout=0.5).start()
    s.add_user(USER, "alice")
    s.add_channel(CHANNEL, "milvus-ops")
    try:
        yield s
    finally:
        s.stop()


def api_error(call: Callable[[], Any]) -> str:
    with pytest.raises(SlackApiError) as exc:
        call()
    return str(exc.value.response["error"])


# --------------------------------------------------------------------- apps.connections.open


def test_apps_connections_open_takes_the_app_token_in_the_header_only(sim: SlackSim) -> None:
    client = WebClient(base_url=sim.api_url)
    url = client.apps_connections_open(app_token=sim.app_token)["url"]
    assert url.startswith(f"ws://127.0.0.1:{sim.url.rsplit(':', 1)[1]}/link/?ticket=")
    assert url.endswith(f"&app_id={sim.ws.app_id}")
    assert api_error(lambda: client.apps_connections_open(app_token=sim.bot_token)) == "not_allowed_token_type"
    assert api_error(lambda: client.apps_connections_open(app_token="xapp-1-A0SANDBOX-9-revoked")) == "invalid_auth"
    as_form = httpx.post(f"{sim.api_url}apps.connections.open", data={"token": sim.app_token}).json()
    assert as_form == {"ok": False, "error": "invalid_auth"}
    assert httpx.post(f"{sim.api_url}apps.connections.open").json() == {"ok": False, "error": "not_authed"}
    assert (
        api_error(
            lambda: WebClient(token=sim.app_token, base_url=sim.api_url).chat_postMessage(channel=CHANNEL, text="x")
        )
        == "not_allowed_token_type"
    )
    assert sim.messages(CHANNEL) == []

    async def connect_twice() -> tuple[str, int]:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(url) as ws:
                hello = await ws.receive_json(timeout=5)
            with pytest.raises(aiohttp.WSServerHandshakeError) as used:
                await session.ws_connect(url)
            return str(hello["type"]), used.value.status

    hello_type, status = asyncio.run(connect_twice())
    assert (hello_type, status) == ("hello", 401)
    assert httpx.get(f"{sim.url}/link/", headers={"Connection": "Upgrade", "Upgrade": "websocket"}).status_code == 401
    assert len(sim.socket_connections()) == 1


# --------------------------------------------------------------------- the wire, by hand


def test_envelopes_and_acks_on_the_wire(sim: SlackSim) -> None:
    client = SlackClient(sim, "http://unused", "unused")
    url = WebClient(base_url=sim.api_url).apps_connections_open(app_token=sim.app_token)["url"]
    slash_fields = client.slash_fields(USER, CHANNEL, COMMAND, "help")
    failures: Callable[[], list[str]] = sim.socket_mode_failures

    async def until(predicate: Callable[[], bool]) -> None:
        await asyncio.to_thread(sim.wait_for, predicate, 5.0)

    async def talk() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:

            async def deliver(kind: str, payload: dict[str, Any], accepts: bool) -> dict[str, Any]:
                await asyncio.to_thread(sim.deliver, kind, payload, accepts_response_payload=accepts)
                return dict(await ws.receive_json(timeout=5))

            hello = await ws.receive_json(timeout=5)
            # 1. a slash command, acked with an answer: shown to the person as Slack shows it
            slash = await deliver("slash_commands", slash_fields, True)
            assert set(slash) == {"envelope_id", "type", "payload", "accepts_response_payload"}
            assert (slash["type"], slash["accepts_response_payload"]) == ("slash_commands", True)
            assert slash["payload"] == slash_fields
            await ws.send_json({"envelope_id": slash["envelope_id"], "payload": {"text": "Usage: ..."}})
            await until(lambda: bool(sim.ephemerals(USER)))
            # 2. a click, never acked: a failure at the deadline; then a late ack: another
            click = await deliver("interactive", {"type": "block_actions", "actions": [{"action_id": "a"}]}, False)
            assert (click["type"], click["accepts_response_payload"]) == ("interactive", False)
            await until(lambda: len(failures()) == 1)
            await ws.send_json({"envelope_id": click["envelope_id"]})
            await until(lambda: len(failures()) == 2)
            # 3. acks Slack would not take: twice, unknown, not JSON, a payload where none is accepted
            await ws.send_json({"envelope_id": slash["envelope_id"]})
            await ws.send_json({"envelope_id": "no-such-envelope"})
            await ws.send_str("ack!")
            other = await deliver("interactive", {"type": "block_actions", "actions": [{"action_id": "b"}]}, False)
            await ws.send_json({"envelope_id": other["envelope_id"], "payload": {"text": "lost"}})
            await until(lambda: len(failures()) == 6)
            # 4. a slash command never acked: the person sees Slack's timeout notice
            await deliver("slash_commands", client.slash_fields(USER, CHANNEL, COMMAND, "list"), True)
            await until(lambda: len(failures()) == 7)
            return dict(hello)

    hello = asyncio.run(talk())

    assert hello["type"] == "hello" and hello["num_connections"] == 1
    assert hello["connection_info"] == {"app_id": sim.ws.app_id}
    assert set(hello["debug_info"]) == {"host", "build_number", "approximate_connection_time"}
    slash, click, other, unanswered = sim.envelopes()
    assert slash.ack_payload == {"text": "Usage: ..."} and not slash.timed_out
    assert slash.ack_seconds is not None and 0 <= slash.ack_seconds < 0.5
    assert click.timed_out and click.ack_seconds is not None and click.ack_seconds > 0.5
    assert other.ack_payload == {"text": "lost"} and not other.timed_out
    assert unanswered.timed_out and unanswered.acked_at is None
    lines = failures()
    assert f"envelope {click.envelope_id} (interactive block_actions a) was not acknowledged within 0.5s" == lines[0]
    assert lines[1].startswith(f"envelope {click.envelope_id} (interactive block_actions a) acknowledged after ")
    assert lines[2] == f"envelope {slash.envelope_id} (slash_commands {COMMAND} 'help') acknowledged twice"
    assert lines[3] == "connection 1: an ack of unknown envelope 'no-such-envelope'"
    assert lines[4] == "connection 1: a frame that is not JSON: 'ack!'"
    assert lines[5].startswith(f"envelope {other.envelope_id} (interactive block_actions b) does not accept a ")
    assert (
        lines[6]
        == f"envelope {unanswered.envelope_id} (slash_commands {COMMAND} 'list') was not acknowledged within 0.5s"
    )
    shown = [(e.text, e.source) for e in sim.ephemerals(USER)]
    assert shown == [("Usage: ...", "slash_ack"), (f'{COMMAND} failed with the error "operation_timeout"', "slack")]
    assert [c.open for c in sim.socket_connections()] == [False]


def test_delivery_without_a_connection_is_a_failure(sim: SlackSim) -> None:
    with pytest.raises(ConnectionError):
        SocketModeClient(sim).slash(USER, CHANNEL, COMMAND, "help")
    assert sim.socket_mode_failures() == ["a slash_commands envelope while no Socket Mode connection is open"]


# --------------------------------------------------------------------- slack-bolt's own client


class BoltInThread:
    """A slack-bolt AsyncApp on AsyncSocketModeHandler, on its own event loop and thread."""

    def __init__(self, sim: SlackSim, build: Callable[[AsyncApp], None]) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.handler = self._call(self._connect(sim, build))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(15)

    async def _connect(self, sim: SlackSim, build: Callable[[AsyncApp], None]) -> AsyncSocketModeHandler:
        app = AsyncApp(
            client=AsyncWebClient(token=sim.bot_token, base_url=sim.api_url),
            signing_secret="unused-in-socket-mode",
            request_verification_enabled=False,
        )
        build(app)
        handler = AsyncSocketModeHandler(app, sim.app_token)
        await handler.connect_async()
        return handler

    def close(self) -> None:
        self._call(self.handler.close_async())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def test_bolt_socket_mode_handler_against_the_simulator(sim: SlackSim) -> None:
    def build(app: AsyncApp) -> None:
        @app.command(COMMAND)
        async def command(ack: Any, command: dict[str, Any]) -> None:
            await ack(text=f"you typed {command['text']!r}")

        @app.action("approve")
        async def approve(ack: Any, respond: Any, body: dict[str, Any]) -> None:
            await ack()
            await respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")

        @app.command("/slow")
        async def slow(ack: Any) -> None:
            await asyncio.sleep(1.0)  # past the simulator's 0.5 s deadline
            await ack()

    bolt = BoltInThread(sim, build)
    try:
        sim.wait_for(lambda: any(c.open for c in sim.socket_connections()))
        client = SocketModeClient(sim)
        answer = client.slash(USER, CHANNEL, COMMAND, "help")
        assert answer.status_code == 200 and answer.json() == {"text": "you typed 'help'"}
        assert [e.text for e in sim.ephemerals(USER)] == ["you typed 'help'"]

        blocks = [
            {
                "type": "actions",
                "block_id": "cp",
                "elements": [
                    {"type": "button", "text": {"type": "plain_text", "text": "Approve"}, "action_id": "approve"}
                ],
            }
        ]
        posted = WebClient(token=sim.bot_token, base_url=sim.api_url).chat_postMessage(
            channel=CHANNEL, text="Checkpoint", blocks=blocks
        )
        clicked = client.click(USER, CHANNEL, posted["ts"], "approve")
        assert clicked.status_code == 200 and clicked.content == b""
        sim.wait_for(lambda: sim.message(CHANNEL, posted["ts"]).text == f"Approved by <@{USER}>")

        with pytest.raises(AckTimeoutError):
            client.slash(USER, CHANNEL, "/slow", "")
        first, second, third = sim.envelopes()
        assert [e.type for e in (first, second, third)] == ["slash_commands", "interactive", "slash_commands"]
        assert second.payload["type"] == "block_actions" and second.ack_payload is None
        assert not first.timed_out and not second.timed_out and third.timed_out
        sim.wait_for(lambda: sim.wait_acked(third.envelope_id).acked_at is not None, timeout=5)
        assert len(sim.socket_mode_failures()) == 2  # not in time, then late
        assert {c.token for c in sim.calls_of("apps.connections.open")} == {sim.app_token}
        assert {c.token for c in sim.calls if c.method != "apps.connections.open"} == {sim.bot_token}
    finally:
        bolt.close()


# --------------------------------------------------------------------- the real bot


def socket_mode_bot(make_bot: Callable[..., BotProcess], world: World, **env: str) -> BotProcess:
    """``serve`` in Socket Mode: the app-level token, no signing secret; returns once connected."""
    bot = make_bot(world, SLACK_APP_TOKEN=APP_TOKEN, SLACK_SIGNING_SECRET=UNSET, **env)
    world.slack.wait_for(lambda: any(c.open for c in world.slack.socket_connections()), timeout=20)
    return bot


def test_helm_upgrade_over_socket_mode(world: World, make_bot: Callable[..., BotProcess]) -> None:
    bot = socket_mode_bot(make_bot, world)
    assert "SLACK_SIGNING_SECRET" not in bot.env and bot.env["SLACK_APP_TOKEN"] == APP_TOKEN
    assert httpx.get(bot.url + "/healthz", timeout=5).status_code == 200

    alice = Person(world, SocketModeClient(world.slack))
    started = alice.type("start my-release")
    assert "Checking `my-release`" in started.json()["text"]
    acks_shown = [e.text for e in world.slack.ephemerals(OPERATOR) if e.source == "slash_ack"]
    assert len(acks_shown) == 1 and "Checking `my-release`" in acks_shown[0]
    flush_cp = alice.approve("flush_done")
    alice.approve("pvc_list")
    reinstall_cp = alice.approve("reinstall")
    assert alice.outcome() == "succeeded"

    # --- every request came over the WebSocket, and each was acked within Slack's 3 s
    envelopes = world.slack.envelopes()
    assert [e.type for e in envelopes] == ["slash_commands", "interactive", "interactive", "interactive"]
    assert envelopes[0].payload["text"] == "start my-release"
    assert [e.payload["actions"][0]["action_id"] for e in envelopes[1:]] == ["upgrade_approve"] * 3
    assert world.slack.socket_mode_failures() == []
    slowest = max(e.ack_seconds or float("inf") for e in envelopes)
    assert slowest <= ACK_LIMIT, [(e.type, e.ack_seconds) for e in envelopes]
    assert all(not e.timed_out and e.connection == 1 for e in envelopes)
    assert [e.ack_payload for e in envelopes[1:]] == [None, None, None]
    assert len(world.slack.socket_connections()) == 1

    # --- the checkpoints were decided by those clicks, as over HTTP
    for msg in (flush_cp, reinstall_cp):
        assert f"Approved by <@{OPERATOR}>" in world.slack.message(CHANNEL, msg.ts).text
    assert not any(has_button(m, "upgrade_approve") for m in alice.thread()[1:])

    # --- the HTTP side: health on PORT, no /slack/events at all (even signed by a signing secret)
    assert httpx.get(bot.url + "/healthz", timeout=5).status_code == 200
    body = urlencode(SlackClient(world.slack, "", "").slash_fields(OPERATOR, CHANNEL, COMMAND, "help")).encode()
    signed = SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
    assert signed.post_raw(body, signed.sign(body), "application/x-www-form-urlencoded").status_code == 404
    assert len(world.slack.envelopes()) == 4

    # --- the app-level token opens connections only, and never reaches the log
    opens = world.slack.calls_of("apps.connections.open")
    assert opens and {(c.token, c.error) for c in opens} == {(APP_TOKEN, None)}
    assert {c.token for c in world.slack.calls if c.method != "apps.connections.open"} == {BOT_TOKEN}
    assert APP_TOKEN not in bot.log()


def _start_expecting_exit(
    world: World, redis_url: str, within: float, **env: str
) -> tuple[int | None, bool, BotProcess]:
    """Start ``serve``, wait (up to ``within`` s) for it to exit, and stop it if it did not.

    Returns its exit status (None: still running), whether /healthz answered 200, and the process."""
    bot = BotProcess(world.bot_env(redis_url, free_port(), **env), os.path.join(world.workdir, "refused.log"))
    healthy = False
    try:
        try:
            bot.start(timeout=within)
            healthy = True
        except RuntimeError:
            pass  # it exited before it was healthy (or never became healthy)
        proc = bot.proc
        assert proc is not None
        deadline = time.monotonic() + within
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # waiting for the process to exit
        return proc.poll(), healthy, bot
    finally:
        bot.stop()


def _messages(log: str) -> list[str]:
    """The ``message`` of each JSON log line (other lines as they are), first line of each only."""
    out = []
    for line in log.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        text = str(record.get("message", line)) if isinstance(record, dict) else line
        if text.strip():
            out.append(text.splitlines()[0][:300])
    return out


@pytest.fixture
def bare_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    """A started world with no release in it (enough for a bot that must not start)."""
    w = World(str(tmp_path_factory.mktemp("bare"))).start()
    try:
        yield w
    finally:
        w.stop()


def test_bot_token_as_app_token_is_refused_at_start(bare_world: World, redis_url: str) -> None:
    status, healthy, bot = _start_expecting_exit(
        bare_world, redis_url, 20, SLACK_APP_TOKEN=BOT_TOKEN, SLACK_SIGNING_SECRET=UNSET
    )
    assert (status, healthy) == (2, False), bot.log()[-2000:]
    lines = [line for line in bot.log().splitlines() if line.strip()]
    assert lines == ["configuration error: SLACK_APP_TOKEN must be an app-level token starting with xapp-"]
    assert bare_world.slack.calls == [] and bare_world.slack.socket_connections() == []


def test_revoked_app_token_is_refused_at_start(bare_world: World, redis_url: str) -> None:
    """Slack refuses the app token (invalid_auth): the bot must say so and exit 2, as for any
    configuration error, rather than answer /healthz 200 while no slash command can reach it."""
    revoked = "xapp-1-A0SANDBOX-0000-revoked-token"
    status, healthy, bot = _start_expecting_exit(
        bare_world, redis_url, 15, SLACK_APP_TOKEN=revoked, SLACK_SIGNING_SECRET=UNSET
    )
    refusals = [c.error for c in bare_world.slack.calls_of("apps.connections.open")]
    assert refusals and set(refusals) == {"invalid_auth"}
    assert bare_world.slack.socket_connections() == []
    assert status == 2, (
        f"the bot was still running 15s after Slack refused its app token {len(refusals)} time(s)"
        f"{' and answered /healthz 200' if healthy else ''}; the end of its log:\n"
        + "\n".join(_messages(bot.log())[-3:])
    )
    assert "SLACK_APP_TOKEN" in bot.log() and "invalid_auth" in bot.log()
    assert revoked not in bot.log()


def test_envelope_json_is_what_slack_sdk_parses(sim: SlackSim) -> None:
    """The envelope, as sent, is one slack_sdk's SocketModeRequest.from_dict accepts whole."""
    from slack_sdk.socket_mode.request import SocketModeRequest

    url = WebClient(base_url=sim.api_url).apps_connections_open(app_token=sim.app_token)["url"]
    fields = SlackClient(sim, "", "").slash_fields(USER, CHANNEL, COMMAND, "help")

    async def receive() -> str:
        async with aiohttp.ClientSession() as session, session.ws_connect(url) as ws:
            await ws.receive_json(timeout=5)
            await asyncio.to_thread(sim.deliver, "slash_commands", fields, accepts_response_payload=True)
            raw = await ws.receive_str(timeout=5)
            await ws.send_json({"envelope_id": json.loads(raw)["envelope_id"]})
            await asyncio.to_thread(sim.wait_for, lambda: sim.envelopes()[0].acked_at is not None, 5.0)
            return raw

    request = SocketModeRequest.from_dict(json.loads(asyncio.run(receive())))
    assert request is not None
    assert (request.type, request.accepts_response_payload, request.payload) == ("slash_commands", True, fields)
    assert sim.socket_mode_failures() == []
