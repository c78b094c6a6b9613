"""Flush what Pulsar holds into object storage, for every database and every collection.

As pymilvus does (``_wait_for_flushed``), not as the guide's jq recipe: per collection,
persist, then poll the flush state with that collection's exact int64 ``coll_segIDs``, its
``flush_ts``, ``db_name`` and ``collection_name`` until ``flushed`` is true.
"""

from __future__ import annotations

import time
from typing import Any

from bot.cluster.milvus import FlushTimeout
from bot.procedure.context import Ctx
from bot.procedure.outcome import Ask, Done, StepError
from state.model import APPROVED

# Milvus has no watch for a flush: the state is polled, every 0.2 s at first (a flush is seen
# within about that), at most 8 queries at once (``MilvusClient.flush_all``).
POLL_SECONDS = 0.2


def run_flush(ctx: Ctx) -> dict[str, Any]:
    """Flush everything; return a summary {databases: {db: {collections, segments, seconds}}, seconds}."""
    client = ctx.milvus_client()
    started = time.monotonic()
    try:
        reports = client.flush_all(
            timeout=ctx.limits.flush_timeout, interval=min(POLL_SECONDS, ctx.settings.poll_interval_seconds)
        )
    except FlushTimeout as err:
        raise StepError(f"the flush did not finish in {ctx.limits.flush_timeout:g}s", str(err)) from None
    # Any other Milvus error is classified by the engine (retriable -> retried, else shown with Retry).
    databases = {
        r.db: {
            "collections": sorted(set(r.segments) | set(r.already_flushed)),
            "segments": r.segment_count,
            "seconds": round(r.elapsed, 2),
        }
        for r in reports
    }
    return {"databases": databases, "seconds": round(time.monotonic() - started, 2), "at": time.time()}


def flush(ctx: Ctx) -> Done | Ask:
    cp = ctx.upgrade.latest_checkpoint("flush_done")
    if cp is not None and cp.decision == APPROVED:
        return Done(_summary(ctx.facts.flush))
    summary = run_flush(ctx)
    ctx.set_facts(flush=summary)
    target = {"release": ctx.release, "namespace": ctx.namespace, "flush": summary}
    return Ask("flush_done", {**target, "operator": ctx.path.name == "operator"})


def _summary(summary: dict[str, Any]) -> str:
    dbs = summary.get("databases", {})
    segments = sum(i["segments"] for i in dbs.values())
    collections = sum(len(i["collections"]) for i in dbs.values())
    return f"{len(dbs)} databases, {collections} collections, {segments} segments in {summary.get('seconds', 0)}s"
