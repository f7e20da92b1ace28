"""Local channel state and fan-out.

The hub knows, per app, which connections are open, which channels they are in, who the
presence members are and which connections are signed in as which user. Publishing hands the
same pre-framed ``bytes`` to every subscriber's sink: nothing is encoded per socket and nothing
on this path awaits.

Here: connections, channels and presence membership, the fan-out and cache channels. Its parts:
the per-app tables (:mod:`.hub_tables`), signed-in users and watchlists (:mod:`.hub_users`),
the chunked release of a closed socket's channels (:mod:`.hub_release`).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from . import wire
from .adapters import create_adapter
from .adapters.base import Adapter, Joined, Left
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
from .hub_membership import count_socket, forget_socket, presence_full, succeeded_frame
from .hub_release import RELEASE_CHUNK, Releaser
from .hub_tables import AppState, CachedEvent, Counters
from .hub_users import Users

if TYPE_CHECKING:
    from .config import AppConfig

__all__ = ["RELEASE_CHUNK", "Channel", "Counters", "Hub", "HubListener", "Member", "Subscriber"]


class HubListener(Protocol):
    """Told of state changes as event objects (``{"name": ..., ...}``): the webhook events
    (``channel_occupied``, ``member_added``...) and, for live debugging, ``connection_opened``
    and ``connection_closed`` (with ``socket_id``) and ``api_message`` (``channel``, ``event``)."""

    def channel_event(self, app: AppConfig, event: dict[str, Any]) -> None: ...


class Hub:
    """Connections, channels and presence of every app served by this process."""

    def __init__(
        self,
        listeners: Sequence[HubListener] = (),
        clock: Callable[[], float] = time.monotonic,
        adapter: Adapter | None = None,
        defer: Callable[[Callable[[], None]], object] | None = None,
    ) -> None:
        self._apps: dict[str, AppState] = {}
        """Each app's tables, made on first use (:meth:`_state`)."""
        self._listeners = tuple(listeners)
        """Told of every state change (:meth:`notify`): webhooks, the debug feed."""
        self.clock = clock
        self._releaser = Releaser(self.leave, self._released, defer)
        """Leaves closed connections' channels a chunk per loop iteration; ``defer`` runs a
        callback on a later iteration (``None``: the running loop's ``call_soon``)."""
        self.adapter: Adapter = adapter if adapter is not None else create_adapter()
        self._users = Users(self._state, self.adapter)
        """Signed-in users and watchlists; the hub's methods below are their interface."""
        self.adapter.bind(self)

    @property
    def listening(self) -> bool:
        """Whether anyone listens: callers skip building event objects when nobody does."""
        return bool(self._listeners)

    def notify(self, app: AppConfig, event: dict[str, Any]) -> None:
        """Pass a state change to the listeners (webhooks, the debug feed)."""
        for listener in self._listeners:
            listener.channel_event(app, event)

    def _state(self, app_id: str) -> AppState:
        state = self._apps.get(app_id)
        if state is None:
            state = self._apps[app_id] = AppState()
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

    def remove(self, connection: Subscriber) -> None:
        """Forget a closed connection.

        It leaves the indexes at once (it no longer counts as open, no watchlist event reaches
        it), then its channels, at most :data:`RELEASE_CHUNK` per loop iteration, so that a
        socket holding many channels never stalls the loop; a closed connection drops whatever
        the channels it is still in deliver meanwhile. After its last channel, the user is
        signed out and ``connection_closed`` told: the order a small socket has all at once.
        """
        self._state(connection.app.id).connections.pop(connection.socket_id, None)
        self._users.stop_watching(connection)
        self._releaser.release(connection)

    @property
    def releasing(self) -> int:
        """Closed connections whose channels are still being left."""
        return self._releaser.pending

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
        self._users.sign_out(connection)
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

    # -- signed-in users: kept by :class:`Users`, asked through these ---------------------

    def sign_in(self, connection: Subscriber, user_id: str, watchlist: tuple[str, ...],
                admitted: Callable[[], None]) -> None:
        """See :meth:`Users.sign_in`."""
        self._users.sign_in(connection, user_id, watchlist, admitted)

    def watch_event(self, app_id: str, user_id: str, online: bool) -> None:
        """Tell this node's watchers of ``user_id`` that it came online or went offline."""
        self._users.watch_event(app_id, user_id, online)

    def user_connections(self, app_id: str, user_id: str) -> list[Subscriber]:
        """This node's connections signed in as ``user_id``."""
        return self._users.connections(app_id, user_id)

    def signed_in_users(self, app_id: str) -> dict[str, int]:
        """This node's signed-in users and how many sockets each has here."""
        return self._users.counts(app_id)

    def terminate(self, app: AppConfig, user_id: str) -> None:
        """Close every connection of ``user_id`` with 4009, on every node."""
        self._users.terminate(app, user_id)

    def terminate_local(self, app_id: str, user_id: str) -> None:
        """Close this node's connections of ``user_id`` with 4009."""
        self._users.terminate_local(app_id, user_id)

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
                connection.send(succeeded_frame(channel, None))
            elif connection in channel.subscribers:
                self.adapter.joined(connection.app, channel, member, False,
                                     lambda answer: self._answer(connection, channel, answer))
            return
        # The channel's own name as the key: one string per channel, not one per socket.
        connection.channels[channel.name] = member
        first = count_socket(channel, member)
        if member is None:
            channel.subscribers[connection] = None
            connection.send(succeeded_frame(channel, None))
            if channel.kind.cached:
                self._replay_cache(connection, name)
        self.adapter.joined(connection.app, channel, member, first,
                             lambda answer: self._joined(connection, channel, member, answer))

    def _answer(self, connection: Subscriber, channel: Channel, answer: Joined) -> None:
        if connection in channel.subscribers:
            connection.send(succeeded_frame(channel, answer.roster))

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
            if connection.channels.get(name) is member and self._state(app.id).is_open(
                    connection):
                channel.subscribers[connection] = member
                connection.send(succeeded_frame(channel, answer.roster))
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
            self._fan_out(channel, succeeded_frame(channel, roster), None)

    def _refuse_member(self, connection: Subscriber, channel: Channel, member: Member) -> None:
        """Undo a presence join the cluster refused, and tell the client why."""
        if connection.channels.get(channel.name) is not member:
            return  # it left before the answer came, and leave() undid the join
        del connection.channels[channel.name]
        forget_socket(channel, member)
        self._drop_if_empty(connection.app.id, channel)
        for frame in presence_full(channel, connection.app.max_presence_members).to_frames():
            connection.send(frame)

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
        gone = forget_socket(channel, member)
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
