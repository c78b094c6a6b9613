"""Check the result: Milvus healthy, every database with the collections it had, Pulsar V3 volumes
present and no Pulsar V2 volume left."""

from __future__ import annotations

from bot.cluster.milvus import MilvusHttpError
from bot.procedure.context import Ctx
from bot.procedure.outcome import Done, StepError, Temporary
from state.model import now


def verify(ctx: Ctx) -> Done:
    client = ctx.milvus_client()
    try:
        ok, detail = client.healthz()
        if not ok:
            raise Temporary(f"Milvus /healthz is not OK yet: {detail}")
        missing = []
        for db, before in ctx.facts.databases.items():
            after = set(client.list_collections(db))
            missing += [f"{db}.{c}" for c in before if c not in after]
    except MilvusHttpError as err:
        raise Temporary(f"Milvus did not answer: {err}") from None
    if missing:
        raise StepError(f"collections missing after the upgrade: {', '.join(missing)}")
    problems = ctx.path.verify_result(ctx)
    if problems:
        raise StepError("; ".join(problems))
    if ctx.upgrade.downtime_ended_at is None:
        ctx.record(lambda u: setattr(u, "downtime_ended_at", now()))
    dbs = ctx.facts.databases
    return Done(f"healthy; {len(dbs)} databases and {sum(len(c) for c in dbs.values())} collections all present")
