"""Serving: WebSocket upgrades, byte pumping, the HTTP API routes and lifecycle.

Protocol decisions live in :mod:`pusher_compat.connection`; this module only moves bytes.
A new connection's first request head is read by :class:`FirstRequest`: a WebSocket upgrade
on ``/app`` becomes a :class:`SocketSink`, a bare asyncio protocol around the sans-I/O
:mod:`pusher_compat.websocket` parser (about 2 KiB per idle socket, where aiohttp's
WebSocketResponse cost 15); every other request is served by aiohttp. Outbound frames are
queued per socket and written once per event-loop iteration, so a burst of events to one
socket costs one ``write`` system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import random
import re
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy, MultiMapping
from yarl import URL

from . import websocket, wire
from .adapters import create_adapter
from .broadcasting_auth import BroadcastingAuth
from .config import AppConfig, ServerConfig, Settings
from .connection import Connection
from .dashboard import Dashboard
from .http_api import HttpApi
from .http_errors import JsonErrorRunner, json_error, json_errors
from .http_guard import HttpGuard, Pending, PendingHeads
from .hub import Hub, HubListener
from .metrics import METRICS, Metrics, metrics_handler, metrics_listener
from .stats import StatisticsLogger
from .stats_store import SqliteStore
from .webhook_store import create_store
from .webhooks import Webhooks
from .wire import Code, PusherError

__all__ = ["GatewaySite", "create_app", "listen", "run", "serve"]

log = logging.getLogger("pusher_compat")

HUB = web.AppKey("hub", Hub)
SETTINGS = web.AppKey("settings", Settings)

_VERSION_RE = re.compile(r"\d[0-9A-Za-z.+_-]*")
_SUPPORTED_PROTOCOLS = range(5, 8)
_DRAIN_STEP = 0.1
"""Seconds between drain batches, on average."""


class Flusher:
    """Writes every socket's queued frames once per loop iteration."""

    __slots__ = ("_dirty", "_loop", "_scheduled")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._dirty: list[SocketSink] = []
        self._scheduled = False

    def schedule(self, sink: SocketSink) -> None:
        self._dirty.append(sink)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._run)

    def _run(self) -> None:
        dirty, self._dirty = self._dirty, []
        self._scheduled = False
        for sink in dirty:
            sink.flush()


class SocketSink(websocket.WebSocket, asyncio.Protocol):
    """One WebSocket after its handshake: client frames in, queued frames out.

    The sans-I/O :class:`~pusher_compat.websocket.WebSocket` parses client bytes, and text
    reaches the :class:`Connection`. Outbound frames are queued and written straight to the
    transport once per loop iteration (:class:`Flusher`). A socket whose unsent bytes exceed
    ``limit`` cannot keep up: it is closed with 4100 rather than let its buffer grow or slow
    the broadcast for everyone else. Idle sockets are most of a server's memory: the parser is
    a base class rather than an object of its own to save each socket ~40 bytes (so no name
    here may shadow one of the parser's), and this is the only object per socket besides the
    transport and the ``Connection``.
    """

    __slots__ = ("_closed", "_flusher", "_gateway", "_limit", "_pending", "_transport",
                 "address", "connection")

    def __init__(self, transport: asyncio.Transport, gateway: Gateway, flusher: Flusher,
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
        _background.add(closed)
        closed.add_done_callback(_background.discard)

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


_background: set[asyncio.Future[None]] = set()
"""Sockets waiting for the client's close frame: shutdown waits for them."""
_CLOSE_TIMEOUT = 10.0
"""Seconds a client gets to answer our close frame before the connection is cut."""


class Gateway:
    """Accepts WebSocket connections for the configured apps."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self._settings = settings
        self._hub = hub
        self._apps = {app.key: app for app in settings.apps}
        self._flusher: Flusher | None = None
        self._per_address: dict[tuple[str, str], int] = {}
        """Open connections by (app id, client address), for ``max_connections_per_ip``."""
        self.heads = PendingHeads(settings.server)
        """Connections whose request head is still on its way: capped, with a deadline."""
        self.draining = False

    def _admit(self, handshake: Handshake) -> AppConfig:
        """The app a connection belongs to; raises :class:`PusherError` to refuse it."""
        key = handshake.match_info["key"]
        app = self._apps.get(key)
        if app is None:
            raise PusherError(Code.APP_NOT_FOUND, f"App key {key} does not exist")
        self._check_protocol(handshake.query)
        if self.draining:
            # 41xx: pusher-js backs off a second, by which time the balancer knows.
            raise PusherError(Code.OVER_CAPACITY, "Server is shutting down")
        if not app.enabled:
            raise PusherError(Code.APP_DISABLED, f"App {app.id} is disabled")
        origin = handshake.headers.get("Origin", "")
        if app.allowed_origins and not {"*", origin} & set(app.allowed_origins):
            raise PusherError(Code.UNAUTHORIZED, f"Origin {origin!r} is not allowed")
        self._check_quotas(app, handshake.remote or "")
        return app

    def _check_protocol(self, query: Mapping[str, str]) -> None:
        protocol = query.get("protocol")
        if protocol is None:
            if self._settings.server.require_protocol:
                raise PusherError(Code.NO_PROTOCOL, "No protocol version supplied")
        elif not protocol.isdigit() or int(protocol) not in _SUPPORTED_PROTOCOLS:
            raise PusherError(
                Code.UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol!r}"
            )
        version = query.get("version")
        if version is not None and not _VERSION_RE.fullmatch(version):
            raise PusherError(Code.INVALID_VERSION, f"Invalid version string {version!r}")

    def _check_quotas(self, app: AppConfig, address: str) -> None:
        server = self._settings.server
        if server.max_connections and self._hub.connection_count() >= server.max_connections:
            raise PusherError(Code.OVER_CAPACITY, "Server over capacity")
        if app.max_connections and self._hub.connection_count(app.id) >= app.max_connections:
            raise PusherError(Code.APP_OVER_QUOTA, "App over connection quota")
        per_ip = app.max_connections_per_ip
        if per_ip and self._per_address.get((app.id, address), 0) >= per_ip:
            raise PusherError(
                Code.APP_OVER_QUOTA, f"Too many connections from {address}: at most {per_ip}"
            )

    async def app_socket(self, request: web.Request) -> web.StreamResponse:
        """``/app`` requests that reached aiohttp: a failed handshake (400, or 426 for another
        WebSocket version, RFC 6455 §4.2.2), or an upgrade sent on a kept-alive connection
        after other requests (nginx reuses its upstream connections). Such an upgrade is
        taken away from aiohttp and accepted like any other."""
        try:
            handshake = Handshake.from_request(request)
        except websocket.HandshakeError as error:
            log.info("refused WebSocket handshake from %s: %s", request.remote, error)
            return json_error(error.status, error.message, error.headers)
        self.accept(handshake, _detach(request))
        return web.Response()  # never sent: aiohttp lost the transport in _detach

    bad_path = app_socket
    """Paths under ``/app`` that are not ``/app/{key}``: :meth:`accept` refuses them (4005)."""

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 503 while draining or cut off from the cluster's Redis, so a balancer
        sends new clients elsewhere."""
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        if not self._hub.adapter.ready:
            return web.json_response({"status": "redis unavailable"}, status=503)
        return web.json_response({"status": "ready"})

    def accept(self, handshake: Handshake, transport: asyncio.Transport,
               received: bytes = b"") -> None:
        """Answer the upgrade (101), then turn the connection into a :class:`SocketSink`:
        admitted, it gets its :class:`Connection`; refused, it gets the ``pusher:error`` and
        the close with the same code. ``received``: bytes already read after the head."""
        if self._flusher is None:
            self._flusher = Flusher(asyncio.get_running_loop())
        sink = SocketSink(transport, self, self._flusher, self._settings.server)
        transport.set_protocol(sink)
        # Queued, not written: the 101 and the first frame leave in one write.
        sink.send(websocket.switching_protocols(handshake.accept))
        admitted = self._admission(handshake)
        if isinstance(admitted, PusherError):
            # The first frame must carry a numeric code: pusher-js crashes on a null one.
            log.info("refused connection: %s", admitted)
            sink.send(admitted.to_frame())
            sink.close(int(admitted.code or Code.UNAUTHORIZED), admitted.message)
            return
        connection = Connection(admitted, self._settings.server, self._hub, sink)
        sink.connection = connection
        sink.address = handshake.remote or ""
        address = (admitted.id, sink.address)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        connection.open()
        if received:
            sink.data_received(received)

    def _admission(self, handshake: Handshake) -> AppConfig | PusherError:
        if "key" not in handshake.match_info:
            return PusherError(
                Code.PATH_NOT_FOUND, f"Invalid path {handshake.path}: use /app/{{key}}"
            )
        try:
            return self._admit(handshake)
        except PusherError as refusal:
            return refusal

    def release(self, connection: Connection, address: str) -> None:
        """A connection's socket is gone: it no longer counts for its address."""
        key = (connection.app.id, address)
        remaining = self._per_address.pop(key) - 1
        if remaining:
            self._per_address[key] = remaining

    async def check_activity(self) -> None:
        """Ping silent sockets, close the ones that never answer (4201); drop expired cache."""
        server = self._settings.server
        interval = max(0.2, min(5.0, min(server.activity_timeout, server.pong_timeout) / 4))
        while True:
            await asyncio.sleep(interval)
            for connection in self._hub.connections():
                connection.check_activity()
            self._hub.prune_cache()

    def close_all(self, code: Code, reason: str) -> None:
        for connection in self._hub.connections():
            connection.close(code, reason)

    async def drain(self, window: float) -> None:
        """Stop admitting, then close every socket with 4200 in jittered batches spread over
        ``window`` seconds, so that clients do not all reconnect at the same instant."""
        self.draining = True
        connections = list(self._hub.connections())
        if not connections:
            return
        log.info("draining %d connection(s) over %.1f s", len(connections), window)
        random.shuffle(connections)
        batches = max(1, min(len(connections), int(window / _DRAIN_STEP)))
        size = -(-len(connections) // batches)
        step = window / batches
        for start in range(0, len(connections), size):
            for connection in connections[start:start + size]:
                connection.close(Code.RECONNECT, "Server shutting down")
            if start + size < len(connections):
                await asyncio.sleep(step * random.uniform(0.5, 1.5))


GATEWAY = web.AppKey("gateway", Gateway)


async def _up(request: web.Request) -> web.Response:
    """Liveness: the process answers HTTP."""
    return web.json_response({"status": "ok"})


def create_app(settings: Settings) -> web.Application:
    """The aiohttp application serving ``settings``: WebSocket gateway plus HTTP API."""
    server = settings.server
    adapter = create_adapter(settings)
    webhooks = (Webhooks(server, store=create_store(server, adapter), apps=settings.apps)
                if any(a.webhooks for a in settings.apps) else None)
    store = SqliteStore(server.stats_path) if server.stats_path else None
    # The dashboard listens to the hub and reads it: built first, given the hub after.
    dashboard = (Dashboard(settings, None, server.dashboard_password, store=store)
                 if server.dashboard_password else None)
    listeners: list[HubListener] = [x for x in (webhooks, dashboard) if x is not None]
    hub = Hub(listeners=listeners, adapter=adapter)
    if dashboard is not None:
        dashboard.hub = hub
    gateway = Gateway(settings, hub)
    stats_logger = None
    if store is not None:
        stats_logger = StatisticsLogger(
            hub, webhooks, store, interval=server.stats_interval_seconds,
            retention_seconds=server.stats_retention_days * 86400,
        )
    app = web.Application(client_max_size=server.max_request_bytes, middlewares=[json_errors])
    app[METRICS] = Metrics(hub, webhooks, settings.apps, gateway.heads)
    app[HUB] = hub
    app[SETTINGS] = settings
    app[GATEWAY] = gateway
    app.add_routes([
        web.get("/app/{key}", gateway.app_socket),
        web.get("/app", gateway.bad_path),
        web.get("/app/{tail:.*}", gateway.bad_path),
        web.get("/up", _up),
        web.get("/ready", gateway.ready),
        *([] if server.metrics_port else [web.get("/metrics", metrics_handler)]),
        *HttpApi(settings, hub, webhooks=webhooks, store=store).routes(),
    ])
    if settings.auth is not None:
        app.add_routes(BroadcastingAuth(settings.apps, settings.auth).routes())
    if dashboard is not None:
        app.add_routes(dashboard.routes())

    async def background(app: web.Application) -> AsyncIterator[None]:
        await hub.adapter.start()
        if webhooks is not None:
            await webhooks.start()
        if dashboard is not None:
            await dashboard.start()
        tasks = [asyncio.create_task(gateway.check_activity())]
        if stats_logger is not None:
            tasks.append(asyncio.create_task(stats_logger.run()))
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if webhooks is not None:
            await webhooks.close()
        if dashboard is not None:
            await dashboard.close()
        if stats_logger is not None:
            await stats_logger.stop()
        if store is not None:
            store.close()
        await hub.adapter.close()

    async def on_shutdown(app: web.Application) -> None:
        count = hub.connection_count()
        if count:
            log.info("closing %d connection(s) with 4200 so clients reconnect", count)
        gateway.close_all(Code.RECONNECT, "Server shutting down")
        if _background:
            await asyncio.wait(set(_background), timeout=settings.server.shutdown_timeout)

    app.cleanup_ctx.append(background)
    if server.metrics_port:
        app.cleanup_ctx.append(metrics_listener(server.metrics_host, server.metrics_port))
    app.on_shutdown.append(on_shutdown)
    return app


_HTTP_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_NOT_IN_KEY = re.compile(r"[/{}]")
"""What ``/app/{key}`` cannot contain, as in aiohttp's route (a key is one path segment)."""


@dataclass(frozen=True, slots=True)
class Handshake:
    """A WebSocket upgrade under ``/app``: the accept key, and what :meth:`Gateway._admit`
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
            return None  # aiohttp routes it to Gateway.app_socket, which says what is wrong

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

    A WebSocket upgrade under ``/app`` goes to :meth:`Gateway.accept`, so no aiohttp object is
    ever made for it (aiohttp's request, response and handler task cost an idle socket about
    13 KiB). Anything else goes, with every byte read so far, to aiohttp's own protocol, which
    serves it exactly as if it had accepted the connection itself (behind an
    :class:`~pusher_compat.http_guard.HttpGuard`, which times every later head). From accept
    until the head is read the connection is :class:`~pusher_compat.http_guard.Pending`:
    refused at once past the caps, closed when its head is late.
    """

    __slots__ = ("_gateway", "_head", "_http", "_pending", "_transport")

    def __init__(self, gateway: Gateway, http: web.Server) -> None:
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
        may_upgrade = received.startswith(_APP_GET) or _APP_GET.startswith(received)
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
        handler = self._http()
        guard = HttpGuard(handler, self._gateway.heads, transport, pending)
        transport.set_protocol(guard)
        handler.connection_made(transport)
        guard.data_received(received)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pending is not None:
            self._pending.finish()


def _remote(transport: asyncio.BaseTransport) -> str | None:
    """The client address, as aiohttp's ``request.remote`` gives it."""
    peername = transport.get_extra_info("peername")
    # Interned: the sockets of one address (a NAT, an office) share one string.
    return sys.intern(str(peername[0])) if isinstance(peername, list | tuple) else None


def _detach(request: web.Request) -> asyncio.Transport:
    """Take a connection away from aiohttp: its protocol is told the connection is lost
    (unregistered from the server, timers cancelled) after forgetting the transport, so it
    neither writes to nor closes it any more. A client sends nothing after an upgrade
    request until the 101, so nothing is left unread in aiohttp's buffers."""
    protocol, transport = request.protocol, request.transport
    assert transport is not None
    protocol.transport = None
    protocol.connection_lost(None)
    return cast(asyncio.Transport, transport)


_BACKLOG = 1024
"""Pending connections the kernel queues: aiohttp's 128 drops SYNs (a one-second retransmit
for the client) when a few hundred clients connect at once."""


class GatewaySite(web.BaseSite):
    """A TCP (or TLS) site whose connections are read first by :class:`FirstRequest`:
    WebSockets on ``/app`` bypass aiohttp, every other route is aiohttp's as before."""

    __slots__ = ("_bound_port", "_gateway", "_host", "_port")

    def __init__(self, runner: web.AppRunner, gateway: Gateway, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=_BACKLOG)
        self._gateway = gateway
        self._host = host
        self._port = port
        self._bound_port = port

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
            ssl=self._ssl_context, backlog=self._backlog,
            # A TLS handshake comes before the first head: it gets the same time.
            ssl_handshake_timeout=self._gateway.heads.timeout if self._ssl_context else None,
        )
        self._bound_port = server.sockets[0].getsockname()[1]


async def listen(app: web.Application, host: str, port: int,
                 ssl_context: ssl.SSLContext | None = None,
                 shutdown_timeout: float = 10.0) -> web.AppRunner:
    """Start serving ``app`` (made by :func:`create_app`) on ``host:port``; ``runner.addresses``
    says where, ``runner.cleanup()`` stops."""
    runner = JsonErrorRunner(app, handle_signals=False, access_log=None,
                             shutdown_timeout=shutdown_timeout,
                             keepalive_timeout=app[SETTINGS].server.http_keepalive_timeout)
    await runner.setup()
    await GatewaySite(runner, app[GATEWAY], host, port, ssl_context).start()
    return runner


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then drain: readiness turns 503, sockets are
    closed with 4200 over ``drain_seconds``, and the server stops."""
    server = settings.server
    app = create_app(settings)
    # Signals first: a SIGTERM right after the "listening" line must drain, not kill.
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    runner = await listen(app, server.host, server.port, _ssl_context(server),
                          server.shutdown_timeout)
    _tune_gc()
    for config in settings.apps:
        log.info("serving app id=%s key=%s (%s, client events %s)", config.id, config.key,
                 "enabled" if config.enabled else "disabled",
                 "on" if config.client_events else "off")
    scheme = "https" if server.ssl_cert else "http"
    for address in runner.addresses:
        log.info("pusher-compat listening on %s://%s:%s (WebSocket /app/{key}, API /apps/{id})",
                 scheme, address[0], address[1])
    await stop.wait()
    log.info("shutting down: not ready any more, closing connections")
    await app[GATEWAY].drain(server.drain_seconds)
    await runner.cleanup()
    log.info("stopped")


def _tune_gc() -> None:
    """Keep the cyclic GC off the latency tail. Everything alive after start-up (modules,
    schemas, settings) lives as long as the process: frozen, no collection walks it again.
    Measured with 1,000 subscribers: a full collection took 30-45 ms before freezing, 2-4 ms
    after. The thresholds stay the defaults: with broadcasts allocating no container per
    socket, (50000, 50, 1000) cut collections tenfold but moved neither p99 nor the maximum
    beyond run-to-run noise."""
    gc.collect()
    gc.freeze()


def _ssl_context(server: ServerConfig) -> ssl.SSLContext | None:
    if not server.ssl_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server.ssl_cert, server.ssl_key)
    if server.ssl_ca:
        context.load_verify_locations(server.ssl_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def run(settings: Settings) -> None:
    """Run :func:`serve` on uvloop when it is installed."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
