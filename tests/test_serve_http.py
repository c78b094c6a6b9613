"""The running ``serve`` process over HTTP (Bolt's default path, signed like Slack).

Covers: /healthz and /readyz answer; a signed slash command reaches the listener (help text,
specific usage errors, ephemeral answers only); a forged, a stale (over 5 minutes) and an
unsigned request get 401 and change nothing (checked once a signed request sent after them
has been handled to its end); an unauthorized person, an unknown release and a second upgrade
of the same release are answered to the person alone and start nothing (a refused start
releases the release's lock); no token or signing secret appears in the bot's log.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

import httpx
import redis

from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import BOT_TOKEN, CHANNEL, SIGNING_SECRET, STRANGER, World
from state import keys
from tests.scenario import Person


def _command_body(text: str) -> bytes:
    return urllib.parse.urlencode(
        {
            "command": "/milvus-pulsar-upgrade",
            "text": text,
            "user_id": "U0ALICE",
            "channel_id": CHANNEL,
            "team_id": "T0SANDBOX",
            "response_url": "http://127.0.0.1:9/nowhere",
            "trigger_id": "1.2.3",
        }
    ).encode()


def test_health_endpoints(bot: BotProcess) -> None:
    assert httpx.get(bot.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(bot.url + "/readyz").status_code == 200


def test_signed_command_reaches_the_listener(slack: SlackClient) -> None:
    resp = slack.slash("U0ALICE", CHANNEL, "/milvus-pulsar-upgrade", "help")
    assert resp.status_code == 200
    assert "start <release>" in resp.text


def test_usage_error_is_answered_ephemerally_and_starts_nothing(
    world: World, slack: SlackClient, redis_url: str
) -> None:
    resp = slack.slash("U0ALICE", CHANNEL, "/milvus-pulsar-upgrade", "start Bad_Name")
    assert resp.status_code == 200 and "not a valid release name" in resp.text
    assert world.slack.messages(CHANNEL) == []
    assert not redis.Redis.from_url(redis_url).keys("mpub:upgrade:*")


def test_forged_stale_and_unsigned_requests_get_401(world: World, slack: SlackClient, redis_url: str) -> None:
    body = _command_body("start my-release")
    headers = slack.sign(body)
    forged = dict(headers, **{"X-Slack-Signature": "v0=" + "0" * 64})
    stale = slack.sign(body, timestamp=int(time.time()) - 301)
    for hdrs in (forged, stale, {}):
        resp = slack.post_raw(body, hdrs, "application/x-www-form-urlencoded")
        assert resp.status_code == 401, (hdrs, resp.status_code)
    # Signed with another secret: also refused.
    other = SlackClient(world.slack, slack.bot_url, "not-the-secret")
    assert other.slash("U0ALICE", CHANNEL, "/milvus-pulsar-upgrade", "help").status_code == 401
    # A signed request after them, followed to its end (answered, recorded, its lock released),
    # shows the bot has done all it was going to do with the refused ones.
    alice = Person(world, slack)
    alice.type("start no-such-release")
    alice.wait_ephemeral("Not started")
    client = redis.Redis.from_url(redis_url)
    alice.wait(lambda: not client.keys("mpub:active:*"), 15, "the release lock to be released")
    assert world.slack.messages(CHANNEL) == []
    assert not client.keys("mpub:upgrade:*")
    stream: Any = client.xrange(keys.AUDIT_ALL)  # every command the bot took, in the global audit stream
    commands = [json.loads(f[b"data"]).get("text") for _, f in stream if f[b"event"] == b"command"]
    assert commands == ["start no-such-release"]
    assert [t for t in alice.ephemerals() if "my-release" in t] == []


def test_unauthorized_person_cannot_start(world: World, slack: SlackClient, redis_url: str) -> None:
    mallory = Person(world, slack, STRANGER)
    mallory.type("start my-release")
    assert "not in BOT_OPERATORS" in mallory.wait_ephemeral("Not started")
    assert world.slack.messages(CHANNEL) == []
    assert not redis.Redis.from_url(redis_url).keys("mpub:active:*")


def test_group_member_is_an_operator(world: World, slack: SlackClient) -> None:
    bob = Person(world, slack, "U0BOB")
    bob.type("start my-release --dry-run")
    assert bob.outcome() == "succeeded"
    assert "Dry run" in bob.root().text


def test_unknown_release_is_answered_to_the_person_only(world: World, slack: SlackClient, redis_url: str) -> None:
    alice = Person(world, slack)
    alice.type("start no-such-release")
    text = alice.wait_ephemeral("Not started")
    assert "no Helm release and no Milvus resource named `no-such-release`" in text
    # The answer goes out before the record and its lock are dropped: wait for that, not a race.
    client = redis.Redis.from_url(redis_url)
    alice.wait(lambda: not client.keys("mpub:active:*"), 15, "the release lock to be released")
    assert not client.keys("mpub:upgrade:*")
    assert world.slack.messages(CHANNEL) == []


def test_second_upgrade_of_the_same_release_is_refused(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.checkpoint("flush_done")
    alice.type("start my-release")
    assert "already running" in alice.wait_ephemeral("already running")
    assert len(world.slack.messages(CHANNEL)) == 1
    # The same name in another namespace is another release.
    alice.type("start my-release --namespace staging")
    alice.wait(lambda: len(world.slack.messages(CHANNEL)) == 2, 15, "a second root message")


def test_no_secret_in_the_log(world: World, slack: SlackClient, bot: BotProcess) -> None:
    alice = Person(world, slack)
    alice.type("start my-release --dry-run")
    alice.outcome()
    log = bot.log()
    assert log
    for secret in (BOT_TOKEN, SIGNING_SECRET, "sandbox-token"):
        assert secret not in log
    for line in log.splitlines():
        json.loads(line)  # structured: one JSON object per line


def test_channel_without_the_bot_is_answered_and_nothing_starts(
    world: World, slack: SlackClient, redis_url: str
) -> None:
    world.slack.add_channel("C0NOTHERE", "random", bot_member=False)
    resp = slack.slash("U0ALICE", "C0NOTHERE", "/milvus-pulsar-upgrade", "start my-release")
    assert resp.status_code == 200
    alice = Person(world, slack)
    assert "Invite me" in alice.wait_ephemeral("cannot post in this channel")
    client = redis.Redis.from_url(redis_url)
    alice.wait(lambda: not client.keys("mpub:active:*"), 15, "the release lock to be released")
    assert not client.keys("mpub:upgrade:*")
    assert world.slack.messages("C0NOTHERE") == []
