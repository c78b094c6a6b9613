"""Verification that proves no row was lost, against the running bot (both paths).

- Preflight records each collection's row count and load state (RESTful v2 get_stats and
  get_load_state); the counts are read again right after the last flush (what must survive).
- After the reinstall, verify waits until every collection that was loaded is loaded again (the
  simulated Milvus reloads them for a few polls after it comes back), then posts a per-database
  table: rows before and after, in digits, and the load state before and after.
- Rows lost (the simulator drops some flushed rows while Milvus is down) or a collection gone:
  the upgrade ends "failed" with the table naming them, and nothing more is changed.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.conftest import person
from tests.scenario import Person, cluster_writes

LOAD_STATE = "/v2/vectordb/collections/get_load_state"


def _rows_message(alice: Person) -> str:
    found = [m.text for m in alice.thread() if m.text.startswith("🔢 Rows before and after")]
    assert len(found) == 1, found
    return found[0]


def _row(table: str, collection: str) -> list[str]:
    line = next(line for line in table.splitlines() if line.startswith(collection + " "))
    return line.split()


def test_rows_are_counted_before_and_after_and_loading_is_waited_for(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.approve("flush_done")
    alice.approve("pvc_list")
    reinstall = alice.checkpoint("reinstall")
    asked_before = sum(1 for r in world.kube.requests if r.path.endswith(LOAD_STATE))
    alice.click(reinstall, "upgrade_approve")
    assert alice.outcome() == "succeeded"
    table = _rows_message(alice)
    sim = world.milvus("my-release")
    for db, c in (("default", "products"), ("analytics", "events"), ("default", "empty_collection")):
        rows = str(sim.total_rows(db, c))  # every row it holds, all flushed by now
        assert _row(table, c)[:3] == [c, rows, rows]
    assert int(_row(table, "products")[1]) > 0
    assert "Loaded → Loaded" in table
    for db in ("*default*", "*analytics*", "*search*"):
        assert db in table
    # Milvus came back with its collections loading: verify asked until each was loaded again.
    loaded = 5  # seed_data's collections, all loaded: products, empty_collection, events, sessions, documents
    asked_after = sum(1 for r in world.kube.requests if r.path.endswith(LOAD_STATE)) - asked_before
    assert asked_after > loaded
    assert "rows all present" in alice.root().text + "".join(str(b) for b in alice.root().blocks)


def _lose_while_down(world: World, alice: Person, release: str) -> None:
    alice.approve("flush_done")
    alice.approve("pvc_list")
    reinstall = alice.checkpoint("reinstall")
    sim = world.milvus(release)
    sim.lose_rows("default", "products", 7)  # while Milvus is down: the upgrade lost data
    sim.drop_collection("analytics", "sessions")
    alice.click(reinstall, "upgrade_approve")


def test_lost_rows_and_a_lost_collection_end_the_upgrade_failed(world: World, slack: SlackClient) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    _lose_while_down(world, alice, "my-release")
    assert alice.outcome() == "failed"
    table = _rows_message(alice)
    after = world.milvus("my-release").total_rows("default", "products")
    assert _row(table, "products")[:3] == ["products", str(after + 7), str(after)] and "⚠️" in " ".join(
        _row(table, "products")
    )
    assert _row(table, "sessions")[2] == "missing"
    lost = next(m.text for m in alice.thread() if "Upgrade failed: data is missing" in m.text)
    assert f"default.products ({after + 7} → {after})" in lost and "analytics.sessions" in lost
    assert "failed" in alice.root().text.lower()
    writes = len(cluster_writes(world))
    alice.type("status")
    alice.wait_ephemeral("State: *failed*")
    assert len(cluster_writes(world)) == writes  # nothing more was changed


def test_operator_path_lost_rows_end_the_upgrade_failed(
    make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator")
    bot = make_bot(world)
    alice = person(world, bot)
    alice.type("start my-milvus")
    _lose_while_down(world, alice, "my-milvus")
    assert alice.outcome(timeout=120) == "failed"
    table = _rows_message(alice)
    assert re.search(r"^products\s+\d+\s+\d+", table, re.M)
    before, after = (int(x) for x in _row(table, "products")[1:3])
    assert after == before - 7
