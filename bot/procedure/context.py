"""What a step gets: the upgrade record, the adapters, and a few ways to report.

Steps never touch Slack or Redis directly: ``record`` writes facts to the upgrade record
(in Redis, atomically) and ``say``/``upload`` ask the engine to post into the thread, once
per key, so a step that runs twice does not post twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bot.cluster.helm import HelmCli
from bot.cluster.kube import Kube
from bot.cluster.milvus import MilvusClient
from bot.procedure.path import Path
from bot.settings import Settings
from state.model import Facts, Upgrade, assign_facts


@dataclass
class Limits:
    """Time limits of the waits (seconds). Not in the contract table: extra settings, see the README."""

    flush_timeout: float = 600.0
    pvc_gone_timeout: float = 300.0
    pods_timeout: float = 900.0
    load_timeout: float = 600.0
    watch_chunk: int = 20


@dataclass
class Ctx:
    upgrade: Upgrade
    settings: Settings
    kube: Kube
    helm: HelmCli
    milvus: Callable[[str, str], MilvusClient]
    limits: Limits
    path: Path
    _record: Callable[[Callable[[Upgrade], None]], Upgrade]
    _say: Callable[[str, str], None]
    _upload: Callable[[str, str, str, str, str], None]

    @property
    def release(self) -> str:
        return self.upgrade.release

    @property
    def namespace(self) -> str:
        return self.upgrade.namespace

    @property
    def facts(self) -> Facts:
        """What both paths keep (typed); each path's own marks are ``upgrade.helm`` / ``upgrade.operator``."""
        return self.upgrade.facts

    def record(self, change: Callable[[Upgrade], None]) -> None:
        """Write to the upgrade record in Redis now (before acting on it) and refresh ``upgrade``."""
        self.upgrade = self._record(change)

    def set_facts(self, **values: Any) -> None:
        """Write fields of ``Facts``, ``HelmState`` or ``OperatorState`` (each name belongs to one
        of them) in one atomic record write; an unknown name is a TypeError, never a new key."""
        self.record(lambda u: assign_facts(u, values))

    def deadline(self, key: str, seconds: float) -> float:
        """When the wait ``key`` gives up (``time.time()``): ``seconds`` from its first run, recorded
        so a restart keeps it, and started afresh after each Retry click."""
        attempt = len(self.facts.retries)
        info = self.facts.deadlines.get(key)
        if not info or info.get("attempt") != attempt:
            info = {"attempt": attempt, "at": time.time() + seconds}
            fresh = info
            self.record(lambda u: u.facts.deadlines.__setitem__(key, fresh))
        return float(info["at"])

    def say(self, key: str, text: str) -> None:
        """Post ``text`` into the upgrade's thread once for ``key``."""
        self._say(key, text)

    def upload(self, key: str, filename: str, content: str, title: str, comment: str) -> None:
        self._upload(key, filename, content, title, comment)

    def milvus_client(self) -> MilvusClient:
        return self.milvus(self.release, self.namespace)
