"""The socket transport: a connection's first request, the WebSocket handshake, the
WebSocket's asyncio protocol and the listening site. It moves bytes and decides nothing:
who may connect is the gateway's (:mod:`pusher_compat.gateway`), what a frame means is the
:class:`~pusher_compat.connection.Connection`'s.

A new connection's first request head is read by :class:`FirstRequest`: a WebSocket upgrade
on ``/app`` goes to the gateway, which turns the connection into a
:class:`WebSocketProtocol`, a bare asyncio protocol around the sans-I/O
:mod:`pusher_compat.websocket` parser (about 2 KiB per idle socket, where aiohttp's
WebSocketResponse cost 15); the hot API routes (``POST /apps/{id}/events`` and
``/batch_events``) go to the lean :mod:`pusher_compat.api_transport`; every other request is
served by aiohttp. Outbound frames are
queued per socket and written once per event-loop iteration (:class:`Flusher`), so a burst of
events to one socket costs one ``write`` system call.
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from . import websocket, wire
from .api_transport import HOT_PREFIX, ApiProtocol, ApiService
from .config import ServerConfig
from .connection import Connection
from .http_guard import HttpGuard, Pending, PendingHeads
from .wire import Code

__all__ = ["CLOSING", "Admission", "FirstRequest", "Flusher", "GatewaySite", "Handshake",
           "WebSocketProtocol", "detach"]


class Admission(Protocol):
    """What the transport asks of the gateway above it. Stated here, so this module imports
    nothing of the layer that decides who may connect."""

    @property
    def heads(self) -> PendingHeads:
        """Connections whose first request head is still on its way."""

    def accept(self, handshake: Handshake, transport: asyncio.Transport,
               received: bytes = b"") -> None:
        """Take over ``transport`` after a WebSocket upgrade: admit it or refuse it."""

    def release(self, connection: Connection, address: str) -> None:
        """``connection``'s socket (from ``address``) is gone."""

    @property
    def api(self) -> ApiService | None:
        """The HTTP API's hot routes, served by :class:`ApiProtocol`; ``None``: aiohttp
        serves every request that is not an upgrade."""


class Flusher:
    """Writes every socket's queued frames once per loop iteration."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[WebSocketProtocol] = []
        self._scheduled = False

    def schedule(self, sink: WebSocketProtocol) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for sink in dirty:
            sink.flush()


class WebSocketProtocol(websocket.WebSocket, asyncio.Protocol):
    """One WebSocket after its handshake: client frames in, queued frames out.

    The sans-I/O :class:`~pusher_compat.websocket.WebSocket` parses client bytes, and text
    reaches the :class:`Connection`. Outbound frames are queued and written straight to the
    transport once per loop iteration (:class:`Flusher`). A socket whose unsent bytes exceed
    ``limit`` cannot keep up: it is closed with 4100 rather than let its buffer grow or slow
    the broadcast for everyone else. Idle sockets are most of a server's memory: the parser is
    a base class rather than an object of its own to save each socket ~40 bytes (so no name
    here may shadow one of the parser's: ``tests/test_websocket.py`` checks it), and this is
    the only object per socket besides the transport and the ``Connection``.
    """

    __slots__ = ("_closed", "_flusher", "_gateway", "_limit", "_pending", "_transport",
                 "address", "connection")

    def __init__(self, transport: asyncio.Transport, gateway: Admission, flusher: Flusher,
                 server: ServerConfig) -> None:
        self._transport = transport
        self._gateway = gateway
        self._flusher = flusher
        self._limit = server.max_write_buffer_bytes
        websocket.WebSocket.__init__(self, server.max_message_bytes)
        self._pending: bytes | bytearray | None = None
        """Frames not written yet: the one frame (the usual case during a broadcast), or
        several in a bytearray. Never a list: a list per socket per broadcast is a container
        for the cyclic GC, whose collections then walk every socket (a stall in the tail)."""
        self._closed: asyncio.Future[None] | None = None
        """Set once our close frame is out: done when the TCP connection is gone."""
        self.connection: Connection | None = None
        self.address = ""
        """The client's address, for ``max_connections_per_ip``."""

    # -- Sink: what the Connection sends ------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue ``frame``. No state check: a closed Connection stops sending by itself."""
        pending = self._pending
        if pending is None:
            self._pending = frame
            self._flusher.schedule(self)
        elif isinstance(pending, bytearray):
            pending += frame
        else:
            self._pending = bytearray(pending) + frame

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or self._transport.is_closing():
            return
        self._transport.write(pending)
        if self._transport.get_write_buffer_size() > self._limit and self.connection:
            self.connection.close(Code.OVER_CAPACITY, "Slow consumer: too much unsent data")

    def close(self, code: int, reason: str) -> None:
        """Send what is queued and a close frame, then wait (at most ``_CLOSE_TIMEOUT``) for
        the client's close frame: closing TCP at once could reset the connection and lose
        the close code that tells pusher-js whether to reconnect."""
        frame = self.start_close(code, reason)
        if not frame or self._transport.is_closing():
            return
        self._write_last(frame)
        self._await_peer_close()

    def _await_peer_close(self) -> None:
        """Keep the connection until the client closes it or answers our close frame, for
        at most ``_CLOSE_TIMEOUT`` seconds."""
        loop = asyncio.get_running_loop()
        closed = self._closed = loop.create_future()
        timer = loop.call_later(_CLOSE_TIMEOUT, self._transport.abort)
        closed.add_done_callback(lambda _: timer.cancel())
        CLOSING.add(closed)
        closed.add_done_callback(CLOSING.discard)

    # -- asyncio.Protocol: what the client sends ------------------------------------------

    def data_received(self, data: bytes) -> None:
        for event in self.receive(data):
            self._on_event(event)

    def _on_event(self, event: websocket.Event) -> None:
        connection = self.connection
        match event:
            case websocket.Text(text) if connection is not None:
                connection.receive(text)
            case websocket.Binary() if connection is not None:
                connection.touch()
                connection.send(wire.error_frame(None, "Binary frames are not supported"))
            case websocket.Ping(reply) if self.state is websocket.State.OPEN:
                self.send(reply)
                if connection is not None:
                    connection.touch()
            case websocket.Pong() if connection is not None:
                connection.touch()
            case websocket.Close(_, _, reply):
                if connection is not None:
                    connection.closed()
                self._write_last(reply)
                if self.state is websocket.State.DISCARDING:
                    # We failed the connection: closing TCP while the client still sends
                    # (the rest of an oversized message) would reset it before it reads
                    # our close frame. The parser drops its data until its close frame.
                    self._await_peer_close()
                else:
                    self._transport.close()

    def _write_last(self, frame: bytes) -> None:
        """Write what is queued, then ``frame`` (a close frame), in one write."""
        pending, self._pending = self._pending, None
        self._transport.write(frame if pending is None else pending + frame)

    def connection_lost(self, exc: Exception | None) -> None:
        connection, self.connection = self.connection, None  # and no cycle left for the GC
        if connection is not None:
            connection.closed()
            self._gateway.release(connection, self.address)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)


CLOSING: set[asyncio.Future[None]] = set()
"""Sockets waiting for the client's close frame: shutdown waits for them."""
_CLOSE_TIMEOUT = 10.0
"""Seconds a client gets to answer our close frame before the connection is cut."""


_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_IN_KEY = re.compile(r"[/{}]")
"""What ``/app/{key}`` cannot contain, as in aiohttp's route (a key is one path segment)."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """A WebSocket upgrade under ``/app``: the accept key, and what the gateway
    reads (``match_info``, ``query``, ``headers``, ``remote``).

    Built from the raw head of a connection's first request, or from a request aiohttp parsed
    (a later request on a kept-alive connection), by the same checks either way.
    """

    path: str
    query: MultiMapping[str]
    headers: MultiMapping[str]
    remote: str | None
    accept: str
    match_info: Mapping[str, str]

    @classmethod
    def parse(cls, head: bytes, remote: str | None) -> Handshake | None:
        """The upgrade in a request head (without its blank line); ``None`` for anything
        else, including whatever this strict reading does not understand: aiohttp answers
        those."""
        request_line, *lines = head.decode("utf-8", "surrogateescape").split("\r\n")
        method, _, rest = request_line.partition(" ")
        target, _, version = rest.partition(" ")
        if version != "HTTP/1.1" or not target.startswith("/"):
            return None
        pairs = [line.partition(":") for line in lines]
        if any(not colon or not _HTTP_TOKEN.fullmatch(name) for name, colon, _ in pairs):
            return None
        headers = CIMultiDict([(name, value.strip(" \t")) for name, _, value in pairs])
        path, _, query = target.partition("?")
        try:
            url = URL.build(path=path, query_string=query, encoded=True)
        except ValueError:
            return None
        if method != "GET" or not (url.path == "/app" or url.path.startswith("/app/")):
            return None
        try:
            return cls._upgrade(method, url.path, url.query, CIMultiDictProxy(headers), remote)
        except websocket.HandshakeError:
            return None  # aiohttp routes it to the gateway's app_socket, which says why

    @classmethod
    def from_request(cls, request: web.Request) -> Handshake:
        """The upgrade aiohttp routed to ``/app``; raises :class:`websocket.HandshakeError`
        saying what is wrong with it."""
        if request.version != (1, 1):
            raise websocket.HandshakeError(400, "WebSocket upgrades need HTTP/1.1")
        return cls._upgrade(request.method, request.path, request.query, request.headers,
                            request.remote)

    @classmethod
    def _upgrade(cls, method: str, path: str, query: MultiMapping[str],
                 headers: MultiMapping[str], remote: str | None) -> Handshake:
        if method != "GET":
            raise websocket.HandshakeError(400, "A WebSocket upgrade is a GET request")
        accept = websocket.handshake_accept(headers)
        key = path[len("/app/"):]
        match_info = {"key": key} if key and not _NOT_IN_KEY.search(key) else {}
        return cls(path, query, headers, remote, accept, match_info)


_APP_GET = b"GET /app"
_HEAD_LIMIT = 16384
"""Bytes of a first request read while it may still be an upgrade; past it aiohttp decides
(and applies its own limits)."""


class FirstRequest(asyncio.Protocol):
    """Reads a new connection's first request head, then gives the connection away.

    A WebSocket upgrade under ``/app`` goes to the gateway (:meth:`Admission.accept`), so no
    aiohttp object is ever made for it (aiohttp's request, response and handler task cost an
    idle socket about 13 KiB). A request starting as the hot API routes do (``POST /apps/``)
    goes to an :class:`~pusher_compat.api_transport.ApiProtocol`, which serves it and the
    connection's later requests without aiohttp while they are hot ones. Anything else goes,
    with every byte read so far, to aiohttp's own protocol, which serves it exactly as if it
    had accepted the connection itself (behind an
    :class:`~pusher_compat.http_guard.HttpGuard`, which times every later head). From accept
    until the head is read the connection is :class:`~pusher_compat.http_guard.Pending`:
    refused at once past the caps, closed when its head is late.
    """

    __slots__ = ("_gateway", "_head", "_http", "_pending", "_transport")

    def __init__(self, gateway: Admission, http: web.Server) -> None:
        self._gateway = gateway
        self._http = http
        self._head = b""
        self._transport: asyncio.Transport | None = None
        self._pending: Pending | None = None
        """Set once admitted; ``None`` for a connection refused at accept."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._pending = self._gateway.heads.admit(self._transport, _remote(transport) or "")

    def data_received(self, data: bytes) -> None:
        if self._pending is None:
            return  # refused at accept and aborted: nothing of it is served
        received = self._head + data
        may_upgrade = _may_start(received, _APP_GET)
        end = received.find(b"\r\n\r\n") if may_upgrade else -1
        if end < 0 and may_upgrade and len(received) < _HEAD_LIMIT:
            self._head = received  # the rest of the head is still on its way
            return
        transport, pending = self._transport, self._pending
        assert transport is not None
        handshake = Handshake.parse(received[:end], _remote(transport)) if end >= 0 else None
        if handshake is not None:
            pending.finish()
            self._gateway.accept(handshake, transport, received[end + 4:])
            return
        heads, api = self._gateway.heads, self._gateway.api
        if api is not None and _may_start(received, HOT_PREFIX):
            protocol = ApiProtocol(api, heads, self._http, transport, pending)
            transport.set_protocol(protocol)
            protocol.data_received(received)
            return
        HttpGuard.hand_over(self._http(), heads, transport, pending, received)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.finish()


def _may_start(received: bytes, prefix: bytes) -> bool:
    """Whether ``received`` starts with ``prefix``, or may once more bytes come."""
    return received.startswith(prefix) or prefix.startswith(received)


def _remote(transport: asyncio.BaseTransport) -> str | None:
    """The client address, as aiohttp's ``request.remote`` gives it."""
    peername = transport.get_extra_info("peername")
    # Interned: the sockets of one address (a NAT, an office) share one string.
    return sys.intern(str(peername[0])) if isinstance(peername, list | tuple) else None


def detach(request: web.Request) -> asyncio.Transport:
    """Take a connection away from aiohttp: its protocol is told the connection is lost
    (unregistered from the server, timers cancelled) after forgetting the transport, so it
    neither writes to nor closes it any more. A client sends nothing after an upgrade
    request until the 101, so nothing is left unread in aiohttp's buffers."""
    protocol, transport = request.protocol, request.transport
    assert transport is not None
    protocol.transport = None
    protocol.connection_lost(None)
    return transport


_BACKLOG = 1024
"""Pending connections the kernel queues: aiohttp's 128 drops SYNs (a one-second retransmit
for the client) when a few hundred clients connect at once."""


class GatewaySite(web.BaseSite):
    """A TCP (or TLS) site whose connections are read first by :class:`FirstRequest`:
    WebSockets on ``/app`` bypass aiohttp, every other route is aiohttp's as before."""

    __slots__ = ("_bound_port", "_gateway", "_host", "_port", "_reuse_port")

    def __init__(self, runner: web.AppRunner, gateway: Admission, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None, *, reuse_port: bool = False) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=_BACKLOG)
        self._gateway = gateway
        self._host = host
        self._port = port
        self._bound_port = port
        self._reuse_port = reuse_port
        """Bind with ``SO_REUSEPORT``: the workers of one supervisor each bind ``port`` and
        the kernel spreads new connections over them."""

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = self._host or "0.0.0.0"
        return str(URL.build(scheme=scheme, host=host, port=self._bound_port))

    async def start(self) -> None:
        await super().start()
        http = self._runner.server
        assert http is not None
        self._server = server = await asyncio.get_running_loop().create_server(
            functools.partial(FirstRequest, self._gateway, http), self._host, self._port,
            ssl=self._ssl_context, backlog=self._backlog, reuse_port=self._reuse_port or None,
            # A TLS handshake comes before the first head: it gets the same time.
            ssl_handshake_timeout=self._gateway.heads.timeout if self._ssl_context else None,
        )
        self._bound_port = server.sockets[0].getsockname()[1]


