"""The upgrade's Slack thread as its record says it must be: output reconciled, never fired once.

The record (``Upgrade.root_wanted``, ``Upgrade.thread``) lists every message the thread must
show: the root, say-once notes, checkpoints, step errors and files, in order. ``reconcile``
brings Slack to that state and can run any number of times:

- a message the record wants but has no ``ts`` for is posted, then its ``ts`` recorded (so it
  is never posted twice, except after a crash between those two writes);
- a decided checkpoint or a closed error still showing its buttons is updated to its final form;
- an ended upgrade's root shows its final text (the record keeps a digest of what it shows).

Messages are posted in record order: when one cannot be posted (Slack down, rate limited beyond
the notifier's retries), the later ones wait, and ``reconcile`` answers "not complete" so that
the engine runs the upgrade again soon. The engine calls it on every advance, so a restarted
bot catches up.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from bot import views
from bot.notify import Notifier, RetryLater
from bot.procedure import checkpoints
from state.model import Post, Upgrade
from state.store import UpgradeStore

log = logging.getLogger(__name__)
Blocks = list[dict[str, Any]]
OUTPUT_RETRY_SECONDS = 3.0  # when Slack did not take a message, reconcile again after this (or its Retry-After)


class Thread:
    def __init__(self, store: UpgradeStore, notifier: Notifier, steps: Callable[[Upgrade], list[str]]) -> None:
        self.store = store
        self.notifier = notifier
        self.steps = steps
        self.retry_after = 0.0  # the longest Retry-After Slack asked for in the last reconcile
        self.failed = False  # whether Slack refused or failed a call in the last reconcile
        self.paced = 0.0  # the longest wait for a channel's pace (bot.notify.ChannelPace) in it

    def reconcile(self, upgrade: Upgrade) -> tuple[Upgrade, bool]:
        """Bring Slack to what ``upgrade`` (re-read from Redis) says; (latest record, all shown)."""
        self.retry_after, self.failed, self.paced = 0.0, False, 0.0
        latest = self.store.find(upgrade.id)
        if latest is None:
            return upgrade, True
        upgrade = latest
        if not upgrade.root_wanted and upgrade.root_ts is None:
            return upgrade, True
        if upgrade.root_ts is None:
            text, blocks = views.root(upgrade, self.steps(upgrade), time.time())
            ts = self._call(upgrade, "the root message", self.notifier.post, upgrade.channel, text, blocks)
            if ts is None:
                return upgrade, False
            upgrade, _ = self.store.update(upgrade.id, lambda u: setattr(u, "root_ts", ts))
        upgrade, complete = self._replies(upgrade)
        if upgrade.ended:  # the root shows the end at once, even while replies wait for their turn
            upgrade, shown = self._final_root(upgrade)
            complete = complete and shown
        return upgrade, complete

    def retry_in(self) -> float:
        """When to reconcile again after an incomplete one: Slack's wait if it failed, else the pace's."""
        return max(OUTPUT_RETRY_SECONDS, self.retry_after) if self.failed else max(0.05, self.paced)

    def _replies(self, upgrade: Upgrade) -> tuple[Upgrade, bool]:
        complete = True
        posts = list(upgrade.thread)
        sent: set[str] = set()  # posted in this loop, together with an earlier note
        for i, post in enumerate(posts):
            if post.key in sent:
                continue
            if post.ts is None:
                together = _notes_from(posts, i)
                ts, final = self._send(upgrade, post, together)
                if ts is None:
                    return upgrade, False  # keep the order: later messages wait for this one
                for key in dict.fromkeys([post.key, *(p.key for p in together)]):
                    upgrade, _ = self.store.update(upgrade.id, _posted(key, ts, final))
                    sent.add(key)
                if post.kind == "checkpoint":
                    self._audit(upgrade.id, "checkpoint_posted", checkpoint=post.data.get("checkpoint"), ts=ts)
            elif not post.final and self._is_final(upgrade, post):
                if self._finalize(upgrade, post):
                    upgrade, _ = self.store.update(upgrade.id, _posted(post.key, post.ts, True))
                else:
                    complete = False
        return upgrade, complete

    def owes(self, upgrade: Upgrade) -> bool:
        """Whether Slack still lacks something the record says the thread must show (no Slack call)."""
        if upgrade.root_wanted and upgrade.root_ts is None:
            return True
        if any(p.ts is None or (not p.final and self._is_final(upgrade, p)) for p in upgrade.thread):
            return True
        return (
            upgrade.ended and upgrade.root_ts is not None and upgrade.posted.get("root") != self._root_digest(upgrade)
        )

    def _root_digest(self, upgrade: Upgrade) -> str:
        """What the ended root shows (its elapsed time is fixed by ``ended_at``), as a short digest."""
        text, blocks = views.root(upgrade, self.steps(upgrade), time.time())
        return hashlib.sha256(json.dumps([text, blocks], sort_keys=True).encode()).hexdigest()[:16]

    def _final_root(self, upgrade: Upgrade) -> tuple[Upgrade, bool]:
        text, blocks = views.root(upgrade, self.steps(upgrade), time.time())
        shown = self._root_digest(upgrade)
        if upgrade.posted.get("root") == shown:
            return upgrade, True
        if not self._call(upgrade, "the root", self.notifier.update, upgrade.channel, upgrade.root_ts, text, blocks):
            return upgrade, False
        upgrade, _ = self.store.update(upgrade.id, lambda u: u.posted.__setitem__("root", shown))
        return upgrade, True

    # ------------------------------------------------------------------ one message
    def _is_final(self, upgrade: Upgrade, post: Post) -> bool:
        if post.kind == "checkpoint":
            cp = upgrade.checkpoint(post.data["checkpoint"])
            return cp is not None and cp.decision is not None
        if post.kind == "error":
            return "closed" in post.data
        return True

    def _render(self, upgrade: Upgrade, post: Post) -> tuple[str, Blocks, bool]:
        """(text, blocks, final) of ``post`` as it must look now."""
        if post.kind == "checkpoint":
            cp = upgrade.checkpoint(post.data["checkpoint"])
            assert cp is not None, post.key
            if cp.decision is not None:
                return (*checkpoints.decided_message(upgrade, cp, checkpoints.checkpoint_body(cp)), True)
            return (*checkpoints.message(upgrade, cp, checkpoints.checkpoint_body(cp)), False)
        if post.kind == "error":
            d = post.data
            if "closed" in d:
                closed = d["closed"]
                return (*views.error_closed(d["step"], d["reason"], closed["outcome"], closed.get("by")), True)
            return (*views.error(upgrade, d["step"], d["reason"], d.get("details", ""), d.get("block_id")), False)
        return (*views.note(post.text), True)

    def _send(self, upgrade: Upgrade, post: Post, together: list[Post]) -> tuple[str | None, bool]:
        if post.kind == "file":
            d = post.data
            done = self._call(
                upgrade,
                post.key,
                self.notifier.upload,
                upgrade.channel,
                upgrade.root_ts or "",
                d["filename"],
                d["content"],
                d["title"],
                post.text,
            )
            return ("file" if done else None), True
        if together:  # notes waiting in a row (the channel's pace, Slack down): one message
            text, blocks = views.note("\n\n".join(p.text for p in [post, *together]))
            final = True
        else:
            text, blocks, final = self._render(upgrade, post)
        ts = self._call(upgrade, post.key, self.notifier.post, upgrade.channel, text, blocks, upgrade.root_ts)
        return (str(ts) if ts else None), final

    def _finalize(self, upgrade: Upgrade, post: Post) -> bool:
        text, blocks, _ = self._render(upgrade, post)
        return bool(self._call(upgrade, post.key, self.notifier.update, upgrade.channel, post.ts, text, blocks))

    def _audit(self, upgrade_id: str, event: str, **data: Any) -> None:
        try:
            self.store.audit(upgrade_id, event, user="bot", **data)
        except Exception as err:
            log.warning("could not write the audit trail: %s", type(err).__name__, extra={"upgrade_id": upgrade_id})

    def _call(self, upgrade: Upgrade, what: str, call: Callable[..., Any], *args: Any) -> Any:
        """The call's answer (``True`` for None answers), or None when Slack did not take it."""
        try:
            answer = call(*args)
        except RetryLater as err:
            if err.paced:
                self.paced = max(self.paced, err.seconds)
                return None
            self.retry_after, self.failed = max(self.retry_after, err.seconds), True
            log.warning("Slack asks to wait %ss before %s", err.seconds, what, extra={"upgrade_id": upgrade.id})
            return None
        except Exception as err:  # Slack down, rate limited, refused: retried on the next reconcile
            self.failed = True
            log.warning("cannot show %s in Slack yet: %s", what, _describe(err), extra={"upgrade_id": upgrade.id})
            return None
        return True if answer is None else answer


NOTES_TOGETHER_CHARS = 2900  # a section block holds 3,000


def _notes_from(posts: list[Post], i: int) -> list[Post]:
    """The notes not yet shown that follow note ``posts[i]`` directly, as many as fit with it in one message."""
    if posts[i].kind != "note":
        return []
    out: list[Post] = []
    size = len(posts[i].text)
    for post in posts[i + 1 :]:
        size += len(post.text) + 2
        if post.kind != "note" or post.ts is not None or size > NOTES_TOGETHER_CHARS:
            break
        out.append(post)
    return out


def _posted(key: str, ts: str | None, final: bool) -> Callable[[Upgrade], None]:
    def change(u: Upgrade) -> None:
        post = u.post(key)
        if post is None:
            return
        post.ts, post.final = ts, post.final or final
        if post.kind == "checkpoint":
            cp = u.checkpoint(post.data["checkpoint"])
            if cp is not None:
                cp.ts = ts

    return change


def _describe(err: Exception) -> str:
    response = getattr(err, "response", None)
    if response is not None and hasattr(response, "get"):
        return f"{type(err).__name__}: {response.get('error')}"
    return f"{type(err).__name__}: {err}"
