"""The unmodified Python SDK (pusher==3.3.4) against the server, served in this process
through the real listener (conftest's ``served_address``).

The SDK's blocking calls run in a worker thread (``asyncio.to_thread``); deliveries are
observed with raw protocol-7 WebSocket clients. A socket that must receive nothing is checked
by sending ``pusher:ping``: the ``pusher:pong`` must be the next frame.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pusher
import pusher.errors
import pytest
from aiohttp import WSMsgType
from conftest import ServerAddress, python_sdk
from helpers import WsClient, event_text

from pusher_compat import signatures

TIMEOUT = 2.0
MASTER_KEY = b"01234567890123456789012345678901"


class Socket(WsClient):
    """A raw protocol-7 WebSocket client that signs with the app's credentials."""

    key = ServerAddress.key
    secret = ServerAddress.secret

    async def subscribe_with(self, channel: str, auth: dict[str, Any]) -> dict[str, Any]:
        """Subscribe with an auth endpoint's response; return ``subscription_succeeded``."""
        data = {"auth": auth.get("auth", ""), "channel": channel}
        if "channel_data" in auth:
            data["channel_data"] = auth["channel_data"]
        await self.send("pusher:subscribe", data)
        frames = await self.drain()
        assert [(f["event"], f.get("channel")) for f in frames] == [
            ("pusher_internal:subscription_succeeded", channel)
        ], frames
        return frames[0]

    async def subscribe(self, channel: str, user_id: str | None = None) -> None:
        """Subscribe, signing with :mod:`pusher_compat.signatures` where needed."""
        auth: dict[str, Any] = {}
        channel_data = None
        if user_id is not None:
            channel_data = auth["channel_data"] = json.dumps({"user_id": user_id})
        if channel.startswith(("private-", "presence-")):
            string = signatures.channel_string(self.socket_id, channel, channel_data)
            auth["auth"] = signatures.sign_auth(self.key, self.secret, string)
        await self.subscribe_with(channel, auth)

    async def sign_in_with(self, auth: dict[str, Any]) -> None:
        await self.send("pusher:signin", {"auth": auth["auth"], "user_data": auth["user_data"]})
        frames = await self.drain()
        assert [f["event"] for f in frames] == ["pusher:signin_success"], frames


@pytest.fixture
def sdk(served_address: ServerAddress) -> pusher.Pusher:
    return python_sdk(served_address, encryption_master_key_base64=base64.b64encode(MASTER_KEY))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
def connect(served_address: ServerAddress, session: aiohttp.ClientSession
            ) -> Callable[[], Awaitable[Socket]]:
    async def connect() -> Socket:
        return await Socket.handshake(await session.ws_connect(served_address.ws_url()))

    return connect


def call(method: Callable[..., Any], *args: Any, **kwargs: Any) -> Awaitable[Any]:
    """Run a blocking SDK call off the event loop."""
    return asyncio.to_thread(method, *args, **kwargs)


# -- trigger ---------------------------------------------------------------------------------


async def test_trigger_keeps_sdk_json_spacing_byte_for_byte(sdk, connect):
    socket = await connect()
    await socket.subscribe("my-channel")
    data = {"some": "data", "list": [1, 2], "name": "Zoë"}

    assert await call(sdk.trigger, "my-channel", "my-event", data) == {}

    # data_to_string: json.dumps(data, ensure_ascii=False), spaces after ':' and ','.
    sent = '{"some": "data", "list": [1, 2], "name": "Zoë"}'
    assert await socket.text() == event_text("my-event", "my-channel", sent)


async def test_trigger_on_several_channels(sdk, connect):
    news, sport = await connect(), await connect()
    await news.subscribe("news")
    await sport.subscribe("sport")

    assert await call(sdk.trigger, ["news", "sport"], "e", "plain text") == {}

    assert await news.text() == event_text("e", "news", "plain text")
    assert await sport.text() == event_text("e", "sport", "plain text")


async def test_trigger_excludes_socket_id(sdk, connect):
    sender, other = await connect(), await connect()
    await sender.subscribe("chat")
    await other.subscribe("chat")

    assert await call(sdk.trigger, "chat", "e", "x", socket_id=sender.socket_id) == {}

    assert await other.text() == event_text("e", "chat", "x")
    await sender.expect_silent()


async def test_trigger_batch_delivers_each_event(sdk, connect):
    a, b = await connect(), await connect()
    await a.subscribe("news")
    await b.subscribe("private-orders")
    batch = [
        {"channel": "news", "name": "first", "data": {"n": 1}},
        {"channel": "private-orders", "name": "second", "data": "two"},
        {"channel": "news", "name": "third", "data": "3"},
    ]

    assert await call(sdk.trigger_batch, batch) == {}

    assert await a.text() == event_text("first", "news", '{"n": 1}')
    assert await a.text() == event_text("third", "news", "3")
    assert await b.text() == event_text("second", "private-orders", "two")


async def test_trigger_batch_with_info_counts_users_of_presence_channels_only(sdk, connect):
    # pusher==3.3.4's trigger() takes no info; trigger_batch() passes each item's info on.
    socket = await connect()
    await socket.subscribe("my-channel")
    batch = [
        {"channel": channel, "name": "e", "data": "x", "info": "user_count,subscription_count"}
        for channel in ("my-channel", "presence-my-channel")
    ]

    assert await call(sdk.trigger_batch, batch) == {
        "batch": [{"subscription_count": 1}, {"user_count": 0, "subscription_count": 0}]
    }

    assert await socket.text() == event_text("e", "my-channel", "x")


async def test_trigger_over_10240_bytes_is_refused_with_413(sdk, connect):
    socket = await connect()
    await socket.subscribe("chat")

    # pusher==3.3.4 only refuses > 30720 bytes client-side for trigger: the server answers.
    with pytest.raises(pusher.errors.PusherBadStatus, match=r"^413: "):
        await call(sdk.trigger, "chat", "e", "x" * 10241)

    await socket.expect_silent()


async def test_trigger_of_exactly_10240_bytes_is_delivered(sdk, connect):
    socket = await connect()
    await socket.subscribe("chat")
    data = "x" * 10240

    assert await call(sdk.trigger, "chat", "e", data) == {}

    assert await socket.text() == event_text("e", "chat", data)


async def test_wrong_secret_raises_bad_auth(served_address: ServerAddress):
    forger = pusher.Pusher(app_id=served_address.app_id, key=served_address.key,
                           secret="not-the-secret", host=served_address.host,
                           port=served_address.port, ssl=False)

    with pytest.raises(pusher.errors.PusherBadAuth):
        await call(forger.trigger, "chat", "e", "x")


# -- channel queries -------------------------------------------------------------------------


async def test_channels_info_lists_occupied_channels(sdk, connect):
    socket = await connect()
    await socket.subscribe("news")
    await socket.subscribe("presence-room", user_id="1")

    assert await call(sdk.channels_info) == {"channels": {"news": {}, "presence-room": {}}}


async def test_channels_info_with_prefix(sdk, connect):
    socket = await connect()
    for channel in ("news", "private-a", "private-b"):
        await socket.subscribe(channel)

    assert await call(sdk.channels_info, "private-") == {
        "channels": {"private-a": {}, "private-b": {}}
    }


async def test_channels_info_with_presence_prefix_and_user_count(sdk, connect):
    tab1, tab2, other = await connect(), await connect(), await connect()
    await tab1.subscribe("presence-room", user_id="1")
    await tab2.subscribe("presence-room", user_id="1")
    await other.subscribe("presence-room", user_id="2")
    await other.subscribe("news")

    assert await call(sdk.channels_info, "presence-", ["user_count"]) == {
        "channels": {"presence-room": {"user_count": 2}}
    }


async def test_channels_info_user_count_without_presence_prefix_raises_bad_request(sdk):
    with pytest.raises(pusher.errors.PusherBadRequest):
        await call(sdk.channels_info, None, ["user_count"])


async def test_channels_info_empty(sdk):
    assert await call(sdk.channels_info) == {"channels": {}}


async def test_channel_info_counts(sdk, connect):
    tab1, tab2, other = await connect(), await connect(), await connect()
    await tab1.subscribe("presence-room", user_id="1")
    await tab2.subscribe("presence-room", user_id="1")
    await other.subscribe("presence-room", user_id="2")

    info = await call(sdk.channel_info, "presence-room", ["user_count", "subscription_count"])

    assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}


async def test_channel_info_unoccupied(sdk):
    assert await call(sdk.channel_info, "news") == {"occupied": False}


async def test_channel_info_user_count_on_public_channel_raises_bad_request(sdk):
    with pytest.raises(pusher.errors.PusherBadRequest):
        await call(sdk.channel_info, "news", ["user_count"])


async def test_users_info_lists_presence_members(sdk, connect):
    a, b = await connect(), await connect()
    await a.subscribe("presence-room", user_id="1")
    await b.subscribe("presence-room", user_id="2")

    info = await call(sdk.users_info, "presence-room")

    assert set(info) == {"users"}
    assert sorted(info["users"], key=lambda u: u["id"]) == [{"id": "1"}, {"id": "2"}]


async def test_users_info_on_public_channel_raises_bad_request(sdk):
    with pytest.raises(pusher.errors.PusherBadRequest):
        await call(sdk.users_info, "news")


# -- users -----------------------------------------------------------------------------------


async def test_send_to_user_reaches_signed_in_socket(sdk, connect):
    user, stranger = await connect(), await connect()
    await user.sign_in_with(sdk.authenticate_user(user.socket_id, {"id": "42"}))
    await stranger.sign_in_with(sdk.authenticate_user(stranger.socket_id, {"id": "7"}))

    assert await call(sdk.send_to_user, "42", "notify", {"n": 1}) == {}

    assert await user.text() == event_text("notify", "#server-to-user-42", '{"n": 1}')
    await stranger.expect_silent()


async def test_terminate_user_connections_closes_with_4009(sdk, connect):
    user, stranger = await connect(), await connect()
    await user.sign_in_with(sdk.authenticate_user(user.socket_id, {"id": "42"}))
    await stranger.sign_in_with(sdk.authenticate_user(stranger.socket_id, {"id": "7"}))

    assert await call(sdk.terminate_user_connections, "42") == {}

    frame = await user.frame()
    assert frame["event"] == "pusher:error"
    assert frame["data"]["code"] == 4009
    msg = await asyncio.wait_for(user.ws.receive(), TIMEOUT)
    assert msg.type is WSMsgType.CLOSE, msg
    assert msg.data == 4009
    await stranger.expect_silent()


# -- auth endpoint helpers -------------------------------------------------------------------


async def test_authenticate_output_accepted_for_private_channel(sdk, connect):
    socket = await connect()

    frame = await socket.subscribe_with("private-orders",
                                        sdk.authenticate("private-orders", socket.socket_id))

    assert frame == {"event": "pusher_internal:subscription_succeeded",
                     "channel": "private-orders", "data": "{}"}


async def test_authenticate_output_accepted_for_encrypted_channel(sdk, connect):
    socket = await connect()
    auth = sdk.authenticate("private-encrypted-room", socket.socket_id)
    assert "shared_secret" in auth  # pusher-js strips it before subscribing

    await socket.subscribe_with("private-encrypted-room", {"auth": auth["auth"]})


async def test_authenticate_for_another_socket_is_refused(sdk, connect):
    socket, other = await connect(), await connect()
    auth = sdk.authenticate("private-orders", other.socket_id)

    await socket.send("pusher:subscribe", {"auth": auth["auth"], "channel": "private-orders"})

    frames = await socket.drain()
    assert frames[0]["event"] == "pusher:subscription_error"
    assert frames[0]["channel"] == "private-orders"
    assert frames[0]["data"]["status"] == 401


async def test_authenticate_output_accepted_for_presence_channel(sdk, connect):
    socket = await connect()
    member = {"user_id": "10", "user_info": {"name": "Mr. Channels"}}
    auth = sdk.authenticate("presence-room", socket.socket_id, member)
    # json.dumps spacing: the server must verify the string as sent (protocol.md §3.2).
    assert auth["channel_data"] == '{"user_id": "10", "user_info": {"name": "Mr. Channels"}}'

    frame = await socket.subscribe_with("presence-room", auth)

    assert isinstance(frame["data"], str)
    assert json.loads(frame["data"]) == {"presence": {
        "ids": ["10"], "hash": {"10": {"name": "Mr. Channels"}}, "count": 1,
    }}
    assert await call(sdk.users_info, "presence-room") == {"users": [{"id": "10"}]}


async def test_authenticate_user_output_accepted_for_signin(sdk, connect):
    socket = await connect()
    auth = sdk.authenticate_user(socket.socket_id, {"id": "42", "user_info": {"name": "Ann"}})

    await socket.sign_in_with(auth)

    await socket.subscribe_with("#server-to-user-42", {})
