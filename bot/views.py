"""Block Kit views: pure functions of an upgrade record (no I/O, no clock reads but ``at``).

The root message (``root``) always says where the upgrade stands. Its ``text`` carries
exactly one of "succeeded", "failed", "aborted" once the upgrade has ended and none of them
before (step states use: pending, running, waiting, done, error, skipped). Step errors and
notes are laid out here too; checkpoints (their words, what they destroy, their buttons) are
in ``bot.procedure.checkpoints``, which uses the block helpers below.

Long texts are never cut silently: ``body_sections`` puts a body into as many section blocks as
it needs (``chunks``, within Slack's 3,000 characters a section and 50 blocks a message); beyond
one message the first lines say how many more are in the attached file (``body_fits`` tells the
caller to attach it).
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


def section(text: str) -> Block:
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
        return [section(p) for p in pieces]
    shown = pieces[: MAX_BODY_SECTIONS - 1]
    lines_shown = sum(p.count("\n") + 1 for p in shown)
    more = body.count("\n") + 1 - lines_shown
    tail = f"… and {more} more lines in the attached list (the file in this thread names every one)."
    return [*(section(p) for p in shown), section(tail)]


def context(text: str) -> Block:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text[:3000]}]}


def _title(u: Upgrade) -> str:
    return f"Pulsar V2 → V3 upgrade of `{u.release}` (namespace `{u.namespace}`{', dry run' if u.dry_run else ''})"


def status_line(u: Upgrade) -> str:
    if u.state == SUCCEEDED:
        return "Upgrade succeeded" if not u.dry_run else "Dry run succeeded: nothing was changed"
    if u.state == FAILED:
        return "Upgrade failed"
    if u.state == ABORTED:
        return "Upgrade aborted; previous release restored" if u.facts.restore else "Upgrade aborted"
    if u.state == CHECKING:
        return "Checking the installation"
    title = STEP_TITLES.get(u.step, u.step)
    if u.state == BLOCKED:
        return f"Stopped with an error at: {title}. Retry or abort in the thread"
    if u.paused:
        return f"Upgrade paused: the checkpoint of {title} expired. Ask again in the thread"
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
    facts = [
        f"ID `{u.id}`",
        f"Started by <@{u.started_by}> at {clock(u.started_at)}",
        f"elapsed {duration(u.elapsed(at))}",
    ]
    if u.downtime_started_at:
        facts.append(f"downtime {duration(u.downtime(at))}")
    if u.mode:
        facts.append(f"mode {u.mode}")
    blocks = [
        section(f"*{_title(u)}*\n*{status}*" + (f"\n{u.reason}" if u.ended and u.reason else "")),
        section("\n".join(lines)),
        context(" · ".join(facts)),
    ]
    return text, blocks


def button(text: str, action_id: str, value: dict[str, Any], style: str | None = None) -> Block:
    button: Block = {
        "type": "button",
        "text": {"type": "plain_text", "text": text[:75]},
        "action_id": action_id,
        "value": json.dumps(value, separators=(",", ":")),
    }
    if style:
        button["style"] = style
    return button


def confirm(title: str, text: str, confirm: str) -> Block:
    return {
        "title": {"type": "plain_text", "text": title[:100]},
        "text": {"type": "mrkdwn", "text": text[:300]},
        "confirm": {"type": "plain_text", "text": confirm[:30]},
        "deny": {"type": "plain_text", "text": "Cancel"},
        "style": "danger",
    }


def error(
    u: Upgrade, step: str, reason: str, details: str = "", block_id: str | None = None
) -> tuple[str, list[Block]]:
    title = STEP_TITLES.get(step, step)
    body = f"⚠️ *{title}* stopped: {reason}"
    blocks = [section(body)]
    if details:
        blocks.append(section(f"```{details[:2900]}```"))
    value = {"u": u.id, "s": step}
    blocks.append(
        {
            "type": "actions",
            "block_id": block_id or f"err:{step}:{len(u.facts.retries)}",
            "elements": [
                button("Retry", "upgrade_retry", value, "primary"),
                button("Abort", "upgrade_abort", value),
            ],
        }
    )
    return f"{title} stopped: {reason}", blocks


def error_closed(step: str, reason: str, outcome: str, by: str | None) -> tuple[str, list[Block]]:
    title = STEP_TITLES.get(step, step)
    who = f" by <@{by}>" if by else ""
    line = f"{outcome}{who}"
    return f"{title} stopped: {reason}\n{line}", [section(f"⚠️ *{title}* stopped: {reason}"), context(line)]


def note(text: str) -> tuple[str, list[Block]]:
    return text, [section(text)]


# ---------------------------------------------------------------- facts in words (no I/O)


def flush_text(summary: dict[str, Any]) -> str:
    lines = []
    for db, info in sorted(summary.get("databases", {}).items()):
        lines.append(
            f"• `{db}`: {len(info['collections'])} collections, {info['segments']} segments flushed "
            f"({info['seconds']}s)"
        )
    return "\n".join(lines) or "• no databases"


def volumes_text(pvcs: list[dict[str, Any]], pvs: list[dict[str, Any]]) -> str:
    if not pvcs:
        return "• no Pulsar V2 PVCs"
    lines = [f"• PVC `{p['name']}`: {p['size']}, storage class `{p['storage_class']}`" for p in pvcs]
    lines += [f"• PV `{v['name']}`: reclaim policy {v['reclaim']}" for v in pvs]
    retained = [v["name"] for v in pvs if v["reclaim"] != "Delete"]
    if retained:
        lines.append(
            f"PVs with reclaim policy Retain keep their disks after the PVC goes; the bot deletes the PV objects "
            f"({', '.join(retained)}) but the storage behind them may need deleting in your cloud console."
        )
    return "\n".join(lines)
