"""Kill points during the flush and the verify with Milvus reached directly (MILVUS_MGMT_URL /
MILVUS_URL), where the crash matrix's API-server hang cannot hold a Milvus call.

Each point holds the exact next Milvus request the bot makes (``MilvusSim.hold``: the request
waits inside Milvus before any work; ``Hold.held`` says it is there), SIGKILLs the bot's whole
process group, restarts it with the same environment and approves what is left, then asserts
what the crash matrix asserts (``tests/test_crash_matrix.py``, whose driver and checks are
used as they are): ``succeeded``, every approved PVC and PV deleted exactly once and nothing
else, the final values (Helm) or spec (operator), no live buttons. The held request is let go
after the kill (so it is served late, to a client that is gone), as a Milvus that did the work
but whose answer was lost; every Milvus call of the run went direct, none through the proxy.

Points: the first flush (persist, its state), the second flush at the uninstall click (the
RESTful database list on port 19530, persist, its state), and verify (``/healthz``, the
collections), on the Helm path; the second flush and verify on the operator path.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from sandbox.botproc import BotProcess
from sandbox.milvus import MilvusSim
from sandbox.world import World
from tests.scenario import Person
from tests.test_crash_matrix import (
    NS,
    Held,
    Point,
    Run,
    _assert_deletes,
    _assert_no_live_buttons,
    _drive,
    _expected_spec,
    _pvc_snapshot,
    _release,
)


def hold_milvus(route: str, server: str = "mgmt", method: str = "*", at_once: int = 1) -> Callable[[Run], Held]:
    """Hold the bot's next direct requests to ``route`` (``at_once``: as many as it sends together,
    e.g. the flush's state queries); held once one waits inside Milvus and none got through. The
    ones held are answered once the bot is killed (to nobody: the work done, the answer lost)."""

    def arm(run: Run) -> Held:
        sim = run.world.milvus(run.release)
        before = len(sim.calls(route))
        hold = sim.hold(f"^{route}$", method=method, server=server, count=at_once)
        run.marks["milvus_hold"] = hold
        run.marks.setdefault("after_kill", []).append(hold.release)

        def held() -> bool:
            assert len(sim.calls(route)) == before, "a request to the held route got through"
            return hold.held >= 1

        return held

    return arm


# The flush asks about every pending collection at once (up to 8 in flight).
STATE_AT_ONCE = 8


def _p(point: Point) -> Any:
    return pytest.param(point, id=point.id)


HELM_POINTS = [
    _p(Point("flush1-persist", "start", hold_milvus("/api/v1/persist", method="POST"))),
    _p(Point("flush1-persist-state", "start", hold_milvus("/api/v1/persist/state", at_once=STATE_AT_ONCE))),
    _p(Point("flush2-databases-list", "flush_done", hold_milvus("/v2/vectordb/databases/list", server="rest"))),
    _p(Point("flush2-persist", "flush_done", hold_milvus("/api/v1/persist", method="POST"))),
    _p(Point("flush2-persist-state", "flush_done", hold_milvus("/api/v1/persist/state", at_once=STATE_AT_ONCE))),
    _p(Point("verify-healthz", "reinstall", hold_milvus("/healthz"))),
    _p(Point("verify-collections", "reinstall", hold_milvus("/api/v1/collections"))),
]
OPERATOR_POINTS = [
    _p(Point("flush2-persist-state", "flush_done", hold_milvus("/api/v1/persist/state", at_once=STATE_AT_ONCE))),
    _p(Point("verify-healthz", "reinstall", hold_milvus("/healthz"))),
]


def _direct_bot(world: World, release: str, make_bot: Callable[..., BotProcess]) -> BotProcess:
    mgmt, rest = world.milvus_direct_urls(release)
    return make_bot(world, MILVUS_MGMT_URL=mgmt, MILVUS_URL=rest)


def _check_direct(run: Run) -> None:
    assert "milvus_hold" in run.marks and 1 <= run.marks["milvus_hold"].caught <= STATE_AT_ONCE
    assert not [r.path for r in run.world.kube.requests if "/proxy" in r.path], "a Milvus call went through the proxy"
    assert run.world.milvus(run.release).unflushed() == []


@pytest.mark.parametrize("point", HELM_POINTS)
def test_helm_kill_point_milvus_direct(
    point: Point, make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("default", reclaim_policy="Retain")
    bot = _direct_bot(world, "my-release", make_bot)
    original = world.releases[(NS, "my-release")].values
    before = _pvc_snapshot(world)
    run = _drive(world, bot, point, "start my-release", "my-release", "app=pulsar,release=my-release")
    alice: Person = run.marks["alice"]
    assert alice.outcome(timeout=120) == "succeeded"
    release = _release(world, "my-release")
    assert release is not None and release.status == "deployed"
    assert release.config == {**original, "pulsar": {"enabled": False}, "pulsarv3": {"enabled": True}}
    assert world.pvcs(NS, "app=pulsar,release=my-release") == []
    _assert_deletes(run, before, None, restored=False)
    _assert_no_live_buttons(alice)
    _check_direct(run)


@pytest.mark.parametrize("point", OPERATOR_POINTS)
def test_operator_kill_point_milvus_direct(
    point: Point, make_world: Callable[..., World], make_bot: Callable[..., BotProcess]
) -> None:
    world = make_world("operator", reclaim_policy="Retain")
    bot = _direct_bot(world, "my-milvus", make_bot)
    original = world.releases[(NS, "my-milvus")].values
    before = _pvc_snapshot(world)
    run = _drive(world, bot, point, "start my-milvus", "my-milvus", "app=pulsar,release=my-milvus-pulsar")
    alice: Person = run.marks["alice"]
    assert alice.outcome(timeout=120) == "succeeded"
    cr = world.store.try_get("milvuses.milvus.io", NS, "my-milvus")
    assert cr is not None and cr["spec"] == _expected_spec(original)
    _assert_deletes(run, before, f"/apis/milvus.io/v1beta1/namespaces/{NS}/milvuses/my-milvus", restored=False)
    _assert_no_live_buttons(alice)
    _check_direct(run)


def _until(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_sandbox_milvus_hold_keeps_a_request_until_released() -> None:
    """The hold itself: only the matching request waits (before any work or log), only ``count``
    of them, and release serves it; a stop releases what is still held."""
    body = {"db_name": "default", "collection_names": ["docs"]}
    with MilvusSim() as sim, httpx.Client(timeout=10) as http, ThreadPoolExecutor(1) as pool:
        sim.add_collection("default", "docs", segments=1)
        hold = sim.hold(r"^/api/v1/persist$", method="POST")
        future = pool.submit(http.post, sim.mgmt_url + "/api/v1/persist", json=body)
        _until(lambda: hold.held == 1, "the persist to be held")
        assert not future.done()
        assert sim.calls("persist") == [] and sim.unflushed()  # nothing done, nothing logged
        other = http.request("GET", sim.mgmt_url + "/api/v1/collections", json={"db_name": "default"})
        assert other.status_code == 200  # another route is not held
        hold.release()
        assert future.result(timeout=10).status_code == 200
        assert (hold.held, hold.caught, len(sim.calls("persist"))) == (0, 1, 1)
        assert http.post(sim.mgmt_url + "/api/v1/persist", json=body).status_code == 200  # count=1: not held
        late = sim.hold(r"^/healthz$")
        future = pool.submit(http.get, sim.mgmt_url + "/healthz")
        _until(lambda: late.held == 1, "the healthz to be held")
        sim.stop()  # releases it first
        assert future.result(timeout=10).status_code == 200
