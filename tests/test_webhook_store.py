"""Webhooks survive a restart: pending deliveries kept in SQLite (``webhook_store``) are resumed
under their ids, each request names its delivery in ``X-Pusher-Compat-Delivery``, and a node
killed with 100 deliveries pending loses none of them. (The Redis store: tests/test_cluster.py.)"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from conftest import ServerProcess, webhook_config
from helpers import (
    DOWN,
    Receiver,
    WsClient,
    assert_each_delivery_arrived_intact,
    subscribe_one_delivery_each,
    until,
)

from pusher_compat.config import AppConfig, ServerConfig, WebhookEndpoint
from pusher_compat.signatures import webhook_signature
from pusher_compat.webhook_store import SqliteWebhookStore
from pusher_compat.webhooks import Webhooks

APP_ID = "1001"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
OCCUPIED = {"name": "channel_occupied", "channel": "my-channel"}
RETRY_SECONDS = 5.0


def app_with(url: str) -> AppConfig:
    return AppConfig(id=APP_ID, key=KEY, secret=SECRET, webhooks=(WebhookEndpoint(url),))


def stored(path: Path) -> dict[str, Any]:
    """The deliveries kept in a store file, by id (read as another process would)."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id, delivery FROM webhook_deliveries").fetchall()
    return {row[0]: json.loads(row[1]) for row in rows}


WebhooksFactory = Callable[..., Awaitable[Webhooks]]


@pytest.fixture
async def make_webhooks(tmp_path: Path) -> AsyncIterator[WebhooksFactory]:
    """Started :class:`Webhooks` keeping deliveries in ``tmp_path/webhooks.db``; closed after
    the test (each call is one run of a node on the same disk)."""
    started: list[Webhooks] = []

    async def make(app: AppConfig, clock: Callable[[], float] | None = None,
                   retry_seconds: float = RETRY_SECONDS) -> Webhooks:
        server = ServerConfig(webhook_batch_seconds=0.01, webhook_timeout_seconds=1.0,
                              webhook_retry_seconds=retry_seconds)
        extra = {"clock": clock} if clock else {}
        webhooks = Webhooks(server, retry_base_seconds=0.05, apps=(app,),
                            store=SqliteWebhookStore(str(tmp_path / "webhooks.db")), **extra)
        await webhooks.start()
        started.append(webhooks)
        return webhooks

    yield make
    for webhooks in started:
        await webhooks.close()


async def pending_in_a_closed_run(make_webhooks: WebhooksFactory, receiver: Receiver,
                                  db: Path, clock: Callable[[], float] | None = None) -> str:
    """One run that leaves one delivery pending in the store when it stops; its id."""
    receiver.failures = DOWN
    first = await make_webhooks(app_with(receiver.url()), clock)
    first.channel_event(app_with(receiver.url()), dict(OCCUPIED))
    await receiver.wait(1)
    await until(lambda: len(stored(db)) == 1)
    await first.close()
    receiver.failures = 0
    receiver.requests.clear()
    [kept] = stored(db)
    return kept


async def test_every_attempt_carries_the_delivery_id_of_the_log(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    receiver.failures = 1
    webhooks = await make_webhooks(app_with(receiver.url()))
    webhooks.channel_event(app_with(receiver.url()), dict(OCCUPIED))
    first, second = await receiver.wait(2)
    [entry] = webhooks.deliveries(APP_ID)
    assert first.delivery_id == second.delivery_id == entry["id"]


async def test_a_pending_delivery_is_stored_until_acknowledged(
    receiver: Receiver, make_webhooks: WebhooksFactory, tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    receiver.failures = DOWN
    webhooks = await make_webhooks(app_with(receiver.url()), clock=lambda: 1700000000.0)
    webhooks.channel_event(app_with(receiver.url()), dict(OCCUPIED))
    await receiver.wait(1)
    await until(lambda: len(stored(db)) == 1)
    [entry] = webhooks.deliveries(APP_ID)
    assert stored(db) == {entry["id"]: {
        "id": entry["id"], "app_id": APP_ID, "url": receiver.url(), "events": [OCCUPIED],
        "created_ms": 1700000000000, "expires_ms": 1700000000000 + 5000}}
    receiver.failures = 0
    await until(lambda: webhooks.deliveries(APP_ID)[0]["status"] == "delivered")
    await until(lambda: stored(db) == {})


async def test_a_delivery_failed_past_its_retry_window_leaves_the_store(
    receiver: Receiver, make_webhooks: WebhooksFactory, tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    receiver.failures = DOWN
    webhooks = await make_webhooks(app_with(receiver.url()), retry_seconds=0.3)
    webhooks.channel_event(app_with(receiver.url()), dict(OCCUPIED))
    await until(lambda: len(stored(db)) == 1)
    await until(lambda: webhooks.deliveries(APP_ID)[0]["status"] == "failed")
    await until(lambda: stored(db) == {})


async def test_a_stored_delivery_past_its_retry_window_is_not_resumed(
    receiver: Receiver, make_webhooks: WebhooksFactory, tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    receiver.failures = DOWN
    now = [1700000000.0]
    webhooks = await make_webhooks(app_with(receiver.url()), clock=lambda: now[0])
    webhooks.channel_event(app_with(receiver.url()), dict(OCCUPIED))
    await until(lambda: len(stored(db)) == 1)
    await webhooks.close()  # stopping is not failing: the delivery stays
    assert len(stored(db)) == 1
    now[0] += RETRY_SECONDS + 1
    later = await make_webhooks(app_with(receiver.url()), clock=lambda: now[0])
    assert later.deliveries(APP_ID) == []
    await until(lambda: stored(db) == {})


async def test_a_restarted_node_resumes_a_stored_delivery_under_its_id(
    receiver: Receiver, make_webhooks: WebhooksFactory, tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    kept = await pending_in_a_closed_run(make_webhooks, receiver, db)
    second = await make_webhooks(app_with(receiver.url()))
    [request] = await receiver.wait(1)
    assert request.delivery_id == kept
    assert request.events() == [OCCUPIED]
    assert request.headers["x-pusher-signature"] == webhook_signature(SECRET, request.body)
    await until(lambda: second.deliveries(APP_ID)[0]["status"] == "delivered")
    assert [e["id"] for e in second.deliveries(APP_ID)] == [kept]
    await until(lambda: stored(db) == {})


async def test_a_stored_delivery_to_an_endpoint_no_longer_configured_is_dropped(
    receiver: Receiver, make_webhooks: WebhooksFactory, tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    await pending_in_a_closed_run(make_webhooks, receiver, db)
    second = await make_webhooks(app_with(receiver.url("/elsewhere")))
    assert second.deliveries(APP_ID) == []
    await until(lambda: stored(db) == {})
    assert receiver.requests == []


# -- a node killed with deliveries pending ---------------------------------------------------


async def test_kill_9_with_100_pending_deliveries_loses_none(
    receiver: Receiver, server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    db = tmp_path / "webhooks.db"
    config = webhook_config(receiver.url(), '["channel_occupied"]',
                            server=f'webhook_batch_seconds = 0.001\nwebhook_store = "{db}"')
    receiver.failures = DOWN
    channels = [f"ch-{n}" for n in range(100)]
    node = server_factory(config)
    async with aiohttp.ClientSession() as session:
        ws = await WsClient.handshake(await session.ws_connect(node.ws_url()))
        await subscribe_one_delivery_each(ws, receiver, channels)
        await until(lambda: len(stored(db)) == 100, timeout=10)
    before = stored(db)
    node.process.kill()
    node.process.wait(10)

    restarted = len(receiver.requests)
    server_factory(config)
    await until(lambda: len(receiver.requests) > restarted, timeout=10)  # resumed, still down
    receiver.failures = 0
    await until(lambda: receiver.delivered() == before.keys(), timeout=30)
    assert_each_delivery_arrived_intact(receiver.requests, "app-secret", before)
    arrived = {e["channel"] for r in receiver.requests if r.status == 200 for e in r.events()}
    assert arrived == set(channels)
    await until(lambda: stored(db) == {}, timeout=10)
