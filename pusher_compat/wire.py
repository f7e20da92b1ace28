"""The Pusher wire format: the error table, JSON encoding and WebSocket frame bytes.

Everything the server sends leaves through :func:`frame`: a message is encoded to JSON once
(orjson) and wrapped in an unmasked WebSocket text frame once, so a broadcast writes the very
same ``bytes`` object to every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import orjson

from .websocket import TEXT, encode_frame

__all__ = [
    "MAX_DEPTH",
    "Code",
    "PusherError",
    "SubscriptionError",
    "SubscriptionStatus",
    "TooDeep",
    "dumps",
    "error_frame",
    "event_data",
    "event_frame",
    "frame",
    "loads",
    "signin_success_frame",
    "unframe",
]


def dumps(value: Any) -> bytes:
    """Compact JSON, the form every Pusher peer uses on the wire."""
    return orjson.dumps(value)


MAX_DEPTH = 100
"""Deepest nesting accepted in anything a client sends. orjson parses 1024 levels but encodes
only about 254, and Python's ``repr`` of a 1000-deep list exhausts the recursion limit: a
bound well below both keeps every later step (validation, re-encoding, error text) safe."""


class TooDeep(ValueError):
    """Valid JSON, nested deeper than :data:`MAX_DEPTH`."""


def loads(data: str | bytes) -> Any:
    """Parse JSON; raises ``ValueError`` on malformed input, :class:`TooDeep` when too deep."""
    value = orjson.loads(data)
    if isinstance(value, dict | list) and _too_deep(value):
        raise TooDeep(f"nested deeper than {MAX_DEPTH} levels")
    return value


def _too_deep(value: dict[str, Any] | list[Any]) -> bool:
    # Iterative, so that checking depth cannot itself run out of stack.
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            return True
        children = item.values() if isinstance(item, dict) else item
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


class Code(IntEnum):
    """Pusher error and close codes (protocol v7).

    4000-4099 tell pusher-js not to reconnect, 4100-4199 to back off and retry, 4200-4299 to
    retry at once; 43xx appear only inside ``pusher:error`` frames, never as close codes.
    """

    TLS_REQUIRED = 4000
    APP_NOT_FOUND = 4001
    APP_DISABLED = 4003
    APP_OVER_QUOTA = 4004
    PATH_NOT_FOUND = 4005
    INVALID_VERSION = 4006
    UNSUPPORTED_PROTOCOL = 4007
    NO_PROTOCOL = 4008
    UNAUTHORIZED = 4009
    OVER_CAPACITY = 4100
    RECONNECT = 4200
    PONG_NOT_RECEIVED = 4201
    CLOSED_AFTER_INACTIVITY = 4202
    SUBSCRIPTION_LIMIT = 4300
    """A subscription refused because the socket holds ``max_channels_per_connection``
    channels (Pusher's generic 43xx: reported, the socket stays open)."""
    CLIENT_EVENT_REJECTED = 4301
    RATE_LIMITED = 4301
    """Pusher's rate-limit code, for subscriptions as for client events."""
    WATCHLIST_OVER_LIMIT = 4302


class SubscriptionStatus(IntEnum):
    """The ``status`` of a ``pusher:subscription_error``, by why the subscription was refused.

    Signature problems carry HTTP's 401/403, as an auth endpoint would have answered (Echo's
    ``.error()`` shows them as such); the rest carry the :class:`Code` of the refusal.
    """

    UNAUTHORIZED = 401
    """No valid signature, or a presence subscription without a member."""
    FORBIDDEN = 403
    """A user channel (``#server-to-user-``) of a user this socket is not signed in as."""
    INVALID = Code.UNAUTHORIZED
    """A malformed channel name, or a presence ``user_id`` over its length limit."""
    PRESENCE_FULL = Code.OVER_CAPACITY
    """A presence channel holds ``max_presence_members`` members already (cluster-wide)."""
    CHANNEL_LIMIT = Code.SUBSCRIPTION_LIMIT
    """The socket holds ``max_channels_per_connection`` channels already."""
    OVER_LIMIT = Code.RATE_LIMITED
    """Over the subscribe rate, or a presence ``user_info`` over its size limit."""


@dataclass(frozen=True, slots=True)
class PusherError(Exception):
    """A protocol error: rendered as a ``pusher:error`` frame, and a close when ``close``.

    ``code`` is ``None`` for the errors Pusher itself reports without a code (bad signatures,
    client events on a channel the socket is not in).
    """

    code: Code | None
    message: str
    close: bool = False

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message

    def to_frame(self) -> bytes:
        return error_frame(self.code, self.message)


@dataclass(frozen=True, slots=True)
class SubscriptionError(Exception):
    """A refused subscription (bad signature, bad name, limit reached); the socket stays open.

    Rendered as a channel-scoped ``pusher:subscription_error`` (Soketi's shape, which reaches
    Echo's ``.error()`` callback) followed by a connection-level ``pusher:error`` with
    ``code: null`` (real Pusher's form), or with ``code`` for a refusal Pusher gives a code
    (a limit reached).
    """

    channel: str
    type: str
    message: str
    status: SubscriptionStatus
    code: Code | None = None

    def to_frames(self) -> tuple[bytes, bytes]:
        detail = {"type": self.type, "error": self.message, "status": self.status}
        scoped = {"event": "pusher:subscription_error", "channel": self.channel, "data": detail}
        return frame(dumps(scoped)), error_frame(self.code, self.message)


def frame(payload: bytes) -> bytes:
    """Wrap UTF-8 JSON bytes in one WebSocket text frame, ready for ``transport.write``."""
    return encode_frame(TEXT, payload)


def unframe(frame: bytes) -> bytes:
    """The payload of a frame made by :func:`frame` (what another node is sent)."""
    marker = frame[1]
    return frame[2 if marker < 126 else 4 if marker == 126 else 10:]


def event_data(data: Any) -> str:
    """An event's ``data`` as the protocol carries it: always a string, so ``data`` that is
    not one already is JSON-encoded into one (pusher-websocket-java and others cast ``data``
    to a string before parsing it). The one rule for client events, the HTTP API, the
    dashboard and :func:`event_frame`."""
    return data if isinstance(data, str) else dumps(data).decode()


def event_frame(
    event: str,
    data: Any,
    channel: str | None = None,
    user_id: str | int | None = None,
) -> bytes:
    """Frame a channel or connection event, ``data`` made a string by :func:`event_data`;
    ``None`` leaves ``data`` out (``pusher:cache_miss`` has none).
    """
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    if data is not None:
        message["data"] = event_data(data)
    if user_id is not None:
        message["user_id"] = user_id
    return frame(dumps(message))


def signin_success_frame(user_data: str) -> bytes:
    """Frame ``pusher:signin_success``; ``data`` is an object, as the protocol docs show it."""
    message = {"event": "pusher:signin_success", "data": {"user_data": user_data}}
    return frame(dumps(message))


def error_frame(code: int | None, message: str) -> bytes:
    """Frame a ``pusher:error``; its ``data`` is an object, as real Pusher sends it."""
    return frame(dumps({"event": "pusher:error", "data": {"code": code, "message": message}}))
