"""Operating the bot: /metrics, /readyz, JSON logs, and a graceful SIGTERM (against the real process).

- ``/metrics`` (Prometheus text format) scraped during an upgrade: upgrades by state, the
  waiting checkpoint and its age, this process leading the runner, Slack calls and 429s,
  Kubernetes errors by kind, and after the end the step-duration histogram and "succeeded".
- ``/readyz`` says Redis answers and the runner leads.
- Logs are one JSON object per line, each line of a step carrying its upgrade ID and step;
  LOG_FORMAT=text gives text lines; a bad LOG_LEVEL stops the start with one clear line.
- SIGTERM while a flush is under way (a Milvus request held): the process takes no new work,
  lets the step end, records it, releases the lease and exits 0; a new process carries on from
  the checkpoint without flushing again.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable

import httpx

from sandbox.botproc import BotProcess
from sandbox.slack import SlackClient
from sandbox.world import World
from tests.conftest import person
from tests.scenario import Person

PERSIST = "/api/v1/persist"


def _metric(page: str, name: str, **labels: str) -> float:
    """The value of one sample of the scraped page (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in page.splitlines():
        if line.startswith("#"):
            continue
        sample, _, value = line.rpartition(" ")
        key = sample.split("{", 1)
        if key[0] != name:
            continue
        got = ",".join(sorted(key[1].rstrip("}").split(","))) if len(key) > 1 else ""
        if got == want:
            return float(value)
    return 0.0


def test_metrics_and_readyz_during_an_upgrade(world: World, slack: SlackClient, bot: BotProcess) -> None:
    world.kube.inject_fault("GET", r"/namespaces/default/persistentvolumeclaims$", status=503, count=1)
    world.slack.rate_limit("chat.update", count=1, retry_after=1)
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.checkpoint("flush_done")
    page = httpx.get(f"{bot.url}/metrics").text
    assert _metric(page, "mpub_upgrades", state="waiting for approval") == 1
    assert _metric(page, "mpub_checkpoints_waiting") == 1
    assert _metric(page, "mpub_checkpoint_oldest_wait_seconds") >= 0
    assert _metric(page, "mpub_runner_leader") == 1
    assert _metric(page, "mpub_slack_api_calls_total", method="chat.postMessage", result="ok") >= 2
    assert _metric(page, "mpub_kubernetes_api_errors_total", kind="temporary") >= 1  # the injected 503
    ready = httpx.get(f"{bot.url}/readyz")
    assert ready.status_code == 200 and ready.json() == {"redis": "ok", "runner": "leader"}

    alice.approve("flush_done")
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    page = httpx.get(f"{bot.url}/metrics").text
    assert _metric(page, "mpub_upgrades", state="succeeded") == 1
    assert _metric(page, "mpub_checkpoints_waiting") == 0
    for step in ("preflight", "flush", "uninstall", "reinstall", "verify"):
        assert _metric(page, "mpub_step_duration_seconds_count", path="helm", step=step) >= 1, step
    assert _metric(page, "mpub_slack_rate_limited_total", method="chat.update") >= 1


def test_log_lines_are_json_with_the_upgrade_and_step(world: World, slack: SlackClient, bot: BotProcess) -> None:
    alice = Person(world, slack)
    alice.type("start my-release")
    alice.checkpoint("flush_done")
    lines = [json.loads(line) for line in bot.log().splitlines() if line.startswith("{")]
    assert lines and all({"level", "message", "time"} <= set(line) for line in lines)
    in_steps = [line for line in lines if line.get("step")]
    assert in_steps and all(re.fullmatch(r"[0-9]{8}-[0-9]{6}-[0-9a-f]{6}", line["upgrade_id"]) for line in in_steps)


def test_log_format_and_level_settings(world: World, make_bot: Callable[..., BotProcess], redis_url: str) -> None:
    text_bot = make_bot(world, LOG_FORMAT="text", LOG_LEVEL="debug")
    assert not text_bot.log().lstrip().startswith("{")
    assert "INFO" in text_bot.log() or "DEBUG" in text_bot.log()
    env = world.bot_env(redis_url, 1, LOG_LEVEL="chatty")
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2 and "LOG_LEVEL: must be one of" in done.stderr


def test_sigterm_mid_step_lets_the_step_end_and_a_new_process_carries_on(
    world: World, make_bot: Callable[..., BotProcess]
) -> None:
    bot = make_bot(world, BOT_SHUTDOWN_GRACE_SECONDS="60")
    alice = person(world, bot)
    sim = world.milvus("my-release")
    held = sim.hold(r"/api/v1/persist/state$", count=1)
    alice.type("start my-release")
    alice.wait(lambda: held.held == 1, 30, "the flush to be under way")
    assert bot.proc is not None
    proc = bot.proc
    proc.send_signal(signal.SIGTERM)
    alice.wait(lambda: "shutting down" in bot.log(), 15, "the bot to begin shutting down")
    assert proc.poll() is None  # it waits for the step under way
    held.release()
    assert proc.wait(timeout=60) == 0
    assert "stopped" in bot.log().rsplit("shutting down", 1)[1]
    first_round = sum(1 for r in world.kube.requests if r.path.endswith(PERSIST))  # the flush step's persists
    assert first_round > 0
    bot.proc = None
    bot.start()  # the next pod, same environment
    alice.approve("flush_done")  # the checkpoint the first process recorded and posted
    assert sum(1 for m in alice.thread() if m.text.startswith("Checkpoint: flush done")) == 1
    alice.approve("pvc_list")
    alice.approve("reinstall")
    assert alice.outcome() == "succeeded"
    # Two rounds in all: the flush step's (first process) and the backup's; none repeated.
    assert sum(1 for r in world.kube.requests if r.path.endswith(PERSIST)) == 2 * first_round
