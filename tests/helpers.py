"""Small helpers for driving the sans-I/O protocol core: a recording sink, a frame decoder
and a settable clock; and a test server that serves exactly as ``pusher-compat serve`` does."""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import ClientWebSocketResponse, WSMsgType
from aiohttp.test_utils import TestServer
from yarl import URL

from pusher_compat.config import WEBHOOK_EVENTS, AppConfig
from pusher_compat.server import listen

__all__ = ["FakeClock", "GatewayTestServer", "ListSink", "Recorder", "WsClient", "unframe"]


def unframe(frame: bytes) -> str:
    """The text of one complete, unmasked server WebSocket text frame (FIN + opcode 0x1)."""
    assert len(frame) >= 2, f"frame too short: {frame!r}"
    assert frame[0] == 0x81, f"not a final text frame: first byte {frame[0]:#04x}"
    assert not frame[1] & 0x80, "a server frame must not be masked"
    length = frame[1] & 0x7F
    offset = 2
    if length == 126:
        (length,) = struct.unpack_from("!H", frame, 2)
        assert length >= 126, f"16-bit length form used for {length} bytes"
        offset = 4
    elif length == 127:
        (length,) = struct.unpack_from("!Q", frame, 2)
        assert length >= 1 << 16, f"64-bit length form used for {length} bytes"
        offset = 10
    payload = frame[offset:]
    assert len(payload) == length, f"header says {length} bytes, payload has {len(payload)}"
    return payload.decode("utf-8")


@dataclass
class ListSink:
    """A :class:`pusher_compat.connection.Sink` that records what the connection emits."""

    frames: list[bytes] = field(default_factory=list)
    closes: list[tuple[int, str]] = field(default_factory=list)

    def send(self, frame: bytes) -> None:
        self.frames.append(frame)

    def close(self, code: int, reason: str) -> None:
        self.closes.append((code, reason))

    def texts(self) -> list[str]:
        """Every frame sent so far, decoded to its JSON text."""
        return [unframe(frame) for frame in self.frames]

    def messages(self) -> list[Any]:
        """Every frame sent so far, parsed."""
        return [json.loads(text) for text in self.texts()]

    def take(self) -> list[Any]:
        """The parsed frames sent since the last ``take``; forgets them."""
        messages = self.messages()
        self.frames.clear()
        return messages


@dataclass
class FakeClock:
    """A clock for ``Connection(clock=...)``: returns ``now``, moved by the test."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Recorder:
    """A hub listener recording webhook event objects."""

    events: list[dict[str, Any]] = field(default_factory=list)

    def channel_event(self, app: AppConfig, event: dict[str, Any]) -> None:
        self.events.append(event)

    def webhook_events(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] in WEBHOOK_EVENTS]


class WsClient:
    """A raw protocol-7 WebSocket client of a server under test, past its handshake."""

    timeout = 2.0

    def __init__(self, ws: ClientWebSocketResponse, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def handshake(cls, ws: ClientWebSocketResponse) -> Self:
        """Read ``pusher:connection_established`` from a fresh ``ws``."""
        frame = json.loads(await _text(ws, cls.timeout))
        assert frame["event"] == "pusher:connection_established", frame
        return cls(ws, json.loads(frame["data"])["socket_id"])

    async def text(self) -> str:
        return await _text(self.ws, self.timeout)

    async def frame(self) -> dict[str, Any]:
        return json.loads(await self.text())

    async def send(self, event: str, data: Any) -> None:
        await self.ws.send_str(json.dumps({"event": event, "data": data}))

    async def drain(self) -> list[dict[str, Any]]:
        """Frames received before the answer to a ``pusher:ping`` sent now."""
        await self.send("pusher:ping", {})
        frames = []
        while (frame := await self.frame())["event"] != "pusher:pong":
            frames.append(frame)
        return frames

    async def expect_silent(self) -> None:
        assert await self.drain() == []

    async def subscribe_all(self, channels: list[str], batch: int = 1000) -> None:
        """Subscribe to many public channels, ``batch`` frames in flight at a time (so the
        server never holds more than a batch of answers for a client that is not reading)."""
        for start in range(0, len(channels), batch):
            names = channels[start:start + batch]
            for name in names:
                await self.send("pusher:subscribe", {"channel": name})
            for name in names:
                assert await self.frame() == {
                    "event": "pusher_internal:subscription_succeeded", "channel": name,
                    "data": "{}"}


async def _text(ws: ClientWebSocketResponse, timeout: float) -> str:
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type is WSMsgType.TEXT, message
    return message.data


class GatewayTestServer(TestServer):
    """aiohttp's test server for an app made by ``create_app``, listening through the real
    server's :func:`~pusher_compat.server.listen`: WebSockets on ``/app`` take the same path
    as in production (``aiohttp_client(GatewayTestServer(create_app(settings)))``)."""

    async def start_server(self, loop: asyncio.AbstractEventLoop | None = None,
                           **kwargs: Any) -> None:
        if self.runner:
            return
        self.runner = await listen(self.app, self.host, 0)
        self.port = self.runner.addresses[0][1]
        self._root = URL(f"http://{self.host}:{self.port}")
