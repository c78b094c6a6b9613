"""Operator path: the bot dies between recording "delete started" and the DELETE reaching the API server.

Covers: the DELETE of the Milvus resource is held by an API-server hang (so it is never applied),
the bot's whole process tree is killed, and on restart the bot sees the resource still there
without a deletionTimestamp, sends the DELETE itself (it does not follow a deletion that never
happens), and the upgrade succeeds with etcd and MinIO PVCs kept.
"""

from __future__ import annotations

from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.scenario import Person

WORLD_SEED = "operator"
CR = r"/apis/milvus.io/v1beta1/namespaces/default/milvuses/my-milvus$"


def test_killed_before_the_cr_delete_reached_the_api_server(world: World, slack: SlackClient, bot: BotProcess) -> None:
    kept = world.pvcs("default", "app.kubernetes.io/instance=my-milvus-etcd") + world.pvcs(
        "default", "app=minio,release=my-milvus-minio"
    )
    assert kept
    alice = Person(world, slack)
    alice.type("start my-milvus")
    alice.approve("flush_done")
    cp = alice.checkpoint("pvc_list")
    world.kube.inject_fault("DELETE", CR, hang_seconds=120, count=1)
    alice.click(cp, "upgrade_approve")
    alice.wait(
        lambda: any(r.method == "DELETE" and r.path.endswith("/milvuses/my-milvus") for r in world.kube.requests),
        60,
        "the DELETE to be sent",
    )
    bot.kill()
    world.kube.clear_faults()
    cr = world.store.try_get("milvuses.milvus.io", "default", "my-milvus")
    assert cr is not None and not cr["metadata"].get("deletionTimestamp")  # the DELETE never took effect
    bot.start()
    alice.approve("reinstall")
    assert alice.outcome(timeout=120) == "succeeded"
    assert any("sending it now" in m.text for m in alice.thread())
    assert set(kept) <= set(world.pvcs("default"))
