"""The aiohttp layer: WebSocket upgrades, byte pumping, the HTTP API routes and lifecycle.

Protocol decisions live in :mod:`pusher_compat.connection`; this module only moves bytes.
Outbound frames are queued per socket and written once per event-loop iteration, so a burst
of events to one socket costs one ``write`` system call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import signal
import ssl
from collections.abc import AsyncIterator, Mapping

from aiohttp import WSMsgType, web

from . import wire
from .broadcasting_auth import BroadcastingAuth
from .config import AppConfig, ServerConfig, Settings
from .connection import Connection
from .dashboard import Dashboard
from .http_api import HttpApi
from .hub import Hub, HubListener
from .metrics import METRICS, Metrics, metrics_handler
from .stats import SqliteStore, StatisticsApi, StatisticsLogger
from .webhooks import Webhooks
from .wire import Code, PusherError

__all__ = ["create_app", "run", "serve"]

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


class SocketSink:
    """A connection's output: pre-framed bytes queued, then written straight to the transport.

    A socket whose unsent bytes exceed ``limit`` cannot keep up: it is closed with 4100 rather
    than let its buffer grow or slow the broadcast for everyone else.
    """

    __slots__ = ("_closing", "_flusher", "_limit", "_pending", "_transport", "_ws", "connection")

    def __init__(
        self,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        flusher: Flusher,
        limit: int,
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._flusher = flusher
        self._limit = limit
        self._pending: list[bytes] = []
        self._closing = False
        self.connection: Connection | None = None

    def send(self, frame: bytes) -> None:
        if self._closing:
            return
        if not self._pending:
            self._flusher.schedule(self)
        self._pending.append(frame)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or self._transport.is_closing():
            return
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))
        if self._transport.get_write_buffer_size() > self._limit and self.connection:
            self.connection.close(Code.OVER_CAPACITY, "Slow consumer: too much unsent data")

    def close(self, code: int, reason: str) -> None:
        if self._closing:
            return
        self.flush()
        self._closing = True
        task = asyncio.ensure_future(self._ws.close(code=code, message=reason.encode()[:120]))
        _background.add(task)
        task.add_done_callback(_background.discard)


_background: set[asyncio.Future[bool]] = set()


class Gateway:
    """Accepts WebSocket connections for the configured apps."""

    def __init__(self, settings: Settings, hub: Hub) -> None:
        self._settings = settings
        self._hub = hub
        self._apps = {app.key: app for app in settings.apps}
        self._flusher: Flusher | None = None
        self._per_address: dict[tuple[str, str], int] = {}
        """Open connections by (app id, client address), for ``max_connections_per_ip``."""
        self.draining = False

    def _admit(self, request: web.Request) -> AppConfig:
        """The app a connection belongs to; raises :class:`PusherError` to refuse it."""
        key = request.match_info["key"]
        app = self._apps.get(key)
        if app is None:
            raise PusherError(Code.APP_NOT_FOUND, f"App key {key} does not exist")
        self._check_protocol(request.query)
        if self.draining:
            # 41xx: pusher-js backs off a second, by which time the balancer knows.
            raise PusherError(Code.OVER_CAPACITY, "Server is shutting down")
        if not app.enabled:
            raise PusherError(Code.APP_DISABLED, f"App {app.id} is disabled")
        origin = request.headers.get("Origin", "")
        if app.allowed_origins and not {"*", origin} & set(app.allowed_origins):
            raise PusherError(Code.UNAUTHORIZED, f"Origin {origin!r} is not allowed")
        self._check_quotas(app, request.remote or "")
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
        try:
            app = self._admit(request)
        except PusherError as refusal:
            return await self._accept(request, refusal)
        return await self._accept(request, app)

    async def ready(self, request: web.Request) -> web.Response:
        """Readiness: 503 while draining, so a balancer stops sending new clients here."""
        if self.draining:
            return web.json_response({"status": "draining"}, status=503)
        return web.json_response({"status": "ready"})

    async def bad_path(self, request: web.Request) -> web.StreamResponse:
        refusal = PusherError(Code.PATH_NOT_FOUND, f"Invalid path {request.path}: use /app/{{key}}")
        return await self._accept(request, refusal)

    async def _accept(
        self, request: web.Request, admitted: AppConfig | PusherError
    ) -> web.StreamResponse:
        ws = web.WebSocketResponse(
            compress=False, max_msg_size=self._settings.server.max_message_bytes
        )
        if not ws.can_prepare(request).ok:
            raise web.HTTPNotFound(text="This endpoint is for WebSocket connections\n")
        await ws.prepare(request)
        transport = request.transport
        assert transport is not None
        if isinstance(admitted, PusherError):
            # The first frame must carry a numeric code: pusher-js crashes on a null one.
            log.info("refused connection: %s", admitted)
            transport.write(admitted.to_frame())
            await ws.close(code=int(admitted.code or Code.UNAUTHORIZED),
                           message=admitted.message.encode()[:120])
            return ws
        if self._flusher is None:
            self._flusher = Flusher(asyncio.get_running_loop())
        limit = self._settings.server.max_write_buffer_bytes
        sink = SocketSink(ws, transport, self._flusher, limit)
        connection = Connection(admitted, self._settings.server, self._hub, sink)
        sink.connection = connection
        address = (admitted.id, request.remote or "")
        self._per_address[address] = self._per_address.get(address, 0) + 1
        connection.open()
        try:
            await self._pump(ws, connection)
        finally:
            connection.closed()
            remaining = self._per_address.pop(address) - 1
            if remaining:
                self._per_address[address] = remaining
        return ws

    @staticmethod
    async def _pump(ws: web.WebSocketResponse, connection: Connection) -> None:
        async for message in ws:
            if message.type is WSMsgType.TEXT:
                connection.receive(message.data)
            elif message.type is WSMsgType.BINARY:
                connection.touch()
                connection.send(wire.error_frame(None, "Binary frames are not supported"))

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
    webhooks = Webhooks(settings.server) if any(a.webhooks for a in settings.apps) else None
    server = settings.server
    store = SqliteStore(server.stats_path) if server.stats_path else None
    # The dashboard listens to the hub and reads it: built first, given the hub after.
    dashboard = (Dashboard(settings, None, server.dashboard_password, store=store)
                 if server.dashboard_password else None)
    listeners: list[HubListener] = [x for x in (webhooks, dashboard) if x is not None]
    hub = Hub(listeners=listeners)
    if dashboard is not None:
        dashboard.hub = hub
    gateway = Gateway(settings, hub)
    stats_logger = None
    if store is not None:
        stats_logger = StatisticsLogger(
            hub, webhooks, store, interval=server.stats_interval_seconds,
            retention_seconds=server.stats_retention_days * 86400,
        )
    app = web.Application(client_max_size=server.max_request_bytes)
    app[METRICS] = Metrics(hub, webhooks, settings.apps)
    app[HUB] = hub
    app[SETTINGS] = settings
    app[GATEWAY] = gateway
    app.add_routes([
        web.get("/app/{key}", gateway.app_socket),
        web.get("/app", gateway.bad_path),
        web.get("/app/{tail:.*}", gateway.bad_path),
        web.get("/up", _up),
        web.get("/ready", gateway.ready),
        web.get("/metrics", metrics_handler),
        *HttpApi(settings, hub, webhooks=webhooks,
                 statistics=StatisticsApi(store, hub)).routes(),
    ])
    if settings.auth is not None:
        app.add_routes(BroadcastingAuth(settings.apps, settings.auth).routes())
    if dashboard is not None:
        app.add_routes(dashboard.routes())

    async def background(app: web.Application) -> AsyncIterator[None]:
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

    async def on_shutdown(app: web.Application) -> None:
        count = hub.connection_count()
        if count:
            log.info("closing %d connection(s) with 4200 so clients reconnect", count)
        gateway.close_all(Code.RECONNECT, "Server shutting down")
        if _background:
            await asyncio.wait(set(_background), timeout=settings.server.shutdown_timeout)

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(on_shutdown)
    return app


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or ``stop``), then drain: readiness turns 503, sockets are
    closed with 4200 over ``drain_seconds``, and the server stops."""
    server = settings.server
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           shutdown_timeout=server.shutdown_timeout)
    await runner.setup()
    # Signals first: a SIGTERM right after the "listening" line must drain, not kill.
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    site = web.TCPSite(runner, server.host, server.port, ssl_context=_ssl_context(server))
    await site.start()
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
