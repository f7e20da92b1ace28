"""Sign-in over Redis when the cluster answers later than the client speaks.

A real node with ``adapter = "redis"`` on its own ``redis-server``; raw TCP clients send two
validly signed ``pusher:signin`` frames in one write, so both arrive before Redis has answered
the first. Redis must count the socket once, and nothing once it closed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import redis
from conftest import RedisServer, ServerProcess
from helpers import RawSocket, client_frame, upgraded
from test_cluster import cluster_config, start_cluster, until

from pusher_compat import signatures, websocket

USERS_KEY = "test:{1001}:users"
"""Redis hash of app 1001: sockets signed in per user id, on every node."""

Opener = Callable[[], Awaitable[tuple[RawSocket, str]]]
Counted = Callable[[], dict[str, int]]

PENDING = {"event": "pusher:error", "data": {
    "code": 4009, "message": "A sign-in is already pending on this connection: this one is ignored",
}}


@pytest.fixture
async def node(server_factory: Callable[..., ServerProcess], redis_server: RedisServer
               ) -> ServerProcess:
    config = cluster_config(redis_server).replace(
        "client_events = true", "client_events = true\nmax_connections_per_user = 2", 1)
    (node,) = await start_cluster(server_factory, config, count=1)
    return node


@pytest.fixture
def counted(redis_server: RedisServer) -> Counted:
    """What Redis counts now: signed-in sockets per user id."""
    client = redis.Redis.from_url(redis_server.url)

    def counted() -> dict[str, int]:
        return {k.decode(): int(v) for k, v in client.hgetall(USERS_KEY).items()}

    return counted


@pytest.fixture
async def sockets(node: ServerProcess) -> AsyncIterator[Opener]:
    """Open upgraded raw sockets to ``node``: ``(socket, socket_id)``; all closed after."""
    opened: list[RawSocket] = []

    async def open_socket() -> tuple[RawSocket, str]:
        raw = RawSocket(*await asyncio.open_connection(node.host, node.port))
        opened.append(raw)
        established = await upgraded(raw)
        return raw, json.loads(established["data"])["socket_id"]

    yield open_socket
    for raw in opened:
        raw.writer.close()


def signin_frame(socket_id: str, user: dict[str, Any]) -> bytes:
    user_data = json.dumps(user)
    auth = signatures.sign_auth(ServerProcess.key, ServerProcess.secret,
                                signatures.user_string(socket_id, user_data))
    message = {"event": "pusher:signin", "data": {"auth": auth, "user_data": user_data}}
    return client_frame(websocket.TEXT, json.dumps(message).encode())


def success(user: dict[str, Any]) -> dict[str, Any]:
    return {"event": "pusher:signin_success", "data": {"user_data": json.dumps(user)}}


def watchlist_event(name: str, *user_ids: str) -> dict[str, Any]:
    events = {"events": [{"name": name, "user_ids": list(user_ids)}]}
    return {"event": "pusher_internal:watchlist_events",
            "data": json.dumps(events, separators=(",", ":"))}


async def close(raw: RawSocket) -> None:
    raw.writer.close()
    await raw.writer.wait_closed()


async def test_two_signins_in_one_write_are_counted_once(sockets: Opener, counted: Counted) -> None:
    raw, socket_id = await sockets()
    user = {"id": "7"}

    await raw.send(signin_frame(socket_id, user) * 2)

    assert [await raw.message(), await raw.message()] == [PENDING, success(user)]
    assert counted() == {"7": 1}


async def test_watcher_gets_offline_when_a_double_signed_in_socket_closes(
        sockets: Opener, counted: Counted) -> None:
    watcher, watcher_id = await sockets()
    watcher_user = {"id": "w", "watchlist": ["7"]}
    await watcher.send(signin_frame(watcher_id, watcher_user))
    assert [await watcher.message(), await watcher.message()] == [
        success(watcher_user), watchlist_event("offline", "7")]
    raw, socket_id = await sockets()
    await raw.send(signin_frame(socket_id, {"id": "7"}) * 2)
    assert await watcher.message() == watchlist_event("online", "7")

    await close(raw)

    assert await watcher.message() == watchlist_event("offline", "7")
    assert counted() == {"w": 1}


async def test_after_a_double_signin_closed_the_user_may_open_its_two_sockets(
        sockets: Opener, counted: Counted) -> None:
    raw, socket_id = await sockets()
    await raw.send(signin_frame(socket_id, {"id": "7"}) * 2)
    assert [await raw.message(), await raw.message()] == [PENDING, success({"id": "7"})]
    await close(raw)
    await until(lambda: counted() == {}, "the closed socket signed out in Redis")

    for _ in range(2):
        tab, tab_id = await sockets()
        await tab.send(signin_frame(tab_id, {"id": "7"}))
        assert await tab.message() == success({"id": "7"})


async def test_signing_in_as_a_then_b_in_one_write_leaves_nothing_after_close(
        sockets: Opener, counted: Counted) -> None:
    raw, socket_id = await sockets()

    await raw.send(signin_frame(socket_id, {"id": "a"}) + signin_frame(socket_id, {"id": "b"}))

    assert [await raw.message(), await raw.message()] == [PENDING, success({"id": "a"})]
    assert counted() == {"a": 1}
    await close(raw)
    await until(lambda: counted() == {}, "the closed socket signed out in Redis")
