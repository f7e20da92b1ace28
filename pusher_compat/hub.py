"""Local channel state and fan-out.

The hub knows, per app, which connections are open, which channels they are in, who the
presence members are and which connections are signed in as which user. Publishing hands the
same pre-framed ``bytes`` to every subscriber's sink: nothing is encoded per socket and nothing
on this path awaits.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import wire
from .channels import USER_CHANNEL_PREFIX, ChannelKind, kind_of

if TYPE_CHECKING:
    from .config import AppConfig

__all__ = ["Channel", "Counters", "Hub", "HubListener", "Member", "Subscriber"]


class Subscriber(Protocol):
    """What the hub needs of a connection."""

    socket_id: str
    app: AppConfig
    channels: dict[str, Member | None]
    user_id: str | None
    watchlist: tuple[str, ...]

    def send(self, frame: bytes) -> None: ...

    def fail(self, error: wire.PusherError) -> None: ...


class HubListener(Protocol):
    """Told of state changes as event objects (``{"name": ..., ...}``): the webhook events
    (``channel_occupied``, ``member_added``...) and, for live debugging, ``connection_opened``
    and ``connection_closed`` (with ``socket_id``) and ``api_message`` (``channel``, ``event``)."""

    def channel_event(self, app: AppConfig, event: dict[str, Any]) -> None: ...


@dataclass(slots=True)
class Member:
    """A presence member as its ``channel_data`` described it."""

    user_id: str | int
    user_info: Any = None

    @property
    def key(self) -> str:
        # pusher-js keys members by the JSON value; ids compare by their string form.
        return str(self.user_id)


@dataclass(slots=True, eq=False)
class Channel:
    """One occupied channel of one app."""

    name: str
    kind: ChannelKind
    subscribers: dict[Subscriber, Member | None] = field(default_factory=dict)
    members: dict[str, Member] = field(default_factory=dict)
    """Presence members by user id; the first socket's ``user_info`` wins."""
    sockets_per_member: dict[str, int] = field(default_factory=dict)

    @property
    def subscription_count(self) -> int:
        return len(self.subscribers)

    @property
    def user_count(self) -> int:
        return len(self.members)

    def presence_data(self) -> dict[str, Any]:
        hash_ = {key: m.user_info for key, m in self.members.items()}
        return {"presence": {"ids": list(hash_), "hash": hash_, "count": len(hash_)}}


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
class _AppState:
    connections: dict[str, Subscriber] = field(default_factory=dict)
    channels: dict[str, Channel] = field(default_factory=dict)
    users: dict[str, dict[Subscriber, None]] = field(default_factory=dict)
    watchers: dict[str, dict[Subscriber, None]] = field(default_factory=dict)
    """Connections whose sign-in watchlist names a user id, by that id."""
    cache: dict[str, CachedEvent] = field(default_factory=dict)
    """Last event of each cache channel, kept even while nobody is subscribed."""
    counters: Counters = field(default_factory=Counters)


def _discard(index: dict[str, dict[Subscriber, None]], key: str, connection: Subscriber) -> bool:
    """Remove ``connection`` under ``key``; True when that emptied the entry."""
    entries = index.get(key)
    if entries is None or connection not in entries:
        return False
    del entries[connection]
    if entries:
        return False
    del index[key]
    return True


def _watchlist_frame(events: list[dict[str, Any]]) -> bytes:
    return wire.event_frame("pusher_internal:watchlist_events", {"events": events})


class Hub:
    """Connections, channels and presence of every app served by this process."""

    def __init__(
        self, listeners: Sequence[HubListener] = (), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._apps: dict[str, _AppState] = {}
        self._listeners = tuple(listeners)
        self._clock = clock

    @property
    def listening(self) -> bool:
        """Whether anyone listens: callers skip building event objects when nobody does."""
        return bool(self._listeners)

    def notify(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Pass a state change to the listeners (webhooks, the debug feed)."""
        for listener in self._listeners:
            listener.channel_event(app, event)

    def _state(self, app_id: str) -> _AppState:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = _AppState()
        return state

    # -- connections -------------------------------------------------------------------

    def new_socket_id(self, app_id: str) -> str:
        """A fresh ``\\d+.\\d+`` socket id, unique among the app's open connections."""
        connections = self._state(app_id).connections
        while True:
            socket_id = f"{random.randint(1, 10**9)}.{random.randint(1, 10**9)}"
            if socket_id not in connections:
                return socket_id

    def add(self, connection: Subscriber) -> None:
        state = self._state(connection.app.id)
        state.connections[connection.socket_id] = connection
        state.counters.connections_peak = max(
            state.counters.connections_peak, len(state.connections)
        )
        if self._listeners:
            self.notify(connection.app,
                        {"name": "connection_opened", "socket_id": connection.socket_id})

    def counters(self, app_id: str) -> Counters:
        return self._state(app_id).counters

    def app_ids(self) -> list[str]:
        """Apps that have had any activity."""
        return list(self._apps)

    def remove(self, connection: Subscriber) -> None:
        """Forget a closed connection: leave every channel, then drop it from the indexes."""
        for name in list(connection.channels):
            self.leave(connection, name)
        state = self._state(connection.app.id)
        state.connections.pop(connection.socket_id, None)
        for watched in connection.watchlist:
            _discard(state.watchers, watched, connection)
        user_id = connection.user_id
        if user_id is not None and _discard(state.users, user_id, connection):
            self._notify_watchers(state, "offline", user_id)
        if self._listeners:
            self.notify(connection.app,
                        {"name": "connection_closed", "socket_id": connection.socket_id})

    def connection_count(self, app_id: str | None = None) -> int:
        """Open connections of one app, or of all apps."""
        if app_id is not None:
            return len(self._state(app_id).connections)
        return sum(len(state.connections) for state in self._apps.values())

    def connections(self) -> Iterator[Subscriber]:
        for state in self._apps.values():
            yield from list(state.connections.values())

    def sign_in(self, connection: Subscriber, user_id: str) -> None:
        """Index a signed-in connection; tell watchers when it is the user's first one.

        The connection's own watchlist is answered at once with who is online and who is not.
        """
        state = self._state(connection.app.id)
        sockets = state.users.setdefault(user_id, {})
        first = not sockets
        sockets[connection] = None
        if first:
            self._notify_watchers(state, "online", user_id)
        if connection.watchlist:
            for watched in connection.watchlist:
                state.watchers.setdefault(watched, {})[connection] = None
            online = [u for u in connection.watchlist if u in state.users]
            offline = [u for u in connection.watchlist if u not in state.users]
            events = [{"name": name, "user_ids": ids}
                      for name, ids in (("online", online), ("offline", offline)) if ids]
            connection.send(_watchlist_frame(events))

    def _notify_watchers(self, state: _AppState, name: str, user_id: str) -> None:
        watchers = state.watchers.get(user_id)
        if watchers:
            frame = _watchlist_frame([{"name": name, "user_ids": [user_id]}])
            for watcher in watchers:
                watcher.send(frame)

    def user_connections(self, app_id: str, user_id: str) -> list[Subscriber]:
        return list(self._state(app_id).users.get(user_id, ()))

    # -- channels ----------------------------------------------------------------------

    def channel(self, app_id: str, name: str) -> Channel | None:
        return self._state(app_id).channels.get(name)

    def channels(self, app_id: str) -> Iterator[Channel]:
        return iter(self._state(app_id).channels.values())

    def join(self, connection: Subscriber, name: str, member: Member | None) -> None:
        """Subscribe ``connection`` and send it ``subscription_succeeded``.

        Presence: announce the member to the others when this is its first socket. Raises
        :class:`wire.SubscriptionError` when the channel is full.
        """
        app = connection.app
        channels = self._state(app.id).channels
        channel = channels.get(name)
        if channel is None:
            channel = Channel(name, kind_of(name))
        if connection in channel.subscribers:
            connection.send(self._succeeded(channel))
            return
        first = False
        if member is not None:
            first = member.key not in channel.members
            if first and len(channel.members) >= app.max_presence_members:
                raise wire.SubscriptionError(
                    name, "LimitReached",
                    f"The maximum number of members in a presence channel "
                    f"({app.max_presence_members}) has been reached", 4100,
                )
            if first:
                channel.members[member.key] = member
            count = channel.sockets_per_member.get(member.key, 0)
            channel.sockets_per_member[member.key] = count + 1
        occupied = name not in channels
        channels[name] = channel
        channel.subscribers[connection] = member
        connection.channels[name] = member
        connection.send(self._succeeded(channel))
        if channel.kind.cached:
            self._replay_cache(connection, name)
        if first and member is not None:
            data = {"user_id": member.user_id, "user_info": member.user_info}
            frame = wire.event_frame("pusher_internal:member_added", data, name)
            self._fan_out(channel, frame, connection)
        if self._listeners and not channel.kind.user:
            if occupied:
                self.notify(app, {"name": "channel_occupied", "channel": name})
            if first and member is not None:
                self.notify(app, {"name": "member_added", "channel": name,
                                  "user_id": member.key})
            self._notify_count(app, channel)

    def leave(self, connection: Subscriber, name: str) -> None:
        """Unsubscribe; presence: announce the member gone when its last socket leaves."""
        connection.channels.pop(name, None)
        state = self._state(connection.app.id)
        channel = state.channels.get(name)
        if channel is None or connection not in channel.subscribers:
            return
        member = channel.subscribers.pop(connection)
        gone: Member | None = None
        if member is not None:
            remaining = channel.sockets_per_member[member.key] - 1
            if remaining:
                channel.sockets_per_member[member.key] = remaining
            else:
                del channel.sockets_per_member[member.key]
                gone = channel.members.pop(member.key)
                frame = wire.event_frame(
                    "pusher_internal:member_removed", {"user_id": gone.user_id}, name
                )
                self._fan_out(channel, frame, None)
        if not channel.subscribers:
            del state.channels[name]
        if self._listeners and not channel.kind.user:
            app = connection.app
            if gone is not None:
                self.notify(app, {"name": "member_removed", "channel": name,
                                  "user_id": gone.key})
            self._notify_count(app, channel)
            if not channel.subscribers:
                self.notify(app, {"name": "channel_vacated", "channel": name})

    def _notify_count(self, app: AppConfig, channel: Channel) -> None:
        if not channel.kind.presence:
            self.notify(app, {"name": "subscription_count", "channel": channel.name,
                              "subscription_count": channel.subscription_count})

    def publish(self, app_id: str, name: str, frame: bytes, except_socket_id: str | None = None
                ) -> None:
        """Deliver one pre-framed event to every local subscriber of ``name``.

        Events for ``#server-to-user-{id}`` reach every connection signed in as that user.
        """
        state = self._state(app_id)
        excluded = state.connections.get(except_socket_id) if except_socket_id else None
        if name.startswith(USER_CHANNEL_PREFIX):
            user_id = name[len(USER_CHANNEL_PREFIX):]
            for connection in state.users.get(user_id, ()):
                if connection is not excluded:
                    connection.send(frame)
            return
        channel = state.channels.get(name)
        if channel is not None:
            self._fan_out(channel, frame, excluded)

    # -- cache channels ----------------------------------------------------------------

    def remember(self, app: AppConfig, name: str, frame: bytes, data: str) -> None:
        """Keep ``frame`` as the last event of cache channel ``name`` for ``cache_ttl_seconds``."""
        expires = self._clock() + app.cache_ttl_seconds
        self._state(app.id).cache[name] = CachedEvent(frame, data, expires)

    def cached(self, app_id: str, name: str) -> tuple[CachedEvent, float] | None:
        """The live cached event of ``name`` and its remaining seconds, if any."""
        entry = self._state(app_id).cache.get(name)
        if entry is None:
            return None
        remaining = entry.expires - self._clock()
        return (entry, remaining) if remaining > 0 else None

    def prune_cache(self) -> None:
        """Drop expired cached events (they are already invisible; this frees the memory)."""
        now = self._clock()
        for state in self._apps.values():
            expired = [name for name, entry in state.cache.items() if entry.expires <= now]
            for name in expired:
                del state.cache[name]

    def _replay_cache(self, connection: Subscriber, name: str) -> None:
        hit = self.cached(connection.app.id, name)
        if hit is not None:
            connection.send(hit[0].frame)
            return
        connection.send(wire.event_frame("pusher:cache_miss", None, name))
        self.notify(connection.app, {"name": "cache_miss", "channel": name})

    @staticmethod
    def _fan_out(channel: Channel, frame: bytes, excluded: Subscriber | None) -> None:
        for subscriber in channel.subscribers:
            if subscriber is not excluded:
                subscriber.send(frame)

    @staticmethod
    def _succeeded(channel: Channel) -> bytes:
        data: Any = channel.presence_data() if channel.kind.presence else "{}"
        return wire.event_frame("pusher_internal:subscription_succeeded", data, channel.name)
