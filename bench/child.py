"""The server under test as a child process: ``python -m pusher_compat serve`` on a free
loopback port, its log drained to a list, its memory read from ``/proc``. Shared by the
single-process memory scenarios (``flood_memory.py``, ``hold_channels.py``)."""

from __future__ import annotations

import asyncio
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import aiohttp

__all__ = ["HOST", "ChildServer", "proc_status_kib", "run_scenario"]

T = TypeVar("T")

HOST = "127.0.0.1"
"""Loopback only: nothing here leaves this machine."""
ROOT = Path(__file__).resolve().parent.parent
_LISTEN_RE = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_LOG_LINES = 2000
"""Log lines kept; the older half is dropped past it (a flood logs without end)."""


def proc_status_kib(pid: int, field: str) -> int:
    """A ``kB`` line of ``/proc/<pid>/status`` (``VmRSS``, ``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


class ChildServer:
    """``python -m pusher_compat serve`` with ``config_text`` (written to ``directory``)."""

    def __init__(self, config_text: str, directory: Path, start_timeout: float = 20.0) -> None:
        path = directory / "pusher-compat.toml"
        path.write_text(config_text)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "pusher_compat", "serve", "--host", HOST, "--port", "0",
             "--config", str(path)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        self.log: list[str] = []
        self.port = self._wait_for_port(start_timeout)
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_port(self, timeout: float) -> int:
        assert self.process.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line:
                break
            self.log.append(line)
            match = _LISTEN_RE.search(line)
            if match:
                return int(match.group(1))
        self.stop()
        raise RuntimeError("server did not start:\n" + "".join(self.log))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.log.append(line)
            if len(self.log) > _LOG_LINES:
                del self.log[:_LOG_LINES // 2]

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def rss_kib(self) -> int:
        return proc_status_kib(self.pid, "VmRSS")

    def stop(self, timeout: float = 15) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


def run_scenario(name: str, config_text: str,
                 scenario: Callable[[ChildServer], Awaitable[T]]) -> tuple[ChildServer, T] | None:
    """Run ``scenario`` against a :class:`ChildServer` with ``config_text``, stopped after;
    the server (its log kept) and the result, or None when the run failed (said on stderr
    with the server's log tail)."""
    def log(message: str) -> None:
        print(f"{name}: {message}", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix=f"{name}-") as directory:
        server = ChildServer(config_text, Path(directory))
        log(f"server pid {server.pid} on port {server.port}")
        try:
            return server, asyncio.run(scenario(server))
        except (RuntimeError, TimeoutError, aiohttp.ClientError) as error:
            log(f"run failed: {error!r}")
            log("server log tail:\n" + "".join(server.log[-20:]))
            return None
        finally:
            server.stop()
