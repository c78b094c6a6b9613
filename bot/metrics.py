"""Prometheus metrics (``GET /metrics``, text format, from the ``prometheus-client`` package).

Counters and histograms are updated where things happen (the engine, the notifier, the
adapters); what is state (upgrades by state, checkpoints waiting and their age, whether this
process is the active runner) is read from Redis at scrape time by ``StateCollector``, so
every replica reports the same truth and nothing drifts after a restart.

- ``mpub_upgrades{state}``: upgrades by state (running, waiting for approval, paused, stopped
  with an error; and the ended ones among the 500 most recent: succeeded, failed, aborted)
- ``mpub_step_duration_seconds{path,step}``: histogram of step durations (start to done)
- ``mpub_checkpoints_waiting``, ``mpub_checkpoint_oldest_wait_seconds``
- ``mpub_slack_api_calls_total{method,result}``, ``mpub_slack_rate_limited_total{method}``
- ``mpub_kubernetes_api_errors_total{kind}``, ``mpub_milvus_api_errors_total{kind}``
- ``mpub_runner_leader``: 1 when this process holds the runner lease, else 0

``serve`` is two processes (the Slack edge and the runner, see ``bot.app``); the runner's are
most of these. The edge's ``/metrics`` asks the runner for its page and ``merged`` makes one
exposition of the two: each family once, the samples of both (counters and histograms summed
where both have the same series).
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

STEP_SECONDS = Histogram(
    "mpub_step_duration_seconds",
    "Duration of upgrade steps, from start to done (waits included)",
    ["path", "step"],
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
    registry=REGISTRY,
)
SLACK_CALLS = Counter(
    "mpub_slack_api_calls_total", "Slack Web API calls by method and result", ["method", "result"], registry=REGISTRY
)
SLACK_RATE_LIMITED = Counter(
    "mpub_slack_rate_limited_total", "Slack answers 429 (rate limited) by method", ["method"], registry=REGISTRY
)
KUBE_ERRORS = Counter(
    "mpub_kubernetes_api_errors_total",
    "Kubernetes API calls that failed, by kind (temporary, conflict, not_found, other)",
    ["kind"],
    registry=REGISTRY,
)
MILVUS_ERRORS = Counter(
    "mpub_milvus_api_errors_total",
    "Milvus HTTP calls that failed, by kind (retriable, permanent)",
    ["kind"],
    registry=REGISTRY,
)


def slack_call(method: str, result: str) -> None:
    SLACK_CALLS.labels(method=method, result=result).inc()
    if result == "ratelimited":
        SLACK_RATE_LIMITED.labels(method=method).inc()


def kube_error(kind: str) -> None:
    KUBE_ERRORS.labels(kind=kind).inc()


def milvus_error(retriable: bool) -> None:
    MILVUS_ERRORS.labels(kind="retriable" if retriable else "permanent").inc()


def step_done(path: str, step: str, seconds: float) -> None:
    STEP_SECONDS.labels(path=path, step=step).observe(max(0.0, seconds))


class StateCollector(Collector):
    """What is true now, read at scrape time: ``upgrades()`` gives (state word, oldest waiting
    checkpoint's creation time or None) per upgrade; ``leader()`` whether this process runs steps."""

    def __init__(self, upgrades: Callable[[], list[tuple[str, float | None]]], leader: Callable[[], bool]) -> None:
        self.upgrades = upgrades
        self.leader = leader

    def collect(self) -> Iterator[Any]:
        rows = self.upgrades()
        by_state = GaugeMetricFamily("mpub_upgrades", "Upgrades by state", labels=["state"])
        for state, n in sorted(Tally(state for state, _ in rows).items()):
            by_state.add_metric([state], n)
        yield by_state
        waiting = [created for _, created in rows if created is not None]
        yield GaugeMetricFamily("mpub_checkpoints_waiting", "Checkpoints waiting for a decision", value=len(waiting))
        oldest = time.time() - min(waiting) if waiting else 0.0
        yield GaugeMetricFamily(
            "mpub_checkpoint_oldest_wait_seconds", "Age of the oldest checkpoint waiting for a decision", value=oldest
        )
        yield GaugeMetricFamily(
            "mpub_runner_leader", "1 when this process holds the runner lease", value=1 if self.leader() else 0
        )


def exposition() -> bytes:
    return generate_latest(REGISTRY)


class _Fixed(Collector):
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families


def merged(*pages: bytes) -> bytes:
    """One exposition of several processes' pages: a family in more than one is written once,
    with the samples of all; a series in more than one has its values summed (counters,
    histogram buckets, counts and sums), except ``_created`` (the earliest) and gauges (the first)."""
    families: dict[str, Metric] = {}
    for page in pages:
        for family in text_string_to_metric_families(page.decode("utf-8")):
            have = families.get(family.name)
            if have is None:
                families[family.name] = family
                continue
            where = {(s.name, tuple(sorted(s.labels.items()))): i for i, s in enumerate(have.samples)}
            for sample in family.samples:
                i = where.get((sample.name, tuple(sorted(sample.labels.items()))))
                if i is None:
                    have.samples.append(sample)
                    continue
                old = have.samples[i]
                if sample.name.endswith("_created"):
                    have.samples[i] = old._replace(value=min(old.value, sample.value))
                elif have.type != "gauge":
                    have.samples[i] = old._replace(value=old.value + sample.value)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(list(families.values())))
    return generate_latest(registry)
