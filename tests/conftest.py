"""Shared fixtures: a private redis-server, the simulated world, the real bot process.

The Redis server is started per test session on a free port (append-only, so a test can
restart it and find its data), and flushed between tests. ``world`` is a fresh simulated
cluster + Slack + Milvus per test, seeded with the Helm scenario (a module can set
``WORLD_SEED = "operator"``) by the real Helm 4 (``@BOTH_HELMS``: with Helm 3 too); ``bot``
is ``python -m bot serve`` against both. A test that needs another world or bot settings uses
``make_world`` / ``make_bot``, which stop everything they started.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from sandbox.botproc import BotProcess
from sandbox.kube.server import KubeApiServer
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack import SlackClient
from sandbox.world import SIGNING_SECRET, World
from tests.scenario import Person


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer().start()
    yield server
    server.cleanup()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    redis.Redis.from_url(redis_server.url).flushall()
    return redis_server.url


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    """A bare simulated Kubernetes API server (no controllers), for the sandbox's own tests."""
    srv = KubeApiServer().start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def make_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., World]]:
    """``make_world(seed="default"|"operator", **World options)``: a started, seeded world."""
    worlds: list[World] = []

    def make(seed: str = "default", **options: Any) -> World:
        w = World(str(tmp_path_factory.mktemp("world")), **options).start()
        worlds.append(w)
        if seed == "operator":
            w.seed_operator()
        else:
            w.seed_default()
        return w

    yield make
    for w in worlds:
        w.stop()


@pytest.fixture
def world(request: pytest.FixtureRequest, make_world: Callable[..., World]) -> World:
    """The seeded world, with Helm 4 unless a test asks for another (``BOTH_HELMS``)."""
    return make_world(getattr(request.module, "WORLD_SEED", "default"), helm_major=getattr(request, "param", 4))


# ``@BOTH_HELMS`` on a test that uses ``world``: run it with the real Helm 4 and Helm 3.
BOTH_HELMS = pytest.mark.parametrize("world", [4, 3], indirect=True, ids=["helm4", "helm3"])


@pytest.fixture
def make_bot(redis_url: str) -> Iterator[Callable[..., BotProcess]]:
    """``make_bot(world, **env overrides)``: a running ``serve`` process against ``world``."""
    bots: list[BotProcess] = []

    def make(w: World, **env: str) -> BotProcess:
        log = os.path.join(w.workdir, f"bot{len(bots)}.log")
        bots.append(BotProcess(w.bot_env(redis_url, free_port(), **env), log).start())
        return bots[-1]

    yield make
    for b in bots:
        b.stop()


@pytest.fixture
def bot(make_bot: Callable[..., BotProcess], world: World) -> BotProcess:
    return make_bot(world)


@pytest.fixture
def slack(world: World, bot: BotProcess) -> SlackClient:
    return SlackClient(world.slack, bot.events_url, SIGNING_SECRET)


def person(w: World, b: BotProcess, user: str = "U0ALICE") -> Person:
    """A person typing in ``w``'s Slack, whose requests reach bot ``b``."""
    return Person(w, SlackClient(w.slack, b.events_url, SIGNING_SECRET), user)
