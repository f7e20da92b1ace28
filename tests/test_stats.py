"""Statistics: snapshots of scripted traffic (pusher_compat.stats), the SQLite store
(pusher_compat.stats_store), the HTTP API's signed ``GET /apps/{id}/statistics`` endpoint and
the CLI's ``pusher-compat stats`` commands.

WebSocket traffic comes from real ``Connection`` objects on list sinks sharing one ``Hub``;
HTTP API traffic goes through a real ``HttpApi`` in an in-process aiohttp server. Expected
byte counts are the lengths of exactly what the sinks received and what the clients sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from helpers import CountingClient, FakeClock, signed_query, until

from pusher_compat.cli import add_stats_commands
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.http_api import HttpApi
from pusher_compat.hub import Hub
from pusher_compat.stats import StatisticsLogger
from pusher_compat.stats_store import Snapshot, SqliteStore
from pusher_compat.webhook_log import DeliveryTotals

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
OTHER = AppConfig(id="2002", key="other-key", secret="other-secret")
SETTINGS = Settings(server=ServerConfig(), apps=(APP, OTHER))
START = 1_700_000_000.0


# -- driving traffic -----------------------------------------------------------------------


def traffic(hub: Hub) -> list[CountingClient]:
    """Three connections of APP (one closes), two in ``my-channel``, one ping; one of OTHER."""
    a, b, c = CountingClient(hub, APP), CountingClient(hub, APP), CountingClient(hub, APP)
    a.subscribe("my-channel")
    b.subscribe("my-channel")
    c.subscribe("other-channel")
    a.ping()
    c.conn.closed()
    d = CountingClient(hub, OTHER)
    return [a, b, c, d]


class FakeWebhooks:
    """Webhook delivery totals the test sets (``Webhooks.totals``, whose counting
    test_webhooks.py checks)."""

    def __init__(self) -> None:
        self.counts: dict[str, DeliveryTotals] = {}

    def set(self, app_id: str, delivered: int, failed: int) -> None:
        self.counts[app_id] = DeliveryTotals(delivered, failed, 0, {})

    def totals(self, app_id: str) -> DeliveryTotals:
        return self.counts.get(app_id, DeliveryTotals(0, 0, 0, {}))


def snapshot(app_id: str, time_: float, seconds: float, **values: int) -> Snapshot:
    """A snapshot with every count zero but ``values``."""
    counts = dict.fromkeys(
        ("connections_peak", "connections", "channels", "subscriptions", "ws_messages_in",
         "ws_bytes_in", "ws_messages_out", "ws_bytes_out", "api_messages",
         "webhooks_delivered", "webhooks_failed"), 0)
    counts.update(values)
    return Snapshot(app_id, time_, seconds, **counts)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "stats.sqlite3")
    yield store
    store.close()


# -- snapshots -----------------------------------------------------------------------------


def test_snapshot_counts_scripted_traffic_per_app(store: SqliteStore) -> None:
    hub = Hub()
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock)
    a, b, c, d = traffic(hub)
    clock.advance(60)

    by_app = {s.app_id: s for s in logger.snapshot()}

    assert by_app == {
        "1001": snapshot(
            "1001", START + 60, 60, connections_peak=3, connections=2, channels=1,
            subscriptions=2, ws_messages_in=4, ws_bytes_in=a.sent_chars + b.sent_chars
            + c.sent_chars, ws_messages_out=7,
            ws_bytes_out=a.received_bytes + b.received_bytes + c.received_bytes,
        ),
        "2002": snapshot("2002", START + 60, 60, connections_peak=1, connections=1,
                         ws_messages_out=1, ws_bytes_out=d.received_bytes),
    }


def test_second_snapshot_holds_only_new_traffic_and_a_restarted_peak(store: SqliteStore
                                                                     ) -> None:
    hub = Hub()
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock)
    a, b, _, _ = traffic(hub)
    logger.snapshot()
    before = a.received_bytes + b.received_bytes
    b.conn.closed()
    a.ping()
    a.ping()
    clock.advance(30)

    second = {s.app_id: s for s in logger.snapshot()}

    # The peak restarted at the 2 connections open at the first snapshot.
    assert second["1001"] == snapshot(
        "1001", START + 30, 30, connections_peak=2, connections=1, channels=1,
        subscriptions=1, ws_messages_in=2, ws_bytes_in=2 * len(json.dumps(
            {"event": "pusher:ping", "data": {}})),
        ws_messages_out=2, ws_bytes_out=a.received_bytes + b.received_bytes - before,
    )
    assert second["2002"] == snapshot("2002", START + 30, 30, connections_peak=1,
                                      connections=1)


def test_snapshot_counts_webhook_deliveries_settled_in_the_interval(store: SqliteStore
                                                                    ) -> None:
    hub = Hub()
    CountingClient(hub, APP)
    deliveries = FakeWebhooks()
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, deliveries, store, interval=60, clock=clock)  # type: ignore[arg-type]
    deliveries.set("1001", delivered=1, failed=1)
    first = logger.snapshot()[0]
    deliveries.set("1001", delivered=3, failed=1)

    second = logger.snapshot()[0]

    assert (first.webhooks_delivered, first.webhooks_failed) == (1, 1)
    assert (second.webhooks_delivered, second.webhooks_failed) == (2, 0)


# -- the SQLite store ----------------------------------------------------------------------


async def test_recorded_snapshots_are_read_back_from_sqlite(tmp_path: Path) -> None:
    hub = Hub()
    clock = FakeClock(START)
    store = SqliteStore(tmp_path / "stats.sqlite3")
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock)
    a, b, c, _ = traffic(hub)
    clock.advance(60)
    await logger.record()
    a.ping()
    clock.advance(60)
    await logger.record()
    store.close()

    reopened = SqliteStore(tmp_path / "stats.sqlite3")
    rows = reopened.query("1001", START, START + 120)
    reopened.close()

    ping = len(json.dumps({"event": "pusher:ping", "data": {}}))
    assert [(r["time"], r["seconds"], r["connections_peak"], r["connections"],
             r["ws_messages_in"], r["ws_bytes_in"], r["ws_messages_out"]) for r in rows] == [
        (START + 60, 60, 3, 2, 4, a.sent_chars + b.sent_chars + c.sent_chars - ping, 7),
        (START + 120, 60, 2, 2, 1, ping, 1),
    ]


def test_query_range_is_inclusive_and_per_app(store: SqliteStore) -> None:
    store.write([snapshot("1001", t, 60, api_messages=int(t - START))
                 for t in (START, START + 60, START + 120, START + 180)])
    store.write([snapshot("2002", START + 60, 60, api_messages=99)])

    rows = store.query("1001", START + 60, START + 120)

    assert [(r["time"], r["api_messages"]) for r in rows] == [
        (START + 60, 60), (START + 120, 120)]
    assert [r["api_messages"] for r in store.query("2002", 0, START + 999)] == [99]
    assert store.query("1001", START + 181, START + 999) == []


def test_prune_deletes_rows_older_than_the_cutoff(store: SqliteStore) -> None:
    store.write([snapshot(app, t, 60) for app in ("1001", "2002")
                 for t in (START, START + 60, START + 120)])

    deleted = store.prune(START + 120)

    assert deleted == 4
    assert [r["time"] for r in store.query("1001", 0, START + 999)] == [START + 120]
    assert [r["time"] for r in store.query("2002", 0, START + 999)] == [START + 120]


async def test_retention_prunes_old_rows_after_each_write(store: SqliteStore) -> None:
    store.write([snapshot("1001", START - 100, 60), snapshot("1001", START - 20, 60)])
    hub = Hub()
    CountingClient(hub, APP)
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock, retention_seconds=50)

    await logger.record()

    assert [r["time"] for r in store.query("1001", 0, START + 999)] == [START - 20, START]


def test_schema_is_versioned_with_the_documented_columns(store: SqliteStore) -> None:
    db = sqlite3.connect(store.path)
    columns = [row[1] for row in db.execute("PRAGMA table_info(statistics)")]
    version = db.execute("PRAGMA user_version").fetchone()[0]
    db.close()
    assert version == 1
    assert columns == [
        "app_id", "time", "seconds", "connections_peak", "connections", "channels",
        "subscriptions", "ws_messages_in", "ws_bytes_in", "ws_messages_out", "ws_bytes_out",
        "api_messages", "webhooks_delivered", "webhooks_failed",
    ]


# -- the loop ------------------------------------------------------------------------------


async def test_run_records_one_row_per_app_every_interval(store: SqliteStore) -> None:
    hub = Hub()
    a = CountingClient(hub, APP)
    CountingClient(hub, OTHER)
    logger = StatisticsLogger(hub, None, store, interval=0.05)
    task = asyncio.create_task(logger.run())
    try:
        await until(lambda: len(store.query("1001", 0, time.time() + 60)) >= 2, 5.0)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    first, second = store.query("1001", 0, time.time() + 60)[:2]
    assert (first["connections"], first["ws_messages_out"],
            first["ws_bytes_out"]) == (1, 1, a.received_bytes)
    assert (second["connections"], second["ws_messages_out"]) == (1, 0)
    assert second["time"] > first["time"]
    assert len(store.query("2002", 0, time.time() + 60)) >= 2


async def test_stop_records_the_last_partial_interval(store: SqliteStore) -> None:
    hub = Hub()
    a = CountingClient(hub, APP)
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock)
    clock.advance(12.5)
    a.ping()

    await logger.stop()

    [row] = store.query("1001", 0, START + 999)
    assert (row["time"], row["seconds"], row["ws_messages_in"], row["ws_messages_out"]) == (
        START + 12.5, 12.5, 1, 2)


# -- GET /apps/{id}/statistics -------------------------------------------------------------


async def post_event(client: TestClient, channels: list[str]) -> None:
    path = f"/apps/{APP.id}/events"
    body = json.dumps({"name": "order", "channels": channels, "data": "{}"}).encode()
    params = signed_query("POST", path, APP.key, APP.secret, body)
    response = await client.post(path, params=params, data=body,
                                 headers={"Content-Type": "application/json"})
    assert response.status == 200, await response.text()


def api_app(hub: Hub, store: SqliteStore | None, clock: Any = time.time) -> web.Application:
    """The HTTP API with its statistics store, as server.py builds it."""
    app = web.Application()
    app.add_routes(HttpApi(SETTINGS, hub, clock=clock, store=store).routes())
    return app


async def get_statistics(client: TestClient, app: AppConfig = APP, **query: str
                         ) -> tuple[int, Any]:
    path = f"/apps/{app.id}/statistics"
    response = await client.get(path, params=signed_query("GET", path, app.key, app.secret,
                                                          query=query))
    return response.status, await response.json()


async def test_statistics_endpoint_reads_back_scripted_traffic(
    aiohttp_client: Any, store: SqliteStore
) -> None:
    hub = Hub()
    clock = FakeClock(START)
    logger = StatisticsLogger(hub, None, store, interval=60, clock=clock)
    client = await aiohttp_client(api_app(hub, store))
    a, b, c, _ = traffic(hub)
    out_before = a.received_bytes + b.received_bytes + c.received_bytes
    await post_event(client, ["my-channel", "nobody-here"])  # 2 API messages, 2 frames out
    event_frame = len(a.sink.frames[-1])
    clock.advance(60)
    await logger.record()
    await post_event(client, ["my-channel"])
    clock.advance(60)
    await logger.record()

    status, body = await get_statistics(client, **{"from": str(int(START)),
                                                   "to": str(int(START + 120))})

    assert status == 200
    assert body == {
        "statistics": [
            {"time": START + 60, "seconds": 60.0, "connections_peak": 3, "connections": 2,
             "channels": 1, "subscriptions": 2, "ws_messages_in": 4,
             "ws_bytes_in": a.sent_chars + b.sent_chars + c.sent_chars,
             "ws_messages_out": 9, "ws_bytes_out": out_before + 2 * event_frame,
             "api_messages": 2, "webhooks_delivered": 0, "webhooks_failed": 0},
            {"time": START + 120, "seconds": 60.0, "connections_peak": 2, "connections": 2,
             "channels": 1, "subscriptions": 2, "ws_messages_in": 0, "ws_bytes_in": 0,
             "ws_messages_out": 2, "ws_bytes_out": 2 * event_frame,
             "api_messages": 1, "webhooks_delivered": 0, "webhooks_failed": 0},
        ],
        "recording": True,
        "current": {"connections": 2, "channels": 1, "subscriptions": 2},
    }


async def test_statistics_endpoint_range_defaults_to_the_last_hour(
    aiohttp_client: Any, store: SqliteStore
) -> None:
    now = START + 10_000
    store.write([snapshot("1001", t, 60, api_messages=1)
                 for t in (now - 3601, now - 3600, now - 60, now + 1)])
    client = await aiohttp_client(api_app(Hub(), store, clock=lambda: now))

    signed_now = {"auth_timestamp": str(int(now))}  # the API's clock checks signatures too
    _, default = await get_statistics(client, **signed_now)
    _, only_from = await get_statistics(client, **signed_now, **{"from": str(int(now - 60))})

    assert [r["time"] for r in default["statistics"]] == [now - 3600, now - 60]
    assert [r["time"] for r in only_from["statistics"]] == [now - 60]


async def test_statistics_endpoint_refuses_a_bad_range(aiohttp_client: Any,
                                                       store: SqliteStore) -> None:
    client = await aiohttp_client(api_app(Hub(), store))

    after = await get_statistics(client, **{"from": "200", "to": "100"})
    nan = await get_statistics(client, to="soon")

    assert after == (400, {"error": "from must not be after to", "code": 400})
    assert nan == (400, {"error": "to must be unix seconds, got 'soon'", "code": 400})


async def test_statistics_endpoint_requires_a_signature(aiohttp_client: Any,
                                                        store: SqliteStore) -> None:
    client = await aiohttp_client(api_app(Hub(), store))
    params = signed_query("GET", f"/apps/{APP.id}/statistics", APP.key, "wrong-secret")

    response = await client.get(f"/apps/{APP.id}/statistics", params=params)

    assert response.status == 401


async def test_statistics_endpoint_without_a_store_says_it_does_not_record(
    aiohttp_client: Any
) -> None:
    hub = Hub()
    CountingClient(hub, APP)
    client = await aiohttp_client(api_app(hub, None))

    assert await get_statistics(client) == (200, {
        "statistics": [], "recording": False,
        "current": {"connections": 1, "channels": 0, "subscriptions": 0},
    })


# -- the command line ----------------------------------------------------------------------


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="pusher-compat")
    add_stats_commands(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def test_stats_command_prints_connections_channels_and_intervals(
    store: SqliteStore, capsys: pytest.CaptureFixture[str]
) -> None:
    hub = Hub()
    a, b, c = CountingClient(hub, APP), CountingClient(hub, APP), CountingClient(hub, APP)
    a.subscribe("my-channel")
    b.subscribe("my-channel")
    c.subscribe("cache-prices")
    now = time.time()
    store.write([snapshot("1001", now - 30, 60, connections_peak=5, ws_messages_in=17,
                          ws_messages_out=23, api_messages=4, webhooks_delivered=2,
                          webhooks_failed=1)])
    server = TestServer(api_app(hub, store))
    await server.start_server()
    try:
        args = parse("stats", "--url", str(server.make_url("")), "--app-id", APP.id,
                     "--key", APP.key, "--secret", APP.secret)
        code = await asyncio.to_thread(args.run, args)
    finally:
        await server.close()

    out = capsys.readouterr().out
    assert code == 0
    lines = out.splitlines()
    assert lines[1] == "Connections: 3   Channels: 2   Subscriptions: 3"
    assert lines[3].split() == ["Channel", "Type", "Subscribers"]
    assert [line.split() for line in lines[5:7]] == [
        ["my-channel", "public", "2"], ["cache-prices", "cache", "1"]]
    assert lines[8] == "Last 1 interval(s):"
    assert lines[11].split()[2:] == ["60", "5", "17", "23", "4", "2", "1"]


def test_stats_command_reports_an_unreachable_server(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    args = parse("stats", "--url", "http://127.0.0.1:9", "--timeout", "2")

    assert args.run(args) == 1
    assert capsys.readouterr().err.startswith("pusher-compat stats: cannot reach")


def test_prune_command_deletes_rows_older_than_the_given_days(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "stats.sqlite3"
    store = SqliteStore(path)
    now = time.time()
    store.write([snapshot("1001", now - days * 86400, 60) for days in (10, 3, 1)])
    store.close()
    args = parse("stats", "prune", "--path", str(path), "--older-than-days", "2")

    assert args.run(args) == 0

    store = SqliteStore(path)
    assert len(store.query("1001", 0, now)) == 1
    store.close()
    assert capsys.readouterr().out.startswith("pruned 2 row(s) older than 2 day(s)")


def test_prune_command_takes_path_and_retention_from_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteStore(tmp_path / "stats.sqlite3")
    now = time.time()
    store.write([snapshot("1001", now - days * 86400, 60) for days in (31, 29)])
    store.close()
    config = tmp_path / "pusher-compat.toml"
    config.write_text(f'[server]\nstats_path = "{tmp_path / "stats.sqlite3"}"\n'
                      '[[apps]]\nid = "1001"\nkey = "k"\nsecret = "s"\n')
    args = parse("stats", "prune", "--config", str(config))

    code = args.run(args)

    assert code == 0
    assert capsys.readouterr().out.startswith("pruned 1 row(s) older than 30 day(s)")


def test_prune_command_refuses_a_missing_file(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    args = parse("stats", "prune", "--path", str(tmp_path / "none.sqlite3"),
                 "--older-than-days", "1")

    assert args.run(args) == 1
    assert "no statistics file" in capsys.readouterr().err
    assert not (tmp_path / "none.sqlite3").exists()
