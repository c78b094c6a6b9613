"""Find what ``start <release>`` names: a Helm release, a Milvus custom resource, or neither.

Runs before the upgrade's root message exists; everything it finds wrong is answered to the
person alone (``NotStartable``) and the upgrade record is discarded.
"""

from __future__ import annotations

from bot.cluster.helm import HelmRelease, find_release
from bot.cluster.kube import KubeError
from bot.procedure.context import Ctx
from bot.procedure.outcome import Done, NotStartable


def helm_release(ctx: Ctx) -> HelmRelease | None:
    secrets = ctx.kube.list_secrets(ctx.namespace, f"owner=helm,name={ctx.release}")
    return find_release(secrets, ctx.release)


def detect(ctx: Ctx) -> Done:
    try:
        release = helm_release(ctx)
        cr = ctx.kube.get_milvus(ctx.namespace, ctx.release)
    except KubeError as err:
        if err.temporary:  # no answer, 429, 5xx: retried by the engine, not a reason to refuse
            raise
        raise NotStartable(f"I cannot read namespace `{ctx.namespace}`: {err.message}") from None
    where = f"`{ctx.release}` in namespace `{ctx.namespace}`"
    requested = ctx.upgrade.mode
    if requested == "helm" and release is None:
        raise NotStartable(f"There is no Helm release {where}.")
    if requested == "operator" and cr is None:
        raise NotStartable(f"There is no Milvus resource (milvuses.milvus.io) {where}.")
    if requested is None and release is None and cr is None:
        raise NotStartable(
            f"There is no Helm release and no Milvus resource named {where}. "
            "Check the name and add `--namespace NS` if it lives elsewhere."
        )
    if requested is None and release is not None and cr is not None:
        raise NotStartable(
            f"Both a Helm release and a Milvus resource are named {where} (a Helm release that owns the "
            "resource?). Say which one to upgrade with `--mode helm` or `--mode operator`."
        )
    mode = requested or ("helm" if release is not None else "operator")
    ctx.record(lambda u: setattr(u, "mode", mode))
    if mode == "operator":
        return Done("Milvus resource managed by milvus-operator")
    assert release is not None
    return Done(f"Helm release, chart {release.chart_name}-{release.chart_version}")
