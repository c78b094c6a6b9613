"""``scan``: which Milvus installations need this upgrade, against the running bot.

The world holds, besides the seeded Pulsar V2 releases (default and staging): a release of chart
4.2.58 already on Pulsar V3, a Milvus 2.6 release (chart 5.0.19), a Milvus 2.4 release (chart
4.2.20), and milvus-operator resources on Pulsar V2 and on Kafka. The scan names each with its
install method, chart and Milvus version, queue and verdict; ``--namespace`` narrows it; a
namespace the bot may not read is named, the others still answered; nothing is written; a
non-operator is refused.
"""

from __future__ import annotations

from collections.abc import Callable

from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import PULSAR_V2, SMALL, STRANGER, World
from tests.conftest import person
from tests.scenario import Person, cluster_writes


def _line(answer: str, name: str, namespace: str) -> str:
    return next(line for line in answer.splitlines() if f"`{name}` in `{namespace}`" in line)


def test_scan_gives_each_installation_its_verdict(world: World, slack: SlackClient) -> None:
    world.install("already-v3", "v3", {**SMALL, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}, "4.2.58")
    world.install("next-gen", "m26", {**SMALL}, "5.0.19")
    world.install("old", "m24", {**PULSAR_V2, **SMALL}, "4.2.20")
    world.create_milvus_cr("op-milvus", "ops")
    kafka = world.create_milvus_cr("op-kafka", "ops")
    world.store.patch(
        "milvuses.milvus.io",
        "ops",
        kafka.name,
        {"spec": {"dependencies": {"msgStreamType": "kafka", "pulsar": None}}},
        "merge",
    )
    world.settle()
    world.kube.clear_requests()

    alice = Person(world, slack)
    alice.type("scan")
    answer = alice.wait_ephemeral("*Scan*", timeout=30)
    needs = _line(answer, "my-release", "default")
    assert "Helm" in needs and "milvus-4.2.40" in needs and "Pulsar V2" in needs and "*needs this upgrade*" in needs
    assert "start my-release --namespace default" in needs
    assert "*needs this upgrade*" in _line(answer, "my-release", "staging")
    assert "*needs this upgrade*" in _line(answer, "other-release", "default")
    v3 = _line(answer, "already-v3", "v3")
    assert "milvus-4.2.58" in v3 and "Pulsar V3" in v3 and "*already on Pulsar V3*" in v3
    m26 = _line(answer, "next-gen", "m26")
    assert "*not applicable*" in m26 and "2.6 and newer" in m26
    m24 = _line(answer, "old", "m24")
    assert "*not applicable*" in m24 and "upgrade it to 2.5 first" in m24
    op = _line(answer, "op-milvus", "ops")
    assert "milvus-operator" in op and "Pulsar V2" in op and "*needs this upgrade*" in op
    kafka_line = _line(answer, "op-kafka", "ops")
    assert "Kafka" in kafka_line and "*not applicable*" in kafka_line
    assert cluster_writes(world) == []  # read-only

    alice.type("scan --namespace staging")
    narrowed = alice.wait_ephemeral("*Scan* of `staging`", timeout=30)
    assert "`my-release` in `staging`" in narrowed and "`default`" not in narrowed.split("\n", 1)[1]


def test_scan_names_a_namespace_it_may_not_read_and_refuses_non_operators(world: World, slack: SlackClient) -> None:
    world.kube.deny("list", "secrets", namespace="staging")
    alice = Person(world, slack)
    alice.type("scan")
    answer = alice.wait_ephemeral("*Scan*", timeout=30)
    assert "`staging`:" in answer and "forbidden" in answer.lower()
    assert "`my-release` in `default`" in answer
    mallory = alice.as_user(STRANGER)
    mallory.type("scan")
    assert "Nothing was changed" in mallory.wait_ephemeral("Not allowed")


def test_scan_looks_in_bot_namespaces_by_default(world: World, make_bot: Callable[..., BotProcess]) -> None:
    bot = make_bot(world, BOT_NAMESPACES="staging")
    alice = person(world, bot)
    alice.type("scan")
    answer = alice.wait_ephemeral("*Scan* of 1 namespaces", timeout=30)
    assert "`my-release` in `staging`" in answer and "in `default`" not in answer
