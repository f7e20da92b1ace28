"""The benchmark scenarios. Each takes parsed arguments and returns one dict of figures.

Every loop here is bounded: by an event count, a duration, or a settle time after which a
missing delivery is reported instead of waited for; ``loadgen.py`` adds a hard timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import math
import resource
import shutil
import socket
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import wrkload
from procstat import CpuClock, family_rss_bytes, fd_limit, process_fd_limit
from publisher import Event, Publisher, event_data
from wsclient import Counters, Target, WsClient, open_many

from pusher_compat.signatures import channel_string, sign_auth

__all__ = [
    "EVENT_MARKER",
    "EVENT_NAME",
    "SCENARIOS",
    "Run",
    "cpu_figures",
    "measure_flow",
    "open_subscribers",
    "percentiles",
    "publish_paced",
    "wait_for_deliveries",
]

_IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
EVENT_NAME = "bench-event"
EVENT_MARKER = f'"{EVENT_NAME}"'.encode()
"""What counting-mode receivers look for: the event name, quoted, once per delivery."""


@dataclass(slots=True)
class Run:
    """What one scenario run shares: the target, the counters, the CPU clock, the clients."""

    args: argparse.Namespace
    target: Target
    counters: Counters = field(default_factory=Counters)
    clients: list[WsClient] = field(default_factory=list)

    @property
    def server_pid(self) -> int | None:
        return self.args.server_pid

    def clock(self) -> CpuClock:
        clock = CpuClock(self.server_pid)
        clock.start()
        return clock

    def close(self) -> None:
        for client in self.clients:
            client.abort()


# -- opening sockets ---------------------------------------------------------------------


def _source_address(index: int, sources: int) -> str | None:
    """Spread sockets over 127.0.0.1..N so more than one port range is available."""
    if sources <= 1:
        return None
    return f"127.0.0.{1 + index % sources}"


async def _connect(
    factory: Callable[[], WsClient], target: Target, source: str | None
) -> WsClient:
    """TCP-connect a client, from ``source`` when given.

    A source address is bound with ``IP_BIND_ADDRESS_NO_PORT``, so the port is chosen at
    connect time per destination; a plain ``bind(port 0)`` searches the whole port range and
    slows down as thousands of ports are taken, which would be measured as the server's
    connect rate.
    """
    loop = asyncio.get_running_loop()
    if source is None:
        _, client = await loop.create_connection(factory, target.host, target.port)
        return client
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
        await loop.sock_connect(sock, (target.host, target.port))
    except BaseException:
        sock.close()
        raise
    _, client = await loop.create_connection(factory, sock=sock)
    return client


async def open_subscribers(
    run: Run, count: int, channel_of: Callable[[int], str | None], first: int = 0,
    stamps: bool = False, label: str = "connect", marker: bytes | None = None,
    authorize: Callable[[str, str], str] | None = None,
) -> list[WsClient]:
    """Open ``count`` sockets; socket ``i`` subscribes to ``channel_of(i)`` (None: no channel).

    ``stamps``: the clients read publish times; ``marker``: they count deliveries by marker;
    ``authorize(socket_id, channel)``: the ``auth`` value of a private channel's subscribe.
    """
    args = run.args
    step_timeout = args.step_timeout

    def factory() -> WsClient:
        return WsClient(run.target, run.counters, stamps, marker)

    async def opener(index: int) -> WsClient:
        source = _source_address(first + index, args.source_addresses)
        client = await asyncio.wait_for(_connect(factory, run.target, source), step_timeout)
        try:
            await asyncio.wait_for(client.established, step_timeout)
            channel = channel_of(first + index)
            if channel is not None:
                auth = authorize(client.socket_id, channel) if authorize else ""
                await asyncio.wait_for(client.subscribe(channel, auth), step_timeout)
        except BaseException:
            client.abort()
            raise
        return client

    clients = await open_many(count, opener, args.connect_concurrency, label, run.counters)
    run.clients.extend(clients)
    return clients


# -- publishing --------------------------------------------------------------------------


def _batches(events: Iterator[Event], size: int) -> Iterator[list[Event]]:
    batch: list[Event] = []
    for event in events:
        batch.append(event)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def publish_windowed(
    run: Run, publisher: Publisher, batches: Iterator[list[Event]], per_event: float
) -> None:
    """Publish as fast as deliveries keep up: at most ``--window`` events not yet received.

    ``per_event`` is the average number of deliveries one event makes. The window keeps every
    socket's backlog small, so the figure is the sustained rate, not a burst into buffers.
    Publishing stops (with an error) if deliveries stall for ``--settle`` seconds.
    """
    counters, window, settle = run.counters, run.args.window, run.args.settle
    base = counters.deliveries
    sent = 0
    stalled = False

    async def worker() -> None:
        nonlocal sent, stalled
        for batch in batches:
            needed = base + math.ceil((sent - window) * per_event)
            if counters.deliveries < needed:
                try:
                    await asyncio.wait_for(counters.reach(needed), settle)
                except TimeoutError:
                    stalled = True
            if stalled:
                return
            sent += len(batch)
            await publisher.batch(batch)

    await asyncio.gather(*(worker() for _ in range(run.args.publishers)))
    if stalled:
        counters.error(f"deliveries stalled for {settle:g} s: publishing stopped early")


async def wait_for_deliveries(counters: Counters, expected: int, settle: float) -> None:
    """Return once ``expected`` deliveries arrived, or nothing arrived for ``settle`` s."""
    while counters.deliveries < expected:
        before = counters.deliveries
        try:
            await asyncio.wait_for(counters.reach(expected), settle)
        except TimeoutError:
            if counters.deliveries == before:
                return


def cpu_figures(clock: CpuClock, wall: float, work: int, unit: str) -> dict[str, Any]:
    """Server CPU per unit of work, and this process's CPU share, over ``wall`` seconds."""
    _, own, server = clock.read()
    figures: dict[str, Any] = {
        "receiver_cpu_pct": round(100 * own / wall, 1) if wall else None,
        f"receiver_cpu_us_per_{unit}": round(1e6 * own / work, 2) if work else None,
    }
    if server is not None:
        figures["server_cpu_pct"] = round(100 * server / wall, 1) if wall else None
        figures[f"server_cpu_us_per_{unit}"] = round(1e6 * server / work, 2) if work else None
    return figures


async def measure_flow(
    run: Run, events: Iterator[Event], count: int, expected: int, per_event: float
) -> dict[str, Any]:
    """Publish ``count`` events (windowed), wait for ``expected`` deliveries, measure."""
    if not run.clients:
        run.counters.error("no socket could subscribe: nothing measured")
        return {}
    publisher = Publisher(run.target, run.counters, run.args.publishers)
    counters = run.counters
    base, base_bytes = counters.deliveries, counters.bytes
    clock = run.clock()
    try:
        await publish_windowed(run, publisher, _batches(events, run.args.batch), per_event)
        await wait_for_deliveries(counters, base + expected, run.args.settle)
    finally:
        await publisher.close()
    received = counters.deliveries - base
    wall = max(1e-9, counters.last_delivery - clock.wall) if received else 0.0
    figures = {
        "events": publisher.events,
        "requests": publisher.requests,
        "failed_requests": publisher.failed,
        "deliveries": received,
        "expected_deliveries": expected,
        "missing_deliveries": max(0, expected - received),
        "elapsed_s": round(wall, 3),
        "deliveries_per_s": round(received / wall) if wall else 0,
        "events_per_s": round(publisher.events / wall, 1) if wall else 0,
        "mib_per_s": round((counters.bytes - base_bytes) / wall / 2**20, 1) if wall else 0,
    }
    figures.update(cpu_figures(clock, wall, received, "delivery"))
    return figures


def _padding(run: Run) -> str:
    return event_data(run.args.payload_bytes, stamped=False)


# -- scenarios ---------------------------------------------------------------------------


async def fanout(run: Run) -> dict[str, Any]:
    """N sockets on one channel; M events through batch_events; deliveries/s and CPU."""
    args = run.args
    channel = "bench-fanout"
    started = time.perf_counter()
    clients = await open_subscribers(run, args.subscribers, lambda _: channel,
                                     marker=EVENT_MARKER)
    connect_s = time.perf_counter() - started
    data = _padding(run)
    events = ((channel, EVENT_NAME, data) for _ in range(args.events))
    figures = await measure_flow(run, events, args.events, args.events * len(clients),
                                 max(1, len(clients)))
    return {"subscribers": len(clients), "connect_s": round(connect_s, 2), **figures}


async def channels(run: Run) -> dict[str, Any]:
    """N sockets spread over C channels (socket i on channel i mod C); events round-robin."""
    args = run.args
    names = [f"bench-ch-{i}" for i in range(args.channels)]
    started = time.perf_counter()
    clients = await open_subscribers(run, args.subscribers, lambda i: names[i % len(names)],
                                     marker=EVENT_MARKER)
    connect_s = time.perf_counter() - started
    per_channel = [0] * len(names)
    for client_index in range(len(clients)):
        per_channel[client_index % len(names)] += 1
    expected = sum(per_channel[k % len(names)] for k in range(args.events))
    data = _padding(run)
    events = ((names[k % len(names)], EVENT_NAME, data) for k in range(args.events))
    per_event = max(1.0, len(clients) / len(names))
    figures = await measure_flow(run, events, args.events, expected, per_event)
    return {"subscribers": len(clients), "channels": len(names), "connect_s": round(connect_s, 2),
            **figures}


async def publish_paced(run: Run, publisher: Publisher, channel: str, seconds: float) -> None:
    """Publish stamped events at ``--rate`` per second for ``seconds``, ``--batch`` each."""
    args = run.args
    interval = args.batch / args.rate
    batches = max(1, int(seconds * args.rate / args.batch))
    start = time.perf_counter()
    pending: set[asyncio.Task[bool]] = set()
    for k in range(batches):
        delay = start + k * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        events = [(channel, EVENT_NAME, event_data(args.payload_bytes, stamped=True))
                  for _ in range(args.batch)]
        task = asyncio.create_task(publisher.batch(events))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)


def percentiles(values: array[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "p999_ms": None, "max_ms": None}

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "p999_ms": at(0.999),
            "max_ms": round(ordered[-1], 3), "mean_ms": round(sum(ordered) / len(ordered), 3)}


async def latency(run: Run) -> dict[str, Any]:
    """N sockets on one channel, events at a fixed rate; publish-to-receive percentiles."""
    args = run.args
    channel = "bench-latency"
    clients = await open_subscribers(run, args.subscribers, lambda _: channel, stamps=True)
    counters = run.counters
    counters.latencies_ms = array("d")
    publisher = Publisher(run.target, counters, 4)
    try:
        if args.warmup > 0:
            await publish_paced(run, publisher, channel, args.warmup)
            await asyncio.sleep(0.5)
        counters.latencies_ms = array("d")
        base, sent_before = counters.deliveries, publisher.events
        clock = run.clock()
        await publish_paced(run, publisher, channel, args.duration)
        expected = (publisher.events - sent_before) * len(clients)
        await wait_for_deliveries(counters, base + expected, args.settle)
    finally:
        await publisher.close()
    wall = time.perf_counter() - clock.wall
    received = counters.deliveries - base
    return {
        "subscribers": len(clients), "rate": args.rate, "batch": args.batch,
        "events": publisher.events - sent_before, "deliveries": received,
        "missing_deliveries": max(0, expected - received),
        "achieved_events_per_s": round((publisher.events - sent_before) / args.duration, 1),
        **percentiles(counters.latencies_ms),
        **cpu_figures(clock, wall, received, "delivery"),
    }


def _socket_budget(run: Run) -> int:
    """How many sockets both sides can hold open: the smaller open-files limit, less margin."""
    limits = [fd_limit()]
    if run.server_pid:
        server_limit = process_fd_limit(run.server_pid)
        if server_limit:
            limits.append(server_limit)
    return min(limits) - 200


async def _settled_rss(pid: int, settle: float) -> int:
    await asyncio.sleep(settle)
    return family_rss_bytes(pid)


async def connections(run: Run) -> dict[str, Any]:
    """Open idle subscribed sockets up to each level; connect rate and server RSS per socket."""
    args = run.args
    pid = run.server_pid
    budget = _socket_budget(run)
    names = [f"bench-idle-{i}" for i in range(args.channels)]
    baseline = await _settled_rss(pid, args.settle) if pid else None
    levels: list[dict[str, Any]] = []
    for level in sorted(args.levels):
        if level > budget:
            levels.append({"sockets": level, "skipped": f"open-files limit allows ~{budget}"})
            continue
        levels.append(await _connection_level(run, level, names, baseline))
    result: dict[str, Any] = {"channels": len(names), "fd_budget": budget, "levels": levels}
    if baseline is not None:
        result["baseline_rss_mib"] = round(baseline / 2**20, 1)
    return result


async def _connection_level(run: Run, level: int, names: Sequence[str], baseline: int | None
                            ) -> dict[str, Any]:
    already = len(run.clients)
    clock = run.clock()
    opened = await open_subscribers(run, level - already, lambda i: names[i % len(names)],
                                    first=already, label=f"connect {level}")
    wall, _, server_cpu = clock.read()
    figures: dict[str, Any] = {
        "sockets": len(run.clients), "opened": len(opened), "connect_s": round(wall, 2),
        "connect_per_s": round(len(opened) / wall) if wall else None,
    }
    if server_cpu is not None and opened:
        figures["server_cpu_us_per_connect"] = round(1e6 * server_cpu / len(opened), 1)
    if run.server_pid and baseline is not None:
        rss = await _settled_rss(run.server_pid, run.args.settle)
        figures["rss_mib"] = round(rss / 2**20, 1)
        figures["rss_kib_per_socket"] = round((rss - baseline) / max(1, len(run.clients)) / 1024, 2)
    return figures


def _presence_auth(target: Target, socket_id: str, channel: str, channel_data: str) -> str:
    message = f"{socket_id}:{channel}:{channel_data}".encode()
    digest = hmac.new(target.secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{target.key}:{digest}"


async def _join_all(run: Run, clients: Sequence[WsClient], per_channel: int) -> None:
    futures = []
    for index, client in enumerate(clients):
        channel = f"presence-bench-{index // per_channel}"
        channel_data = orjson.dumps({"user_id": str(index),
                                     "user_info": {"name": f"user {index}"}}).decode()
        auth = _presence_auth(run.target, client.socket_id, channel, channel_data)
        futures.append(client.subscribe(channel, auth, channel_data))
    results = await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True),
                                     run.args.step_timeout)
    for failure in (r for r in results if isinstance(r, BaseException)):
        run.counters.error(f"join: {failure}"[:300])


async def _wait_for_protocol(counters: Counters, event: str, expected: int, settle: float
                             ) -> float:
    """Wait until ``expected`` frames of ``event`` arrived (or none for ``settle`` s)."""
    last, last_change = counters.protocol[event], time.perf_counter()
    while counters.protocol[event] < expected:
        await asyncio.sleep(0.002)
        now = time.perf_counter()
        if counters.protocol[event] != last:
            last, last_change = counters.protocol[event], now
        elif now - last_change > settle:
            break
    return last_change if counters.protocol[event] < expected else time.perf_counter()


def _pairs(sizes: Sequence[int]) -> int:
    """Member-added (or removed) frames a full join (or leave) of these channels produces."""
    return sum(size * (size - 1) // 2 for size in sizes)


async def presence(run: Run) -> dict[str, Any]:
    """Sockets join presence channels (``--members`` per channel), then leave; rates and CPU."""
    args = run.args
    clients = await open_subscribers(run, args.subscribers, lambda _: None)
    per_channel = args.members
    sizes = [min(per_channel, len(clients) - start)
             for start in range(0, len(clients), per_channel)]
    counters = run.counters
    joins = leaves = 0.0
    join_cpu = leave_cpu = 0.0
    for _ in range(args.rounds):
        added = counters.protocol["pusher_internal:member_added"]
        clock = run.clock()
        await _join_all(run, clients, per_channel)
        done = await _wait_for_protocol(counters, "pusher_internal:member_added",
                                        added + _pairs(sizes), args.settle)
        joins += done - clock.wall
        join_cpu += clock.read()[2] or 0.0
        removed = counters.protocol["pusher_internal:member_removed"]
        clock = run.clock()
        for index, client in enumerate(clients):
            client.unsubscribe(f"presence-bench-{index // per_channel}")
        done = await _wait_for_protocol(counters, "pusher_internal:member_removed",
                                        removed + _pairs(sizes), args.settle)
        leaves += done - clock.wall
        leave_cpu += clock.read()[2] or 0.0
    total = len(clients) * args.rounds
    figures: dict[str, Any] = {
        "subscribers": len(clients), "members_per_channel": per_channel, "rounds": args.rounds,
        "joins_per_s": round(total / joins) if joins else None,
        "leaves_per_s": round(total / leaves) if leaves else None,
        "member_added_frames": counters.protocol["pusher_internal:member_added"],
        "member_removed_frames": counters.protocol["pusher_internal:member_removed"],
        "expected_member_frames_each": _pairs(sizes) * args.rounds,
    }
    if run.server_pid and total:
        figures["server_cpu_us_per_join"] = round(1e6 * join_cpu / total, 1)
        figures["server_cpu_us_per_leave"] = round(1e6 * leave_cpu / total, 1)
    return figures


# -- publish: the signed HTTP API under wrk ----------------------------------------------


async def _probe(target: Target, raw: bytes, timeout: float) -> str | None:
    """Send one pre-signed request on its own connection; None if answered 2xx, else why not.

    Run once before wrk, so that a refused signature shows up with the server's own message
    instead of as a count of failed requests.
    """
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(target.host, target.port)
            try:
                writer.write(raw)
                status = await reader.readline()
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                body = await reader.readexactly(min(length, 4096))
            finally:
                writer.close()
    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError) as error:
        return f"probe request: {type(error).__name__}: {error}"
    if status[9:10] == b"2":
        return None
    return f"probe request answered {status.strip().decode(errors='replace')}: {body[:200]!r}"


async def _run_wrk(run: Run, script: Path, seconds: int) -> tuple[dict[str, Any], float]:
    """wrk for ``seconds`` with ``script``: (the script's report, wrk's CPU seconds).

    wrk is this process's only child, so the change of ``RUSAGE_CHILDREN`` over its run is
    its CPU time, every thread included.
    """
    args = run.args
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    process = await asyncio.create_subprocess_exec(
        args.wrk, f"-t{args.threads}", f"-c{args.connections}", f"-d{seconds}s", "--latency",
        f"--timeout={args.request_timeout}s", "-s", str(script),
        f"http://{wrkload.authority(run.target)}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await process.communicate()
    finally:
        if process.returncode is None:  # cancelled by the hard timeout
            process.kill()
            await process.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    if process.returncode != 0:
        raise RuntimeError(f"wrk exited with {process.returncode}: {err.decode()[-300:]}")
    return wrkload.parse_report(out.decode()), cpu


async def _quiet(counters: Counters, settle: float) -> None:
    """Wait until deliveries stop arriving (none for 0.2 s), at most ``settle`` seconds: the
    warm-up's last requests must not be counted in the measured run."""
    deadline = time.perf_counter() + settle
    while time.perf_counter() < deadline:
        before = counters.deliveries
        await asyncio.sleep(0.2)
        if counters.deliveries == before:
            return


def _wrk_figures(report: dict[str, Any], batch: int) -> dict[str, Any]:
    seconds = report["duration_us"] / 1e6
    done = report["requests"]
    return {
        "requests": done,
        "duration_s": round(seconds, 3),
        "requests_per_s": round(done / seconds) if seconds else 0,
        "events_per_s": round(done * batch / seconds) if seconds else 0,
        **{f"{q}_ms": round(report[f"{q}_us"] / 1000, 3) for q in ("p50", "p90", "p99", "max")},
        "mean_ms": round(report["mean_us"] / 1000, 3),
        "non_2xx": report["status_errors"],
        "socket_errors": {k: report[k] for k in ("connect_errors", "read_errors",
                                                  "write_errors", "timeouts") if report[k]},
    }


async def publish(run: Run) -> dict[str, Any]:
    """Pre-signed ``POST /events`` (or ``batch_events``) to per-user private channels, sent by
    wrk on keep-alive connections, with or without one subscriber on each channel."""
    args = run.args
    counters = run.counters
    if shutil.which(args.wrk) is None:
        counters.error(f"wrk not found ({args.wrk!r}): install it (Debian: apt-get install wrk)")
        return {}
    names = [f"private-user.{i}" for i in range(args.channels)]
    target = run.target
    clients: list[WsClient] = []
    if args.subscribed:
        clients = await open_subscribers(
            run, len(names), lambda i: names[i], marker=EVENT_MARKER,
            authorize=lambda sid, ch: sign_auth(target.key, target.secret,
                                                channel_string(sid, ch)))
        if len(clients) < len(names):
            return {"subscribers": len(clients)}
    # Signed just before the run: the servers accept a timestamp within their window (600 s).
    requests = wrkload.presign(target, names, args.batch, EVENT_NAME, _padding(run),
                               int(time.time()), args.close)
    problem = await _probe(target, requests[0], args.step_timeout)
    if problem:
        counters.error(problem)
        return {}
    with tempfile.TemporaryDirectory(prefix="bench-wrk-") as tmp:
        script = Path(tmp) / "publish.lua"
        script.write_text(wrkload.lua_script(requests))
        if args.warmup > 0:
            await _run_wrk(run, script, args.warmup)
            await _quiet(counters, args.settle)
        base = counters.deliveries
        clock = run.clock()
        report, wrk_cpu = await _run_wrk(run, script, args.duration)
        wall, own, server = clock.read()
    figures = {"channels": len(names), "subscribers": len(clients), "batch": args.batch,
               "connections": args.connections, "threads": args.threads,
               **_wrk_figures(report, args.batch)}
    done = figures["requests"]
    figures["wrk_cpu_pct"] = round(100 * wrk_cpu / wall, 1)
    # One wrk thread is one core: near 100 % per thread, the generator sets the rate.
    figures["generator_saturated"] = wrk_cpu / wall > 0.9 * args.threads
    if server is not None and done:
        figures["server_cpu_pct"] = round(100 * server / wall, 1)
        figures["server_cpu_us_per_request"] = round(1e6 * server / done, 2)
        figures["server_cpu_us_per_event"] = round(1e6 * server / (done * args.batch), 2)
    if clients:
        # wrk does not count the requests still in flight when it stops; the server may have
        # published them, so more deliveries than counted requests is not an error.
        expected = done * args.batch
        await wait_for_deliveries(counters, base + expected, args.settle)
        received = counters.deliveries - base
        figures.update(deliveries=received, missing_deliveries=max(0, expected - received),
                       receiver_cpu_pct=round(100 * own / wall, 1))
        if received < expected:
            counters.error(f"{expected - received} of {expected} deliveries missing")
    if not done:
        counters.error("wrk completed no request")
    if figures["non_2xx"]:
        counters.error(f"{figures['non_2xx']} responses with status >= 400")
    if figures["socket_errors"]:
        counters.error(f"wrk socket errors: {figures['socket_errors']}")
    return figures


SCENARIOS = {
    "fanout": fanout,
    "channels": channels,
    "latency": latency,
    "connections": connections,
    "presence": presence,
    "publish": publish,
}
