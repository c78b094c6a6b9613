"""The README's first command: ``milvus-pulsar-upgrade-bot demo`` rehearses the whole upgrade.

Covers: the demo exits 0 on both paths, prints the thread with every checkpoint and the
cluster before and after, ends with "Upgrade succeeded", and leaves no process behind.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(("mode", "after"), [("helm", "Pulsar V3 PVCs (app=pulsarv3): 9"), ("operator", "pulsar-v3")])
def test_demo_runs_the_whole_upgrade(mode: str, after: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "bot", "demo", "--mode", mode],
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
        after,
        "Result: Pulsar V2 → V3 upgrade",
    ):
        assert expected in out, expected
    assert out.rstrip().endswith("Upgrade succeeded")
