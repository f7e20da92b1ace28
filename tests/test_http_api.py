"""The HTTP API (protocol.md §7, limits §9) through an in-process aiohttp test client.

Requests are signed the way the SDKs sign them (§7.2). Deliveries are observed with real
WebSocket clients connected through the same test client. A socket that must receive nothing
is checked by sending ``pusher:ping`` afterwards: the ``pusher:pong`` must be the next frame.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientResponse, WSMsgType
from aiohttp.test_utils import TestClient
from helpers import GatewayTestServer, WsClient, compact, event_text, eventually, signed_query

from pusher_compat import signatures
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.server import create_app

APP_ID = "1001"
KEY = "app-key"
SECRET = "app-secret"
DISABLED_ID = "2"
DISABLED_KEY = "disabled-key"
DISABLED_SECRET = "s2"
TIMEOUT = 2.0


# -- signed requests -------------------------------------------------------------------------


class Api:
    """Signs requests exactly like the SDKs do (§7.2) and sends them."""

    def __init__(self, client: TestClient, app_id: str = APP_ID, key: str = KEY,
                 secret: str = SECRET) -> None:
        self.client = client
        self.app_id = app_id
        self.key = key
        self.secret = secret

    def signed_query(self, method: str, path: str, body: bytes = b"",
                     query: dict[str, str] | None = None,
                     timestamp: int | None = None) -> dict[str, str]:
        return signed_query(method, path, self.key, self.secret, body, query, timestamp)

    async def request(self, method: str, path: str, body: bytes = b"",
                      query: dict[str, str] | None = None,
                      timestamp: int | None = None) -> ClientResponse:
        params = self.signed_query(method, path, body, query, timestamp)
        headers = {"Content-Type": "application/json"} if body else {}
        return await self.client.request(method, path, params=params, data=body,
                                         headers=headers)

    async def get(self, path: str, **query: str) -> ClientResponse:
        return await self.request("GET", f"/apps/{self.app_id}{path}", query=query)

    async def post(self, path: str, payload: Any) -> ClientResponse:
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        return await self.request("POST", f"/apps/{self.app_id}{path}", body)

    async def trigger(self, **payload: Any) -> ClientResponse:
        return await self.post("/events", payload)


async def expect_json(response: ClientResponse, status: int, body: Any) -> None:
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    assert await response.json() == body


async def expect_error(response: ClientResponse, status: int) -> str:
    """Every error is ``{"error": <string>, "code": <status>}`` (§7.1)."""
    assert response.status == status, await response.text()
    assert response.content_type == "application/json"
    body = await response.json()
    assert set(body) == {"error", "code"}, body
    assert isinstance(body["error"], str)
    assert body["error"]
    assert body["code"] == status
    return body["error"]


# -- WebSocket clients -----------------------------------------------------------------------


class Socket(WsClient):
    """A raw protocol-7 WebSocket client of the test server."""

    @classmethod
    async def connect(cls, client: TestClient) -> Socket:
        return await cls.handshake(await client.ws_connect(f"/app/{KEY}?protocol=7"))

    async def subscribe(self, channel: str, user_id: str | None = None) -> None:
        data: dict[str, Any] = {"auth": "", "channel": channel}
        channel_data = None
        if user_id is not None:
            channel_data = data["channel_data"] = json.dumps({"user_id": user_id})
        if channel.startswith(("private-", "presence-")):
            string = signatures.channel_string(self.socket_id, channel, channel_data)
            data["auth"] = signatures.sign_auth(KEY, SECRET, string)
        await self.send("pusher:subscribe", data)
        frames = await self.drain()
        assert [(f["event"], f.get("channel")) for f in frames] == [
            ("pusher_internal:subscription_succeeded", channel)
        ], frames

    async def unsubscribe(self, channel: str) -> None:
        await self.send("pusher:unsubscribe", {"channel": channel})
        await self.expect_silent()

    async def sign_in(self, user_id: str) -> None:
        user_data = json.dumps({"id": user_id})
        auth = signatures.sign_auth(
            KEY, SECRET, signatures.user_string(self.socket_id, user_data)
        )
        await self.send("pusher:signin", {"auth": auth, "user_data": user_data})
        frames = await self.drain()
        assert [f["event"] for f in frames] == ["pusher:signin_success"], frames

    async def expect_terminated(self) -> None:
        """A ``pusher:error`` 4009 frame, then a close with code 4009 (§7.8)."""
        frame = await self.frame()
        assert frame["event"] == "pusher:error"
        assert set(frame) == {"event", "data"}
        assert frame["data"]["code"] == 4009
        assert isinstance(frame["data"]["message"], str)
        msg = await asyncio.wait_for(self.ws.receive(), TIMEOUT)
        assert msg.type is WSMsgType.CLOSE, msg
        assert msg.data == 4009


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture
def settings() -> Settings:
    return Settings(
        server=ServerConfig(),
        apps=(
            AppConfig(id=APP_ID, key=KEY, secret=SECRET),
            AppConfig(id=DISABLED_ID, key=DISABLED_KEY, secret=DISABLED_SECRET, enabled=False),
        ),
    )


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(GatewayTestServer(create_app(settings)))


@pytest.fixture
def api(client: TestClient) -> Api:
    return Api(client)


@pytest.fixture
def connect(client: TestClient) -> Callable[[], Awaitable[Socket]]:
    return lambda: Socket.connect(client)


# -- POST /events ----------------------------------------------------------------------------


async def test_trigger_delivers_event_frame_with_data_byte_for_byte(api, connect):
    socket = await connect()
    await socket.subscribe("my-channel")
    data = '{"some": "data",  "n": 1.50, "é": "\\u00e9 ü"}'

    await expect_json(await api.trigger(name="my-event", channels=["my-channel"], data=data),
                      200, {})

    assert await socket.text() == event_text("my-event", "my-channel", data)


async def test_trigger_forwards_non_json_string_data_unchanged(api, connect):
    socket = await connect()
    await socket.subscribe("my-channel")

    await expect_json(await api.trigger(name="e", channels=["my-channel"], data="hello"), 200, {})

    assert await socket.text() == event_text("e", "my-channel", "hello")


async def test_trigger_accepts_empty_string_data(api, connect):
    socket = await connect()
    await socket.subscribe("my-channel")

    await expect_json(await api.trigger(name="e", channels=["my-channel"], data=""), 200, {})

    assert await socket.text() == event_text("e", "my-channel", "")


async def test_trigger_with_single_channel_field_php_form(api, connect):
    socket = await connect()
    await socket.subscribe("private-orders.1")

    response = await api.trigger(name="App\\Events\\OrderShipped", channel="private-orders.1",
                                 data='{"id":1}')

    await expect_json(response, 200, {})
    assert await socket.text() == event_text(
        "App\\Events\\OrderShipped", "private-orders.1", '{"id":1}'
    )


async def test_trigger_with_channels_list_delivers_on_each_channel(api, connect):
    first, second, bystander = await connect(), await connect(), await connect()
    await first.subscribe("news")
    await second.subscribe("sport")
    await bystander.subscribe("weather")

    await expect_json(await api.trigger(name="e", channels=["news", "sport"], data="x"), 200, {})

    assert await first.text() == event_text("e", "news", "x")
    assert await second.text() == event_text("e", "sport", "x")
    await bystander.expect_silent()


async def test_trigger_json_encodes_non_string_data(api, connect):
    socket = await connect()
    await socket.subscribe("my-channel")

    response = await api.trigger(name="e", channels=["my-channel"], data={"a": 1, "b": [1, 2]})

    await expect_json(response, 200, {})
    assert await socket.text() == event_text("e", "my-channel", '{"a":1,"b":[1,2]}')


async def test_trigger_socket_id_excludes_only_that_socket(api, connect):
    sender, other = await connect(), await connect()
    await sender.subscribe("chat")
    await other.subscribe("chat")

    response = await api.trigger(name="e", channels=["chat"], data="x", socket_id=sender.socket_id)

    await expect_json(response, 200, {})
    assert await other.text() == event_text("e", "chat", "x")
    await sender.expect_silent()


@pytest.mark.parametrize("path", ["/events", "/batch_events"])
async def test_a_100000_digit_socket_id_is_400(api, path):
    event = {"name": "e", "channel": "chat", "data": "x", "socket_id": "1" * 100_000 + ".1"}
    body = {"batch": [event]} if path == "/batch_events" else event
    where = "$.batch[0].socket_id" if path == "/batch_events" else "$.socket_id"
    await expect_json(await api.post(path, body), 400, {
        "error": f"Invalid request body: {where}: '{'1' * 79}... does not match "
                 r"'^[0-9]{1,20}\\.[0-9]{1,20}$(?!\\n)'",
        "code": 400,
    })


async def test_trigger_unknown_socket_id_excludes_nobody(api, connect):
    socket = await connect()
    await socket.subscribe("chat")

    await expect_json(
        await api.trigger(name="e", channels=["chat"], data="x", socket_id="1.1"), 200, {}
    )

    assert await socket.text() == event_text("e", "chat", "x")


async def test_trigger_info_returns_counts_per_channel(api, connect):
    tab1, tab2, other = await connect(), await connect(), await connect()
    await tab1.subscribe("presence-room", user_id="1")
    await tab2.subscribe("presence-room", user_id="1")
    await other.subscribe("presence-room", user_id="2")

    response = await api.trigger(name="e", channels=["presence-room"], data="x",
                                 info="subscription_count,user_count")

    await expect_json(response, 200, {
        "channels": {"presence-room": {"user_count": 2, "subscription_count": 3}}
    })


async def test_trigger_info_subscription_count_on_public_channels(api, connect):
    a, b, c = await connect(), await connect(), await connect()
    await a.subscribe("news")
    await b.subscribe("news")
    await c.subscribe("sport")

    response = await api.trigger(name="e", channels=["news", "sport"], data="x",
                                 info="subscription_count")

    await expect_json(response, 200, {
        "channels": {"news": {"subscription_count": 2}, "sport": {"subscription_count": 1}}
    })


async def test_trigger_info_reports_user_count_for_presence_channels_only(api, connect):
    socket = await connect()
    await socket.subscribe("my-channel")

    response = await api.trigger(name="e", channels=["my-channel", "presence-my-channel"],
                                 data="x", info="user_count,subscription_count")

    await expect_json(response, 200, {"channels": {
        "my-channel": {"subscription_count": 1},
        "presence-my-channel": {"user_count": 0, "subscription_count": 0},
    }})
    assert await socket.text() == event_text("e", "my-channel", "x")


async def test_trigger_user_count_alone_on_a_public_channel_delivers_and_answers_no_attributes(
        api, connect):
    socket = await connect()
    await socket.subscribe("news")

    response = await api.trigger(name="e", channels=["news"], data="x", info="user_count")

    await expect_json(response, 200, {"channels": {"news": {}}})
    assert await socket.text() == event_text("e", "news", "x")


async def test_trigger_100_channels_is_accepted(api):
    channels = [f"c{i}" for i in range(100)]
    await expect_json(await api.trigger(name="e", channels=channels, data="x"), 200, {})


async def test_trigger_101_channels_is_400(api, connect):
    socket = await connect()
    await socket.subscribe("c0")

    response = await api.trigger(name="e", channels=[f"c{i}" for i in range(101)], data="x")

    await expect_error(response, 400)
    await socket.expect_silent()


@pytest.mark.parametrize(
    "channel", ["bad channel", "bad!", "#not-a-user-channel", "x" * 201],
    ids=["space", "bang", "hash", "201-chars"],
)
async def test_trigger_invalid_channel_name_is_400(api, channel):
    await expect_error(await api.trigger(name="e", channels=[channel], data="x"), 400)


async def test_trigger_with_one_invalid_channel_delivers_nothing(api, connect):
    socket = await connect()
    await socket.subscribe("good")

    await expect_error(await api.trigger(name="e", channels=["good", "bad name"], data="x"), 400)

    await socket.expect_silent()


async def test_trigger_event_name_of_200_chars_is_accepted(api, connect):
    socket = await connect()
    await socket.subscribe("chat")

    await expect_json(await api.trigger(name="e" * 200, channels=["chat"], data="x"), 200, {})

    assert await socket.text() == event_text("e" * 200, "chat", "x")


async def test_trigger_event_name_over_200_chars_is_400(api):
    await expect_error(await api.trigger(name="e" * 201, channels=["chat"], data="x"), 400)


async def test_trigger_pusher_internal_event_name_is_400(api, connect):
    socket = await connect()
    await socket.subscribe("chat")

    response = await api.trigger(name="pusher_internal:member_added", channels=["chat"],
                                 data="{}")

    await expect_error(response, 400)
    await socket.expect_silent()


async def test_trigger_data_over_10240_bytes_is_413(api, connect):
    socket = await connect()
    await socket.subscribe("chat")

    await expect_error(await api.trigger(name="e", channels=["chat"], data="x" * 10241), 413)

    await socket.expect_silent()


async def test_trigger_data_size_counts_utf8_bytes(api):
    data = "é" * 5121  # 5121 characters, 10242 bytes
    await expect_error(await api.trigger(name="e", channels=["chat"], data=data), 413)


async def test_trigger_data_of_exactly_10240_bytes_is_accepted(api, connect):
    socket = await connect()
    await socket.subscribe("chat")
    data = "x" * 10240

    await expect_json(await api.trigger(name="e", channels=["chat"], data=data), 200, {})

    assert await socket.text() == event_text("e", "chat", data)


async def test_trigger_body_not_json_is_400(api):
    await expect_error(await api.post("/events", b"name=e&channels=chat"), 400)


@pytest.mark.parametrize(
    "payload",
    [
        {"channels": ["chat"], "data": "x"},
        {"name": "e", "channels": ["chat"]},
        {"name": "e", "data": "x"},
        {"name": "e", "channels": [], "data": "x"},
        {"name": 5, "channels": ["chat"], "data": "x"},
    ],
    ids=["missing-name", "missing-data", "missing-channels", "empty-channels", "name-not-string"],
)
async def test_trigger_body_missing_or_wrong_field_is_400(api, payload):
    await expect_error(await api.post("/events", payload), 400)


# -- POST /batch_events ----------------------------------------------------------------------


async def test_batch_of_10_events_delivers_each_in_order(api, connect):
    socket = await connect()
    await socket.subscribe("chat")
    batch = [{"name": f"e{i}", "channel": "chat", "data": f"d{i}"} for i in range(10)]

    await expect_json(await api.post("/batch_events", {"batch": batch}), 200, {})

    for i in range(10):
        assert await socket.text() == event_text(f"e{i}", "chat", f"d{i}")


async def test_batch_delivers_each_item_on_its_own_channel_with_its_exclusion(api, connect):
    sender, other = await connect(), await connect()
    await sender.subscribe("a")
    await other.subscribe("a")
    await other.subscribe("b")
    batch = [
        {"name": "one", "channel": "a", "data": "1", "socket_id": sender.socket_id},
        {"name": "two", "channel": "b", "data": "2"},
    ]

    await expect_json(await api.post("/batch_events", {"batch": batch}), 200, {})

    assert await other.text() == event_text("one", "a", "1")
    assert await other.text() == event_text("two", "b", "2")
    await sender.expect_silent()


async def test_batch_of_11_events_is_400(api, connect):
    socket = await connect()
    await socket.subscribe("chat")
    batch = [{"name": f"e{i}", "channel": "chat", "data": "x"} for i in range(11)]

    await expect_error(await api.post("/batch_events", {"batch": batch}), 400)

    await socket.expect_silent()


async def test_batch_with_one_invalid_item_delivers_nothing(api, connect):
    socket = await connect()
    await socket.subscribe("chat")
    batch = [
        {"name": "ok", "channel": "chat", "data": "x"},
        {"name": "too-big", "channel": "chat", "data": "x" * 10241},
    ]

    await expect_error(await api.post("/batch_events", {"batch": batch}), 413)

    await socket.expect_silent()


async def test_batch_with_info_returns_attributes_aligned_by_index(api, connect):
    a, b = await connect(), await connect()
    await a.subscribe("news")
    await b.subscribe("news")
    await a.subscribe("presence-room", user_id="1")
    batch = [
        {"name": "e", "channel": "news", "data": "x", "info": "subscription_count"},
        {"name": "e", "channel": "news", "data": "y"},
        {"name": "e", "channel": "presence-room", "data": "z", "info": "user_count"},
    ]

    response = await api.post("/batch_events", {"batch": batch})

    await expect_json(response, 200, {
        "batch": [{"subscription_count": 2}, {}, {"user_count": 1}]
    })


async def test_batch_item_asking_user_count_of_a_public_channel_is_delivered(api, connect):
    socket = await connect()
    await socket.subscribe("news")
    batch = [
        {"name": "e", "channel": "news", "data": "x", "info": "user_count,subscription_count"},
        {"name": "e", "channel": "presence-room", "data": "y", "info": "user_count"},
    ]

    response = await api.post("/batch_events", {"batch": batch})

    await expect_json(response, 200, {
        "batch": [{"subscription_count": 1}, {"user_count": 0}]
    })
    assert await socket.text() == event_text("e", "news", "x")


# -- GET /channels ---------------------------------------------------------------------------


async def test_channels_lists_only_occupied_channels(api, connect):
    socket = await connect()
    await socket.subscribe("news")
    await socket.subscribe("presence-room", user_id="1")
    await socket.subscribe("left")
    await socket.unsubscribe("left")

    await expect_json(await api.get("/channels"), 200,
                      {"channels": {"news": {}, "presence-room": {}}})


async def test_channels_excludes_user_channels(api, connect):
    socket = await connect()
    await socket.sign_in("42")
    await socket.subscribe("#server-to-user-42")
    await socket.subscribe("news")

    await expect_json(await api.get("/channels"), 200, {"channels": {"news": {}}})


async def test_channels_filter_by_prefix(api, connect):
    socket = await connect()
    for channel in ("news", "private-a", "private-b", "presence-room"):
        await socket.subscribe(channel, user_id="1" if channel.startswith("presence-") else None)

    await expect_json(await api.get("/channels", filter_by_prefix="private-"), 200,
                      {"channels": {"private-a": {}, "private-b": {}}})


async def test_channels_user_count_with_presence_prefix(api, connect):
    a, b, c = await connect(), await connect(), await connect()
    await a.subscribe("presence-room", user_id="1")
    await b.subscribe("presence-room", user_id="1")
    await c.subscribe("presence-room", user_id="2")
    await c.subscribe("presence-lobby", user_id="2")
    await c.subscribe("news")

    response = await api.get("/channels", filter_by_prefix="presence-", info="user_count")

    await expect_json(response, 200, {
        "channels": {"presence-room": {"user_count": 2}, "presence-lobby": {"user_count": 1}}
    })


@pytest.mark.parametrize("prefix", [None, "private-", "pres"], ids=["no-prefix", "private", "pres"])
async def test_channels_user_count_without_presence_prefix_is_400(api, prefix):
    query = {"info": "user_count"}
    if prefix is not None:
        query["filter_by_prefix"] = prefix
    await expect_error(await api.get("/channels", **query), 400)


async def test_channels_subscription_count(api, connect):
    a, b = await connect(), await connect()
    await a.subscribe("news")
    await b.subscribe("news")

    await expect_json(await api.get("/channels", info="subscription_count"), 200,
                      {"channels": {"news": {"subscription_count": 2}}})


async def test_channels_empty_is_an_empty_object(api):
    await expect_json(await api.get("/channels"), 200, {"channels": {}})


async def test_channels_empty_after_last_socket_disconnects(api, connect):
    socket = await connect()
    await socket.subscribe("news")
    await socket.ws.close()

    # The server forgets the socket once its close handshake ends: poll briefly.
    async def channels() -> Any:
        return await (await api.get("/channels")).json()

    await eventually(channels, lambda body: body == {"channels": {}}, TIMEOUT)


# -- GET /channels/{name} --------------------------------------------------------------------


async def test_channel_unoccupied(api):
    await expect_json(await api.get("/channels/news"), 200, {"occupied": False})


async def test_channel_unoccupied_reports_requested_counts_as_zero(api):
    await expect_json(await api.get("/channels/news", info="subscription_count"), 200,
                      {"occupied": False, "subscription_count": 0})


async def test_channel_occupied_without_info(api, connect):
    socket = await connect()
    await socket.subscribe("news")

    await expect_json(await api.get("/channels/news"), 200, {"occupied": True})


async def test_channel_occupied_presence_counts(api, connect):
    a, b, c = await connect(), await connect(), await connect()
    await a.subscribe("presence-room", user_id="1")
    await b.subscribe("presence-room", user_id="1")
    await c.subscribe("presence-room", user_id="2")

    response = await api.get("/channels/presence-room", info="user_count,subscription_count")

    await expect_json(response, 200,
                      {"occupied": True, "user_count": 2, "subscription_count": 3})


async def test_channel_user_count_on_non_presence_channel_is_400(api):
    await expect_error(await api.get("/channels/news", info="user_count"), 400)


# -- GET /channels/{name}/users --------------------------------------------------------------


async def test_users_lists_distinct_presence_members(api, connect):
    a, b, c = await connect(), await connect(), await connect()
    await a.subscribe("presence-room", user_id="1")
    await b.subscribe("presence-room", user_id="1")
    await c.subscribe("presence-room", user_id="2")

    response = await api.get("/channels/presence-room/users")

    assert response.status == 200, await response.text()
    body = await response.json()
    assert set(body) == {"users"}
    assert sorted(body["users"], key=lambda u: u["id"]) == [{"id": "1"}, {"id": "2"}]


async def test_users_of_empty_presence_channel(api):
    await expect_json(await api.get("/channels/presence-room/users"), 200, {"users": []})


@pytest.mark.parametrize("channel", ["news", "private-room"])
async def test_users_on_non_presence_channel_is_400(api, channel):
    await expect_error(await api.get(f"/channels/{channel}/users"), 400)


# -- authentication and app lookup -----------------------------------------------------------


async def test_unknown_app_id_is_404(client):
    unknown = Api(client, app_id="999")
    await expect_error(await unknown.get("/channels"), 404)


async def test_bad_signature_is_401(client, connect):
    socket = await connect()
    await socket.subscribe("chat")
    forger = Api(client, secret="not-the-secret")

    await expect_error(await forger.trigger(name="e", channels=["chat"], data="x"), 401)

    await socket.expect_silent()


async def test_wrong_auth_key_for_app_is_401(client):
    wrong_key = Api(client, key=DISABLED_KEY, secret=DISABLED_SECRET)
    await expect_error(await wrong_key.get("/channels"), 401)


async def test_missing_signature_is_401(client):
    response = await client.get(f"/apps/{APP_ID}/channels", params={
        "auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
    })
    await expect_error(response, 401)


async def test_stale_timestamp_is_401(api):
    path = f"/apps/{APP_ID}/channels"
    response = await api.request("GET", path, timestamp=int(time.time()) - 700)
    message = await expect_error(response, 401)
    assert message.startswith("Timestamp expired")


async def test_body_md5_mismatch_is_401(api):
    path = f"/apps/{APP_ID}/events"
    body = b'{"name":"e","channels":["chat"],"data":"x"}'
    params = api.signed_query("POST", path, body)
    other = b'{"name":"e","channels":["chat"],"data":"y"}'
    response = await api.client.post(path, params=params, data=other,
                                     headers={"Content-Type": "application/json"})
    await expect_error(response, 401)


async def test_disabled_app_is_403(client):
    disabled = Api(client, app_id=DISABLED_ID, key=DISABLED_KEY, secret=DISABLED_SECRET)
    await expect_error(await disabled.get("/channels"), 403)


# -- terminate_connections -------------------------------------------------------------------


async def _users_42_and_others(connect) -> tuple[list[Socket], list[Socket]]:
    """Two sockets signed in as 42; one signed in as 7; one in presence as 42 without sign-in."""
    tab1, tab2, seven, presence_only = [await connect() for _ in range(4)]
    await tab1.sign_in("42")
    await tab2.sign_in("42")
    await seven.sign_in("7")
    await presence_only.subscribe("presence-room", user_id="42")
    return [tab1, tab2], [seven, presence_only]


async def test_terminate_connections_closes_signed_in_sockets_with_4009(api, connect):
    targets, others = await _users_42_and_others(connect)

    await expect_json(await api.post("/users/42/terminate_connections", {}), 200, {})

    for socket in targets:
        await socket.expect_terminated()
    for socket in others:
        await socket.expect_silent()


async def test_terminate_connections_unprefixed_path_identified_by_auth_key(api, connect):
    targets, others = await _users_42_and_others(connect)

    response = await api.request("POST", "/users/42/terminate_connections", b"{}")

    await expect_json(response, 200, {})
    for socket in targets:
        await socket.expect_terminated()
    for socket in others:
        await socket.expect_silent()


async def test_terminate_connections_unprefixed_unknown_auth_key_is_401(client):
    stranger = Api(client, key="nobody", secret="nothing")
    response = await stranger.request("POST", "/users/42/terminate_connections", b"{}")
    await expect_error(response, 401)


async def test_terminate_connections_for_user_without_sockets(api):
    await expect_json(await api.post("/users/nobody/terminate_connections", {}), 200, {})


# -- send to user ----------------------------------------------------------------------------


async def test_send_to_user_reaches_every_socket_signed_in_as_that_user(api, connect):
    tab1, tab2, other, anonymous = [await connect() for _ in range(4)]
    await tab1.sign_in("42")
    await tab2.sign_in("42")
    await other.sign_in("7")

    response = await api.trigger(name="notify", channels=["#server-to-user-42"],
                                 data='{"n": 1}')

    await expect_json(response, 200, {})
    expected = event_text("notify", "#server-to-user-42", '{"n": 1}')
    assert await tab1.text() == expected
    assert await tab2.text() == expected
    await other.expect_silent()
    await anonymous.expect_silent()


async def test_send_to_user_php_single_channel_form(api, connect):
    socket = await connect()
    await socket.sign_in("42")

    response = await api.trigger(name="notify", channel="#server-to-user-42", data="hi")

    await expect_json(response, 200, {})
    assert await socket.text() == event_text("notify", "#server-to-user-42", "hi")


async def test_send_to_user_socket_id_excludes_that_socket(api, connect):
    sender, other_tab = await connect(), await connect()
    await sender.sign_in("42")
    await other_tab.sign_in("42")

    response = await api.trigger(name="notify", channels=["#server-to-user-42"], data="hi",
                                 socket_id=sender.socket_id)

    await expect_json(response, 200, {})
    assert await other_tab.text() == event_text("notify", "#server-to-user-42", "hi")
    await sender.expect_silent()


# -- cache channels ---------------------------------------------------------------------------


async def test_event_on_cache_channel_is_replayed_to_a_later_subscriber(api: Api,
                                                                        client: TestClient
                                                                        ) -> None:
    response = await api.trigger(name="price", channel="cache-prices", data='{"p":1}')
    await expect_json(response, 200, {})
    socket = await Socket.connect(client)
    await socket.send("pusher:subscribe", {"auth": "", "channel": "cache-prices"})
    assert [await socket.text() for _ in range(2)] == [
        compact({"event": "pusher_internal:subscription_succeeded", "channel": "cache-prices",
                 "data": "{}"}),
        event_text("price", "cache-prices", '{"p":1}'),
    ]


async def test_channel_info_cache_reports_last_data_and_ttl(api: Api) -> None:
    await api.trigger(name="price", channel="cache-prices", data="42")
    await expect_json(await api.get("/channels/cache-prices", info="cache"), 200,
                      {"occupied": False, "cache": {"data": "42", "ttl": 1800}})


async def test_channel_info_cache_is_null_without_an_event(api: Api) -> None:
    await expect_json(await api.get("/channels/cache-empty", info="cache"), 200,
                      {"occupied": False, "cache": None})


async def test_channel_info_cache_on_a_non_cache_channel_is_400(api: Api) -> None:
    message = await expect_error(await api.get("/channels/news", info="cache"), 400)
    assert message == "cache is only available for cache channels: news"
