"""Three nodes on one Redis behave as one Pusher app.

Each test starts its own ``redis-server`` on a free port and three ``pusher-compat serve``
processes with ``adapter = "redis"``; unmodified pusher-js clients (tests/node/fleet.mjs) are
spread over the nodes, the official Python SDK talks to whichever node the test names.
What needs no real process (the adapter's behaviour between hubs) is tested in process, faster,
in tests/test_redis_hubs.py; these runs keep the SDKs end to end, kills, restarts and outages.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import pusher
import pytest
import redis
from aiohttp import web
from conftest import DEFAULT_CONFIG, NODE_DIR, ROOT, RedisServer, ServerProcess, free_port
from helpers import (
    DOWN,
    Receiver,
    WsClient,
    assert_each_delivery_arrived_intact,
    subscribe_one_delivery_each,
)

from pusher_compat.client import Client, ClientError, connect

LEASE = 1
"""node_lease_seconds of the test clusters: a killed node is reaped within LEASE * 1.25."""


def cluster_config(redis: RedisServer, extra: str = "", prefix: str = "test") -> str:
    return DEFAULT_CONFIG.replace("[server]", f"""[server]
adapter = "redis"
redis_url = "{redis.url}"
redis_prefix = "{prefix}"
node_lease_seconds = {LEASE}
webhook_leave_delay_seconds = 0
{extra}""")


def ready_status(node: ServerProcess) -> int:
    try:
        with urllib.request.urlopen(f"{node.url}/ready", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def metrics(node: ServerProcess) -> str:
    with urllib.request.urlopen(f"{node.url}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def until(predicate: Callable[[], Any], what: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await asyncio.to_thread(predicate)):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return value


async def start_cluster(server_factory: Callable[..., ServerProcess], config: str, count: int = 3
                        ) -> list[ServerProcess]:
    nodes = [server_factory(config) for _ in range(count)]
    for node in nodes:
        await until(lambda node=node: ready_status(node) == 200, f"node {node.port} ready")
    return nodes


@pytest.fixture
async def nodes(server_factory: Callable[..., ServerProcess], redis_server: RedisServer
                ) -> list[ServerProcess]:
    return await start_cluster(server_factory, cluster_config(redis_server))


def sdk(node: ServerProcess) -> pusher.Pusher:
    return pusher.Pusher(app_id=node.app_id, key=node.key, secret=node.secret,
                         host=node.host, port=node.port, ssl=False)


class Fleet:
    """pusher-js clients in one Node process (tests/node/fleet.mjs), observed line by line."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.seen: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process.stdout is not None
        async for line in self.process.stdout:
            self.seen.append(json.loads(line))
            self._changed.set()

    def send(self, op: str, **fields: Any) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write((json.dumps({"op": op, **fields}) + "\n").encode())

    def connect(self, client: str, node: ServerProcess, **auth: Any) -> None:
        self.send("connect", id=client, port=node.port, **auth)

    def observed(self, client: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [seen for seen in self.seen
                if (client is None or seen.get("id") == client)
                and all(seen.get(k) == v for k, v in match.items())]

    async def wait(self, client: str | None, timeout: float = 10, count: int = 1,
                   **match: Any) -> list[dict[str, Any]]:
        """The first ``count`` observations matching; fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(found := self.observed(client, **match)) < count:
            remaining = deadline - time.monotonic()
            assert remaining > 0, (f"{client} never saw {count} x {match}; saw:\n"
                                   + "\n".join(map(json.dumps, self.observed(client))))
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        return found[:count]

    async def subscribed(self, client: str, channel: str) -> dict[str, Any]:
        self.send("subscribe", id=client, channel=channel)
        (seen,) = await self.wait(client, channel=channel,
                                  event="pusher:subscription_succeeded")
        return seen

    async def close(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 5)
        except TimeoutError:
            self.process.kill()
        self._reader.cancel()


@pytest.fixture
async def fleet_factory(node: str) -> AsyncIterator[Callable[[ServerProcess], Any]]:
    """Start a fleet for the app of a given node; every fleet is closed after the test."""
    fleets: list[Fleet] = []

    async def start(server: ServerProcess) -> Fleet:
        env = {**os.environ, "PUSHER_HOST": "127.0.0.1", "PUSHER_APP_ID": server.app_id,
               "PUSHER_APP_KEY": server.key, "PUSHER_APP_SECRET": server.secret}
        process = await asyncio.create_subprocess_exec(
            node, str(NODE_DIR / "fleet.mjs"), stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, env=env, cwd=ROOT)
        fleet = Fleet(process)
        fleets.append(fleet)
        await fleet.wait(None, kind="ready")
        return fleet

    yield start
    for fleet in fleets:
        await fleet.close()


@pytest.fixture
async def fleet(fleet_factory: Callable[[ServerProcess], Any], nodes: list[ServerProcess]
                ) -> Fleet:
    return await fleet_factory(nodes[0])


async def connected(fleet: Fleet, client: str, node: ServerProcess, **auth: Any) -> None:
    fleet.connect(client, node, **auth)
    await fleet.wait(client, kind="state", state="connected")


def member(user_id: str, name: str) -> dict[str, Any]:
    return {"member": {"user_id": user_id, "user_info": {"name": name}}}


# -- events --------------------------------------------------------------------------------


async def test_event_triggered_on_one_node_reaches_every_node_once_in_order(
        nodes: list[ServerProcess], fleet: Fleet) -> None:
    clients = {"a": nodes[0], "a2": nodes[0], "b": nodes[1], "c": nodes[2]}
    for client, node in clients.items():
        await connected(fleet, client, node)
        await fleet.subscribed(client, "orders")
    api = sdk(nodes[0])
    for n in range(5):
        await asyncio.to_thread(api.trigger, "orders", "shipped", {"n": n})
    for client in clients:
        await fleet.wait(client, count=5, event="shipped")
    await asyncio.to_thread(api.trigger, "orders", "done", {})
    for client in clients:
        await fleet.wait(client, event="done")
        assert [seen["data"]["n"] for seen in fleet.observed(client, event="shipped")] == [
            0, 1, 2, 3, 4]


# -- presence ------------------------------------------------------------------------------


async def test_presence_roster_and_member_events_are_the_same_on_every_node(
        nodes: list[ServerProcess], fleet: Fleet) -> None:
    people = {"ann": ("1", nodes[0]), "bob": ("2", nodes[1]), "cid": ("3", nodes[2])}
    for name, (user_id, node) in people.items():
        await connected(fleet, name, node, **member(user_id, name))
        await fleet.subscribed(name, "presence-room")
    everyone = {user_id: {"name": name} for name, (user_id, _) in people.items()}
    await fleet.wait("ann", event="pusher:member_added", count=2)
    await fleet.wait("bob", event="pusher:member_added", count=1)
    for name in people:
        assert fleet.observed(name)[-1]["members"] == everyone, name
    fleet.send("unsubscribe", id="bob", channel="presence-room")
    for name in ("ann", "cid"):
        (gone,) = await fleet.wait(name, event="pusher:member_removed")
        assert gone["data"] == {"id": "2", "info": {"name": "bob"}}
        assert gone["members"] == {k: v for k, v in everyone.items() if k != "2"}


# -- webhooks ------------------------------------------------------------------------------


@pytest.fixture
async def hooks(aiohttp_server: Callable[..., Any]) -> list[dict[str, Any]]:
    """Webhook events received, in order, however many nodes sent them."""
    received: list[dict[str, Any]] = []

    async def handle(request: web.Request) -> web.Response:
        received.extend((await request.json())["events"])
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    server = await aiohttp_server(app)
    received.append({"url": str(server.make_url("/hook"))})
    return received


async def test_webhooks_are_sent_once_for_the_whole_cluster(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer,
        hooks: list[dict[str, Any]], fleet_factory: Callable[..., Any]) -> None:
    url = hooks.pop()["url"]
    config = cluster_config(redis_server) + (
        f'[[apps.webhooks]]\nurl = "{url}"\n'
        'event_types = ["channel_occupied", "channel_vacated", "member_added", '
        '"member_removed"]\n')
    config = config.replace('[[apps]]\nid = "disabled-id"', '[[apps]]\nid = "disabled-id"', 1)
    cluster = await start_cluster(server_factory, _webhooks_on_first_app(config))
    fleet = await fleet_factory(cluster[0])
    for name, at in (("ann", cluster[0]), ("bob", cluster[1]), ("ann2", cluster[2])):
        user_id = "2" if name == "bob" else "1"
        await connected(fleet, name, at, **member(user_id, name))
        await fleet.subscribed(name, "presence-room")
    await until(lambda: len(hooks) >= 3, "webhooks for the joins")
    for name in ("ann", "bob", "ann2"):
        fleet.send("disconnect", id=name)
    await until(lambda: len(hooks) >= 6, "webhooks for the leaves")
    await asyncio.sleep(0.5)  # anything duplicated would have come by now
    names = sorted((h["name"], h.get("user_id", "")) for h in hooks)
    assert names == sorted([("channel_occupied", ""), ("member_added", "1"),
                            ("member_added", "2"), ("member_removed", "1"),
                            ("member_removed", "2"), ("channel_vacated", "")])


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGKILL, -9), (signal.SIGTERM, 0)],
                         ids=["killed", "stopped"])
async def test_a_gone_nodes_pending_webhooks_are_delivered_by_one_survivor(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer,
        receiver: Receiver, sig: signal.Signals, exit_code: int) -> None:
    config = cluster_config(redis_server, "webhook_batch_seconds = 0.001")
    cluster = await start_cluster(server_factory, with_webhooks_to(receiver, config))
    store = redis.Redis.from_url(redis_server.url, decode_responses=True)
    await assert_a_gone_nodes_pending_webhooks_are_taken_over(cluster, store, receiver, sig,
                                                              exit_code)


def with_webhooks_to(receiver: Receiver, config: str) -> str:
    """``config`` with app 1001's ``channel_occupied`` webhooks sent to ``receiver``."""
    return _webhooks_on_first_app(config + (
        f'[[apps.webhooks]]\nurl = "{receiver.url()}"\nevent_types = ["channel_occupied"]\n'))


async def assert_a_gone_nodes_pending_webhooks_are_taken_over(
        cluster: list[ServerProcess], store: redis.Redis | redis.RedisCluster,
        receiver: Receiver, sig: signal.Signals, exit_code: int) -> None:
    """Node 0 holds 20 deliveries to a failing endpoint and stops with ``sig``; once the
    endpoint answers, one survivor delivers every one of them, signed, under its id.
    ``store`` reads the deployment's Redis (prefix ``test``, decoded responses)."""

    def pending() -> dict[str, Any]:
        """Every node's pending deliveries, by id, as kept in Redis."""
        return {i: json.loads(d) for key in store.scan_iter(match="test:{webhooks}:node:*")
                for i, d in store.hgetall(key).items()}

    receiver.failures = DOWN
    async with aiohttp.ClientSession() as session:
        ws = await WsClient.handshake(await session.ws_connect(cluster[0].ws_url()))
        await subscribe_one_delivery_each(ws, receiver, [f"ch-{n}" for n in range(20)])
        await until(lambda: len(pending()) == 20, "20 deliveries kept in redis")
        await ws.ws.close()  # closed by us: the stop below has no socket to wait for
    before = pending()
    assert await asyncio.to_thread(cluster[0].stop, sig) == exit_code
    receiver.failures = 0
    await until(lambda: receiver.delivered() == before.keys(), "a survivor delivering them",
                timeout=LEASE * 1.25 + 15)
    assert_each_delivery_arrived_intact(receiver.requests, cluster[0].secret, before)
    takers = [node for node in cluster[1:] if any(
        "resuming its 20 pending webhook deliveries" in line for line in node.log)]
    assert len(takers) == 1
    await until(lambda: not pending(), "the delivered ones removed from redis")


def _webhooks_on_first_app(config: str) -> str:
    """Move the trailing [[apps.webhooks]] table under the first app."""
    body, _, hook = config.partition("[[apps.webhooks]]")
    first, _, rest = body.partition('[[apps]]\nid = "disabled-id"')
    return f'{first}[[apps.webhooks]]{hook}\n[[apps]]\nid = "disabled-id"{rest}'


# -- limits --------------------------------------------------------------------------------


async def test_api_event_rate_limit_is_shared_by_the_nodes(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer) -> None:
    config = cluster_config(redis_server).replace(
        'client_events = true', 'client_events = true\nmax_backend_events_per_second = 3')
    cluster = await start_cluster(server_factory, config, count=2)
    apis = [sdk(node) for node in cluster]
    allowed = 0
    for n in range(10):
        try:
            await asyncio.to_thread(apis[n % 2].trigger, "orders", "e", {"n": n})
            allowed += 1
        except pusher.errors.PusherBadStatus as error:
            assert str(error).startswith("429: "), error
    # Ten requests take well under a second, so they span at most two windows of 3.
    assert 3 <= allowed <= 6


async def test_app_connection_quota_counts_every_node(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer) -> None:
    config = cluster_config(redis_server).replace(
        'client_events = true', 'client_events = true\nmax_connections = 2')
    cluster = await start_cluster(server_factory, config)
    async with connect(cluster[0].url, cluster[0].key), \
            connect(cluster[1].url, cluster[1].key):

        async def refused_on_third_node() -> int | None:
            try:
                async with connect(cluster[2].url, cluster[2].key):
                    return None
            except ClientError as error:
                return error.code

        deadline = time.monotonic() + LEASE * 2 + 5
        while (code := await refused_on_third_node()) is None:
            assert time.monotonic() < deadline, "the third node never counted the others"
            await asyncio.sleep(0.2)
        assert code == 4004


# -- HTTP API ------------------------------------------------------------------------------


# -- failures ------------------------------------------------------------------------------


async def test_a_killed_nodes_members_are_removed_everywhere_within_the_lease(
        nodes: list[ServerProcess], fleet: Fleet) -> None:
    await connected(fleet, "ann", nodes[0], **member("1", "ann"))
    await fleet.subscribed("ann", "presence-room")
    await connected(fleet, "cid", nodes[2], **member("3", "cid"))
    await fleet.subscribed("cid", "presence-room")
    await connected(fleet, "bob", nodes[1], **member("2", "bob"))
    await fleet.subscribed("bob", "presence-room")
    for name in ("ann", "cid"):
        await fleet.wait(name, event="pusher:member_added", data={"id": "2",
                                                                   "info": {"name": "bob"}})
    nodes[1].process.send_signal(signal.SIGKILL)
    killed = time.monotonic()
    bound = LEASE * 1.25 + 1.5  # the lease, a heartbeat, and slack for a loaded machine
    for name in ("ann", "cid"):
        (gone,) = await fleet.wait(name, event="pusher:member_removed", timeout=bound + 5)
        assert gone["data"]["id"] == "2"
        assert gone["members"] == {"1": {"name": "ann"}, "3": {"name": "cid"}}
    assert time.monotonic() - killed < bound + 5
    users = await asyncio.to_thread(sdk(nodes[2]).users_info, "presence-room")
    assert sorted(u["id"] for u in users["users"]) == ["1", "3"]


class Restartable(Protocol):
    def stop(self) -> None: ...

    def start(self) -> None: ...


async def assert_the_cluster_recovers_from_a_redis_restart(
        nodes: list[ServerProcess], fleet: Fleet, redis: Restartable) -> None:
    """Nodes turn not-ready while ``redis`` is down, ready when it is back; then events flow
    and the presence roster is rebuilt in the emptied Redis."""
    await connected(fleet, "ann", nodes[0], **member("1", "ann"))
    await fleet.subscribed("ann", "presence-room")
    await connected(fleet, "bob", nodes[1], **member("2", "bob"))
    await fleet.subscribed("bob", "presence-room")
    redis.stop()
    for node in nodes:
        await until(lambda node=node: ready_status(node) == 503, "not ready without redis")
    redis.start()
    for node in nodes:
        await until(lambda node=node: ready_status(node) == 200, "ready again", timeout=20)
    await asyncio.to_thread(sdk(nodes[0]).trigger, "presence-room", "after", {"ok": True})
    await fleet.wait("bob", event="after")
    users = await until(lambda: sdk(nodes[2]).users_info("presence-room")["users"],
                        "the roster rebuilt in the new redis")
    assert sorted(u["id"] for u in users) == ["1", "2"]


async def test_events_flow_again_after_redis_restarts(
        nodes: list[ServerProcess], fleet: Fleet, redis_server: RedisServer) -> None:
    await assert_the_cluster_recovers_from_a_redis_restart(nodes, fleet, redis_server)


async def test_a_node_serves_its_own_clients_while_redis_is_down(
        nodes: list[ServerProcess], fleet: Fleet, redis_server: RedisServer) -> None:
    assert "pusher_compat_cluster_ready 1.0" in metrics(nodes[0])
    redis_server.stop()
    await until(lambda: ready_status(nodes[0]) == 503, "not ready without redis")
    assert "pusher_compat_cluster_ready 0.0" in metrics(nodes[0])
    await connected(fleet, "ann", nodes[0], **member("1", "ann"))
    joined = await fleet.subscribed("ann", "presence-room")
    assert joined["members"] == {"1": {"name": "ann"}}
    await asyncio.to_thread(sdk(nodes[0]).trigger, "presence-room", "local", {"n": 1})
    (seen,) = await fleet.wait("ann", event="local")
    assert seen["data"] == {"n": 1}
    users = await asyncio.to_thread(sdk(nodes[0]).users_info, "presence-room")
    assert users == {"users": [{"id": "1"}]}


OUTAGE = 3.0
"""Seconds one Redis stays stopped in the outbox test, as the issue that asked for the outbox
states it: the nodes fail several reconnects meanwhile (the adapter retries after 0.1 s, then
doubles the wait) and come back at the next retry, up to 6.3 s from the stop."""


async def events_until(client: Client, marker: str) -> list[tuple[str, Any]]:
    """The (event, data) of every ``orders`` event ``client`` receives up to ``marker``."""
    received = []
    while (event := await client.next_event(channel="orders", timeout=20)).event != marker:
        received.append((event.event, event.data))
    return received


async def assert_events_published_while_redis_is_down_arrive_once_it_is_back(
        nodes: list[ServerProcess], redis: Restartable, outage: float = OUTAGE) -> None:
    """Events published on node A while ``redis`` is stopped for ``outage`` seconds reach A's
    subscriber at once, and B's after Redis is back, in order, once each."""
    a, b = nodes[0], nodes[1]
    async with connect(a.url, a.key) as on_a, connect(b.url, b.key) as on_b:
        for client in (on_a, on_b):
            await client.subscribe("orders")
        redis.stop()
        stopped = time.monotonic()
        await until(lambda: ready_status(a) == 503, "A not ready without redis")
        published = [("while-down", {"n": n}) for n in range(5)]
        for event, data in published:
            await asyncio.to_thread(sdk(a).trigger, "orders", event, data)
        for event, data in published:
            seen = await on_a.next_event(channel="orders", timeout=5)
            assert (seen.event, seen.data) == (event, data)
        await asyncio.sleep(max(0.0, stopped + outage - time.monotonic()))  # the outage
        redis.start()
        for node in nodes:
            await until(lambda node=node: ready_status(node) == 200, "ready again", timeout=20)
        # Events published once A is back queue behind what it kept, so "after" comes last.
        await asyncio.to_thread(sdk(a).trigger, "orders", "after", {})
        assert await events_until(on_b, "after") == published
        assert await events_until(on_a, "after") == []


async def test_events_published_while_redis_is_down_reach_other_nodes_once_it_is_back(
        nodes: list[ServerProcess], redis_server: RedisServer) -> None:
    await assert_events_published_while_redis_is_down_arrive_once_it_is_back(
        nodes, redis_server)


async def test_events_past_the_outbox_bound_reach_only_their_own_node_and_are_counted(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer) -> None:
    config = cluster_config(redis_server, "redis_outbox_max_bytes = 1\n")
    a, b = await start_cluster(server_factory, config, count=2)
    async with connect(b.url, b.key) as on_b:
        await on_b.subscribe("orders")
        redis_server.stop()
        await until(lambda: ready_status(a) == 503, "A not ready without redis")
        await asyncio.to_thread(sdk(a).trigger, "orders", "lost", {})
        redis_server.start()
        for node in (a, b):
            await until(lambda node=node: ready_status(node) == 200, "ready again", timeout=20)
        await asyncio.to_thread(sdk(a).trigger, "orders", "after", {})
        assert await events_until(on_b, "after") == []
    assert ('pusher_compat_cluster_events_dropped_total{app="1001",reason="bytes"} 1.0'
            in metrics(a))
    assert "event(s) published while redis was unreachable were dropped" in "".join(a.log)


async def assert_an_event_crosses(cluster: list[ServerProcess]) -> None:
    """An event triggered on the first node reaches a subscriber of the second."""
    async with connect(cluster[1].url, cluster[1].key) as client:
        await client.subscribe("orders")
        await asyncio.to_thread(sdk(cluster[0]).trigger, "orders", "crossed", {})
        assert (await client.next_event(channel="orders", timeout=5)).event == "crossed"


async def test_nodes_find_redis_through_sentinel(
        server_factory: Callable[..., ServerProcess], redis_server: RedisServer,
        tmp_path: Any) -> None:
    port = free_port()
    config = tmp_path / "sentinel.conf"
    config.write_text(f"port {port}\nbind 127.0.0.1\n"
                      f"sentinel monitor primary 127.0.0.1 {redis_server.port} 1\n")
    sentinel = subprocess.Popen([redis_server.exe, str(config), "--sentinel"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cluster: list[ServerProcess] = []
    try:
        url = f"redis+sentinel://127.0.0.1:{port}/primary/0"
        text = cluster_config(redis_server).replace(redis_server.url, url)
        cluster = await start_cluster(server_factory, text, count=2)
        await assert_an_event_crosses(cluster)
    finally:
        # The nodes first: a node stopping after the sentinel spends seconds asking it for
        # the primary again.
        for node in cluster:
            await asyncio.to_thread(node.stop)
        sentinel.terminate()
        sentinel.wait(10)


async def test_nodes_share_a_redis_over_tls(
        server_factory: Callable[..., ServerProcess], certificate: tuple[Path, Path],
        tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    redis = RedisServer(tmp_path / "redis", tls=certificate)
    redis.start()
    try:
        assert redis.url.startswith("rediss://")
        await assert_an_event_crosses(
            await start_cluster(server_factory, cluster_config(redis), count=2))
    finally:
        redis.stop()
