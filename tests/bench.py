"""Benchmark: ``./dev bench`` prints figures (never asserts on time: these machines are noisy).

Measures, against the real ``serve`` process, the sandbox and a private Redis:
- ack latency of signed slash commands (``help`` and a refused ``start``), p50/p95/max;
- ack latency of button clicks while an upgrade is running;
- wall time of a whole Helm-path upgrade with automatic approvals, and what it cost in
  Kubernetes API requests and Slack Web API calls;
- the bot process's resident memory, idle and after the upgrade.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from sandbox.botproc import BotProcess
from sandbox.redis_server import RedisServer, free_port
from sandbox.slack import SlackClient
from sandbox.world import CHANNEL, OPERATOR, SIGNING_SECRET, World
from tests.scenario import Person


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def _report(name: str, samples: list[float]) -> None:
    samples = sorted(samples)
    p95 = samples[max(0, int(len(samples) * 0.95) - 1)]
    print(
        f"{name:<44} n={len(samples):<4} p50={statistics.median(samples):7.1f} ms  "
        f"p95={p95:7.1f} ms  max={samples[-1]:7.1f} ms"
    )


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="mpub-bench-")
    redis_server = RedisServer().start()
    world = World(workdir).start()
    world.seed_default()
    bot = BotProcess(world.bot_env(redis_server.url, free_port()), os.path.join(workdir, "bot.log")).start()
    try:
        client = SlackClient(world.slack, bot.events_url, SIGNING_SECRET)
        assert bot.proc is not None
        pid = bot.proc.pid
        client.slash(OPERATOR, CHANNEL, "/milvus-pulsar-upgrade", "help")  # warm-up (auth.test)
        print(f"bot RSS idle: {_rss_mib(pid):.1f} MiB")
        _report(
            "slash command `help` ack",
            _timed(lambda: client.slash(OPERATOR, CHANNEL, "/milvus-pulsar-upgrade", "help"), 100),
        )
        _report(
            "slash command `start Bad_Name` ack",
            _timed(lambda: client.slash(OPERATOR, CHANNEL, "/milvus-pulsar-upgrade", "start Bad_Name"), 50),
        )

        alice = Person(world, client)
        world.kube.clear_requests()
        calls_before = len(world.slack.calls)
        t0 = time.perf_counter()
        alice.type("start my-release")
        clicks = []
        for kind in ("flush_done", "pvc_list", "reinstall"):
            cp = alice.checkpoint(kind, timeout=120)
            t = time.perf_counter()
            alice.click(cp, "upgrade_approve")
            clicks.append((time.perf_counter() - t) * 1000)
        outcome = alice.outcome(timeout=300)
        wall = time.perf_counter() - t0
        _report("button click ack during an upgrade", clicks)
        print(f"whole Helm upgrade in the sandbox: {outcome} in {wall:.1f} s (approvals clicked at once)")
        print(f"  Kubernetes API requests (bot + helm): {len(world.kube.requests)}")
        print(f"  Slack Web API calls: {len(world.slack.calls) - calls_before}")
        print(f"bot RSS after the upgrade: {_rss_mib(pid):.1f} MiB")
        return 0 if outcome == "succeeded" else 1
    finally:
        bot.stop()
        world.stop()
        redis_server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
