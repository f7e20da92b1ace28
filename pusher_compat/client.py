"""A small asyncio client of the Pusher Channels protocol (v7), for scripts and tests.

::

    from pusher_compat.client import connect

    async with connect("http://127.0.0.1:6001", "app-key") as client:
        await client.subscribe("orders")
        auth = client.sign_private("private-orders.17", "app-secret")
        await client.subscribe("private-orders.17", auth=auth)
        async for event in client.events():
            print(event.channel, event.event, event.data)

It answers ``pusher:ping``, keeps presence member lists and closes cleanly. ``sign_private``
and ``sign_presence`` sign with the app secret: for trusted scripts, never for user code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from . import __version__, signatures

__all__ = ["Client", "ClientError", "Event", "SubscriptionError", "connect"]


class ClientError(Exception):
    """The server refused the connection (``pusher:error``) or closed it."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(f"{message} (code {code})" if code is not None else message)
        self.code = code


class SubscriptionError(ClientError):
    """``pusher:subscription_error``: the server refused a subscription."""

    def __init__(self, channel: str, status: int | None, error: str) -> None:
        super().__init__(f"subscription to {channel} refused: {error}", status)
        self.channel = channel
        self.status = status


@dataclass(frozen=True)
class Event:
    """A server message; ``data`` JSON-decoded as pusher-js does, ``raw`` as received."""

    event: str
    channel: str | None
    data: Any
    user_id: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def _decode(data: Any) -> Any:
    with contextlib.suppress(TypeError, ValueError):
        return json.loads(data)
    return data


class Client:
    """A connected socket; made by :func:`connect`."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, key: str, socket_id: str,
                 activity_timeout: int) -> None:
        self.ws = ws
        self.key = key
        self.socket_id = socket_id
        """The ``socket_id`` from ``pusher:connection_established``."""
        self.activity_timeout = activity_timeout
        self.members: dict[str, dict[str, Any]] = {}
        """Presence channel name → ``{user_id: user_info}``, kept up to date."""
        self.closed = False
        """True once the socket is closed (by either side); ``close_code`` then says how."""
        self.close_code: int | None = None
        self._buffer: list[Event] = []
        self._arrived = asyncio.Condition()
        self._pending: dict[str, asyncio.Future[None]] = {}
        self._reader = asyncio.create_task(self._read())

    def sign_private(self, channel: str, secret: str) -> str:
        """The ``auth`` for subscribing this socket to a ``private-`` channel."""
        string = signatures.channel_string(self.socket_id, channel)
        return signatures.sign_auth(self.key, secret, string)

    def sign_presence(self, channel: str, secret: str, user_id: str,
                      user_info: dict[str, Any] | None = None) -> tuple[str, str]:
        """``(auth, channel_data)`` for joining a ``presence-`` channel as ``user_id``."""
        member = {"user_id": user_id, **({} if user_info is None else {"user_info": user_info})}
        channel_data = json.dumps(member, separators=(",", ":"))
        string = signatures.channel_string(self.socket_id, channel, channel_data)
        return signatures.sign_auth(self.key, secret, string), channel_data

    async def subscribe(self, channel: str, auth: str | None = None,
                        channel_data: str | dict[str, Any] | None = None,
                        timeout: float = 10.0) -> None:
        """Subscribe and wait for ``pusher_internal:subscription_succeeded``.

        Raises :class:`SubscriptionError` on ``pusher:subscription_error`` (bad signature,
        bad name, presence limits) and :class:`TimeoutError` when nothing comes back.
        """
        if isinstance(channel_data, dict):
            channel_data = json.dumps(channel_data, separators=(",", ":"))
        data = {"channel": channel, "auth": auth, "channel_data": channel_data}
        data = {name: value for name, value in data.items() if value is not None}
        waiter = asyncio.get_running_loop().create_future()
        self._pending[channel] = waiter
        try:
            await self._send({"event": "pusher:subscribe", "data": data})
            await asyncio.wait_for(waiter, timeout)
        finally:
            self._pending.pop(channel, None)

    async def unsubscribe(self, channel: str) -> None:
        """Leave ``channel`` (no answer comes back)."""
        self.members.pop(channel, None)
        await self._send({"event": "pusher:unsubscribe", "data": {"channel": channel}})

    async def trigger(self, channel: str, event: str, data: Any) -> None:
        """Send a client event (its name must start with ``client-``) to the channel's other
        subscribers; the channel must be a private or presence one this socket is in."""
        if not event.startswith("client-"):
            raise ValueError(f"client event names start with 'client-', not {event!r}")
        await self._send({"event": event, "channel": channel, "data": data})

    async def next_event(self, channel: str | None = None, event: str | None = None,
                         timeout: float | None = 10.0) -> Event:
        """The oldest unread event matching ``channel`` and ``event`` (``None`` = any).

        Events that do not match stay buffered for later calls. Raises :class:`TimeoutError`
        after ``timeout`` seconds (``None``: never), :class:`ClientError` once closed.
        """

        def match() -> Event | None:
            for index, item in enumerate(self._buffer):
                if channel in (None, item.channel) and event in (None, item.event):
                    return self._buffer.pop(index)
            return None

        async def wait() -> Event:
            async with self._arrived:
                while (found := match()) is None:
                    if self.closed:
                        raise ClientError("connection closed", self.close_code)
                    await self._arrived.wait()
                return found

        return await asyncio.wait_for(wait(), timeout)

    async def events(self) -> AsyncIterator[Event]:
        """Every event, in order, until the connection closes."""
        while True:
            try:
                yield await self.next_event(timeout=None)
            except ClientError:
                return

    async def _send(self, message: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(message, separators=(",", ":")))

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type is aiohttp.WSMsgType.TEXT:
                    await self._dispatch(json.loads(msg.data))
        finally:
            self.closed, self.close_code = True, self.ws.close_code
            for waiter in self._pending.values():
                if not waiter.done():
                    waiter.set_exception(ClientError("connection closed", self.close_code))
            async with self._arrived:
                self._arrived.notify_all()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        name, channel = message.get("event", ""), message.get("channel")
        data = _decode(message.get("data"))
        if name == "pusher:ping":
            await self._send({"event": "pusher:pong", "data": {}})
            return
        waiter = self._pending.get(channel or "")
        if name == "pusher_internal:subscription_succeeded" and channel:
            if isinstance(data, dict) and "presence" in data:
                self.members[channel] = dict(data["presence"].get("hash", {}))
            if waiter and not waiter.done():
                waiter.set_result(None)
            return
        if name == "pusher:subscription_error" and channel:
            data = data if isinstance(data, dict) else {}
            if waiter and not waiter.done():
                waiter.set_exception(SubscriptionError(channel, data.get("status"),
                                                       str(data.get("error", data))))
            return
        if name == "pusher_internal:member_added" and channel in self.members:
            self.members[channel][str(data["user_id"])] = data.get("user_info")
        elif name == "pusher_internal:member_removed" and channel in self.members:
            self.members[channel].pop(str(data["user_id"]), None)
        async with self._arrived:
            self._buffer.append(Event(name, channel, data, message.get("user_id"), message))
            self._arrived.notify_all()

    async def close(self) -> None:
        """Close the WebSocket (code 1000) and stop reading."""
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


def _socket_url(url: str, key: str) -> str:
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    query = f"protocol=7&client=pusher-compat-python&version={__version__}&flash=false"
    return urlunsplit((scheme, parts.netloc, f"/app/{key}", query, ""))


@asynccontextmanager
async def connect(url: str, key: str, timeout: float = 10.0) -> AsyncIterator[Client]:
    """Connect to the server at ``url`` (``http://``, ``https://``, ``ws://`` or ``wss://``
    host and port) as app ``key``; wait for ``pusher:connection_established``.

    Raises :class:`ClientError` when the server refuses (unknown key 4001, disabled app
    4003, over quota 4004...).
    """
    async with aiohttp.ClientSession() as session:
        ws = await asyncio.wait_for(session.ws_connect(_socket_url(url, key)), timeout)
        msg = await ws.receive(timeout)
        message = json.loads(msg.data) if msg.type is aiohttp.WSMsgType.TEXT else {}
        if message.get("event") != "pusher:connection_established":
            await ws.close()
            data = _decode(message.get("data")) or {}
            raise ClientError(f"connection refused: {data.get('message', msg)}",
                              data.get("code", ws.close_code))
        established = _decode(message["data"])
        client = Client(ws, key, established["socket_id"],
                        int(established.get("activity_timeout", 120)))
        try:
            yield client
        finally:
            await client.close()
