"""Hostile input: malformed, oversized, binary and invalid-UTF-8 frames, huge presence payloads,
subscribe floods, connection churn, deep JSON nesting, signature fuzzing and bad HTTP bodies.

Each attack gets its documented error (protocol.md §1.4, §3.4, §7.1, §9), only the attacking
socket is affected, and every test over a real socket ends by proving that a client connected
*before* the attack is still served: its ``pusher:ping`` is answered and an event published
after the attack reaches it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
from helpers import GatewayTestServer, ListSink, error, signed_query, until
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from pusher_compat import signatures, wire
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.connection import Connection, State
from pusher_compat.hub import Hub
from pusher_compat.server import HUB, create_app
from pusher_compat.signatures import RequestSignatureError

APP_ID = "1"
KEY = "app-key"
SECRET = "app-secret"
APP = AppConfig(id=APP_ID, key=KEY, secret=SECRET)
WS_PATH = f"/app/{KEY}?protocol=7"
HEALTHY_CHANNEL = "healthy"
PING = '{"event":"pusher:ping","data":{}}'
PONG = {"event": "pusher:pong", "data": "{}"}
INVALID_JSON = "Invalid JSON: the message could not be parsed"
TOO_DEEP = "Invalid message: nested deeper than 100 levels"
ROOT = Path(__file__).resolve().parent.parent

ClientFactory = Callable[..., Awaitable[TestClient]]

# Close codes a server may use: the Pusher close-code ranges of the wire table (43xx are
# pusher:error codes only, never close codes: protocol.md §1.4) and the RFC 6455 1xxx codes.
ALLOWED_CLOSE_CODES = frozenset(int(c) for c in wire.Code if int(c) < 4300) | frozenset(
    range(1000, 2000)
)



def subscription_error(channel: str, type_: str, message: str, status: int) -> dict[str, Any]:
    return {"event": "pusher:subscription_error", "channel": channel,
            "data": {"type": type_, "error": message, "status": status}}


def bad_signature(socket_id: str, channel: str, channel_data: str | None, auth: str
                  ) -> list[dict[str, Any]]:
    """The two frames of a refused private/presence subscription (protocol.md §3.4)."""
    string = signatures.channel_string(socket_id, channel, channel_data)
    message = f"Invalid signature: Expected HMAC SHA256 hex digest of {string}, but got {auth}"
    return [subscription_error(channel, "AuthError", message, 401), error(None, message)]


def subscribe_text(channel: str, auth: str = "", channel_data: str | None = None) -> str:
    data: dict[str, Any] = {"auth": auth, "channel": channel}
    if channel_data is not None:
        data["channel_data"] = channel_data
    return json.dumps({"event": "pusher:subscribe", "data": data})


def server_settings(app: AppConfig = APP, **server: Any) -> Settings:
    return Settings(server=ServerConfig(**server), apps=(app,))


# -- a socket over the real aiohttp stack ------------------------------------------------------


class Socket:
    """One WebSocket client of the test server, past its handshake."""

    def __init__(self, ws: Any, socket_id: str) -> None:
        self.ws = ws
        self.socket_id = socket_id

    @classmethod
    async def connect(cls, client: TestClient) -> Socket:
        ws = await client.ws_connect(WS_PATH)
        first = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
        assert first["event"] == "pusher:connection_established"
        return cls(ws, json.loads(first["data"])["socket_id"])

    async def send(self, text: str) -> None:
        await self.ws.send_str(text)

    async def frame(self) -> dict[str, Any]:
        message = await asyncio.wait_for(self.ws.receive(), 5)
        assert message.type is WSMsgType.TEXT, (message.type, message.data)
        return json.loads(message.data)

    async def frames(self, count: int) -> list[dict[str, Any]]:
        return [await self.frame() for _ in range(count)]

    async def close_frame(self) -> tuple[WSMsgType, Any]:
        """What comes next, expected to be the server's close: ``(type, code)``."""
        message = await asyncio.wait_for(self.ws.receive(), 5)
        return message.type, message.data

    async def ping(self) -> None:
        await self.send(PING)
        assert await self.frame() == PONG

    async def subscribe(self, channel: str) -> None:
        await self.send(subscribe_text(channel))
        assert await self.frame() == {"event": "pusher_internal:subscription_succeeded",
                                      "channel": channel, "data": "{}"}

    def auth(self, channel: str, channel_data: str | None = None) -> str:
        string = signatures.channel_string(self.socket_id, channel, channel_data)
        return signatures.sign_auth(KEY, SECRET, string)


async def assert_still_served(app: web.Application, healthy: Socket,
                              publish: bool = True) -> None:
    """The healthy client answers a ping, and (when subscribed) gets a published event."""
    await healthy.ping()
    if publish:
        frame = wire.event_frame("still-served", '{"ok":true}', HEALTHY_CHANNEL)
        app[HUB].publish(APP_ID, HEALTHY_CHANNEL, frame)
        assert await healthy.frame() == {"event": "still-served", "channel": HEALTHY_CHANNEL,
                                         "data": '{"ok":true}'}


Started = tuple[web.Application, TestClient, Socket]


@pytest.fixture
def start(aiohttp_client: ClientFactory) -> Callable[..., Awaitable[Started]]:
    """Start a server with the given settings and connect the healthy client first."""

    async def starter(settings: Settings | None = None, subscribe: bool = True) -> Started:
        app = create_app(settings or server_settings())
        client = await aiohttp_client(GatewayTestServer(app))
        healthy = await Socket.connect(client)
        if subscribe:
            await healthy.subscribe(HEALTHY_CHANNEL)
        return app, client, healthy

    return starter


# -- frames the WebSocket layer refuses -------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b'{"event":"pusher:ping","data":"\xc3\x28"}', b"\xc0\xaf", b"\xed\xa0\x80",
     b'{"event":"pusher:ping","data":"\xe2\x82'],
    ids=["invalid-bytes", "bad-continuation", "overlong", "encoded-surrogate", "truncated"],
)
async def test_invalid_utf8_text_frame_closes_that_socket_with_1007(
    start: Callable[..., Awaitable[Started]], payload: bytes
) -> None:
    app, client, healthy = await start()
    attacker = await Socket.connect(client)
    await attacker.ws.send_frame(payload, WSMsgType.TEXT)
    assert await attacker.close_frame() == (WSMsgType.CLOSE, 1007)
    await until(lambda: app[HUB].connection_count() == 1, 5.0)
    await assert_still_served(app, healthy)


async def test_flood_of_binary_frames_gets_one_error_each_and_the_socket_lives(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start()
    attacker = await Socket.connect(client)
    for i in range(200):
        await attacker.ws.send_bytes(bytes([i]) * (i + 1))
    assert await attacker.frames(200) == [error(None, "Binary frames are not supported")] * 200
    await attacker.ping()
    await assert_still_served(app, healthy)


async def test_fifty_oversized_frames_from_new_sockets_each_close_1009(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start(server_settings(max_message_bytes=1024))
    for i in range(50):
        attacker = await Socket.connect(client)
        if i % 2:
            await attacker.ws.send_bytes(b"\x00" * 1025)
        else:
            await attacker.send('{"event":"pusher:ping","data":"' + "x" * (1024 + i) + '"}')
        assert await attacker.close_frame() == (WSMsgType.CLOSE, 1009), i
    await until(lambda: app[HUB].connection_count() == 1, 5.0)
    await assert_still_served(app, healthy)


# -- huge presence payloads --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user_id", "user_info", "message", "status"),
    [
        ("hostile", {"blob": "x" * 100_000},
         "user_info is 100011 bytes, over the 1024 bytes allowed", 4301),
        ("u" * 129, {"name": "long id"}, "user_id is longer than 128 characters", 4009),
    ],
    ids=["user-info-100kb", "user-id-129-chars"],
)
async def test_huge_presence_member_is_refused_limit_reached_and_no_member_added(
    start: Callable[..., Awaitable[Started]], user_id: str, user_info: Any, message: str,
    status: int,
) -> None:
    app, client, healthy = await start(server_settings(max_message_bytes=1 << 20))
    attacker = await Socket.connect(client)
    channel = "presence-room"
    channel_data = json.dumps({"user_id": user_id, "user_info": user_info})
    await attacker.send(subscribe_text(channel, attacker.auth(channel, channel_data),
                                       channel_data))
    assert await attacker.frames(2) == [
        subscription_error(channel, "LimitReached", message, status), error(None, message)
    ]
    assert app[HUB].channel(APP_ID, channel) is None
    await attacker.ping()
    await assert_still_served(app, healthy)


# -- floods on one socket, churn of many -------------------------------------------------------


async def test_5000_subscribe_unsubscribe_frames_on_1000_channels_leave_no_channel(
    start: Callable[..., Awaitable[Started]],
) -> None:
    # The hub's bookkeeping under churn, not the subscribe rate limit, is what is tested here.
    unthrottled = AppConfig(id=APP_ID, key=KEY, secret=SECRET, max_subscriptions_per_second=0)
    app, client, healthy = await start(server_settings(unthrottled), subscribe=False)
    flooder = await Socket.connect(client)
    names = [f"flood-{i}" for i in range(1000)]

    async def flood() -> None:
        # 3,000 subscribes (each channel three times: repeats re-send success, no duplicate).
        for batch in range(6):
            for i in range(batch * 500, batch * 500 + 500):
                await flooder.send(subscribe_text(names[i % 1000]))
            for i in range(batch * 500, batch * 500 + 500):
                assert await flooder.frame() == {
                    "event": "pusher_internal:subscription_succeeded",
                    "channel": names[i % 1000], "data": "{}",
                }
        channels = list(app[HUB].channels(APP_ID))
        assert sorted(c.name for c in channels) == sorted(names)
        assert all(c.subscription_count == 1 for c in channels)
        # 2,000 unsubscribes (each channel twice: the second is a silent no-op).
        for i in range(2000):
            await flooder.send(json.dumps(
                {"event": "pusher:unsubscribe", "data": {"channel": names[i % 1000]}}
            ))
        await flooder.ping()  # nothing else was answered: the pong comes first

    await asyncio.wait_for(flood(), 30)
    assert list(app[HUB].channels(APP_ID)) == []
    await assert_still_served(app, healthy, publish=False)


async def test_200_connect_subscribe_close_cycles_leave_only_the_healthy_connection(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start()

    async def churn() -> None:
        for i in range(200):
            sock = await Socket.connect(client)
            await sock.subscribe(f"churn-{i % 10}")
            channel = f"presence-churn-{i % 3}"
            channel_data = json.dumps({"user_id": str(i % 7)})
            await sock.send(subscribe_text(channel, sock.auth(channel, channel_data),
                                           channel_data))
            assert (await sock.frame())["event"] == "pusher_internal:subscription_succeeded"
            if i % 2:
                await sock.ws.close()
            else:  # vanish without a close handshake
                sock.ws._writer.transport.abort()
                await sock.ws.close()  # only frees the client's connection-pool slot

    await asyncio.wait_for(churn(), 30)
    await until(lambda: app[HUB].connection_count() == 1, 5.0)
    assert [c.name for c in app[HUB].channels(APP_ID)] == [HEALTHY_CHANNEL]
    await assert_still_served(app, healthy)


# -- deep JSON nesting -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[" * 100_000 + "]" * 100_000, error(None, INVALID_JSON)),
        ('{"event":"pusher:ping","data":' + "[" * 100_000 + "]" * 100_000 + "}",
         error(None, INVALID_JSON)),
        # A string data is parsed as JSON when it can be; here it cannot, and stays a string.
        ('{"event":"pusher:subscribe","data":"' + "[" * 100_000 + '"}',
         error(None, "Invalid pusher:subscribe: $: '" + "[" * 79
               + "... is not of type 'object'")),
    ],
    ids=["whole-message", "in-data", "in-string-data"],
)
async def test_100k_nested_arrays_get_an_error_and_the_socket_lives(
    start: Callable[..., Awaitable[Started]], text: str, expected: dict[str, Any]
) -> None:
    app, client, healthy = await start(server_settings(max_message_bytes=1 << 20))
    attacker = await Socket.connect(client)
    await attacker.send(text)
    assert await attacker.frame() == expected
    await attacker.ping()
    await assert_still_served(app, healthy)


async def test_json_nested_just_under_the_parser_limit_gets_an_error_not_a_crash(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start()
    attacker = await Socket.connect(client)
    await attacker.send("[" * 1000 + "]" * 1000)
    try:
        assert await attacker.frame() == error(None, TOO_DEEP)
        await attacker.ping()
    finally:
        await assert_still_served(app, healthy)


async def test_client_event_data_nested_300_deep_gets_an_error_not_a_crash(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start()
    attacker = await Socket.connect(client)
    await attacker.send(subscribe_text("private-deep", attacker.auth("private-deep")))
    assert (await attacker.frame())["event"] == "pusher_internal:subscription_succeeded"
    nested = "[" * 300 + "]" * 300
    await attacker.send('{"event":"client-x","channel":"private-deep","data":' + nested + "}")
    try:
        assert await attacker.frame() == error(None, TOO_DEEP)
        await attacker.ping()
    finally:
        await assert_still_served(app, healthy)


async def test_presence_user_info_nested_300_deep_gets_an_error_not_a_crash(
    start: Callable[..., Awaitable[Started]],
) -> None:
    app, client, healthy = await start()
    attacker = await Socket.connect(client)
    channel = "presence-deep"
    channel_data = '{"user_id":"1","user_info":' + "[" * 300 + "]" * 300 + "}"
    await attacker.send(subscribe_text(channel, attacker.auth(channel, channel_data),
                                       channel_data))
    try:
        reason = "channel_data must be a JSON object with a user_id"
        assert [await attacker.frame() for _ in range(2)] == [
            {"event": "pusher:subscription_error", "channel": channel,
             "data": {"type": "AuthError", "error": reason, "status": 401}},
            error(None, reason),
        ]
        await attacker.ping()
        assert app[HUB].channel(APP_ID, channel) is None
    finally:
        await assert_still_served(app, healthy)


# -- fuzzing the protocol core -----------------------------------------------------------------

FUZZ_PRIVATE = "private-fuzz"
FUZZ_PRESENCE = "presence-fuzz"
KNOWN_EVENTS = ["pusher:ping", "pusher:pong", "pusher:subscribe", "pusher:unsubscribe",
                "pusher:signin", "client-x", "client-typing", "pusher:dance", "", "other"]
CHANNEL_NAMES = [FUZZ_PRIVATE, FUZZ_PRESENCE, "public", "cache-x", "private-encrypted-x",
                 "presence-cache-x", "#server-to-user-1", "#server-to-user-", "bad name", "",
                 "x" * 201]

_chars = st.characters(codec="utf-8")
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(_chars, max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(_chars, max_size=8), inner, max_size=4),
    max_leaves=12,
)
channel_names = st.sampled_from(CHANNEL_NAMES) | st.text(_chars, max_size=30)
subscribe_data = st.fixed_dictionaries(
    {"channel": channel_names},
    optional={
        "auth": st.text(_chars, max_size=80) | st.just(f"{KEY}:" + "0" * 64),
        "channel_data": st.text(_chars, max_size=40)
        | st.builds(lambda uid, info: json.dumps({"user_id": uid, "user_info": info}),
                    json_values, json_values),
    },
)
signin_data = st.fixed_dictionaries(
    {}, optional={"auth": st.text(_chars, max_size=80), "user_data": st.text(_chars, max_size=40)
                  | json_values.map(json.dumps)},
)
event_data = json_values | json_values.map(json.dumps) | subscribe_data | signin_data
messages = st.fixed_dictionaries(
    {"event": st.sampled_from(KNOWN_EVENTS) | st.text(_chars, max_size=20)},
    optional={"data": event_data | event_data.map(json.dumps), "channel": channel_names},
).map(json.dumps)


def fuzz_connection() -> tuple[Hub, Connection, ListSink]:
    """An open connection already in a private and a presence channel (so client events pass
    the subscription check and reach data encoding)."""
    hub = Hub()
    sink = ListSink()
    connection = Connection(APP, ServerConfig(), hub, sink)
    connection.open()
    auth = signatures.sign_auth(KEY, SECRET, f"{connection.socket_id}:{FUZZ_PRIVATE}")
    connection.receive(subscribe_text(FUZZ_PRIVATE, auth))
    channel_data = '{"user_id":"fuzzer"}'
    auth = signatures.sign_auth(
        KEY, SECRET, f"{connection.socket_id}:{FUZZ_PRESENCE}:{channel_data}"
    )
    connection.receive(subscribe_text(FUZZ_PRESENCE, auth, channel_data))
    assert [m["event"] for m in sink.take()] == [
        "pusher:connection_established", "pusher_internal:subscription_succeeded",
        "pusher_internal:subscription_succeeded",
    ]
    assert set(connection.channels) == {FUZZ_PRIVATE, FUZZ_PRESENCE}
    return hub, connection, sink


def check_fuzzed(hub: Hub, connection: Connection, sink: ListSink, texts: list[str]) -> None:
    for text in texts:
        connection.receive(text)  # must never raise
    for message in sink.messages():  # unframe checks the frame header too
        assert isinstance(message, dict)
        assert isinstance(message.get("event"), str), message
    for code, _ in sink.closes:
        assert code in ALLOWED_CLOSE_CODES, code
    if connection.state is State.OPEN:
        sink.frames.clear()
        connection.receive(PING)
        assert sink.messages() == [PONG]
        connection.closed()
    # Whatever happened, nothing of the connection stays in the hub.
    assert hub.connection_count() == 0
    assert list(hub.channels(APP_ID)) == []


@settings(max_examples=300, deadline=None, database=None)
@given(texts=st.lists(st.text(_chars, max_size=200), min_size=1, max_size=5))
def test_fuzzed_text_never_raises_and_only_sends_pusher_frames(texts: list[str]) -> None:
    check_fuzzed(*fuzz_connection(), texts)


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(texts=st.lists(messages, min_size=1, max_size=8))
def test_fuzzed_known_events_never_raise_and_only_send_pusher_frames(texts: list[str]) -> None:
    check_fuzzed(*fuzz_connection(), texts)


# -- signature fuzzing -------------------------------------------------------------------------

AUTH_CHANNELS = ["private-x", "private-encrypted-x", "private-cache-x", "presence-x",
                 "presence-cache-x"]
PRESENCE_DATA = '{"user_id":"10","user_info":{"name":"Mr. Channels"}}'
HEX = "0123456789abcdef"


def fresh_connection() -> tuple[Hub, Connection, ListSink]:
    hub = Hub()
    sink = ListSink()
    connection = Connection(APP, ServerConfig(), hub, sink)
    connection.open()
    sink.take()
    return hub, connection, sink


def channel_data_for(channel: str) -> str | None:
    return PRESENCE_DATA if channel.startswith("presence-") else None


def assert_refused(channel: str, auth: str, channel_data: str | None) -> None:
    hub, connection, sink = fresh_connection()
    connection.receive(subscribe_text(channel, auth, channel_data))
    assert sink.take() == bad_signature(connection.socket_id, channel, channel_data, auth)
    assert connection.channels == {}
    assert hub.channel(APP_ID, channel) is None
    assert connection.state is State.OPEN and sink.closes == []


random_auth = (
    st.text(_chars, max_size=100)
    | st.builds(lambda key, digest: f"{key}:{digest}",
                st.sampled_from([KEY, "other-key", ""]) | st.text(_chars, max_size=20),
                st.text(HEX, min_size=64, max_size=64) | st.text(_chars, max_size=70))
)


@settings(max_examples=300, deadline=None, database=None)
@given(channel=st.sampled_from(AUTH_CHANNELS), auth=random_auth)
def test_random_auth_is_always_refused(channel: str, auth: str) -> None:
    assert_refused(channel, auth, channel_data_for(channel))


def mutate(auth: str, kind: str, position: float, choice: str) -> str:
    key, digest = auth.split(":")
    at = int(position * (len(digest) - 1))
    if kind == "flip-hex":
        replacement = HEX[(HEX.index(digest[at]) + 1 + HEX.index(choice[0]) % 15) % 16]
        return f"{key}:{digest[:at]}{replacement}{digest[at + 1:]}"
    if kind == "other-key":
        return f"{choice or 'x'}{key}:{digest}" if position < 0.5 else f"{key}{choice}x:{digest}"
    if kind == "truncated":
        return auth[: int(position * (len(auth) - 1))]
    if kind == "upper-case":
        return f"{key}:{digest.upper()}" if position < 0.5 else auth.upper()
    if kind == "whitespace":
        space = " \t\n\r\u00a0"[int(position * 4.99)]
        where = int(position * len(auth))
        return auth[:where] + space + auth[where:]
    if kind == "other-channel-data":
        return auth  # the signature stays, the signed channel_data changes (below)
    raise AssertionError(kind)


MUTATIONS = ["flip-hex", "other-key", "truncated", "upper-case", "whitespace",
             "other-channel-data"]


@settings(max_examples=300, deadline=None, database=None)
@given(channel=st.sampled_from(AUTH_CHANNELS), kind=st.sampled_from(MUTATIONS),
       position=st.floats(0, 1), choice=st.text(HEX, min_size=1, max_size=3))
def test_mutated_valid_auth_is_always_refused(channel: str, kind: str, position: float,
                                              choice: str) -> None:
    channel_data = channel_data_for(channel)
    assume(kind != "other-channel-data" or channel_data is not None)
    # Control: the unmutated auth is accepted, so the refusal below is the mutation's doing.
    hub, connection, sink = fresh_connection()
    connection.receive(subscribe_text(channel, connection_auth(connection, channel,
                                                               channel_data), channel_data))
    assert sink.take()[0] == {"event": "pusher_internal:subscription_succeeded",
                              "channel": channel, "data": ANY_DATA}
    assert hub.channel(APP_ID, channel) is not None

    hub, connection, sink = fresh_connection()
    valid = connection_auth(connection, channel, channel_data)
    mutated = mutate(valid, kind, position, choice)
    sent_data = channel_data
    if kind == "other-channel-data":
        sent_data = json.dumps(json.loads(PRESENCE_DATA))  # the same member, with spaces
    assume((mutated, sent_data) != (valid, channel_data))  # e.g. upper-casing all-digit hex
    connection.receive(subscribe_text(channel, mutated, sent_data))
    assert sink.take() == bad_signature(connection.socket_id, channel, sent_data, mutated)
    assert connection.channels == {}
    assert hub.channel(APP_ID, channel) is None


class _AnyData:
    """Equal to any ``data`` string (presence channels send the member list)."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str)

    __hash__ = None  # type: ignore[assignment]


ANY_DATA = _AnyData()


def connection_auth(connection: Connection, channel: str, channel_data: str | None) -> str:
    string = signatures.channel_string(connection.socket_id, channel, channel_data)
    return signatures.sign_auth(KEY, SECRET, string)


# -- request signature fuzzing -----------------------------------------------------------------

NOW = 1_700_000_000
BODY = b'{"name":"foo","channels":["project-3"],"data":"{\\"some\\":\\"data\\"}"}'
PATH = f"/apps/{APP_ID}/events"


def signed_request() -> tuple[str, str, dict[str, str], bytes]:
    return "POST", PATH, signed_query("POST", PATH, KEY, SECRET, BODY, timestamp=NOW), BODY


def test_the_unmutated_signed_request_verifies() -> None:
    method, path, params, body = signed_request()
    signatures.verify_request(method, [path], params, body, KEY, SECRET, NOW)


request_mutations = st.one_of(
    st.tuples(st.just("method"), st.sampled_from(["GET", "PUT", "DELETE", "PATCH", "POST",
                                                  "post", "POST ", ""])),
    st.tuples(st.just("path"), st.sampled_from([PATH, PATH + "/", "/apps/2/events",
                                                "/apps/1/batch_events", PATH.upper(),
                                                "/apps/1/events?x", "apps/1/events"])
              | st.text(_chars, max_size=30)),
    st.tuples(st.just("body"), st.binary(max_size=80)
              | st.sampled_from([BODY, BODY + b" ", BODY[:-1], BODY.upper()])),
    st.tuples(st.just("set"), st.tuples(
        st.sampled_from(["auth_key", "auth_timestamp", "auth_version", "body_md5", "info", "x"]),
        st.text(_chars, max_size=20) | st.sampled_from([str(NOW), str(NOW + 1), KEY, "1.0"]))),
    # Non-ASCII signatures have their own test below (they currently raise TypeError).
    st.tuples(st.just("set"), st.tuples(
        st.just("auth_signature"),
        st.text(st.characters(codec="ascii"), max_size=70) | st.text(HEX, min_size=64,
                                                                       max_size=64))),
    st.tuples(st.just("drop"), st.sampled_from(["auth_key", "auth_timestamp", "auth_version",
                                                "body_md5", "auth_signature"])),
)


@settings(max_examples=300, deadline=None, database=None)
@given(mutation_list=st.lists(request_mutations, min_size=1, max_size=3))
def test_mutated_signed_request_is_refused_unless_the_mutation_is_a_no_op(
    mutation_list: list[tuple[str, Any]],
) -> None:
    original = signed_request()
    method, path, params, body = original[0], original[1], dict(original[2]), original[3]
    for kind, value in mutation_list:
        if kind == "method":
            method = value
        elif kind == "path":
            path = value
        elif kind == "body":
            body = value
        elif kind == "set":
            params[value[0]] = value[1]
        else:
            params.pop(value, None)
    # Methods are signed upper-cased (protocol.md §7.2), so a change of case alone is a no-op.
    no_op = (method.upper(), path, params, body) == ("POST", PATH, original[2], BODY)
    if no_op:
        signatures.verify_request(method, [path], params, body, KEY, SECRET, NOW)
    else:
        with pytest.raises(RequestSignatureError):
            signatures.verify_request(method, [path], params, body, KEY, SECRET, NOW)


NON_ASCII_SIGNATURE = "\u00e9" + "0" * 63


def test_non_ascii_request_signature_is_refused_with_request_signature_error() -> None:
    method, path, params, body = signed_request()
    params["auth_signature"] = NON_ASCII_SIGNATURE
    with pytest.raises(RequestSignatureError):
        signatures.verify_request(method, [path], params, body, KEY, SECRET, NOW)


async def test_non_ascii_request_signature_over_http_is_401_not_500(
    start: Callable[..., Awaitable[Started]],
) -> None:
    _, client, healthy = await start()
    params = {"auth_key": KEY, "auth_timestamp": str(int(time.time())), "auth_version": "1.0",
              "auth_signature": NON_ASCII_SIGNATURE}
    response = await client.get(f"/apps/{APP_ID}/channels", params=params)
    try:
        assert response.status == 401
        body = await response.json()
        assert body["code"] == 401
        assert body["error"].startswith("Invalid signature: you should have sent")
    finally:
        await assert_api_still_works(client, healthy)


# -- HTTP bodies -------------------------------------------------------------------------------


async def api_post(client: TestClient, path: str, body: bytes) -> Any:
    params = signed_query("POST", path, KEY, SECRET, body)
    return await client.post(path, params=params, data=body,
                             headers={"Content-Type": "application/json"})


async def assert_api_still_works(client: TestClient, healthy: Socket) -> None:
    payload = {"name": "after-attack", "channel": HEALTHY_CHANNEL, "data": '{"n":1}'}
    response = await api_post(client, f"/apps/{APP_ID}/events", json.dumps(payload).encode())
    assert (response.status, await response.json()) == (200, {})
    assert await healthy.frame() == {"event": "after-attack", "channel": HEALTHY_CHANNEL,
                                     "data": '{"n":1}'}
    await healthy.ping()


def api_error(message: str, status: int = 400) -> dict[str, Any]:
    return {"error": message, "code": status}


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("events", b"not json", 400, api_error("The request body is not valid JSON")),
        ("events", b"", 400, api_error("The request body is not valid JSON")),
        ("events", b"\xff\xfe{}", 400, api_error("The request body is not valid JSON")),
        ("events", b"[1, 2]", 400,
         api_error("Invalid request body: $: [1, 2] is not of type 'object'")),
        ("events", b'{"name": 5, "data": "x", "channel": "a"}', 400,
         api_error("Invalid request body: $.name: 5 is not of type 'string'")),
        ("events", b'{"name": "e", "data": "x", "channels": "a"}', 400,
         api_error("Invalid request body: $.channels: 'a' is not of type 'array'")),
        ("events", b"[" * 2000 + b"]" * 2000, 400,
         api_error("The request body is not valid JSON")),
        ("events", b'{"name": "e", "channel": "a", "data": "' + b"x" * 1001 + b'"}', 413,
         api_error("The data content of this event exceeds the allowed maximum (1000 bytes): "
                   "it is 1001 bytes", 413)),
        ("batch_events", b"[1, 2]", 400,
         api_error("Invalid request body: $: [1, 2] is not of type 'object'")),
        ("batch_events", b'{"batch": 5}', 400,
         api_error("Invalid request body: $.batch: 5 is not of type 'array'")),
    ],
    ids=["not-json", "empty", "not-utf8", "array", "name-number", "channels-string",
         "nested-2000", "data-over-limit", "batch-array", "batch-number"],
)
async def test_bad_http_body_gets_its_status_and_the_api_still_works(
    start: Callable[..., Awaitable[Started]], path: str, body: bytes, status: int,
    expected: Any,
) -> None:
    app_config = AppConfig(id=APP_ID, key=KEY, secret=SECRET, max_event_payload_bytes=1000)
    _, client, healthy = await start(server_settings(app_config, max_request_bytes=4096))
    response = await api_post(client, f"/apps/{APP_ID}/{path}", body)
    assert (response.status, await response.json()) == (status, expected)
    await assert_api_still_works(client, healthy)


async def test_http_body_over_max_request_bytes_is_413_and_the_api_still_works(
    start: Callable[..., Awaitable[Started]],
) -> None:
    _, client, healthy = await start(server_settings(max_request_bytes=4096))
    body = json.dumps({"name": "e", "channel": "a", "data": "x" * 5000}).encode()
    response = await api_post(client, f"/apps/{APP_ID}/events", body)
    assert response.status == 413
    assert await response.text()  # aiohttp's own answer, with a body
    await assert_api_still_works(client, healthy)


@pytest.mark.parametrize(
    "body",
    [b"[" * 1000 + b"]" * 1000,
     b'{"name":"e","channel":"a","data":' + b"[" * 300 + b"]" * 300 + b"}"],
    ids=["array-1000-deep", "data-300-deep"],
)
async def test_http_body_too_deep_to_handle_is_400_not_500(
    start: Callable[..., Awaitable[Started]], body: bytes,
) -> None:
    _, client, healthy = await start(server_settings(max_request_bytes=4096))
    response = await api_post(client, f"/apps/{APP_ID}/events", body)
    try:
        assert await response.json() == {
            "error": "The request body is nested deeper than 100 levels", "code": 400
        }
    finally:
        await assert_api_still_works(client, healthy)


# -- memory after a flood ----------------------------------------------------------------------


@pytest.mark.slow
def test_flood_memory_growth_stays_under_20_mib_and_no_channel_is_left() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "flood_memory.py"), "--rounds", "3",
         "--sockets", "200", "--settle", "0.5"],
        capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    figures = json.loads(lines[0])
    assert figures["scenario"] == "flood_memory"
    assert (figures["rounds"], figures["sockets_per_round"]) == (3, 200)
    assert figures["rss_before_kib"] <= figures["rss_peak_kib"]
    assert figures["rss_after_kib"] <= figures["rss_peak_kib"]
    assert figures["growth_kib"] == figures["rss_after_kib"] - figures["rss_before_kib"]
    assert figures["growth_kib"] < 20 * 1024, figures
