"""The unmodified PHP SDK (pusher/pusher-php-server, at ``$PUSHER_PHP_SDK``) against a real
server process, through ``tests/php/trigger.php``; deliveries are observed with raw protocol-7
WebSocket clients. Skipped when ``PUSHER_PHP_SDK`` is unset (``.ci/run`` sets it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from conftest import ServerProcess, run_php
from helpers import WsClient, event_text


@pytest.fixture
async def subscriber(server: ServerProcess) -> AsyncIterator[WsClient]:
    """A socket subscribed to the public channel ``my-channel``."""
    async with aiohttp.ClientSession() as session:
        socket = await WsClient.handshake(await session.ws_connect(server.ws_url()))
        await socket.send("pusher:subscribe", {"channel": "my-channel"})
        assert [f["event"] for f in await socket.drain()] == [
            "pusher_internal:subscription_succeeded"]
        yield socket


async def test_trigger_with_info_counts_users_of_presence_channels_only(
        php_sdk: str, server: ServerProcess, subscriber: WsClient) -> None:
    info = {"info": "user_count,subscription_count"}

    answer = await asyncio.to_thread(run_php, php_sdk, server, "trigger",
                                     ["my-channel", "presence-my-channel"], "my-event",
                                     {"n": 1}, info)

    assert answer == {"result": {"channels": {
        "my-channel": {"subscription_count": 1},
        "presence-my-channel": {"user_count": 0, "subscription_count": 0},
    }}}
    assert await subscriber.text() == event_text("my-event", "my-channel", '{"n":1}')


async def test_trigger_batch_with_info_counts_users_of_presence_channels_only(
        php_sdk: str, server: ServerProcess, subscriber: WsClient) -> None:
    batch = [{"channel": channel, "name": "my-event", "data": {"n": 2},
              "info": "user_count,subscription_count"}
             for channel in ("my-channel", "presence-my-channel")]

    answer = await asyncio.to_thread(run_php, php_sdk, server, "triggerBatch", batch)

    assert answer == {"result": {"batch": [
        {"subscription_count": 1}, {"user_count": 0, "subscription_count": 0},
    ]}}
    assert await subscriber.text() == event_text("my-event", "my-channel", '{"n":2}')
