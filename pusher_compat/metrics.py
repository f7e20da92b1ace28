"""Prometheus metrics at ``GET /metrics`` (unsigned, as Prometheus scrapes), labelled by app.

Pull, not push: :class:`HubCollector` reads the hub's running :class:`~pusher_compat.hub.Counters`,
its channels and :meth:`Webhooks.totals <pusher_compat.webhooks.Webhooks.totals>` when
Prometheus scrapes; nothing is called per event. The one thing the hub does not count is
HTTP API calls by status: :func:`counted` wraps an API endpoint and adds each answer to the
application's :class:`ApiCallCounter`. Each aiohttp application has its own
:class:`Metrics`, with a private ``CollectorRegistry`` (not the process-global one), so that
several servers in one process (tests) do not mix their numbers.

Families (every sample has an ``app`` label; counters are exposed with ``_total``):

* ``pusher_compat_connections`` (gauge): open WebSocket connections.
* ``pusher_compat_channels{type}`` (gauge): occupied channels by type (``public``,
  ``private``, ``presence``, ``private-encrypted``, ``cache``...; only types in use).
* ``pusher_compat_subscriptions{type}`` (gauge): subscriptions, by channel type.
* ``pusher_compat_presence_members`` (gauge): members summed over presence channels.
* ``pusher_compat_websocket_messages_received_total``, ``..._sent_total`` (counters).
* ``pusher_compat_websocket_bytes_received_total``, ``..._sent_total`` (counters).
* ``pusher_compat_api_messages_total`` (counter): events published through the HTTP API,
  one per channel.
* ``pusher_compat_http_api_requests_total{status}`` (counter): HTTP API answers by status.
* ``pusher_compat_webhook_deliveries_total{result}`` (counter): deliveries settled
  ``delivered`` or ``failed``; ``pusher_compat_webhook_deliveries_pending`` (gauge).
* ``pusher_compat_cluster_events_dropped_total{reason}`` (counter): events published while
  Redis was unreachable that the outbox let go (``bytes``, ``age``, ``stopped``), so they
  reached only this node's sockets.
* ``pusher_compat_webhook_deliveries_dropped_total{reason}`` (counter): deliveries dropped
  over a limit: ``pending_limit``, ``pending_bytes`` (failed unsent), ``log_bytes`` (left the
  delivery log early).

Server-wide, without an ``app`` label (:class:`PendingHeadsCollector`):

* ``pusher_compat_pending_connections`` (gauge): connections still sending a request head.
* ``pusher_compat_connections_refused_total{reason}`` (counter): new connections closed at
  once, past the ``per_address`` or ``total`` cap on pending connections.
* ``pusher_compat_request_head_timeouts_total`` (counter): connections closed because their
  request head was not complete within ``request_head_timeout``.

Adapter latency is not measured.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .apps import Apps
from .http_errors import HttpError, json_errors
from .http_guard import PendingHeads, Refusal
from .hub import Counters, Hub

if TYPE_CHECKING:
    from .config import AppConfig
    from .webhooks import Webhooks

__all__ = [
    "METRICS",
    "ApiCallCounter",
    "HubCollector",
    "Metrics",
    "PendingHeadsCollector",
    "counted",
    "metrics_handler",
    "metrics_listener",
]

log = logging.getLogger("pusher_compat")

_PREFIX = "pusher_compat_"


class ApiCallCounter:
    """HTTP API answers per (app id, status), for the apps configured.

    Requests naming an unknown app (404s, 401s for an unknown ``auth_key``) are not counted:
    any string could be a label value otherwise.
    """

    def __init__(self, apps: Apps) -> None:
        self._apps = apps
        self._counts: dict[str, dict[int, int]] = defaultdict(dict)

    def record(self, app_id: str, status: int) -> None:
        """Count one answer with ``status`` to a request of app ``app_id``."""
        if app_id in self._apps:
            counts = self._counts[app_id]
            counts[status] = counts.get(status, 0) + 1

    def record_request(self, request: web.Request, status: int) -> None:
        """Count one answer to ``request``: the app is the ``{app_id}`` of the path, or the
        ``auth_key`` of the query for the path without it."""
        app_id = request.match_info.get("app_id")
        if app_id is None:
            app = self._apps.by_key(request.query.get("auth_key", ""))
            app_id = app.id if app is not None else ""
        self.record(app_id, status)

    def counts(self, app_id: str) -> dict[int, int]:
        """Answers so far by status."""
        return dict(self._counts.get(app_id, {}))


class HubCollector(Collector):
    """Builds every metric family from the hub, the webhook totals and the API call counter at
    scrape time."""

    def __init__(
        self,
        hub: Hub,
        webhooks: Webhooks | None,
        api_calls: ApiCallCounter,
        app_ids: Iterable[str],
    ) -> None:
        self._hub = hub
        self._webhooks = webhooks
        self._api_calls = api_calls
        self._app_ids = tuple(app_ids)

    def collect(self) -> Iterator[Metric]:
        app = ["app"]
        connections = GaugeMetricFamily(
            _PREFIX + "connections", "Open WebSocket connections.", labels=app)
        channels = GaugeMetricFamily(
            _PREFIX + "channels", "Occupied channels, by channel type.", labels=[*app, "type"])
        subscriptions = GaugeMetricFamily(
            _PREFIX + "subscriptions", "Channel subscriptions, by channel type.",
            labels=[*app, "type"])
        members = GaugeMetricFamily(
            _PREFIX + "presence_members", "Members summed over presence channels.", labels=app)
        messages_in = CounterMetricFamily(
            _PREFIX + "websocket_messages_received", "WebSocket text messages received.",
            labels=app)
        messages_out = CounterMetricFamily(
            _PREFIX + "websocket_messages_sent", "WebSocket messages sent.", labels=app)
        bytes_in = CounterMetricFamily(
            _PREFIX + "websocket_bytes_received",
            "Characters of the WebSocket text messages received.", labels=app)
        bytes_out = CounterMetricFamily(
            _PREFIX + "websocket_bytes_sent",
            "Bytes of the WebSocket frames sent, headers included.", labels=app)
        api_messages = CounterMetricFamily(
            _PREFIX + "api_messages", "Events published through the HTTP API, one per channel.",
            labels=app)
        api_requests = CounterMetricFamily(
            _PREFIX + "http_api_requests", "HTTP API requests answered, by status.",
            labels=[*app, "status"])
        deliveries = CounterMetricFamily(
            _PREFIX + "webhook_deliveries", "Webhook deliveries settled, by result.",
            labels=[*app, "result"])
        pending = GaugeMetricFamily(
            _PREFIX + "webhook_deliveries_pending", "Webhook deliveries not settled yet.",
            labels=app)
        dropped = CounterMetricFamily(
            _PREFIX + "cluster_events_dropped",
            "Events published while Redis was unreachable and never sent to the other nodes, "
            "by reason.", labels=[*app, "reason"])
        cluster_drops = self._hub.adapter.dropped
        webhooks_dropped = CounterMetricFamily(
            _PREFIX + "webhook_deliveries_dropped", "Webhook deliveries dropped, by reason.",
            labels=[*app, "reason"])
        active = set(self._hub.app_ids())
        for app_id in self._app_ids:
            # Apps without any activity yet are read as zeros, not added to the hub.
            counters = self._hub.counters(app_id) if app_id in active else Counters()
            open_connections = self._hub.local_connection_count(app_id) if app_id in active else 0
            connections.add_metric([app_id], open_connections)
            by_type: dict[str, list[int]] = {}
            presence_members = 0
            if app_id in active:
                for channel in self._hub.channels(app_id):
                    entry = by_type.setdefault(channel.kind.name, [0, 0])
                    entry[0] += 1
                    entry[1] += channel.subscription_count
                    if channel.kind.presence:
                        presence_members += channel.user_count
            for kind in sorted(by_type):
                channels.add_metric([app_id, kind], by_type[kind][0])
                subscriptions.add_metric([app_id, kind], by_type[kind][1])
            members.add_metric([app_id], presence_members)
            messages_in.add_metric([app_id], counters.ws_messages_in)
            messages_out.add_metric([app_id], counters.ws_messages_out)
            bytes_in.add_metric([app_id], counters.ws_bytes_in)
            bytes_out.add_metric([app_id], counters.ws_bytes_out)
            api_messages.add_metric([app_id], counters.api_messages)
            for status, count in sorted(self._api_calls.counts(app_id).items()):
                api_requests.add_metric([app_id, str(status)], count)
            totals = self._webhooks.totals(app_id) if self._webhooks is not None else None
            deliveries.add_metric([app_id, "delivered"], totals.delivered if totals else 0)
            deliveries.add_metric([app_id, "failed"], totals.failed if totals else 0)
            pending.add_metric([app_id], totals.pending if totals else 0)
            for (dropped_app, reason), count in sorted(cluster_drops.items()):
                if dropped_app == app_id:
                    dropped.add_metric([app_id, reason], count)
            for reason, count in sorted(totals.dropped.items() if totals else ()):
                webhooks_dropped.add_metric([app_id, reason], count)
        ready = GaugeMetricFamily(
            _PREFIX + "cluster_ready",
            "1 while this node is part of its cluster (always, with the local adapter).")
        ready.add_metric([], 1 if self._hub.adapter.ready else 0)
        yield from (connections, channels, subscriptions, members, messages_in, messages_out,
                    bytes_in, bytes_out, api_messages, api_requests, deliveries, pending,
                    webhooks_dropped, dropped, ready)


class PendingHeadsCollector(Collector):
    """The server's connections still sending a request head, and those it closed for it."""

    def __init__(self, heads: PendingHeads) -> None:
        self._heads = heads

    def collect(self) -> Iterator[Metric]:
        heads = self._heads
        pending = GaugeMetricFamily(
            _PREFIX + "pending_connections", "Connections still sending a request head.")
        pending.add_metric([], heads.count)
        refused = CounterMetricFamily(
            _PREFIX + "connections_refused",
            "New connections closed at once: too many were still sending a request head.",
            labels=["reason"])
        for reason in Refusal:
            refused.add_metric([reason.value], heads.refused[reason])
        timeouts = CounterMetricFamily(
            _PREFIX + "request_head_timeouts",
            "Connections closed: no complete request head within request_head_timeout.")
        timeouts.add_metric([], heads.timed_out)
        yield from (pending, refused, timeouts)


class Metrics:
    """What ``/metrics`` serves for one aiohttp application: a private registry holding a
    :class:`HubCollector` (and a :class:`PendingHeadsCollector` given ``heads``), and the
    :class:`ApiCallCounter` the API endpoints feed."""

    def __init__(
        self, hub: Hub, webhooks: Webhooks | None, apps: Iterable[AppConfig],
        heads: PendingHeads | None = None,
    ) -> None:
        apps = Apps(apps)
        self.api_calls = ApiCallCounter(apps)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(
            HubCollector(hub, webhooks, self.api_calls, apps.ids)
        )
        if heads is not None:
            self.registry.register(PendingHeadsCollector(heads))

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


METRICS = web.AppKey("metrics", Metrics)


async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the application's :class:`Metrics` in the Prometheus text format."""
    body = request.app[METRICS].exposition()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def metrics_listener(host: str, port: int) -> Callable[[web.Application], AsyncIterator[None]]:
    """A cleanup context serving the application's ``/metrics`` on ``host:port`` only (and
    nothing else there) while the application runs: scraped on a loopback or internal
    address, never on the public port."""

    async def listener(app: web.Application) -> AsyncIterator[None]:
        metrics_app = web.Application(middlewares=[json_errors])
        metrics_app[METRICS] = app[METRICS]
        metrics_app.router.add_get("/metrics", metrics_handler)
        runner = web.AppRunner(metrics_app, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            log.info("metrics on http://%s:%d/metrics", host, port)
            yield
        finally:
            await runner.cleanup()

    return listener


Endpoint = Callable[[web.Request], Awaitable[web.StreamResponse]]
_COUNTED = "_pusher_compat_counted"


def counted(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` that also counts its answer's status in the application's
    :class:`ApiCallCounter` (when the application has :data:`METRICS`). Wrapping an endpoint
    already ``counted`` returns it unchanged, so no answer is counted twice."""
    if getattr(endpoint, _COUNTED, False):
        return endpoint

    async def counting(request: web.Request) -> web.StreamResponse:
        metrics = request.app.get(METRICS)
        if metrics is None:
            return await endpoint(request)
        try:
            response = await endpoint(request)
        except (HttpError, web.HTTPException) as error:
            metrics.api_calls.record_request(request, error.status)
            raise
        except Exception:  # aiohttp answers 500; a cancelled request is not an answer
            metrics.api_calls.record_request(request, 500)
            raise
        metrics.api_calls.record_request(request, response.status)
        return response

    setattr(counting, _COUNTED, True)
    return counting
