"""A small, fast Pusher WebSocket client for load generation, on a raw asyncio Protocol.

The HTTP upgrade and RFC 6455 framing are hand-rolled: client frames are masked, server frames
are walked by their length headers without copying. A text frame whose payload does not name a
``pusher`` event (``"event":"pusher...``) counts as a *delivery* and is never decoded; protocol
frames (handshake, subscription answers, presence changes, pings, errors) are rare and parsed
with orjson. In latency mode the publish timestamp is found in a delivery by a byte search for
:data:`STAMP` followed by a fixed-width nanosecond count.

Counting mode (``marker``): once its subscription succeeded, a client stops walking frames and
counts occurrences of the event-name marker in the byte stream (``bytes.count``, in C, with the
few bytes that straddle two reads checked separately). Events are then counted at a cost per
*read*, not per frame, so a Python receiver keeps up with a server writing 700k frames/s.
Pusher pings are still answered (found the same way); anything else after that point is
ignored, and a lost connection is counted.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import os
import sys
import time
from array import array
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import orjson

__all__ = [
    "STAMP",
    "STAMP_DIGITS",
    "Counters",
    "Target",
    "WsClient",
    "client_frame",
    "open_many",
]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_PUSHER = b'"event":"pusher'
_PING = b'"pusher:ping"'
STAMP = b"@T"
"""Marks the publish time inside an event's ``data``: ``@T`` + :data:`STAMP_DIGITS` digits."""
STAMP_DIGITS = 20


@dataclass(frozen=True, slots=True)
class Target:
    """Where the server under test listens, and the app credentials it serves."""

    host: str
    port: int
    app_id: str
    key: str
    secret: str


@dataclass(slots=True)
class Counters:
    """What every client of one run adds to (one object, updated once per read)."""

    deliveries: int = 0
    """Text frames that are not Pusher protocol frames: the events the benchmark published."""
    frames: int = 0
    """Every frame received, protocol frames included."""
    bytes: int = 0
    """Bytes received after the HTTP upgrade (frame headers included)."""
    protocol: Counter[str] = field(default_factory=Counter)
    """Protocol frames by event name (``pusher_internal:member_added``...)."""
    closed_by_server: int = 0
    """Close frames received from the server."""
    lost: int = 0
    """Connections that ended without the benchmark closing them."""
    close_codes: Counter[int] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    latencies_ms: array[float] | None = None
    """Publish-to-receive delays, filled only when a client is told to look for stamps."""
    last_delivery: float = 0.0
    """``time.perf_counter()`` of the last read that carried a delivery."""
    next_wake: float = math.inf
    """The smallest delivery count a :meth:`reach` waiter is waiting for."""
    _waiters: list[tuple[int, asyncio.Future[None]]] = field(default_factory=list)

    def reach(self, deliveries: int) -> asyncio.Future[None]:
        """A future resolved once ``deliveries`` have been counted (no polling)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.deliveries >= deliveries:
            future.set_result(None)
            return future
        self._waiters.append((deliveries, future))
        self.next_wake = min(self.next_wake, deliveries)
        return future

    def wake(self) -> None:
        """Resolve the waiters whose count is reached (called by clients after counting)."""
        waiting = []
        for threshold, future in self._waiters:
            if future.done():
                continue
            if self.deliveries >= threshold:
                future.set_result(None)
            else:
                waiting.append((threshold, future))
        self._waiters = waiting
        self.next_wake = min((t for t, _ in waiting), default=math.inf)

    def error(self, message: str) -> None:
        """Record an error (only the first 50 are kept; ``error_count`` keeps counting)."""
        if len(self.errors) < 50:
            self.errors.append(message)
        self.error_count += 1


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One final client frame, masked as RFC 6455 §5.3 requires of clients."""
    length = len(payload)
    if length < 126:
        header = bytes((0x80 | opcode, 0x80 | length))
    elif length < 1 << 16:
        header = bytes((0x80 | opcode, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((0x80 | opcode, 0x80 | 127)) + length.to_bytes(8, "big")
    mask = os.urandom(4)
    if not length:
        return header + mask
    key = int.from_bytes((mask * (length // 4 + 1))[:length], "big")
    masked = (int.from_bytes(payload, "big") ^ key).to_bytes(length, "big")
    return header + mask + masked


def _accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


class WsClient(asyncio.Protocol):
    """One Pusher connection: upgrade, ``connection_established``, subscriptions, counting.

    ``established`` resolves to the socket id; :meth:`subscribe` returns a future resolved by
    ``pusher_internal:subscription_succeeded`` for that channel.
    """

    __slots__ = (
        "_aborted",
        "_accept",
        "_counters",
        "_counting",
        "_marker",
        "_overlap",
        "_request",
        "_subscriptions",
        "_tail",
        "_upgraded",
        "_want_stamps",
        "deliveries",
        "established",
        "socket_id",
        "transport",
    )

    def __init__(self, target: Target, counters: Counters, want_stamps: bool = False,
                 marker: bytes | None = None) -> None:
        key = base64.b64encode(os.urandom(16))
        self._accept = _accept_value(key)
        self._request = (
            f"GET /app/{target.key}?protocol=7&client=js&version=8.6.0&flash=false HTTP/1.1\r\n"
            f"Host: {target.host}:{target.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self._counters = counters
        self._want_stamps = want_stamps
        self._marker = marker
        self._counting = False
        self._overlap = b""
        self._aborted = False
        self._tail = b""
        self._upgraded = False
        self._subscriptions: dict[str, asyncio.Future[None]] = {}
        self.deliveries = 0
        self.socket_id = ""
        self.transport: asyncio.Transport | None = None
        self.established: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have the same methods.
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self._request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self._aborted:
            self._counters.lost += 1
        failure = ConnectionError(f"connection lost: {exc or 'closed'}")
        if not self.established.done():
            self.established.set_exception(failure)
        for future in self._subscriptions.values():
            if not future.done():
                future.set_exception(failure)

    def data_received(self, data: bytes) -> None:
        if self._counting:
            self._count(data)
            return
        if self._tail:
            data = self._tail + data
            self._tail = b""
        if not self._upgraded:
            data = self._upgrade(data)
            if not data:
                return
        self._frames(data)

    # -- sending -----------------------------------------------------------------------

    def send_json(self, message: Any) -> None:
        """Send one text frame holding ``message`` as JSON (no-op once closed)."""
        if self.transport is not None:
            self.transport.write(client_frame(orjson.dumps(message)))

    def subscribe(self, channel: str, auth: str = "", channel_data: str | None = None
                  ) -> asyncio.Future[None]:
        """Send ``pusher:subscribe``; the future resolves on ``subscription_succeeded``."""
        future = self._subscriptions.get(channel)
        if future is None or future.done():
            future = asyncio.get_running_loop().create_future()
            self._subscriptions[channel] = future
        data: dict[str, str] = {"auth": auth, "channel": channel}
        if channel_data is not None:
            data["channel_data"] = channel_data
        self.send_json({"event": "pusher:subscribe", "data": data})
        return future

    def unsubscribe(self, channel: str) -> None:
        self._subscriptions.pop(channel, None)
        self.send_json({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    def abort(self) -> None:
        """Drop the TCP connection at once (the fastest way to end thousands of sockets)."""
        self._aborted = True
        if self.transport is not None:
            self.transport.abort()

    # -- receiving ---------------------------------------------------------------------

    def _upgrade(self, data: bytes) -> bytes:
        """Consume the HTTP 101 answer; return the bytes after it (frames may follow)."""
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > 16384:
                self._fail("HTTP upgrade answer too long")
            else:
                self._tail = data
            return b""
        head = data[:end]
        if not head.startswith(b"HTTP/1.1 101") or self._accept not in head:
            self._fail(f"upgrade refused: {head[:200]!r}")
            return b""
        self._upgraded = True
        return data[end + 4 :]

    def _frames(self, data: bytes) -> None:
        """Walk every complete frame in ``data``; keep a partial one for the next read."""
        size = len(data)
        pos = deliveries = frames = 0
        stamps = self._want_stamps
        while size - pos >= 2:
            length = data[pos + 1] & 0x7F
            if length < 126:
                start = pos + 2
            elif length == 126:
                if size - pos < 4:
                    break
                length = (data[pos + 2] << 8) | data[pos + 3]
                start = pos + 4
            else:
                if size - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            if end > size:
                break
            frames += 1
            opcode = data[pos] & 0x0F
            if opcode == 0x1 and data.find(_PUSHER, start, end) < 0:
                deliveries += 1
                if stamps:
                    self._stamp(data, start, end)
            else:
                self._control(opcode, data[start:end])
                if self._counting:
                    self._count(data[end:])
                    size = pos = end
                    break
            pos = end
        if pos < size:
            self._tail = data[pos:]
        counters = self._counters
        counters.frames += frames
        counters.bytes += pos
        if deliveries:
            self.deliveries += deliveries
            counters.deliveries += deliveries
            counters.last_delivery = time.perf_counter()
            if counters.deliveries >= counters.next_wake:
                counters.wake()

    def _count(self, data: bytes) -> None:
        """Counting mode: deliveries are occurrences of the marker in the byte stream."""
        marker = self._marker
        assert marker is not None
        keep = len(marker) - 1
        seam = self._overlap + data[:keep]
        found = data.count(marker) + seam.count(marker)
        self._overlap = data[-keep:] if len(data) >= keep else (self._overlap + data)[-keep:]
        counters = self._counters
        counters.bytes += len(data)
        if _PING in seam or _PING in data:
            self.send_json({"event": "pusher:pong", "data": {}})
        if found:
            self.deliveries += found
            counters.deliveries += found
            counters.frames += found
            counters.last_delivery = time.perf_counter()
            if counters.deliveries >= counters.next_wake:
                counters.wake()

    def _stamp(self, data: bytes, start: int, end: int) -> None:
        at = data.find(STAMP, start, end)
        latencies = self._counters.latencies_ms
        if at < 0 or latencies is None:
            return
        sent = int(data[at + 2 : at + 2 + STAMP_DIGITS])
        latencies.append((time.monotonic_ns() - sent) / 1e6)

    def _control(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x1:
            self._protocol(payload)
        elif opcode == 0x9:
            if self.transport is not None:
                self.transport.write(client_frame(payload, 0xA))
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self._counters.closed_by_server += 1
            self._counters.close_codes[code] += 1
            if self.transport is not None:
                self.transport.close()

    def _protocol(self, payload: bytes) -> None:
        """A Pusher protocol frame: the only kind this client decodes."""
        try:
            message = orjson.loads(payload)
            event = message["event"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self._counters.error(f"undecodable frame {payload[:120]!r}")
            return
        self._counters.protocol[event] += 1
        handler = _HANDLERS.get(event)
        if handler is not None:
            handler(self, message)

    def _on_established(self, message: dict[str, Any]) -> None:
        data = message.get("data")
        if isinstance(data, str):
            data = orjson.loads(data)
        self.socket_id = str(data["socket_id"])
        if not self.established.done():
            self.established.set_result(self.socket_id)

    def _on_succeeded(self, message: dict[str, Any]) -> None:
        future = self._subscriptions.get(message.get("channel", ""))
        if future is not None and not future.done():
            future.set_result(None)
        if self._marker is not None:
            self._counting = True

    def _on_ping(self, message: dict[str, Any]) -> None:
        self.send_json({"event": "pusher:pong", "data": {}})

    def _on_error(self, message: dict[str, Any]) -> None:
        self._counters.error(f"{message.get('event')}: {message.get('data')!r}"[:300])
        channel = message.get("channel")
        future = self._subscriptions.get(channel) if isinstance(channel, str) else None
        if future is not None and not future.done():
            future.set_exception(RuntimeError(f"subscription refused: {message.get('data')!r}"))
        if not self.established.done():
            self.established.set_exception(RuntimeError(f"refused: {message.get('data')!r}"))

    def _fail(self, reason: str) -> None:
        self._counters.error(reason)
        if not self.established.done():
            self.established.set_exception(ConnectionError(reason))
        self.abort()


_HANDLERS: dict[str, Callable[[WsClient, dict[str, Any]], None]] = {
    "pusher:connection_established": WsClient._on_established,
    "pusher_internal:subscription_succeeded": WsClient._on_succeeded,
    "pusher:ping": WsClient._on_ping,
    "pusher:error": WsClient._on_error,
    "pusher:subscription_error": WsClient._on_error,
}


async def open_many(
    count: int,
    opener: Callable[[int], Awaitable[WsClient]],
    concurrency: int,
    label: str,
    counters: Counters,
) -> list[WsClient]:
    """Open ``count`` clients, at most ``concurrency`` in flight, with progress on stderr.

    ``opener(i)`` connects client ``i`` and finishes its set-up (handshake, subscriptions).
    Failures are recorded in ``counters`` and leave that client out of the result.
    """
    clients: list[WsClient] = []
    indexes = iter(range(count))

    async def worker() -> None:
        for index in indexes:
            try:
                clients.append(await opener(index))
            except (TimeoutError, OSError, RuntimeError) as error:
                counters.error(f"client {index}: {type(error).__name__}: {error}"[:300])

    progress = asyncio.create_task(_progress(label, count, clients, counters))
    try:
        await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, count)))))
    finally:
        progress.cancel()
    _log(f"[{label}] {len(clients)}/{count} open, "
         f"{counters.error_count} error(s)")
    return clients


async def _progress(label: str, count: int, clients: Sequence[WsClient], counters: Counters
                    ) -> None:
    while True:
        await asyncio.sleep(2.0)
        _log(f"[{label}] {len(clients)}/{count} open, "
             f"{counters.error_count} error(s)")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)
