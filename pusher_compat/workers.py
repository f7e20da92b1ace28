"""``serve --workers N``: one supervisor process, N worker processes on one port.

Every worker is a whole server (``pusher-compat serve`` started again with ``--worker n``)
binding ``host:port`` with ``SO_REUSEPORT``, so the kernel spreads new connections over them,
and each is a node of the Redis adapter (its node id carries its pid): workers share channels,
presence, events and quotas exactly as separate machines would, and a worker that dies is
removed from presence by the survivors within the node lease.

The supervisor (:class:`Supervisor`) serves no client itself. It

* reserves the port: it binds ``host:port`` with ``SO_REUSEPORT`` and keeps that socket open
  (never listening, so it takes no connection), which with ``--port 0`` picks the free port
  every worker is then given;
* starts the workers, each holding one end of a socket pair: the worker writes one byte once
  it listens, and the end of the pair is the worker's lifeline (a worker whose supervisor is
  gone, even by ``SIGKILL``, sees end-of-file and drains);
* logs ``pusher-compat listening on ...`` once every worker listens;
* restarts a worker that exits, logging its exit code or signal, at once after a stable run
  and with a doubling delay (up to :data:`RESTART_MAX_SECONDS`) while it keeps dying young;
* on SIGTERM/SIGINT sends SIGTERM to every worker, each drains (4200 over ``drain_seconds``),
  and exits 0 once all have exited, killing any still running after :func:`stop_grace`.

A worker that exits before it ever listened at start-up (a bad certificate, a port taken by
another program) fails the start: the others are stopped and the supervisor exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ServerConfig, Settings

__all__ = [
    "RESTART_BASE_SECONDS",
    "RESTART_MAX_SECONDS",
    "STABLE_SECONDS",
    "Supervisor",
    "restart_delay",
    "run_worker",
    "stop_grace",
    "supervise",
    "worker_settings",
]

log = logging.getLogger("pusher_compat.workers")

STABLE_SECONDS = 30.0
"""A worker that ran this long before it exited is restarted at once (its streak forgotten)."""
RESTART_BASE_SECONDS = 0.5
"""The delay before restarting a worker that died young once; each further young death
doubles it."""
RESTART_MAX_SECONDS = 30.0
"""The longest delay between two starts of a worker in a crash loop."""
_READY = b"r"
"""What a worker writes on its supervisor channel once it listens."""


def restart_delay(young_deaths: int) -> float:
    """Seconds to wait before starting a worker again after ``young_deaths`` exits in a row,
    each within :data:`STABLE_SECONDS` of its start: 0 (it had run stably), then 0.5, 1,
    2 ... up to :data:`RESTART_MAX_SECONDS`, so a crash loop costs little CPU."""
    if young_deaths == 0:
        return 0.0
    return min(RESTART_MAX_SECONDS, RESTART_BASE_SECONDS * 2.0 ** (young_deaths - 1))


def stop_grace(server: ServerConfig) -> float:
    """How long stopped workers get before they are killed: a worker's own shutdown is the
    drain, then at most ``shutdown_timeout`` for closing sockets and as long for requests;
    five seconds more for the adapter to hand back its state."""
    return server.drain_seconds + 2 * server.shutdown_timeout + 5.0


def exit_reason(returncode: int) -> str:
    """``exited with code 1`` or ``was killed by SIGKILL``, for the log."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"was killed by {name}"


class Phase(enum.Enum):
    """Where the supervisor is in its life; it decides what a worker's exit means."""

    STARTING = "starting"
    """Workers are being started: one that exits before it listens fails the start."""
    SERVING = "serving"
    """Every worker listened once: one that exits is restarted."""
    STOPPING = "stopping"
    """Workers were told to stop: none is restarted."""


@dataclass(slots=True)
class Worker:
    """One worker slot: the process serving as worker ``index`` now, and its history."""

    index: int
    """1..N: the worker's number in logs (``worker=n``) and in its ``--worker`` option."""
    process: asyncio.subprocess.Process | None = None
    """The process now serving this slot (``None`` before the first start)."""
    channel: asyncio.StreamWriter | None = None
    """The supervisor's end of the socket pair with :attr:`process`; closing it (or the
    supervisor's death) tells the worker to drain."""
    started: float = 0.0
    """When :attr:`process` was started (the supervisor's monotonic clock)."""
    young_deaths: int = 0
    """Exits in a row within :data:`STABLE_SECONDS` of their start: the restart backoff."""
    keeper: asyncio.Task[None] | None = None
    """The task restarting this slot's worker whenever it exits (while serving)."""


class Supervisor:
    """Starts ``settings.server.workers`` workers on one port, keeps them running, stops them.

    ``argv`` is the ``pusher-compat`` command line the supervisor was started with: each
    worker runs it again with ``--port`` (the reserved one), ``--worker`` and
    ``--supervisor-fd`` added (the last of a repeated option wins), so it reads the same
    configuration file and options.
    """

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self._server = settings.server
        """The ``[server]`` settings: host, port, worker count, TLS, drain and timeouts."""
        self._argv = list(argv)
        """The command line each worker runs again, options added."""
        self._workers = [Worker(index) for index in range(1, settings.server.workers + 1)]
        """Every slot, in worker order."""
        self._phase = Phase.STARTING
        """What an exit means now (see :class:`Phase`)."""
        self._port = self._server.port
        """The port every worker binds: the configured one, or the free one picked for 0."""

    async def run(self) -> int:
        """Supervise until SIGTERM/SIGINT; the process's exit code (0, or 1 when the workers
        could not start)."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            reservation = self._reserve_port()
        except OSError as error:
            log.error("cannot listen on %s:%s: %s", self._server.host, self._port,
                      error.strerror or error)
            return 1
        with reservation:
            started = asyncio.ensure_future(
                asyncio.gather(*(self._start(worker) for worker in self._workers)))
            stopped = asyncio.ensure_future(stop.wait())
            first: set[asyncio.Future[Any]] = {started, stopped}
            await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
            listening = started.result() if started.done() else []
            if all(listening) and not stop.is_set():
                self._serving()
                await stopped
            code = 0
            for worker, ok in zip(self._workers, listening, strict=False):
                if not ok and worker.process is not None:
                    log.error("worker %s before it listened; stopping the others",
                              exit_reason(await worker.process.wait()),
                              extra={"worker": worker.index, "pid": worker.process.pid})
                    code = 1
            stopped.cancel()
            started.cancel()
            await self._stop_all()
        return code

    def _reserve_port(self) -> socket.socket:
        """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening: it holds the
        port (picked by the kernel for 0) for the workers while the supervisor lives."""
        host = self._server.host or None
        family, kind, proto, _, address = socket.getaddrinfo(
            host, self._port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        reservation = socket.socket(family, kind, proto)
        try:
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            reservation.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            reservation.bind(address)
        except OSError:
            reservation.close()
            raise
        self._port = reservation.getsockname()[1]
        return reservation

    def _serving(self) -> None:
        """Every worker listens: say where, once, and restart workers from now on."""
        self._phase = Phase.SERVING
        scheme = "https" if self._server.ssl_cert else "http"
        log.info("pusher-compat listening on %s://%s:%s with %d workers (WebSocket /app/{key}, "
                 "API /apps/{id})", scheme, self._server.host, self._port, len(self._workers))
        for worker in self._workers:
            worker.keeper = asyncio.create_task(self._keep(worker))

    async def _start(self, worker: Worker) -> bool:
        """Start ``worker``'s process; wait until it listens (``True``) or exits (``False``)."""
        if worker.channel is not None:
            worker.channel.close()
        ours, theirs = socket.socketpair()
        with theirs:
            worker.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pusher_compat", *self._argv, "--port", str(self._port),
                "--worker", str(worker.index), "--supervisor-fd", str(theirs.fileno()),
                pass_fds=(theirs.fileno(),),
            )
        worker.started = time.monotonic()
        reader, worker.channel = await asyncio.open_unix_connection(sock=ours)
        # One byte once it listens; end-of-file first when it exits before.
        if await reader.read(1) != _READY:
            return False
        log.info("worker listening", extra={"worker": worker.index, "pid": worker.process.pid})
        return True

    async def _keep(self, worker: Worker) -> None:
        """Restart ``worker`` whenever its process exits, until the supervisor stops (which
        cancels this task)."""
        while True:
            assert worker.process is not None
            returncode = await worker.process.wait()
            if self._phase is not Phase.SERVING:
                return
            lived = time.monotonic() - worker.started
            worker.young_deaths = worker.young_deaths + 1 if lived < STABLE_SECONDS else 0
            delay = restart_delay(worker.young_deaths)
            log.warning("worker %s after %.1f s; restarting it %s", exit_reason(returncode),
                        lived, f"in {delay:g} s" if delay else "now",
                        extra={"worker": worker.index, "pid": worker.process.pid})
            await asyncio.sleep(delay)
            await self._start(worker)

    async def _stop_all(self) -> None:
        """SIGTERM to every running worker, then wait for all; kill any still running after
        :func:`stop_grace` seconds."""
        self._phase = Phase.STOPPING
        for worker in self._workers:
            if worker.keeper is not None:
                worker.keeper.cancel()
        running = {asyncio.ensure_future(w.process.wait()): w for w in self._workers
                   if w.process is not None and w.process.returncode is None}
        if running:
            log.info("stopping %d worker(s): each closes its connections with 4200",
                     len(running))
        for worker in running.values():
            assert worker.process is not None
            with contextlib.suppress(ProcessLookupError):
                worker.process.send_signal(signal.SIGTERM)
        if running:
            _, late = await asyncio.wait(running, timeout=stop_grace(self._server))
            for waiter in late:
                process = running[waiter].process
                assert process is not None
                log.error("worker still running %g s after SIGTERM: killed",
                          stop_grace(self._server),
                          extra={"worker": running[waiter].index, "pid": process.pid})
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await waiter
        for worker in self._workers:
            if worker.channel is not None:
                worker.channel.close()
        log.info("stopped")


def supervise(settings: Settings, argv: Sequence[str]) -> int:
    """Run a :class:`Supervisor` for ``settings`` (the command line ``argv``); its exit code.
    The supervisor runs on asyncio's own loop: it only waits for processes and signals."""
    return asyncio.run(Supervisor(settings, argv).run())


# -- the worker side ------------------------------------------------------------------------


class _WorkerTag(logging.Filter):
    """Adds ``worker=n`` to every record a worker logs (a field of JSON lines, ``key=value``
    at the end of text lines), so the interleaved logs of the workers stay apart."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index
        """The worker's number."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.worker = self.index
        return True


def worker_settings(settings: Settings, index: int) -> Settings:
    """Worker ``index``'s settings: its own ``/metrics`` listener port (``metrics_port +
    index - 1``, so each worker can be scraped) and statistics file (``stats.sqlite`` becomes
    ``stats-worker2.sqlite``: statistics are per process, as they are per node)."""
    server = settings.server
    changes: dict[str, Any] = {}
    if server.metrics_port:
        changes["metrics_port"] = server.metrics_port + index - 1
    if server.stats_path:
        path = Path(server.stats_path)
        changes["stats_path"] = str(path.with_stem(f"{path.stem}-worker{index}"))
    return dataclasses.replace(settings, server=dataclasses.replace(server, **changes))


def run_worker(settings: Settings, index: int, supervisor_fd: int) -> None:
    """Serve as worker ``index`` of the supervisor holding the other end of ``supervisor_fd``
    (a socket pair): bind with ``SO_REUSEPORT``, say when listening, and drain on SIGTERM or
    when the supervisor is gone."""
    # Imported here: the supervisor, which serves nothing, starts its workers sooner without.
    from .server import run_loop

    for handler in logging.getLogger().handlers:
        handler.addFilter(_WorkerTag(index))
    run_loop(_serve_worker(worker_settings(settings, index), socket.socket(fileno=supervisor_fd)))


async def _serve_worker(settings: Settings, supervisor: socket.socket) -> None:
    from .server import serve

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    supervisor.setblocking(False)

    def supervisor_gone() -> None:
        # The supervisor never writes: readable means end-of-file (it exited or was killed).
        loop.remove_reader(supervisor.fileno())
        if not stop.is_set():
            log.warning("the supervisor is gone: stopping")
            stop.set()

    def listening() -> None:
        supervisor.send(_READY)

    loop.add_reader(supervisor.fileno(), supervisor_gone)
    try:
        await serve(settings, stop, reuse_port=True, ready=listening)
    finally:
        supervisor.close()
