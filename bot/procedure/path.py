"""What an installation method is to the engine: one object per path (Helm, milvus-operator).

A ``Path`` holds everything that differs between the two ways Milvus is installed: the steps
in order, the labels that find its Pulsar volumes and its pods, the plan, the result checks
of verify, and what an abort leaves and how a restore undoes it. The engine and the shared
steps (flush, volumes, pods, verify) ask ``ctx.path``; nothing else branches on the mode.
The two objects are ``helm_path.HELM`` and ``operator_path.OPERATOR``; ``paths.path_for``
picks one for an upgrade.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bot.procedure.context import Ctx
    from bot.procedure.outcome import Outcome
    from state.model import Upgrade

StepFn = Callable[["Ctx"], "Outcome"]


class Path(ABC):
    name: str  # the upgrade's mode: "helm" or "operator"
    destructive_steps: frozenset[str]  # a cancel waits for one of these to end, never stops it midway

    def __init__(self, steps: list[tuple[str, StepFn]]) -> None:
        self.steps = steps
        self._by_name = dict(steps)

    def step(self, name: str) -> StepFn:
        return self._by_name[name]

    def step_after(self, name: str) -> str | None:
        order = [n for n, _ in self.steps]
        i = order.index(name) + 1
        return order[i] if i < len(order) else None

    def visible_steps(self) -> list[str]:
        """The steps the root message lists (detect runs before the root exists)."""
        return [n for n, _ in self.steps if n != "detect"]

    # --- what finds this path's objects ------------------------------------------------------
    @abstractmethod
    def pulsar_v2_selector(self, release: str) -> str:
        """Labels of the Pulsar V2 PVCs (those the upgrade deletes)."""

    @abstractmethod
    def pulsar_v3_selector(self, release: str) -> str:
        """Labels of the Pulsar V3 PVCs after the reinstall."""

    @abstractmethod
    def pulsar_release(self, release: str) -> str:
        """The ``release`` label of this path's Pulsar pods."""

    @abstractmethod
    def pod_selectors(self, release: str) -> list[dict[str, str]]:
        """Label sets (any of them) that mark a pod of this installation."""

    # --- words and checks --------------------------------------------------------------------
    @abstractmethod
    def plan_text(self, u: Upgrade) -> str:
        """The plan posted after preflight."""

    @abstractmethod
    def verify_result(self, ctx: Ctx) -> list[str]:
        """Problems with the result that only this path can see (volumes, images); empty when right."""

    # --- abort and restore -------------------------------------------------------------------
    @abstractmethod
    def restore_offer(self, ctx: Ctx) -> dict[str, Any] | None:
        """The target of a "restore" checkpoint after an abort, or None when there is nothing to restore."""

    @abstractmethod
    def abort_state(self, u: Upgrade, restorable: bool) -> str:
        """Where an aborted upgrade leaves the installation, in one or two sentences."""

    @abstractmethod
    def restore(self, ctx: Ctx) -> str:
        """Undo the upgrade after an approved restore checkpoint; returns what was done."""
