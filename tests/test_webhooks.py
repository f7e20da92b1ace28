"""Webhooks (protocol.md §8): batching, the leave delay, retries, the delivery log, and the
SDK validators' verdict, checked against a real aiohttp receiver on a loopback port."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pusher
import pytest
from conftest import ServerProcess
from helpers import ListSink, Receiver, Request, until

from pusher_compat.config import AppConfig, ServerConfig, WebhookEndpoint
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub
from pusher_compat.signatures import channel_string, sign_auth, sign_request, webhook_signature
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

    async def make(clock: Callable[[], float] | None = None, **settings: Any) -> Webhooks:
        server = ServerConfig(**{**FAST, **settings})
        extra = {"clock": clock} if clock else {}
        webhooks = Webhooks(server, retry_base_seconds=0.05, **extra)
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
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    events = [OCCUPIED, {"name": "cache_miss", "channel": "cache-x"},
              {"name": "member_added", "channel": "presence-x", "user_id": "7"}]
    for event in events:
        webhooks.channel_event(app, dict(event))
    await receiver.wait(1)
    await asyncio.sleep(BATCH * 3)
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
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url(), channel_prefix="presence-"))
    webhooks.channel_event(app, dict(OCCUPIED))
    webhooks.channel_event(app, {"name": "channel_occupied", "channel": "presence-room"})
    await receiver.wait(1)
    await asyncio.sleep(BATCH * 3)
    assert receiver.events() == [[{"name": "channel_occupied", "channel": "presence-room"}]]


async def test_endpoint_wanting_none_of_a_batch_gets_no_request(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url(), event_types=("member_added",)))
    webhooks.channel_event(app, dict(OCCUPIED))
    await asyncio.sleep(BATCH * 5)
    assert receiver.requests == []
    assert webhooks.deliveries(APP_ID) == []


async def test_app_without_endpoints_records_nothing(make_webhooks: WebhooksFactory) -> None:
    webhooks = await make_webhooks()
    webhooks.channel_event(AppConfig(id=APP_ID, key=KEY, secret=SECRET), dict(OCCUPIED))
    await asyncio.sleep(BATCH * 3)
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
    webhooks = await make_webhooks()
    loop = asyncio.get_running_loop()
    started = loop.time()
    webhooks.channel_event(app_with(WebhookEndpoint(receiver.url())), dict(VACATED))
    await receiver.wait(1)
    assert loop.time() - started >= LEAVE_DELAY
    assert receiver.events() == [[VACATED]]


async def test_quick_return_cancels_both_the_vacated_and_the_occupied(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, dict(VACATED))
    await asyncio.sleep(LEAVE_DELAY / 3)
    webhooks.channel_event(app, dict(OCCUPIED))
    await asyncio.sleep(LEAVE_DELAY * 1.5)
    assert receiver.requests == []


async def test_quick_return_of_the_same_user_cancels_member_removed_and_added(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, {"name": "member_removed", "channel": "presence-x",
                                 "user_id": "1"})
    webhooks.channel_event(app, {"name": "member_added", "channel": "presence-x",
                                 "user_id": "1"})
    await asyncio.sleep(LEAVE_DELAY * 1.5)
    assert receiver.requests == []


async def test_another_user_joining_does_not_cancel_a_member_removed(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    removed = {"name": "member_removed", "channel": "presence-x", "user_id": "1"}
    added = {"name": "member_added", "channel": "presence-x", "user_id": "2"}
    webhooks.channel_event(app, dict(removed))
    webhooks.channel_event(app, dict(added))
    await receiver.wait(2)
    assert receiver.events() == [[added], [removed]]


async def test_return_cancels_the_leave_even_for_an_endpoint_not_taking_returns(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url(), event_types=("channel_vacated",)))
    webhooks.channel_event(app, dict(VACATED))
    webhooks.channel_event(app, dict(OCCUPIED))
    await asyncio.sleep(LEAVE_DELAY * 1.5)
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
    hub = Hub(listeners=[await make_webhooks()])
    app = app_with(WebhookEndpoint(receiver.url()))
    connection = connect(hub, app, "presence-room", "7")
    await receiver.wait(1)
    connection.closed()
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
    hub = Hub(listeners=[await make_webhooks()])
    app = app_with(WebhookEndpoint(receiver.url()))
    connect(hub, app, "presence-room", "7").closed()  # a page reload...
    connect(hub, app, "presence-room", "7")  # ...reconnects at once
    await asyncio.sleep(LEAVE_DELAY * 1.5)
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
        "events": [OCCUPIED], "created_ms": 1327078148132, "last_attempt_ms": 1327078148132,
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


async def test_close_sends_nothing_more(
    receiver: Receiver, make_webhooks: WebhooksFactory
) -> None:
    webhooks = await make_webhooks()
    app = app_with(WebhookEndpoint(receiver.url()))
    webhooks.channel_event(app, dict(VACATED))
    webhooks.channel_event(app, dict(OCCUPIED) | {"channel": "other"})
    await webhooks.close()
    webhooks.channel_event(app, dict(OCCUPIED))
    await asyncio.sleep(LEAVE_DELAY * 1.5)
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
    params = {"auth_key": server.key, "auth_timestamp": str(int(time.time())),
              "auth_version": "1.0"}
    params["auth_signature"] = sign_request(method, path, params, server.secret)
    return await session.request(method, server.url + path, params=params)


async def test_server_sends_configured_webhooks_and_lists_them_in_the_api(
    receiver: Receiver, server_factory: Callable[..., ServerProcess]
) -> None:
    receiver.failures = 1
    server = server_factory(f"""
        [server]
        webhook_batch_seconds = 0.02
        webhook_retry_seconds = 0.5

        [[apps]]
        id = "1001"
        key = "app-key"
        secret = "app-secret"

        [[apps.webhooks]]
        url = "{receiver.url()}"
        event_types = ["channel_occupied"]
    """)
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

        deadline = asyncio.get_running_loop().time() + 5
        while (entries := await log())[0]["status"] == "pending":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.05)
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
