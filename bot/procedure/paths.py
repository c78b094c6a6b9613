"""The two paths by mode, and which one an upgrade takes."""

from __future__ import annotations

from bot.procedure.helm_path import HELM
from bot.procedure.operator_path import OPERATOR
from bot.procedure.path import Path
from state.model import Upgrade

PATHS: dict[str, Path] = {HELM.name: HELM, OPERATOR.name: OPERATOR}


def path_for(upgrade: Upgrade) -> Path:
    """The upgrade's path; before detect has recorded the mode, Helm's (both start with detect)."""
    return PATHS.get(upgrade.mode or "", HELM)


def visible_steps(upgrade: Upgrade) -> list[str]:
    return path_for(upgrade).visible_steps()
