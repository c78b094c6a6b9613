"""Pieces of the procedure that the Helm and operator paths both use.

The Milvus inventory (health, databases, collections), the access review, the backup of the
saved configuration (ConfigMap + file in the thread) and the "databases and collections"
lines of the plan: one implementation each, called by ``helm_path`` and ``operator_path``.
"""

from __future__ import annotations

from typing import Any

from bot.cluster.kube import AccessCheck
from bot.cluster.milvus import MilvusHttpError, MilvusRoutesGone
from bot.procedure.context import Ctx

BACKUP_SUFFIX = "-pulsar-upgrade-backup"


def milvus_inventory(ctx: Ctx) -> tuple[dict[str, list[str]], list[str]]:
    """({database: sorted collections}, problems) from the proxy's HTTP API; a 404 on health is a problem."""
    client = ctx.milvus_client()
    try:
        client.health()
        databases = {db: sorted(client.list_collections(db)) for db in client.list_databases()}
    except MilvusRoutesGone as err:
        return {}, [str(err)]
    except MilvusHttpError as err:
        return {}, [f"the Milvus HTTP API does not answer: {err}"]
    return databases, []


def _common_checks(ns: str) -> list[AccessCheck]:
    checks = [AccessCheck(v, "configmaps", ns) for v in ("get", "create", "update")]
    checks += [AccessCheck(v, "persistentvolumes", None) for v in ("get", "delete")]
    checks += [AccessCheck(v, "pods", ns) for v in ("list", "watch")]
    checks += [AccessCheck("get", "services/proxy", ns)]
    return checks


def helm_access_checks(ns: str) -> list[AccessCheck]:
    checks = [AccessCheck(v, "secrets", ns) for v in ("get", "list", "create", "delete")]
    checks += [AccessCheck(v, "persistentvolumeclaims", ns) for v in ("list", "get", "delete")]
    checks += [AccessCheck(v, r, ns, "apps") for r in ("deployments", "statefulsets") for v in ("create", "delete")]
    checks += [AccessCheck(v, "services", ns) for v in ("create", "delete")]
    return checks + _common_checks(ns)


def operator_access_checks(ns: str) -> list[AccessCheck]:
    verbs = ("get", "list", "watch", "patch", "delete", "create")
    checks = [AccessCheck(v, "milvuses", ns, "milvus.io") for v in verbs]
    checks += [AccessCheck("list", "deployments", None, "apps")]
    checks += [AccessCheck(v, "persistentvolumeclaims", ns) for v in ("list", "get")]
    return checks + _common_checks(ns)


def access_problems(ctx: Ctx, operator: bool = False) -> list[str]:
    """What a SelfSubjectAccessReview says this identity may not do, in words."""
    checks = operator_access_checks(ctx.namespace) if operator else helm_access_checks(ctx.namespace)
    return [
        f"not allowed to {c.verb} {c.group + '/' if c.group else ''}{c.resource}"
        + (f" in `{c.namespace}`" if c.namespace else " (cluster-wide)")
        for c in ctx.kube.denied(checks)
    ]


def write_backup(ctx: Ctx, data: dict[str, str], filename: str, title: str, saved_where: str) -> str:
    """Put the saved configuration in ConfigMap ``<release>-pulsar-upgrade-backup`` and in the thread.

    ``data``'s first entry is the file attached to the thread. Returns the ConfigMap's name."""
    name = f"{ctx.release}{BACKUP_SUFFIX}"
    ctx.kube.upsert_configmap(
        ctx.namespace,
        name,
        {**data, "upgrade-id": ctx.upgrade.id},
        {"app.kubernetes.io/managed-by": "milvus-pulsar-upgrade-bot", "release": ctx.release},
    )
    ctx.set_facts(backup_configmap=name)
    content = next(iter(data.values()))
    ctx.upload("backup_file", filename, content, title, f"{saved_where}, in ConfigMap `{name}` and here.")
    return name


def databases_text(databases: dict[str, Any]) -> str:
    lines = [f"• `{db}`: {', '.join(f'`{c}`' for c in colls) or 'no collections'}" for db, colls in databases.items()]
    return "\n".join(lines) or "• none"
