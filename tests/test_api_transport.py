"""The hot API routes on the lean transport (issue #15, item 2): ``POST /apps/{id}/events``
and ``/batch_events`` served without aiohttp, answered byte for byte as aiohttp answers them.

Every test speaks HTTP by hand over a raw socket to the real listener, so what is asserted
is exactly what a client reads: the answers' bytes (the ``Date`` value masked), their order,
and when the connection closes.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp.http import SERVER_SOFTWARE
from helpers import (
    GatewayTestServer,
    RawSocket,
    client_frame,
    eventually,
    signed_post,
    upgraded,
)

from pusher_compat import websocket
from pusher_compat.config import AppConfig, ServerConfig, Settings
from pusher_compat.server import create_app, listen

PATH = "/apps/1001/events"
BODY = json.dumps({"name": "greet", "channel": "news", "data": "hi"}).encode()
DELIVERED = {"event": "greet", "channel": "news", "data": "hi"}
SERVER = SERVER_SOFTWARE.encode()


def answer(status: bytes, body: bytes, *headers: bytes) -> bytes:
    """The exact bytes of an API answer as aiohttp writes it (``Date`` masked)."""
    return (b"HTTP/1.1 " + status + b"\r\n" + b"".join(h + b"\r\n" for h in headers)
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
            + b"Date: <date>\r\nServer: " + SERVER + b"\r\n\r\n" + body)


OK = answer(b"200 OK", b"{}")
CLOSING_OK = OK.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")


def unsigned(path: str = PATH, body: bytes = BODY) -> bytes:
    """A request without any signature: 401."""
    return (f"POST {path}?auth_key=app-key HTTP/1.1\r\nHost: x\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


UNSIGNED = answer(b"401 Unauthorized", b'{"error":"Missing auth_signature","code":401}')


@pytest.fixture
async def listener(raw: RawSocket) -> RawSocket:
    """A WebSocket subscribed to ``news`` on the :func:`served` server (``raw`` is it)."""
    await upgraded(raw)
    subscribe = {"event": "pusher:subscribe", "data": {"channel": "news"}}
    await raw.send(client_frame(websocket.TEXT, json.dumps(subscribe).encode()))
    assert (await raw.message())["event"] == "pusher_internal:subscription_succeeded"
    return raw


@pytest.fixture
async def client(served: GatewayTestServer) -> AsyncIterator[RawSocket]:
    """A second raw connection to :func:`served`: the API client."""
    connection = await RawSocket.connect(served.host, served.port)
    yield connection
    connection.writer.close()


async def test_an_event_is_answered_200_with_aiohttps_bytes_and_delivered(
    client: RawSocket, listener: RawSocket,
) -> None:
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK
    assert await listener.message() == DELIVERED


async def test_three_requests_on_one_kept_alive_connection_are_each_answered(
    client: RawSocket, listener: RawSocket,
) -> None:
    for _ in range(3):
        await client.send(signed_post(PATH, BODY))
        assert await client.answer() == OK
        assert await listener.message() == DELIVERED


async def test_pipelined_requests_are_answered_in_order(client: RawSocket) -> None:
    await client.send(signed_post(PATH, BODY) + unsigned() + signed_post(PATH, BODY))
    assert [await client.answer() for _ in range(3)] == [OK, UNSIGNED, OK]


async def test_a_head_in_two_reads_is_pending_in_between_then_served(
    client: RawSocket, served: GatewayTestServer,
) -> None:
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK  # the first head, counted from the accept, is done
    request = signed_post(PATH, BODY)
    await client.send(request[:40])
    scraper = await RawSocket.connect(served.host, served.port)
    await eventually(lambda: scraper.http_get("/metrics"),
                     lambda answer: b"\npusher_compat_pending_connections 1.0\n" in answer[1])
    await client.send(request[40:])
    assert await client.answer() == OK
    _, text = await scraper.http_get("/metrics")
    assert b"\npusher_compat_pending_connections 0.0\n" in text
    scraper.writer.close()


async def test_a_batch_is_served_on_the_same_path(client: RawSocket, listener: RawSocket) -> None:
    body = json.dumps({"batch": [{"name": "greet", "channel": "news", "data": "hi"}] * 2})
    await client.send(signed_post("/apps/1001/batch_events", body.encode()))
    assert await client.answer() == OK
    assert [await listener.message() for _ in range(2)] == [DELIVERED] * 2


async def test_expect_100_continue_is_answered_before_the_body_is_sent(
    client: RawSocket,
) -> None:
    request = signed_post(PATH, BODY, "Expect: 100-continue")
    head, _, body = request.partition(b"\r\n\r\n")
    await client.send(head + b"\r\n\r\n")
    assert await client.head() == b"HTTP/1.1 100 Continue\r\n\r\n"
    await client.send(body)
    assert await client.answer() == OK


async def test_connection_close_is_answered_with_it_then_closed(client: RawSocket) -> None:
    await client.send(signed_post(PATH, BODY, "Connection: close"))
    assert await client.answer() == CLOSING_OK
    assert await client.closed()


async def test_a_request_that_is_not_hot_goes_to_aiohttp_and_the_connection_stays_served(
    client: RawSocket,
) -> None:
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK
    assert await client.http_get("/up") == (b"HTTP/1.1 200 OK", b'{"status": "ok"}')
    await client.send(signed_post(PATH, BODY))  # aiohttp's from now on: the same answer
    assert await client.answer() == OK


async def test_a_request_pipelined_behind_hot_ones_goes_to_aiohttp_after_their_answers(
    client: RawSocket,
) -> None:
    await client.send(signed_post(PATH, BODY) + b"GET /up HTTP/1.1\r\nHost: x\r\n\r\n"
                      + signed_post(PATH, BODY))
    first, up, last = [await client.answer() for _ in range(3)]
    assert (first, last) == (OK, OK)
    assert up.startswith(b"HTTP/1.1 200 OK\r\n") and up.endswith(b'{"status": "ok"}')


async def test_a_body_over_max_request_bytes_is_413_and_dropped_unread(
    client: RawSocket,
) -> None:
    big = b"x" * 1048577
    await client.send(unsigned(body=big) + signed_post(PATH, BODY))
    assert await client.answer() == answer(
        b"413 Request Entity Too Large",
        b'{"error":"Maximum request body size 1048576 exceeded.","code":413}')
    assert await client.answer() == OK  # the body was dropped: the next request is served


async def test_a_body_over_the_limit_announced_with_100_continue_is_413_then_closed(
    client: RawSocket,
) -> None:
    await client.send(b"POST /apps/1001/events HTTP/1.1\r\nExpect: 100-continue\r\n"
                      b"Content-Length: 1048577\r\n\r\n")
    assert (await client.answer()).startswith(b"HTTP/1.1 413 Request Entity Too Large\r\n")
    assert await client.closed()


@pytest.mark.parametrize("request_bytes", [
    unsigned(),
    signed_post(PATH, BODY, key="disabled-key", secret="disabled-secret").replace(
        b"/apps/1001/", b"/apps/disabled-id/"),
    signed_post(PATH, b"[1]"),
    signed_post("/apps/404/events", BODY),
], ids=["unsigned", "disabled-app", "invalid-body", "unknown-app"])
async def test_refusals_are_the_bytes_aiohttp_answers(
    client: RawSocket, served: GatewayTestServer, request_bytes: bytes,
) -> None:
    await client.send(request_bytes)
    lean = await client.answer()
    await client.send(_chunked(request_bytes))  # aiohttp's: no hot request is chunked
    assert await client.answer() == lean
    assert lean.startswith((b"HTTP/1.1 4",))


def _chunked(request: bytes) -> bytes:
    """``request`` with its body sent chunked (which only aiohttp serves)."""
    head, _, body = request.partition(b"\r\n\r\n")
    head = re.sub(rb"Content-Length: \d+", b"Transfer-Encoding: chunked", head)
    return head + b"\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"


async def test_a_malformed_head_is_400_json_and_closed(client: RawSocket) -> None:
    await client.send(b"POST /apps/1001/events HTTP/1.1\r\nContent-Length: 2\r\n"
                      b"Bad Header\r\n\r\n{}")
    refused = answer(b"400 Bad Request", b'{"error":"Invalid header token:","code":400}')
    assert await client.answer() == refused.replace(b"HTTP/1.1", b"HTTP/1.0")  # aiohttp's
    assert await client.closed()


# -- guards and metrics, on servers of their own ---------------------------------------------

TIMEOUT = 0.5
"""``request_head_timeout`` and ``http_keepalive_timeout`` of these servers."""
SLACK = 0.4
"""Seconds a close may come after its deadline on a loaded machine."""

Serve = Callable[..., Awaitable[RawSocket]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """A server of app 1001 with short timeouts (``app`` options for the app), and a raw
    connection to it."""
    runners, sockets = [], []

    async def start(**app: Any) -> RawSocket:
        server = ServerConfig(request_head_timeout=TIMEOUT, http_keepalive_timeout=TIMEOUT)
        apps = (AppConfig(id="1001", key="app-key", secret="app-secret", **app),)
        runner = await listen(create_app(Settings(server=server, apps=apps)), "127.0.0.1", 0)
        runners.append(runner)
        sockets.append(await RawSocket.connect("127.0.0.1", runner.addresses[0][1]))
        return sockets[-1]

    yield start
    for socket in sockets:
        socket.writer.close()
    for runner in runners:
        await runner.cleanup()


async def closed_within(client: RawSocket, low: float, high: float) -> bytes:
    """What the server sends until it closes, which must be between ``low`` and ``high``
    seconds from now."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    received = await asyncio.wait_for(client.reader.read(), high + 1)
    assert low <= loop.time() - started < high
    return received


async def test_a_body_that_does_not_arrive_is_408_and_closed_at_its_deadline(
    serve: Serve,
) -> None:
    client = await serve()
    await client.send(signed_post(PATH, BODY)[:-1])
    received = await closed_within(client, TIMEOUT - 0.05, TIMEOUT + SLACK)
    assert received.startswith(b"HTTP/1.1 408 Request Timeout\r\n")
    assert received.endswith(b'{"error":"The request body did not arrive within 0.5 s",'
                             b'"code":408}')


async def test_an_idle_connection_is_closed_at_the_keepalive_timeout(serve: Serve) -> None:
    client = await serve()
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK
    assert await closed_within(client, TIMEOUT - 0.05, TIMEOUT + SLACK) == b""


async def test_a_later_head_dribbled_is_closed_at_its_deadline(serve: Serve) -> None:
    client = await serve()
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK
    await client.send(b"POST /apps/")  # the next head starts: its deadline runs from here
    assert await closed_within(client, TIMEOUT - 0.05, TIMEOUT + SLACK) == b""


async def test_a_rate_limit_is_429_with_retry_after_as_aiohttp_answers_it(
    serve: Serve,
) -> None:
    client = await serve(max_backend_events_per_second=1)
    await client.send(signed_post(PATH, BODY) + signed_post(PATH, BODY))
    assert await client.answer() == OK
    limited = await client.answer()
    assert limited == answer(
        b"429 Too Many Requests",
        b'{"error":"Rate limit: at most 1 events per second","code":429}', b"Retry-After: 1")
    await client.send(_chunked(signed_post(PATH, BODY)))
    assert await client.answer() == limited


async def test_answers_are_counted_in_metrics_as_aiohttps(client: RawSocket) -> None:
    await client.send(signed_post(PATH, BODY) + unsigned() + _chunked(unsigned()))
    assert [await client.answer() for _ in range(3)] == [OK, UNSIGNED, UNSIGNED]
    _, text = await client.http_get("/metrics")
    assert b'pusher_compat_http_api_requests_total{app="1001",status="200"} 1.0' in text
    assert b'pusher_compat_http_api_requests_total{app="1001",status="401"} 2.0' in text


async def test_stopping_the_server_closes_its_idle_kept_alive_connections() -> None:
    apps = (AppConfig(id="1001", key="app-key", secret="app-secret"),)
    runner = await listen(create_app(Settings(apps=apps)), "127.0.0.1", 0)
    client = await RawSocket.connect("127.0.0.1", runner.addresses[0][1])
    await client.send(signed_post(PATH, BODY))
    assert await client.answer() == OK
    await runner.cleanup()
    assert await client.closed()
    client.writer.close()
