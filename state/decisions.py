"""Recording a person's decision on a checkpoint (pure functions of the upgrade record).

Used inside ``UpgradeStore.update`` so that the check ("is this checkpoint still open? may
this person decide it?") and the write happen in one atomic step: two people clicking at once
cannot both decide, and a stale button (an older checkpoint, an ended upgrade) changes nothing.
Each function returns ``None`` when the decision was recorded, or the explanation to show.
"""

from __future__ import annotations

import time
from collections.abc import Collection

from state.model import (
    ACTIVE,
    APPROVED,
    BLOCKED,
    ERROR,
    EXPIRED,
    REJECTED,
    RUNNING,
    SUPERSEDED,
    Checkpoint,
    Upgrade,
    now,
)


def _who(user: str) -> str:
    return f"<@{user}>"


def _at(ts: float | None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts)) if ts else "an earlier time"


def _already(cp: Checkpoint) -> str:
    """Why a click on a checkpoint that is no longer open changes nothing."""
    if cp.decision == EXPIRED:
        if cp.reasked_by:
            return (
                f"This checkpoint expired at {_at(cp.decided_at)}; {_who(cp.reasked_by)} asked again at "
                f"{_at(cp.reasked_at)}: use the newer checkpoint in the thread."
            )
        return f"This checkpoint expired at {_at(cp.decided_at)} without a decision: use *Ask again* on it."
    if cp.decision == SUPERSEDED:
        return "This checkpoint was superseded by a newer one: use the latest checkpoint in the thread."
    word = {APPROVED: "approved", REJECTED: "aborted"}.get(cp.decision or "", str(cp.decision))
    by = f" by {_who(cp.decided_by)}" if cp.decided_by else ""
    return f"This checkpoint was already decided{by} at {_at(cp.decided_at)} ({word})."


def decide(
    upgrade: Upgrade, checkpoint_id: str, user: str, approve: bool, second_approver_for: Collection[str] = ()
) -> str | None:
    """Record ``user``'s decision; the starter may not approve a checkpoint whose kind is in
    ``second_approver_for`` (the destructive kinds when a second approver is required)."""
    cp = upgrade.checkpoint(checkpoint_id)
    if cp is None:
        return "That checkpoint no longer exists."
    if not cp.open:
        return _already(cp)
    if upgrade.ended and cp.kind != "restore":
        return f"This upgrade has already {upgrade.state}."
    if approve and cp.kind in second_approver_for and user == upgrade.started_by:
        return "You started this upgrade, so another operator must approve its destructive steps."
    cp.decision = APPROVED if approve else REJECTED
    cp.decided_by = user
    cp.decided_at = now()
    return None


def request_retry(upgrade: Upgrade, step: str, user: str) -> str | None:
    if upgrade.ended:
        return f"This upgrade has already {upgrade.state}."
    state = upgrade.steps.get(step)
    if upgrade.state != BLOCKED or state is None or state.status != ERROR or upgrade.step != step:
        return "There is nothing to retry: that step is no longer in error."
    state.status = RUNNING
    state.error = None
    upgrade.state = ACTIVE
    upgrade.facts.retries.append({"step": step, "by": user, "at": now()})
    return None


def request_abort(upgrade: Upgrade, user: str) -> str | None:
    """Abort from an error message (checkpoint aborts go through ``decide``)."""
    if upgrade.ended:
        return f"This upgrade has already {upgrade.state}."
    if upgrade.state != BLOCKED:
        return "The upgrade is not stopped on an error; use Abort on its open checkpoint."
    upgrade.facts.abort_requested = {"by": user, "at": now()}
    return None


def request_cancel(upgrade: Upgrade, user: str) -> str | None:
    """``cancel``: at a checkpoint it is Abort; otherwise the engine stops before the next step (a
    destructive step under way ends first). Stopped on an error, it aborts at once."""
    if upgrade.ended:
        return f"Upgrade `{upgrade.id}` has already {upgrade.state}; there is nothing to cancel."
    if upgrade.facts.abort_requested:
        by = upgrade.facts.abort_requested.get("by")
        return f"Upgrade `{upgrade.id}` is already being cancelled (asked by {_who(str(by))})."
    cp = upgrade.open_checkpoint()
    if cp is not None and cp.kind != "restore":
        cp.decision, cp.decided_by, cp.decided_at = REJECTED, user, now()
    upgrade.facts.abort_requested = {"by": user, "at": now(), "via": "cancel"}
    return None


def reask(upgrade: Upgrade, checkpoint_id: str, user: str) -> str | None:
    """ "Ask again" on an expired checkpoint: unpause; the step asks afresh from the world as it is."""
    cp = upgrade.checkpoint(checkpoint_id)
    if cp is None:
        return "That checkpoint no longer exists."
    if upgrade.ended:
        return f"This upgrade has already {upgrade.state}."
    if cp.decision != EXPIRED or cp.reasked_by:
        return _already(cp) if not cp.open else "This checkpoint has not expired: approve or abort it."
    cp.reasked_by, cp.reasked_at = user, now()
    upgrade.paused = False
    post = upgrade.post(f"cp:{cp.id}")
    if post is not None:
        post.final = False  # its message changes again: "asked again by …", the button gone
    return None
