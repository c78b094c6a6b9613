"""Run the real bot (``python -m bot serve``) as a subprocess, for the tests and the demo.

``start()`` returns once ``GET /healthz`` answers 200; ``kill()`` is a crash: SIGKILL to the bot
and every process it started (a helm it is running dies with it, as in a pod that dies);
``restart()`` starts a fresh process with the same environment. The process's log lines
(stderr) are kept in a file for assertions such as "no secret in the log". ``serve`` is two
processes, the Slack edge and its child the runner (see bot/app.py): ``runner_pids()`` lists
the latter; both write to the same log.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx

from sandbox._proc import crash_group, terminate


class BotProcess:
    def __init__(self, env: dict[str, str], log_path: str) -> None:
        self.env = env
        self.port = int(env["PORT"])
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def events_url(self) -> str:
        return self.url + "/slack/events"

    def start(self, timeout: float = 30.0) -> BotProcess:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],  # logs as LOG_FORMAT / LOG_LEVEL say (default json, INFO)
            env=self.env,
            stdout=log,
            stderr=log,
            start_new_session=True,  # its own process group, so that kill() takes its helm too
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the bot exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"the bot did not become healthy:\n{self.log()[-3000:]}")

    def runner_pids(self) -> list[int]:
        """The pids of the edge's child processes (the runner), read from /proc."""
        if self.proc is None:
            return []
        found: set[int] = set()
        try:
            tasks = os.listdir(f"/proc/{self.proc.pid}/task")
        except OSError:
            return []
        for task in tasks:
            try:
                with open(f"/proc/{self.proc.pid}/task/{task}/children", encoding="ascii") as fh:
                    found.update(int(pid) for pid in fh.read().split())
            except OSError:
                continue
        return sorted(found)

    def log(self) -> str:
        if not os.path.exists(self.log_path):
            return ""
        with open(self.log_path, encoding="utf-8", errors="replace") as fh:
            return fh.read()

    def stop(self) -> None:
        terminate(self.proc, 10)
        crash_group(self.proc)  # nothing it started outlives it
        self.proc = None

    def kill(self) -> None:
        crash_group(self.proc)
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()
