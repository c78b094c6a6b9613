"""Recording a person's decision on a checkpoint (pure functions of the upgrade record).

Used inside ``UpgradeStore.update`` so that the check ("is this checkpoint still open? may
this person decide it?") and the write happen in one atomic step: two people clicking at once
cannot both decide, and a stale button (an older checkpoint, an ended upgrade) changes nothing.
Each function returns ``None`` when the decision was recorded, or the explanation to show.
"""

from __future__ import annotations

from collections.abc import Collection

from state.model import (
    ACTIVE,
    APPROVED,
    BLOCKED,
    ERROR,
    REJECTED,
    RUNNING,
    Upgrade,
    now,
)


def _who(user: str) -> str:
    return f"<@{user}>"


def decide(
    upgrade: Upgrade, checkpoint_id: str, user: str, approve: bool, second_approver_for: Collection[str] = ()
) -> str | None:
    """Record ``user``'s decision; the starter may not approve a checkpoint whose kind is in
    ``second_approver_for`` (the destructive kinds when a second approver is required)."""
    cp = upgrade.checkpoint(checkpoint_id)
    if cp is None:
        return "That checkpoint no longer exists."
    if not cp.open:
        by = f" by {_who(cp.decided_by)}" if cp.decided_by else ""
        return f"This checkpoint was already {cp.decision}{by}."
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
