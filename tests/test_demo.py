"""The README's first command: ``milvus-pulsar-upgrade-bot demo`` rehearses the whole upgrade.

Covers: the demo exits 0 on both paths (the Helm path with the real Helm 4, the default, and
with ``--helm 3``), prints the thread with every checkpoint, the real chart's Pulsar V3 pods
and the cluster before and after, ends with "Upgrade succeeded", and leaves no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HELM_V3_PODS = "my-release-pulsarv3-bookie-0  1/1  Running"


@pytest.mark.parametrize(
    ("args", "after"),
    [
        (["--mode", "helm"], ["Pulsar V3 PVCs (app=pulsarv3): 9", HELM_V3_PODS, "real helm 4"]),
        (["--mode", "helm", "--helm", "3"], ["Pulsar V3 PVCs (app=pulsarv3): 9", HELM_V3_PODS, "real helm 3"]),
        (["--mode", "operator"], ["pulsar-v3"]),
    ],
    ids=["helm4", "helm3", "operator"],
)
def test_demo_runs_the_whole_upgrade(args: list[str], after: list[str]) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "demo", *args],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
        env={k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "BOT_"))},
    )
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for expected in (
        "=== Cluster before ===",
        "Checkpoint: flush done",
        "Checkpoint: delete these Pulsar V2 volumes?",
        "Checkpoint: reinstall with Pulsar V3?",
        "clicks upgrade_approve",
        "=== Cluster after ===",
        *after,
        "Result: Pulsar V2 → V3 upgrade",
    ):
        assert expected in out, expected
    assert out.rstrip().endswith("Upgrade succeeded")
