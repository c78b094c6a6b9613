"""Checkpoints in one room: their kinds, their words, what an approval destroys, their messages.

A step asks for a checkpoint with ``outcome.Ask(kind, target)``; everything shown about it comes
from here, as pure functions of the recorded ``Checkpoint`` (no I/O):

- ``DESTRUCTIVE``: the kinds whose approval destroys something (a second approver is required
  for them when BOT_REQUIRE_SECOND_APPROVER is on);
- ``checkpoint_body``: what an approval will do, naming everything it destroys;
- ``destroys``: the same in one sentence with counts, for the confirm dialog (never a cut list);
- ``message`` / ``decided_message``: the Block Kit of the open and the decided checkpoint (an
  expired one keeps an "Ask again" button, ``upgrade_reask``, until someone clicks it);
- ``want``: record the checkpoint's message (and, when its list is too long for one message,
  the attached file with every name) for the thread reconciler to post.
"""

from __future__ import annotations

from typing import Any

from bot.views import (
    Block,
    body_fits,
    body_sections,
    button,
    clock,
    confirm,
    context,
    flush_text,
    section,
    volumes_text,
)
from state.model import EXPIRED, Checkpoint, Post, Upgrade

DESTRUCTIVE = frozenset({"flush_done", "pvc_list", "reinstall", "restore"})
TITLES = {
    "flush_done": "Checkpoint: flush done. Stop Milvus and delete Pulsar V2?",
    "pvc_list": "Checkpoint: delete these Pulsar V2 volumes?",
    "reinstall": "Checkpoint: reinstall with Pulsar V3?",
    "restore": "Restore the previous release?",
}


def checkpoint_body(cp: Checkpoint) -> str:
    t = cp.target
    note = f"*{t['note']}*\n" if t.get("note") else ""
    if cp.kind == "flush_done" and t.get("operator"):
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more and save the Milvus "
            "resource's manifest; deleting the resource (and Pulsar V2 with it) waits for the next checkpoint."
        )
    if cp.kind == "flush_done":
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more, save the values "
            "and *stop Milvus (helm uninstall) and delete Pulsar V2*."
        )
    if cp.kind == "pvc_list" and t.get("operator"):
        return (
            f"{note}milvus-operator will delete these Pulsar PVCs (labels `app=pulsar,release={t['release']}-pulsar`) "
            f"in namespace `{t['namespace']}` when the Milvus resource goes; I then delete the PVs left:\n"
            f"{volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Approving patches the resource (etcd and MinIO: Retain, PVCs kept; Pulsar: Delete with its PVCs) and "
            "deletes it. Before that I list the PVCs again; if the list grew, nothing is changed and I ask again."
        )
    if cp.kind == "pvc_list":
        return (
            f"{note}These PVCs (labels `app=pulsar`) in namespace `{t['namespace']}` and the PVs bound to them "
            f"will be deleted:\n{volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Before deleting, I list them again; if the list differs, nothing is deleted and I ask again."
        )
    if cp.kind == "reinstall" and t.get("operator"):
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Create the Milvus resource `{t['release']}` again from the saved manifest (server-set fields "
            f"removed), with Pulsar V3. Manifest diff:\n```{diff}```"
        )
    if cp.kind == "restore" and t.get("operator"):
        return (
            f"The Milvus resource `{t['release']}` is deleted. Restore re-creates it from its saved manifest as it was "
            "(Pulsar V2, a fresh Pulsar; the flushed data is in object storage)."
        )
    if cp.kind == "reinstall":
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Install `{t['release']}` with chart `{t.get('chart')}` *{t.get('version')}* "
            f"(Milvus {t.get('app_version')}); before: chart {t.get('previous_version')} "
            f"(Milvus {t.get('previous_app_version')}).\nValues diff:\n```{diff}```"
        )
    if cp.kind == "restore":
        return (
            f"`{t['release']}` is uninstalled and its {t.get('pvcs')} Pulsar V2 PVCs still exist. "
            f"Restore installs it again with its saved original values (chart {t.get('chart_version')}, Pulsar V2)."
        )
    return note


def destroys(cp: Checkpoint) -> str:
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
    approve = button(approve_text, "upgrade_approve", value, "danger")
    approve["confirm"] = confirm("Are you sure?", destroys(cp), "Yes, go ahead")
    abort_text = "Leave as is" if cp.kind == "restore" else "Abort"
    return {
        "type": "actions",
        "block_id": f"cp:{cp.id}",
        "elements": [approve, button(abort_text, "upgrade_abort", value)],
    }


def message(u: Upgrade, cp: Checkpoint, body: str) -> tuple[str, list[Block]]:
    title = TITLES.get(cp.kind, cp.kind)
    text = f"{title}\n{body}"
    return text, [section(f"*{title}*"), *body_sections(body), checkpoint_buttons(u, cp)]


def decided_message(u: Upgrade, cp: Checkpoint, body: str) -> tuple[str, list[Block]]:
    title = TITLES.get(cp.kind, cp.kind)
    verdict = {"approved": "✅ Approved", "rejected": "🛑 Abort chosen", "superseded": "↪️ Replaced"}.get(
        cp.decision or "", str(cp.decision)
    )
    who = f" by <@{cp.decided_by}>" if cp.decided_by else ""
    line = f"{verdict}{who} at {clock(cp.decided_at)}"
    if cp.decision == EXPIRED:
        line = f"⌛ Expired at {clock(cp.decided_at)} without a decision: nothing was approved; the upgrade is paused."
        if cp.reasked_by:
            line += f" Asked again by <@{cp.reasked_by}> at {clock(cp.reasked_at)}."
    blocks = [section(f"*{title}*"), *body_sections(body), context(line)]
    if cp.decision == EXPIRED and not cp.reasked_by:
        value = {"u": u.id, "c": cp.id}
        blocks.append(
            {
                "type": "actions",
                "block_id": f"reask:{cp.id}",
                "elements": [button("Ask again", "upgrade_reask", value, "primary")],
            }
        )
    return f"{title}\n{body}\n{line}", blocks


def want(u: Upgrade, cp: Checkpoint) -> None:
    """Record the checkpoint's message; a list too long for one message goes before it as a file."""
    body = checkpoint_body(cp)
    if not body_fits(body):
        data = {"filename": f"{cp.id}.txt", "content": body, "title": f"Checkpoint {cp.id}: the full list"}
        u.want(Post(key=f"file:{cp.id}", kind="file", text=f"The full list of checkpoint `{cp.id}`.", data=data))
    u.want(Post(key=f"cp:{cp.id}", kind="checkpoint", data={"checkpoint": cp.id}))
