"""Several nodes in this process, one hub and one Redis adapter each, on a redis-server of the
test's own: what clients of one node see of what happens on another. Clients are sans-I/O
connections writing to lists, so each test asserts the exact frames; only Redis is a process.

(tests/test_cluster.py keeps the runs that need real server processes and real SDKs: kills,
restarts, Sentinel, TLS, webhooks over HTTP.)"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from conftest import RedisServer
from helpers import FakeClock, ListSink, Recorder, until

from pusher_compat import wire
from pusher_compat.adapters.redis import RedisAdapter
from pusher_compat.config import AppConfig, ServerConfig
from pusher_compat.connection import Connection
from pusher_compat.hub import RELEASE_CHUNK, Hub
from pusher_compat.signatures import channel_string, sign_auth, user_string

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
SERVER = ServerConfig()
WAIT = 10.0
"""Seconds a node may take to hear from another through Redis (generous: a loaded machine)."""


@dataclass
class Node:
    """One hub and its adapter, as one server process holds them."""

    hub: Hub
    adapter: RedisAdapter
    recorder: Recorder
    app: AppConfig

    def connect(self) -> Socket:
        sink = ListSink()
        connection = Connection(self.app, SERVER, self.hub, sink, clock=FakeClock())
        connection.open()
        sink.frames.clear()
        return Socket(connection, sink)


@dataclass
class Socket:
    """A client of one node: its connection and what it was sent."""

    connection: Connection
    sink: ListSink

    def send(self, event: str, data: Any, channel: str | None = None) -> None:
        message: dict[str, Any] = {"event": event, "data": data}
        if channel is not None:
            message["channel"] = channel
        self.connection.receive(json.dumps(message))

    def texts(self) -> list[str]:
        return self.sink.texts()

    def events(self, name: str) -> list[Any]:
        """The parsed frames named ``name`` sent so far."""
        return [m for m in self.sink.messages() if m["event"] == name]

    async def subscribe(self, channel: str, user_id: str | None = None, info: Any = None
                        ) -> dict[str, Any]:
        """Subscribe (signed, presence when ``user_id``); the ``subscription_succeeded`` data
        once the cluster answered. Forgets what was sent before it; keeps what came after (a
        cache channel's replay)."""
        app, socket_id = self.connection.app, self.connection.socket_id
        data: dict[str, Any] = {"channel": channel}
        channel_data = None
        if user_id is not None:
            channel_data = data["channel_data"] = json.dumps({"user_id": user_id,
                                                               "user_info": info})
        if channel.startswith(("private-", "presence-")):
            data["auth"] = sign_auth(app.key, app.secret,
                                     channel_string(socket_id, channel, channel_data))
        self.sink.frames.clear()
        self.send("pusher:subscribe", data)
        await until(lambda: self.answered(channel), WAIT)
        answer = json.loads(self.sink.texts()[0])
        del self.sink.frames[0]
        assert answer["event"] == "pusher_internal:subscription_succeeded", answer
        return json.loads(answer["data"])

    def answered(self, channel: str) -> bool:
        return any(m.get("channel") == channel for m in self.sink.messages())

    def sign_in(self, user_id: str, watchlist: list[str] | None = None) -> None:
        user: dict[str, Any] = {"id": user_id}
        if watchlist is not None:
            user["watchlist"] = watchlist
        user_data = json.dumps(user)
        app, socket_id = self.connection.app, self.connection.socket_id
        auth = sign_auth(app.key, app.secret, user_string(socket_id, user_data))
        self.send("pusher:signin", {"auth": auth, "user_data": user_data})


Start = Callable[..., Awaitable[list[Node]]]


@pytest.fixture
async def start_nodes(redis_server: RedisServer) -> AsyncIterator[Start]:
    """Starts ``count`` nodes of ``app`` under ``prefix``; every node is closed after the
    test."""
    started: list[Node] = []

    async def start(count: int = 2, app: AppConfig = APP, prefix: str = "test") -> list[Node]:
        nodes = []
        for _ in range(count):
            adapter = RedisAdapter((app,), redis_server.url, prefix, lease_seconds=5)
            recorder = Recorder()
            node = Node(Hub([recorder], adapter=adapter), adapter, recorder, app)
            await adapter.start()
            assert adapter.ready
            started.append(node)
            nodes.append(node)
        return nodes

    yield start
    # In the order they started: closing ``blue`` before ``green`` in the prefix test once
    # left blue's task stuck after a cancellation redis-py swallowed (see ``_cancelled``).
    for node in started:
        await asyncio.wait_for(node.adapter.close(), 10)


def event_text(channel: str, event: str, data: str) -> str:
    return json.dumps({"event": event, "channel": channel, "data": data}, separators=(",", ":"))


async def test_an_event_published_on_one_node_reaches_every_node_once_in_order(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    sockets = [node.connect() for node in (nodes[0], *nodes)]
    for socket in sockets:
        await socket.subscribe("orders")
    for n in range(5):
        nodes[0].hub.publish(APP.id, "orders", wire.event_frame("shipped", {"n": n}, "orders"))
    shipped = [event_text("orders", "shipped", f'{{"n":{n}}}') for n in range(5)]
    for socket in sockets:
        await until(lambda socket=socket: len(socket.texts()) >= 5, WAIT)
    nodes[0].hub.publish(APP.id, "orders", wire.event_frame("done", {}, "orders"))
    for socket in sockets:
        await until(lambda socket=socket: len(socket.texts()) == 6, WAIT)
        assert socket.texts() == [*shipped, event_text("orders", "done", "{}")]


async def test_a_client_event_crosses_nodes_but_not_back_to_its_sender(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    sender, *others = [node.connect() for node in nodes]
    for socket in (sender, *others):
        await socket.subscribe("private-chat")
    sender.send("client-typing", {"x": 1}, "private-chat")
    for socket in others:
        await until(lambda socket=socket: socket.texts() != [], WAIT)
        assert socket.texts() == [event_text("private-chat", "client-typing", '{"x":1}')]
    nodes[1].hub.publish(APP.id, "private-chat", wire.event_frame("marker", {}, "private-chat"))
    await until(lambda: sender.texts() != [], WAIT)
    assert sender.texts() == [event_text("private-chat", "marker", "{}")]


async def test_send_to_user_and_terminate_reach_the_users_sockets_on_every_node(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    tabs = [nodes[0].connect(), nodes[1].connect()]
    other = nodes[2].connect()
    for tab in tabs:
        tab.sign_in("42")
        await until(lambda tab=tab: tab.connection.user_id == "42", WAIT)
        tab.sink.frames.clear()
    nodes[2].hub.publish(APP.id, "#server-to-user-42",
                         wire.event_frame("notice", {"text": "hi"}, "#server-to-user-42"))
    for tab in tabs:
        await until(lambda tab=tab: tab.texts() != [], WAIT)
        assert tab.texts() == [event_text("#server-to-user-42", "notice", '{"text":"hi"}')]
        tab.sink.frames.clear()
    nodes[2].hub.terminate(APP, "42")
    for tab in tabs:
        await until(lambda tab=tab: tab.sink.closes != [], WAIT)
        assert tab.sink.closes == [(4009, "Connection terminated by the app")]
    assert other.sink.closes == []


async def test_a_cache_channel_replays_an_event_published_on_another_node(
        start_nodes: Start) -> None:
    first, second = await start_nodes(2)
    frame = wire.event_frame("price", {"eur": 7}, "cache-prices")
    first.hub.remember(APP, "cache-prices", frame, '{"eur":7}')
    first.hub.publish(APP.id, "cache-prices", frame)
    await until(lambda: second.hub.cached(APP.id, "cache-prices") is not None, WAIT)
    socket = second.connect()
    await socket.subscribe("cache-prices")
    assert socket.texts() == [event_text("cache-prices", "price", '{"eur":7}')]


async def test_presence_rosters_and_member_events_are_the_same_on_every_node(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    people = [("1", "ann"), ("2", "bob"), ("3", "cid")]
    sockets = [node.connect() for node in nodes]
    rosters = []
    for socket, (user_id, name) in zip(sockets, people, strict=True):
        rosters.append(await socket.subscribe("presence-room", user_id, {"name": name}))
    everyone = {user_id: {"name": name} for user_id, name in people}
    assert rosters[-1]["presence"] == {"ids": ["1", "2", "3"], "hash": everyone, "count": 3}
    await until(lambda: len(sockets[0].texts()) == 2, WAIT)
    assert sockets[0].texts() == [
        event_text("presence-room", "pusher_internal:member_added",
                   '{"user_id":"2","user_info":{"name":"bob"}}'),
        event_text("presence-room", "pusher_internal:member_added",
                   '{"user_id":"3","user_info":{"name":"cid"}}')]
    sockets[0].sink.frames.clear()
    sockets[1].connection.closed()
    removed = event_text("presence-room", "pusher_internal:member_removed", '{"user_id":"2"}')
    for socket in (sockets[0], sockets[2]):
        await until(lambda socket=socket: removed in socket.texts(), WAIT)
        assert socket.texts()[-1] == removed


async def test_a_user_with_tabs_on_two_nodes_is_one_member(start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    watcher = nodes[2].connect()
    await watcher.subscribe("presence-room", "9", {"name": "watcher"})
    tabs = [nodes[0].connect(), nodes[1].connect()]
    for tab in tabs:
        await tab.subscribe("presence-room", "7", {"name": "ann"})
    await until(lambda: watcher.texts() != [], WAIT)
    for node in nodes:
        assert sorted(await node.adapter.members(APP.id, "presence-room")) == ["7", "9"]
        counts = await node.adapter.channel(APP.id, "presence-room")
        assert counts is not None
        assert (counts.user_count, counts.subscription_count) == (2, 3)
    tabs[0].connection.closed()
    await until(lambda: not nodes[0].hub.releasing, WAIT)
    tabs[1].connection.closed()
    removed = event_text("presence-room", "pusher_internal:member_removed", '{"user_id":"7"}')
    await until(lambda: removed in watcher.texts(), WAIT)
    assert watcher.texts() == [
        event_text("presence-room", "pusher_internal:member_added",
                   '{"user_id":"7","user_info":{"name":"ann"}}'),
        removed]


async def test_the_presence_member_limit_counts_members_on_every_node(
        start_nodes: Start) -> None:
    first, second = await start_nodes(2, replace(APP, max_presence_members=2))
    await first.connect().subscribe("presence-full", "1")
    await second.connect().subscribe("presence-full", "2")
    refused = second.connect()
    refused.sink.frames.clear()
    data = {"channel": "presence-full", "channel_data": json.dumps({"user_id": "3"})}
    app, socket_id = refused.connection.app, refused.connection.socket_id
    data["auth"] = sign_auth(app.key, app.secret, channel_string(
        socket_id, "presence-full", data["channel_data"]))
    refused.send("pusher:subscribe", data)
    await until(lambda: refused.texts() != [], WAIT)
    (error,) = [m for m in refused.sink.messages() if m["event"] == "pusher:subscription_error"]
    assert error["data"]["status"] == 4100
    assert "maximum number of members" in error["data"]["error"]


async def test_watchers_on_one_node_see_a_user_of_another_node_come_and_go(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    watcher = nodes[0].connect()
    watcher.sign_in("1", watchlist=["2"])
    await until(lambda: watcher.events("pusher_internal:watchlist_events") != [], WAIT)
    tabs = [nodes[1].connect(), nodes[2].connect()]
    for tab in tabs:
        tab.sign_in("2")
        await until(lambda tab=tab: tab.connection.user_id == "2", WAIT)
    await until(lambda: len(watcher.events("pusher_internal:watchlist_events")) == 2, WAIT)
    tabs[0].connection.closed()
    tabs[1].connection.closed()
    await until(lambda: len(watcher.events("pusher_internal:watchlist_events")) == 3, WAIT)
    assert [json.loads(m["data"])["events"]
            for m in watcher.events("pusher_internal:watchlist_events")] == [
        [{"name": "offline", "user_ids": ["2"]}],
        [{"name": "online", "user_ids": ["2"]}],
        [{"name": "offline", "user_ids": ["2"]}]]


async def test_the_channel_counts_are_the_whole_clusters_from_any_node(
        start_nodes: Start) -> None:
    nodes = await start_nodes(3)
    a, b, b2 = nodes[0].connect(), nodes[1].connect(), nodes[1].connect()
    for socket in (a, b, b2):
        await socket.subscribe("news")
    await a.subscribe("sport")
    # Public channels answer at once; the cluster counts them once the writer ran.
    await until_async(lambda: counted(nodes[2], {"news": 3, "sport": 1}), WAIT)
    for node in nodes:
        listing = await node.adapter.channels(APP.id, "")
        assert {name: c.subscription_count for name, c in listing.items()} == {
            "news": 3, "sport": 1}
        news = await node.adapter.channel(APP.id, "news")
        assert news is not None and news.subscription_count == 3
    a.send("pusher:unsubscribe", {"channel": "sport"})
    await until(lambda: nodes[0].recorder.webhook_events()[-1] == {
        "name": "channel_vacated", "channel": "sport"}, WAIT)
    assert await nodes[2].adapter.channel(APP.id, "sport") is None


async def counted(node: Node, expected: dict[str, int]) -> bool:
    listing = await node.adapter.channels(APP.id, "")
    return {name: c.subscription_count for name, c in listing.items()} == expected


async def test_a_socket_holding_thousands_of_channels_releases_them_all_cluster_wide(
        start_nodes: Start) -> None:
    """Released over several loop iterations, every channel still leaves Redis too."""
    app = replace(APP, max_channels_per_connection=0, max_subscriptions_per_second=0)
    first, second = await start_nodes(2, app)
    holder = first.connect()
    channels = [f"c{i}" for i in range(5 * RELEASE_CHUNK)]
    for channel in channels:
        holder.send("pusher:subscribe", {"channel": channel})

    await until_async(lambda: counted(second, dict.fromkeys(channels, 1)), WAIT)
    holder.connection.closed()
    for node in (first, second):
        await until_async(lambda node=node: empty(node), WAIT)


async def empty(node: Node) -> bool:
    return await node.adapter.channels(APP.id, "") == {}


async def until_async(predicate: Callable[[], Awaitable[bool]], timeout: float) -> None:
    """:func:`helpers.until` for a predicate that asks Redis."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not await predicate():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_deployments_with_different_prefixes_never_cross_talk(
        start_nodes: Start) -> None:
    (blue,) = await start_nodes(1, prefix="blue")
    (green,) = await start_nodes(1, prefix="green")
    socket = green.connect()
    await socket.subscribe("orders")
    blue.hub.publish(APP.id, "orders", wire.event_frame("blue-only", {}, "orders"))
    green.hub.publish(APP.id, "orders", wire.event_frame("green", {}, "orders"))
    assert socket.texts() == [event_text("orders", "green", "{}")]
    assert await blue.adapter.channels(APP.id, "") == {}
