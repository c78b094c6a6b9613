"""Redis unreachable for 30 s in the middle of an upgrade.

Covers: while Redis is down, a slash command and a button click are still acked at once (well
within Slack's 3 s), the person is told that the state store is unavailable and nothing was
started or changed, and no upgrade starts; when Redis is back, the upgrade that waited at its
checkpoint goes on and succeeds.
"""

from __future__ import annotations

import time

from sandbox.botproc import BotProcess
from sandbox.redis_server import RedisServer
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.scenario import Person

OUTAGE_SECONDS = 30


def test_redis_down_for_30s(world: World, slack: SlackClient, bot: BotProcess, redis_server: RedisServer) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    cp = alice.checkpoint("flush_done")
    redis_server.stop()
    down_at = time.monotonic()
    t = time.monotonic()
    resp = alice.type("start other-release")
    assert resp.status_code == 200 and time.monotonic() - t < 3
    alice.wait_ephemeral("The state store (Redis) is unavailable, so nothing was started or changed", 20)
    t = time.monotonic()
    click = alice.click(cp, "upgrade_approve")
    assert click.status_code == 200 and time.monotonic() - t < 3
    alice.wait(
        lambda: sum("state store (Redis) is unavailable" in e for e in alice.ephemerals()) >= 2,
        20,
        "the click's answer",
    )
    # The outage itself is the scenario's input: Redis stays away this long (not a wait for a condition).
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
    redis_server.start()
    assert [m for m in world.slack.messages("C0UPGRADE") if "other-release" in m.text] == []
    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome(timeout=120) == "succeeded"
