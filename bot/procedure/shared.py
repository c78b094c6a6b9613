"""Pieces of the procedure that the Helm and operator paths both use.

The Milvus inventory (health, databases, collections), the access review, the backup of the
saved configuration (a Secret + a redacted file in the thread) and the "databases and collections"
lines of the plan: one implementation each, called by ``helm_path`` and ``operator_path``.
"""

from __future__ import annotations

from typing import Any

import yaml

from bot.cluster.helm import values_document
from bot.cluster.kube import AccessCheck
from bot.cluster.milvus import MilvusHttpError, MilvusRoutesGone
from bot.procedure.common import yaml_documents
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
        if err.retriable:  # no answer, 429, 5xx, not ready: retried by the engine, not a refusal
            raise
        return {}, [f"the Milvus HTTP API does not answer: {err}"]
    return databases, []


def collection_stats(ctx: Ctx, databases: dict[str, list[str]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{db: {collection: {"rows": rowCount, "load": loadState}}} of every collection (RESTful v2)."""
    client = ctx.milvus_client()
    return {
        db: {c: {"rows": client.row_count(db, c), "load": client.load_state(db, c)} for c in collections}
        for db, collections in databases.items()
    }


def row_counts(ctx: Ctx, databases: dict[str, list[str]]) -> dict[str, dict[str, int]]:
    """{db: {collection: rowCount}}: read right after the last flush, the counts that must survive."""
    client = ctx.milvus_client()
    return {db: {c: client.row_count(db, c) for c in collections} for db, collections in databases.items()}


def _common_checks(ns: str) -> list[AccessCheck]:
    checks = [AccessCheck(v, "secrets", ns) for v in ("get", "create", "update")]
    checks += [AccessCheck(v, "persistentvolumes", None) for v in ("list", "delete")]
    checks += [AccessCheck(v, "pods", ns) for v in ("list", "watch")]
    checks += [AccessCheck("get", "services/proxy", ns)]
    return checks


def helm_access_checks(ns: str) -> list[AccessCheck]:
    checks = [AccessCheck(v, "secrets", ns) for v in ("get", "list", "create", "delete")]
    checks += [AccessCheck(v, "persistentvolumeclaims", ns) for v in ("list", "watch", "get", "delete")]
    checks += [AccessCheck(v, r, ns, "apps") for r in ("deployments", "statefulsets") for v in ("create", "delete")]
    checks += [AccessCheck(v, "services", ns) for v in ("create", "delete")]
    return checks + _common_checks(ns)


def operator_access_checks(ns: str) -> list[AccessCheck]:
    verbs = ("get", "list", "watch", "patch", "delete", "create")
    checks = [AccessCheck(v, "milvuses", ns, "milvus.io") for v in verbs]
    checks += [AccessCheck("list", "deployments", None, "apps")]
    checks += [AccessCheck(v, "persistentvolumeclaims", ns) for v in ("list", "watch", "get")]
    return checks + _common_checks(ns)


# Kinds whose plural is not kind + "s" (the rest follow the rule).
_PLURALS = {"Ingress": "ingresses", "NetworkPolicy": "networkpolicies", "PodSecurityPolicy": "podsecuritypolicies"}
# What helm does to each object of a release: reads it, creates it (Helm 3 POST; Helm 4 apply
# answering 201), patches it (Helm 4 server-side apply, Helm 3 three-way merge) and deletes it.
HELM_VERBS = ("get", "create", "patch", "delete")


def manifest_access_checks(ns: str, manifest: str) -> list[AccessCheck]:
    """The rights helm needs for every namespaced object of the release (the one uninstalled and
    the one reinstalled): found now, not as "forbidden" after Milvus was uninstalled."""
    kinds: set[tuple[str, str]] = set()
    try:
        docs = yaml_documents(manifest)
    except yaml.YAMLError:
        return []  # the render checks say why
    for doc in docs:
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            continue
        kind, api = str(doc["kind"]), str(doc["apiVersion"])
        if kind in ("Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"):
            continue  # cluster-scoped: the chart of a Milvus release has none
        group = api.split("/", 1)[0] if "/" in api else ""
        kinds.add((group, _PLURALS.get(kind, kind.lower() + "s")))
    return [
        AccessCheck(v, resource, ns, group)
        for group, resource in sorted(kinds)
        for v in HELM_VERBS
        # A PVC of the release survives the uninstall (preflight refuses one that would not), so
        # the reinstall adopts it: patch, never create.
        if not (resource == "persistentvolumeclaims" and v == "create")
    ]


def access_problems(ctx: Ctx, operator: bool = False, extra: list[AccessCheck] | None = None) -> list[str]:
    """What a SelfSubjectAccessReview says this identity may not do, in words."""
    checks = operator_access_checks(ctx.namespace) if operator else helm_access_checks(ctx.namespace)
    checks = list(dict.fromkeys([*checks, *(extra or [])]))  # each question once
    return [
        f"not allowed to {c.verb} {c.group + '/' if c.group else ''}{c.resource}"
        + (f" in `{c.namespace}`" if c.namespace else " (cluster-wide)")
        for c in ctx.kube.denied(checks)
    ]


SECRET_WORDS = ("password", "secret", "token", "key", "credential")
REDACTED = "<redacted by milvus-pulsar-upgrade-bot>"


def redact_secrets(value: Any, path: str = "") -> tuple[Any, list[str]]:
    """A copy of ``value`` where every value under a key that looks like a secret (it contains
    password, secret, token, key or credential, in any case) is replaced, and the paths replaced."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        hits: list[str] = []
        for k, v in value.items():
            where = f"{path}.{k}" if path else str(k)
            if any(word in str(k).lower() for word in SECRET_WORDS) and v not in (None, "", {}, []):
                out[k], hits = REDACTED, [*hits, where]
            else:
                out[k], more = redact_secrets(v, where)
                hits += more
        return out, hits
    if isinstance(value, list):
        items = [redact_secrets(v, f"{path}[{i}]") for i, v in enumerate(value)]
        return [v for v, _ in items], [h for _, more in items for h in more]
    return value, []


def write_backup(
    ctx: Ctx, key: str, document: Any, extra: dict[str, str], filename: str, title: str, saved_where: str
) -> str:
    """Keep the saved configuration in Secret ``<release>-pulsar-upgrade-backup`` and post it in the thread.

    The Secret holds it whole (``key``: JSON that helm and kubectl read back exactly, plus ``extra``);
    values and manifests often carry S3 keys and passwords, so the file in Slack has every
    secret-looking value replaced (and says which), unless BOT_BACKUP_TO_SLACK=full. Returns the
    Secret's name."""
    name = f"{ctx.release}{BACKUP_SUFFIX}"
    ctx.kube.upsert_secret(
        ctx.namespace,
        name,
        {key: values_document(document), **extra, "upgrade-id": ctx.upgrade.id},
        {"app.kubernetes.io/managed-by": "milvus-pulsar-upgrade-bot", "release": ctx.release},
    )
    ctx.set_facts(backup_secret=name)
    shown, hits = (document, []) if ctx.settings.backup_to_slack == "full" else redact_secrets(document)
    note = f"{saved_where}, in Secret `{name}` (whole) and here"
    if hits:
        listed = ", ".join(f"`{h}`" for h in hits[:10]) + (f" and {len(hits) - 10} more" if len(hits) > 10 else "")
        note += f"; {len(hits)} secret-looking values are redacted in this file ({listed}): the Secret has them"
    ctx.upload("backup_file", filename, values_document(shown), title, note + ".")
    return name


def databases_text(databases: dict[str, Any]) -> str:
    lines = [f"• `{db}`: {', '.join(f'`{c}`' for c in colls) or 'no collections'}" for db, colls in databases.items()]
    return "\n".join(lines) or "• none"
