"""A person in Slack, for the scenario tests: types commands, waits for the thread, clicks.

Everything goes through the real bot process over signed HTTP and is read back from the
Slack simulator, exactly as a person would see it.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from sandbox.slack import SlackClient
from sandbox.slack.model import Message
from sandbox.world import CHANNEL, OPERATOR, World

COMMAND = "/milvus-pulsar-upgrade"
OUTCOMES = ("succeeded", "failed", "aborted")


class Person:
    def __init__(self, world: World, client: SlackClient, user: str = OPERATOR) -> None:
        self.world = world
        self.client = client
        self.user = user

    def as_user(self, user: str) -> Person:
        return Person(self.world, self.client, user)

    def type(self, text: str) -> httpx.Response:
        resp = self.client.slash(self.user, CHANNEL, COMMAND, text)
        assert resp.status_code == 200, resp.text
        return resp

    def root(self, timeout: float = 15.0) -> Message:
        self.world.slack.wait_for(lambda: bool(self.world.slack.messages(CHANNEL)), timeout)
        return self.world.slack.messages(CHANNEL)[0]

    def thread(self) -> list[Message]:
        return self.world.slack.thread(CHANNEL, self.root().ts)

    def checkpoint(self, kind: str, nth: int | None = None, timeout: float = 30.0) -> Message:
        """The open checkpoint message of ``kind`` (optionally its n-th posting)."""
        found: list[Message] = []

        def ready() -> bool:
            found[:] = [
                m for m in self.thread()[1:] if _block_id(m, "cp:") and _block_id(m, "cp:").startswith(f"cp:{kind}-")
            ]
            if nth is not None:
                found[:] = [m for m in found if _block_id(m, "cp:") == f"cp:{kind}-{nth}"]
            return bool(found) and has_button(found[-1], "upgrade_approve")

        self.wait(ready, timeout, f"checkpoint {kind}")
        return found[-1]

    def error_message(self, timeout: float = 30.0) -> Message:
        found: list[Message] = []

        def ready() -> bool:
            found[:] = [m for m in self.thread()[1:] if has_button(m, "upgrade_retry")]
            return bool(found)

        self.wait(ready, timeout, "an error with Retry")
        return found[-1]

    def click(self, msg: Message, action_id: str) -> httpx.Response:
        resp = self.client.click(self.user, CHANNEL, msg.ts, action_id)
        assert resp.status_code == 200, resp.text
        return resp

    def approve(self, kind: str, nth: int | None = None) -> Message:
        msg = self.checkpoint(kind, nth)
        self.click(msg, "upgrade_approve")
        return msg

    def outcome(self, timeout: float = 60.0) -> str:
        words: list[str] = []

        def ended() -> bool:
            text = self.root().text
            words[:] = [w for w in OUTCOMES if w in text]
            return bool(words)

        self.wait(ended, timeout, "the upgrade to end")
        assert len(words) == 1, self.root().text
        return words[0]

    def wait(self, predicate: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.05)
        root = self.world.slack.messages(CHANNEL)
        picture = self.world.slack.render_thread(CHANNEL, root[0].ts) if root else "(no root message)"
        raise AssertionError(f"timed out waiting for {what}:\n{picture}")

    def ephemerals(self) -> list[str]:
        return [e.text for e in self.world.slack.ephemerals(self.user)]

    def wait_ephemeral(self, contains: str, timeout: float = 15.0) -> str:
        found: list[str] = []

        def ready() -> bool:
            found[:] = [t for t in self.ephemerals() if contains in t]
            return bool(found)

        self.wait(ready, timeout, f"an ephemeral containing {contains!r}")
        return found[-1]


def _block_id(msg: Message, prefix: str) -> str:
    for block in msg.blocks:
        if block.get("type") == "actions" and str(block.get("block_id", "")).startswith(prefix):
            return str(block["block_id"])
    for block in msg.blocks:
        if str(block.get("block_id", "")).startswith(prefix):
            return str(block["block_id"])
    return ""


def has_button(msg: Message, action_id: str) -> bool:
    return any(
        e.get("action_id") == action_id for b in msg.blocks if b.get("type") == "actions" for e in b.get("elements", [])
    )


def cluster_writes(world: World) -> list[Any]:
    """The Kubernetes writes in ``world``'s request log, less the POSTs that only read
    (SelfSubjectAccessReview, and Milvus's RESTful reads through the service proxy: the database
    list, a collection's row count and its load state)."""
    reads = (
        "/proxy/v2/vectordb/databases/list",
        "/proxy/v2/vectordb/collections/get_stats",
        "/proxy/v2/vectordb/collections/get_load_state",
    )
    return [
        r
        for r in world.kube.requests
        if r.method in ("POST", "PUT", "PATCH", "DELETE")
        and "/selfsubject" not in r.path  # access and rules reviews write nothing
        and not any(read in r.path for read in reads)
    ]
