"""Stopping a child process politely (SIGTERM, then SIGKILL) or as a crash (SIGKILL).

``crash_group`` kills a child started with ``start_new_session=True`` together with everything
it started (its helm, say), as a pod dying takes every process in it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def terminate(proc: subprocess.Popen[bytes] | None, grace: float = 10.0) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def crash(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is not None:
        proc.kill()
        proc.wait(5)


def crash_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGKILL the child's whole process group (it must lead one: ``start_new_session=True``)."""
    if proc is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
