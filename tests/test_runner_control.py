"""The runner process's control socket (bot/runner_main.py), asked as the Slack edge asks it
(bot/runner_process.py), over a real unix socket:

- ``/state`` says leader, standby or stopping, as the engine and its runner are;
- a ``scan`` the runner cannot answer is logged there and answered 500, and the edge turns that
  into one plain sentence for Slack: no exception text, no traceback;
- an unknown path is 404.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import httpx
import pytest

from bot.runner_main import _ControlServer
from bot.runner_process import RunnerProcess


@dataclass
class _Runner:
    is_leader: bool = True
    instance: str = "runner-1"


@dataclass
class _Engine:
    """The three things the control socket reads of the engine."""

    runner: _Runner = field(default_factory=_Runner)
    stopping: bool = False
    scan_error: Exception | None = None

    def scan(self, namespace: str | None, command: str) -> str:
        if self.scan_error is not None:
            raise self.scan_error
        return f"scanned {namespace or 'every namespace'} for {command}"


@pytest.fixture
def control() -> Iterator[tuple[_Engine, RunnerProcess]]:
    engine = _Engine()
    edge = RunnerProcess([], grace=1)
    server = _ControlServer(edge.path, engine)  # type: ignore[arg-type]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield engine, edge
    finally:
        server.shutdown()
        server.server_close()
        edge.kill()


def test_state_follows_the_engine(control: tuple[_Engine, RunnerProcess]) -> None:
    engine, edge = control

    async def ask() -> str:
        return await edge.state()

    assert asyncio.run(ask()) == "leader"
    engine.runner.is_leader = False
    assert asyncio.run(ask()) == "standby"
    engine.stopping = True
    assert asyncio.run(ask()) == "stopping"


def test_a_scan_answers_through_the_socket(control: tuple[_Engine, RunnerProcess]) -> None:
    _, edge = control
    assert edge.scan("staging") == "scanned staging for /milvus-pulsar-upgrade"
    assert edge.scan(None) == "scanned every namespace for /milvus-pulsar-upgrade"


def test_a_failed_scan_is_logged_and_reaches_slack_as_one_sentence(
    control: tuple[_Engine, RunnerProcess], caplog: pytest.LogCaptureFixture
) -> None:
    engine, edge = control
    engine.scan_error = RuntimeError("kube exploded at 0xdeadbeef")
    with caplog.at_level(logging.ERROR, logger="bot.runner_main"):
        answer = edge.scan("default")
    assert answer == "I could not scan: the bot's runner did not answer. Try again in a minute."
    assert "deadbeef" not in answer and "Traceback" not in answer
    logged = [r for r in caplog.records if r.name == "bot.runner_main"]
    assert logged and logged[0].exc_info is not None and "/scan" in logged[0].getMessage()
    raw = _get(edge, "/scan")
    assert raw.status_code == 500 and "deadbeef" not in raw.text


def test_an_unknown_path_is_404(control: tuple[_Engine, RunnerProcess]) -> None:
    _, edge = control
    assert _get(edge, "/nope").status_code == 404


def _get(edge: RunnerProcess, path: str) -> httpx.Response:
    with httpx.Client(transport=httpx.HTTPTransport(uds=edge.path), base_url="http://runner") as client:
        return client.get(path)
