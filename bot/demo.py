"""``milvus-pulsar-upgrade-bot demo``: the offline rehearsal.

Starts a private redis-server, the sandbox world (Kubernetes API + controllers, Milvus and
Slack simulators, the pinned real helm installing the real Milvus chart) and the real bot
(``serve``, as a subprocess), then plays an on-call engineer in Slack: types the slash
command, prints the thread as it grows, clicks Approve at each checkpoint (or asks on the
terminal with ``--interactive``), and prints the cluster before and after.
Everything it started is stopped at the end, whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Callable

from bot.notify import PACE_WINDOW
from sandbox.botproc import BotProcess
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack import SlackClient
from sandbox.slack.blocks import render_blocks
from sandbox.slack.model import Message
from sandbox.world import CHANNEL, OPERATOR, SIGNING_SECRET, UNSET, World

NAMESPACE = "default"
RELEASES = {"helm": "my-release", "operator": "my-milvus"}
OUTCOMES = ("succeeded", "failed", "aborted")


def _say(text: str = "") -> None:
    print(text, flush=True)


def _groups(mode: str, release: str) -> list[tuple[str, str]]:
    if mode == "operator":
        return [
            ("Pulsar PVCs (app=pulsar, release=<name>-pulsar)", f"app=pulsar,release={release}-pulsar"),
            ("etcd PVCs", f"app.kubernetes.io/instance={release}-etcd"),
            ("MinIO PVCs", f"app=minio,release={release}-minio"),
        ]
    return [
        ("Pulsar V2 PVCs (app=pulsar)", f"app=pulsar,release={release}"),
        ("Pulsar V3 PVCs (app=pulsarv3)", f"app=pulsarv3,release={release}"),
        ("etcd PVCs", f"app.kubernetes.io/instance={release},app.kubernetes.io/name=etcd"),
    ]


def cluster_picture(world: World, title: str, mode: str) -> None:
    release = RELEASES[mode]
    _say(f"\n=== {title} ===")
    pods = world.pods(NAMESPACE)
    mine = [p for p in pods if release in p["metadata"]["name"]]
    ready = sum(
        1
        for p in mine
        if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions", []))
    )
    _say(f"pods of {NAMESPACE}/{release}: {len(mine)} ({ready} Ready)")
    images = sorted({c["image"] for p in mine for c in p["spec"]["containers"] if "pulsar" in c["image"]})
    _say(f"Pulsar images: {', '.join(images) or 'none'}")
    if mode == "operator":
        cr = world.store.try_get("milvuses.milvus.io", NAMESPACE, release)
        chart = ((cr or {}).get("spec", {}).get("dependencies", {}).get("pulsar", {}).get("inCluster") or {}).get(
            "chartVersion"
        )
        _say(f"Milvus resource: {'absent' if cr is None else (cr.get('status') or {}).get('status')}, pulsar {chart}")
    for group, selector in _groups(mode, release):
        names = world.pvcs(NAMESPACE, selector)
        _say(f"{group}: {len(names)}")
        for name in names:
            _say(f"    {name}")
    others = world.pvcs(None, "app=pulsar")
    others = [n for n in others if not n.startswith(f"{NAMESPACE}/{release}-")]
    _say(f"other releases' Pulsar V2 PVCs (must not change): {len(others)}")
    _say(f"PersistentVolumes in the cluster: {len(world.pvs())}")


class ThreadPrinter:
    """Prints new thread messages and changes of the root message's status line."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.seen: dict[str, int] = {}
        self.root_status = ""

    def root(self) -> Message | None:
        messages = self.world.slack.messages(CHANNEL)
        return messages[0] if messages else None

    def poll(self) -> Message | None:
        root = self.root()
        if root is None:
            return None
        status = root.text.split(": ", 1)[-1]
        if status != self.root_status:
            self.root_status = status
            _say(f"\n[root message] {root.text}")
        for msg in self.world.slack.thread(CHANNEL, root.ts)[1:]:
            if self.seen.get(msg.ts) == msg.edit_count:
                continue
            tag = "updated" if msg.ts in self.seen else "new"
            self.seen[msg.ts] = msg.edit_count
            body = render_blocks(msg.blocks) if msg.blocks else msg.text.splitlines()
            body += [f"[file {f['name']}: {f['title']}]" for f in msg.files]
            _say(f"\n  └ [{tag}] " + "\n    ".join(body))
        return root


def open_checkpoint(world: World, root: Message) -> Message | None:
    for msg in reversed(world.slack.thread(CHANNEL, root.ts)[1:]):
        for block in msg.blocks:
            if block.get("type") == "actions":
                ids = {e.get("action_id") for e in block.get("elements", [])}
                if "upgrade_approve" in ids or "upgrade_retry" in ids:
                    return msg
    return None


def _choose(msg: Message, interactive: bool) -> str:
    ids = {e.get("action_id") for b in msg.blocks if b.get("type") == "actions" for e in b.get("elements", [])}
    default = "upgrade_approve" if "upgrade_approve" in ids else "upgrade_retry"
    if not interactive:
        return default
    answer = input(f"\n>>> Click which button? [{'a'}]pprove/retry, a[b]ort (default {default}): ").strip().lower()
    return "upgrade_abort" if answer in ("b", "abort") else default


def play(world: World, client: SlackClient, interactive: bool, release: str, timeout: float = 300.0) -> str:
    printer = ThreadPrinter(world)
    _say(f"\n>>> @alice types: /milvus-pulsar-upgrade start {release}")
    resp = client.slash(OPERATOR, CHANNEL, "/milvus-pulsar-upgrade", f"start {release}")
    _say(f"    (bot answered HTTP {resp.status_code}: {resp.text[:200]})")
    clicked: set[tuple[str, int]] = set()
    shown: set[str] = set()
    deadline = time.monotonic() + timeout
    ended: float | None = None
    while time.monotonic() < deadline:
        root = printer.poll()
        if root is not None and any(word in root.text for word in OUTCOMES):
            # The root shows the end at once; the thread's last notes may still wait for the
            # channel's pace (bot/notify.py): print them too, up to one pace window more.
            ended = ended or time.monotonic()
            done = "succeeded" not in root.text or any("🎉" in m.text for m in world.slack.thread(CHANNEL, root.ts))
            if done or time.monotonic() > ended + PACE_WINDOW + 5:
                printer.poll()
                return root.text
        cp = open_checkpoint(world, root) if root is not None else None
        if cp is not None and (cp.ts, cp.edit_count) not in clicked:
            clicked.add((cp.ts, cp.edit_count))
            action = _choose(cp, interactive)
            _say(f"\n>>> @alice clicks {action}")
            client.click(OPERATOR, CHANNEL, cp.ts, action)
            if client.last_confirm:
                _say(f"    (confirm dialog: {client.last_confirm.get('text', '')})")
        for eph in world.slack.ephemerals(OPERATOR):
            if eph.text not in shown:
                shown.add(eph.text)
                _say(f"\n  (only @alice sees) {eph.text}")
        time.sleep(0.1)
    return "timed out"


def run(interactive: bool = False, verbose: bool = False, mode: str = "helm", helm_major: int = 4) -> int:
    workdir = tempfile.mkdtemp(prefix="mpub-demo-")
    cleanups: list[Callable[[], None]] = []
    try:
        world = World(workdir, pod_ready_seconds=0.2, helm_major=helm_major)
        _say(
            f"Rehearsing the {mode} path with the real helm {helm_major} and the real Milvus chart. Starting the "
            "sandbox: Kubernetes API + controllers, Milvus and Slack simulators…"
        )
        redis_server = RedisServer().start()
        cleanups.append(redis_server.cleanup)
        world.start()
        cleanups.append(world.stop)
        if mode == "operator":
            world.seed_operator()
        else:
            world.seed_default()
        cluster_picture(world, "Cluster before", mode)
        env = world.bot_env(redis_server.url, free_port(), BOT_SLACK_PACE=UNSET)  # Slack's pace, as in production
        bot = BotProcess(env, os.path.join(workdir, "bot.log")).start()
        cleanups.append(bot.stop)
        _say(f"\nThe bot is serving on {bot.url} (Redis {redis_server.url}, Slack {world.slack.url}).")
        client = SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
        result = play(world, client, interactive, RELEASES[mode])
        cluster_picture(world, "Cluster after", mode)
        _say(f"\nResult: {result}")
        if verbose:
            _say("\n=== bot log ===\n" + bot.log())
        return 0 if "succeeded" in result or "aborted" in result else 1
    except KeyboardInterrupt:
        _say("\ninterrupted")
        return 130
    finally:
        for cleanup in reversed(cleanups):
            with contextlib.suppress(Exception):
                cleanup()


if __name__ == "__main__":
    sys.exit(run())
