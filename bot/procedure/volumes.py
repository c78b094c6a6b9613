"""The Pulsar V2 volumes: list them with the PVs bound to them, ask, delete exactly those.

Deletion is only ever of what an approval showed: right before deleting, the PVCs are listed
again; if the set differs from the approved one (a new name, or an approved name now held by
a re-created PVC with another uid), nothing is deleted and the operators are asked again with
the new list. Each DELETE carries the approved uid as a precondition, so a PVC re-created
between that list and the DELETE is refused by the API server (409 Conflict): then nothing
more is deleted and the operators are asked again. PVs are deleted only if their claimRef
still points at one of the deleted PVCs (same namespace, name and uid), with the uid of the PV
seen bound to it as a precondition; NotFound is success.
"""

from __future__ import annotations

import time
from typing import Any

from bot.cluster.kube import KubeConflict
from bot.procedure.common import describe_pv, describe_pvc, watch_until
from bot.procedure.context import Ctx
from bot.procedure.outcome import Ask, Done, StepError, Wait
from state.model import APPROVED

JSON = dict[str, Any]


def helm_pulsar_selector(release: str, v3: bool = False) -> str:
    """The labels of the PVCs of the chart's Pulsar V2 (``app=pulsar``) or V3 (``app=pulsarv3``).

    They come from the Pulsar StatefulSets' selectors, which the StatefulSet controller copies
    onto each claim (tests/test_chart_facts.py checks this against every vendored chart)."""
    return f"app={'pulsarv3' if v3 else 'pulsar'},release={release}"


def list_volumes(ctx: Ctx) -> tuple[list[JSON], list[JSON]]:
    """(PVCs, PVs) of Pulsar V2 in the upgrade's namespace only."""
    pvcs = [describe_pvc(p) for p in ctx.kube.list_pvcs(ctx.namespace, ctx.path.pulsar_v2_selector(ctx.release))]
    bound = {p["volume"] for p in pvcs if p["volume"]}
    live = ctx.kube.list_pvs() if bound else {}
    pvs = [describe_pv(live[name]) for name in bound if name in live]
    return sorted(pvcs, key=lambda p: p["name"]), sorted(pvs, key=lambda p: p["name"])


def delete_pvcs(ctx: Ctx) -> Done | Ask | Wait:
    done = ctx.upgrade.helm.pvcs_deleted
    if done is not None:
        return Done(done)
    pvcs, pvs = list_volumes(ctx)
    current = {p["name"] for p in pvcs}
    terminating = {p["name"] for p in pvcs if p.get("deleting")}
    cp = ctx.upgrade.latest_checkpoint("pvc_list")
    started = ctx.upgrade.helm.pvc_delete_started
    if cp is None or cp.decision != APPROVED:
        if not pvcs:
            return Done("no Pulsar V2 PVCs were left to delete")
        return Ask("pvc_list", {"release": ctx.release, "namespace": ctx.namespace, "pvcs": pvcs, "pvs": pvs})
    approved_uids = {p["name"]: p.get("uid") for p in cp.target["pvcs"]}
    approved = set(approved_uids)
    replaced = {p["name"] for p in pvcs if p["name"] in approved and approved_uids[p["name"]] not in (None, p["uid"])}
    extra = current - approved
    if (extra or replaced) and not started:
        return Ask(
            "pvc_list",
            {"release": ctx.release, "namespace": ctx.namespace, "pvcs": pvcs, "pvs": pvs},
            note="The PVC list changed since it was approved: nothing was deleted. Please check the new list.",
        )
    if replaced:  # re-created while deleting: not what was approved
        return _ask_again(ctx, set(), sorted(replaced))
    if not started:
        ctx.set_facts(pvc_delete_started=time.time())
    deleted: set[str] = set()
    for name in sorted(current & approved):
        if name in terminating:
            deleted.add(name)  # deleted by an earlier run: it is going (pvc-protection until unmounted)
            continue
        try:
            ctx.kube.delete_pvc(ctx.namespace, name, uid=approved_uids[name])
        except KubeConflict:
            # The ones already deleted were approved: their PVs go too, as they would have.
            delete_bound_pvs(
                ctx, {"pvcs": [p for p in cp.target["pvcs"] if p["name"] in deleted], "pvs": cp.target.get("pvs", [])}
            )
            return _ask_again(ctx, deleted, [name])
        deleted.add(name)
    return _after_delete(ctx, cp.target, current & approved, extra)


def _ask_again(ctx: Ctx, deleted: set[str], replaced: list[str]) -> Ask:
    """An approved PVC name now belongs to another PVC (new uid): delete nothing more, ask again."""
    pvcs, pvs = list_volumes(ctx)
    pvcs = [p for p in pvcs if p["name"] not in deleted]
    bound = {p["volume"] for p in pvcs}
    pvs = [v for v in pvs if v["name"] in bound]
    ctx.set_facts(pvc_delete_started=None)
    return Ask(
        "pvc_list",
        {"release": ctx.release, "namespace": ctx.namespace, "pvcs": pvcs, "pvs": pvs},
        note=(
            f"PVC {', '.join(f'`{n}`' for n in replaced)} was re-created since the approval (another uid): "
            "it was not deleted, and nothing more was. Please check the current list."
        ),
    )


def _after_delete(ctx: Ctx, target: JSON, remaining: set[str], extra: set[str]) -> Done | Ask | Wait:
    deadline = (ctx.upgrade.helm.pvc_delete_started or time.time()) + ctx.limits.pvc_gone_timeout
    still = wait_pvcs_gone(ctx, remaining, deadline)
    if still:
        if time.time() > deadline:
            raise StepError(
                f"these PVCs are still terminating after {ctx.limits.pvc_gone_timeout:g}s: {', '.join(still)}",
                "A pod may still mount them (kubernetes.io/pvc-protection). Check `kubectl get pods` in the "
                "namespace, then Retry.",
            )
        return Wait(0, f"waiting for {len(still)} PVCs to go")
    approved = {p["name"] for p in target["pvcs"]}
    deleted_pvs, gone = delete_bound_pvs(ctx, target)
    if extra:
        pvcs, pvs = list_volumes(ctx)
        pvcs = [p for p in pvcs if p["name"] in extra]
        ctx.set_facts(pvc_delete_started=None)
        return Ask(
            "pvc_list",
            {"release": ctx.release, "namespace": ctx.namespace, "pvcs": pvcs, "pvs": pvs},
            note="New Pulsar V2 PVCs appeared while deleting; the approved ones are gone. Approve these too?",
        )
    summary = f"deleted {len(approved)} PVCs and {len(deleted_pvs)} PVs" + (
        f" ({len(gone)} PVs were already gone with their PVC)" if gone else ""
    )
    ctx.set_facts(pvcs_deleted=summary)
    ctx.say("pvcs_deleted", f"🗑️ Pulsar V2 volumes: {summary}.")
    return Done(summary)


def wait_pvcs_gone(ctx: Ctx, names: set[str], deadline: float) -> list[str]:
    """Which of the Pulsar V2 PVCs ``names`` are still there, after watching them go for at most
    ``limits.watch_chunk`` seconds (or until ``deadline``): a watch first, a list as the fallback."""
    selector = ctx.path.pulsar_v2_selector(ctx.release)
    items, rv = ctx.kube.pvcs_resource_version(ctx.namespace, selector)
    left = names & {p["metadata"]["name"] for p in items}
    remaining = deadline - time.time()
    if not left or remaining <= 0:
        return sorted(left)
    seconds = int(min(ctx.limits.watch_chunk, max(1, remaining)))

    def done(event: JSON) -> bool:
        if event["type"] == "DELETED":
            left.discard(event["object"]["metadata"]["name"])
        return not left

    if watch_until(
        ctx.kube.watch_pvcs(ctx.namespace, selector, rv, seconds), done, seconds, ctx.settings.poll_interval_seconds
    ):
        return sorted(left)
    return sorted(names & {p["metadata"]["name"] for p in ctx.kube.list_pvcs(ctx.namespace, selector)})


def delete_bound_pvs(ctx: Ctx, target: JSON) -> tuple[list[str], list[str]]:
    """Delete the PVs that were bound to the approved (now deleted) PVCs and still exist.

    A PV is deleted only while its claimRef still names one of those PVCs (namespace, name and,
    when known, uid); NotFound counts as already gone. Returns (deleted, already gone)."""
    approved = {p["name"] for p in target["pvcs"]}
    uids = {p["name"]: p.get("uid") for p in target["pvcs"]}
    deleted: list[str] = []
    gone: list[str] = []
    every = ctx.kube.list_pvs() if target.get("pvs") else {}
    for pv in target.get("pvs", []):
        live = every.get(pv["name"])
        if live is None:
            gone.append(pv["name"])
            continue
        claim = describe_pv(live)
        ours = claim["claim_namespace"] == ctx.namespace and claim["claim_name"] in approved
        if not ours or (uids.get(claim["claim_name"]) and claim["claim_uid"] != uids[claim["claim_name"]]):
            continue
        try:
            # The uid of the PV just seen bound to the approved claim: a PV re-created since is not deleted.
            removed = ctx.kube.delete_pv(pv["name"], uid=live["metadata"].get("uid"))
        except KubeConflict:
            continue
        (deleted if removed else gone).append(pv["name"])
    return deleted, gone
