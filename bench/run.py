#!/usr/bin/env python3
"""Run the benchmark scenarios against our server and Soketi, side by side.

    python bench/run.py --quick                    # ~2 minutes, both servers
    python bench/run.py                            # full comparison, ~4 minutes here
    python bench/run.py --servers ours --only fanout-1k latency-1k
    python bench/run.py --servers ours,ours-2w --only fanout-1k publish-1k   # 1 vs 2 workers

Each step starts a fresh server (so memory and CPU figures of one scenario do not leak into
the next), runs ``loadgen.py`` against it with ``--server-pid``, prints the JSON line with the
server's name added, and appends it to ``--record``. Soketi 1.6.1 is installed into
``bench/.soketi/`` with npm on first use. Every address is loopback; the open-files limit is
raised to the hard limit for this process and the servers and load generator it starts.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import report
from procstat import process_cpu_seconds, raise_fd_limit

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SOKETI_DIR = BENCH / ".soketi"
SOKETI_BIN = SOKETI_DIR / "node_modules" / "@soketi" / "soketi" / "bin" / "server.js"
SOKETI_PACKAGE = {
    "name": "pusher-compat-bench-soketi",
    "private": True,
    "description": "Soketi for side-by-side benchmarks; installed by bench/run.py.",
    "dependencies": {"@soketi/soketi": "1.6.1"},
    "overrides": {"uWebSockets.js": "npm:@trufflesuite/uws-js-unofficial@20.30.0-unofficial.0"},
}
APP_ID, APP_KEY, APP_SECRET = "1001", "app-key", "app-secret"
OUR_CONFIG = f"""\
[server]
host = "127.0.0.1"
port = 0
max_connections = 0

[[apps]]
id = "{APP_ID}"
key = "{APP_KEY}"
secret = "{APP_SECRET}"
client_events = true
max_connections = 0
# No API rate limit (0 is the default; said here because the publish steps depend on it).
max_backend_events_per_second = 0
max_read_requests_per_second = 0
"""
_LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")
_WORKERS = re.compile(r"ours-(\d+)w")


@dataclass(frozen=True, slots=True)
class Step:
    """One scenario with its arguments, run once against every server."""

    name: str
    args: tuple[str, ...]
    timeout: float
    servers: tuple[str, ...] = ()
    """Run only against these servers; empty: against every one selected."""


def _publish_steps(seconds: int) -> tuple[Step, ...]:
    """The signed HTTP API under wrk (50 connections, one thread), to 1,000 private channels:
    single events without and with a subscriber on each channel, then on a new connection
    each (ours only: Soketi closes every API connection after its answer anyway, so its
    ``publish-1k`` already is that case), then 10-event batches."""
    base = ("publish", "--channels", "1000", "--duration", str(seconds))
    return (
        Step("publish-1k", base, 60 + seconds),
        Step("publish-1k-subscribed", (*base, "--subscribed"), 90 + seconds),
        Step("publish-1k-close", (*base, "--close"), 60 + seconds, servers=("ours",)),
        Step("batch-1k", (*base, "--batch", "10"), 60 + seconds),
        Step("batch-1k-subscribed", (*base, "--batch", "10", "--subscribed"), 90 + seconds),
    )


QUICK = (
    Step("fanout-1k", ("fanout", "--subscribers", "1000", "--events", "500"), 90),
    Step("latency-1k", ("latency", "--subscribers", "1000", "--rate", "50", "--duration", "5",
                        "--warmup", "1"), 90),
    Step("channels-2k", ("channels", "--subscribers", "2000", "--channels", "200",
                         "--events", "4000"), 90),
    Step("connections", ("connections", "--levels", "1000,5000"), 120),
    Step("presence-500", ("presence", "--subscribers", "500"), 90),
    *_publish_steps(3),
)
FULL = (
    Step("fanout-1k", ("fanout", "--subscribers", "1000", "--events", "2000"), 180),
    Step("fanout-10k", ("fanout", "--subscribers", "10000", "--events", "200"), 240),
    Step("channels-10k", ("channels", "--subscribers", "10000", "--channels", "1000",
                          "--events", "20000"), 240),
    Step("latency-1k", ("latency", "--subscribers", "1000", "--rate", "50", "--duration", "20"),
         180),
    Step("connections", ("connections", "--levels", "1000,10000,19000,50000",
                         "--source-addresses", "2"), 300),
    Step("presence-2k", ("presence", "--subscribers", "2000", "--rounds", "2"), 180),
    *_publish_steps(10),
)


# -- servers -----------------------------------------------------------------------------


class Server:
    """A server under test, started fresh for each step and stopped after it."""

    name = "server"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.log = workdir / f"{self.name}.log"

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; only the process this object started."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def side_pids(self) -> dict[str, int]:
        """Helper processes started with the server (by role), whose CPU is reported apart."""
        return {}

    def _spawn(self, command: Sequence[str], env: dict[str, str], cwd: Path) -> None:
        log = self.log.open("ab")
        self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                        cwd=cwd, stdin=subprocess.DEVNULL)
        log.close()

    def _wait_listening(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited; its log ends: {self._log_tail()}")
            if self.port and _port_open(self.port):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start listening; its log ends: "
                           f"{self._log_tail()}")

    def _log_tail(self) -> str:
        # The log lives in run.py's temporary directory, gone once the run ends.
        return self.log.read_text(errors="replace")[-600:]


class OurServer(Server):
    """``python -m pusher_compat serve`` on a free port, read from its log line."""

    name = "ours"
    extra: tuple[str, ...] = ()
    """Further ``serve`` arguments (``--workers`` and the Redis adapter for ours-Nw)."""

    def start(self) -> None:
        config = self.workdir / "pusher-compat.toml"
        config.write_text(OUR_CONFIG)
        self.log.write_bytes(b"")
        self._spawn([sys.executable, "-m", "pusher_compat", "serve", "--host", "127.0.0.1",
                     "--port", "0", "--config", str(config), *self.extra], dict(os.environ),
                    REPO)
        deadline = time.monotonic() + 30
        while not self.port and time.monotonic() < deadline:
            match = _LISTENING.search(self.log.read_text(errors="replace"))
            if match:
                self.port = int(match.group(1))
            else:
                time.sleep(0.05)
        self._wait_listening(deadline)


class RedisProcess(Server):
    """``redis-server`` on a free loopback port, no persistence (cluster.py has the richer
    one, but cluster.py imports this module)."""

    name = "redis"

    def start_at(self, binary: str) -> None:
        self.port = _free_port()
        self.log.write_bytes(b"")
        self._spawn([binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                     "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"],
                    dict(os.environ), self.workdir)
        self._wait_listening(time.monotonic() + 15)


class OurWorkers(OurServer):
    """``serve --workers N --adapter redis`` on its own ``redis-server``, both per step.

    The supervisor's pid goes to the load generator, which sums the CPU and RSS of the
    supervisor and its workers; redis-server's CPU is read here and reported on its own.
    """

    def __init__(self, workdir: Path, workers: int) -> None:
        self.name = f"ours-{workers}w"
        super().__init__(workdir)
        self.workers = workers
        """Worker processes asked of the supervisor."""
        self.redis = RedisProcess(workdir)
        """The Redis adapter's server, started and stopped with this one."""

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is needed for the ours-Nw servers")
        self.redis.start_at(binary)
        self.extra = ("--workers", str(self.workers), "--adapter", "redis",
                      "--redis-url", f"redis://127.0.0.1:{self.redis.port}/0")
        super().start()

    def stop(self) -> None:
        try:
            super().stop()
        finally:
            self.redis.stop()

    def side_pids(self) -> dict[str, int]:
        process = self.redis.process
        return {"redis": process.pid} if process is not None else {}


class Soketi(Server):
    """Soketi 1.6.1 with every listener (HTTP/WS, metrics, UDP discovery) on 127.0.0.1."""

    name = "soketi"

    def start(self) -> None:
        """Start on free ports, and on new ones if it does not listen (three tries).

        A free port found here may be taken by another process before Soketi binds it; Soketi
        then logs that it is up all the same (its listen callback ignores the failure) and
        never listens, so the port itself is checked.
        """
        ensure_soketi()
        for attempt in range(3):
            try:
                self._start_once()
                return
            except RuntimeError:
                self.stop()
                if attempt == 2:
                    raise
                print(f"soketi did not listen on {self.port}: trying other ports",
                      file=sys.stderr, flush=True)

    def _start_once(self) -> None:
        self.port = _free_port()
        config = self.workdir / "soketi.json"
        config.write_text(json.dumps({
            "host": "127.0.0.1", "port": self.port,
            "cluster.address": "127.0.0.1", "cluster.unicast": "127.0.0.1",
            "cluster.port": _free_port(socket.SOCK_DGRAM),
            "metrics.host": "127.0.0.1", "metrics.port": _free_port(),
            "appManager.array.apps.0.id": APP_ID, "appManager.array.apps.0.key": APP_KEY,
            "appManager.array.apps.0.secret": APP_SECRET,
            "appManager.array.apps.0.enableClientMessages": True,
            # No rate limit on the API or on connections (-1, Soketi's default, said here
            # because the publish steps depend on it); its payload and request-size limits
            # (100 KiB per event, 100 MiB per request) are above ours.
            "appManager.array.apps.0.maxConnections": -1,
            "appManager.array.apps.0.maxBackendEventsPerSecond": -1,
            "appManager.array.apps.0.maxClientEventsPerSecond": -1,
            "appManager.array.apps.0.maxReadRequestsPerSecond": -1,
        }))
        env = dict(os.environ, SOKETI_HOST="127.0.0.1", SOKETI_PORT=str(self.port))
        self.log.write_bytes(b"")
        self._spawn(["node", str(SOKETI_BIN), "start", f"--config={config}"], env, SOKETI_DIR)
        self._wait_listening(time.monotonic() + 30)


def ensure_soketi() -> None:
    """Install Soketi 1.6.1 (with the uWebSockets.js override) into bench/.soketi once."""
    if SOKETI_BIN.exists():
        return
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to install Soketi (bench/.soketi)")
    SOKETI_DIR.mkdir(exist_ok=True)
    (SOKETI_DIR / "package.json").write_text(json.dumps(SOKETI_PACKAGE, indent=2) + "\n")
    print("installing Soketi 1.6.1 into bench/.soketi ...", file=sys.stderr, flush=True)
    subprocess.run(["npm", "install", "--no-audit", "--no-fund"], cwd=SOKETI_DIR, check=True,
                   timeout=600)


def _free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


SERVERS: dict[str, type[Server]] = {"ours": OurServer, "soketi": Soketi}


def make_server(name: str, workdir: Path) -> Server | None:
    """The server named ``name``: one of :data:`SERVERS` or ``ours-<N>w``; None if unknown."""
    if name in SERVERS:
        return SERVERS[name](workdir)
    match = _WORKERS.fullmatch(name)
    if match and int(match.group(1)) >= 1:
        return OurWorkers(workdir, int(match.group(1)))
    return None


# -- running -----------------------------------------------------------------------------


def run_step(step: Step, server: Server, extra: Sequence[str]) -> dict[str, Any]:
    """Start ``server``, run the scenario against it, stop it; the JSON line as a dict."""
    try:
        server.start()
    except BaseException:
        server.stop()  # a server that never listened must not outlive the run
        raise
    assert server.process is not None
    command = [sys.executable, str(BENCH / "loadgen.py"), *step.args, "--port", str(server.port),
               "--server-pid", str(server.process.pid), "--label", server.name,
               "--app-id", APP_ID, "--key", APP_KEY, "--secret", APP_SECRET,
               "--timeout", str(step.timeout), *extra]
    print(f"== {step.name} on {server.name}: {' '.join(step.args)}", file=sys.stderr, flush=True)
    sides = server.side_pids()
    before = {role: process_cpu_seconds(pid) for role, pid in sides.items()}
    began = time.perf_counter()
    try:
        result = _loadgen(command, step.timeout)
        # Over the whole loadgen run (setup included), unlike the server's per-phase figure.
        wall = time.perf_counter() - began
        for role, pid in sides.items():
            with contextlib.suppress(OSError):
                used = process_cpu_seconds(pid) - before[role]
                result[f"{role}_cpu_pct_whole_run"] = round(100 * used / wall, 1)
    finally:
        server.stop()
    return {"step": step.name, "server": server.name, **result}


def _loadgen(command: Sequence[str], timeout: float) -> dict[str, Any]:
    """Run loadgen.py; its last output line as a dict, or an error record."""
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, timeout=timeout + 60,
                              cwd=REPO, check=False)
    except subprocess.TimeoutExpired:
        return {"errors": 1, "first_errors": ["load generator timed out"]}
    output = done.stdout.decode().strip().splitlines()
    result: dict[str, Any] = (json.loads(output[-1]) if output
                              else {"errors": 1, "first_errors": ["no output"]})
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short durations: about 2 minutes for two servers")
    parser.add_argument("--servers", default="ours,soketi",
                        help="comma-separated: ours, ours-<N>w (N workers on their own "
                             "redis-server, e.g. ours-2w), soketi (default ours,soketi)")
    parser.add_argument("--only", nargs="+", metavar="STEP",
                        help="run only these steps (names: " + ", ".join(
                            sorted({s.name for s in QUICK + FULL})) + ")")
    parser.add_argument("--record", type=Path,
                        help="append the JSON lines to this file "
                             "(default bench/results/run-<UTC time>.jsonl)")
    parser.add_argument("loadgen_args", nargs=argparse.REMAINDER,
                        help="after --: extra arguments passed to every loadgen.py call")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    limit = raise_fd_limit()
    print(f"open-files limit: {limit}", file=sys.stderr)
    steps = [s for s in (QUICK if args.quick else FULL) if not args.only or s.name in args.only]
    names = [n.strip() for n in args.servers.split(",") if n.strip()]
    unknown = [n for n in names if make_server(n, Path(".")) is None]
    if unknown or not steps:
        print(f"run.py: unknown server {unknown} or no step selected", file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = args.record or BENCH / "results" / f"run-{stamp}.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    extra = [a for a in args.loadgen_args if a != "--"]
    failures = 0
    with tempfile.TemporaryDirectory(prefix="pusher-compat-bench-") as tmp:
        for step in steps:
            for name in names:
                if step.servers and name not in step.servers:
                    continue
                server = make_server(name, Path(tmp))
                assert server is not None
                result = run_step(step, server, extra)
                failures += bool(result.get("errors"))
                line = json.dumps(result)
                print(line, flush=True)
                with record.open("a") as out:
                    out.write(line + "\n")
    print(f"recorded in {record}", file=sys.stderr)
    records = [json.loads(line) for line in record.read_text().splitlines() if line.strip()]
    print("\n".join(report.rows(records)), file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
