"""Flood a pusher-compat server with short-lived sockets and bad frames; report its memory.

The server runs as a child process on a loopback port. Its resident memory (``VmRSS`` from
``/proc/<pid>/status``) is read after a warm-up round, sampled during the flood, and read again
once the flood is over and the server has had a moment to settle. Each round opens
``--sockets`` WebSockets at once; every socket subscribes to 10 channels (public, private and
presence, all correctly signed), sends 5 client events, its share of ``--bad-frames``
malformed frames, then a ``pusher:ping``, waits for the ``pusher:pong`` and closes.

Progress goes to stderr; stdout gets ONE JSON line::

    {"scenario":"flood_memory","rss_before_kib":..,"rss_peak_kib":..,"rss_after_kib":..,
     "growth_kib":..,"rounds":..,"sockets_per_round":..}

The exit status is 0 when the flood ran and the server ended with no connection and no
channel left; 1 when the server died or a round failed; 3 when the server still reported
channels after the flood (a leak of hub state); 4 when the server logged an unhandled
exception (a handler crash) during the flood.

Example: ``python bench/flood_memory.py --rounds 3 --sockets 200``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import resource
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import aiohttp
from child import HOST, ChildServer, run_scenario

APP_ID = "1"
KEY = "flood-key"
SECRET = "flood-secret"
CONFIG = f"""\
[server]
activity_timeout = 120
max_message_bytes = 65536

[[apps]]
id = "{APP_ID}"
key = "{KEY}"
secret = "{SECRET}"
client_events = true
"""
_SOCKETS_PER_GROUP = 25
"""Sockets sharing the same 10 channels: bounds the fan-out of client events."""
_CLIENT_EVENTS = 5

# Frames that each get an error reply and leave the socket open (binary ones included).
BAD_FRAMES: tuple[str | bytes, ...] = (
    "{oops",
    "[1, 2]",
    '{"data": {}}',
    '{"event": "pusher:dance", "data": {}}',
    '{"event": "pusher:subscribe", "data": {"channel": "bad name!"}}',
    '{"event": "pusher:subscribe", "data": {"channel": "private-x", "auth": "k:deadbeef"}}',
    '{"event": "pusher:subscribe", "data": {"channel": 5}}',
    '{"event": "pusher:signin", "data": {"auth": "x"}}',
    '{"event": "client-x", "channel": "private-nope", "data": {}}',
    "[" * 5000 + "]" * 5000,
    b"\x00\xff binary",
)


def log(message: str) -> None:
    print(f"flood_memory: {message}", file=sys.stderr, flush=True)


# -- the server process ----------------------------------------------------------------------


class PeakSampler:
    """Samples the server's VmRSS every ``interval`` seconds in a thread; keeps the maximum."""

    def __init__(self, server: ChildServer, interval: float = 0.05) -> None:
        self._server = server
        self._interval = interval
        self._stop = threading.Event()
        self.peak_kib = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self._server.rss_kib())
            except (OSError, RuntimeError):
                return
            self._stop.wait(self._interval)


# -- signing ---------------------------------------------------------------------------------


def sign(string_to_sign: str) -> str:
    digest = hmac.new(SECRET.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"{KEY}:{digest}"


def signed_query(method: str, path: str) -> dict[str, str]:
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0"}
    query = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    signature = hmac.new(SECRET.encode(), f"{method}\n{path}\n{query}".encode(),
                         hashlib.sha256).hexdigest()
    return {**params, "auth_signature": signature}


# -- one socket ------------------------------------------------------------------------------


def subscribe_frames(index: int, socket_id: str) -> tuple[list[str], list[str]]:
    """The 10 subscribe frames of socket ``index`` and its client-event channels."""
    group = index // _SOCKETS_PER_GROUP
    frames = [json.dumps({"event": "pusher:subscribe",
                          "data": {"auth": "", "channel": f"flood-{group}-{k}"}})
              for k in range(4)]
    talk: list[str] = []
    for k in range(3):
        channel = f"private-flood-{group}-{k}"
        talk.append(channel)
        frames.append(json.dumps({"event": "pusher:subscribe", "data": {
            "auth": sign(f"{socket_id}:{channel}"), "channel": channel}}))
    for k in range(3):
        channel = f"presence-flood-{group}-{k}"
        talk.append(channel)
        # Two sockets per user: exercises the per-user socket counts of presence members.
        channel_data = json.dumps({"user_id": f"user-{index // 2}",
                                   "user_info": {"name": f"Flooder {index // 2}"}})
        frames.append(json.dumps({"event": "pusher:subscribe", "data": {
            "auth": sign(f"{socket_id}:{channel}:{channel_data}"), "channel": channel,
            "channel_data": channel_data}}))
    return frames, talk


async def open_socket(session: aiohttp.ClientSession, url: str) -> tuple[Any, str]:
    ws = await session.ws_connect(url)
    first = await ws.receive(timeout=10)
    if first.type is not aiohttp.WSMsgType.TEXT:
        raise RuntimeError(f"no handshake: {first.type} {first.data!r}")
    message = json.loads(first.data)
    if message.get("event") != "pusher:connection_established":
        raise RuntimeError(f"refused: {message}")
    return ws, json.loads(message["data"])["socket_id"]


async def exercise(ws: Any, socket_id: str, index: int, bad: Sequence[str | bytes],
                   timeout: float) -> None:
    """Subscribe, talk, send bad frames, then wait for the pong that follows them all."""
    frames, talk = subscribe_frames(index, socket_id)
    for frame in frames:
        await ws.send_str(frame)
    for n in range(_CLIENT_EVENTS):
        channel = talk[n % len(talk)]
        await ws.send_str(json.dumps({"event": "client-flood", "channel": channel,
                                      "data": {"from": socket_id, "n": n}}))
    for frame in bad:
        if isinstance(frame, bytes):
            await ws.send_bytes(frame)
        else:
            await ws.send_str(frame)
    await ws.send_str('{"event":"pusher:ping","data":{}}')
    deadline = time.monotonic() + timeout
    # Replies and peers' client events are bounded; so is this loop, by count and by time.
    for _ in range(100_000):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        message = await ws.receive(timeout=left)
        if message.type is not aiohttp.WSMsgType.TEXT:
            raise RuntimeError(f"socket {index} lost: {message.type} {message.data!r}")
        if '"pusher:pong"' in message.data:
            return
    raise RuntimeError(f"socket {index}: no pong within {timeout} s")


async def run_round(session: aiohttp.ClientSession, url: str, sockets: int, bad_frames: int,
                    timeout: float) -> None:
    limit = asyncio.Semaphore(100)

    async def connect() -> tuple[Any, str]:
        async with limit:
            return await open_socket(session, url)

    opened = await asyncio.gather(*(connect() for _ in range(sockets)), return_exceptions=True)
    live = [item for item in opened if not isinstance(item, BaseException)]
    try:
        failures = [item for item in opened if isinstance(item, BaseException)]
        if failures:
            raise RuntimeError(f"{len(failures)} of {sockets} sockets failed: {failures[0]!r}")
        share, extra = divmod(bad_frames, sockets)
        work = []
        for index, (ws, socket_id) in enumerate(live):
            count = share + (index < extra)
            bad = [BAD_FRAMES[(index + j) % len(BAD_FRAMES)] for j in range(count)]
            work.append(exercise(ws, socket_id, index, bad, timeout))
        await asyncio.gather(*work)
    finally:
        await asyncio.gather(*(ws.close() for ws, _ in live), return_exceptions=True)


async def leftover_channels(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    path = f"/apps/{APP_ID}/channels"
    async with session.get(base + path, params=signed_query("GET", path)) as response:
        response.raise_for_status()
        return (await response.json())["channels"]


async def flood(
    server: ChildServer, args: argparse.Namespace
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run the warm-up and measured rounds; the result line and the channels left over."""
    url = f"ws://{HOST}:{server.port}/app/{KEY}?protocol=7&client=js&version=8.6.0"
    base = f"http://{HOST}:{server.port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        for n in range(args.warmup):
            log(f"warm-up round {n + 1}/{args.warmup}")
            await asyncio.wait_for(
                run_round(session, url, args.sockets, args.bad_frames, args.timeout),
                args.round_timeout,
            )
        await asyncio.sleep(args.settle)
        before = server.rss_kib()
        log(f"RSS before: {before} KiB")
        with PeakSampler(server) as sampler:
            for n in range(args.rounds):
                started = time.monotonic()
                await asyncio.wait_for(
                    run_round(session, url, args.sockets, args.bad_frames, args.timeout),
                    args.round_timeout,
                )
                if not server.alive():
                    raise RuntimeError("the server died during the flood")
                log(f"round {n + 1}/{args.rounds}: {args.sockets} sockets in "
                    f"{time.monotonic() - started:.1f} s, RSS {server.rss_kib()} KiB")
            await asyncio.sleep(args.settle)
        after = server.rss_kib()
        peak = max(sampler.peak_kib, after, before)
        log(f"RSS after: {after} KiB (peak {peak} KiB)")
        channels = await leftover_channels(session, base)
    return {
        "scenario": "flood_memory",
        "rss_before_kib": before,
        "rss_peak_kib": peak,
        "rss_after_kib": after,
        "growth_kib": after - before,
        "rounds": args.rounds,
        "sockets_per_round": args.sockets,
    }, channels


def raise_fd_limit() -> None:
    """Room for both ends of every socket (the server inherits the limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 65536) if hard != resource.RLIM_INFINITY else 65536
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Flood a pusher-compat server (started here, on 127.0.0.1) with "
        "short-lived sockets, subscriptions, client events and bad frames, and print one JSON "
        "line with its resident memory before, at peak and after the flood.",
    )
    parser.add_argument("--rounds", type=int, default=20, help="measured rounds (default 20)")
    parser.add_argument("--sockets", type=int, default=500,
                        help="sockets opened at once in each round (default 500)")
    parser.add_argument("--bad-frames", type=int, default=2000,
                        help="malformed frames per round, spread over the sockets (default 2000)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="unmeasured rounds before the first RSS reading (default 1)")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds to wait before each RSS reading (default 2)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds one socket may wait for its pong (default 30)")
    parser.add_argument("--round-timeout", type=float, default=120.0,
                        help="seconds one round may take (default 120)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.sockets < 1 or args.bad_frames < 0 or args.warmup < 0:
        parser.error("--rounds and --sockets must be at least 1, the others not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit()
    run = run_scenario("flood_memory", CONFIG, lambda server: flood(server, args))
    if run is None:
        return 1
    server, (result, channels) = run
    print(json.dumps(result, separators=(",", ":")), flush=True)
    crashes = [line for line in server.log if "Error handling request" in line]
    if crashes:
        log(f"CRASH: the server logged {len(crashes)} unhandled exception(s); first:\n"
            + "".join(server.log[server.log.index(crashes[0]):][:15]))
        return 4
    if channels:
        log(f"LEAK: {len(channels)} channel(s) still occupied after every socket closed: "
            f"{sorted(channels)[:10]}")
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
