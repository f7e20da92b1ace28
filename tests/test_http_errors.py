"""Every HTTP error is a JSON error, ``{"error": "...", "code": status}``, as the API's own:
no route, wrong method, body too large, request heads aiohttp's parser refuses, and a crash.
Refusals are logged with their reason and without a traceback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from conftest import ServerProcess
from helpers import RawSocket

from pusher_compat.http_errors import json_errors

JSON = {"Content-Type": "application/json"}
SMALL_BODIES = """
[server]
max_request_bytes = 100

[[apps]]
id = "1001"
key = "app-key"
secret = "app-secret"
"""


async def answer(raw: RawSocket, request: str) -> tuple[bytes, dict[str, str], Any]:
    await raw.send(request.encode())
    return await raw.response()


async def test_unknown_path_is_404(raw: RawSocket) -> None:
    assert await answer(raw, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n") == (
        b"HTTP/1.1 404 Not Found", JSON, {"error": "Unknown path /nope", "code": 404}
    )


async def test_wrong_method_is_405_with_allow(raw: RawSocket) -> None:
    assert await answer(raw, "PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n") == (
        b"HTTP/1.1 405 Method Not Allowed", {"Allow": "GET,HEAD", **JSON},
        {"error": "Method PUT is not allowed on /up: use GET, HEAD", "code": 405},
    )


async def test_body_over_max_request_bytes_is_413(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(SMALL_BODIES)
    raw = await RawSocket.connect(server.host, server.port)
    request = ("POST /apps/1001/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               "Content-Length: 101\r\n\r\n" + "x" * 101)
    assert await answer(raw, request) == (
        b"HTTP/1.1 413 Request Entity Too Large", JSON,
        {"error": "Maximum request body size 100 exceeded.", "code": 413},
    )
    raw.writer.close()
    assert await logged(server, "answered POST /apps/1001/events with 413: "
                                "Maximum request body size 100 exceeded.")


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (f"X-Big: {'a' * 9000}\r\n",
         (b"HTTP/1.0 431 Request Header Fields Too Large", JSON,
          {"error": "Request line or header over 8190 bytes", "code": 431})),
        ("".join(f"X-{i}: a\r\n" for i in range(200)),
         (b"HTTP/1.0 431 Request Header Fields Too Large", JSON,
          {"error": "Too many headers received", "code": 431})),
        ("Bad Header\r\n",
         (b"HTTP/1.0 400 Bad Request", JSON, {"error": "Invalid header token:", "code": 400})),
    ],
    ids=["oversized-header", "too-many-headers", "malformed-header"],
)
async def test_refused_request_head_is_answered_in_json(
    raw: RawSocket, head: str, expected: tuple[bytes, dict[str, str], Any]
) -> None:
    assert await answer(raw, f"GET /up HTTP/1.1\r\nHost: x\r\n{head}\r\n") == expected


async def test_refused_request_head_is_logged_with_its_reason_and_no_traceback(
    server: ServerProcess,
) -> None:
    raw = await RawSocket.connect(server.host, server.port)
    await answer(raw, "GET /up HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
    raw.writer.close()
    assert await logged(server, "refused HTTP request from 127.0.0.1: 400 Invalid header token:")
    assert not any("Traceback" in line for line in server.log)


async def logged(server: ServerProcess, text: str, timeout: float = 5.0) -> bool:
    """Whether the server logs ``text`` within ``timeout`` seconds (its log is read by a
    thread, a moment after the server wrote it)."""
    deadline = time.monotonic() + timeout
    while not any(text in line for line in server.log):
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


async def test_handler_crash_is_a_json_500() -> None:
    async def crash(request: web.Request) -> web.Response:
        raise RuntimeError("a bug")

    app = web.Application(middlewares=[json_errors])
    app.router.add_get("/crash", crash)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/crash")
        assert (response.status, await response.json()) == (
            500, {"error": "Internal server error", "code": 500}
        )
