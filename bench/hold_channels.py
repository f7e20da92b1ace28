"""One socket holds many channels, then closes: the server's memory and ``/up`` latency.

The server runs as a child process on a loopback port, with the per-socket caps raised for
the test (``max_channels_per_connection``, ``max_subscriptions_per_second = 0``) and, with
``--webhooks``, a webhook endpoint on a port nobody listens on, so that every subscription and
every channel left queues webhook events as in production. The run:

1. warm-up: a socket subscribes to ``--warmup`` channels and closes (first-use allocations);
2. RSS before (``VmRSS`` of the server);
3. one socket subscribes to ``--channels`` public channels, then to a presence channel that a
   watcher socket is already in; RSS at peak;
4. the socket closes while ``/up`` is asked in a loop, one request at a time, until the
   watcher sees the holder's ``member_removed``: the presence channel was subscribed last, so
   it is released last, and the release is over;
5. RSS after ``--settle`` seconds.

Progress goes to stderr; stdout gets ONE JSON line::

    {"scenario":"hold_channels","channels":..,"webhooks":..,"rss_before_kib":..,
     "rss_peak_kib":..,"rss_after_kib":..,"growth_kib":..,"release_seconds":..,
     "up_probes":..,"up_max_ms":..}

Exit status 0 when the run completed, 1 when it failed (the server died, a step timed out).

Example: ``python bench/hold_channels.py --channels 100000 --webhooks``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from child import HOST, ChildServer, proc_status_kib, run_scenario

KEY = "hold-key"
SECRET = "hold-secret"
PRESENCE = "presence-last"
_BATCH = 1000
"""Subscribe frames in flight at once: the server never holds more answers than that."""


def log(message: str) -> None:
    print(f"hold_channels: {message}", file=sys.stderr, flush=True)


def config(channels: int, webhooks: bool) -> str:
    text = f"""\
[server]
activity_timeout = 120

[[apps]]
id = "1"
key = "{KEY}"
secret = "{SECRET}"
max_channels_per_connection = {channels + 1}
max_subscriptions_per_second = 0
"""
    if webhooks:
        with socket.socket() as unused:
            unused.bind((HOST, 0))
            port = unused.getsockname()[1]
        text += f'\n[[apps.webhooks]]\nurl = "http://{HOST}:{port}/nobody-listens"\n'
    return text


class Socket:
    """A raw protocol-7 client past its handshake."""

    def __init__(self, ws: Any, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def open(cls, session: aiohttp.ClientSession, port: int) -> Socket:
        ws = await session.ws_connect(f"ws://{HOST}:{port}/app/{KEY}?protocol=7")
        first = json.loads(await asyncio.wait_for(ws.receive_str(), 10))
        return cls(ws, json.loads(first["data"])["socket_id"])

    async def frame(self, timeout: float = 30) -> dict[str, Any]:
        return json.loads(await asyncio.wait_for(self.ws.receive_str(), timeout))

    async def subscribe_public(self, count: int, prefix: str) -> None:
        for start in range(0, count, _BATCH):
            names = [f"{prefix}{i}" for i in range(start, min(count, start + _BATCH))]
            for name in names:
                await self.ws.send_str(json.dumps(
                    {"event": "pusher:subscribe", "data": {"channel": name}}))
            # One deadline for the batch: a timer per frame costs more than the frame.
            async with asyncio.timeout(30):
                for name in names:
                    frame = json.loads(await self.ws.receive_str())
                    if frame.get("event") != "pusher_internal:subscription_succeeded":
                        raise RuntimeError(f"subscription to {name} answered {frame}")

    async def join(self, user_id: str) -> None:
        channel_data = json.dumps({"user_id": user_id})
        string = f"{self.socket_id}:{PRESENCE}:{channel_data}"
        signature = hmac.new(SECRET.encode(), string.encode(), hashlib.sha256).hexdigest()
        await self.ws.send_str(json.dumps({"event": "pusher:subscribe", "data": {
            "channel": PRESENCE, "auth": f"{KEY}:{signature}", "channel_data": channel_data}}))
        if (await self.frame())["event"] != "pusher_internal:subscription_succeeded":
            raise RuntimeError(f"{user_id} could not join {PRESENCE}")


async def probe_until_released(session: aiohttp.ClientSession, port: int, watcher: Socket,
                               timeout: float) -> list[float]:
    """``/up`` latencies, one request at a time, until the holder's member is removed."""
    removed = asyncio.create_task(watcher.frame(timeout))
    latencies: list[float] = []
    while not removed.done():
        started = time.monotonic()
        async with session.get(f"http://{HOST}:{port}/up") as response:
            response.raise_for_status()
        latencies.append(time.monotonic() - started)
    frame = removed.result()
    if frame.get("event") != "pusher_internal:member_removed":
        raise RuntimeError(f"the watcher got {frame}, not member_removed")
    return latencies


async def hold_once(session: aiohttp.ClientSession, port: int, watcher: Socket,
                    args: argparse.Namespace, pid: int) -> tuple[int, float, list[float]]:
    """One holder subscribes, then closes: RSS at its peak, the release time and the /up
    latencies during the release."""
    holder = await Socket.open(session, port)
    started = time.monotonic()
    await holder.subscribe_public(args.channels, "c")
    await holder.join("holder")
    if (await watcher.frame())["event"] != "pusher_internal:member_added":
        raise RuntimeError("the watcher did not see the holder join")
    peak = proc_status_kib(pid, "VmRSS")
    log(f"{args.channels} channels in {time.monotonic() - started:.1f} s; RSS {peak} KiB")
    closing = asyncio.create_task(holder.ws.close())
    started = time.monotonic()
    latencies = await probe_until_released(session, port, watcher, args.timeout)
    release = time.monotonic() - started
    await closing
    log(f"released in {release:.2f} s; /up max {max(latencies) * 1000:.1f} ms over "
        f"{len(latencies)} requests")
    return peak, release, latencies


async def hold(server: ChildServer, args: argparse.Namespace) -> dict[str, Any]:
    pid, port = server.process.pid, server.port
    peaks: list[int] = []
    afters: list[int] = []
    releases: list[float] = []
    latencies: list[float] = []
    async with aiohttp.ClientSession() as session:
        if args.warmup:
            warm = await Socket.open(session, port)
            await warm.subscribe_public(args.warmup, "warm-")
            await warm.ws.close()
        watcher = await Socket.open(session, port)
        await watcher.join("watcher")
        await asyncio.sleep(args.settle)
        before = proc_status_kib(pid, "VmRSS")
        log(f"RSS before: {before} KiB")
        for _ in range(args.rounds):
            peak, release, probes = await hold_once(session, port, watcher, args, pid)
            peaks.append(peak)
            releases.append(release)
            latencies += probes
            await asyncio.sleep(args.settle)
            afters.append(proc_status_kib(pid, "VmRSS"))
            log(f"RSS after: {afters[-1]} KiB")
    return {
        "scenario": "hold_channels", "channels": args.channels, "webhooks": args.webhooks,
        "rounds": args.rounds, "rss_before_kib": before, "rss_peak_kib": max(peaks + afters),
        "rss_after_kib": afters[-1], "growth_kib": afters[-1] - before,
        "rss_after_each_kib": afters, "release_seconds": round(max(releases), 3),
        "up_probes": len(latencies), "up_max_ms": round(max(latencies) * 1000, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="One socket subscribes to many channels of a pusher-compat server "
        "(started here, on 127.0.0.1) and closes; print one JSON line with the server's "
        "memory before, at peak and after, and /up latency during the release.")
    parser.add_argument("--channels", type=int, default=100_000,
                        help="public channels the socket holds (default 100000)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="hold-and-close cycles, one socket at a time (default 1)")
    parser.add_argument("--webhooks", action="store_true",
                        help="configure a webhook endpoint (nobody listens on it)")
    parser.add_argument("--warmup", type=int, default=1000,
                        help="channels of the warm-up socket, 0 = none (default 1000)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before the RSS readings (default 2)")
    parser.add_argument("--timeout", type=float, default=120.0,
                        help="seconds the release may take (default 120)")
    args = parser.parse_args(argv)
    if (args.channels < 1 or args.rounds < 1 or args.warmup < 0 or args.settle < 0
            or args.timeout <= 0):
        parser.error("--channels and --rounds must be at least 1, --timeout positive, the "
                     "others not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    run = run_scenario("hold_channels", config(args.channels, args.webhooks),
                       lambda server: hold(server, args))
    if run is None:
        return 1
    print(json.dumps(run[1], separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
