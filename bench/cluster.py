#!/usr/bin/env python3
"""Cross-node fan-out and latency of our server on the Redis adapter, nodes on this machine.

    python bench/cluster.py --quick                         # small sizes, about 1 minute
    python bench/cluster.py                                 # defaults, about 2.5 minutes
    python bench/cluster.py --server-root /work/wt-redis    # run the nodes from another checkout

Starts its own redis-server (loopback, free port, no persistence, temporary directory), then
for each step a fresh set of nodes (``python -m pusher_compat serve --adapter redis``, app
1001/app-key/app-secret as run.py configures it), waits for /ready on each, and drives them
with the load generator's pieces (scenarios.py, wsclient.py, publisher.py) in this process:

  fanout-3nodes   N sockets spread evenly over nodes A, B, C on one channel; events through
                  batch_events on node A only, windowed as in ``loadgen.py fanout``.
                  Deliveries/s overall and per node; server CPU µs per delivery per node
                  and of redis-server; missing deliveries (0 expected).
  fanout-1node    the same N and events on one node with the local adapter, for comparison.
  latency-3nodes  N sockets over A, B, C; stamped events at a fixed rate through node A;
                  publish-to-receive percentiles for sockets on A (local) and on B, C (the
                  event went through Redis).
  latency-1node   the same on one node with the local adapter.

One JSON line per step on stdout (also appended to --record), progress on stderr, and a
Markdown table at the end. Every process started here is stopped on exit, error or Ctrl-C;
--timeout bounds the whole run. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import gc
import ipaddress
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import report
import uvloop
from procstat import (
    CpuClock,
    process_cpu_seconds,
    raise_fd_limit,
    require_loopback,
    self_cpu_seconds,
)
from publisher import Publisher, event_data
from run import APP_ID, APP_KEY, APP_SECRET, OUR_CONFIG, Server
from scenarios import (
    EVENT_MARKER,
    EVENT_NAME,
    Run,
    cpu_figures,
    fanout,
    latency,
    measure_flow,
    open_subscribers,
    percentiles,
    publish_paced,
    wait_for_deliveries,
)
from wsclient import Counters, Target

__all__ = ["main"]

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODES = 3
NODE_NAMES = "ABC"
FANOUT_CHANNEL = "bench-cluster-fanout"
LATENCY_CHANNEL = "bench-cluster-latency"
STEPS = ("fanout-3nodes", "fanout-1node", "latency-3nodes", "latency-1node")


@dataclass(frozen=True, slots=True)
class Sizes:
    subscribers: int
    events: int
    latency_subscribers: int
    duration: float
    warmup: float


QUICK = Sizes(subscribers=900, events=3000, latency_subscribers=300, duration=15.0, warmup=1.0)
DEFAULT = Sizes(subscribers=3000, events=6000, latency_subscribers=1000, duration=40.0,
                warmup=2.0)


# -- processes ---------------------------------------------------------------------------


class Process(Server):
    """A process started here (redis-server or a node): run.py's spawn/stop, named by role."""

    def __init__(self, workdir: Path, name: str) -> None:
        self.name = name
        super().__init__(workdir)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def check_alive(self) -> None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"{self.name} exited with code {self.process.returncode}:\n"
                               + self.log_tail())

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(f"    {line}" for line in text[-lines:])


class RedisServer(Process):
    """``redis-server`` on a free loopback port, no RDB, no AOF, in a temporary directory."""

    def start_at(self, binary: str, host: str, deadline: float) -> None:
        self.port = free_port(host)
        self.log.write_bytes(b"")
        self._spawn([binary, "--bind", host, "--port", str(self.port), "--save", "",
                     "--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no",
                     "--protected-mode", "yes"], dict(os.environ), self.workdir)
        while time.monotonic() < deadline:
            self.check_alive()
            with contextlib.suppress(OSError), \
                    socket.create_connection((host, self.port), timeout=1) as probe:
                probe.sendall(b"PING\r\n")
                if probe.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer PING:\n{self.log_tail()}")


class Node(Process):
    """One ``python -m pusher_compat serve`` of the server checkout at ``root``."""

    def spawn(self, root: Path, host: str, config: str) -> None:
        path = self.workdir / f"{self.name}.toml"
        path.write_text(config)
        self.log.write_bytes(b"")
        self._spawn([sys.executable, "-m", "pusher_compat", "serve", "--host", host,
                     "--port", "0", "--config", str(path)], dict(os.environ), root)

    def wait_ready(self, host: str, deadline: float) -> None:
        """Read the port from the log line, then poll ``/ready`` until it answers 200."""
        listening = re.compile(rf"listening on http://{re.escape(host)}:(\d+)")
        while time.monotonic() < deadline:
            self.check_alive()
            if not self.port:
                match = listening.search(self.log.read_text(errors="replace"))
                self.port = int(match.group(1)) if match else 0
            if self.port and _ready(host, self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"node {self.name} not ready (port {self.port or '?'}):\n"
                           + self.log_tail())


class OtherCpu:
    """CPU the rest of the machine used during a step: busy time of all CPUs (/proc/stat)
    less the CPU of this process and of the processes started here, as % of one core.

    Shows whether something else ran at the same time (the figures are then not clean). It
    also counts interrupt time not charged to any process, e.g. part of loopback softirq.
    """

    def __init__(self, pids: Sequence[int]) -> None:
        self._pids = pids
        self._start = (time.perf_counter(), _machine_busy_seconds(), self._ours())

    def _ours(self) -> float:
        total = self_cpu_seconds()
        for pid in self._pids:
            with contextlib.suppress(OSError):
                total += process_cpu_seconds(pid)
        return total

    def pct(self) -> float:
        wall, busy, ours = self._start
        wall = time.perf_counter() - wall
        other = (_machine_busy_seconds() - busy) - (self._ours() - ours)
        return round(max(0.0, 100 * other / wall), 1) if wall > 0 else 0.0


def _machine_busy_seconds() -> float:
    """Non-idle CPU seconds of all CPUs since boot (user, nice, system, irq, softirq, steal)."""
    with open("/proc/stat") as stat:
        fields = [int(f) for f in stat.readline().split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))
"""No proxy from the environment: the request goes straight to the loopback node."""


def _ready(host: str, port: int) -> bool:
    try:
        with _DIRECT.open(f"http://{host}:{port}/ready", timeout=2) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def node_config(adapter: str, redis_url: str, prefix: str) -> str:
    """run.py's config (app, client events, no connection limits) plus the adapter keys."""
    if adapter == "local":
        return OUR_CONFIG
    keys = (f'adapter = "redis"\nredis_url = "{redis_url}"\nredis_prefix = "{prefix}"\n'
            "node_lease_seconds = 10\n")
    config = OUR_CONFIG.replace("[server]\n", "[server]\n" + keys, 1)
    if config == OUR_CONFIG:
        raise RuntimeError("run.OUR_CONFIG has no [server] table to add the adapter keys to")
    return config


@dataclass(slots=True)
class Cluster:
    """The nodes of one step (A first: the one events are published through)."""

    host: str
    nodes: list[Node]
    redis: RedisServer | None = None
    targets: list[Target] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.targets = [Target(self.host, n.port, APP_ID, APP_KEY, APP_SECRET)
                        for n in self.nodes]

    def clocks(self) -> dict[str, CpuClock]:
        """Started CPU clocks: one per node (by name), ``redis``, and ``self`` (this process)."""
        clocks = {node.name: CpuClock(node.pid) for node in self.nodes}
        if self.redis is not None:
            clocks["redis"] = CpuClock(self.redis.pid)
        clocks["self"] = CpuClock(None)
        for clock in clocks.values():
            clock.start()
        return clocks


def start_nodes(workdir: Path, root: Path, host: str, count: int, adapter: str,
                redis: RedisServer | None, prefix: str, started: list[Process],
                deadline: float) -> Cluster:
    """Spawn ``count`` nodes at once (each appended to ``started`` at once), wait for all."""
    redis_url = f"redis://{host}:{redis.port}/0" if redis is not None else ""
    config = node_config(adapter, redis_url, prefix)
    nodes = []
    for name in NODE_NAMES[:count]:
        node = Node(workdir, name)
        node.spawn(root, host, config)
        started.append(node)
        nodes.append(node)
    for node in nodes:
        node.wait_ready(host, deadline)
    return Cluster(host, nodes, redis if adapter == "redis" else None)


# -- measuring ---------------------------------------------------------------------------


def _shares(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` counts differing by at most one."""
    return [total // parts + (i < total % parts) for i in range(parts)]


async def _open_spread(runs: Sequence[Run], total: int, channel: str, stamps: bool = False,
                       marker: bytes | None = None) -> float:
    """Open ``total`` subscribers of ``channel`` spread evenly over the runs' nodes; seconds."""
    started = time.perf_counter()
    firsts = [0]
    for count in _shares(total, len(runs))[:-1]:
        firsts.append(firsts[-1] + count)
    await asyncio.gather(*(
        open_subscribers(run, count, lambda _: channel, first=first, stamps=stamps,
                         marker=marker, label=f"connect node {NODE_NAMES[index]}")
        for index, (run, count, first) in enumerate(zip(runs, _shares(total, len(runs)),
                                                        firsts, strict=True))))
    return time.perf_counter() - started


def _received(run: Run) -> int:
    return sum(client.deliveries for client in run.clients)


def _group(runs: Sequence[Run], before: Sequence[int], cpu: float, wall: float,
           elapsed: float, events: int) -> dict[str, Any]:
    """Figures of some nodes: deliveries, missing, rate over ``elapsed``, their CPU."""
    subscribers = sum(len(run.clients) for run in runs)
    got = sum(_received(run) for run in runs) - sum(before)
    figures: dict[str, Any] = {
        "subscribers": subscribers,
        "deliveries": got,
        "missing_deliveries": max(0, events * subscribers - got),
        "deliveries_per_s": round(got / elapsed) if elapsed else 0,
        "server_cpu_pct": round(100 * cpu / wall, 1) if wall else None,
        "server_cpu_us_per_delivery": round(1e6 * cpu / got, 2) if got else None,
    }
    if runs[0].counters.latencies_ms is not None:
        latencies = array("d")
        for run in runs:
            latencies.extend(run.counters.latencies_ms or ())
        figures.update(percentiles(latencies))
    return figures


def _cluster_figures(runs: Sequence[Run], before: Sequence[int], clocks: dict[str, CpuClock],
                     elapsed: float, events: int) -> dict[str, Any]:
    """Per node, for the nodes other than A together, and for redis-server."""
    reads = {name: clock.read() for name, clock in clocks.items()}
    names = [NODE_NAMES[i] for i in range(len(runs))]
    cpu = {name: reads[name][2] or 0.0 for name in names}
    wall = reads["self"][0]
    per_node = {name: _group([run], [before[i]], cpu[name], wall, elapsed, events)
                for i, (name, run) in enumerate(zip(names, runs, strict=True))}
    remote = _group(runs[1:], before[1:], sum(cpu[n] for n in names[1:]), wall, elapsed, events)
    total = _group(runs, before, sum(cpu.values()), wall, elapsed, events)
    figures: dict[str, Any] = {
        "server_cpu_pct": total["server_cpu_pct"],
        "server_cpu_us_per_delivery": total["server_cpu_us_per_delivery"],
        "per_node": per_node,
        "remote_nodes": remote,
    }
    if "redis" in reads:
        redis_cpu = reads["redis"][2] or 0.0
        got = total["deliveries"]
        figures["redis"] = {
            "cpu_pct": round(100 * redis_cpu / wall, 1) if wall else None,
            "cpu_us_per_delivery": round(1e6 * redis_cpu / got, 3) if got else None,
            "cpu_us_per_event": round(1e6 * redis_cpu / events, 1) if events else None,
        }
    return figures


async def fanout_cluster(args: argparse.Namespace, cluster: Cluster) -> tuple[dict[str, Any],
                                                                               list[Run]]:
    """N sockets spread over the nodes on one channel; events through node A only."""
    counters = Counters()
    runs = [Run(args, target, counters) for target in cluster.targets]
    try:
        connect_s = await _open_spread(runs, args.subscribers, FANOUT_CHANNEL,
                                       marker=EVENT_MARKER)
        clients = sum(len(run.clients) for run in runs)
        data = event_data(args.payload_bytes, stamped=False)
        events = ((FANOUT_CHANNEL, EVENT_NAME, data) for _ in range(args.events))
        before = [_received(run) for run in runs]
        clocks = cluster.clocks()
        flow = await measure_flow(runs[0], events, args.events, args.events * clients,
                                  max(1, clients))
        result = {"subscribers": clients, "connect_s": round(connect_s, 2), **flow}
        if flow:
            result.update(_cluster_figures(runs, before, clocks, flow["elapsed_s"],
                                           args.events))
        return result, runs
    except BaseException:
        for run in runs:
            run.close()
        raise


async def latency_cluster(args: argparse.Namespace, cluster: Cluster) -> tuple[dict[str, Any],
                                                                                list[Run]]:
    """N sockets spread over the nodes; stamped events at a fixed rate through node A.

    Each node's sockets get their own counters, so their latencies stay apart.
    """
    runs = [Run(args, target) for target in cluster.targets]
    for run in runs:
        run.counters.latencies_ms = array("d")
    publisher = Publisher(runs[0].target, runs[0].counters, 4)
    try:
        await _open_spread(runs, args.subscribers, LATENCY_CHANNEL, stamps=True)
        if args.warmup > 0:
            await publish_paced(runs[0], publisher, LATENCY_CHANNEL, args.warmup)
            await asyncio.sleep(0.5)
        for run in runs:
            run.counters.latencies_ms = array("d")
        before = [_received(run) for run in runs]
        bases = [run.counters.deliveries for run in runs]
        sent_before = publisher.events
        clocks = cluster.clocks()
        await publish_paced(runs[0], publisher, LATENCY_CHANNEL, args.duration)
        sent = publisher.events - sent_before
        await asyncio.gather(*(
            wait_for_deliveries(run.counters, base + sent * len(run.clients), args.settle)
            for run, base in zip(runs, bases, strict=True)))
    except BaseException:
        for run in runs:
            run.close()
        raise
    finally:
        await publisher.close()
    wall = clocks["self"].read()[0]
    overall = _group(runs, before, 0.0, wall, wall, sent)
    result: dict[str, Any] = {
        "subscribers": overall["subscribers"], "rate": args.rate, "batch": args.batch,
        "events": sent, "deliveries": overall["deliveries"],
        "missing_deliveries": overall["missing_deliveries"],
        "achieved_events_per_s": round(sent / args.duration, 1),
        **{k: v for k, v in overall.items() if k.endswith("_ms")},
        **cpu_figures(clocks["self"], wall, overall["deliveries"], "delivery"),
    }
    result.update(_cluster_figures(runs, before, clocks, wall, sent))
    return result, runs


async def single(scenario: Callable[[Run], Awaitable[dict[str, Any]]], args: argparse.Namespace,
                 cluster: Cluster) -> tuple[dict[str, Any], list[Run]]:
    """A loadgen scenario (fanout or latency) as is, against the one node."""
    run = Run(args, cluster.targets[0])
    try:
        return await scenario(run), [run]
    except BaseException:
        run.close()
        raise


async def measure(step: str, args: argparse.Namespace, cluster: Cluster, budget: float
                  ) -> dict[str, Any]:
    """Run one step within ``budget`` seconds; close every socket; count errors of all runs."""
    runs: list[Run] = []
    result: dict[str, Any] = {}
    errors: list[str] = []
    try:
        async with asyncio.timeout(budget):
            if step == "fanout-3nodes":
                result, runs = await fanout_cluster(args, cluster)
            elif step == "latency-3nodes":
                result, runs = await latency_cluster(args, cluster)
            else:
                scenario = fanout if step.startswith("fanout") else latency
                result, runs = await single(scenario, args, cluster)
    except TimeoutError:
        errors.append(f"hard timeout: step stopped after {budget:.0f} s")
    finally:
        for run in runs:
            run.close()
        await asyncio.sleep(0.2)
    counters = list({id(run.counters): run.counters for run in runs}.values())
    result["errors"] = len(errors) + sum(c.error_count for c in counters)
    for counter in counters:
        errors.extend(counter.errors)
    if errors:
        result["first_errors"] = errors[:5]
    lost = sum(c.lost for c in counters)
    if lost:
        result["connections_lost"] = lost
    closed: dict[int, int] = {}
    for counter in counters:
        for code, count in counter.close_codes.items():
            closed[code] = closed.get(code, 0) + count
    if closed:
        result["closed_by_server"] = closed
    return result


# -- the run -----------------------------------------------------------------------------


def step_args(args: argparse.Namespace, step: str, sizes: Sizes) -> argparse.Namespace:
    """What scenarios.py reads from ``run.args`` for this step."""
    fan = step.startswith("fanout")
    return argparse.Namespace(
        subscribers=((args.subscribers or sizes.subscribers) if fan
                     else (args.latency_subscribers or sizes.latency_subscribers)),
        events=args.events or sizes.events,
        batch=args.batch if fan else args.latency_batch,
        payload_bytes=args.payload_bytes, window=args.window, publishers=args.publishers,
        rate=args.rate, duration=args.duration or sizes.duration,
        warmup=sizes.warmup if args.warmup is None else args.warmup,
        settle=args.settle, step_timeout=args.step_timeout,
        connect_concurrency=args.connect_concurrency, source_addresses=1,
        server_pid=None,
    )


def _params(step: str, ns: argparse.Namespace) -> dict[str, Any]:
    keys = (("subscribers", "events", "batch", "payload_bytes", "window", "publishers")
            if step.startswith("fanout") else
            ("subscribers", "rate", "duration", "warmup", "batch", "payload_bytes"))
    return {key: getattr(ns, key) for key in keys}


def run_step(step: str, args: argparse.Namespace, sizes: Sizes, workdir: Path,
             redis: RedisServer, started: list[Process], deadline: float) -> dict[str, Any]:
    """Fresh nodes for ``step``, the measurement, the nodes stopped: the JSON line as a dict."""
    ns = step_args(args, step, sizes)
    count = NODES if step.endswith("3nodes") else 1
    adapter = "redis" if count > 1 else "local"
    where = (f"{ns.subscribers:,} subscribers over {count} nodes ({adapter} adapter)"
             if count > 1 else f"{ns.subscribers:,} subscribers on 1 node (local adapter)")
    what = (f"{ns.events:,} events in batches of {ns.batch}" if step.startswith("fanout")
            else f"{ns.rate:g} events/s for {ns.duration:g} s after {ns.warmup:g} s warm-up")
    print(f"== {step}: {where}; {what} through node A", file=sys.stderr, flush=True)
    at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    nodes_started = len(started)
    try:
        ready_by = min(deadline, time.monotonic() + 60)
        cluster = start_nodes(workdir, args.server_root, args.host, count, adapter, redis,
                              f"bench-{step}-{os.getpid()}", started, ready_by)
        # One node: scenarios.py reads its CPU; several: cluster.py reads each one's.
        ns.server_pid = cluster.nodes[0].pid if count == 1 else None
        ports = ", ".join(f"{n.name} :{n.port} (pid {n.pid})" for n in cluster.nodes)
        print(f"   ready: {ports}", file=sys.stderr, flush=True)
        budget = max(1.0, deadline - time.monotonic())
        pids = [node.pid for node in cluster.nodes] + ([redis.pid] if redis.process else [])
        other = OtherCpu(pids)
        figures = uvloop.run(measure(step, ns, cluster, budget))
        figures["other_cpu_pct"] = other.pct()
        if figures["other_cpu_pct"] > 20:
            print(f"   note: other processes used {figures['other_cpu_pct']:.0f}% of a core "
                  "during this step: its figures are disturbed", file=sys.stderr, flush=True)
        for node in cluster.nodes:
            assert node.process is not None
            if node.process.poll() is not None:
                figures["errors"] = figures.get("errors", 0) + 1
                figures.setdefault("first_errors", []).append(
                    f"node {node.name} exited with code {node.process.returncode}")
                print(f"node {node.name} exited:\n{node.log_tail()}", file=sys.stderr)
    finally:
        for process in started[nodes_started:]:
            process.stop()
    scenario = ("cluster-" if count > 1 else "") + step.split("-")[0]
    return {"step": step, "scenario": scenario, "adapter": adapter, "nodes": count, "at": at,
            "params": _params(step, ns), **figures}


def table(records: Sequence[dict[str, Any]]) -> list[str]:
    """report.py's table: one column per node set (1 node, the cluster, each node, redis)."""
    single_nodes = [r for r in records if r["nodes"] == 1]
    clusters = [r for r in records if r["nodes"] > 1]
    rows: list[dict[str, Any]] = []
    for record in single_nodes + clusters:
        kind = record["scenario"].removeprefix("cluster-")
        base = {"step": f"{kind}, {record['params']['subscribers']:,} subscribers",
                "scenario": kind}
        if record["nodes"] == 1:
            rows.append({**record, **base, "server": "1 node (local)"})
            continue
        rows.append({**record, **base, "server": f"{record['nodes']} nodes (redis)"})
        for name, figures in record.get("per_node", {}).items():
            local = " (publisher)" if name == "A" else ""
            rows.append({**figures, **base, "server": f"node {name}{local}"})
        if "remote_nodes" in record:
            others = "+".join(sorted(set(record.get("per_node", {})) - {"A"}))
            rows.append({**record["remote_nodes"], **base, "server": f"{others} via Redis"})
        if "redis" in record:
            redis = record["redis"]
            rows.append({**base, "server": "redis-server",
                         "server_cpu_pct": redis.get("cpu_pct"),
                         "server_cpu_us_per_delivery": redis.get("cpu_us_per_delivery")})
    return report.rows(rows)


def machine_line(redis_binary: str) -> str:
    """The machine and versions, as the README's result sections state them."""
    model = "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = ""
    with contextlib.suppress(OSError, ValueError), open("/proc/meminfo") as meminfo:
        memory = f", {int(meminfo.readline().split()[1]) / 2**20:.0f} GiB RAM"
    try:
        redis_version = subprocess.run([redis_binary, "--version"], capture_output=True,
                                       text=True, timeout=10, check=False).stdout.split()[2]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        redis_version = "?"
    versions = []
    for module in ("uvloop", "aiohttp", "orjson", "redis"):
        try:
            versions.append(f"{module} {__import__(module).__version__}")
        except (ImportError, AttributeError):
            versions.append(f"{module} ?")
    return (f"Machine: {os.cpu_count()} vCPU \"{model}\", kernel {platform.release()}{memory}; "
            f"Python {platform.python_version()}, {', '.join(versions)}; "
            f"redis-server {redis_version.removeprefix('v=')}. Nodes, redis-server and the "
            "load generator share these cores.")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cluster.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"small sizes: {QUICK.subscribers} fan-out subscribers, "
                             f"{QUICK.events} events, {QUICK.latency_subscribers} latency "
                             f"subscribers for {QUICK.duration:g} s; about 1 minute")
    parser.add_argument("--only", nargs="+", choices=STEPS, metavar="STEP",
                        help="run only these steps: " + ", ".join(STEPS))
    parser.add_argument("--record", type=Path, metavar="FILE",
                        help="append the JSON lines to this file "
                             "(default bench/results/cluster-<UTC time>.jsonl)")
    where = parser.add_argument_group("processes")
    where.add_argument("--host", default="127.0.0.1",
                       help="address of redis-server, the nodes and every socket; must be "
                            "IPv4 loopback (default 127.0.0.1)")
    where.add_argument("--server-root", type=Path, default=REPO, metavar="DIR",
                       help="checkout whose pusher_compat the nodes run (their working "
                            "directory; default this repository)")
    where.add_argument("--redis-server", metavar="PATH",
                       default=shutil.which("redis-server") or "/usr/bin/redis-server",
                       help="redis-server binary (default: the one on PATH)")
    fan = parser.add_argument_group("fan-out steps")
    fan.add_argument("--subscribers", type=int, metavar="N",
                     help=f"sockets, spread evenly over the nodes (default "
                          f"{DEFAULT.subscribers}, quick {QUICK.subscribers})")
    fan.add_argument("--events", type=int, metavar="N",
                     help=f"events published (default {DEFAULT.events}, quick {QUICK.events})")
    fan.add_argument("--batch", type=int, default=10, choices=range(1, 11), metavar="1-10",
                     help="events per batch_events request (default 10)")
    fan.add_argument("--window", type=int, default=100, metavar="N",
                     help="at most this many events published but not yet received, counted "
                          "over all sockets together (default 100)")
    fan.add_argument("--publishers", type=int, default=2, metavar="N",
                     help="HTTP requests in flight to node A (default 2)")
    lat = parser.add_argument_group("latency steps")
    lat.add_argument("--latency-subscribers", type=int, metavar="N",
                     help=f"sockets, spread evenly over the nodes (default "
                          f"{DEFAULT.latency_subscribers}, quick {QUICK.latency_subscribers})")
    lat.add_argument("--rate", type=float, default=50.0, metavar="PER_S",
                     help="events per second through node A (default 50)")
    lat.add_argument("--duration", type=float, metavar="SECONDS",
                     help=f"seconds of measured publishing (default {DEFAULT.duration:g}, "
                          f"quick {QUICK.duration:g})")
    lat.add_argument("--warmup", type=float, metavar="SECONDS",
                     help=f"seconds of publishing before measuring, discarded (default "
                          f"{DEFAULT.warmup:g}, quick {QUICK.warmup:g})")
    lat.add_argument("--latency-batch", type=int, default=1, choices=range(1, 11),
                     metavar="1-10", help="events per request (default 1)")
    both = parser.add_argument_group("every step")
    both.add_argument("--payload-bytes", type=int, default=100, metavar="BYTES",
                      help="size of each event's data string (default 100)")
    both.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                      help="hard limit for the whole run, seconds; a step still running then "
                           "is stopped and reported with an error (default 600)")
    both.add_argument("--step-timeout", type=float, default=30.0, metavar="SECONDS",
                      help="limit for one connect / handshake / subscribe, seconds (default 30)")
    both.add_argument("--settle", type=float, default=3.0, metavar="SECONDS",
                      help="stop waiting for deliveries after this many seconds without one "
                           "(default 3)")
    both.add_argument("--connect-concurrency", type=int, default=200, metavar="N",
                      help="sockets being opened at once, per node (default 200)")
    return parser


class _Stop(KeyboardInterrupt):
    """SIGINT, SIGTERM or the backstop alarm: unwind so that every started process is stopped.

    Raised by our own handler: asyncio's SIGINT handling only cancels the running task, and a
    cancellation can be lost in ``asyncio.wait_for`` (Python 3.11), so the run would go on.
    """


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        address = require_loopback(args.host)
        if ipaddress.ip_address(address).version != 4:
            raise ValueError(f"{args.host!r} is not an IPv4 address: use 127.0.0.1")
    except ValueError as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 2
    args.host = address
    args.server_root = args.server_root.resolve()
    if not (args.server_root / "pusher_compat" / "__main__.py").exists():
        print(f"cluster: no pusher_compat package under {args.server_root}", file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else DEFAULT
    steps = [s for s in STEPS if not args.only or s in args.only]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    record = args.record or BENCH / "results" / f"cluster-{stamp}.jsonl"
    record.parent.mkdir(parents=True, exist_ok=True)
    print(f"open-files limit: {raise_fd_limit()}; nodes from {args.server_root}",
          file=sys.stderr)
    # As in loadgen.py: the receiver's objects are acyclic, and GC pauses would show up as
    # latency.
    gc.disable()
    deadline = time.monotonic() + args.timeout
    started: list[Process] = []
    records: list[dict[str, Any]] = []
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, _raise_stop)
    signal.alarm(int(args.timeout) + 60)  # backstop, should a step not honour its budget
    code = 0
    try:
        with tempfile.TemporaryDirectory(prefix="pusher-compat-cluster-") as tmp:
            redis = RedisServer(Path(tmp), "redis-server")
            started.append(redis)
            redis.start_at(args.redis_server, args.host, min(deadline, time.monotonic() + 30))
            print(f"redis-server on {args.host}:{redis.port} (pid {redis.pid})",
                  file=sys.stderr, flush=True)
            for step in steps:
                if time.monotonic() >= deadline:
                    print(f"cluster: --timeout reached, {step} not run", file=sys.stderr)
                    code = 1
                    break
                line = run_step(step, args, sizes, Path(tmp), redis, started, deadline)
                code |= bool(line.get("errors"))
                text = orjson.dumps(line).decode()
                print(text, flush=True)
                with record.open("a") as out:
                    out.write(text + "\n")
                records.append(line)
                redis.check_alive()
    except KeyboardInterrupt as stop:
        print(f"cluster: interrupted ({stop or 'SIGINT'}): stopping what was started",
              file=sys.stderr)
        code = 130
    except RuntimeError as error:
        print(f"cluster: {error}\n(a checkout that cannot start? --server-root DIR runs the "
              "nodes from another one)", file=sys.stderr)
        code = 1
    finally:
        signal.alarm(0)
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        for process in reversed(started):
            process.stop()
    if records:
        print(f"recorded in {record}", file=sys.stderr)
        print(machine_line(args.redis_server), file=sys.stderr)
        print("\n".join(table(records)), file=sys.stderr)
        print("other processes' CPU during each step (% of one core): " + ", ".join(
            f"{r['step']} {r.get('other_cpu_pct', 0):g}" for r in records), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
