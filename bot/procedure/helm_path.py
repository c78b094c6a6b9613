"""The Helm path: preflight, save values, uninstall, reinstall with Pulsar V3.

The release is read from its Helm storage Secret with the Kubernetes API (upgrade-facts.md,
"How Helm 3 stores a release"); helm itself is only run for what changes the cluster and
for the chart metadata. The reinstall uses ``helm install RELEASE CHART -f values`` (the values as
JSON, so that helm reads them back type for type): never ``install --reset-values``, which real
helm rejects.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import yaml

from bot.cluster.helm import SUPPORTED_HELM, HelmError, HelmRelease, find_release, release_history
from bot.cluster.kube import KubeError
from bot.procedure import pods, verify
from bot.procedure.common import dig, is_milvus_25, values_diff, version_tuple, with_pulsar_v3, yaml_documents
from bot.procedure.context import Ctx
from bot.procedure.detect import detect, helm_release
from bot.procedure.flush import flush, run_flush
from bot.procedure.outcome import Ask, Done, Refusal, StepError, Wait
from bot.procedure.path import Path
from bot.procedure.shared import (
    BACKUP_SUFFIX,
    access_problems,
    collection_stats,
    databases_text,
    manifest_access_checks,
    milvus_inventory,
    row_counts,
    write_backup,
)
from bot.procedure.volumes import delete_pvcs, helm_pulsar_selector, list_volumes
from bot.views import flush_text, volumes_text
from state.model import Upgrade, now

FIRST_PULSARV3_CHART = (4, 2, 21)
PULSARV3_DEFAULT_CHART = (4, 2, 27)


def pulsar_v2_enabled(config: dict[str, Any], chart_version: str) -> bool:
    explicit = dig(config, "pulsar", "enabled")
    if explicit is not None:
        return bool(explicit)
    return version_tuple(chart_version) < PULSARV3_DEFAULT_CHART


def milvus_version(release: HelmRelease) -> str:
    tag = dig(release.config, "image", "all", "tag")
    return str(tag) if tag else release.app_version


def chart_target(ctx: Ctx, release: HelmRelease) -> tuple[str | None, str | None]:
    """(version to install, refusal) for the reinstall: the pin, else the chart that ran before."""
    pinned = ctx.settings.helm_chart_version
    if pinned:
        return pinned.lstrip("v"), None
    if version_tuple(release.chart_version) >= FIRST_PULSARV3_CHART:
        return release.chart_version, None
    return None, (
        f"chart {release.chart_version} has no Pulsar V3 (it arrived in chart 4.2.21). Set "
        "MILVUS_HELM_CHART_VERSION to a chart that ships Milvus 2.5 with Pulsar V3, e.g. 4.2.58."
    )


def chart_source(ctx: Ctx) -> tuple[str, str | None]:
    """(chart, repository URL) for helm: ``repo/name`` (MILVUS_HELM_CHART) is ``name`` fetched with
    ``--repo MILVUS_HELM_REPO_URL``, an OCI reference or a path is used as it is.

    Never ``helm repo add``/``update``: that rewrites the repositories file every helm shares, and
    two upgrades at once would read it half-written ("no repositories found"); with ``--repo``
    each helm command reads the index into a private temporary file."""
    chart = ctx.settings.helm_chart
    if "/" in chart and not chart.startswith(("oci://", "/", ".")):
        return chart.split("/", 1)[1], ctx.settings.helm_repo_url
    return chart, None


KEEP = ("helm.sh/resource-policy", "keep")


def pvcs_helm_would_delete(manifest: str) -> list[str]:
    """PVCs rendered by the chart itself (in the release manifest) without ``resource-policy: keep``.

    ``helm uninstall`` deletes every object of the manifest but those annotated keep, and it reads
    the annotation from the manifest, not from the live object: such a PVC goes with the release.
    (The StatefulSets' claims are not in the manifest and survive.)"""
    try:
        docs = yaml_documents(manifest)
    except yaml.YAMLError as err:
        return [f"(the release manifest cannot be read: {err})"]
    out = []
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "PersistentVolumeClaim":
            continue
        meta = doc.get("metadata") or {}
        if (meta.get("annotations") or {}).get(KEEP[0]) != KEEP[1]:
            out.append(str(meta.get("name")))
    return sorted(out)


def _release_checks(release: HelmRelease | None) -> list[str]:
    if release is None:
        return ["the Helm release is gone"]
    problems = []
    if release.status != "deployed":
        problems.append(f"the release's status is `{release.status}`, not deployed")
    version = milvus_version(release)
    if not is_milvus_25(version):
        problems.append(f"it runs Milvus {version}; this procedure is for Milvus 2.5.x")
    doomed = pvcs_helm_would_delete(release.manifest)
    if doomed:
        names = ", ".join(f"`{n}`" for n in doomed)
        problems.append(
            f"`helm uninstall` would delete PVC {names} with the release: the chart renders it without "
            "`helm.sh/resource-policy: keep`, and Helm reads that annotation from the release manifest, not "
            "from the live object. Add the annotation through the release first (e.g. `helm upgrade` with "
            "values that set it), then start again"
        )
    if dig(release.config, "externalPulsar", "enabled"):
        problems.append("it uses an external Pulsar; only an in-cluster Pulsar V2 is replaced by this procedure")
    elif not pulsar_v2_enabled(release.config, release.chart_version):
        v3 = dig(release.config, "pulsarv3", "enabled")
        problems.append("Pulsar V2 is not enabled in its values" + (" (it already uses Pulsar V3)" if v3 else ""))
    return problems


def _helm_checks(ctx: Ctx) -> tuple[str, list[str]]:
    """(helm's version, problems): the guide needs helm 3.14 or newer."""
    try:
        version = ctx.helm.version()
    except HelmError as err:
        return "?", [f"cannot run helm ({ctx.settings.helm_bin}): {err.stderr.strip() or err}"]
    if not version.supported:
        return version.text, [f"helm {version.text} is not supported; this bot needs {SUPPORTED_HELM}"]
    return version.text, []


def _render_checks(ctx: Ctx, release: HelmRelease, version: str) -> tuple[list[str], str]:
    """Render, with the real helm, the reinstall (target chart, final values) and the way back
    (original chart and values): a failure knowable now must not be found after the uninstall.
    Returns (problems, the reinstall's manifest)."""
    chart, repo_url = chart_source(ctx)
    attempts = (
        ("the reinstall", with_pulsar_v3(release.config), version),
        ("a restore of the original release", release.config, release.chart_version),
    )
    manifests = []
    for what, values, chart_version in attempts:
        try:
            manifests.append(ctx.helm.template(ctx.release, ctx.namespace, chart, values, chart_version, repo_url))
        except HelmError as err:
            detail = err.stderr.strip() or str(err)
            shown = ctx.settings.helm_chart
            return [f"{what} does not render with chart {shown} {chart_version} (`helm template`): {detail}"], ""
    return [], "\n---\n".join(manifests)


def _chart_checks(ctx: Ctx, release: HelmRelease) -> tuple[dict[str, Any], list[str]]:
    helm_version, problems = _helm_checks(ctx)
    if problems:
        return {}, problems
    version, refusal = chart_target(ctx, release)
    if refusal:
        return {}, [refusal]
    try:
        chart, repo_url = chart_source(ctx)
        meta = ctx.helm.show_chart(chart, version, repo_url)
    except HelmError as err:
        return {}, [f"cannot read chart {ctx.settings.helm_chart} {version}: {err.stderr.strip() or err}"]
    plan: dict[str, Any] = {
        "chart": ctx.settings.helm_chart,
        "version": str(meta.get("version", version)),
        "app_version": str(meta.get("appVersion", "?")),
        "previous_version": release.chart_version,
        "previous_app_version": milvus_version(release),
        "pinned": bool(ctx.settings.helm_chart_version),
        "helm": helm_version,
    }
    if version_tuple(plan["version"]) < FIRST_PULSARV3_CHART:
        return plan, [f"chart {plan['version']} has no Pulsar V3 (needs 4.2.21 or newer)"]
    if not is_milvus_25(plan["app_version"]):
        return plan, [
            f"chart {plan['version']} ships Milvus {plan['app_version']}, not 2.5.x: pin "
            "MILVUS_HELM_CHART_VERSION to a chart with Milvus 2.5 and Pulsar V3, e.g. 4.2.58"
        ]
    problems, manifest = _render_checks(ctx, release, plan["version"])
    return {**plan, "_manifest": manifest}, problems


def preflight(ctx: Ctx) -> Done:
    release = helm_release(ctx)
    problems = _release_checks(release)
    if release is None or problems:
        raise Refusal("; ".join(problems))
    databases, milvus_problems = milvus_inventory(ctx)
    plan, chart_problems = _chart_checks(ctx, release)
    manifest = plan.pop("_manifest", "")
    extra = manifest_access_checks(ctx.namespace, release.manifest + "\n---\n" + manifest)
    problems = milvus_problems + access_problems(ctx, extra=extra) + chart_problems
    if problems:
        raise Refusal("; ".join(problems))
    pvcs, pvs = list_volumes(ctx)
    ctx.set_facts(
        release={
            "chart_name": release.chart_name,
            "chart_version": release.chart_version,
            "app_version": milvus_version(release),
            "revision": release.revision,
        },
        databases=databases,
        rows_before=collection_stats(ctx, databases),
        pvcs=pvcs,
        pvs=pvs,
        reinstall_plan=plan,
    )
    collections = sum(len(c) for c in databases.values())
    return Done(
        f"chart {release.chart_version}, Milvus {milvus_version(release)}, {len(databases)} databases, "
        f"{collections} collections, {len(pvcs)} Pulsar V2 PVCs"
    )


def plan_text(u: Upgrade) -> str:
    release, namespace = u.release, u.namespace
    rel, plan = u.facts.release, u.helm.reinstall_plan
    return (
        f"*Plan for `{release}` in `{namespace}`* (chart {rel.get('chart_version')}, Milvus {rel.get('app_version')})\n"
        "1. Flush every database and collection into object storage, then *checkpoint*.\n"
        "2. Flush again, save the values (Redis, Secret "
        f"`{release}{BACKUP_SUFFIX}`, a file in this thread), `helm uninstall`.\n"
        "3. *Checkpoint* with the exact Pulsar V2 PVCs, then delete them and their PVs.\n"
        f"4. *Checkpoint*, then install chart {plan.get('chart')} {plan.get('version')} "
        f"(Milvus {plan.get('app_version')}) with `pulsar.enabled: false`, `pulsarv3.enabled: true`.\n"
        "5. Wait for every pod to be Ready, then verify.\n"
        f"Runs with helm {plan.get('helm', '?')}; the reinstall and a restore were rendered with it first.\n"
        "⚠️ *Milvus is down from the uninstall until the new pods are Ready* (minutes; longer with more data).\n"
        "⚠️ *Every client must stop writing before you approve the first checkpoint*: writes after the flush are lost.\n"
        f"*Databases and collections*\n{databases_text(u.facts.databases)}\n"
        f"*Volumes that will be deleted*\n{volumes_text(u.facts.pvcs, u.facts.pvs)}"
    )


def backup(ctx: Ctx) -> Done:
    if ctx.upgrade.saved is None:
        release = helm_release(ctx)
        if release is None or release.status != "deployed":
            raise StepError("the release is no longer deployed and its values were never saved; nothing was deleted")
        final = run_flush(ctx)
        ctx.set_facts(final_flush=final, rows_flushed=row_counts(ctx, ctx.facts.databases))
        ctx.say("final_flush", f"🔁 Flushed once more before stopping Milvus:\n{flush_text(final)}")
        values = ctx.helm.get_values(ctx.release, ctx.namespace)
        saved = {
            "kind": "helm-values",
            "values": values,
            "chart_name": release.chart_name,
            "chart_version": release.chart_version,
            "app_version": release.app_version,
            "revision": release.revision,
            "saved_at": now(),
        }
        ctx.record(lambda u: setattr(u, "saved", saved))
    saved_record = ctx.upgrade.saved
    assert saved_record is not None
    meta = {k: v for k, v in saved_record.items() if k != "values"}
    name = write_backup(
        ctx,
        "values.json",
        saved_record["values"],
        {"release.json": json.dumps(meta, sort_keys=True)},
        f"{ctx.release}-values.json",
        f"{ctx.release} values before the upgrade",
        f"💾 Saved the user values of `{ctx.release}` (chart {saved_record['chart_version']}) in the upgrade record",
    )
    return Done(f"values saved in Redis, Secret `{name}` and the thread")


PENDING = ("pending-install", "pending-upgrade", "pending-rollback")


@contextlib.contextmanager
def helm_running(ctx: Ctx, step: str, command: str) -> Iterator[None]:
    """Record in Redis that this step is about to run a mutating helm command; clear it once it succeeded.

    A crash (the pod dies, helm with it) or a helm that failed half-way (killed on timeout, lost its
    connection) leaves the mark: on resume or Retry, ``clear_interrupted`` knows that a ``pending-*``
    release is this upgrade's own interrupted command and may clear it."""
    ctx.set_facts(helm_running={"step": step, "command": command, "at": now()})
    yield
    ctx.set_facts(helm_running=None)


def clear_interrupted(ctx: Ctx, step: str) -> HelmRelease | None:
    """The release, after clearing a ``pending-*`` state that this step's interrupted helm left.

    As Helm users do: back to the last revision that ran (``helm rollback``), or, when none ever
    ran (an interrupted first install), ``helm uninstall`` of that pending release (the saved values
    are in the record, and StatefulSet claims survive an uninstall). A pending state that this
    upgrade did not leave is someone else's operation: stop and say so, touching nothing.

    A clearing that was itself interrupted (the pod died during that ``helm uninstall``) leaves
    the release ``uninstalling`` with this step's mark still set: it is cleared again, with
    ``helm uninstall``."""
    secrets = ctx.kube.list_secrets(ctx.namespace, f"owner=helm,name={ctx.release}")
    release = find_release(secrets, ctx.release)
    if release is None or release.status not in (*PENDING, "uninstalling"):
        return release
    mark = ctx.upgrade.helm.helm_running or {}
    if mark.get("step") != step:
        if release.status == "uninstalling":
            return release
        raise StepError(
            f"the release is `{release.status}` (revision {release.revision}): a helm operation that this upgrade "
            "did not start is in progress or was interrupted. Let it finish, or clear it (`helm rollback` or "
            "`helm uninstall`), then Retry"
        )
    earlier = [r for r in release_history(secrets, ctx.release) if r.revision < release.revision]
    ran = [r for r in earlier if r.status in ("deployed", "superseded")]
    command = str(mark.get("command", "?"))
    with helm_running(ctx, step, command):  # still the interrupted command's mark, should this die too
        if ran and release.status != "uninstalling":
            ctx.helm.rollback(ctx.release, ctx.namespace, ran[-1].revision)
            what = f"rolled back to revision {ran[-1].revision}"
        else:
            ctx.helm.uninstall(ctx.release, ctx.namespace)
            what = "removed the never-completed release record"
    ctx.say(
        f"cleared:{step}:{release.revision}",
        f"🧹 An interrupted `helm {command}` left `{ctx.release}` {release.status}: {what}, and carrying on.",
    )
    return helm_release(ctx)


def uninstall(ctx: Ctx) -> Done:
    if ctx.upgrade.saved is None or not ctx.facts.backup_secret:
        raise StepError("the values are not saved durably yet; refusing to uninstall")
    release = helm_release(ctx)
    if release is not None and release.status != "uninstalled":
        if ctx.upgrade.downtime_started_at is None:
            ctx.record(lambda u: setattr(u, "downtime_started_at", now()))
        with helm_running(ctx, "uninstall", "uninstall"):  # a release left "uninstalling": uninstall again
            ctx.helm.uninstall(ctx.release, ctx.namespace)
    ctx.set_facts(uninstalled=now())
    ctx.say("uninstalled", f"⏹️ `helm uninstall {ctx.release}` done: Milvus is stopped (downtime has begun).")
    return Done("release uninstalled")


def reinstall_target(ctx: Ctx) -> dict[str, Any]:
    saved = ctx.upgrade.saved or {}
    before = saved.get("values", {})
    after = with_pulsar_v3(before)
    plan = ctx.upgrade.helm.reinstall_plan
    return {
        "release": ctx.release,
        "namespace": ctx.namespace,
        **plan,
        "diff": values_diff(before, after),
    }


def reinstall(ctx: Ctx) -> Done | Ask:
    release = clear_interrupted(ctx, "reinstall")
    if release is not None and release.status == "deployed" and dig(release.config, "pulsarv3", "enabled"):
        return Done(f"installed chart {release.chart_version} with Pulsar V3")
    cp = ctx.upgrade.latest_checkpoint("reinstall")
    if cp is None or cp.decision != "approved":
        return Ask("reinstall", reinstall_target(ctx))
    saved = ctx.upgrade.saved
    if saved is None:
        raise StepError("no saved values to reinstall from")
    values = with_pulsar_v3(saved["values"])
    chart, repo_url = chart_source(ctx)
    version = cp.target.get("version")
    ctx.set_facts(reinstall_started=now())
    with helm_running(ctx, "reinstall", "install"):
        ctx.helm.install(ctx.release, ctx.namespace, chart, values, version, repo_url, upgrade=release is not None)
    ctx.say(
        "reinstalled",
        f"▶️ Installed `{ctx.release}` with chart {ctx.settings.helm_chart} {version} and Pulsar V3. Waiting for pods…",
    )
    return Done(f"installed chart {version} with Pulsar V3")


def restore(ctx: Ctx) -> str:
    """Reinstall the saved original values (Pulsar V2) after an abort; returns what was done."""
    saved = ctx.upgrade.saved
    if saved is None:
        raise StepError("no saved values: nothing to restore from")
    release = clear_interrupted(ctx, "restore")
    if release is not None and release.status == "deployed":
        return "the release is already installed; nothing to do"
    chart, repo_url = chart_source(ctx)
    with helm_running(ctx, "restore", "install"):
        ctx.helm.install(
            ctx.release,
            ctx.namespace,
            chart,
            saved["values"],
            saved["chart_version"],
            repo_url,
            upgrade=release is not None,
        )
    return f"reinstalled `{ctx.release}` with its original values (chart {saved['chart_version']}, Pulsar V2)"


def wait_ready(ctx: Ctx) -> Done | Wait:
    return pods.wait_ready(ctx, "pulsarv3", "wait")


class HelmPath(Path):
    """A Helm release of the milvus-helm chart: uninstall, delete the Pulsar V2 volumes, install again."""

    name = "helm"
    destructive_steps = frozenset({"uninstall", "delete_pvcs", "reinstall"})

    def pulsar_v2_selector(self, release: str) -> str:
        return helm_pulsar_selector(release)

    def pulsar_v3_selector(self, release: str) -> str:
        return helm_pulsar_selector(release, v3=True)

    def pulsar_release(self, release: str) -> str:
        return release

    def pod_selectors(self, release: str) -> list[dict[str, str]]:
        return [{"app.kubernetes.io/instance": release}, {"release": release}]

    def plan_text(self, u: Upgrade) -> str:
        return plan_text(u)

    def verify_result(self, ctx: Ctx) -> list[str]:
        problems = []
        v3 = self.pulsar_v3_selector(ctx.release)
        if not ctx.kube.list_pvcs(ctx.namespace, v3):
            problems.append(f"no Pulsar V3 PVCs ({v3})")
        leftover = ctx.kube.list_pvcs(ctx.namespace, self.pulsar_v2_selector(ctx.release))
        if leftover:
            names = ", ".join(p["metadata"]["name"] for p in leftover)
            problems.append(f"Pulsar V2 PVCs still exist: {names}")
        return problems

    def restore_offer(self, ctx: Ctx) -> dict[str, Any] | None:
        """Uninstalled, its Pulsar V2 volumes not yet touched: the old release can come back as it was."""
        u = ctx.upgrade
        if u.saved is None or not u.helm.uninstalled or u.helm.pvc_delete_started:
            return None
        try:
            release = helm_release(ctx)
            pvcs, _ = list_volumes(ctx)
        except KubeError:
            return None
        if (release is not None and release.status == "deployed") or not pvcs:
            return None
        return {
            "release": u.release,
            "namespace": u.namespace,
            "chart_version": u.saved.get("chart_version"),
            "pvcs": len(pvcs),
        }

    def abort_state(self, u: Upgrade, restorable: bool) -> str:
        if not u.helm.uninstalled:
            return "Milvus was not stopped; nothing was deleted."
        if restorable:
            return "Milvus is uninstalled; the Pulsar V2 volumes still exist, so the previous release can be restored."
        return (
            f"Milvus is uninstalled. Its values are saved in Secret `{u.facts.backup_secret}`; reinstall them with "
            "`helm install` (pulsar.enabled false, pulsarv3.enabled true) when ready."
        )

    def restore(self, ctx: Ctx) -> str:
        return restore(ctx)


HELM = HelmPath(
    [
        ("detect", detect),
        ("preflight", preflight),
        ("flush", flush),
        ("backup", backup),
        ("uninstall", uninstall),
        ("delete_pvcs", delete_pvcs),
        ("reinstall", reinstall),
        ("wait", wait_ready),
        ("verify", verify.verify),
    ]
)
