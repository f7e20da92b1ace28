"""The aiohttp layer: WebSocket admission codes, bad input over a real socket, lifecycle."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient
from conftest import ServerProcess
from helpers import GatewayTestServer, ManualScheduler, error

from pusher_compat.auth_config import AuthConfig
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.server import create_app

APP = AppConfig(id="1001", key="app-key", secret="app-secret")
DISABLED = AppConfig(id="2", key="disabled-key", secret="s2", enabled=False)
QUOTA_ONE = AppConfig(id="3", key="quota-key", secret="s3", max_connections=1)

ClientFactory = Callable[..., Awaitable[TestClient]]


def settings(**server: Any) -> Settings:
    return Settings(server=ServerConfig(**server), apps=(APP, DISABLED, QUOTA_ONE))


async def frames(ws: aiohttp.ClientWebSocketResponse, count: int) -> list[dict[str, Any]]:
    """The next ``count`` text frames, parsed."""
    return [json.loads(await asyncio.wait_for(ws.receive_str(), 5)) for _ in range(count)]


async def refusal(client: TestClient, path: str) -> tuple[dict[str, Any], int | None]:
    """Connect to ``path``; return the first frame and the close code that follows."""
    ws = await client.ws_connect(path)
    first = json.loads(await asyncio.wait_for(ws.receive_str(), 5))
    closing = await asyncio.wait_for(ws.receive(), 5)
    assert closing.type is WSMsgType.CLOSE
    return first, closing.data


async def serving(aiohttp_client: ClientFactory, settings: Settings) -> TestClient:
    """A test client of a server with ``settings``, serving as ``pusher-compat serve`` does."""
    return await aiohttp_client(GatewayTestServer(create_app(settings)))


@pytest.fixture
async def client(aiohttp_client: ClientFactory) -> TestClient:
    return await serving(aiohttp_client, settings())



@pytest.mark.parametrize(
    ("path", "code", "message"),
    [
        ("/app/nope?protocol=7", 4001, "App key nope does not exist"),
        ("/app/disabled-key?protocol=7", 4003, "App 2 is disabled"),
        ("/app/app-key?protocol=8", 4007, "Unsupported protocol version '8'"),
        ("/app/app-key?protocol=seven", 4007, "Unsupported protocol version 'seven'"),
        ("/app/app-key?protocol=7&version=%3Cscript%3E", 4006, "Invalid version string '<script>'"),
        ("/app", 4005, "Invalid path /app: use /app/{key}"),
        ("/app/app-key/extra", 4005, "Invalid path /app/app-key/extra: use /app/{key}"),
    ],
    ids=["unknown-key", "disabled-app", "protocol-8", "protocol-text", "bad-version",
         "no-key", "extra-segment"],
)
async def test_refused_connection_gets_error_frame_then_same_close_code(
    client: TestClient, path: str, code: int, message: str
) -> None:
    assert await refusal(client, path) == (error(code, message), code)


async def test_missing_protocol_is_accepted_as_7_by_default(client: TestClient) -> None:
    ws = await client.ws_connect("/app/app-key")
    (first,) = await frames(ws, 1)
    assert first["event"] == "pusher:connection_established"


async def test_missing_protocol_is_refused_with_4008_when_required(
    aiohttp_client: ClientFactory,
) -> None:
    client = await serving(aiohttp_client, settings(require_protocol=True))
    assert await refusal(client, "/app/app-key") == (
        error(4008, "No protocol version supplied"), 4008
    )


async def test_connection_over_app_quota_is_closed_with_4004(client: TestClient) -> None:
    first = await client.ws_connect("/app/quota-key?protocol=7")
    await frames(first, 1)
    assert await refusal(client, "/app/quota-key?protocol=7") == (
        error(4004, "App over connection quota"), 4004
    )


async def test_connection_over_server_capacity_is_closed_with_4100(
    aiohttp_client: ClientFactory,
) -> None:
    client = await serving(aiohttp_client, settings(max_connections=1))
    first = await client.ws_connect("/app/app-key?protocol=7")
    await frames(first, 1)
    assert await refusal(client, "/app/app-key?protocol=7") == (
        error(4100, "Server over capacity"), 4100
    )


async def test_plain_http_get_on_app_path_is_400_saying_why(client: TestClient) -> None:
    # RFC 6455 §4.2.1: not a valid handshake, 400; a 404 would say the app does not exist.
    response = await client.get("/app/app-key")
    assert (response.status, await response.json()) == (400, {
        "error": "Missing Upgrade: websocket header: this endpoint is for WebSocket connections",
        "code": 400,
    })


BAD_FRAMES = [
    ("not json", "{oops", error(None, "Invalid JSON: the message could not be parsed")),
    ("json array", "[1, 2]", error(None, "Invalid message: $: [1, 2] is not of type 'object'")),
    ("no event", '{"data": {}}', error(None, "Invalid message: $: 'event' is a required property")),
    ("unknown pusher event", '{"event": "pusher:dance", "data": {}}',
     error(None, "Unknown event 'pusher:dance'")),
    ("unknown event", '{"event": "hello", "data": {}}', error(None, "Unknown event 'hello'")),
    ("subscribe without channel", '{"event": "pusher:subscribe", "data": {}}',
     error(None, "Invalid pusher:subscribe: $: 'channel' is a required property")),
    ("subscribe with number channel", '{"event": "pusher:subscribe", "data": {"channel": 5}}',
     error(None, "Invalid pusher:subscribe: $.channel: 5 is not of type 'string'")),
    ("client event without channel", '{"event": "client-x", "data": {}}',
     error(None, "Invalid client event: $: 'channel' is a required property")),
    ("client event not subscribed",
     '{"event": "client-x", "channel": "private-a", "data": {}}',
     error(None, "Cannot broadcast client event (connection not subscribed to channel private-a)")),
    ("signin garbage", '{"event": "pusher:signin", "data": {"auth": "x"}}',
     error(4009, "Invalid pusher:signin: $: 'user_data' is a required property")),
]


@pytest.mark.parametrize(("text", "expected"), [(t, e) for _, t, e in BAD_FRAMES],
                         ids=[name for name, _, _ in BAD_FRAMES])
async def test_bad_frame_gets_error_and_connection_lives_on(
    client: TestClient, text: str, expected: dict[str, Any]
) -> None:
    ws = await client.ws_connect("/app/app-key?protocol=7")
    await frames(ws, 1)
    await ws.send_str(text)
    assert await frames(ws, 1) == [expected]
    await ws.send_str('{"event": "pusher:ping", "data": {}}')
    assert await frames(ws, 1) == [{"event": "pusher:pong", "data": "{}"}]


async def test_binary_frame_gets_error_and_connection_lives_on(client: TestClient) -> None:
    ws = await client.ws_connect("/app/app-key?protocol=7")
    await frames(ws, 1)
    await ws.send_bytes(b"\x00\xff")
    assert await frames(ws, 1) == [error(None, "Binary frames are not supported")]
    await ws.send_str('{"event": "pusher:ping", "data": {}}')
    assert await frames(ws, 1) == [{"event": "pusher:pong", "data": "{}"}]


async def test_oversized_frame_closes_only_that_socket_with_1009(
    aiohttp_client: ClientFactory,
) -> None:
    client = await serving(aiohttp_client, settings(max_message_bytes=1024))
    healthy = await client.ws_connect("/app/app-key?protocol=7")
    await frames(healthy, 1)
    flooder = await client.ws_connect("/app/app-key?protocol=7")
    await frames(flooder, 1)
    await flooder.send_str('{"event":"pusher:ping","data":"' + "x" * 2000 + '"}')
    closing = await asyncio.wait_for(flooder.receive(), 5)
    assert (closing.type, closing.data) == (WSMsgType.CLOSE, 1009)
    await healthy.send_str('{"event": "pusher:ping", "data": {}}')
    assert await frames(healthy, 1) == [{"event": "pusher:pong", "data": "{}"}]


async def test_events_written_in_one_loop_iteration_leave_in_order(client: TestClient) -> None:
    ws = await client.ws_connect("/app/app-key?protocol=7")
    await frames(ws, 1)
    for _ in range(3):
        await ws.send_str('{"event": "pusher:ping", "data": {}}')
    await ws.send_str('{"event":"pusher:subscribe","data":{"channel":"news"}}')
    received = await frames(ws, 4)
    assert [f["event"] for f in received] == [
        "pusher:pong", "pusher:pong", "pusher:pong", "pusher_internal:subscription_succeeded"
    ]


async def test_silent_socket_is_pinged_then_closed_with_4201(
    aiohttp_client: ClientFactory,
) -> None:
    timers = ManualScheduler()
    app = create_app(settings(activity_timeout=1, pong_timeout=1), clock=timers.time,
                     scheduler=timers)
    client = await aiohttp_client(GatewayTestServer(app))
    ws = await client.ws_connect("/app/app-key?protocol=7", autoping=False)
    await frames(ws, 1)
    await timers.advance(1)
    assert await frames(ws, 1) == [{"event": "pusher:ping", "data": "{}"}]
    await timers.advance(1)
    assert await frames(ws, 1) == [error(4201, "Pong reply not received")]
    closing = await asyncio.wait_for(ws.receive(), 5)
    assert (closing.type, closing.data) == (WSMsgType.CLOSE, 4201)


async def test_answered_ping_keeps_socket_open(aiohttp_client: ClientFactory) -> None:
    timers = ManualScheduler()
    app = create_app(settings(activity_timeout=1, pong_timeout=1), clock=timers.time,
                     scheduler=timers)
    client = await aiohttp_client(GatewayTestServer(app))
    ws = await client.ws_connect("/app/app-key?protocol=7")
    await frames(ws, 1)
    for _ in range(3):
        await timers.advance(1)
        assert await frames(ws, 1) == [{"event": "pusher:ping", "data": "{}"}]
        await ws.send_str('{"event": "pusher:pong", "data": {}}')
        # Answered only once the pong has been read: the next advance comes after it.
        await ws.send_str('{"event": "pusher:ping", "data": {}}')
        assert await frames(ws, 1) == [{"event": "pusher:pong", "data": "{}"}]


async def test_sigterm_closes_sockets_with_4200_and_exits_cleanly(server: ServerProcess) -> None:
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(server.ws_url())
        await frames(ws, 1)
        server.process.send_signal(signal.SIGTERM)
        closing = await asyncio.wait_for(ws.receive(), 10)
        assert (closing.type, closing.data) == (WSMsgType.CLOSE, 4200)
    assert await asyncio.to_thread(server.process.wait, 10) == 0
    log = "".join(server.log)
    assert "draining 1 connection(s) over 5.0 s" in log
    assert "stopped" in log


async def test_broadcasting_auth_is_not_served_without_an_auth_section(
    client: TestClient,
) -> None:
    response = await client.post("/broadcasting/auth", data={"socket_id": "1.1"})
    assert response.status == 404


async def test_broadcasting_auth_is_served_with_an_auth_section(
    aiohttp_client: ClientFactory,
) -> None:
    settings = Settings(apps=(APP,), auth=AuthConfig(jwt_secret="change-me"))
    client = await serving(aiohttp_client, settings)
    response = await client.post(
        "/broadcasting/auth", data={"socket_id": "1.1", "channel_name": "private-x"}
    )
    assert (response.status, await response.json()) == (
        401, {"error": "No token: send the JWT as 'Authorization: Bearer <token>'", "code": 401}
    )


async def test_up_answers_ok(client: TestClient) -> None:
    response = await client.get("/up")
    assert (response.status, await response.json()) == (200, {"status": "ok"})


async def test_ready_answers_ready_until_draining(client: TestClient) -> None:
    response = await client.get("/ready")
    assert (response.status, await response.json()) == (200, {"status": "ready"})


DRAIN_CONFIG = """
[server]
drain_seconds = 2.0

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
"""


async def test_sigterm_drains_in_jittered_batches_over_the_window(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(DRAIN_CONFIG)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        sockets = [await session.ws_connect(server.ws_url()) for _ in range(30)]
        for ws in sockets:
            await frames(ws, 1)

        async def closed_at(ws: aiohttp.ClientWebSocketResponse) -> tuple[int | None, float]:
            message = await asyncio.wait_for(ws.receive(), 10)
            assert message.type is WSMsgType.CLOSE
            return message.data, loop.time()

        waiting = [asyncio.create_task(closed_at(ws)) for ws in sockets]
        server.process.send_signal(signal.SIGTERM)
        deadline = loop.time() + 5
        while (ready := await session.get(f"{server.url}/ready")).status == 200:
            ready.release()
            assert loop.time() < deadline, "still ready 5 s after SIGTERM"
            await asyncio.sleep(0.02)
        assert (ready.status, await ready.json()) == (503, {"status": "draining"})
        late = await session.ws_connect(server.ws_url())
        assert json.loads(await late.receive_str()) == error(4100, "Server is shutting down")
        results = await asyncio.gather(*waiting)
    codes = {code for code, _ in results}
    times = sorted(at for _, at in results)
    assert codes == {4200}
    assert 1.0 <= times[-1] - times[0] <= 3.5
    assert times[len(times) // 2] - times[0] >= 0.3  # not all at once, not all at the end
    assert await asyncio.to_thread(server.process.wait, 10) == 0
