"""Settings and apps, from a TOML file and the environment.

With no file the server runs one app taken from ``PUSHER_APP_ID``, ``PUSHER_APP_KEY`` and
``PUSHER_APP_SECRET`` (defaults ``app-id``/``app-key``/``app-secret``, as Soketi), so a Laravel
``.env`` works unchanged. A bad value fails at start with a message naming the file and key.

Every table is checked by :func:`pusher_compat.config_fields.check_fields` against the typed
fields below (``Literal`` types give the allowed choices); ``[auth]`` is read by
:mod:`pusher_compat.auth_config`, built on the same mechanism.
"""

from __future__ import annotations

import base64
import binascii
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from .auth_config import AuthConfig, parse_auth_config
from .config_fields import ConfigError, Minimum, check_fields
from .logs import LogFormat, LogLevel

__all__ = [
    "WEBHOOK_EVENTS",
    "AdapterName",
    "AppConfig",
    "ConfigError",
    "ServerConfig",
    "Settings",
    "WebhookEndpoint",
    "WebhookEvent",
    "load_settings",
]

WebhookEvent = Literal[
    "channel_occupied", "channel_vacated", "member_added", "member_removed", "client_event",
    "cache_miss", "subscription_count",
]
"""The webhook event names an endpoint may ask for (``event_types``)."""
WEBHOOK_EVENTS: frozenset[str] = frozenset(get_args(WebhookEvent))
_WEBHOOK_EVENT_LIST = ", ".join(sorted(WEBHOOK_EVENTS))


AdapterName = Literal["local", "redis"]
"""``server.adapter``: the choices of the config file and of ``--adapter``."""


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    """Where an app's webhooks go, and which of them.

    TOML: ``[[apps.webhooks]]`` tables after their ``[[apps]]``, e.g.
    ``url = "https://example.com/pusher"``, ``event_types = ["member_added"]``,
    ``channel_prefix = "presence-"``, ``headers = { Authorization = "Bearer x" }``.
    """

    url: str
    event_types: Annotated[
        tuple[WebhookEvent, ...], f"must list names among: {_WEBHOOK_EVENT_LIST}"
    ] = ()
    """Webhook event names to send; empty = all of :data:`WEBHOOK_EVENTS`."""
    channel_prefix: str = ""
    """Only events of channels whose name starts with this."""
    headers: tuple[tuple[str, str], ...] = ()
    """Extra request headers."""

    def wants(self, event: Mapping[str, Any]) -> bool:
        """Whether this endpoint takes ``event`` (a webhook event object)."""
        if event["name"] not in (self.event_types or WEBHOOK_EVENTS):
            return False
        return str(event.get("channel", "")).startswith(self.channel_prefix)


@dataclass(frozen=True, slots=True)
class AppConfig:
    """One Pusher app: credentials, switches and limits (0 means unlimited where noted)."""

    id: str
    key: str
    secret: str
    enabled: bool = True
    client_events: bool = True
    max_connections: int = 0
    """Concurrent connections for the app; 0 = unlimited. Past it: close 4004."""
    max_connections_per_ip: int = 0
    """Concurrent connections from one client address; 0 = unlimited. Past it: close 4004."""
    max_connections_per_user: int = 0
    """Concurrent signed-in connections of one user; 0 = unlimited. Past it: close 4004."""
    max_backend_events_per_second: int = 0
    """Events (one per channel) published through the HTTP API; 0 = unlimited; past it 429."""
    max_read_requests_per_second: int = 0
    """HTTP API GET requests; 0 = unlimited; past it: 429."""
    allowed_origins: tuple[str, ...] = ()
    """WebSocket ``Origin`` headers accepted (``*`` or exact origins); empty = any. Else 4009."""
    max_client_events_per_second: int = 10
    max_channels_per_connection: int = 1000
    """Channels one socket may be subscribed to at once; 0 = unlimited. Past it the
    subscription is refused (``LimitReached``, 4300) and the socket stays open."""
    max_subscriptions_per_second: int = 1000
    """``pusher:subscribe`` messages one socket may send per second; 0 = unlimited. Past it
    the subscription is refused (``LimitReached``, 4301) and the socket stays open. pusher-js
    resubscribes every channel at once after a reconnect, so the default equals the channel
    limit: a client at that limit is never refused on reconnect. Keep it at least as high as
    ``max_channels_per_connection``."""
    max_presence_members: int = 100
    max_presence_user_info_bytes: int = 1024
    max_presence_user_id_length: int = 128
    max_event_payload_bytes: int = 10240
    max_channels_per_event: int = 100
    max_batch_size: int = 10
    max_channel_name_length: int = 200
    max_event_name_length: int = 200
    cache_ttl_seconds: int = 1800
    """How long the last event of a ``cache-`` channel is kept."""
    user_authentication_timeout: int = 0
    """Seconds a connection has to sign in (``pusher:signin``) before close 4009; 0 = off."""
    encryption_master_key_base64: str = ""
    """32 bytes, base64: derives the ``shared_secret`` of ``private-encrypted-`` channels."""
    webhooks: tuple[WebhookEndpoint, ...] = ()


_AT_LEAST_A_SECOND = Minimum(1, "must be at least 1 second")
_AT_LEAST_A_BYTE = Minimum(1, "must be at least 1 byte")
_POSITIVE = Minimum(0, "must be positive", exclusive=True)


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """Settings of the process, shared by every app."""

    host: str = "0.0.0.0"
    port: int = 6001
    activity_timeout: Annotated[int, _AT_LEAST_A_SECOND] = 30
    """Seconds announced to clients; the server pings a socket silent for that long."""
    pong_timeout: int = 30
    """Seconds a pinged socket has to answer before it is closed with 4201."""
    max_connections: int = 0
    """Concurrent connections for the whole server; 0 = unlimited. Past it: close 4100."""
    require_protocol: bool = False
    """Refuse connections without ``?protocol=`` (4008) instead of assuming 7."""
    max_message_bytes: int = 65536
    """Largest WebSocket message a client may send; past it the socket is closed (1009)."""
    max_request_bytes: int = 1024 * 1024
    """Largest HTTP API request body; past it: 413."""
    max_write_buffer_bytes: int = 4 * 1024 * 1024
    """Bytes queued for one socket before it counts as a slow consumer (closed with 4100)."""
    request_timestamp_window: int = 600
    """Seconds a signed HTTP API request's ``auth_timestamp`` may differ from server time."""
    webhook_batch_seconds: float = 0.05
    """Webhook events of one app gathered this long are sent in one request."""
    webhook_leave_delay_seconds: float = 3.0
    """``channel_vacated``/``member_removed`` wait this long; a quick return cancels both."""
    webhook_retry_seconds: float = 300.0
    """A failing delivery is retried with exponential backoff for this long."""
    webhook_timeout_seconds: float = 5.0
    webhook_max_pending: int = 10000
    """Webhook requests queued or retrying at once, per process; past it the oldest fail."""
    webhook_log_size: int = 1000
    """Deliveries kept per app for ``GET /apps/{id}/webhooks/deliveries``."""
    webhook_max_pending_bytes: Annotated[int, _AT_LEAST_A_BYTE] = 64 * 1024 * 1024
    """Bytes of encoded events in pending webhook requests, per process; past it pending
    deliveries fail, those of client events only first, then the oldest."""
    webhook_log_max_bytes: Annotated[int, _AT_LEAST_A_BYTE] = 8 * 1024 * 1024
    """Bytes of encoded (truncated) events in one app's delivery log; past it the oldest
    delivered entries leave first, then the oldest failed ones."""
    webhook_store: str = ""
    """SQLite file keeping pending webhook deliveries across restarts (local adapter); empty =
    memory only. The redis adapter always keeps them in Redis."""
    drain_seconds: float = 5.0
    """On SIGTERM, sockets are closed with 4200 in small jittered batches over this window, so
    clients do not all reconnect at the same instant; 0 closes them all at once."""
    shutdown_timeout: float = 10.0
    ssl_cert: str = ""
    """PEM certificate (chain) for serving ``wss://`` and ``https://`` directly."""
    ssl_key: str = ""
    ssl_ca: str = ""
    """Optional CA bundle to verify client certificates with (mutual TLS)."""
    log_level: LogLevel = "info"
    log_format: LogFormat = "text"
    """``text`` (human-readable lines) or ``json`` (one JSON object per line), on stderr."""
    stats_path: str = ""
    """SQLite file the per-app statistics are recorded in; empty = no statistics."""
    stats_interval_seconds: Annotated[float, _POSITIVE] = 60.0
    """Statistics are recorded once per this many seconds, per app."""
    dashboard_password: str = ""
    """Password of the web dashboard at ``/dashboard``; empty = no dashboard."""
    dashboard_cookie_secure: bool = False
    """Mark the dashboard's session cookie ``Secure`` (sent over HTTPS only): set it when TLS
    ends at a proxy in front; when the server itself serves TLS the cookie is always Secure."""
    metrics_port: int = 0
    """Port of a listener of its own serving ``/metrics``, then absent from the main port, so
    that app ids and traffic are not published to the internet; 0 = on the main port."""
    metrics_host: str = "127.0.0.1"
    """Address of that listener: loopback, or an internal interface (``0.0.0.0`` in a pod)."""
    stats_retention_days: int = 30
    """Statistics older than this are deleted as new ones are recorded; 0 = kept forever."""
    adapter: AdapterName = "local"
    """``local``: one node, state in memory. ``redis``: many nodes share state over Redis."""
    redis_url: str = "redis://127.0.0.1:6379/0"
    """``redis://``, ``rediss://`` (TLS), ``unix://``,
    ``redis+sentinel://host:26379[,host:port]/service[/db]`` or
    ``redis+cluster://host:6379[,host:port]`` (``rediss+cluster://``); used by the redis
    adapter."""
    redis_prefix: str = "pusher-compat"
    """Prefix of every Redis key and bus channel: one per deployment sharing a Redis."""
    node_lease_seconds: Annotated[float, _AT_LEAST_A_SECOND] = 10.0
    """A node that stops renewing its lease this long is declared dead; the survivors remove
    its members and counts within this bound plus a quarter of it."""
    request_head_timeout: Annotated[float, _POSITIVE] = 10.0
    """Seconds a client has to send a whole HTTP request head (any path, the first request on
    a connection or a later one), from its first byte; bytes that dribble in do not extend it.
    Past it the connection is closed."""
    http_keepalive_timeout: Annotated[float, _POSITIVE] = 15.0
    """Seconds an HTTP connection may idle between requests before it is closed."""
    max_pending_connections: int = 0
    """Connections still sending a request head (not yet a WebSocket, not yet a request), in
    total; new connections past it are closed at once. 0 = half the open-files limit
    (``RLIMIT_NOFILE``) at start."""
    max_pending_connections_per_address: int = 0
    """The same, per client address; 0 = an eighth of ``max_pending_connections``."""
    redis_outbox_max_bytes: int = 8 * 1024 * 1024
    """Bus messages (encoded) a node keeps while Redis is unreachable, to publish in order
    when it is back; past it the oldest are dropped (counted and logged). 0 keeps none."""
    redis_outbox_max_age_seconds: float = 10.0
    """Messages of the outbox older than this when Redis is back are dropped, not sent."""
    workers: Annotated[int, Minimum(1, "must be at least 1")] = 1
    """Worker processes serving ``port`` together (``SO_REUSEPORT``) under one supervisor,
    each a node of the Redis adapter (required past 1); 1 = this process serves alone."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration: server settings and the apps it serves."""

    server: ServerConfig = field(default_factory=ServerConfig)
    apps: tuple[AppConfig, ...] = ()
    auth: AuthConfig | None = None
    """The ``/broadcasting/auth`` signer; served only when ``[auth]`` is configured."""


def _webhook(table: Any, where: str, source: str) -> WebhookEndpoint:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    table = dict(table)
    # The headers are a table of their own; every other key is a typed field.
    headers = table.pop("headers", {})
    values = check_fields(WebhookEndpoint, table, where, source)
    if not str(values.get("url", "")).startswith(("http://", "https://")):
        raise ConfigError(f"{source}: {where}.url is required (an http:// or https:// URL)")
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise ConfigError(f"{source}: {where}.headers must be a table of strings")
    return WebhookEndpoint(**values, headers=tuple(headers.items()))


def _app(table: Any, where: str, source: str) -> AppConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    table = dict(table)
    hooks = table.pop("webhooks", [])
    if not isinstance(hooks, list):
        raise ConfigError(f"{source}: {where}.webhooks must be an array of tables")
    values = check_fields(AppConfig, table, where, source)
    values["webhooks"] = tuple(
        _webhook(hook, f"{where}.webhooks[{i}]", source) for i, hook in enumerate(hooks)
    )
    master_key = values.get("encryption_master_key_base64")
    if master_key and len(_base64(master_key)) != 32:
        raise ConfigError(
            f"{source}: {where}.encryption_master_key_base64 must be 32 bytes, base64-encoded"
        )
    for required in ("id", "key", "secret"):
        if not values.get(required):
            raise ConfigError(f"{source}: {where}.{required} is required (a non-empty string)")
    return AppConfig(**values)


def _check_tls(server: ServerConfig, source: str) -> None:
    if bool(server.ssl_cert) != bool(server.ssl_key):
        raise ConfigError(f"{source}: server.ssl_cert and server.ssl_key go together")
    for key in ("ssl_cert", "ssl_key", "ssl_ca"):
        path = getattr(server, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"{source}: server.{key}: no such file {path!r}")


def _check_workers(server: ServerConfig, source: str) -> None:
    """Workers share state only through Redis, and worker ``n`` serves ``/metrics`` on
    ``metrics_port + n - 1``: every one of those ports must be a port, none the main one."""
    last_metrics_port = server.metrics_port + server.workers - 1
    if server.metrics_port and (last_metrics_port > 65535
                                or server.metrics_port <= server.port <= last_metrics_port):
        ports = (f"{server.metrics_port}..{last_metrics_port} (one per worker)"
                 if server.workers > 1 else str(server.metrics_port))
        raise ConfigError(f"{source}: server.metrics_port must be a port other than "
                          f"server.port (or 0), got {ports}")
    if server.workers == 1:
        return
    if server.adapter != "redis":
        raise ConfigError(
            f"{source}: server.workers = {server.workers} needs the redis adapter, through "
            "which workers share channels, presence and events: set --adapter redis and "
            "--redis-url URL (or adapter and redis_url in [server])")
    if server.dashboard_password:
        raise ConfigError(
            f"{source}: server.dashboard_password: the dashboard keeps its sessions in one "
            "process, so it is not served by workers: serve it from a node with workers = 1")


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        return b""


def _env_app(env: Mapping[str, str]) -> AppConfig:
    return AppConfig(
        id=env.get("PUSHER_APP_ID") or "app-id",
        key=env.get("PUSHER_APP_KEY") or "app-key",
        secret=env.get("PUSHER_APP_SECRET") or "app-secret",
    )


def _unique(apps: tuple[AppConfig, ...], source: str) -> None:
    for attribute in ("id", "key"):
        seen: set[str] = set()
        for index, app in enumerate(apps):
            value = getattr(app, attribute)
            if value in seen:
                raise ConfigError(f"{source}: apps[{index}].{attribute} {value!r} is used twice")
            seen.add(value)


def load_settings(
    path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Read settings from ``path`` (TOML) or, without one, from the environment.

    ``overrides`` are server settings given on the command line (``host``, ``port``...);
    ``None`` values are ignored.
    """
    env = os.environ if env is None else env
    source = str(path) if path else "environment"
    data: dict[str, Any] = {}
    if path:
        try:
            data = tomllib.loads(Path(path).read_text())
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    unknown = set(data) - {"server", "apps", "auth"}
    if unknown:
        raise ConfigError(
            f"{source}: unknown section {sorted(unknown)[0]!r} (known: apps, auth, server)"
        )
    server_table = data.get("server", {})
    if not isinstance(server_table, dict):
        raise ConfigError(f"{source}: [server] must be a table")
    # Command-line values are checked as the file's are (argparse has checked most).
    server_table = {**server_table, **{k: v for k, v in overrides.items() if v is not None}}
    server_values = check_fields(ServerConfig, server_table, "server", source)
    server = ServerConfig(**server_values)
    _check_workers(server, source)
    if server.webhook_store and not Path(server.webhook_store).parent.is_dir():
        raise ConfigError(f"{source}: server.webhook_store: no directory "
                          f"{str(Path(server.webhook_store).parent)!r} to keep the file in")
    _check_tls(server, source)
    raw_apps = data.get("apps")
    apps: tuple[AppConfig, ...]
    if raw_apps is None:
        apps = (_env_app(env),)
    elif not isinstance(raw_apps, list) or not raw_apps:
        raise ConfigError(f"{source}: apps must be a non-empty array of tables ([[apps]])")
    else:
        apps = tuple(_app(table, f"apps[{i}]", source) for i, table in enumerate(raw_apps))
    _unique(apps, source)
    auth = parse_auth_config(data["auth"], source) if "auth" in data else None
    return Settings(server=server, apps=apps, auth=auth)
