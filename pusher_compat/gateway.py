"""The gateway: who may open a WebSocket, and the life of the open ones.

Admission (app key, protocol version, origin, draining, disabled apps), quotas (server,
app, per client address), liveness (silent sockets pinged, then closed 4201) and drain
(every socket closed 4200 in jittered batches). Bytes are the transport's
(:mod:`pusher_compat.socket_transport`), frames the :class:`Connection`'s.

Time comes in from outside: a clock (read by every :class:`Connection` the gateway opens)
and a :class:`~pusher_compat.scheduling.Scheduler` (which runs the liveness check), so tests
move time instead of waiting.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Callable, Mapping

from aiohttp import web

from . import websocket
from .api_transport import ApiService
from .apps import Apps
from .config import AppConfig, Settings
from .connection import Connection
from .http_errors import json_error
from .http_guard import PendingHeads
from .hub import Hub
from .scheduling import Cancellable, LoopScheduler, Scheduler
from .socket_transport import Flusher, Handshake, WebSocketProtocol, detach
from .wire import Code, PusherError

__all__ = ["Clock", "Gateway"]

log = logging.getLogger("pusher_compat")

Clock = Callable[[], float]
"""Seconds, monotonic: when sockets were last heard from."""


_VERSION_RE = re.compile(r"\d[0-9A-Za-z.+_-]*")
_SUPPORTED_PROTOCOLS = range(5, 8)
_DRAIN_STEP = 0.1
"""Seconds between drain batches, on average."""


class Gateway:
    """Accepts WebSocket connections for the configured apps, and keeps them alive."""

    def __init__(self, settings: Settings, hub: Hub, *, clock: Clock = time.monotonic,
                 scheduler: Scheduler | None = None) -> None:
        self._settings = settings
        self._hub = hub
        self._apps = Apps(settings.apps)
        """The configured apps: clients name theirs by key in ``/app/{key}``."""
        self._clock = clock
        """Given to every :class:`Connection`: its activity and rate limits read it."""
        self._scheduler = scheduler or LoopScheduler()
        """Runs the liveness check every :attr:`_interval` seconds."""
        server = settings.server
        self._interval = max(0.2, min(5.0, min(server.activity_timeout, server.pong_timeout) / 4))
        """Seconds between liveness checks: a quarter of the shorter timeout, so a socket is
        pinged or closed at most a quarter late, within [0.2, 5]."""
        self._timer: Cancellable | None = None
        """The next liveness check while the gateway runs (:meth:`start` to :meth:`stop`)."""
        self._flusher: Flusher | None = None
        """Made on the first upgrade: it needs the running loop."""
        self._per_address: dict[tuple[str, str], int] = {}
        """Open connections by (app id, client address), for ``max_connections_per_ip``."""
        self.api: ApiService | None = None
        """The HTTP API's hot routes, served without aiohttp (set by the app factory);
        ``None``: aiohttp serves every request that is not an upgrade."""
        self.heads = PendingHeads(settings.server)
        """Connections whose request head is still on its way: capped, with a deadline."""
        self.draining = False
        """Set by :meth:`drain`: new connections are refused (4100), readiness answers 503."""

    def _admit(self, handshake: Handshake) -> AppConfig:
        """The app a connection belongs to; raises :class:`PusherError` to refuse it."""
        key = handshake.match_info["key"]
        app = self._apps.by_key(key)
        if app is None:
            raise PusherError(Code.APP_NOT_FOUND, f"App key {key} does not exist")
        self._check_protocol(handshake.query)
        if self.draining:
            # 41xx: pusher-js backs off a second, by which time the balancer knows.
            raise PusherError(Code.OVER_CAPACITY, "Server is shutting down")
        if Apps.disabled(app):
            # Worded as pusher-js users have always read it (no quotes round the id).
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
        self.accept(handshake, detach(request))
        return web.Response()  # never sent: aiohttp lost the transport in detach

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
        """Answer the upgrade (101), then turn the connection into a
        :class:`WebSocketProtocol`:
        admitted, it gets its :class:`Connection`; refused, it gets the ``pusher:error`` and
        the close with the same code. ``received``: bytes already read after the head."""
        if self._flusher is None:
            self._flusher = Flusher(asyncio.get_running_loop())
        sink = WebSocketProtocol(transport, self, self._flusher, self._settings.server)
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
        connection = Connection(admitted, self._settings.server, self._hub, sink,
                                clock=self._clock)
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

    def start(self) -> None:
        """Start the liveness check."""
        self._timer = self._scheduler.call_later(self._interval, self._check_activity)

    def stop(self) -> None:
        """Stop the liveness check."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check_activity(self) -> None:
        """Ping silent sockets, close the ones that never answer (4201); drop expired cache.
        The next check is scheduled first, so one failing check does not end them all."""
        self._timer = self._scheduler.call_later(self._interval, self._check_activity)
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
