"""``pusher_compat.client`` against a real server process.

Server events come from the unmodified Python ``pusher`` SDK (its blocking calls in a worker
thread); presence, client events, refusals and pings are exercised between real sockets.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest
from conftest import DEFAULT_CONFIG, ServerProcess, module_server, python_sdk
from helpers import GatewayTestServer, ManualScheduler, signed_query

from pusher_compat.client import Client, ClientError, SubscriptionError, connect
from pusher_compat.config import load_settings
from pusher_compat.server import create_app

server = module_server()  # each test uses channels of its own


async def join(client: Client, server: ServerProcess, channel: str, user: str) -> None:
    auth, channel_data = client.sign_presence(channel, server.secret, user, {"name": user})
    await client.subscribe(channel, auth=auth, channel_data=channel_data)


async def test_public_channel_receives_events_from_the_python_sdk(server: ServerProcess) -> None:
    async with connect(server.url, server.key) as client:
        assert client.socket_id.count(".") == 1
        await client.subscribe("orders")
        await asyncio.to_thread(python_sdk(server).trigger, "orders", "shipped", {"id": 17})
        event = await client.next_event(channel="orders")
        assert (event.event, event.channel, event.data) == ("shipped", "orders", {"id": 17})
        # The raw message keeps data as the JSON string the server sent.
        assert json.loads(event.raw["data"]) == {"id": 17}


async def test_events_iterator_and_filters_keep_unmatched_events(server: ServerProcess) -> None:
    async with connect(server.url, server.key) as client:
        await client.subscribe("a")
        await client.subscribe("b")
        api = python_sdk(server)
        await asyncio.to_thread(api.trigger, "a", "first", "1")
        await asyncio.to_thread(api.trigger, "b", "second", "2")
        # Asking for b's event first leaves a's in the buffer, in order.
        assert (await client.next_event(channel="b")).event == "second"
        seen = []
        async for event in client.events():
            seen.append((event.channel, event.event, event.data))
            break
        assert seen == [("a", "first", 1)]


async def test_private_channel_signed_locally(server: ServerProcess) -> None:
    async with connect(server.url, server.key) as client:
        channel = "private-orders.17"
        await client.subscribe(channel, auth=client.sign_private(channel, server.secret))
        await asyncio.to_thread(python_sdk(server).trigger, channel, "updated", {"state": "paid"})
        assert (await client.next_event(channel=channel)).data == {"state": "paid"}


async def test_presence_members_and_client_events(server: ServerProcess) -> None:
    room = "presence-room.1"
    async with connect(server.url, server.key) as ann:
        await join(ann, server, room, "ann")
        assert ann.members == {room: {"ann": {"name": "ann"}}}
        async with connect(server.url, server.key) as bob:
            await join(bob, server, room, "bob")
            assert set(bob.members[room]) == {"ann", "bob"}
            added = await ann.next_event(channel=room, event="pusher_internal:member_added")
            assert added.data == {"user_id": "bob", "user_info": {"name": "bob"}}
            assert set(ann.members[room]) == {"ann", "bob"}

            # A client event from Bob reaches Ann with his user_id, and not Bob himself.
            await bob.trigger(room, "client-typing", {"typing": True})
            typing = await ann.next_event(channel=room, event="client-typing")
            assert (typing.data, typing.user_id) == ({"typing": True}, "bob")
            with pytest.raises(TimeoutError):
                await bob.next_event(event="client-typing", timeout=0.3)

            users = await asyncio.to_thread(python_sdk(server).users_info, room)
            assert sorted(user["id"] for user in users["users"]) == ["ann", "bob"]
        # Leaving the block closed Bob's socket cleanly: the server saw him go.
        removed = await ann.next_event(channel=room, event="pusher_internal:member_removed")
        assert removed.data == {"user_id": "bob"}
        assert set(ann.members[room]) == {"ann"}


async def test_client_events_on_a_private_channel(server: ServerProcess) -> None:
    channel = "private-chat"
    async with connect(server.url, server.key) as a, connect(server.url, server.key) as b:
        for client in (a, b):
            await client.subscribe(channel, auth=client.sign_private(channel, server.secret))
        await a.trigger(channel, "client-message", {"text": "hi"})
        assert (await b.next_event(channel=channel)).data == {"text": "hi"}
        with pytest.raises(ValueError, match="client-"):
            await a.trigger(channel, "message", {})


async def test_subscription_error_is_raised(server: ServerProcess) -> None:
    async with connect(server.url, server.key) as client:
        with pytest.raises(SubscriptionError) as refused:
            await client.subscribe("private-x", auth=f"{server.key}:not-a-signature")
        assert refused.value.status == 401
        assert refused.value.channel == "private-x"
        # Signed for another socket: refused too.
        with pytest.raises(SubscriptionError):
            await client.subscribe("private-y", auth=client.sign_private("private-z",
                                                                         server.secret))
        # The socket stays usable.
        await client.subscribe("public")
        assert not client.closed


async def test_refused_connection_raises_with_the_close_code(server: ServerProcess) -> None:
    with pytest.raises(ClientError) as refused:
        async with connect(server.url, "no-such-key"):
            pass
    assert refused.value.code == 4001
    with pytest.raises(ClientError) as disabled:
        async with connect(server.url, "disabled-key"):
            pass
    assert disabled.value.code == 4003


async def test_answers_server_pings(tmp_path: Path) -> None:
    timers = ManualScheduler()
    config = tmp_path / "pings.toml"
    config.write_text(DEFAULT_CONFIG.replace("activity_timeout = 30",
                                             "activity_timeout = 1\npong_timeout = 1"))
    app = create_app(load_settings(config, env={}), clock=timers.time, scheduler=timers)
    async with GatewayTestServer(app) as served, aiohttp.ClientSession() as session, \
            connect(str(served.make_url("")), "app-key") as client:
        assert client.activity_timeout == 1
        await client.subscribe("ticks")

        async def tick(n: int) -> None:
            """An event the server writes to the client after everything before it."""
            body = json.dumps({"name": "tick", "channels": ["ticks"],
                               "data": json.dumps({"n": n})}).encode()
            path = "/apps/1001/events"
            params = signed_query("POST", path, "app-key", "app-secret", body)
            async with session.post(served.make_url(path), params=params, data=body,
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200
            assert (await client.next_event(channel="ticks")).data == {"n": n}

        # A control socket that never answers pusher:ping is closed with 4201 meanwhile.
        async with session.ws_connect(served.make_url("/app/app-key?protocol=7")) as silent:
            for n in range(2):
                await timers.advance(1)  # both sockets pinged; then the silent one closed
                # The client has read the ping (and sent its pong) before this event...
                await tick(n)
                # ...and the server has read that pong before it answers this subscription.
                await client.subscribe(f"after-ping-{n}")
            async with asyncio.timeout(5):
                async for _ in silent:
                    pass
            assert silent.close_code == 4201
        assert not client.closed
        await tick(2)


async def test_next_event_after_server_close_raises(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(DEFAULT_CONFIG.replace("[server]\n", "[server]\ndrain_seconds = 0\n"))
    async with connect(server.url, server.key) as client:
        # In a thread: the loop must go on reading, to answer the server's closing handshake.
        await asyncio.to_thread(server.stop)
        with pytest.raises(ClientError) as closed:
            await client.next_event(timeout=10)
        assert client.closed
        assert closed.value.code == 4200
