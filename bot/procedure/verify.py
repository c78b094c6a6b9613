"""Check the result and prove nothing was lost.

Milvus healthy; every collection that was loaded before the upgrade loaded again (waited for,
bounded by UPGRADE_LOAD_TIMEOUT_SECONDS); then every collection's row count read again and
compared with the count read right after the last flush (the number that must survive; the
preflight count when no flush count was read). A per-database table (rows before, rows after,
load state before and after) goes into the thread. A collection missing or with fewer rows ends
the upgrade "failed" with that table and the names (``DataLost``): nothing further is changed.
Last, what only the path can see: Pulsar V3 volumes present and no Pulsar V2 volume left (Helm),
the images (operator).
"""

from __future__ import annotations

import time
from typing import Any

from bot.cluster.milvus import LOADED, LOADING, MilvusClient, MilvusHttpError
from bot.procedure.context import Ctx
from bot.procedure.outcome import DataLost, Done, StepError, Temporary, Wait
from state.model import now

NOT_EXIST = "LoadStateNotExist"
LOAD_KEY = "verify_load"  # the deadline of the wait for the collections to load again


def _short(state: str | None) -> str:
    return (state or "?").removeprefix("LoadState")


def verify(ctx: Ctx) -> Done | Wait:
    client = ctx.milvus_client()
    try:
        ok, detail = client.healthz()
        if not ok:
            raise Temporary(f"Milvus /healthz is not OK yet: {detail}")
        present = {db: set(client.list_collections(db)) for db in ctx.facts.databases}
        loading = _still_loading(ctx, client, present)
        if loading:
            return _wait_for_load(ctx, loading)
        rows_after, load_after = _after(ctx, client, present)
    except MilvusHttpError as err:
        raise Temporary(f"Milvus did not answer: {err}") from None
    table, lost = rows_table(ctx, present, rows_after, load_after)
    ctx.say("rows", f"🔢 Rows before and after, per database:\n{table}")
    if lost:
        raise DataLost(f"rows are missing after the upgrade: {', '.join(lost)}", table)
    problems = ctx.path.verify_result(ctx)
    if problems:
        raise StepError("; ".join(problems))
    if ctx.upgrade.downtime_ended_at is None:
        ctx.record(lambda u: setattr(u, "downtime_ended_at", now()))
    dbs = ctx.facts.databases
    rows = sum(sum(c.values()) for c in rows_after.values())
    return Done(
        f"healthy; {len(dbs)} databases, {sum(len(c) for c in dbs.values())} collections and {rows} rows all present"
    )


def _loaded_before(ctx: Ctx) -> list[tuple[str, str]]:
    return [
        (db, c)
        for db, collections in ctx.facts.rows_before.items()
        for c, stats in collections.items()
        if stats.get("load") in (LOADED, LOADING)
    ]


def _still_loading(ctx: Ctx, client: MilvusClient, present: dict[str, set[str]]) -> list[str]:
    """The collections loaded before that are present and not loaded again yet."""
    waiting = []
    for db, c in _loaded_before(ctx):
        if c in present.get(db, set()) and client.load_state(db, c) not in (LOADED, NOT_EXIST):
            waiting.append(f"{db}.{c}")
    return waiting


def _wait_for_load(ctx: Ctx, loading: list[str]) -> Wait:
    if time.time() > ctx.deadline(LOAD_KEY, ctx.limits.load_timeout):
        raise StepError(
            f"these collections were loaded before the upgrade and are not loaded again after "
            f"{ctx.limits.load_timeout:g}s: {', '.join(loading)}"
        )
    return Wait(min(1.0, ctx.settings.poll_interval_seconds), f"waiting for {len(loading)} collections to load")


def _after(
    ctx: Ctx, client: MilvusClient, present: dict[str, set[str]]
) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, str]]]:
    rows: dict[str, dict[str, int]] = {}
    load: dict[str, dict[str, str]] = {}
    for db, collections in present.items():
        rows[db] = {c: client.row_count(db, c) for c in sorted(collections)}
        load[db] = {c: client.load_state(db, c) for c in sorted(collections)}
    return rows, load


def rows_table(
    ctx: Ctx, present: dict[str, set[str]], rows_after: dict[str, dict[str, int]], load_after: dict[str, dict[str, str]]
) -> tuple[str, list[str]]:
    """The per-database table (every count in digits) and the names of what was lost."""
    lost: list[str] = []
    blocks = []
    for db in sorted(ctx.facts.databases):
        before_stats: dict[str, dict[str, Any]] = ctx.facts.rows_before.get(db, {})
        must: dict[str, int] = ctx.facts.rows_flushed.get(db) or {c: int(s["rows"]) for c, s in before_stats.items()}
        names = sorted(set(ctx.facts.databases[db]) | set(must) | set(present.get(db, set())))
        lines = [f"{'collection':<32} {'rows before':>12} {'rows after':>12}  load before → after"]
        for c in names:
            before = must.get(c)
            after = rows_after.get(db, {}).get(c) if c in present.get(db, set()) else None
            load_b = _short(before_stats.get(c, {}).get("load"))
            load_a = _short(load_after.get(db, {}).get(c)) if after is not None else "missing"
            mark = ""
            if before is not None and (after is None or after < before):
                lost.append(f"{db}.{c} ({before} → {'missing' if after is None else after})")
                mark = "  ⚠️"
            shown_before = "-" if before is None else str(before)
            shown_after = "missing" if after is None else str(after)
            lines.append(f"{c:<32} {shown_before:>12} {shown_after:>12}  {load_b} → {load_a}{mark}")
        blocks.append(f"*{db}*\n```" + "\n".join(lines) + "```")
    return "\n".join(blocks), lost
