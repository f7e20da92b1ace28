#!/usr/bin/env python3
"""Soak: churn sockets, subscriptions and events for a long time; watch server memory and fds.

    python bench/soak.py --minutes 30                     # our server, started here
    python bench/soak.py --minutes 2 --warmup 0.5 --window 1.5 --burst-interval 40
    python bench/soak.py --port 6001 --server-pid $PID    # a server already running (Soketi...)

Every ``--wave-interval`` seconds a *wave* of sockets connects; each socket subscribes to a
public, a private and a presence channel of its wave (signatures computed here, two sockets
per user as two browser tabs would be), and the oldest waves leave (close frame 1000) so that
the population stays at ``--population``. On every tick the live sockets receive API events
(signed ``batch_events``, 10 per request) and send client events on their private and
presence channels. Every ``--burst-interval`` seconds a reconnect burst drops every live
socket at once (TCP abort, no close frame) and opens ``--burst-size`` sockets as fast as the
server takes them. Channel names carry the wave number, so channels come and go as an app's
per-user channels do.

Each wave counts what its sockets must receive (every API event to its channels times their
subscribers, every client event times the other subscribers); before it leaves, the count is
checked, so a lost or duplicated delivery is an error, not a guess.

Every ``--sample-interval`` seconds (10) the server's RSS (``VmRSS`` of /proc/<pid>/status)
and open fds (/proc/<pid>/fd) are sampled, with a progress line on stderr. At the end: one
JSON line on stdout (the samples, the least-squares RSS slope over the last ``--window``
minutes and the growth it means over that window, fd growth, errors) and a PNG of RSS and
fds over time when matplotlib is installed. Exit code 0 when the run had no error.

The generator is bounded: waves are held only while live, errors keep their first 50, the
samples one per interval, and ``--timeout`` (default: the run plus 5 minutes) stops
everything. Only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import math
import os
import random
import signal
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import uvloop
from child import ChildServer, proc_status_kib
from procstat import raise_fd_limit, require_loopback
from publisher import Event, Publisher, event_data
from run import APP_ID, APP_KEY, APP_SECRET, OUR_CONFIG
from wsclient import Counters, Target, WsClient, client_frame

from pusher_compat.signatures import channel_string, sign_auth

__all__ = ["growth", "least_squares", "main"]

BENCH = Path(__file__).resolve().parent
API_EVENT = "soak-event"
CLIENT_EVENT = "client-soak"
SOCKETS_PER_USER = 2
"""Sockets sharing a user id and its private channel (two tabs of one signed-in user)."""
PUBLIC_GROUP = 50
"""Sockets of a wave per public channel."""
PRESENCE_GROUP = 20
"""Sockets of a wave per presence channel (10 users: below every server's member limit)."""
_CLOSE_NORMAL = client_frame((1000).to_bytes(2, "big"), 0x8)


class SoakClient(WsClient):
    """A :class:`WsClient` that knows its place in its wave and can close cleanly."""

    __slots__ = ("_deadline", "channels", "index")

    def __init__(self, target: Target, counters: Counters, index: int) -> None:
        super().__init__(target, counters)
        self.index = index
        """Position in its wave: decides its user and channels."""
        self.channels: tuple[str, ...] = ()
        """Channels it is subscribed to (set once every subscription succeeded)."""
        self._deadline: asyncio.TimerHandle | None = None
        """Aborts the connection should the server not end it after our close frame."""

    def close(self, grace: float) -> None:
        """Send close 1000; the server answers with its own and ends TCP (else, after
        ``grace`` seconds, the connection is aborted: a silent server must not keep our fd).

        Marked as ended by us, so its end is not counted as a lost connection.
        """
        self._aborted = True
        if self.transport is not None:
            self.transport.write(_CLOSE_NORMAL)
            self._deadline = asyncio.get_running_loop().call_later(grace, self.abort)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()  # the timer would hold this client until it fires
            self._deadline = None
        super().connection_lost(exc)


@dataclass(slots=True)
class Wave:
    """Sockets that connect together, share their channels and leave together."""

    number: int
    """Sequence number; part of every channel name and user id of the wave."""
    size: int
    """Sockets asked for (fewer are live if some failed to open)."""
    clients: list[SoakClient] = field(default_factory=list)
    """Its live sockets, each subscribed to its three channels."""
    members: Counter[str] = field(default_factory=Counter)
    """Subscribers per channel of the wave, from the sockets that opened."""
    expected: int = 0
    """Deliveries its sockets must have received: API events and others' client events."""

    def channels_of(self, index: int) -> tuple[str, str, str]:
        """(public, private, presence) channel of socket ``index``."""
        user = index // SOCKETS_PER_USER
        return (f"soak-{self.number}-{index // PUBLIC_GROUP}",
                f"private-soak-{self.number}-{user}",
                f"presence-soak-{self.number}-{index // PRESENCE_GROUP}")

    def user_id(self, index: int) -> str:
        """The presence user of socket ``index`` (shared with the other tab of the user)."""
        return f"{self.number}-{index // SOCKETS_PER_USER}"

    def received(self) -> int:
        """Deliveries its sockets have counted so far."""
        return sum(client.deliveries for client in self.clients)


@dataclass(slots=True)
class Tally:
    """Run-wide counts reported at the end (all plain integers: bounded)."""

    connects: int = 0
    """Sockets opened and subscribed to their three channels."""
    closes: int = 0
    """Sockets that left with a close frame."""
    aborts: int = 0
    """Sockets dropped without one (reconnect bursts)."""
    waves: int = 0
    bursts: int = 0
    client_events: int = 0
    """Client events sent (each reaches the other subscribers of its channel)."""
    expected: int = 0
    """Deliveries the waves that left should have received, summed."""
    received: int = 0
    """Deliveries they counted."""
    missing: int = 0
    """Expected deliveries that did not arrive within ``--settle``."""
    extra: int = 0
    """Deliveries beyond the expected count (duplicates or strays)."""


@dataclass(slots=True)
class Soak:
    """The churn: live waves, the publisher, the counters and what was sampled."""

    args: argparse.Namespace
    """The command line (sizes, rates, intervals, limits)."""
    target: Target
    server_pid: int
    """The server whose RSS and fds are sampled."""
    publisher: Publisher
    """Signed ``batch_events`` over keep-alive connections."""
    counters: Counters
    """Shared by every socket: deliveries, protocol frames, close codes, errors."""
    rng: random.Random
    """Picks senders and channels (seeded: runs are repeatable)."""
    live: deque[Wave] = field(default_factory=deque)
    """Live waves, oldest first."""
    tally: Tally = field(default_factory=Tally)
    burst_times: list[float] = field(default_factory=list)
    """Seconds since start at which each reconnect burst began (one per --burst-interval)."""
    samples: list[dict[str, float]] = field(default_factory=list)
    """One per ``--sample-interval``: seconds since start, server and generator figures."""
    next_wave: int = 0
    """Number of the next wave opened."""
    started: float = field(default_factory=time.monotonic)

    @property
    def sockets(self) -> int:
        return sum(len(wave.clients) for wave in self.live)

    # -- opening -----------------------------------------------------------------------

    async def open_waves(self, sizes: Sequence[int], concurrency: int) -> None:
        """Open waves of these sizes at once, ``concurrency`` sockets in flight overall."""
        gate = asyncio.Semaphore(concurrency)
        waves = []
        for size in sizes:
            waves.append(Wave(self.next_wave, size))
            self.next_wave += 1
        # Live at once, so that a sample taken meanwhile counts the sockets already open.
        self.live.extend(waves)
        await asyncio.gather(*(self._open(wave, index, gate)
                               for wave in waves for index in range(wave.size)))
        for wave in waves:
            for client in wave.clients:
                wave.members.update(client.channels)
        self.tally.waves += len(waves)

    async def _open(self, wave: Wave, index: int, gate: asyncio.Semaphore) -> None:
        """Connect socket ``index`` of ``wave`` and subscribe it; an error is recorded."""
        loop = asyncio.get_running_loop()
        target = self.target
        async with gate:
            try:
                _, client = await asyncio.wait_for(loop.create_connection(
                    lambda: SoakClient(target, self.counters, index), target.host, target.port),
                    self.args.step_timeout)
            except (TimeoutError, OSError) as error:
                self._failed(wave, index, error)
                return
            try:
                client.channels = await self._subscribe(wave, client)
            except (TimeoutError, OSError, RuntimeError) as error:
                client.abort()
                self._failed(wave, index, error)
                return
            wave.clients.append(client)
            self.tally.connects += 1

    async def _subscribe(self, wave: Wave, client: SoakClient) -> tuple[str, str, str]:
        """Wait for the handshake, then subscribe ``client`` to its three channels at once."""
        timeout = self.args.step_timeout
        key, secret = self.target.key, self.target.secret
        socket_id = await asyncio.wait_for(client.established, timeout)
        public, private, presence = channels = wave.channels_of(client.index)
        channel_data = orjson.dumps({"user_id": wave.user_id(client.index),
                                     "user_info": {"tab": client.index}}).decode()
        await asyncio.wait_for(asyncio.gather(
            client.subscribe(public),
            client.subscribe(private, sign_auth(key, secret, channel_string(socket_id, private))),
            client.subscribe(presence, sign_auth(
                key, secret, channel_string(socket_id, presence, channel_data)), channel_data),
        ), timeout)
        return channels

    def _failed(self, wave: Wave, index: int, error: Exception) -> None:
        self.counters.error(f"open {wave.number}/{index}: {type(error).__name__}: {error}"[:300])

    # -- traffic -----------------------------------------------------------------------

    def _pick(self) -> tuple[Wave, SoakClient]:
        waves = [wave for wave in self.live if wave.clients]
        wave = self.rng.choices(waves, weights=[len(w.clients) for w in waves])[0]
        return wave, self.rng.choice(wave.clients)

    async def traffic(self) -> None:
        """One tick's API events (to channels of live sockets) and client events."""
        if not any(wave.clients for wave in self.live):
            return
        interval = self.args.wave_interval
        # Client events: distinct senders, so no socket sends more than one per tick (the
        # server's per-socket limit is 10/s and a tick lasts at least 0.2 s).
        senders = min(self.sockets, round(self.args.client_rate * interval))
        picked: set[int] = set()
        for _ in range(senders * 3):  # bounded: a pick may repeat a sender
            if len(picked) >= senders:
                break
            wave, client = self._pick()
            if id(client) in picked:
                continue
            picked.add(id(client))
            channel = client.channels[self.rng.choice((1, 2))]
            client.send_json({"event": CLIENT_EVENT, "channel": channel,
                              "data": {"wave": wave.number, "tab": client.index}})
            wave.expected += wave.members[channel] - 1
            self.tally.client_events += 1
        events = round(self.args.api_rate * interval)
        batches: list[tuple[list[Event], list[tuple[Wave, str]]]] = []
        for start in range(0, events, 10):
            batch: list[Event] = []
            owners: list[tuple[Wave, str]] = []
            for _ in range(min(10, events - start)):
                wave, client = self._pick()
                channel = self.rng.choice(client.channels)
                batch.append((channel, API_EVENT, event_data(self.args.payload_bytes, False)))
                owners.append((wave, channel))
            batches.append((batch, owners))
        results = await asyncio.gather(*(self.publisher.batch(b) for b, _ in batches))
        for ok, (_, owners) in zip(results, batches, strict=True):
            if ok:
                for wave, channel in owners:
                    wave.expected += wave.members[channel]

    # -- leaving -----------------------------------------------------------------------

    async def retire(self, wave: Wave, abort: bool) -> None:
        """Check the wave's deliveries (waiting up to ``--settle`` s without progress), then
        close its sockets (``abort``: drop TCP without a close frame)."""
        settle = self.args.settle
        got, last_change = wave.received(), time.monotonic()
        while got < wave.expected and time.monotonic() - last_change < settle:
            await asyncio.sleep(0.02)
            now = wave.received()
            if now != got:
                got, last_change = now, time.monotonic()
        tally = self.tally
        tally.expected += wave.expected
        tally.received += got
        if got != wave.expected:
            tally.missing += max(0, wave.expected - got)
            tally.extra += max(0, got - wave.expected)
            self.counters.error(f"wave {wave.number}: {got} deliveries, "
                                f"{wave.expected} expected")
        for client in wave.clients:
            if abort:
                client.abort()
            else:
                client.close(self.args.step_timeout)
        if abort:
            tally.aborts += len(wave.clients)
        else:
            tally.closes += len(wave.clients)
        wave.clients = []

    async def trim(self, incoming: int) -> None:
        """Close the oldest waves until ``incoming`` more sockets fit in ``--population``."""
        while self.live and self.sockets + incoming > self.args.population:
            await self.retire(self.live[0], abort=False)
            self.live.popleft()

    async def burst(self) -> None:
        """Drop every live socket at once, then open ``--burst-size`` sockets at once."""
        self.burst_times.append(round(time.monotonic() - self.started, 1))
        self.tally.bursts += 1
        while self.live:
            await self.retire(self.live[0], abort=True)
            self.live.popleft()
        size, step = self.args.burst_size, self.args.wave_size
        await self.open_waves([min(step, size - n) for n in range(0, size, step)],
                              self.args.burst_concurrency)

    # -- sampling ----------------------------------------------------------------------

    def sample(self) -> dict[str, float]:
        pid = self.server_pid
        figures: dict[str, float] = {
            "t": round(time.monotonic() - self.started, 1),
            "rss_kib": proc_status_kib(pid, "VmRSS"),
            "fds": len(os.listdir(f"/proc/{pid}/fd")),
            "sockets": self.sockets,
            "own_rss_kib": proc_status_kib(os.getpid(), "VmRSS"),
            "own_fds": len(os.listdir("/proc/self/fd")),
        }
        self.samples.append(figures)
        return figures

    async def sampler(self, duration: float) -> None:
        """A sample and a progress line every ``--sample-interval`` s (bounded by count)."""
        interval = self.args.sample_interval
        for number in range(1, int(duration // interval) + 1):
            await asyncio.sleep(self.started + number * interval - time.monotonic())
            figures = self.sample()
            tally = self.tally
            _log(f"[soak {figures['t']:.0f}/{duration:.0f} s] server RSS "
                 f"{figures['rss_kib'] / 1024:.1f} MiB, {figures['fds']:.0f} fds | "
                 f"{figures['sockets']:.0f} sockets, {tally.connects} connects, "
                 f"{tally.bursts} bursts, {self.publisher.events} API events, "
                 f"{tally.client_events} client events, {self.counters.error_count} errors | "
                 f"generator RSS {figures['own_rss_kib'] / 1024:.1f} MiB, "
                 f"{figures['own_fds']:.0f} fds")

    async def churn(self, duration: float) -> None:
        """Ticks until ``duration`` s have passed (their count bounded by the duration)."""
        args = self.args
        next_burst = args.burst_interval
        ticks = int(duration / args.wave_interval)
        for tick in range(ticks):
            if time.monotonic() - self.started >= duration:
                break
            if args.burst_size and time.monotonic() - self.started >= next_burst:
                await self.burst()
                next_burst += args.burst_interval
            else:
                await self.trim(args.wave_size)
                await self.open_waves([args.wave_size], args.connect_concurrency)
            await self.traffic()
            pause = self.started + (tick + 1) * args.wave_interval - time.monotonic()
            await asyncio.sleep(max(0.0, pause))

    async def drain(self) -> None:
        """Close every live socket and the publisher's connections, then wait (up to 10 s)
        for the server's fds to fall back to where they were before the first socket."""
        began = time.monotonic()
        while self.live:
            await self.retire(self.live[0], abort=False)
            self.live.popleft()
        await self.publisher.close()
        closed = time.monotonic()
        baseline = self.samples[0]["fds"]
        for _ in range(100):
            if len(os.listdir(f"/proc/{self.server_pid}/fd")) <= baseline:
                break
            await asyncio.sleep(0.1)
        _log(f"soak: drained: sockets closed in {closed - began:.1f} s, server fds at "
             f"{len(os.listdir(f'/proc/{self.server_pid}/fd'))} (baseline {baseline:.0f}) "
             f"{time.monotonic() - closed:.1f} s later")
        await asyncio.sleep(self.args.settle)


# -- analysis ------------------------------------------------------------------------------


def least_squares(points: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(slope, intercept) of the least-squares line through ``points`` (x, y)."""
    count = len(points)
    if count < 2:
        return 0.0, points[0][1] if points else 0.0
    mean_x = sum(x for x, _ in points) / count
    mean_y = sum(y for _, y in points) / count
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    if not spread:
        return 0.0, mean_y
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / spread
    return slope, mean_y - slope * mean_x


def growth(samples: Sequence[dict[str, float]], start: float, end: float) -> dict[str, Any]:
    """RSS and fd figures over the samples taken in [start, end] seconds.

    The RSS growth is that of the fitted line over the window, as a share of the line's value
    at its start: a slope, not the difference of two noisy samples.
    """
    window = [s for s in samples if start <= s["t"] <= end]
    if len(window) < 2:
        return {"window_samples": len(window)}
    slope, intercept = least_squares([(s["t"], s["rss_kib"]) for s in window])
    first_t, last_t = window[0]["t"], window[-1]["t"]
    at_start = slope * first_t + intercept
    return {
        "window_s": [first_t, last_t],
        "window_samples": len(window),
        "rss_slope_kib_per_min": round(slope * 60, 2),
        "rss_growth_pct": round(100 * slope * (last_t - first_t) / at_start, 3),
        "rss_window_mib": {
            "first": round(window[0]["rss_kib"] / 1024, 1),
            "last": round(window[-1]["rss_kib"] / 1024, 1),
            "min": round(min(s["rss_kib"] for s in window) / 1024, 1),
            "max": round(max(s["rss_kib"] for s in window) / 1024, 1),
        },
        "fds_window": {"first": window[0]["fds"], "last": window[-1]["fds"],
                       "max": max(s["fds"] for s in window)},
    }


def plot(samples: Sequence[dict[str, float]], figures: dict[str, Any], bursts: Sequence[float],
         path: Path, title: str) -> str | None:
    """RSS and fds over time as a PNG at ``path``; None (said on stderr) without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        _log("soak: matplotlib is not installed (pip install matplotlib): no plot")
        return None
    minutes = [s["t"] / 60 for s in samples]
    figure, (rss_axis, fd_axis) = plt.subplots(2, 1, sharex=True, figsize=(10, 6.5))
    rss_axis.plot(minutes, [s["rss_kib"] / 1024 for s in samples], color="tab:blue",
                  label="server RSS")
    window = figures.get("window_s")
    if window:
        for axis in (rss_axis, fd_axis):
            axis.axvspan(window[0] / 60, window[1] / 60, color="0.92", zorder=0)
        slope = figures["rss_slope_kib_per_min"] / 60 / 1024
        start_mib = figures["rss_fit_start_mib"]
        rss_axis.plot([window[0] / 60, window[1] / 60],
                      [start_mib, start_mib + slope * (window[1] - window[0])],
                      color="tab:red", linestyle="--",
                      label=f"least squares: {figures['rss_growth_pct']:+.2f} % over window")
    for at in bursts:
        for axis in (rss_axis, fd_axis):
            axis.axvline(at / 60, color="0.6", linewidth=0.6, linestyle=":")
    rss_axis.set_ylabel("MiB")
    rss_axis.set_ylim(bottom=0)
    rss_axis.legend(loc="lower right")
    rss_axis.set_title(title, fontsize=10)
    fd_axis.plot(minutes, [s["fds"] for s in samples], color="tab:green", label="server fds")
    fd_axis.plot(minutes, [s["sockets"] for s in samples], color="tab:orange",
                 linestyle=":", label="live sockets (generator)")
    fd_axis.set_ylabel("count")
    fd_axis.set_xlabel("minutes (grey: the window the slope is fitted over; "
                       "dotted: reconnect bursts)")
    fd_axis.set_ylim(bottom=0)
    fd_axis.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return str(path)


# -- running -------------------------------------------------------------------------------


async def soak(args: argparse.Namespace, target: Target, pid: int) -> dict[str, Any]:
    duration = args.minutes * 60
    counters = Counters()
    publisher = Publisher(target, counters)
    state = Soak(args, target, pid, publisher, counters, random.Random(args.seed))
    baseline = state.sample()
    sampler = asyncio.create_task(state.sampler(duration))
    timed_out = False
    try:
        async with asyncio.timeout(args.timeout):
            try:
                await state.churn(duration)
                await sampler
            finally:
                sampler.cancel()
                await state.drain()
    except TimeoutError:
        timed_out = True
        counters.error(f"hard timeout after {args.timeout:g} s")
        for wave in state.live:
            for client in wave.clients:
                client.abort()
    finally:
        await publisher.close()
    after = state.sample()
    samples = state.samples
    end = samples[-2]["t"] if len(samples) > 2 else after["t"]
    start = max(args.warmup * 60, end - args.window * 60)
    figures = growth(samples[1:-1], start, end)
    if "window_s" in figures:
        slope, intercept = least_squares(
            [(s["t"], s["rss_kib"]) for s in samples[1:-1] if start <= s["t"] <= end])
        figures["rss_fit_start_mib"] = (slope * figures["window_s"][0] + intercept) / 1024
    tally = state.tally
    result: dict[str, Any] = {
        **figures,
        "rss_baseline_mib": round(baseline["rss_kib"] / 1024, 1),
        "rss_after_mib": round(after["rss_kib"] / 1024, 1),
        "fds_baseline": baseline["fds"],
        "fds_after": after["fds"],
        "fd_growth": after["fds"] - baseline["fds"],
        "generator_max_rss_mib": round(max(s["own_rss_kib"] for s in samples) / 1024, 1),
        "generator_max_fds": max(s["own_fds"] for s in samples),
        "connects": tally.connects, "closes": tally.closes, "aborts": tally.aborts,
        "waves": tally.waves, "bursts": tally.bursts,
        "api_requests": publisher.requests, "api_events": publisher.events,
        "client_events": tally.client_events,
        "deliveries_expected": tally.expected, "deliveries_received": tally.received,
        "missing_deliveries": tally.missing, "extra_deliveries": tally.extra,
        "timed_out": timed_out,
    }
    unexpected_closes = {code: n for code, n in counters.close_codes.items() if code != 1000}
    if unexpected_closes:
        result["closed_by_server"] = unexpected_closes
        counters.error(f"closed by the server: {unexpected_closes}")
    if counters.lost:
        result["connections_lost"] = counters.lost
        counters.error(f"{counters.lost} connection(s) lost")
    result["errors"] = counters.error_count
    if counters.errors:
        result["first_errors"] = counters.errors[:5]
    result["target_met"] = (not counters.error_count and "rss_growth_pct" in figures
                            and figures["rss_growth_pct"] < 1.0 and result["fd_growth"] <= 0)
    result["burst_times_s"] = state.burst_times
    result["samples"] = samples
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="soak.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--minutes", type=float, default=30.0, help="length of the churn (default 30)")
    add("--window", type=float, default=20.0, metavar="MINUTES",
        help="the RSS slope is fitted over the last MINUTES of the churn (default 20)")
    add("--warmup", type=float, default=5.0, metavar="MINUTES",
        help="...but never over the first MINUTES (default 5)")
    add("--sample-interval", type=float, default=10.0, metavar="SECONDS",
        help="server RSS and fds sampled this often, with a progress line (default 10)")
    add("--population", type=int, default=3000,
        help="live sockets between bursts (default 3000)")
    add("--wave-size", type=int, default=100,
        help="sockets per wave: they connect, share channels and leave together (default 100)")
    add("--wave-interval", type=float, default=1.0, metavar="SECONDS",
        help="a wave connects (and the oldest leave) this often (default 1, at least 0.2)")
    add("--burst-size", type=int, default=5000,
        help="sockets opened at once by a reconnect burst; 0: no bursts (default 5000)")
    add("--burst-interval", type=float, default=180.0, metavar="SECONDS",
        help="a reconnect burst this often (default 180)")
    add("--burst-concurrency", type=int, default=500,
        help="sockets being opened at once in a burst (default 500)")
    add("--connect-concurrency", type=int, default=100,
        help="sockets being opened at once in a wave (default 100)")
    add("--api-rate", type=float, default=200.0,
        help="API events per second, 10 per batch_events request (default 200)")
    add("--client-rate", type=float, default=100.0,
        help="client events per second, at most one per socket per tick (default 100)")
    add("--payload-bytes", type=int, default=100, help="API event data size (default 100)")
    add("--settle", type=float, default=3.0, metavar="SECONDS",
        help="a leaving wave waits this long without progress for its deliveries (default 3)")
    add("--step-timeout", type=float, default=30.0, metavar="SECONDS",
        help="limit for one connect / handshake / subscription (default 30)")
    add("--timeout", type=float, metavar="SECONDS",
        help="hard limit for the whole run (default: the churn plus 300 s)")
    add("--seed", type=int, default=1, help="random choices of senders and channels")
    add("--plot", type=Path, metavar="PNG",
        help="where to write the plot (default bench/results/soak-<UTC time>.png)")
    add("--host", default="127.0.0.1", help="server address (loopback only)")
    add("--port", type=int, help="a server already running; default: start ours here")
    add("--server-pid", type=int, help="its pid (required with --port)")
    add("--app-id", default=APP_ID)
    add("--key", default=APP_KEY)
    add("--secret", default=APP_SECRET)
    add("--label", default="ours", help="name in the JSON line (default ours)")
    return parser


def _check(args: argparse.Namespace) -> str | None:
    if args.port is not None and args.server_pid is None:
        return "--port needs --server-pid (its RSS and fds are what a soak measures)"
    if args.wave_interval < 0.2 or args.sample_interval <= 0 or args.minutes <= 0:
        return "--wave-interval must be at least 0.2 s; --minutes and --sample-interval > 0"
    if args.wave_size < PRESENCE_GROUP or args.population < args.wave_size:
        return f"--wave-size must be at least {PRESENCE_GROUP} and at most --population"
    if args.window <= 0 or args.warmup < 0 or args.warmup >= args.minutes:
        return "--window must be > 0 and --warmup shorter than --minutes"
    return None


class _Stop(KeyboardInterrupt):
    """SIGTERM or the backstop alarm: unwind so that the server started here is stopped."""


def _raise_stop(signum: int, _frame: Any) -> None:
    raise _Stop(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    problem = _check(args)
    try:
        address = require_loopback(args.host)
    except ValueError as error:
        problem = str(error)
    if problem:
        print(f"soak: {problem}", file=sys.stderr)
        return 2
    if args.timeout is None:
        args.timeout = args.minutes * 60 + 300
    limit = raise_fd_limit()
    if limit < args.population + args.burst_size + 1000:
        print(f"soak: open-files limit {limit} is too low for --population + --burst-size",
              file=sys.stderr)
        return 2
    stamp = datetime.datetime.now(datetime.UTC)
    path = args.plot or BENCH / "results" / f"soak-{stamp:%Y%m%dT%H%M%SZ}.png"
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM):
        signal.signal(signum, _raise_stop)
    signal.alarm(math.ceil(args.timeout) + 60)  # backstop, should the run not honour --timeout
    server: ChildServer | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="pusher-compat-soak-") as tmp:
            if args.port is None:
                server = ChildServer(OUR_CONFIG, Path(tmp))
                args.port, args.server_pid = server.port, server.pid
                _log(f"soak: our server, pid {server.pid}, port {server.port}")
            target = Target(address, args.port, args.app_id, args.key, args.secret)
            result = uvloop.run(soak(args, target, args.server_pid))
            if server is not None and not server.alive():
                result["errors"] += 1
                result["first_errors"] = [*result.get("first_errors", ()), "server exited"]
                _log("soak: the server exited; log tail:\n" + "".join(server.log[-20:]))
    except KeyboardInterrupt as stop:
        _log(f"soak: interrupted ({stop or 'SIGINT'})")
        return 130
    finally:
        signal.alarm(0)
        if server is not None:
            server.stop()
    line = {"scenario": "soak", "label": args.label, "at": stamp.isoformat(timespec="seconds"),
            "params": {k: v for k, v in vars(args).items()
                       if k not in {"host", "key", "secret", "plot", "port", "server_pid"}}}
    title = (f"soak, {args.label}: {args.minutes:g} min, {args.population} sockets "
             f"+ bursts of {args.burst_size}")
    line["plot"] = plot(result["samples"], result, result["burst_times_s"], path, title)
    result.pop("rss_fit_start_mib", None)
    line.update(result)
    sys.stdout.write(orjson.dumps(line).decode() + "\n")
    growth_pct = result.get("rss_growth_pct")
    _log(f"soak: RSS {growth_pct if growth_pct is not None else '?'} % over the window, "
         f"fd growth {result['fd_growth']}, {result['errors']} errors; "
         f"target {'met' if result['target_met'] else 'NOT met'}"
         + (f"; plot {line['plot']}" if line["plot"] else ""))
    return 0 if not result["errors"] else 1


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())
