"""Prometheus ``/metrics`` (pusher_compat.metrics): the exposition parsed with
prometheus-client's own parser, every sample compared exactly after scripted traffic.

WebSocket traffic comes from real ``Connection`` objects on list sinks sharing the hub of an
in-process aiohttp server; HTTP API calls are real signed requests to it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import prometheus_client
from aiohttp import web
from aiohttp.test_utils import TestClient
from conftest import ServerProcess, free_port
from helpers import CountingClient, eventually, signed_query
from prometheus_client.parser import text_string_to_metric_families

from pusher_compat.apps import Apps
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.http_api import HttpApi
from pusher_compat.hub import Hub
from pusher_compat.metrics import METRICS, ApiCallCounter, Metrics, counted, metrics_handler
from pusher_compat.webhook_log import DeliveryTotals

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
OTHER = AppConfig(id="2002", key="other-key", secret="other-secret")
SETTINGS = Settings(server=ServerConfig(), apps=(APP, OTHER))

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def server_app(hub: Hub, webhooks: Any = None) -> web.Application:
    """The HTTP API and /metrics wired as server.py wires them (API endpoints ``counted``)."""
    app = web.Application()
    app[METRICS] = Metrics(hub, webhooks, SETTINGS.apps)
    api = HttpApi(SETTINGS, hub)
    app.add_routes([web.RouteDef(r.method, r.path, counted(r.handler), r.kwargs)
                    for r in api.routes()])
    app.router.add_get("/metrics", metrics_handler)
    return app


async def api(client: TestClient, method: str, path: str, payload: Any = None,
              secret: str = APP.secret, **query: str) -> int:
    body = json.dumps(payload).encode() if payload is not None else b""
    response = await client.request(method, path, params=signed_query(method, path, APP.key, secret,
                                                                      body, query),
                                    data=body, headers={"Content-Type": "application/json"})
    await response.read()
    return response.status


async def scrape(client: TestClient) -> Samples:
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == prometheus_client.CONTENT_TYPE_LATEST
    return parse(await response.text())


def parse(text: str) -> Samples:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return "pusher_compat_" + name, frozenset(labels.items())


def idle(app_id: str) -> Samples:
    """The samples of an app without any activity."""
    return {
        sample("connections", app=app_id): 0,
        sample("presence_members", app=app_id): 0,
        sample("websocket_messages_received_total", app=app_id): 0,
        sample("websocket_messages_sent_total", app=app_id): 0,
        sample("websocket_bytes_received_total", app=app_id): 0,
        sample("websocket_bytes_sent_total", app=app_id): 0,
        sample("api_messages_total", app=app_id): 0,
        sample("webhook_deliveries_total", app=app_id, result="delivered"): 0,
        sample("webhook_deliveries_total", app=app_id, result="failed"): 0,
        sample("webhook_deliveries_pending", app=app_id): 0,
    }


class FakeWebhooks:
    """Webhook delivery totals the test sets (``Webhooks.totals``, whose counting
    test_webhooks.py checks)."""

    def __init__(self) -> None:
        self.counts: dict[str, DeliveryTotals] = {}

    def totals(self, app_id: str) -> DeliveryTotals:
        return self.counts.get(app_id, DeliveryTotals(0, 0, 0, {}))


# -- tests ---------------------------------------------------------------------------------


async def test_metrics_match_scripted_traffic_per_app(aiohttp_client: Any) -> None:
    hub = Hub()
    client = await aiohttp_client(server_app(hub))
    a, b, c, gone = (CountingClient(hub, APP) for _ in range(4))
    a.subscribe("my-channel")
    b.subscribe("my-channel")
    c.subscribe("presence-room", '{"user_id":"7","user_info":{"name":"Ann"}}')
    a.send({"event": "pusher:ping", "data": {}})
    gone.conn.closed()
    assert await api(client, "POST", "/apps/1001/events",
                     {"name": "order", "channels": ["my-channel", "empty"], "data": "{}"}) == 200

    samples = await scrape(client)

    clients = (a, b, c, gone)
    assert samples == {
        sample("connections", app="1001"): 3,
        sample("channels", app="1001", type="presence"): 1,
        sample("channels", app="1001", type="public"): 1,
        sample("subscriptions", app="1001", type="presence"): 1,
        sample("subscriptions", app="1001", type="public"): 2,
        sample("presence_members", app="1001"): 1,
        sample("websocket_messages_received_total", app="1001"): 4,
        # 4 connection_established, 3 subscription_succeeded, 1 pong, 2 events
        sample("websocket_messages_sent_total", app="1001"): 10,
        sample("websocket_bytes_received_total", app="1001"): sum(x.sent_chars
                                                                  for x in clients),
        sample("websocket_bytes_sent_total", app="1001"): sum(x.received_bytes
                                                              for x in clients),
        sample("api_messages_total", app="1001"): 2,
        sample("http_api_requests_total", app="1001", status="200"): 1,
        sample("webhook_deliveries_total", app="1001", result="delivered"): 0,
        sample("webhook_deliveries_total", app="1001", result="failed"): 0,
        sample("webhook_deliveries_pending", app="1001"): 0,
        **idle("2002"),
        sample("cluster_ready"): 1,
    }


async def test_http_api_requests_are_counted_by_status(aiohttp_client: Any) -> None:
    client = await aiohttp_client(server_app(Hub()))
    assert await api(client, "GET", "/apps/1001/channels") == 200
    assert await api(client, "GET", "/apps/1001/channels", info="nope") == 400
    assert await api(client, "GET", "/apps/1001/channels", secret="wrong") == 401
    assert await api(client, "POST", "/users/42/terminate_connections", {}) == 200
    assert await api(client, "GET", "/apps/9999/channels") == 404  # unknown app: no label

    samples = await scrape(client)

    requests = {key: value for key, value in samples.items()
                if key[0] == "pusher_compat_http_api_requests_total"}
    assert requests == {
        sample("http_api_requests_total", app="1001", status="200"): 2,
        sample("http_api_requests_total", app="1001", status="400"): 1,
        sample("http_api_requests_total", app="1001", status="401"): 1,
    }


async def test_webhook_results_are_the_dispatchers_totals(aiohttp_client: Any) -> None:
    deliveries = FakeWebhooks()
    client = await aiohttp_client(server_app(Hub(), deliveries))
    deliveries.counts["2002"] = DeliveryTotals(delivered=1, failed=0, pending=1, dropped={})
    await scrape(client)
    deliveries.counts["2002"] = DeliveryTotals(delivered=1, failed=1, pending=2, dropped={})

    samples = await scrape(client)

    assert {key: value for key, value in samples.items() if "webhook" in key[0]} == {
        sample("webhook_deliveries_total", app="1001", result="delivered"): 0,
        sample("webhook_deliveries_total", app="1001", result="failed"): 0,
        sample("webhook_deliveries_pending", app="1001"): 0,
        sample("webhook_deliveries_total", app="2002", result="delivered"): 1,
        sample("webhook_deliveries_total", app="2002", result="failed"): 1,
        sample("webhook_deliveries_pending", app="2002"): 2,
    }


async def test_dropped_webhook_deliveries_are_counted_by_reason(aiohttp_client: Any) -> None:
    deliveries = FakeWebhooks()
    client = await aiohttp_client(server_app(Hub(), deliveries))
    deliveries.counts["2002"] = DeliveryTotals(0, 0, 0, {"pending_bytes": 3, "log_bytes": 1})

    samples = await scrape(client)

    assert {key: value for key, value in samples.items() if "dropped" in key[0]} == {
        sample("webhook_deliveries_dropped_total", app="2002", reason="pending_bytes"): 3,
        sample("webhook_deliveries_dropped_total", app="2002", reason="log_bytes"): 1,
    }


def test_each_server_has_its_own_registry() -> None:
    busy, quiet = Hub(), Hub()
    CountingClient(busy, APP)
    busy_metrics, quiet_metrics = Metrics(busy, None, SETTINGS.apps), Metrics(quiet, None,
                                                                                SETTINGS.apps)

    busy_samples = parse(busy_metrics.exposition().decode())
    quiet_samples = parse(quiet_metrics.exposition().decode())
    global_samples = parse(prometheus_client.generate_latest().decode())

    assert busy_samples[sample("connections", app="1001")] == 1
    assert quiet_samples[sample("connections", app="1001")] == 0
    assert not [key for key in global_samples if key[0].startswith("pusher_compat_")]
    assert quiet.app_ids() == []  # scraping idle apps does not add them to the hub


async def test_counted_records_raised_http_errors_and_crashes(aiohttp_client: Any) -> None:
    async def forbidden(request: web.Request) -> web.StreamResponse:
        raise web.HTTPForbidden()

    async def crash(request: web.Request) -> web.StreamResponse:
        raise RuntimeError("boom")

    app = web.Application()
    metrics = app[METRICS] = Metrics(Hub(), None, SETTINGS.apps)
    app.router.add_get("/apps/{app_id}/forbidden", counted(forbidden))
    app.router.add_get("/apps/{app_id}/crash", counted(crash))
    client = await aiohttp_client(app)

    assert (await client.get("/apps/2002/forbidden")).status == 403
    assert (await client.get("/apps/2002/crash")).status == 500

    assert metrics.api_calls.counts("2002") == {403: 1, 500: 1}


def test_api_call_counter_ignores_unknown_apps() -> None:
    counter = ApiCallCounter(Apps(SETTINGS.apps))
    counter.record("1001", 200)
    counter.record("1001", 200)
    counter.record("evil\nlabel", 404)

    assert counter.counts("1001") == {200: 2}
    assert counter.counts("evil\nlabel") == {}


async def test_counting_an_endpoint_twice_counts_each_answer_once(aiohttp_client: Any) -> None:
    async def ok(request: web.Request) -> web.StreamResponse:
        return web.json_response({})

    app = web.Application()
    metrics = app[METRICS] = Metrics(Hub(), None, SETTINGS.apps)
    app.router.add_get("/apps/{app_id}/ok", counted(counted(ok)))
    client = await aiohttp_client(app)

    assert (await client.get("/apps/1001/ok")).status == 200

    assert metrics.api_calls.counts("1001") == {200: 1}


# -- through a real server process ------------------------------------------------------------


async def connections_scraped(session: aiohttp.ClientSession, url: str) -> float:
    """``pusher_compat_connections`` of app ``1001`` in a scrape of ``url``."""
    response = await session.get(url)
    assert response.status == 200
    families = {f.name: f for f in text_string_to_metric_families(await response.text())}
    (sample,) = [s for s in families["pusher_compat_connections"].samples
                 if s.labels == {"app": "1001"}]
    return float(sample.value)


async def test_server_serves_metrics_statistics_and_json_logs(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(f"""
        [server]
        log_format = "json"
        stats_path = "{tmp_path / "stats.sqlite3"}"
        stats_interval_seconds = 0.2

        [[apps]]
        id = "1001"
        key = "app-key"
        secret = "app-secret"
    """, "--log-level", "info")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.ws_url())
        await ws.receive_str()
        await ws.send_str('{"event":"pusher:subscribe","data":{"channel":"news"}}')
        await ws.receive_str()
        assert await connections_scraped(session, f"{server.url}/metrics") == 1
        path = "/apps/1001/statistics"

        async def statistics() -> dict[str, Any]:
            params = signed_query("GET", path, "app-key", "app-secret")
            return await (await session.get(server.url + path, params=params)).json()

        def subscribed(stats: dict[str, Any]) -> bool:
            return any(row["ws_messages_in"] for row in stats["statistics"])

        # An interval (0.2 s) is written once it ends: poll for the one with the subscribe.
        stats = await eventually(statistics, subscribed)
    assert stats["recording"] is True
    assert stats["current"] == {"connections": 1, "channels": 1, "subscriptions": 1}
    assert stats["statistics"][0]["connections_peak"] == 1
    assert sum(row["ws_messages_in"] for row in stats["statistics"]) == 1
    first = json.loads(server.log[0])
    assert {"time", "level", "logger", "message"} <= set(first)


async def test_metrics_port_serves_metrics_there_and_not_on_the_public_port(
    server_factory: Callable[..., ServerProcess],
) -> None:
    port = free_port()
    server = server_factory(f"""
        [server]
        metrics_port = {port}

        [[apps]]
        id = "1001"
        key = "app-key"
        secret = "app-secret"
    """)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.ws_url())
        await ws.receive_str()
        assert await connections_scraped(session, f"http://127.0.0.1:{port}/metrics") == 1
        public = await session.get(f"{server.url}/metrics")
        assert (public.status, await public.json()) == (
            404, {"error": "Unknown path /metrics", "code": 404}
        )
        only_metrics = await session.get(f"http://127.0.0.1:{port}/apps/1001/channels")
        assert only_metrics.status == 404
    assert f"metrics on http://127.0.0.1:{port}/metrics" in "".join(server.log)
