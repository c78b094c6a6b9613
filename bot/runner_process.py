"""The runner process (``python -m bot runner``, bot/runner_main.py) as the Slack edge sees it:
spawned, asked (its state, its metrics, a scan) over a unix socket in a private directory,
waited for, stopped with SIGTERM.

Light on purpose: ``serve`` spawns the child before it imports the edge's own web stack, so that
the two interpreters start side by side on the node's cores instead of one after the other (a
bot start waits for both)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import httpx

log = logging.getLogger(__name__)


class RunnerProcess:
    def __init__(self, log_args: list[str], grace: float) -> None:
        self.log_args = log_args
        self.grace = grace
        self.dir = tempfile.mkdtemp(prefix="mpub-runner-")
        self.path = os.path.join(self.dir, "control.sock")
        self.proc: subprocess.Popen[bytes] | None = None
        self._async: httpx.AsyncClient | None = None
        self._sync = httpx.Client(transport=httpx.HTTPTransport(uds=self.path), base_url="http://runner")

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    @property
    def _client(self) -> httpx.AsyncClient:
        if self._async is None:  # made on the edge's event loop, where it is used
            self._async = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=self.path), base_url="http://runner")
        return self._async

    def spawn(self) -> RunnerProcess:
        """Start the child (it dies with this process: PR_SET_PDEATHSIG, set by the child)."""
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys; sys.path.insert(0, {root!r}); from bot.cli import main; sys.exit(main())",
                "runner",
                "--control",
                self.path,
                "--parent",
                str(os.getpid()),
                *self.log_args,
            ],
            stdin=subprocess.DEVNULL,
        )
        return self

    async def start(self, stop: asyncio.Event, timeout: float = 300.0) -> int | None:
        """Wait until the spawned child answers on its socket: None, or its exit status if it ended."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout
        exited = asyncio.ensure_future(self.wait())  # one waiter for its end, not one per look
        try:
            while time.monotonic() < deadline and not stop.is_set():
                if exited.done():
                    return exited.result()
                with contextlib.suppress(httpx.HTTPError, OSError):
                    if (await self._client.get("/state", timeout=2)).status_code == 200:
                        return None
                await asyncio.wait({exited}, timeout=0.05)
        finally:
            exited.cancel()
        if stop.is_set():
            return None
        log.error("the runner process did not start within %gs", timeout)
        self.kill()
        return 1

    async def wait(self) -> int:
        """Its exit status, once it has ended: woken by its pidfd (Linux), else looked at every 0.1 s."""
        assert self.proc is not None
        if self.proc.poll() is None:
            try:
                fd = os.pidfd_open(self.proc.pid)
            except (AttributeError, OSError):  # no pidfd here
                while self.proc.poll() is None:
                    await asyncio.sleep(0.1)
                return _status(self.proc.returncode)
            loop = asyncio.get_running_loop()
            ended = loop.create_future()

            def readable() -> None:
                if not ended.done():
                    ended.set_result(None)

            loop.add_reader(fd, readable)
            try:
                if self.proc.poll() is None:
                    await ended
            finally:
                loop.remove_reader(fd)
                os.close(fd)
        return _status(self.proc.wait())

    async def state(self) -> str:
        """What the child's runner is: leader, standby, stopping, or unreachable."""
        try:
            response = await self._client.get("/state", timeout=2)
            return str(response.json()["runner"])
        except (httpx.HTTPError, OSError, ValueError, KeyError, TypeError):
            return "unreachable"

    async def exposition(self) -> bytes | None:
        """The child's metrics page, or None when it does not answer."""
        try:
            response = await self._client.get("/metrics", timeout=10)
        except (httpx.HTTPError, OSError):
            return None
        return response.content if response.status_code == 200 else None

    def scan(self, namespace: str | None) -> str:
        """The answer to ``scan``, from the child (it holds the Kubernetes client); in a thread."""
        try:
            response = self._sync.get("/scan", params={"namespace": namespace or ""}, timeout=600)
            response.raise_for_status()
        except httpx.HTTPError as err:
            log.warning("scan: the runner process did not answer: %s", type(err).__name__)
            return "I could not scan: the bot's runner did not answer. Try again in a minute."
        return response.text

    async def stop(self) -> int:
        """SIGTERM, then wait for it to end its steps (its grace, and a margin): its exit status."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.wait(), self.grace + 15)
        except TimeoutError:
            log.error("the runner process did not stop within %gs: killing it", self.grace + 15)
            self.kill()
            return 1

    def kill(self) -> None:
        """Nothing outlives the edge (also the child's own PR_SET_PDEATHSIG)."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(5)  # reaped: no zombie left behind
        shutil.rmtree(self.dir, ignore_errors=True)


def _status(returncode: int) -> int:
    """A child's exit status as a shell reports it (killed by signal N: 128 + N)."""
    return 128 - returncode if returncode < 0 else returncode
