"""The hub's per-app state tables: open connections, channels, signed-in users, watchers,
cached events and running counters, one :class:`AppState` per app.

Plain tables and no behaviour of their own beyond lookups: the hub fans out over them, its
sign-in part (:mod:`.hub_users`) keeps the user and watcher indexes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .channel_state import Channel, Subscriber


@dataclass(frozen=True, slots=True)
class CachedEvent:
    """The last event published on a cache channel."""

    frame: bytes
    data: str
    expires: float


@dataclass(slots=True)
class Counters:
    """Running totals of one app since start; statistics and metrics read them, nothing resets
    them except ``connections_peak``, which the reader restarts at each interval."""

    ws_messages_in: int = 0
    ws_bytes_in: int = 0
    """Characters of the text frames received (UTF-8 bytes for ASCII, the usual case)."""
    ws_messages_out: int = 0
    ws_bytes_out: int = 0
    """Bytes of the frames queued for sending, WebSocket headers included."""
    api_messages: int = 0
    """Events published through the HTTP API, one per channel."""
    connections_peak: int = 0


@dataclass(slots=True)
class AppState:
    """What this node holds of one app."""

    connections: dict[str, Subscriber] = field(default_factory=dict)
    """Open connections by socket id."""
    channels: dict[str, Channel] = field(default_factory=dict)
    """Channels with at least one local socket, by name."""
    users: dict[str, dict[Subscriber, None]] = field(default_factory=dict)
    """Signed-in connections by user id (a dict as an ordered set)."""
    watchers: dict[str, dict[Subscriber, None]] = field(default_factory=dict)
    """Connections whose sign-in watchlist names a user id, by that id."""
    cache: dict[str, CachedEvent] = field(default_factory=dict)
    """Last event of each cache channel, kept even while nobody is subscribed."""
    counters: Counters = field(default_factory=Counters)

    def is_open(self, connection: Subscriber) -> bool:
        """Whether ``connection`` is still one of the app's open connections here."""
        return self.connections.get(connection.socket_id) is connection


def discard(index: dict[str, dict[Subscriber, None]], key: str, connection: Subscriber) -> bool:
    """Remove ``connection`` under ``key``; True when it was there."""
    entries = index.get(key)
    if entries is None or connection not in entries:
        return False
    del entries[connection]
    if not entries:
        del index[key]
    return True
