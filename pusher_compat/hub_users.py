"""Signed-in users and watchlists: ``pusher:signin`` as the cluster admits it, the per-user
connection limit, online/offline watchlist events and terminating a user's connections.

The tables are the hub's (:class:`.hub_tables.AppState` ``users`` and ``watchers``); the hub's
fan-out reads ``users`` directly for ``#server-to-user-`` channels.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from . import wire
from .adapters.base import Adapter, SignedIn, SignedOut
from .channel_state import Subscriber
from .hub_tables import AppState, discard

if TYPE_CHECKING:
    from .config import AppConfig


def _watchlist_frame(events: list[dict[str, Any]]) -> bytes:
    return wire.event_frame("pusher_internal:watchlist_events", {"events": events})


class Users:
    """Who is signed in on this node, and who watches whom."""

    def __init__(self, state: Callable[[str], AppState], adapter: Adapter) -> None:
        self._state = state
        """An app's tables by app id (the hub's, created on first use)."""
        self._adapter = adapter
        """Counts each user's sockets and watchers across the cluster."""

    def sign_in(self, connection: Subscriber, user_id: str, watchlist: tuple[str, ...],
                admitted: Callable[[], None]) -> None:
        """Sign ``connection`` in as ``user_id`` once the cluster allows it.

        Over ``max_connections_per_user`` the connection is closed with 4004; otherwise
        ``admitted`` runs (the connection records who it is), watchers learn the user is online
        when this is its first socket anywhere, and the connection's own ``watchlist`` is
        answered with who is online and who is not.
        """
        app = connection.app
        self._adapter.signed_in(
            app, user_id, watchlist,
            lambda answer: self._signed_in(connection, user_id, watchlist, admitted, answer),
        )

    def _signed_in(self, connection: Subscriber, user_id: str, watchlist: tuple[str, ...],
                   admitted: Callable[[], None], answer: SignedIn) -> None:
        app = connection.app
        state = self._state(app.id)
        limit = app.max_connections_per_user
        if not state.is_open(connection) or (limit and answer.sockets > limit):
            # Counted by the cluster, not kept: take the socket back off the count.
            self._adapter.signed_out(app, user_id, lambda out: self._signed_out(app, user_id, out))
            connection.fail(wire.PusherError(
                wire.Code.APP_OVER_QUOTA,
                f"Too many connections for user {user_id}: at most {limit}", close=True,
            ))
            return
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

    def stop_watching(self, connection: Subscriber) -> None:
        """A closed connection hears no more watchlist events."""
        watchers = self._state(connection.app.id).watchers
        for watched in connection.watchlist:
            discard(watchers, watched, connection)

    def sign_out(self, connection: Subscriber) -> None:
        """A closed connection's user loses this socket; watchers learn the user went offline
        when it was its last anywhere."""
        app = connection.app
        user_id = connection.user_id
        if user_id is not None and discard(self._state(app.id).users, user_id, connection):
            self._adapter.signed_out(app, user_id, lambda out: self._signed_out(app, user_id, out))

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

    def connections(self, app_id: str, user_id: str) -> list[Subscriber]:
        """This node's connections signed in as ``user_id``."""
        return list(self._state(app_id).users.get(user_id, ()))

    def counts(self, app_id: str) -> dict[str, int]:
        """This node's signed-in users and how many sockets each has here."""
        return {user: len(sockets) for user, sockets in self._state(app_id).users.items()}

    def terminate(self, app: AppConfig, user_id: str) -> None:
        """Close every connection of ``user_id`` with 4009, on every node."""
        self.terminate_local(app.id, user_id)
        self._adapter.terminate(app.id, user_id)

    def terminate_local(self, app_id: str, user_id: str) -> None:
        """Close this node's connections of ``user_id`` with 4009."""
        for connection in self.connections(app_id, user_id):
            connection.fail(wire.PusherError(
                wire.Code.UNAUTHORIZED, "Connection terminated by the app", close=True
            ))
