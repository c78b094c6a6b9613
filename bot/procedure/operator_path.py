"""The milvus-operator path: patch, delete and re-create the ``Milvus`` resource with Pulsar V3.

Preflight checks the operator is v1.1.2 or newer (its Deployment's image tag and the CR's
``milvus.io/operator-version`` label; ``v0.5.0-legacy`` means unknown). The CR manifest is
saved before anything changes. After the "PVC list" approval the dependencies are patched so
that the operator deletes Pulsar with its PVCs and keeps etcd and MinIO, the patch is read
back, then the CR is deleted and followed until it is gone. The re-created CR is the saved
manifest without the server-set fields, with ``pulsar.inCluster.chartVersion: pulsar-v3``
and ``values: null``.
"""

from __future__ import annotations

import copy
import time
from typing import Any

from bot.cluster.kube import KubeConflict, KubeError
from bot.procedure import verify
from bot.procedure.common import describe_pvc, dig, is_milvus_25, values_diff, version_tuple
from bot.procedure.context import Ctx
from bot.procedure.detect import detect
from bot.procedure.flush import flush, run_flush
from bot.procedure.outcome import Ask, Done, Refusal, StepError, Wait
from bot.procedure.path import Path
from bot.procedure.pods import wait_ready
from bot.procedure.shared import (
    BACKUP_SUFFIX,
    access_problems,
    collection_stats,
    databases_text,
    milvus_inventory,
    row_counts,
    write_backup,
)
from bot.procedure.volumes import delete_bound_pvs, list_volumes, wait_pvcs_gone
from bot.views import flush_text, volumes_text
from state.model import APPROVED, Upgrade, now

JSON = dict[str, Any]
MIN_OPERATOR = (1, 1, 2)
LEGACY = "v0.5.0-legacy"
SERVER_SET = (
    "annotations",
    "resourceVersion",
    "uid",
    "creationTimestamp",
    "generation",
    "managedFields",
    "finalizers",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "ownerReferences",
    "selfLink",
)
DEPENDENCY_PATCH = {
    "spec": {
        "dependencies": {
            "etcd": {"inCluster": {"deletionPolicy": "Retain", "pvcDeletion": False}},
            "storage": {"inCluster": {"deletionPolicy": "Retain", "pvcDeletion": False}},
            "pulsar": {"inCluster": {"deletionPolicy": "Delete", "pvcDeletion": True}},
        }
    }
}
UPGRADE_OPERATOR = (
    "Upgrade milvus-operator to v1.1.2 or newer first (e.g. `helm upgrade milvus-operator "
    "milvus-operator/milvus-operator -n milvus-operator`), then start again."
)


def _tag(image: str) -> str:
    return image.rsplit(":", 1)[1] if ":" in image.rsplit("/", 1)[-1] else ""


def operator_versions(ctx: Ctx, cr: JSON) -> tuple[list[str], list[str]]:
    """(known versions, where they came from) of the operator: Deployment image tags and the CR label."""
    versions, sources = [], []
    for deploy in ctx.kube.list_deployments_all("app.kubernetes.io/name=milvus-operator"):
        for container in dig(deploy, "spec", "template", "spec", "containers") or []:
            tag = _tag(container.get("image", ""))
            if tag and tag[0].lstrip("v")[:1].isdigit():
                versions.append(tag)
                sources.append(f"Deployment {deploy['metadata']['namespace']}/{deploy['metadata']['name']}")
    label = (dig(cr, "metadata", "labels") or {}).get("milvus.io/operator-version")
    if label and label != LEGACY:
        versions.append(label)
        sources.append("the resource's milvus.io/operator-version label")
    return versions, sources


def _operator_problems(versions: list[str], sources: list[str]) -> list[str]:
    if not versions:
        return [
            f"the milvus-operator version is unknown (no operator Deployment found, label {LEGACY} or "
            f"absent). {UPGRADE_OPERATOR}"
        ]
    old = [f"{v} ({s})" for v, s in zip(versions, sources, strict=True) if version_tuple(v) < MIN_OPERATOR]
    if old:
        return [f"milvus-operator is too old for Pulsar V3: {', '.join(old)}. {UPGRADE_OPERATOR}"]
    return []


def _cr_problems(cr: JSON) -> list[str]:
    problems = []
    status = dig(cr, "status", "status")
    if status != "Healthy":
        problems.append(f"the Milvus resource's status is `{status}`, not Healthy")
    image = dig(cr, "spec", "components", "image") or ""
    version = _tag(image) or "?"
    if image and not is_milvus_25(version):
        problems.append(f"it runs Milvus {version}; this procedure is for Milvus 2.5.x")
    deps = dig(cr, "spec", "dependencies") or {}
    pulsar = deps.get("pulsar") or {}
    if deps.get("msgStreamType") not in (None, "", "pulsar"):
        problems.append(f"its message stream is `{deps.get('msgStreamType')}`, not Pulsar")
    elif pulsar.get("external"):
        problems.append("it uses an external Pulsar; only an in-cluster Pulsar V2 is replaced by this procedure")
    elif (dig(pulsar, "inCluster", "chartVersion") or "pulsar-v2") != "pulsar-v2":
        problems.append(f"its Pulsar chartVersion is `{dig(pulsar, 'inCluster', 'chartVersion')}` (already V3?)")
    return problems


def kept_selectors(release: str) -> list[str]:
    return [
        f"app.kubernetes.io/instance={release}-etcd,app.kubernetes.io/name=etcd",
        f"app=minio,release={release}-minio",
    ]


def list_kept(ctx: Ctx) -> list[JSON]:
    out = []
    for selector in kept_selectors(ctx.release):
        out += [describe_pvc(p) for p in ctx.kube.list_pvcs(ctx.namespace, selector)]
    return sorted(out, key=lambda p: p["name"])


def preflight(ctx: Ctx) -> Done:
    cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    if cr is None:
        raise Refusal("the Milvus resource is gone")
    versions, sources = operator_versions(ctx, cr)
    problems = _operator_problems(versions, sources) + _cr_problems(cr)
    if problems:
        raise Refusal("; ".join(problems))
    databases, problems = milvus_inventory(ctx)
    problems += access_problems(ctx, operator=True)
    if problems:
        raise Refusal("; ".join(problems))
    pvcs, pvs = list_volumes(ctx)
    image = dig(cr, "spec", "components", "image") or "?"
    ctx.set_facts(
        release={"app_version": _tag(image) or image, "operator": versions},
        databases=databases,
        rows_before=collection_stats(ctx, databases),
        pvcs=pvcs,
        pvs=pvs,
        kept_pvcs=list_kept(ctx),
    )
    return Done(
        f"Milvus {_tag(image)}, operator {', '.join(sorted(set(versions)))}, "
        f"{len(databases)} databases, {len(pvcs)} Pulsar V2 PVCs"
    )


def plan_text(u: Upgrade) -> str:
    release, namespace = u.release, u.namespace
    kept = ", ".join(f"`{p['name']}`" for p in u.operator.kept_pvcs) or "none"
    version = u.facts.release.get("app_version")
    return (
        f"*Plan for Milvus resource `{release}` in `{namespace}`* (Milvus {version}, milvus-operator)\n"
        "1. Flush every database and collection into object storage, then *checkpoint*.\n"
        f"2. Flush again and save the Milvus manifest (Redis, Secret `{release}{BACKUP_SUFFIX}`, a file here).\n"
        "3. *Checkpoint* with the exact Pulsar PVCs; then patch the resource (etcd and MinIO: Retain, keep PVCs; "
        "Pulsar: Delete with its PVCs), delete it and follow it until it is gone; delete the Pulsar PVs left.\n"
        "4. *Checkpoint*, then create the resource again from the saved manifest with "
        "`pulsar.inCluster.chartVersion: pulsar-v3`.\n"
        "5. Wait for status Healthy and every pod Ready, then verify.\n"
        "⚠️ *Milvus is down from the deletion until the new pods are Ready*.\n"
        "⚠️ *Every client must stop writing before you approve the first checkpoint*: writes after the flush are lost.\n"
        f"*Databases and collections*\n{databases_text(u.facts.databases)}\n"
        f"*Volumes the operator will delete*\n{volumes_text(u.facts.pvcs, u.facts.pvs)}\n"
        f"*Volumes kept (etcd, MinIO)*: {kept}"
    )


def backup(ctx: Ctx) -> Done:
    if ctx.upgrade.saved is None:
        cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
        if cr is None or dig(cr, "metadata", "deletionTimestamp"):
            raise StepError("the Milvus resource is gone and its manifest was never saved; nothing was deleted")
        final = run_flush(ctx)
        ctx.set_facts(final_flush=final, rows_flushed=row_counts(ctx, ctx.facts.databases))
        ctx.say("final_flush", f"🔁 Flushed once more before stopping Milvus:\n{flush_text(final)}")
        cr = ctx.kube.get_milvus(ctx.namespace, ctx.release) or cr
        saved = {"kind": "milvus-cr", "manifest": cr, "saved_at": now()}
        ctx.record(lambda u: setattr(u, "saved", saved))
    saved_record = ctx.upgrade.saved
    assert saved_record is not None
    name = write_backup(
        ctx,
        "milvus.json",
        saved_record["manifest"],
        {},
        f"{ctx.release}-milvus.json",
        f"Milvus resource {ctx.release} before the upgrade",
        f"💾 Saved the Milvus resource `{ctx.release}` in the upgrade record",
    )
    return Done(f"manifest saved in Redis, Secret `{name}` and the thread")


def _patch_took(cr: JSON) -> bool:
    deps = dig(cr, "spec", "dependencies") or {}
    for dep, want in DEPENDENCY_PATCH["spec"]["dependencies"].items():
        have = dig(deps, dep, "inCluster") or {}
        if any(have.get(k) != v for k, v in want["inCluster"].items()):
            return False
    return True


def _ask_pvcs(ctx: Ctx, pvcs: list[JSON], pvs: list[JSON], note: str = "") -> Ask:
    target = {"release": ctx.release, "namespace": ctx.namespace, "pvcs": pvcs, "pvs": pvs, "operator": True}
    return Ask("pvc_list", target, note=note)


def delete_cr(ctx: Ctx) -> Done | Ask | Wait:
    if ctx.upgrade.operator.cr_deleted:
        return Done(ctx.upgrade.operator.cr_deleted)
    cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    if cr is not None and not ctx.upgrade.operator.cr_delete_started:
        pvcs, pvs = list_volumes(ctx)
        cp = ctx.upgrade.latest_checkpoint("pvc_list")
        if cp is None or cp.decision != APPROVED:
            return _ask_pvcs(ctx, pvcs, pvs)
        if {p["name"] for p in pvcs} - {p["name"] for p in cp.target["pvcs"]}:
            return _ask_pvcs(
                ctx, pvcs, pvs, "The PVC list changed since it was approved: nothing was changed. Check the new list."
            )
        _patch_and_delete(ctx)
        cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    elif cr is not None and not dig(cr, "metadata", "deletionTimestamp"):
        # "delete started" is recorded, yet the resource is not being deleted: the DELETE never
        # reached the API server (the bot died in between). The approval stands: send it now.
        _send_delete(ctx, cr)
        cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    if cr is not None:
        return _follow(ctx, cr["metadata"]["resourceVersion"])
    return _after_gone(ctx)


def _patch(ctx: Ctx) -> None:
    """Merge-patch the dependencies' deletion policies and read them back: nothing is deleted unless it took."""
    ctx.kube.patch_milvus(ctx.namespace, ctx.release, copy.deepcopy(DEPENDENCY_PATCH))
    back = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    if back is None or not _patch_took(back):
        raise StepError("the patch of the dependencies did not take (read back differs); nothing was deleted")


def _patch_and_delete(ctx: Ctx) -> None:
    _patch(ctx)
    if ctx.upgrade.downtime_started_at is None:
        ctx.record(lambda u: setattr(u, "downtime_started_at", now()))
    ctx.set_facts(cr_delete_started=time.time())
    _delete(ctx)


def _send_delete(ctx: Ctx, cr: JSON) -> None:
    """Resume a recorded deletion: the policies must still be in place (patched again if not), then DELETE."""
    if not _patch_took(cr):
        _patch(ctx)
    ctx.say("cr_delete_resumed", "🔁 The bot stopped before the Milvus resource's DELETE was sent; sending it now.")
    _delete(ctx)


def _delete(ctx: Ctx) -> None:
    ctx.kube.delete_milvus(ctx.namespace, ctx.release)
    ctx.say(  # one message for the patch (read back above) and the deletion
        "cr_deleting",
        "🩹 Patched the Milvus resource: etcd and MinIO Retain (PVCs kept), Pulsar Delete with its PVCs.\n"
        f"⏹️ Deleted the Milvus resource `{ctx.release}`; the operator is tearing it down…",
    )


def _follow(ctx: Ctx, resource_version: str) -> Wait:
    """Watch the CR through Deleting until it is gone (a chunk at a time)."""
    deadline = (ctx.upgrade.operator.cr_delete_started or time.time()) + ctx.limits.pods_timeout
    if time.time() > deadline:
        raise StepError(f"the Milvus resource is still being deleted after {ctx.limits.pods_timeout:g}s")
    if dig(ctx.kube.get_milvus(ctx.namespace, ctx.release), "status", "status") == "Deleting":
        ctx.say("cr_status_deleting", "… status `Deleting`: the operator is removing Milvus and Pulsar V2.")
    for event in ctx.kube.watch_milvus(ctx.namespace, ctx.release, resource_version, ctx.limits.watch_chunk):
        status = dig(event["object"], "status", "status")
        if status == "Deleting":
            ctx.say("cr_status_deleting", "… status `Deleting`: the operator is removing Milvus and Pulsar V2.")
        if event["type"] == "DELETED":  # said with the PVCs' outcome, in one message (`cr_deleted`)
            return Wait(0, "resource gone")
    return Wait(0, "waiting for the resource to go")


def _after_gone(ctx: Ctx) -> Done | Wait:
    cp = ctx.upgrade.latest_checkpoint("pvc_list")
    assert cp is not None
    approved = {p["name"] for p in cp.target["pvcs"]}
    deadline = (ctx.upgrade.operator.cr_delete_started or time.time()) + ctx.limits.pvc_gone_timeout
    left = wait_pvcs_gone(ctx, approved, deadline)
    if left:
        if time.time() > deadline:
            raise StepError(f"the operator did not delete these Pulsar PVCs: {', '.join(left)}")
        return Wait(0, f"waiting for {len(left)} Pulsar PVCs to go")
    kept_before = {p["name"]: p["uid"] for p in ctx.upgrade.operator.kept_pvcs}
    kept_now = {p["name"]: p["uid"] for p in list_kept(ctx)}
    lost = [n for n, uid in kept_before.items() if kept_now.get(n) != uid]
    if lost:
        raise StepError(f"etcd/MinIO PVCs are missing after the deletion: {', '.join(lost)}. Stop and investigate.")
    deleted_pvs, gone = delete_bound_pvs(ctx, cp.target)
    summary = (
        f"resource deleted; the operator deleted {len(approved)} Pulsar PVCs; {len(kept_now)} etcd/MinIO PVCs kept; "
        f"{len(deleted_pvs)} PVs deleted" + (f" ({len(gone)} already gone)" if gone else "")
    )
    ctx.set_facts(cr_deleted=summary)
    ctx.say("cr_deleted", f"🗑️ {summary}.")
    return Done(summary)


def clean_original(saved: JSON) -> JSON:
    """The saved manifest without the fields the API server sets (metadata listed in SERVER_SET, status)."""
    manifest = copy.deepcopy(saved)
    meta = manifest.get("metadata", {})
    for key in SERVER_SET:
        meta.pop(key, None)
    manifest.pop("status", None)
    return manifest


def new_manifest(saved: JSON) -> JSON:
    """``clean_original`` with Pulsar V3: ``chartVersion: pulsar-v3`` and ``values: null``."""
    manifest = clean_original(saved)
    deps = manifest.setdefault("spec", {}).setdefault("dependencies", {})
    pulsar = deps.setdefault("pulsar", {}).setdefault("inCluster", {})
    pulsar["chartVersion"] = "pulsar-v3"
    pulsar["values"] = None
    return manifest


def manifest_diff(saved: JSON) -> list[str]:
    before = clean_original(saved)
    return values_diff(before, new_manifest(saved))


def reinstall(ctx: Ctx) -> Done | Ask:
    saved = (ctx.upgrade.saved or {}).get("manifest")
    if saved is None:
        raise StepError("no saved manifest to re-create the resource from")
    cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    if cr is not None and not dig(cr, "metadata", "deletionTimestamp"):
        chart = dig(cr, "spec", "dependencies", "pulsar", "inCluster", "chartVersion")
        if chart == "pulsar-v3":
            return Done("resource created with Pulsar V3")
        raise StepError(f"a Milvus resource `{ctx.release}` exists again, with Pulsar `{chart}`; not overwriting it")
    cp = ctx.upgrade.latest_checkpoint("reinstall")
    if cp is None or cp.decision != APPROVED:
        return Ask(
            "reinstall",
            {"release": ctx.release, "namespace": ctx.namespace, "operator": True, "diff": manifest_diff(saved)},
        )
    try:
        ctx.kube.create_milvus(ctx.namespace, new_manifest(saved))
    except KubeConflict:
        pass  # created before a crash: the resource already exists
    ctx.say("recreated", f"▶️ Created the Milvus resource `{ctx.release}` with Pulsar V3. Waiting for it…")
    return Done("resource created with Pulsar V3")


def wait_healthy(ctx: Ctx) -> Done | Wait:
    outcome = wait_ready(ctx, "pulsar", "wait")
    if isinstance(outcome, Wait):
        return outcome
    cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    status = dig(cr, "status", "status") if cr else None
    if status != "Healthy":
        if cr is not None and status == "Unhealthy":
            conditions = dig(cr, "status", "conditions") or []
            why = "; ".join(c.get("message", "") for c in conditions if c.get("status") == "False")
            raise StepError(f"the Milvus resource is Unhealthy: {why or 'no reason given'}")
        return Wait(ctx.settings.poll_interval_seconds, f"pods Ready, resource `{status}`")
    return Done(f"Healthy; {outcome.summary}")


def verify_images(ctx: Ctx) -> list[str]:
    problems = []
    pods = ctx.kube.list_pods(ctx.namespace, f"app=pulsar,release={ctx.release}-pulsar")
    if not pods:
        problems.append("no Pulsar pods")
    for pod in pods:
        for c in dig(pod, "spec", "containers") or []:
            if "pulsar:3." not in c.get("image", ""):
                problems.append(f"pod {pod['metadata']['name']} runs {c.get('image')}, not Pulsar V3")
    old = {p["uid"] for p in ctx.facts.pvcs}
    now_pvcs = ctx.kube.list_pvcs(ctx.namespace, f"app=pulsar,release={ctx.release}-pulsar")
    if any(p["metadata"]["uid"] in old for p in now_pvcs):
        problems.append("a Pulsar V2 PVC still exists")
    kept_before = {p["name"]: p["uid"] for p in ctx.upgrade.operator.kept_pvcs}
    kept_now = {p["name"]: p["uid"] for p in list_kept(ctx)}
    if kept_before != kept_now:
        problems.append("the etcd/MinIO PVCs changed")
    return problems


def restore(ctx: Ctx) -> str:
    saved = (ctx.upgrade.saved or {}).get("manifest")
    if saved is None:
        raise StepError("no saved manifest: nothing to restore from")
    if ctx.kube.get_milvus(ctx.namespace, ctx.release) is not None:
        return "the Milvus resource exists; nothing to do"
    ctx.kube.create_milvus(ctx.namespace, clean_original(saved))
    return f"re-created the Milvus resource `{ctx.release}` from its saved manifest (Pulsar V2)"


class OperatorPath(Path):
    """A Milvus resource of milvus-operator: patch and delete it (Pulsar V2 goes with it), create it again."""

    name = "operator"
    destructive_steps = frozenset({"delete_cr", "reinstall"})

    def pulsar_v2_selector(self, release: str) -> str:
        # The operator names its Pulsar release ``<name>-pulsar``; V2 and V3 both label ``app=pulsar``.
        return f"app=pulsar,release={release}-pulsar"

    def pulsar_v3_selector(self, release: str) -> str:
        return f"app=pulsar,release={release}-pulsar"

    def pulsar_release(self, release: str) -> str:
        return f"{release}-pulsar"

    def pod_selectors(self, release: str) -> list[dict[str, str]]:
        return [
            {"app.kubernetes.io/instance": release},
            {"app.kubernetes.io/instance": f"{release}-etcd"},
            {"release": f"{release}-minio"},
            {"release": f"{release}-pulsar"},
        ]

    def plan_text(self, u: Upgrade) -> str:
        return plan_text(u)

    def verify_result(self, ctx: Ctx) -> list[str]:
        return verify_images(ctx)

    def restore_offer(self, ctx: Ctx) -> dict[str, Any] | None:
        """After the resource was deleted, offer to re-create the original manifest (Pulsar V2)."""
        u = ctx.upgrade
        if u.saved is None or not u.operator.cr_delete_started:
            return None
        try:
            if ctx.kube.get_milvus(u.namespace, u.release) is not None:
                return None
        except KubeError:
            return None
        return {"release": u.release, "namespace": u.namespace, "operator": True}

    def abort_state(self, u: Upgrade, restorable: bool) -> str:
        cm = u.facts.backup_secret
        if not u.operator.cr_delete_started:
            return "The Milvus resource was not touched; nothing was deleted."
        if restorable:
            return (
                f"The Milvus resource is deleted; its manifest is saved in Secret `{cm}` and it can be "
                "re-created as it was (Pulsar V2)."
            )
        return f"The Milvus resource's manifest is saved in Secret `{cm}`."

    def restore(self, ctx: Ctx) -> str:
        return restore(ctx)


OPERATOR = OperatorPath(
    [
        ("detect", detect),
        ("preflight", preflight),
        ("flush", flush),
        ("backup", backup),
        ("delete_cr", delete_cr),
        ("reinstall", reinstall),
        ("wait", wait_healthy),
        ("verify", verify.verify),
    ]
)
