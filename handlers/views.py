"""Block Kit views: pure functions of an upgrade record (no I/O, no clock reads but ``at``).

The root message (``root``) always says where the upgrade stands. Its ``text`` carries
exactly one of "succeeded", "failed", "aborted" once the upgrade has ended and none of them
before (step states use: pending, running, waiting, done, error, skipped).

A checkpoint never cuts what it destroys: its body goes into as many section blocks as it needs
(``chunks``, within Slack's 3,000 characters a section and 50 blocks a message); beyond one
message the first lines say how many more are in the attached file (``body_fits`` tells the
engine to attach it), and the confirm dialog gives counts, never a list.
"""

from __future__ import annotations

import json
import time
from typing import Any

from state.model import (
    ABORTED,
    BLOCKED,
    CHECKING,
    DONE,
    ERROR,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    SUCCEEDED,
    WAITING,
    Checkpoint,
    Upgrade,
)

Block = dict[str, Any]

STEP_TITLES = {
    "detect": "Find the installation",
    "preflight": "Preflight checks (read-only)",
    "flush": "Flush Pulsar into object storage",
    "backup": "Flush again and save the configuration",
    "uninstall": "Stop Milvus (helm uninstall)",
    "delete_pvcs": "Delete the Pulsar V2 volumes",
    "delete_cr": "Patch and delete the Milvus resource (Pulsar V2 goes with it)",
    "reinstall": "Reinstall with Pulsar V3",
    "wait": "Wait for every pod to be Ready",
    "verify": "Verify",
}
_ICON = {PENDING: "◻️", RUNNING: "⏳", WAITING: "✋", DONE: "✅", ERROR: "⚠️", SKIPPED: "⏭️"}
_CHECKPOINT_TITLES = {
    "flush_done": "Checkpoint: flush done. Stop Milvus and delete Pulsar V2?",
    "pvc_list": "Checkpoint: delete these Pulsar V2 volumes?",
    "reinstall": "Checkpoint: reinstall with Pulsar V3?",
    "restore": "Restore the previous release?",
}


def duration(seconds: float) -> str:
    seconds = int(max(0, seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def clock(ts: float | None) -> str:
    return time.strftime("%H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


MAX_SECTION_TEXT = 3000  # Slack: characters of a section's text
MAX_MESSAGE_BLOCKS = 50  # Slack: blocks of one message
# A checkpoint message is a title, its body and one more block (buttons, or who decided).
MAX_BODY_SECTIONS = MAX_MESSAGE_BLOCKS - 2


def _section(text: str) -> Block:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text[:MAX_SECTION_TEXT]}}


def chunks(text: str, limit: int = MAX_SECTION_TEXT) -> list[str]:
    """``text`` in pieces of at most ``limit`` characters, cut at line ends (an overlong line is cut too)."""
    pieces: list[str] = []
    current = ""
    for line in text.split("\n"):
        while len(line) > limit:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(line[:limit])
            line = line[limit:]
        if current and len(current) + 1 + len(line) > limit:
            pieces.append(current)
            current = line
        else:
            current = f"{current}\n{line}" if current else line
    if current or not pieces:
        pieces.append(current or " ")
    return pieces


def body_fits(body: str) -> bool:
    """Whether the whole ``body`` fits in one checkpoint message (else its list goes in a file)."""
    return len(chunks(body)) <= MAX_BODY_SECTIONS


def body_sections(body: str) -> list[Block]:
    """Every line of ``body`` in section blocks; beyond one message, the first lines and how many more
    are in the attached list (``body_fits`` tells the engine to attach it)."""
    pieces = chunks(body)
    if len(pieces) <= MAX_BODY_SECTIONS:
        return [_section(p) for p in pieces]
    shown = pieces[: MAX_BODY_SECTIONS - 1]
    lines_shown = sum(p.count("\n") + 1 for p in shown)
    more = body.count("\n") + 1 - lines_shown
    tail = f"… and {more} more lines in the attached list (the file in this thread names every one)."
    return [*(_section(p) for p in shown), _section(tail)]


def _context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _title(u: Upgrade) -> str:
    return f"Pulsar V2 → V3 upgrade of `{u.release}` (namespace `{u.namespace}`{', dry run' if u.dry_run else ''})"


def status_line(u: Upgrade) -> str:
    if u.state == SUCCEEDED:
        return "Upgrade succeeded" if not u.dry_run else "Dry run succeeded: nothing was changed"
    if u.state == FAILED:
        return "Upgrade failed"
    if u.state == ABORTED:
        return "Upgrade aborted; previous release restored" if u.facts.get("restore") else "Upgrade aborted"
    if u.state == CHECKING:
        return "Checking the installation"
    title = STEP_TITLES.get(u.step, u.step)
    if u.state == BLOCKED:
        return f"Stopped with an error at: {title}. Retry or abort in the thread"
    if u.open_checkpoint() is not None:
        return f"Waiting for approval: {title}"
    return f"Running: {title}"


def root(u: Upgrade, steps: list[str], at: float) -> tuple[str, list[Block]]:
    status = status_line(u)
    text = f"{_title(u)}: {status}"
    lines = []
    for name in steps:
        state = u.steps.get(name)
        status_word = state.status if state else PENDING
        summary = f": {state.summary}" if state and state.summary else ""
        lines.append(f"{_ICON.get(status_word, '')} {STEP_TITLES.get(name, name)}: _{status_word}_{summary}")
    facts = [f"Started by <@{u.started_by}> at {clock(u.started_at)}", f"elapsed {duration(u.elapsed(at))}"]
    if u.downtime_started_at:
        facts.append(f"downtime {duration(u.downtime(at))}")
    if u.mode:
        facts.append(f"mode {u.mode}")
    blocks = [
        _section(f"*{_title(u)}*\n*{status}*" + (f"\n{u.reason}" if u.ended and u.reason else "")),
        _section("\n".join(lines)),
        _context(" · ".join(facts)),
    ]
    return text, blocks


def _button(text: str, action_id: str, value: dict[str, Any], style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": action_id,
        "value": json.dumps(value, separators=(",", ":")),
    }
    if style:
        button["style"] = style
    return button


def _confirm(title: str, text: str, confirm: str) -> Block:
    return {
        "title": {"type": "plain_text", "text": title[:100]},
        "text": {"type": "mrkdwn", "text": text[:300]},
        "confirm": {"type": "plain_text", "text": confirm[:30]},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }


def _destroys(cp: Checkpoint) -> str:
    """What an approval of this checkpoint destroys, in one short sentence (for the confirm dialog)."""
    t = cp.target
    if cp.kind == "flush_done" and t.get("operator"):
        return "Writers are stopped. Writes after the flush are lost; the next step saves the Milvus manifest."
    if cp.kind == "flush_done":
        return (
            f"Writers are stopped. Milvus `{t.get('release')}` will be stopped (uninstalled) and its Pulsar V2 "
            "deleted: writes after the flush are lost."
        )
    if cp.kind == "pvc_list" and t.get("operator"):
        return (
            f"Patches and deletes the Milvus resource; the operator deletes {_counts(t)}. "
            "Every name is listed in the message."
        )
    if cp.kind == "pvc_list":
        return f"Permanently deletes {_counts(t)}. Every name is listed in the message."
    if cp.kind == "reinstall" and t.get("operator"):
        return f"Creates the Milvus resource `{t.get('release')}` again with Pulsar V3."
    if cp.kind == "reinstall":
        return f"Installs `{t.get('release')}` with chart {t.get('chart')} {t.get('version')} and Pulsar V3."
    if cp.kind == "restore" and t.get("operator"):
        return f"Re-creates the Milvus resource `{t.get('release')}` from its saved manifest (Pulsar V2)."
    if cp.kind == "restore":
        return f"Reinstalls `{t.get('release')}` with its original values (Pulsar V2)."
    return "Approve this step."


def _counts(t: dict[str, Any]) -> str:
    pvcs, pvs = t.get("pvcs", []), t.get("pvs", [])
    retained = sum(1 for v in pvs if v.get("reclaim") != "Delete")
    keep = f" ({retained} with reclaim policy Retain: their disks stay in the cloud)" if retained else ""
    return f"{len(pvcs)} PVCs and {len(pvs)} PVs{keep}"


def checkpoint_buttons(u: Upgrade, cp: Checkpoint) -> Block:
    value = {"u": u.id, "c": cp.id}
    approve_text = {"restore": "Restore previous release", "flush_done": "Writers stopped: approve"}.get(
        cp.kind, "Approve"
    )
    approve = _button(approve_text, "upgrade_approve", value, "danger")
    approve["confirm"] = _confirm("Are you sure?", _destroys(cp), "Yes, go ahead")
    abort_text = "Leave as is" if cp.kind == "restore" else "Abort"
    return {
        "type": "actions",
        "block_id": f"cp:{cp.id}",
        "elements": [approve, _button(abort_text, "upgrade_abort", value)],
    }


def checkpoint(u: Upgrade, cp: Checkpoint, body: str) -> tuple[str, list[Block]]:
    title = _CHECKPOINT_TITLES.get(cp.kind, cp.kind)
    text = f"{title}\n{body}"
    return text, [_section(f"*{title}*"), *body_sections(body), checkpoint_buttons(u, cp)]


def decided(u: Upgrade, cp: Checkpoint, body: str) -> tuple[str, list[Block]]:
    title = _CHECKPOINT_TITLES.get(cp.kind, cp.kind)
    verdict = {"approved": "✅ Approved", "rejected": "🛑 Abort chosen", "superseded": "↪️ Replaced"}.get(
        cp.decision or "", str(cp.decision)
    )
    who = f" by <@{cp.decided_by}>" if cp.decided_by else ""
    line = f"{verdict}{who} at {clock(cp.decided_at)}"
    return f"{title}\n{body}\n{line}", [_section(f"*{title}*"), *body_sections(body), _context(line)]


def error(
    u: Upgrade, step: str, reason: str, details: str = "", block_id: str | None = None
) -> tuple[str, list[Block]]:
    title = STEP_TITLES.get(step, step)
    body = f"⚠️ *{title}* stopped: {reason}"
    blocks = [_section(body)]
    if details:
        blocks.append(_section(f"```{details[:2900]}```"))
    value = {"u": u.id, "s": step}
    blocks.append(
        {
            "type": "actions",
            "block_id": block_id or f"err:{step}:{len(u.facts.get('retries', []))}",
            "elements": [
                _button("Retry", "upgrade_retry", value, "primary"),
                _button("Abort", "upgrade_abort", value),
            ],
        }
    )
    return f"{title} stopped: {reason}", blocks


def error_closed(step: str, reason: str, outcome: str, by: str | None) -> tuple[str, list[Block]]:
    title = STEP_TITLES.get(step, step)
    who = f" by <@{by}>" if by else ""
    line = f"{outcome}{who}"
    return f"{title} stopped: {reason}\n{line}", [_section(f"⚠️ *{title}* stopped: {reason}"), _context(line)]


def note(text: str) -> tuple[str, list[Block]]:
    return text, [_section(text)]
