"""Slack simulator, driven through the real slack_sdk / slack_bolt clients over real HTTP.

Behaviours covered:
- auth.test answers the bot's identity (what slack-bolt reads) with the x-oauth-scopes header.
- chat.postMessage roots and threaded replies: increasing ts, thread() order, reply_count,
  conversations.replies/history reading them back; AsyncWebClient (form args in the query string).
- chat.update replaces text/blocks, keeps the history, and render_thread shows the latest version
  with buttons as [Approve] [Abort].
- Rate limiting: HTTP 429 + Retry-After; WebClient with RateLimitErrorRetryHandler retries and
  succeeds, without it raises SlackApiError with status 429.
- files_upload_v2 (3-call flow) into a thread: bytes, name, title, channel and thread recorded, a
  file message added to the thread.
- usergroups.users.list members and no_such_subteam; injected failures with fail().
- Error answers: channel_not_found, not_in_channel, thread_not_found, message_not_found,
  invalid_auth, not_authed, unknown_method, no_text, invalid_blocks (long button text, duplicate
  action_id, 51 blocks), missing_scope, method_deprecated (files.upload).
- A real slack-bolt AsyncApp served over aiohttp: slash command acked and answered through the
  sim, Approve click handled with respond(replace_original) editing the checkpoint.
- SlackClient: signed slash command form (verified by slack_sdk's SignatureVerifier), its ack shown
  as an ephemeral; block_actions payload built from a posted message, confirm dialog recorded,
  unknown button refused; stale signatures rejected by the verifier; ack timeout.
- response_url via slack_bolt's own respond(): ephemeral -> ephemerals(), replace_original edits
  the clicked message, in_channel posts; trigger_id works once with views.open.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

import httpx
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from sandbox._http import ThreadedServer
from sandbox.slack import AckTimeoutError, SlackClient, SlackSim

TOKEN = "xoxb-sandbox"
SECRET = "test-signing-secret"
CHANNEL = "C0UPGRADE"


def button(label: str, action_id: str, **extra: Any) -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id, **extra}


CONFIRM = {
    "title": {"type": "plain_text", "text": "Abort the upgrade?"},
    "text": {"type": "mrkdwn", "text": "Nothing more will be changed."},
    "confirm": {"type": "plain_text", "text": "Abort"},
    "deny": {"type": "plain_text", "text": "Keep going"},
}
CHECKPOINT: list[dict[str, Any]] = [
    {"type": "header", "text": {"type": "plain_text", "text": "Checkpoint 1"}},
    {"type": "section", "text": {"type": "mrkdwn", "text": "Delete *pulsar* PVCs?"}},
    {
        "type": "actions",
        "block_id": "checkpoint-1",
        "elements": [
            button("Approve", "approve", style="primary", value="cp-1"),
            button("Abort", "abort", style="danger", value="cp-1", confirm=CONFIRM),
        ],
    },
]


@pytest.fixture
def sim() -> Iterator[SlackSim]:
    sim = SlackSim().start()
    sim.add_user("U1", "alice")
    sim.add_user("U2", "bob")
    sim.add_usergroup("S0OPS", "upgrade-operators", ["U1", "U2"])
    sim.add_channel(CHANNEL, "upgrades")
    sim.add_channel("C0OTHER", "random", bot_member=False)
    yield sim
    sim.stop()


@pytest.fixture
def client(sim: SlackSim) -> WebClient:
    return WebClient(token=TOKEN, base_url=sim.api_url)


def api_error(exc: pytest.ExceptionInfo[SlackApiError]) -> str:
    return str(exc.value.response["error"])


# -- Web API ---------------------------------------------------------------------------------------


def test_auth_test_identifies_the_bot(sim: SlackSim, client: WebClient) -> None:
    answer = client.auth_test()
    assert answer["user_id"] == "U0BOT"
    assert answer["team_id"] == "T0SANDBOX"
    assert answer["bot_id"]
    assert answer["url"].startswith(sim.url)
    assert "chat:write" in answer.headers["x-oauth-scopes"]
    assert sim.calls[-1].method == "auth.test"
    assert sim.calls[-1].token == TOKEN


def test_root_then_replies_in_thread_order(sim: SlackSim, client: WebClient) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="Upgrade plan", blocks=CHECKPOINT)
    ts = root["ts"]
    replies = [client.chat_postMessage(channel=CHANNEL, thread_ts=ts, text=f"step {i}")["ts"] for i in range(3)]
    assert root["message"]["blocks"][2]["block_id"] == "checkpoint-1"
    assert sorted([ts, *replies], key=float) == [ts, *replies]
    assert len(set(replies)) == 3
    thread = sim.thread(CHANNEL, ts)
    assert [m.text for m in thread] == ["Upgrade plan", "step 0", "step 1", "step 2"]
    assert thread[0].thread_ts is None and thread[0].reply_count == 3
    assert all(m.thread_ts == ts and m.user == "U0BOT" for m in thread[1:])
    assert [m.ts for m in sim.messages(CHANNEL)] == [ts]
    read_back = client.conversations_replies(channel=CHANNEL, ts=ts)["messages"]
    assert [m["ts"] for m in read_back] == [ts, *replies]
    assert read_back[0]["reply_count"] == 3
    history = client.conversations_history(channel=CHANNEL)["messages"]
    assert [m["ts"] for m in history] == [ts]


def test_async_client_sends_form_args_in_query(sim: SlackSim) -> None:
    async def run() -> tuple[str, list[str]]:
        client = AsyncWebClient(token=TOKEN, base_url=sim.api_url)
        posted = await client.chat_postMessage(channel=CHANNEL, text="hello")
        members = await client.usergroups_users_list(usergroup="S0OPS")
        return posted["ts"], members["users"]

    ts, members = asyncio.run(run())
    assert members == ["U1", "U2"]
    assert sim.message(CHANNEL, ts).text == "hello"
    assert sim.calls_of("usergroups.users.list")[0].http_method == "GET"


def test_update_shows_latest_version_in_render(sim: SlackSim, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="Plan: waiting")["ts"]
    client.chat_postMessage(channel=CHANNEL, thread_ts=ts, text="Backed up values")
    answer = client.chat_update(channel=CHANNEL, ts=ts, text="Plan: approval needed", blocks=CHECKPOINT)
    assert answer["ts"] == ts and answer["text"] == "Plan: approval needed"
    msg = sim.message(CHANNEL, ts)
    assert msg.edit_count == 1 and msg.edits[0]["text"] == "Plan: waiting"
    rendered = sim.render_thread(CHANNEL, ts)
    assert "[Approve] [Abort]" in rendered
    assert "Checkpoint 1" in rendered and "Delete *pulsar* PVCs?" in rendered
    assert "Backed up values" in rendered
    assert "waiting" not in rendered
    client.chat_update(channel=CHANNEL, ts=ts, text="Plan: done", blocks=[])
    assert "Plan: done" in sim.render_thread(CHANNEL, ts)
    assert sim.message(CHANNEL, ts).edit_count == 2


def test_rate_limit_is_retried_by_the_retry_handler(sim: SlackSim) -> None:
    sim.rate_limit("chat.postMessage", count=1, retry_after=0)
    client = WebClient(
        token=TOKEN, base_url=sim.api_url, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)]
    )
    ts = client.chat_postMessage(channel=CHANNEL, text="after a 429")["ts"]
    assert sim.message(CHANNEL, ts).text == "after a 429"
    assert [c.status for c in sim.calls_of("chat.postMessage")] == [429, 200]


def test_rate_limit_without_handler_raises_429(sim: SlackSim, client: WebClient) -> None:
    sim.rate_limit("chat.update", count=1, retry_after=7)
    ts = client.chat_postMessage(channel=CHANNEL, text="x")["ts"]
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel=CHANNEL, ts=ts, text="y")
    assert exc.value.response.status_code == 429
    assert exc.value.response["error"] == "ratelimited"
    assert exc.value.response.headers["Retry-After"] == "7"
    assert sim.message(CHANNEL, ts).text == "x"
    client.chat_update(channel=CHANNEL, ts=ts, text="y")
    assert sim.message(CHANNEL, ts).text == "y"


def test_files_upload_v2_into_a_thread(sim: SlackSim, client: WebClient) -> None:
    ts = client.chat_postMessage(channel=CHANNEL, text="Upgrade")["ts"]
    content = b"pulsar:\n  enabled: true\n"
    answer = client.files_upload_v2(
        channel=CHANNEL, thread_ts=ts, content=content, filename="values.yaml", title="Saved values"
    )
    assert answer["file"]["name"] == "values.yaml"
    assert [c.method for c in sim.calls[-2:]] == [
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    (stored,) = sim.files()
    assert (stored.name, stored.title, stored.content) == ("values.yaml", "Saved values", content)
    assert (stored.channel, stored.thread_ts) == (CHANNEL, ts)
    reply = sim.thread(CHANNEL, ts)[-1]
    assert reply.files[0]["id"] == stored.id
    assert 'values.yaml "Saved values"' in sim.render_thread(CHANNEL, ts)


def test_files_upload_v1_is_retired(client: WebClient) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.api_call("files.upload", params={"channels": CHANNEL, "content": "x"})
    assert api_error(exc) == "method_deprecated"


def test_usergroup_members(client: WebClient) -> None:
    assert client.usergroups_users_list(usergroup="S0OPS")["users"] == ["U1", "U2"]
    with pytest.raises(SlackApiError) as exc:
        client.usergroups_users_list(usergroup="S0NOPE")
    assert api_error(exc) == "no_such_subteam"


def test_injected_failure_then_recovery(sim: SlackSim, client: WebClient) -> None:
    sim.fail("usergroups.users.list", "fatal_error", count=1)
    with pytest.raises(SlackApiError) as exc:
        client.usergroups_users_list(usergroup="S0OPS")
    assert api_error(exc) == "fatal_error"
    assert client.usergroups_users_list(usergroup="S0OPS")["users"] == ["U1", "U2"]


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"channel": "C0MISSING", "text": "x"}, "channel_not_found"),
        ({"channel": "C0OTHER", "text": "x"}, "not_in_channel"),
        ({"channel": CHANNEL, "text": "x", "thread_ts": "1700000000.000001"}, "thread_not_found"),
        ({"channel": CHANNEL}, "no_text"),
        (
            {"channel": CHANNEL, "blocks": [{"type": "actions", "elements": [button("x" * 76, "a")]}]},
            "invalid_blocks",
        ),
        (
            {
                "channel": CHANNEL,
                "blocks": [{"type": "actions", "elements": [button("A", "a"), button("B", "a")]}],
            },
            "invalid_blocks",
        ),
        ({"channel": CHANNEL, "blocks": [{"type": "divider"}] * 51}, "invalid_blocks"),
        ({"channel": CHANNEL, "blocks": [{"type": "bogus"}]}, "invalid_blocks"),
    ],
)
@pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")
def test_post_message_errors(client: WebClient, kwargs: dict[str, Any], error: str) -> None:
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(**kwargs)
    assert api_error(exc) == error


def test_invalid_blocks_explains_where(client: WebClient) -> None:
    blocks = [{"type": "actions", "elements": [button("x" * 76, "approve")]}]
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=blocks)
    messages = exc.value.response["response_metadata"]["messages"]
    assert any("/blocks/0/elements/0/text/text" in m for m in messages)


def test_reply_to_a_reply_is_not_a_thread(client: WebClient) -> None:
    root = client.chat_postMessage(channel=CHANNEL, text="root")["ts"]
    reply = client.chat_postMessage(channel=CHANNEL, text="reply", thread_ts=root)["ts"]
    with pytest.raises(SlackApiError) as exc:
        client.chat_postMessage(channel=CHANNEL, text="nested", thread_ts=reply)
    assert api_error(exc) == "thread_not_found"
    with pytest.raises(SlackApiError) as exc:
        client.chat_update(channel=CHANNEL, ts="1700000000.000001", text="x")
    assert api_error(exc) == "message_not_found"


def test_auth_errors(sim: SlackSim) -> None:
    with pytest.raises(SlackApiError) as exc:
        WebClient(token="xoxb-wrong", base_url=sim.api_url).auth_test()
    assert api_error(exc) == "invalid_auth"
    with pytest.raises(SlackApiError) as exc:
        WebClient(base_url=sim.api_url).auth_test()
    assert api_error(exc) == "not_authed"
    raw = httpx.post(f"{sim.api_url}no.such.method", headers={"Authorization": f"Bearer {TOKEN}"})
    assert raw.status_code == 200 and raw.json()["error"] == "unknown_method"
    form = httpx.post(f"{sim.api_url}auth.test", data={"token": TOKEN})
    assert form.json()["ok"] is True
    json_token = httpx.post(f"{sim.api_url}auth.test", json={"token": TOKEN})
    assert json_token.json()["error"] == "not_authed"


def test_missing_scope() -> None:
    with SlackSim(scopes=("chat:write",)) as sim:
        with pytest.raises(SlackApiError) as exc:
            WebClient(token=TOKEN, base_url=sim.api_url).usergroups_users_list(usergroup="S1")
        assert api_error(exc) == "missing_scope"
        assert exc.value.response["needed"] == "usergroups:read"


def test_wait_for_times_out(sim: SlackSim) -> None:
    with pytest.raises(TimeoutError):
        sim.wait_for(lambda: bool(sim.messages(CHANNEL)), timeout=0.05)


# -- SlackClient toward a bot ----------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    form: dict[str, str]

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.form["payload"])
        return data


@dataclass
class Receiver:
    """A tiny bot endpoint: verifies signatures like slack-bolt and records what it got."""

    verifier: SignatureVerifier = field(default_factory=lambda: SignatureVerifier(SECRET))
    received: list[Received] = field(default_factory=list)
    rejected: int = 0
    reply: dict[str, Any] | None = None
    delay: float = 0.0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.verifier.is_valid_request(body, dict(request.headers)):
            self.rejected += 1
            return web.Response(status=401)
        self.received.append(Received(dict(request.headers), body, dict(parse_qsl(body.decode()))))
        await asyncio.sleep(self.delay)
        return web.Response(status=200) if self.reply is None else web.json_response(self.reply)


@pytest.fixture
def bot(sim: SlackSim) -> Iterator[tuple[Receiver, SlackClient]]:
    receiver = Receiver()
    app = web.Application()
    app.router.add_post("/slack/events", receiver.handle)
    with ThreadedServer(app) as server:
        yield receiver, SlackClient(sim, f"{server.url}/slack/events", SECRET)


def test_slash_command_form_is_signed_like_slack(sim: SlackSim, bot: tuple[Receiver, SlackClient]) -> None:
    receiver, slack = bot
    receiver.reply = {"text": "Starting checks for my-release"}
    response = slack.slash("U1", CHANNEL, "/milvus-pulsar-upgrade", "start my-release")
    assert response.status_code == 200
    (got,) = receiver.received
    assert got.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert got.form["command"] == "/milvus-pulsar-upgrade" and got.form["text"] == "start my-release"
    assert got.form["user_id"] == "U1" and got.form["user_name"] == "alice"
    assert got.form["channel_id"] == CHANNEL and got.form["channel_name"] == "upgrades"
    assert got.form["team_id"] == "T0SANDBOX" and got.form["api_app_id"] == "A0SANDBOX"
    assert got.form["is_enterprise_install"] == "false"
    assert got.form["response_url"].startswith(sim.url) and got.form["trigger_id"]
    assert {"token", "team_domain"} <= set(got.form)
    (shown,) = sim.ephemerals("U1")
    assert shown.text == "Starting checks for my-release" and shown.source == "slash_ack"


def test_response_url_ephemeral_via_bolt_respond(sim: SlackSim, bot: tuple[Receiver, SlackClient]) -> None:
    receiver, slack = bot
    slack.slash("U2", CHANNEL, "/milvus-pulsar-upgrade", "start x")
    url = receiver.received[0].form["response_url"]
    answer = asyncio.run(AsyncRespond(response_url=url)(text="Only you can see this", response_type="ephemeral"))
    assert answer.status_code == 200
    asyncio.run(AsyncRespond(response_url=url)(text="No type given"))
    assert [e.text for e in sim.ephemerals("U2")] == ["Only you can see this", "No type given"]
    assert all(e.source == "response_url" and e.channel == CHANNEL for e in sim.ephemerals("U2"))
    assert sim.ephemerals("U1") == [] and sim.messages(CHANNEL) == []
    asyncio.run(AsyncRespond(response_url=url)(text="Everyone sees this", response_type="in_channel"))
    assert [m.text for m in sim.messages(CHANNEL)] == ["Everyone sees this"]


def test_click_payload_built_from_the_posted_message(
    sim: SlackSim, client: WebClient, bot: tuple[Receiver, SlackClient]
) -> None:
    receiver, slack = bot
    root = client.chat_postMessage(channel=CHANNEL, text="plan")["ts"]
    ts = client.chat_postMessage(channel=CHANNEL, thread_ts=root, text="Checkpoint", blocks=CHECKPOINT)["ts"]
    assert slack.click("U1", CHANNEL, ts, "approve").status_code == 200
    assert slack.last_confirm is None
    payload = receiver.received[0].payload
    assert receiver.received[0].headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U1", "username": "alice", "name": "alice", "team_id": "T0SANDBOX"}
    assert payload["container"] == {
        "type": "message",
        "message_ts": ts,
        "channel_id": CHANNEL,
        "is_ephemeral": False,
        "thread_ts": root,
    }
    assert payload["channel"] == {"id": CHANNEL, "name": "upgrades"}
    assert payload["team"]["id"] == "T0SANDBOX" and payload["api_app_id"] == "A0SANDBOX"
    assert payload["message"]["ts"] == ts and payload["message"]["blocks"][2]["block_id"] == "checkpoint-1"
    (action,) = payload["actions"]
    assert action["action_id"] == "approve" and action["block_id"] == "checkpoint-1"
    assert action["value"] == "cp-1" and action["type"] == "button" and action["text"]["text"] == "Approve"
    assert payload["trigger_id"] and payload["response_url"].startswith(sim.url) and "state" in payload


def test_click_with_confirm_and_replace_original(
    sim: SlackSim, client: WebClient, bot: tuple[Receiver, SlackClient]
) -> None:
    receiver, slack = bot
    ts = client.chat_postMessage(channel=CHANNEL, text="Checkpoint", blocks=CHECKPOINT)["ts"]
    slack.click("U2", CHANNEL, ts, "abort")
    assert slack.last_confirm == {
        "title": "Abort the upgrade?",
        "text": "Nothing more will be changed.",
        "confirm": "Abort",
        "deny": "Keep going",
    }
    url = receiver.received[0].payload["response_url"]
    asyncio.run(AsyncRespond(response_url=url)(text="Aborted by <@U2>", replace_original=True))
    msg = sim.message(CHANNEL, ts)
    assert msg.text == "Aborted by <@U2>" and msg.blocks == [] and msg.edit_count == 1
    with pytest.raises(LookupError):
        slack.click("U2", CHANNEL, ts, "approve")


def test_unknown_button_is_a_test_error(client: WebClient, bot: tuple[Receiver, SlackClient]) -> None:
    _, slack = bot
    ts = client.chat_postMessage(channel=CHANNEL, text="Checkpoint", blocks=CHECKPOINT)["ts"]
    with pytest.raises(LookupError, match="no button 'retry'"):
        slack.click("U1", CHANNEL, ts, "retry")


def test_forged_and_stale_requests_fail_verification(bot: tuple[Receiver, SlackClient]) -> None:
    receiver, slack = bot
    body = b"command=%2Fx&text=start"
    stale = slack.sign(body, timestamp=int(time.time()) - 600)
    assert slack.post_raw(body, stale, "application/x-www-form-urlencoded").status_code == 401
    forged = SlackClient(slack.sim, slack.bot_url, "wrong-secret").sign(body)
    assert slack.post_raw(body, forged, "application/x-www-form-urlencoded").status_code == 401
    assert slack.post_raw(body, {}, "application/x-www-form-urlencoded").status_code == 401
    assert slack.post_raw(body, slack.sign(body), "application/x-www-form-urlencoded").status_code == 200
    assert receiver.rejected == 3 and len(receiver.received) == 1


def test_slow_ack_times_out(sim: SlackSim, bot: tuple[Receiver, SlackClient]) -> None:
    receiver, slack = bot
    receiver.delay = 0.5
    slack.ack_timeout = 0.1
    with pytest.raises(AckTimeoutError):
        slack.slash("U1", CHANNEL, "/milvus-pulsar-upgrade", "help")
    assert "operation_timeout" in sim.ephemerals("U1")[0].text


def test_trigger_id_opens_one_view(sim: SlackSim, client: WebClient, bot: tuple[Receiver, SlackClient]) -> None:
    receiver, slack = bot
    slack.slash("U1", CHANNEL, "/milvus-pulsar-upgrade", "start x")
    trigger = receiver.received[0].form["trigger_id"]
    view = {
        "type": "modal",
        "title": {"type": "plain_text", "text": "Confirm"},
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "Sure?"}}],
    }
    assert client.views_open(trigger_id=trigger, view=view)["view"]["id"].startswith("V")
    assert sim.views[0]["user"] == "U1"
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id=trigger, view=view)
    assert api_error(exc) == "exchanged_trigger_id"
    with pytest.raises(SlackApiError) as exc:
        client.views_open(trigger_id="123.456.abc", view=view)
    assert api_error(exc) == "invalid_trigger_id"


def test_real_bolt_app_round_trip(sim: SlackSim) -> None:
    app = AsyncApp(
        token=TOKEN,
        signing_secret=SECRET,
        client=AsyncWebClient(token=TOKEN, base_url=sim.api_url),
    )

    @app.command("/milvus-pulsar-upgrade")
    async def on_command(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient) -> None:
        await ack(f"Starting {command['text']}")
        await client.chat_postMessage(channel=command["channel_id"], text="Checkpoint", blocks=CHECKPOINT)

    @app.action("approve")
    async def on_approve(ack: AsyncAck, body: dict[str, Any], respond: AsyncRespond) -> None:
        await ack()
        await respond(text=f"Approved by <@{body['user']['id']}>", replace_original=True)

    with ThreadedServer(app.web_app(path="/slack/events")) as server:
        slack = SlackClient(sim, f"{server.url}/slack/events", SECRET)
        assert slack.slash("U1", CHANNEL, "/milvus-pulsar-upgrade", "my-release").status_code == 200
        assert [e.text for e in sim.ephemerals("U1")] == ["Starting my-release"]
        sim.wait_for(lambda: len(sim.messages(CHANNEL)) == 1, timeout=5)
        ts = sim.messages(CHANNEL)[0].ts
        assert slack.click("U1", CHANNEL, ts, "approve").status_code == 200
        sim.wait_for(lambda: sim.message(CHANNEL, ts).edit_count == 1, timeout=5)
        assert sim.message(CHANNEL, ts).text == "Approved by <@U1>"
        body = b"command=%2Fmilvus-pulsar-upgrade&text=start"
        stale = slack.sign(body, timestamp=int(time.time()) - 600)
        assert slack.post_raw(body, stale, "application/x-www-form-urlencoded").status_code == 401
    assert [c.method for c in sim.calls][:2] == ["auth.test", "chat.postMessage"]
