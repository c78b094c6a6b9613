"""The audit trail, against the running bot through signed Slack requests.

A whole Helm upgrade, with a refused click and a refused command on the way, then ``audit ID``:
the thread gets a JSON-lines file (one object per line, in time order) and a one-paragraph
summary; the file names every command and click (allowed or refused, with the reason), every
step start and outcome, every checkpoint posted and decided, and every mutating call: each PVC
and each PV DELETE on its own line with its object, each helm command with its verb, each Milvus
flush. The per-upgrade stream expires BOT_AUDIT_RETENTION_DAYS after the end; the global stream
has the events too. ``audit`` by a non-operator is refused.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import redis

from sandbox.botproc import BotProcess
from sandbox.world import CHANNEL, STRANGER, World
from state import keys
from tests.conftest import person
from tests.scenario import Person

ID = re.compile(r"\b[0-9]{8}-[0-9]{6}-[0-9a-f]{6}\b")


def audit_file(world: World, alice: Person, upgrade_id: str) -> list[dict[str, Any]]:
    """The trail ``audit ID`` attached to the upgrade's thread, parsed line by line."""
    alice.type(f"audit {upgrade_id}")
    alice.wait_ephemeral(f"Attached the audit trail of upgrade `{upgrade_id}`", timeout=30)
    root = alice.root()
    files = [f for f in world.slack.files() if f.name == f"audit-{upgrade_id}.jsonl" and f.thread_ts == root.ts]
    assert len(files) == 1 and files[0].shared and files[0].content is not None
    text = files[0].content.decode()
    assert text.endswith("\n")
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)  # time order
    assert all(e["upgrade"] == upgrade_id for e in events)
    assert f"Audit trail of upgrade `{upgrade_id}`" in (files[0].initial_comment or "")
    return events


def test_the_audit_trail_names_every_command_click_step_checkpoint_and_mutating_call(
    world: World, make_bot: Callable[..., BotProcess], redis_url: str
) -> None:
    bot = make_bot(world, BOT_AUDIT_RETENTION_DAYS="2")
    alice = person(world, bot)
    upgrade_id = ID.search(alice.type("start my-release").text).group(0)  # type: ignore[union-attr]
    cp = alice.checkpoint("flush_done")
    mallory = alice.as_user(STRANGER)
    mallory.click(cp, "upgrade_approve")
    mallory.wait_ephemeral("Nothing changed")
    mallory.type(f"audit {upgrade_id}")
    mallory.wait_ephemeral("Not allowed")
    alice.approve("flush_done")
    pvc_cp = alice.checkpoint("pvc_list")
    approved = sorted(p.split("/", 1)[1] for p in world.pvcs("default", "app=pulsar,release=my-release"))
    alice.click(pvc_cp, "upgrade_approve")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"

    events = audit_file(world, alice, upgrade_id)
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for e in events:
        by_kind.setdefault(e["event"], []).append(e)

    commands = by_kind["command"]
    assert commands[0]["user"] == "U0ALICE" and commands[0]["text"] == "start my-release" and commands[0]["allowed"]
    assert any(c["user"] == STRANGER and c["allowed"] is False and c["text"].startswith("audit") for c in commands)
    clicks = by_kind["click"]
    refused = [c for c in clicks if c["allowed"] is False]
    assert refused and refused[0]["user"] == STRANGER and refused[0]["reason"]
    assert sum(1 for c in clicks if c["allowed"] and c["action"] == "upgrade_approve") == 3
    assert {d["checkpoint"] for d in by_kind["checkpoint_decided"]} == {"flush_done-1", "pvc_list-1", "reinstall-1"}
    assert {p["checkpoint"] for p in by_kind["checkpoint_posted"]} >= {"flush_done-1", "pvc_list-1", "reinstall-1"}
    started = [s["step"] for s in by_kind["step_started"]]
    for step in ("detect", "preflight", "flush", "backup", "uninstall", "delete_pvcs", "reinstall", "wait", "verify"):
        assert step in started, step
    assert [e["state"] for e in by_kind["upgrade_ended"]] == ["succeeded"]

    deletes = [e for e in by_kind["kubernetes"] if e["verb"] == "delete"]
    pvc_deletes = sorted(
        e["object"].split()[1].split("/")[1] for e in deletes if e["object"].startswith("persistentvolumeclaim ")
    )
    assert pvc_deletes == approved  # each approved PVC once, on its own line
    pv_deletes = [e for e in deletes if e["object"].startswith("persistentvolume ")]
    # This world's PVs have reclaim policy Delete: Kubernetes removes them, the bot deletes none itself.
    assert all(e["result"] in ("deleted", "already gone") for e in pv_deletes)
    assert any(e["object"] == "secret default/my-release-pulsar-upgrade-backup" for e in by_kind["kubernetes"])
    verbs = [e["verb"] for e in by_kind["helm"]]
    assert "uninstall" in verbs and "install" in verbs
    # No shared repository state is written (two upgrades at once would race on it): the chart
    # comes with --repo on the install itself.
    assert not [v for v in verbs if v.startswith("repo")]
    assert all("--repo" in e["command"] for e in by_kind["helm"] if e["verb"] == "install")
    assert all("<values file>" in e["command"] or " -f " not in e["command"] for e in by_kind["helm"])
    assert by_kind["milvus"] and all(e["verb"] == "flush" for e in by_kind["milvus"])

    client = redis.Redis.from_url(redis_url)
    ttl = client.ttl(keys.audit(upgrade_id))
    assert 0 < ttl <= 2 * 86400  # kept BOT_AUDIT_RETENTION_DAYS after the end
    everything: Any = client.xrange(keys.AUDIT_ALL)
    assert sum(1 for _, f in everything if f[b"upgrade"] == upgrade_id.encode()) == len(events)
    summary = [m for m in alice.thread() if m.text.startswith("Audit trail")]
    assert not summary or "State: succeeded" in summary[0].text
    assert world.slack.messages(CHANNEL)  # the thread is where it was
