"""Answers to the read-only commands (``status``, ``list``): pure functions of upgrade records.

Every answer names the upgrade ID, so a person can copy it into ``status``, ``cancel`` or ``audit``.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bot.procedure.checkpoints import TITLES
from bot.views import STEP_TITLES, clock, duration
from state.model import BLOCKED, CHECKING, Upgrade

# What `scan` found (bot/scan.py finds them; here so the Slack edge reads them without the cluster adapters).
NEEDS, DONE_ALREADY, NOT_APPLICABLE = "needs this upgrade", "already on Pulsar V3", "not applicable"


@dataclass(frozen=True)
class Finding:
    name: str
    namespace: str
    method: str  # "Helm" or "milvus-operator"
    chart: str  # e.g. "milvus-4.2.40"; "-" for a Milvus resource
    milvus: str  # the Milvus version it runs
    queue: str  # "Pulsar V2", "Pulsar V3", "external Pulsar", "Kafka", "RocksMQ", ...
    verdict: str
    why: str = ""


SCAN_SHOWN = 100  # installations listed in one answer

# The words of the state column (the root message says the same in a sentence).
RUNNING_WORD, WAITING_WORD, PAUSED_WORD, ERROR_WORD = (
    "running",
    "waiting for approval",
    "paused",
    "stopped with an error",
)


def state_word(u: Upgrade) -> str:
    """running / waiting for approval / paused / stopped with an error / succeeded / failed / aborted."""
    if u.ended:
        return u.state
    if u.state == BLOCKED:
        return ERROR_WORD
    if u.paused:
        return PAUSED_WORD
    if u.open_checkpoint() is not None:
        return WAITING_WORD
    return RUNNING_WORD


def _link(link: str | None) -> str:
    return f"<{link}|thread>" if link else "no thread yet"


def status_text(u: Upgrade, link: str | None, at: float) -> str:
    """One upgrade in full: state, step, who started it and when, who decided each checkpoint, its thread."""
    lines = [
        f"*Upgrade `{u.id}`*: `{u.release}` in namespace `{u.namespace}`"
        + (f" ({u.mode})" if u.mode else "")
        + (", dry run" if u.dry_run else ""),
        f"State: *{state_word(u)}*" + (f": {u.reason}" if u.ended and u.reason else ""),
    ]
    if not u.ended:
        step = "checking the installation" if u.state == CHECKING else STEP_TITLES.get(u.step, u.step)
        lines.append(f"Current step: {step}")
    took = "took" if u.ended else "running for"
    lines.append(f"Started by <@{u.started_by}> at {clock(u.started_at)} ({took} {duration(u.elapsed(at))})")
    for cp in u.checkpoints:
        title = TITLES.get(cp.kind, cp.kind)
        if cp.decided_by:
            lines.append(f"• {title}: {cp.decision} by <@{cp.decided_by}> at {clock(cp.decided_at)}")
        elif cp.decision:
            lines.append(f"• {title}: {cp.decision}")
        else:
            lines.append(f"• {title}: waiting since {clock(cp.created_at)}")
    lines.append(_link(link))
    return "\n".join(lines)


def list_line(u: Upgrade, link: str | None, at: float) -> str:
    """ID, release/namespace, state, started by, duration, thread link."""
    return (
        f"• `{u.id}` `{u.release}`/`{u.namespace}`: {state_word(u)}, started by <@{u.started_by}>, "
        f"{duration(u.elapsed(at))}, {_link(link)}"
    )


def list_text(active: list[tuple[Upgrade, str | None]], ended: list[tuple[Upgrade, str | None]], at: float) -> str:
    parts = [f"*Active upgrades* ({len(active)})"]
    parts += [list_line(u, link, at) for u, link in active] or ["• none"]
    parts.append(f"*Last {len(ended)} ended*" if ended else "*Ended*")
    parts += [list_line(u, link, at) for u, link in ended] or ["• none"]
    return "\n".join(parts)


def audit_lines(events: list[dict[str, Any]]) -> str:
    """The audit file: one JSON object per line, in time order."""
    ordered = sorted(events, key=lambda e: float(e.get("time") or 0))
    return "".join(json.dumps(e, sort_keys=True, default=str) + "\n" for e in ordered)


def audit_summary(u: Upgrade, events: list[dict[str, Any]]) -> str:
    """One paragraph: what the trail holds, who acted, what was changed, how it ended."""
    count = Counter(str(e.get("event")) for e in events)
    calls = Counter(str(e.get("event")) for e in events if e.get("event") in ("kubernetes", "helm", "milvus"))
    refused = sum(1 for e in events if e.get("event") in ("command", "click") and e.get("allowed") is False)
    people = sorted({str(e["user"]) for e in events if e.get("user") and e.get("user") != "bot"})
    span = ""
    if events:
        first, last = min(float(e["time"]) for e in events), max(float(e["time"]) for e in events)
        span = f" from {clock(first)} to {clock(last)}"
    mutating = ", ".join(f"{n} {kind}" for kind, n in sorted(calls.items())) or "none"
    return (
        f"Audit trail of upgrade `{u.id}` (`{u.release}` in `{u.namespace}`): {len(events)} events{span}. "
        f"{count['command']} commands and {count['click']} clicks ({refused} refused) by "
        f"{', '.join(f'<@{p}>' for p in people) or 'nobody'}; {count['step_started']} step starts, "
        f"{count['step_error']} step errors; checkpoints: {count['checkpoint_posted']} posted, "
        f"{count['checkpoint_decided']} decided, {count['checkpoint_expired']} expired; mutating calls: {mutating}. "
        f"State: {state_word(u)}."
    )


def scan_text(
    findings: list[Finding], problems: list[str], namespace: str | None, namespaces: int, command: str
) -> str:
    """The answer to ``scan``: a count by verdict, then one line per installation."""
    title = f"*Scan* of `{namespace}`" if namespace else f"*Scan* of {namespaces} namespaces"
    verdicts = Counter(f.verdict for f in findings)
    lines = [
        f"{title}: {len(findings)} Milvus installations; {verdicts[NEEDS]} need this upgrade, "
        f"{verdicts[DONE_ALREADY]} already on Pulsar V3, {verdicts[NOT_APPLICABLE]} not applicable."
    ]
    for f in findings[:SCAN_SHOWN]:
        line = f"• `{f.name}` in `{f.namespace}`: {f.method}, {f.chart if f.chart != '-' else 'Milvus resource'}, "
        line += f"Milvus {f.milvus}, {f.queue}: *{f.verdict}*"
        if f.why:
            line += f" ({f.why})"
        if f.verdict == NEEDS:
            mode = " --mode operator" if f.method == "milvus-operator" else ""
            line += f". Start it with `{command} start {f.name} --namespace {f.namespace}{mode}`"
        lines.append(line)
    if len(findings) > SCAN_SHOWN:
        lines.append(f"…and {len(findings) - SCAN_SHOWN} more; narrow it with `--namespace`.")
    if problems:
        lines.append("Could not read: " + "; ".join(problems))
    return "\n".join(lines)
