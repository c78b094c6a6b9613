"""Stopping a child process politely (SIGTERM, then SIGKILL) or as a crash (SIGKILL)."""

from __future__ import annotations

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
