"""Webhooks (protocol.md §8): batching, the leave delay, retries, the delivery log, and the
SDK validators' verdict, checked against a real aiohttp receiver on a loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
from conftest import ServerProcess, webhook_config
from helpers import (
    FakeClock,
    ListSink,
    ManualScheduler,
    Receiver,
    Request,
    WsClient,
    eventually,
    signed_query,
    until,
)

from pusher_compat.config import AppConfig, ServerConfig, WebhookEndpoint
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub
from pusher_compat.signatures import channel_string, sign_auth, webhook_signature
from pusher_compat.webhook_log import DeliveryTotals, NotReplayable
from pusher_compat.webhooks import Webhooks

ROOT = Path(__file__).resolve().parent.parent
# The Pusher docs' credentials (protocol.md §4.3, §8); the numeric id suits the Python SDK.
APP_ID = "1001"
KEY = "278d425bdf160c739803"
SECRET = "7ad3773142a6692b25b8"
# protocol.md §8: this exact body signs to this signature under SECRET.
VECTOR_TIME = 1327078148.132
VECTOR_BODY = (
    b'{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"my-channel"}]}'
)
VECTOR_SIGNATURE = "c19001ae3963ccb13bf618e5b16ba9848e7e74df0993aa0689168e341c6833cf"

BATCH = 0.02
LEAVE_DELAY = 0.3
FAST = {"webhook_batch_seconds": BATCH, "webhook_leave_delay_seconds": LEAVE_DELAY,
        "webhook_timeout_seconds": 1.0, "webhook_retry_seconds": 5.0}
SERVER = ServerConfig(activity_timeout=30)

OCCUPIED = {"name": "channel_occupied", "channel": "my-channel"}
VACATED = {"name": "channel_vacated", "channel": "my-channel"}


WebhooksFactory = Callable[..., Awaitable[Webhooks]]


@pytest.fixture
async def make_webhooks() -> AsyncIterator[WebhooksFactory]:
    """Started :class:`Webhooks` with fast timings (overridable); closed after the test."""
    started: list[Webhooks] = []

    async def make(clock: Callable[[], float] | None = None,
                   scheduler: ManualScheduler | None = None, **settings: Any) -> Webhooks:
        server = ServerConfig(**{**FAST, **settings})
        extra = {"clock": clock} if clock else {}
        webhooks = Webhooks(server, retry_base_seconds=0.05, scheduler=scheduler, **extra)
        await webhooks.start()
        started.append(webhooks)
        return webhooks

    yield make
    for webhooks in started:
        await webhooks.close()


def app_with(*endpoints: WebhookEndpoint) -> AppConfig:
    return AppConfig(id=APP_ID, key=KEY, secret=SECRET, webhooks=endpoints)


def statuses(webhooks: Webhooks) -> list[str]:
    return [entry["status"] for entry in webhooks.deliveries(APP_ID)]


# -- body and headers ----------------------------------------------------------------------


async def test_body_and_signature_are_the_docs_vector(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(clock=lambda: VECTOR_TIME)
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    [request] = await receiver.wait(1)
    assert request.body == VECTOR_BODY
    assert request.headers["x-pusher-signature"] == VECTOR_SIGNATURE


async def test_headers_are_exact_content_type_key_and_signature(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    [request] = await receiver.wait(1)
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-pusher-key"] == KEY
    assert request.headers["x-pusher-signature"] == webhook_signature(SECRET, request.body)


async def test_extra_headers_are_sent_and_cannot_replace_the_signature(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    headers = (("Authorization", "Bearer t0k"), ("X-Pusher-Signature", "forged"))
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url(), headers=headers)),
                           dict(OCCUPIED))
    [request] = await receiver.wait(1)
    assert request.headers["authorization"] == "Bearer t0k"
    assert request.headers["x-pusher-signature"] == webhook_signature(SECRET, request.body)


# -- batching and filters ------------------------------------------------------------------


async def test_events_within_the_batch_window_share_one_request_in_order(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url()))
    events = [OCCUPIED, {"name": "cache_miss", "channel": "cache-x"},
              {"name": "member_added", "channel": "presence-x", "user_id": "7"}]
    for event in events:
        webhooks.channel_event(app, dict(event))
    await timers.advance(BATCH)
    await receiver.wait(1)
    await timers.advance(BATCH * 3)
    assert len(webhooks.deliveries(APP_ID)) == 1  # no second batch was made
    assert receiver.events() == [events]


async def test_subscription_count_keeps_only_the_latest_per_channel_in_a_batch(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    for channel, count in (("a", 1), ("b", 1), ("a", 2), ("a", 3)):
        webhooks.channel_event(
            app, {"name": "subscription_count", "channel": channel, "subscription_count": count}
        )
    await receiver.wait(1)
    assert receiver.events() == [[
        {"name": "subscription_count", "channel": "b", "subscription_count": 1},
        {"name": "subscription_count", "channel": "a", "subscription_count": 3},
    ]]


async def test_event_types_filter_sends_only_the_listed_events(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url("/all")),
                   WebhookEndpoint(receiver.url("/misses"), event_types=("cache_miss",)))
    miss = {"name": "cache_miss", "channel": "cache-x"}
    webhooks.channel_event(app, dict(OCCUPIED))
    webhooks.channel_event(app, dict(miss))
    await receiver.wait(2)
    sent = {request.path: request.events() for request in receiver.requests}
    assert sent == {"/all": [OCCUPIED, miss], "/misses": [miss]}


async def test_channel_prefix_filter_sends_only_matching_channels(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url(), channel_prefix="presence-"))
    webhooks.channel_event(app, dict(OCCUPIED))
    webhooks.channel_event(app, {"name": "channel_occupied", "channel": "presence-room"})
    await timers.advance(BATCH)
    await receiver.wait(1)
    await timers.advance(BATCH * 3)
    assert len(webhooks.deliveries(APP_ID)) == 1
    assert receiver.events() == [[{"name": "channel_occupied", "channel": "presence-room"}]]


async def test_endpoint_wanting_none_of_a_batch_gets_no_request(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url(), event_types=("member_added",)))
    webhooks.channel_event(app, dict(OCCUPIED))
    await timers.advance(BATCH * 5)
    assert receiver.requests == []
    assert webhooks.deliveries(APP_ID) == []


async def test_app_without_endpoints_records_nothing(make_webhooks: WebhooksFactory) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    webhooks.channel_event(AppConfig(id=APP_ID, key=KEY, secret=SECRET), dict(OCCUPIED))
    await timers.advance(BATCH * 3)
    assert webhooks.deliveries(APP_ID) == []


async def test_channel_event_never_raises_on_a_malformed_event(
    receiver: Receiver, make_webhooks: WebhooksFactory, caplog: pytest.LogCaptureFixture
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), {"channel": "x"})
    assert "webhook event None of app 1001 dropped" in caplog.text


# -- the leave delay -----------------------------------------------------------------------


async def test_channel_vacated_waits_the_leave_delay(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(VACATED))
    await timers.advance(LEAVE_DELAY + BATCH - 0.001)
    assert webhooks.deliveries(APP_ID) == []  # still held, or in its batch window
    await timers.advance(0.001)
    await receiver.wait(1)
    assert receiver.events() == [[VACATED]]


async def test_quick_return_cancels_both_the_vacated_and_the_occupied(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, dict(VACATED))
    await timers.advance(LEAVE_DELAY / 3)
    webhooks.channel_event(app, dict(OCCUPIED))
    await timers.advance(LEAVE_DELAY * 1.5)
    assert webhooks.deliveries(APP_ID) == []
    assert receiver.requests == []


async def test_quick_return_of_the_same_user_cancels_member_removed_and_added(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, {"name": "member_removed", "channel": "presence-x",
                                 "user_id": "1"})
    webhooks.channel_event(app, {"name": "member_added", "channel": "presence-x",
                                 "user_id": "1"})
    await timers.advance(LEAVE_DELAY * 1.5)
    assert webhooks.deliveries(APP_ID) == []
    assert receiver.requests == []


async def test_another_user_joining_does_not_cancel_a_member_removed(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url()))
    removed = {"name": "member_removed", "channel": "presence-x", "user_id": "1"}
    added = {"name": "member_added", "channel": "presence-x", "user_id": "2"}
    webhooks.channel_event(app, dict(removed))
    webhooks.channel_event(app, dict(added))
    await timers.advance(BATCH)
    await receiver.wait(1)  # the join's batch first, then the leave after its delay
    await timers.advance(LEAVE_DELAY)
    await receiver.wait(2)
    assert receiver.events() == [[added], [removed]]


async def test_return_cancels_the_leave_even_for_an_endpoint_not_taking_returns(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url(), event_types=("channel_vacated",)))
    webhooks.channel_event(app, dict(VACATED))
    webhooks.channel_event(app, dict(OCCUPIED))
    await timers.advance(LEAVE_DELAY * 1.5)
    assert webhooks.deliveries(APP_ID) == []
    assert receiver.requests == []


# -- end to end through the hub ------------------------------------------------------------


def connect(hub: Hub, app: AppConfig, channel: str, user_id: str) -> Connection:
    """Open a connection of ``app`` on ``hub`` and join presence ``channel`` as ``user_id``."""
    connection = Connection(app, SERVER, hub, ListSink())
    connection.open()
    channel_data = json.dumps({"user_id": user_id})
    auth = sign_auth(KEY, SECRET, channel_string(connection.socket_id, channel, channel_data))
    connection.receive(json.dumps({"event": "pusher:subscribe", "data": {
        "channel": channel, "auth": auth, "channel_data": channel_data}}))
    assert channel in connection.channels
    return connection


async def test_presence_join_then_leave_sends_added_then_removed_and_vacated(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    hub = Hub(listeners=[await make_webhooks(scheduler=timers)])
    app = app_with(WebhookEndpoint(receiver.url()))
    connection = connect(hub, app, "presence-room", "7")
    await timers.advance(BATCH)
    await receiver.wait(1)
    connection.closed()
    await timers.advance(LEAVE_DELAY + BATCH)
    await receiver.wait(2)
    assert receiver.events() == [
        [{"name": "channel_occupied", "channel": "presence-room"},
         {"name": "member_added", "channel": "presence-room", "user_id": "7"}],
        [{"name": "member_removed", "channel": "presence-room", "user_id": "7"},
         {"name": "channel_vacated", "channel": "presence-room"}],
    ]


async def test_presence_leave_and_rejoin_within_the_delay_sends_nothing_for_the_flap(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    hub = Hub(listeners=[webhooks])
    app = app_with(WebhookEndpoint(receiver.url()))
    connect(hub, app, "presence-room", "7").closed()  # a page reload...
    connect(hub, app, "presence-room", "7")  # ...reconnects at once
    await timers.advance(LEAVE_DELAY * 1.5)
    await receiver.wait(1)
    assert len(webhooks.deliveries(APP_ID)) == 1
    assert receiver.events() == [
        [{"name": "channel_occupied", "channel": "presence-room"},
         {"name": "member_added", "channel": "presence-room", "user_id": "7"}],
    ]


async def test_client_event_on_presence_carries_sender_socket_and_user(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    hub = Hub(listeners=[await make_webhooks()])
    app = app_with(WebhookEndpoint(receiver.url(), event_types=("client_event",)))
    sender = connect(hub, app, "presence-room", "7")
    sender.receive(json.dumps(
        {"event": "client-typing", "channel": "presence-room", "data": {"a": 1}}
    ))
    await receiver.wait(1)
    assert receiver.events() == [[{
        "name": "client_event", "channel": "presence-room", "event": "client-typing",
        "data": '{"a":1}', "socket_id": sender.socket_id, "user_id": "7",
    }]]


# -- retries and the delivery log ----------------------------------------------------------


async def test_totals_count_every_settled_delivery_also_those_gone_from_the_log(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers, webhook_log_size=1,
                                   webhook_retry_seconds=0.0)
    app = app_with(WebhookEndpoint(receiver.url()))
    receiver.failures = 1
    for n in range(3):
        webhooks.channel_event(app, {"name": "channel_occupied", "channel": f"c{n}"})
        await timers.advance(BATCH)
        await receiver.wait(n + 1)
        await until(lambda: webhooks.totals(APP_ID).pending == 0)
    assert webhooks.totals(APP_ID) == DeliveryTotals(delivered=2, failed=1, pending=0,
                                                     dropped={})
    assert statuses(webhooks) == ["failed", "delivered"]  # the log kept one of each


async def test_two_500s_are_retried_then_delivered_on_the_third_attempt(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(clock=lambda: VECTOR_TIME)
    receiver.failures = 2
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await receiver.wait(3)
    await until(lambda: statuses(webhooks) == ["delivered"])
    [entry] = webhooks.deliveries(APP_ID)
    assert entry == {
        "id": entry["id"], "url": receiver.url(), "status": "delivered", "attempts": 3,
        "events": [OCCUPIED], "truncated": False, "created_ms": 1327078148132,
        "last_attempt_ms": 1327078148132,
        "last_error": None, "response_status": 200,
    }
    assert [request.body for request in receiver.requests] == [VECTOR_BODY] * 3


async def test_each_retry_is_signed_afresh_with_a_new_time_ms(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    ticks = iter(range(1000, 2000))
    webhooks = await make_webhooks(clock=lambda: float(next(ticks)))
    receiver.failures = 1
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    first, second = await receiver.wait(2)
    assert [first.json()["time_ms"], second.json()["time_ms"]] == [1001000, 1002000]
    for request in (first, second):
        assert request.headers["x-pusher-signature"] == webhook_signature(SECRET, request.body)


async def test_failed_attempt_is_logged_as_a_warning_with_url_and_reason(
    receiver: Receiver, make_webhooks: WebhooksFactory, caplog: pytest.LogCaptureFixture
) -> None:
    webhooks = await make_webhooks()
    receiver.failures = 1
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await receiver.wait(2)
    [record] = [r for r in caplog.records if r.name == "pusher_compat.webhooks"]
    assert record.levelno == logging.WARNING
    assert record.getMessage() == f"webhook to {receiver.url()} failed (attempt 1): HTTP 500"


async def test_timeout_is_a_failed_attempt_and_retried(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_timeout_seconds=0.1)
    receiver.stall_seconds = 0.5
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await until(lambda: statuses(webhooks) == ["delivered"])
    [entry] = webhooks.deliveries(APP_ID)
    assert (entry["attempts"], entry["last_error"]) == (2, None)
    assert len(receiver.requests) == 2


async def test_failing_past_the_retry_window_is_failed_and_kept(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_retry_seconds=0.3)
    receiver.failures = 1000
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await until(lambda: statuses(webhooks) == ["failed"])
    [entry] = webhooks.deliveries(APP_ID, "failed")
    assert entry["attempts"] == len(receiver.requests) >= 3
    assert (entry["last_error"], entry["response_status"]) == ("HTTP 500", 500)
    assert webhooks.deliveries(APP_ID, "delivered") == []


async def test_unreachable_endpoint_fails_with_the_connection_error(
    make_webhooks: WebhooksFactory, unused_tcp_port: int
) -> None:
    webhooks = await make_webhooks(webhook_retry_seconds=0.0)
    url = f"http://127.0.0.1:{unused_tcp_port}/hook"
    webhooks.channel_event(app_with(WebhookEndpoint(url)), dict(OCCUPIED))
    await until(lambda: statuses(webhooks) == ["failed"])
    [entry] = webhooks.deliveries(APP_ID)
    assert entry["attempts"] == 1
    assert entry["response_status"] is None
    assert entry["last_error"].startswith("ClientConnectorError: ")


async def test_replay_of_a_failed_delivery_delivers_it_as_a_new_delivery(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_retry_seconds=0.0)
    receiver.failures = 1
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await until(lambda: statuses(webhooks) == ["failed"])
    [failed] = webhooks.deliveries(APP_ID)
    replayed = await webhooks.replay(APP_ID, failed["id"])
    assert replayed["id"] != failed["id"]
    assert (replayed["status"], replayed["attempts"], replayed["events"]) == (
        "delivered", 1, [OCCUPIED])
    assert [e["id"] for e in webhooks.deliveries(APP_ID)] == [failed["id"], replayed["id"]]
    assert statuses(webhooks) == ["failed", "delivered"]
    second = receiver.requests[1]
    assert second.events() == [OCCUPIED]
    assert second.headers["x-pusher-signature"] == webhook_signature(SECRET, second.body)


async def test_replay_of_an_unknown_delivery_raises_key_error(
    make_webhooks: WebhooksFactory,
) -> None:
    webhooks = await make_webhooks()
    with pytest.raises(KeyError):
        await webhooks.replay(APP_ID, "nope")


async def test_past_max_pending_the_oldest_pending_delivery_is_dropped_as_failed(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_max_pending=2, webhook_retry_seconds=60.0)
    receiver.failures = 1000
    app = app_with(*(WebhookEndpoint(receiver.url(f"/{n}")) for n in range(3)))
    webhooks.channel_event(app, dict(OCCUPIED))
    await receiver.wait(2)
    entries = webhooks.deliveries(APP_ID)
    assert [(e["url"], e["status"]) for e in entries] == [
        (receiver.url("/0"), "failed"), (receiver.url("/1"), "pending"),
        (receiver.url("/2"), "pending"),
    ]
    assert entries[0]["last_error"] == "dropped: too many pending deliveries"
    assert webhooks.dropped(APP_ID) == {"pending_limit": 1}


async def test_failed_deliveries_outlive_a_flood_of_successes_in_the_log(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_log_size=2, webhook_retry_seconds=0.0)
    app = app_with(WebhookEndpoint(receiver.url()))
    receiver.failures = 1
    for n in range(4):
        webhooks.channel_event(app, {"name": "cache_miss", "channel": f"cache-{n}"})
        await receiver.wait(n + 1)
        await until(lambda: "pending" not in statuses(webhooks))
    channels = [(e["events"][0]["channel"], e["status"]) for e in webhooks.deliveries(APP_ID)]
    assert channels == [("cache-0", "failed"), ("cache-2", "delivered"),
                        ("cache-3", "delivered")]


# -- byte budgets ----------------------------------------------------------------------------

OCCUPIED_BYTES = 52
"""``[{"name":"channel_occupied","channel":"my-channel"}]``: the bytes a delivery of OCCUPIED
holds and the budgets count."""
PENDING_BYTES_ERROR = "dropped: pending deliveries over webhook_max_pending_bytes"


def client_event(data: str, channel: str = "private-x") -> dict[str, Any]:
    return {"name": "client_event", "channel": channel, "event": "client-m", "data": data,
            "socket_id": "1.1"}


@pytest.mark.parametrize(("budget", "expected"), [
    (3 * OCCUPIED_BYTES, ["pending", "pending", "pending"]),
    (3 * OCCUPIED_BYTES - 1, ["failed", "pending", "pending"]),
], ids=["exactly-the-budget", "one-byte-over"])
async def test_pending_deliveries_over_their_byte_budget_fail_oldest_first(
    receiver: Receiver, make_webhooks: WebhooksFactory, budget: int, expected: list[str]
) -> None:
    webhooks = await make_webhooks(webhook_max_pending_bytes=budget, webhook_retry_seconds=60.0)
    receiver.failures = 1000
    app = app_with(*(WebhookEndpoint(receiver.url(f"/{n}")) for n in range(3)))
    webhooks.channel_event(app, dict(OCCUPIED))
    await receiver.wait(expected.count("pending"))
    assert statuses(webhooks) == expected
    if "failed" in expected:
        [dropped] = webhooks.deliveries(APP_ID, "failed")
        assert (dropped["url"], dropped["attempts"], dropped["last_error"]) == (
            receiver.url("/0"), 0, PENDING_BYTES_ERROR)
        assert webhooks.dropped(APP_ID) == {"pending_bytes": 1}
    else:
        assert webhooks.dropped(APP_ID) == {}


async def test_client_event_deliveries_are_dropped_before_older_state_events(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    chat = client_event("hi")
    other = dict(OCCUPIED) | {"channel": "other"}
    sizes = [OCCUPIED_BYTES, 96, 47]  # the three deliveries' encoded events
    webhooks = await make_webhooks(webhook_max_pending_bytes=sum(sizes) - 1,
                                   webhook_retry_seconds=60.0)
    receiver.failures = 1000
    app = app_with(WebhookEndpoint(receiver.url("/state"), event_types=("channel_occupied",)),
                   WebhookEndpoint(receiver.url("/chat"), event_types=("client_event",)))
    for count, event in enumerate((OCCUPIED, chat, other), start=1):
        webhooks.channel_event(app, dict(event))
        await until(lambda count=count: len(webhooks.deliveries(APP_ID)) == count)
    entries = webhooks.deliveries(APP_ID)
    assert [(e["events"], e["status"]) for e in entries] == [
        ([OCCUPIED], "pending"), ([chat], "failed"), ([other], "pending")]
    assert entries[1]["last_error"] == PENDING_BYTES_ERROR


async def test_a_delivery_alone_over_the_pending_budget_fails_unsent(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks(webhook_max_pending_bytes=OCCUPIED_BYTES - 1)
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    await until(lambda: statuses(webhooks) == ["failed"])
    [entry] = webhooks.deliveries(APP_ID)
    assert (entry["attempts"], entry["last_error"]) == (0, PENDING_BYTES_ERROR)
    assert webhooks.dropped(APP_ID) == {"pending_bytes": 1}


async def test_the_log_keeps_event_data_cut_to_256_characters_and_says_so(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), client_event("x" * 300))
    [request] = await receiver.wait(1)
    await until(lambda: statuses(webhooks) == ["delivered"])
    assert request.events() == [client_event("x" * 300)]
    [entry] = webhooks.deliveries(APP_ID)
    assert (entry["events"], entry["truncated"]) == ([client_event("x" * 256)], True)


async def test_replay_of_a_truncated_delivery_raises_not_replayable(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), client_event("x" * 300))
    await until(lambda: statuses(webhooks) == ["delivered"])
    [entry] = webhooks.deliveries(APP_ID)
    with pytest.raises(NotReplayable) as raised:
        await webhooks.replay(APP_ID, entry["id"])
    assert str(raised.value) == (
        f"Webhook delivery {entry['id']!r} was logged with its event data truncated to 256 "
        "characters and cannot be replayed")
    assert len(receiver.requests) == 1


async def test_log_over_its_byte_budget_sheds_delivered_entries_before_older_failures(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    misses = [{"name": "cache_miss", "channel": f"cache-{n}"} for n in range(3)]
    size = 43  # [{"name":"cache_miss","channel":"cache-0"}], and the same for the others
    webhooks = await make_webhooks(webhook_log_max_bytes=3 * size - 1,
                                   webhook_retry_seconds=0.0)
    app = app_with(WebhookEndpoint(receiver.url()))
    receiver.failures = 1
    for count, miss in enumerate(misses, start=1):
        webhooks.channel_event(app, dict(miss))
        await receiver.wait(count)
        await until(lambda: "pending" not in statuses(webhooks))
    channels = [(e["events"][0]["channel"], e["status"]) for e in webhooks.deliveries(APP_ID)]
    assert channels == [("cache-0", "failed"), ("cache-2", "delivered")]
    assert webhooks.dropped(APP_ID) == {"log_bytes": 1}


async def test_drops_are_logged_at_once_then_at_most_every_ten_seconds(
    receiver: Receiver, make_webhooks: WebhooksFactory, caplog: pytest.LogCaptureFixture
) -> None:
    clock = FakeClock()
    webhooks = await make_webhooks(clock=clock, webhook_max_pending_bytes=1)
    app = app_with(WebhookEndpoint(receiver.url()))
    for count, seconds in enumerate((0.0, 0.0, 9.9, 0.1), start=1):
        clock.advance(seconds)
        webhooks.channel_event(app, dict(OCCUPIED))
        await until(lambda count=count: webhooks.dropped(APP_ID) == {"pending_bytes": count})
    limits = ("limits: webhook_max_pending 10000, webhook_max_pending_bytes 1, "
              "webhook_log_max_bytes 8388608")
    assert [r.getMessage() for r in caplog.records if r.name == "pusher_compat.webhooks"] == [
        f"webhook deliveries dropped since the last report: {count}; latest: app 1001, "
        f"52 bytes of events to {receiver.url()} (pending_bytes; {limits})"
        for count in (1, 3)
    ]


async def test_close_sends_nothing_more(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    timers = ManualScheduler()
    webhooks = await make_webhooks(scheduler=timers)
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, dict(VACATED))
    webhooks.channel_event(app, dict(OCCUPIED) | {"channel": "other"})
    await webhooks.close()
    webhooks.channel_event(app, dict(OCCUPIED))
    await timers.advance(LEAVE_DELAY * 1.5)
    assert timers.pending == 0  # close cancelled the batch and the held leave
    assert receiver.requests == []


# -- the SDKs' validators ------------------------------------------------------------------


async def test_python_sdk_validate_webhook_returns_the_parsed_body(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    [request] = await receiver.wait(1)
    client = pusher.Pusher(app_id=APP_ID, key=KEY, secret=SECRET)
    body = client.validate_webhook(
        request.headers["x-pusher-key"], request.headers["x-pusher-signature"], request.body
    )
    assert body == request.json()
    assert body["events"] == [OCCUPIED]


def node_validate(node: str, tmp_path: Path, request: Request, body: str | None = None
                  ) -> dict[str, Any]:
    """Run tests/node/webhook_validate.mjs on a captured request (``body`` overrides it)."""
    capture = tmp_path / "webhook.json"
    text = request.body.decode() if body is None else body
    capture.write_text(json.dumps({"headers": request.headers, "body": text}))
    env = {**os.environ, "PUSHER_APP_ID": APP_ID, "PUSHER_APP_KEY": KEY,
           "PUSHER_APP_SECRET": SECRET}
    result = subprocess.run(
        [node, str(ROOT / "tests" / "node" / "webhook_validate.mjs"), str(capture)],
        capture_output=True, text=True, timeout=30, env=env, cwd=ROOT, check=True,
    )
    return json.loads(result.stdout.splitlines()[-1])


async def test_node_sdk_webhook_is_valid_accepts_our_webhook(
    receiver: Receiver, make_webhooks: WebhooksFactory, node: str, tmp_path: Path
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    [request] = await receiver.wait(1)
    assert node_validate(node, tmp_path, request) == {"valid": True, "events": [OCCUPIED]}


async def test_node_sdk_webhook_is_valid_refuses_a_tampered_body(
    receiver: Receiver, make_webhooks: WebhooksFactory, node: str, tmp_path: Path
) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(OCCUPIED))
    [request] = await receiver.wait(1)
    tampered = request.body.decode().replace("my-channel", "my-channe1")
    assert node_validate(node, tmp_path, request, tampered)["valid"] is False


# -- through the server: configuration, the API's delivery log and replay --------------------


async def signed_request(session: aiohttp.ClientSession, server: ServerProcess, method: str,
                         path: str) -> aiohttp.ClientResponse:
    params = signed_query(method, path, server.key, server.secret)
    return await session.request(method, server.url + path, params=params)


async def test_server_sends_configured_webhooks_and_lists_them_in_the_api(
    receiver: Receiver, server_factory: Callable[..., ServerProcess]
) -> None:
    receiver.failures = 1
    server = server_factory(webhook_config(
        receiver.url(), '["channel_occupied"]',
        server="webhook_batch_seconds = 0.02\nwebhook_retry_seconds = 0.5"))
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.ws_url())
        await ws.receive_str()
        await ws.send_str('{"event":"pusher:subscribe","data":{"channel":"news"}}')
        await ws.receive_str()
        await until(lambda: len(receiver.requests) == 1)
        assert receiver.requests[0].events() == [{"name": "channel_occupied", "channel": "news"}]

        async def log() -> list[dict[str, Any]]:
            response = await signed_request(session, server, "GET",
                                            "/apps/1001/webhooks/deliveries")
            assert response.status == 200
            return (await response.json())["deliveries"]

        entries = await eventually(log, lambda entries: entries[0]["status"] != "pending")
        assert [(e["status"], e["response_status"]) for e in entries] == [("failed", 500)]

        path = f"/apps/1001/webhooks/deliveries/{entries[0]['id']}/replay"
        replayed = await signed_request(session, server, "POST", path)
        assert replayed.status == 200
        assert (await replayed.json())["delivery"]["status"] == "delivered"
        assert [r.events() for r in receiver.requests[1:]] == [
            [{"name": "channel_occupied", "channel": "news"}]
        ]
        missing = await signed_request(session, server, "POST",
                                       "/apps/1001/webhooks/deliveries/nope/replay")
        assert (missing.status, await missing.json()) == (
            404, {"error": "No webhook delivery 'nope'", "code": 404}
        )


async def test_api_lists_a_truncated_delivery_and_refuses_to_replay_it_with_409(
    receiver: Receiver, server_factory: Callable[..., ServerProcess]
) -> None:
    server = server_factory(webhook_config(
        receiver.url(), '["client_event"]', server="webhook_batch_seconds = 0.02"))
    async with aiohttp.ClientSession() as session:
        ws = await private_socket(session, server, "private-chat")
        await ws.send_str(json.dumps({"event": "client-m", "channel": "private-chat",
                                      "data": "x" * 300}))
        await receiver.wait(1)

        async def delivered() -> list[dict[str, Any]]:
            response = await signed_request(session, server, "GET",
                                            "/apps/1001/webhooks/deliveries")
            entries = (await response.json())["deliveries"]
            return [e for e in entries if e["status"] == "delivered"]

        [entry] = await eventually(delivered, bool)
        assert (entry["truncated"], entry["events"][0]["data"]) == (True, "x" * 256)
        replay = await signed_request(
            session, server, "POST", f"/apps/1001/webhooks/deliveries/{entry['id']}/replay")
        assert (replay.status, await replay.json()) == (409, {
            "error": f"Webhook delivery {entry['id']!r} was logged with its event data "
                     "truncated to 256 characters and cannot be replayed",
            "code": 409})
    assert len(receiver.requests) == 1


# -- a flood of client events to an endpoint that never answers -------------------------------


@pytest.fixture
async def silent_url() -> AsyncIterator[str]:
    """A loopback endpoint that reads every request and never answers: each webhook attempt
    to it waits out ``webhook_timeout_seconds``, so deliveries pile up pending."""
    writers: set[asyncio.StreamWriter] = set()

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.add(writer)
        try:
            while await reader.read(65536):  # until the server gives up on the request
                pass
        finally:
            writers.discard(writer)
            writer.close()

    listener = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}/hook"
    listener.close()
    for writer in list(writers):
        writer.transport.abort()  # the readers see the end of their stream and return
    await listener.wait_closed()


FLOOD_SOCKETS = 20
FLOOD_RATE = 25
"""Client events per second and socket (the app allows more, so none is refused)."""
FLOOD_SECONDS = 4.0
"""With the rate, 20 MB of client events: the volume of issue #12.3's flood scaled down."""
FLOOD_DATA = "x" * 10_000
PENDING_BUDGET = 4 * 1024 * 1024
LOG_BUDGET = 1024 * 1024
FLOOD_MARGIN_KIB = 8 * 1024
"""RSS growth allowed beyond the budgets: what the same flood costs when every delivery is
dropped at once (3.4 MiB measured: the sockets' buffers, parsed client events, aiohttp's
connections to the endpoint) and the allocator's slack."""


async def private_socket(session: aiohttp.ClientSession, server: ServerProcess,
                         channel: str) -> aiohttp.ClientWebSocketResponse:
    """A socket of the server's app subscribed to the private ``channel``, signed as an auth
    endpoint signs it."""
    ws = await session.ws_connect(server.ws_url())
    client = await WsClient.handshake(ws)
    auth = sign_auth(server.key, server.secret, channel_string(client.socket_id, channel))
    await client.send("pusher:subscribe", {"channel": channel, "auth": auth})
    assert (await client.frame())["event"] == "pusher_internal:subscription_succeeded"
    return ws


async def flood_socket(session: aiohttp.ClientSession, server: ServerProcess, n: int,
                       until_time: float) -> int:
    """Subscribe one socket to its own private channel and send FLOOD_RATE client events of
    10 KB a second until ``until_time`` (loop time); return how many were sent."""
    channel = f"private-flood-{n}"
    ws = await private_socket(session, server, channel)
    loop = asyncio.get_running_loop()
    sent, started = 0, loop.time()
    while (now := loop.time()) < until_time:
        await ws.send_str(json.dumps({"event": "client-flood", "channel": channel,
                                      "data": FLOOD_DATA}))
        sent += 1
        await asyncio.sleep(max(0.0, started + sent / FLOOD_RATE - now))
    await ws.close()
    return sent


def up_seconds(server: ServerProcess) -> float:
    """Time one ``GET /up`` from a thread of its own, so that the flood's senders on the
    test's event loop do not count in the server's answer time."""
    started = time.monotonic()
    with urllib.request.urlopen(server.url + "/up", timeout=5) as response:
        assert response.status == 200
    return time.monotonic() - started


async def test_client_event_flood_to_a_silent_endpoint_keeps_memory_within_the_budgets(
    silent_url: str, server_factory: Callable[..., ServerProcess]
) -> None:
    """Issue #12.3 scaled down (20 sockets sending 20 MB, not 40 for 30 s). Without byte
    budgets the server grew by 41 MiB under this volume (sent over 10 s); with these budgets
    (5 MiB) it grows by 7 to 10 MiB."""
    server = server_factory(webhook_config(
        silent_url, '["client_event"]',
        server=f"webhook_max_pending_bytes = {PENDING_BUDGET}\n"
               f"webhook_log_max_bytes = {LOG_BUDGET}",
        app=f"max_client_events_per_second = {FLOOD_RATE * 2}"))
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        await asyncio.to_thread(up_seconds, server)
        before = server.rss_kib()
        end = loop.time() + FLOOD_SECONDS
        flood = asyncio.gather(*(flood_socket(session, server, n, end)
                                 for n in range(FLOOD_SOCKETS)))
        peak, slowest = before, 0.0
        while not flood.done():
            assert loop.time() < end + 10, "the flood did not end"
            slowest = max(slowest, await asyncio.to_thread(up_seconds, server))
            peak = max(peak, server.rss_kib())
            await asyncio.sleep(0.05)  # pacing the probes, not waiting for an outcome
        sent = sum(await flood)
        async with session.get(server.url + "/metrics") as response:
            metrics = await response.text()
    growth = peak - before
    print(f"flood: {sent} client events of 10 KB, RSS {before} -> {peak} KiB "
          f"(+{growth} KiB), slowest /up {slowest * 1000:.1f} ms")
    assert sent >= FLOOD_SOCKETS * FLOOD_RATE * FLOOD_SECONDS * 0.9
    assert 'webhook_deliveries_dropped_total{app="1001",reason="pending_bytes"}' in metrics
    assert growth < (PENDING_BUDGET + LOG_BUDGET) // 1024 + FLOOD_MARGIN_KIB
    assert slowest < 0.5  # never held for long (a bound, not a speed figure)

