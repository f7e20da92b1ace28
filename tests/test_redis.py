"""The Redis adapter in this process, on a redis-server of the test's own: what it puts on the
bus, observed with a plain Redis client. The other nodes are played by hand (a lease in
``{prefix}:nodes``, a subscription to the bus)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from conftest import RedisServer
from helpers import FakeClock, ListSink

from pusher_compat import wire
from pusher_compat.adapters.redis import RedisAdapter
from pusher_compat.config import AppConfig, ServerConfig
from pusher_compat.connection import Connection
from pusher_compat.hub import Hub

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
PREFIX = "test"
BUS = f"{PREFIX}:{{1001}}:bus"
NODES = f"{PREFIX}:nodes"


async def until(predicate: Callable[[], Any], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


@pytest.fixture
async def adapter(redis_server: RedisServer) -> AsyncIterator[RedisAdapter]:
    """An adapter bound to a hub, with a short lease: it notices an outage fast. Started by
    the test; closed after it."""
    adapter = RedisAdapter((APP,), redis_server.url, PREFIX, lease_seconds=1)
    Hub(adapter=adapter)
    yield adapter
    await adapter.close()


async def renew_lease(redis: aioredis.Redis, node: str) -> None:
    """Play a node renewing its lease, as lua.HEARTBEAT does: expiry = Redis time + lease."""
    seconds, micros = await redis.time()
    await redis.zadd(NODES, {node: seconds * 1000 + micros // 1000 + 60_000})


async def test_the_outbox_waits_for_the_nodes_known_before_the_outage_to_renew_their_lease(
        redis_server: RedisServer, adapter: RedisAdapter) -> None:
    async with aioredis.Redis.from_url(redis_server.url) as redis:
        await renew_lease(redis, "peer")
    await adapter.start()
    assert adapter.ready
    redis_server.stop()
    await until(lambda: not adapter.ready, "the adapter to notice the outage")
    frame = wire.event_frame("shipped", {"n": 0}, "orders")
    adapter.publish(APP.id, "orders", frame, None)
    redis_server.start()  # empty: "peer" must renew its lease after subscribing again
    await until(lambda: adapter.ready, "the adapter back in the cluster")
    async with aioredis.Redis.from_url(redis_server.url) as redis, redis.pubsub() as bus:
        await bus.subscribe(BUS)
        assert (await bus.get_message(timeout=5))["type"] == "subscribe"
        await renew_lease(redis, "peer")
        message = await bus.get_message(ignore_subscribe_messages=True, timeout=5)
    assert message is not None, "the outbox was sent before the peer was back"
    assert message["data"] == b"\0".join([b"e", f"{adapter.node}#1".encode(), b"orders", b"",
                                          wire.unframe(frame)])


async def test_a_bus_message_repeated_by_its_origin_reaches_the_nodes_sockets_once(
        redis_server: RedisServer, adapter: RedisAdapter) -> None:
    await adapter.start()
    sink = ListSink()
    connection = Connection(APP, ServerConfig(), adapter.hub, sink, clock=FakeClock())
    connection.open()
    connection.receive('{"event":"pusher:subscribe","data":{"channel":"orders"}}')
    await until(lambda: len(sink.frames) == 2, "subscription_succeeded")
    sink.frames.clear()
    first = wire.unframe(wire.event_frame("shipped", {"n": 1}, "orders"))
    second = wire.unframe(wire.event_frame("shipped", {"n": 2}, "orders"))
    last = wire.unframe(wire.event_frame("shipped", {"n": 3}, "orders"))
    async with aioredis.Redis.from_url(redis_server.url) as redis:
        for seq, payload in ((1, first), (1, first), (2, second), (1, first), (3, last)):
            await redis.publish(BUS, b"\0".join([b"e", b"peer#%d" % seq, b"orders", b"",
                                                 payload]))
    await until(lambda: len(sink.frames) >= 3, "the events from the bus")
    assert sink.frames == [wire.frame(first), wire.frame(second), wire.frame(last)]
