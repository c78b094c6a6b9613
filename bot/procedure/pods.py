"""Wait until every pod of the release is Ready (or, for a Job's pod, Succeeded): watch first, polling as fallback.

One run of the step watches for at most ``limits.watch_chunk`` seconds and then hands back
to the runner (``Wait(0)``), so a restart or a lost lease never leaves a thread blocked on a
watch. The deadline is stored in the record: a Retry after a timeout starts a new one.
"""

from __future__ import annotations

import time
from typing import Any

from bot.procedure.common import dig, pod_ready, pod_row, watch_until
from bot.procedure.context import Ctx
from bot.procedure.outcome import Done, StepError, Wait

JSON = dict[str, Any]


def release_selectors(ctx: Ctx) -> list[dict[str, str]]:
    """Label sets (any of them) that mark a pod of this release."""
    return ctx.path.pod_selectors(ctx.release)


def expected_groups(ctx: Ctx, pulsar_app: str) -> list[dict[str, str]]:
    """Pods that must exist before 'all Ready' means anything: Milvus itself and the new Pulsar."""
    pulsar_release = ctx.path.pulsar_release(ctx.release)
    return [
        {"app.kubernetes.io/instance": ctx.release, "app.kubernetes.io/name": "milvus"},
        {"app": pulsar_app, "release": pulsar_release},
    ]


def _matches(pod: JSON, labels: dict[str, str]) -> bool:
    have = dig(pod, "metadata", "labels") or {}
    return all(have.get(k) == v for k, v in labels.items())


def _of_release(ctx: Ctx, pods: list[JSON]) -> dict[str, JSON]:
    selectors = release_selectors(ctx)
    return {p["metadata"]["name"]: p for p in pods if any(_matches(p, s) for s in selectors)}


def _complete(pods: dict[str, JSON], groups: list[dict[str, str]]) -> bool:
    if not pods or not all(any(_matches(p, g) for p in pods.values()) for g in groups):
        return False
    return all(pod_ready(p) for p in pods.values())


def pod_table(pods: dict[str, JSON]) -> str:
    rows = [pod_row(p) for _, p in sorted(pods.items())]
    return "```" + "\n".join(rows)[:2800] + "```"


def wait_ready(ctx: Ctx, pulsar_app: str, key: str) -> Done | Wait:
    deadline = ctx.deadline(key, ctx.limits.pods_timeout)
    groups = expected_groups(ctx, pulsar_app)
    pods, rv = ctx.kube.pods_resource_version(ctx.namespace, "")
    mine = _of_release(ctx, pods)
    if not _complete(mine, groups):
        remaining = deadline - time.time()
        if remaining <= 0:
            raise StepError(f"not every pod is Ready after {ctx.limits.pods_timeout:g}s", _not_ready_report(ctx, mine))
        mine = _watch(ctx, mine, groups, rv, int(min(ctx.limits.watch_chunk, max(1, remaining))))
        if not _complete(mine, groups):
            ready = sum(1 for p in mine.values() if pod_ready(p))
            return Wait(0, f"{ready}/{len(mine)} pods Ready")
    ctx.say(f"{key}_pods", f"✅ All {len(mine)} pods are Ready:\n{pod_table(mine)}")
    return Done(f"{len(mine)} pods Ready")


def _watch(ctx: Ctx, mine: dict[str, JSON], groups: list[dict[str, str]], rv: str, seconds: int) -> dict[str, JSON]:
    selectors = release_selectors(ctx)

    def done(event: JSON) -> bool:
        pod = event["object"]
        if any(_matches(pod, s) for s in selectors):
            if event["type"] == "DELETED":
                mine.pop(pod["metadata"]["name"], None)
            elif event["type"] in ("ADDED", "MODIFIED"):
                mine[pod["metadata"]["name"]] = pod
        return _complete(mine, groups)

    if watch_until(
        ctx.kube.watch_pods(ctx.namespace, "", rv, seconds), done, seconds, ctx.settings.poll_interval_seconds
    ):
        return mine
    return _of_release(ctx, ctx.kube.list_pods(ctx.namespace, ""))


def _not_ready_report(ctx: Ctx, pods: dict[str, JSON]) -> str:
    lines = []
    for name, pod in sorted(pods.items()):
        if pod_ready(pod):
            continue
        lines.append(pod_row(pod))
        for event in ctx.kube.pod_events(ctx.namespace, name, limit=3):
            lines.append(f"    {event.get('type', '')} {event.get('reason', '')}: {event.get('message', '')}")
    return "\n".join(lines) or "no pods of the release exist yet"
