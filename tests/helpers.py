"""Small helpers for driving the sans-I/O protocol core: a recording sink, a frame decoder,
a settable clock and a manual scheduler; a raw TCP client speaking HTTP and WebSocket by hand;
a test server that serves exactly as ``pusher-compat serve`` does; and a webhook receiver."""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import itertools
import json
import re
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Self, TypeVar
from urllib.parse import urlencode

from aiohttp import ClientWebSocketResponse, WSMsgType, web
from aiohttp.test_utils import TestServer
from yarl import URL

from pusher_compat import signatures, websocket
from pusher_compat.config import WEBHOOK_EVENTS, AppConfig, ServerConfig
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub
from pusher_compat.server import listen
from pusher_compat.signatures import webhook_signature

__all__ = [
    "DOWN", "MASK", "SWITCHING", "UPGRADE", "FakeClock",
    "GatewayTestServer", "ListSink",
    "RawSocket", "Receiver", "Recorder", "Request", "WsClient",
    "assert_each_delivery_arrived_intact", "client_frame", "compact", "error", "event_text",
    "eventually", "signed_post", "signed_query", "subscribe_one_delivery_each",
    "unframe", "until", "upgraded",
]

T = TypeVar("T")


# -- expected frames and signed requests ---------------------------------------------------


def compact(value: Any) -> str:
    """JSON as the server frames it: no spaces, UTF-8 kept."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def error(code: int | None, message: Any) -> dict[str, Any]:
    """A ``pusher:error`` frame, parsed (protocol.md §1.4)."""
    return {"event": "pusher:error", "data": {"code": code, "message": message}}


def event_text(event: str, channel: str, data: str) -> str:
    """The exact text frame of a channel event (protocol.md §7.4)."""
    return compact({"event": event, "channel": channel, "data": data})


def signed_query(method: str, path: str, key: str, secret: str, body: bytes = b"",
                 query: dict[str, str] | None = None, timestamp: int | None = None
                 ) -> dict[str, str]:
    """The query string of an HTTP API request signed exactly as the SDKs sign it
    (protocol.md §7.2): ``query`` plus the ``auth_*`` parameters, and ``body_md5`` when
    there is a body; ``timestamp`` defaults to now."""
    params = {
        "auth_key": key,
        "auth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "auth_version": "1.0",
        **(query or {}),
    }
    if body:
        params["body_md5"] = hashlib.md5(body).hexdigest()
    params["auth_signature"] = signatures.sign_request(method, path, params, secret)
    return params


def signed_post(path: str, body: bytes, *headers: str, key: str = "app-key",
                secret: str = "app-secret", query: dict[str, str] | None = None) -> bytes:
    """A signed HTTP API ``POST`` as raw bytes: the request line, ``Host``,
    ``Content-Length``, then ``headers`` (whole lines without their CRLF), then ``body``."""
    params = urlencode(signed_query("POST", path, key, secret, body, query))
    lines = [f"POST {path}?{params} HTTP/1.1", "Host: 127.0.0.1",
             f"Content-Length: {len(body)}", *headers]
    return "".join(f"{line}\r\n" for line in lines).encode() + b"\r\n" + body


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


class CountingClient:
    """A connection of ``app`` on ``hub`` writing to a :class:`ListSink`, counting the
    characters it sends and the bytes it receives: what statistics and metrics must add up."""

    def __init__(self, hub: Hub, app: AppConfig, server: ServerConfig | None = None) -> None:
        self.app = app
        self.sink = ListSink()
        self.conn = Connection(app, server or ServerConfig(), hub, self.sink, clock=FakeClock())
        self.conn.open()
        self.sent_chars = 0

    def send(self, message: dict[str, Any]) -> None:
        text = json.dumps(message)
        self.sent_chars += len(text)
        self.conn.receive(text)

    def subscribe(self, channel: str, channel_data: str | None = None) -> None:
        """Subscribe, signed as the app's auth endpoint would with ``channel_data``."""
        data: dict[str, Any] = {"channel": channel}
        if channel_data is not None:
            string = signatures.channel_string(self.conn.socket_id, channel, channel_data)
            data["auth"] = signatures.sign_auth(self.app.key, self.app.secret, string)
            data["channel_data"] = channel_data
        self.send({"event": "pusher:subscribe", "data": data})

    def ping(self) -> None:
        self.send({"event": "pusher:ping", "data": {}})

    @property
    def received_bytes(self) -> int:
        return sum(len(frame) for frame in self.sink.frames)


class ManualScheduler:
    """A :class:`~pusher_compat.scheduling.Scheduler` whose time moves only in
    :meth:`advance`: the timers due by then run in time order (those they set too), and the
    sleeps due by then return, without the test waiting for any of it."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now
        self._timers: list[tuple[float, int, _ManualTimer]] = []
        """Scheduled callbacks as a heap by (due time, order of scheduling)."""
        self._order = itertools.count()

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[..., object], *args: Any
                ) -> _ManualTimer:
        timer = _ManualTimer(callback, args)
        heapq.heappush(self._timers, (when, next(self._order), timer))
        return timer

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any
                   ) -> _ManualTimer:
        return self.call_at(self.now + delay, callback, *args)

    async def sleep(self, delay: float) -> None:
        woken = asyncio.get_running_loop().create_future()
        self.call_later(delay, lambda: woken.done() or woken.set_result(None))
        await woken

    @property
    def pending(self) -> int:
        """Timers and sleeps scheduled and not cancelled."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled)

    async def advance(self, seconds: float) -> None:
        """Move time ``seconds`` on, running every timer due by then; then let the tasks
        those timers woke take their next step. Tasks ready to run take theirs first, so a
        task just started has reached its sleep before time moves."""
        await _steps()
        end = self.now + seconds
        while self._timers and self._timers[0][0] <= end:
            when, _, timer = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            if not timer.cancelled:
                timer.callback(*timer.args)
        self.now = end
        await _steps()


async def _steps(count: int = 3) -> None:
    """Let ready tasks run ``count`` loop steps (a woken sleep resumes a step later)."""
    for _ in range(count):
        await asyncio.sleep(0)


@dataclass
class _ManualTimer:
    """One callback of a :class:`ManualScheduler`."""

    callback: Callable[..., object]
    args: tuple[Any, ...]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


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
            # One deadline for the batch: a timer per frame costs more than the frame.
            async with asyncio.timeout(self.timeout * 5):
                for name in names:
                    message = await self.ws.receive()
                    assert message.type is WSMsgType.TEXT, message
                    assert json.loads(message.data) == {
                        "event": "pusher_internal:subscription_succeeded", "channel": name,
                        "data": "{}"}


async def _text(ws: ClientWebSocketResponse, timeout: float) -> str:
    message = await asyncio.wait_for(ws.receive(), timeout)
    assert message.type is WSMsgType.TEXT, message
    return message.data


# -- raw sockets: HTTP and WebSocket by hand ------------------------------------------------

MASK = b"\x37\xfa\x21\x3d"
"""The masking key of :func:`client_frame`: any four bytes do."""


def client_frame(opcode: int, payload: bytes, fin: bool = True, mask: bytes | None = MASK,
                 rsv: int = 0) -> bytes:
    """A frame as a client sends it: masked unless ``mask`` is None."""
    first = (0x80 if fin else 0) | rsv | opcode
    masked = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", first, masked | length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", first, masked | 126, length)
    else:
        header = struct.pack("!BBQ", first, masked | 127, length)
    if mask is None:
        return header + payload
    return header + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


UPGRADE = ("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n")
SWITCHING = websocket.switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")


class RawSocket:
    """A TCP connection to the server, speaking HTTP and WebSocket by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> RawSocket:
        return cls(*await asyncio.open_connection(host, port))

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def head(self) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)

    async def http_get(self, path: str) -> tuple[bytes, bytes]:
        """Status line and body of a keep-alive GET."""
        await self.send(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        head = await self.head()
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        body = await asyncio.wait_for(self.reader.readexactly(length), 5)
        return head.split(b"\r\n")[0], body

    async def frame(self) -> tuple[int, bytes]:
        """The next server frame: ``(opcode, payload)``; server frames are never masked."""
        first, second = await asyncio.wait_for(self.reader.readexactly(2), 5)
        assert first & 0x80 and not second & 0x80
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", await self.reader.readexactly(2))
        elif length == 127:
            (length,) = struct.unpack("!Q", await self.reader.readexactly(8))
        return first & 0x0F, await asyncio.wait_for(self.reader.readexactly(length), 5)

    async def message(self) -> dict[str, Any]:
        opcode, payload = await self.frame()
        assert opcode == websocket.TEXT, (opcode, payload)
        return json.loads(payload)

    async def closed(self) -> bool:
        return await asyncio.wait_for(self.reader.read(1), 5) == b""

    async def answer(self) -> bytes:
        """One whole HTTP answer exactly as sent, but for the value of its ``Date`` header
        (``<date>``): a head, then as many body bytes as its ``Content-Length`` says."""
        head = await self.head()
        length = re.search(rb"\r\nContent-Length: (\d+)\r\n", head)
        body = await asyncio.wait_for(
            self.reader.readexactly(int(length.group(1)) if length else 0), 5)
        return re.sub(rb"\r\nDate: [^\r]+\r\n", b"\r\nDate: <date>\r\n", head) + body

    async def response(self) -> tuple[bytes, dict[str, str], Any]:
        """Status line, headers (but ``Date``, ``Server`` and ``Content-Length``) and JSON
        body of an HTTP answer."""
        head = await self.head()
        status, *lines = head.decode().removesuffix("\r\n\r\n").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines)
        body = await asyncio.wait_for(self.reader.readexactly(int(headers["Content-Length"])), 5)
        del headers["Date"], headers["Server"], headers["Content-Length"]
        return status.encode(), headers, json.loads(body) if body else None


async def upgraded(raw: RawSocket, path: str = "/app/app-key?protocol=7") -> dict[str, Any]:
    await raw.send(UPGRADE.format(path=path).encode())
    assert await raw.head() == SWITCHING
    return await raw.message()


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


# -- a webhook receiver --------------------------------------------------------------------


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    """Lower-cased names, as the Node SDK's ``WebHook`` expects them."""
    body: bytes
    status: int = 200
    """What the receiver answered."""

    def json(self) -> Any:
        return json.loads(self.body)

    def events(self) -> list[dict[str, Any]]:
        return self.json()["events"]

    @property
    def delivery_id(self) -> str:
        return self.headers["x-pusher-compat-delivery"]


DOWN = 10**9
"""``Receiver.failures`` of an endpoint that answers 500 to everything."""


@dataclass
class Receiver:
    """Records every POST; answers 500 to the next ``failures`` of them, else 200."""

    requests: list[Request] = field(default_factory=list)
    failures: int = 0
    stall_seconds: float = 0.0
    server: TestServer | None = None

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        headers = {name.lower(): value for name, value in request.headers.items()}
        recorded = Request(request.path, headers, body)
        self.requests.append(recorded)
        if self.stall_seconds:
            stall, self.stall_seconds = self.stall_seconds, 0.0
            await asyncio.sleep(stall)
        if self.failures:
            self.failures -= 1
            recorded.status = 500
            return web.Response(status=500, text="boom")
        return web.Response(text="ok")

    async def wait(self, count: int, timeout: float = 3.0) -> list[Request]:
        """Wait until ``count`` requests arrived; return them all."""
        await until(lambda: len(self.requests) >= count, timeout)
        return self.requests

    def events(self) -> list[list[dict[str, Any]]]:
        return [request.events() for request in self.requests]

    def delivered(self) -> set[str]:
        """Ids of the deliveries acknowledged (answered 200) at least once."""
        return {r.delivery_id for r in self.requests if r.status == 200}


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def eventually(read: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                     timeout: float = 5.0) -> T:
    """Call ``read`` until what it returns is ``done``, and return that; fail after
    ``timeout`` seconds, showing the last reading (:func:`until` for what needs no await)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done(value := await read()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out; last: {value!r}"
        await asyncio.sleep(0.01)
    return value


async def subscribe_one_delivery_each(ws: WsClient, receiver: Receiver, channels: list[str]
                                      ) -> None:
    """Subscribe to the channels one by one, each once the previous one's
    ``channel_occupied`` was POSTed, so that each makes a webhook delivery of its own."""
    for channel in channels:
        await ws.send("pusher:subscribe", {"channel": channel})
        assert (await ws.frame())["event"] == "pusher_internal:subscription_succeeded"
        await until(lambda channel=channel: any(
            r.events()[0]["channel"] == channel for r in receiver.requests), timeout=10)


def assert_each_delivery_arrived_intact(requests: list[Request], secret: str,
                                        expected: dict[str, Any]) -> None:
    """Every request validly signed; every id carries the events stored under it."""
    for request in requests:
        assert request.headers["x-pusher-signature"] == webhook_signature(secret, request.body)
        assert request.events() == expected[request.delivery_id]["events"]
