"""Shared fixtures: a private redis-server, the simulated world, the real bot process.

The Redis server is started per test session on a free port (append-only, so a test can
restart it and find its data), and flushed between tests. ``world`` is a fresh simulated
cluster + Slack + Milvus per test; ``bot`` is ``python -m bot serve`` against both.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import redis

from sandbox.botproc import BotProcess
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack import SlackClient
from sandbox.world import SIGNING_SECRET, World


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
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    w = World(str(tmp_path_factory.mktemp("world"))).start()
    w.seed_default()
    yield w
    w.stop()


@pytest.fixture
def bot_env(world: World, redis_url: str) -> dict[str, str]:
    return world.bot_env(redis_url, free_port())


@pytest.fixture
def bot(bot_env: dict[str, str], world: World) -> Iterator[BotProcess]:
    proc = BotProcess(bot_env, os.path.join(world.workdir, "bot.log")).start()
    yield proc
    proc.stop()


@pytest.fixture
def slack(world: World, bot: BotProcess) -> SlackClient:
    return SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
