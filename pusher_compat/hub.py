"""Local channel state and fan-out.

The hub knows, per app, which connections are open, which channels they are in, who the
presence members are and which connections are signed in as which user. Publishing hands the
same pre-framed ``bytes`` to every subscriber's sink: nothing is encoded per socket and nothing
on this path awaits.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import wire
from .adapters import create_adapter
from .adapters.base import Adapter, Joined, Left, SignedIn, SignedOut
from .channel_state import (
    Channel,
    Member,
    Subscriber,
    channel_record,
    count_record,
    member_added_frame,
    member_record,
    member_removed_frame,
    socket_record,
)
from .channels import USER_CHANNEL_PREFIX, kind_of

if TYPE_CHECKING:
    from .config import AppConfig

__all__ = ["Channel", "Counters", "Hub", "HubListener", "Member", "Subscriber"]


class HubListener(Protocol):
    """Told of state changes as event objects (``{"name": ..., ...}``): the webhook events
    (``channel_occupied``, ``member_added``...) and, for live debugging, ``connection_opened``
    and ``connection_closed`` (with ``socket_id``) and ``api_message`` (``channel``, ``event``)."""

    def channel_event(self, app: AppConfig, event: dict[str, Any]) -> None: ...


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


@dataclass(slots=True)
class _Release:
    """A closed connection still leaving its channels."""

    connection: Subscriber
    names: list[str]
    """The channels it held when it closed, last first: popped as they are left."""
    held: int
    """How many channels it held when it closed."""


def _discard(index: dict[str, dict[Subscriber, None]], key: str, connection: Subscriber) -> bool:
    """Remove ``connection`` under ``key``; True when it was there."""
    entries = index.get(key)
    if entries is None or connection not in entries:
        return False
    del entries[connection]
    if not entries:
        del index[key]
    return True


RELEASE_CHUNK = 500
"""Channels a closed connection leaves per loop iteration. Leaving one cost 1.6 µs here, 6 µs
with webhooks listening (measured: 100,000 at once held the loop 160 ms, 590 ms with
webhooks): 500 keep each pass to a few milliseconds, and 100,000 channels are released over
200 iterations in well under a second."""


def _watchlist_frame(events: list[dict[str, Any]]) -> bytes:
    return wire.event_frame("pusher_internal:watchlist_events", {"events": events})


class Hub:
    """Connections, channels and presence of every app served by this process."""

    def __init__(
        self,
        listeners: Sequence[HubListener] = (),
        clock: Callable[[], float] = time.monotonic,
        adapter: Adapter | None = None,
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._apps: dict[str, _AppState] = {}
        self._listeners = tuple(listeners)
        self.clock = clock
        self._defer = defer
        """Runs a callback on a later loop iteration; ``None``: the running loop's
        ``call_soon``. Tests pass their own to step through a release."""
        self._releasing: deque[_Release] = deque()
        """Closed connections still leaving their channels, oldest first."""
        self._scheduled = False
        """Whether a :meth:`_release` pass is waiting for the loop: never more than one."""
        self.adapter: Adapter = adapter if adapter is not None else create_adapter()
        self.adapter.bind(self)

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
            self.notify(connection.app, socket_record("connection_opened", connection.socket_id))

    def counters(self, app_id: str) -> Counters:
        return self._state(app_id).counters

    def app_ids(self) -> list[str]:
        """Apps that have had any activity."""
        return list(self._apps)

    def _is_open(self, connection: Subscriber) -> bool:
        return self._state(connection.app.id).connections.get(connection.socket_id) is connection

    def remove(self, connection: Subscriber) -> None:
        """Forget a closed connection.

        It leaves the indexes at once (it no longer counts as open, no watchlist event reaches
        it), then its channels, at most :data:`RELEASE_CHUNK` per loop iteration, so that a
        socket holding many channels never stalls the loop; a closed connection drops whatever
        the channels it is still in deliver meanwhile. After its last channel, the user is
        signed out and ``connection_closed`` told: the order a small socket has all at once.
        """
        state = self._state(connection.app.id)
        state.connections.pop(connection.socket_id, None)
        for watched in connection.watchlist:
            _discard(state.watchers, watched, connection)
        release = _Release(connection, list(reversed(connection.channels)),
                           len(connection.channels))
        if not self._releasing:
            # Nothing older waits: a socket with few channels is released right here.
            self._leave_some(release, RELEASE_CHUNK)
        if release.names:
            self._releasing.append(release)
            self._schedule()

    @property
    def releasing(self) -> int:
        """Closed connections whose channels are still being left."""
        return len(self._releasing)

    def _schedule(self) -> None:
        if self._releasing and not self._scheduled:
            self._scheduled = True
            (self._defer or asyncio.get_running_loop().call_soon)(self._release)

    def _release(self) -> None:
        """One loop iteration's share: up to :data:`RELEASE_CHUNK` channels of the oldest
        closed connections."""
        self._scheduled = False
        budget = RELEASE_CHUNK
        while self._releasing and budget:
            release = self._releasing[0]
            budget = self._leave_some(release, budget)
            if not release.names:
                self._releasing.popleft()
        self._schedule()

    def _leave_some(self, release: _Release, budget: int) -> int:
        """Leave up to ``budget`` of the channels still held; the budget left over."""
        names = release.names
        while names and budget:
            self.leave(release.connection, names.pop())
            budget -= 1
        if not names:
            self._released(release.connection, release.held)
        return budget

    def _released(self, connection: Subscriber, held: int) -> None:
        """The last of the ``held`` channels of a closed connection is left: the user goes,
        then the socket."""
        app = connection.app
        # A dict never shrinks as keys are deleted: without this, a socket that held 100,000
        # channels leaves tables of megabytes behind, here and in whatever still refers to the
        # closed connection. Copying the app's channels costs at most what leaving ``held``
        # of them did.
        connection.channels.clear()
        state = self._state(app.id)
        if held > RELEASE_CHUNK and len(state.channels) < held:
            state.channels = dict(state.channels)
        user_id = connection.user_id
        if user_id is not None and _discard(state.users, user_id, connection):
            self.adapter.signed_out(app, user_id, lambda out: self._signed_out(app, user_id, out))
        if self._listeners:
            self.notify(app, socket_record("connection_closed", connection.socket_id))

    def connection_count(self, app_id: str | None = None) -> int:
        """Open connections of one app on every node, or of all apps on this node."""
        if app_id is not None:
            return self.adapter.connection_count(app_id)
        return sum(len(state.connections) for state in self._apps.values())

    def local_connection_count(self, app_id: str) -> int:
        """Open connections of one app on this node."""
        return len(self._state(app_id).connections)

    def connections(self) -> Iterator[Subscriber]:
        for state in self._apps.values():
            yield from list(state.connections.values())

    def sign_in(self, connection: Subscriber, user_id: str, watchlist: tuple[str, ...],
                admitted: Callable[[], None]) -> None:
        """Sign ``connection`` in as ``user_id`` once the cluster allows it.

        Over ``max_connections_per_user`` the connection is closed with 4004; otherwise
        ``admitted`` runs (the connection records who it is), watchers learn the user is online
        when this is its first socket anywhere, and the connection's own ``watchlist`` is
        answered with who is online and who is not.
        """
        app = connection.app
        self.adapter.signed_in(
            app, user_id, watchlist,
            lambda answer: self._signed_in(connection, user_id, watchlist, admitted, answer),
        )

    def _signed_in(self, connection: Subscriber, user_id: str, watchlist: tuple[str, ...],
                   admitted: Callable[[], None], answer: SignedIn) -> None:
        app = connection.app
        limit = app.max_connections_per_user
        if not self._is_open(connection) or (limit and answer.sockets > limit):
            # Counted by the cluster, not kept: take the socket back off the count.
            self.adapter.signed_out(app, user_id, lambda out: self._signed_out(app, user_id, out))
            connection.fail(wire.PusherError(
                wire.Code.APP_OVER_QUOTA,
                f"Too many connections for user {user_id}: at most {limit}", close=True,
            ))
            return
        state = self._state(app.id)
        state.users.setdefault(user_id, {})[connection] = None
        admitted()
        if answer.online:
            self.watch_event(app.id, user_id, online=True)
        if watchlist:
            for watched in watchlist:
                state.watchers.setdefault(watched, {})[connection] = None
            online = [u for u in watchlist if u in answer.watched_online]
            offline = [u for u in watchlist if u not in answer.watched_online]
            events = [{"name": name, "user_ids": ids}
                      for name, ids in (("online", online), ("offline", offline)) if ids]
            connection.send(_watchlist_frame(events))

    def _signed_out(self, app: AppConfig, user_id: str, answer: SignedOut) -> None:
        if answer.offline:
            self.watch_event(app.id, user_id, online=False)

    def watch_event(self, app_id: str, user_id: str, online: bool) -> None:
        """Tell this node's watchers of ``user_id`` that it came online or went offline."""
        watchers = self._state(app_id).watchers.get(user_id)
        if watchers:
            name = "online" if online else "offline"
            frame = _watchlist_frame([{"name": name, "user_ids": [user_id]}])
            for watcher in watchers:
                watcher.send(frame)

    def user_connections(self, app_id: str, user_id: str) -> list[Subscriber]:
        """This node's connections signed in as ``user_id``."""
        return list(self._state(app_id).users.get(user_id, ()))

    def signed_in_users(self, app_id: str) -> dict[str, int]:
        """This node's signed-in users and how many sockets each has here."""
        return {user: len(sockets) for user, sockets in self._state(app_id).users.items()}

    def terminate(self, app: AppConfig, user_id: str) -> None:
        """Close every connection of ``user_id`` with 4009, on every node."""
        self.terminate_local(app.id, user_id)
        self.adapter.terminate(app.id, user_id)

    def terminate_local(self, app_id: str, user_id: str) -> None:
        for connection in self.user_connections(app_id, user_id):
            connection.fail(wire.PusherError(
                wire.Code.UNAUTHORIZED, "Connection terminated by the app", close=True
            ))

    # -- channels ----------------------------------------------------------------------

    def channel(self, app_id: str, name: str) -> Channel | None:
        """The channel as this node holds it (its own subscribers)."""
        return self._state(app_id).channels.get(name)

    def channels(self, app_id: str) -> Iterator[Channel]:
        return iter(self._state(app_id).channels.values())

    def join(self, connection: Subscriber, name: str, member: Member | None) -> None:
        """Subscribe ``connection``: ``subscription_succeeded`` is sent once the cluster has
        answered (at once for public and private channels, whose answer carries nothing).

        Presence: the member is announced to the others when this is its first socket anywhere;
        a channel already holding ``max_presence_members`` refuses a new member with 4100.
        """
        state = self._state(connection.app.id)
        channel = state.channels.get(name)
        if channel is None:
            channel = state.channels[name] = Channel(name, kind_of(name))
        if name in connection.channels:
            if connection in channel.subscribers and member is None:
                connection.send(self._succeeded(channel, None))
            elif connection in channel.subscribers:
                self.adapter.joined(connection.app, channel, member, False,
                                     lambda answer: self._answer(connection, channel, answer))
            return
        # The channel's own name as the key: one string per channel, not one per socket.
        connection.channels[channel.name] = member
        channel.local_sockets += 1
        first = False
        if member is None:
            channel.subscribers[connection] = None
            connection.send(self._succeeded(channel, None))
            if channel.kind.cached:
                self._replay_cache(connection, name)
        else:
            count = channel.sockets_per_member.get(member.key, 0)
            channel.sockets_per_member[member.key] = count + 1
            first = count == 0
        self.adapter.joined(connection.app, channel, member, first,
                             lambda answer: self._joined(connection, channel, member, answer))

    def _answer(self, connection: Subscriber, channel: Channel, answer: Joined) -> None:
        if connection in channel.subscribers:
            connection.send(self._succeeded(channel, answer.roster))

    def _joined(self, connection: Subscriber, channel: Channel, member: Member | None,
                answer: Joined) -> None:
        app = connection.app
        name = channel.name
        if member is not None:
            if answer.full:
                self._refuse_member(connection, channel, member)
                return
            if member.key in channel.sockets_per_member:
                channel.members.setdefault(member.key, member)
            if connection.channels.get(name) is member and self._is_open(connection):
                channel.subscribers[connection] = member
                connection.send(self._succeeded(channel, answer.roster))
                if channel.kind.cached:
                    self._replay_cache(connection, name)
            if answer.added:
                self.deliver(app.id, name, member_added_frame(name, member),
                             connection.socket_id)
        if self._listeners and not channel.kind.user:
            if answer.occupied:
                self.notify(app, channel_record("channel_occupied", name))
            if answer.added and member is not None:
                self.notify(app, member_record("member_added", name, member.key))
            if not channel.kind.presence:
                self.notify(app, count_record(name, answer.subscription_count))

    def resend_roster(self, app_id: str, name: str, roster: dict[str, Any]) -> None:
        """Send ``subscription_succeeded`` again with ``roster`` to this node's subscribers of a
        presence channel: clients replace their member list (after a cluster outage)."""
        channel = self._state(app_id).channels.get(name)
        if channel is not None:
            self._fan_out(channel, self._succeeded(channel, roster), None)

    def _refuse_member(self, connection: Subscriber, channel: Channel, member: Member) -> None:
        """Undo a presence join the cluster refused, and tell the client why."""
        if connection.channels.get(channel.name) is not member:
            return  # it left before the answer came, and leave() undid the join
        del connection.channels[channel.name]
        self._forget_socket(channel, member)
        self._drop_if_empty(connection.app.id, channel)
        error = wire.SubscriptionError(
            channel.name, "LimitReached",
            f"The maximum number of members in a presence channel "
            f"({connection.app.max_presence_members}) has been reached",
            wire.SubscriptionStatus.PRESENCE_FULL,
        )
        for frame in error.to_frames():
            connection.send(frame)

    def _forget_socket(self, channel: Channel, member: Member | None) -> Member | None:
        """Take one socket off ``channel``'s local counts; the member when it was its last."""
        channel.local_sockets -= 1
        gone = None
        if member is not None:
            remaining = channel.sockets_per_member[member.key] - 1
            if remaining:
                channel.sockets_per_member[member.key] = remaining
            else:
                del channel.sockets_per_member[member.key]
                gone = channel.members.pop(member.key, member)
        return gone

    def leave(self, connection: Subscriber, name: str) -> None:
        """Unsubscribe; presence: announce the member gone when its last socket anywhere left."""
        if name not in connection.channels:
            return
        member = connection.channels.pop(name)
        app = connection.app
        channel = self._state(app.id).channels.get(name)
        if channel is None:
            return
        channel.subscribers.pop(connection, None)
        gone = self._forget_socket(channel, member)
        self._drop_if_empty(app.id, channel)
        self.adapter.left(app, channel, gone,
                           lambda answer: self._left(app, channel, gone, answer))

    def _drop_if_empty(self, app_id: str, channel: Channel) -> None:
        channels = self._state(app_id).channels
        if not channel.local_sockets and channels.get(channel.name) is channel:
            del channels[channel.name]

    def _left(self, app: AppConfig, channel: Channel, gone: Member | None, answer: Left) -> None:
        name = channel.name
        if answer.removed and gone is not None:
            self.deliver(app.id, name, member_removed_frame(name, gone.user_id), None)
        if self._listeners and not channel.kind.user:
            if answer.removed and gone is not None:
                self.notify(app, member_record("member_removed", name, gone.key))
            if not channel.kind.presence:
                self.notify(app, count_record(name, answer.subscription_count))
            if answer.vacated:
                self.notify(app, channel_record("channel_vacated", name))

    def publish(self, app_id: str, name: str, frame: bytes, except_socket_id: str | None = None
                ) -> None:
        """Deliver one pre-framed event to every subscriber of ``name``, on every node."""
        # The bus first: its writer then runs before this node's flush, so the other nodes
        # start their fan-out without waiting for ours.
        self.adapter.publish(app_id, name, frame, except_socket_id)
        self.deliver(app_id, name, frame, except_socket_id)

    def deliver(self, app_id: str, name: str, frame: bytes, except_socket_id: str | None = None
                ) -> None:
        """Deliver one pre-framed event to this node's subscribers of ``name``.

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
        """Keep ``frame`` as the last event of cache channel ``name`` for ``cache_ttl_seconds``,
        on every node."""
        self.keep(app.id, name, frame, data, app.cache_ttl_seconds)
        self.adapter.remember(app, name, frame)

    def keep(self, app_id: str, name: str, frame: bytes, data: str, ttl: float) -> None:
        """Keep a cache channel's last event on this node for ``ttl`` seconds."""
        self._state(app_id).cache[name] = CachedEvent(frame, data, self.clock() + ttl)

    def cached(self, app_id: str, name: str) -> tuple[CachedEvent, float] | None:
        """The live cached event of ``name`` and its remaining seconds, if any."""
        entry = self._state(app_id).cache.get(name)
        if entry is None:
            return None
        remaining = entry.expires - self.clock()
        return (entry, remaining) if remaining > 0 else None

    def prune_cache(self) -> None:
        """Drop expired cached events (they are already invisible; this frees the memory)."""
        now = self.clock()
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
        self.notify(connection.app, channel_record("cache_miss", name))

    @staticmethod
    def _fan_out(channel: Channel, frame: bytes, excluded: Subscriber | None) -> None:
        for subscriber in channel.subscribers:
            if subscriber is not excluded:
                subscriber.send(frame)

    @staticmethod
    def _succeeded(channel: Channel, roster: dict[str, Any] | None) -> bytes:
        data: Any = "{}"
        if roster is not None:
            data = {"presence": {"ids": list(roster), "hash": roster, "count": len(roster)}}
        return wire.event_frame("pusher_internal:subscription_succeeded", data, channel.name)
