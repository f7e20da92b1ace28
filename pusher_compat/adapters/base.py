"""What a hub shares with the other nodes of a deployment: the adapter interface.

A :class:`~pusher_compat.hub.Hub` keeps the sockets of its own process. Everything a client or
the HTTP API must see *cluster-wide* goes through an :class:`Adapter`: events for sockets on
other nodes, subscriber counts, presence rosters, signed-in users and connection counts.

Adapter calls never block the caller. Answers come back through a ``done`` callback: the local
adapter calls it before returning, the Redis adapter once Redis has answered. Either way the
hub's code is the same, and the sans-I/O core never awaits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..channel_state import Channel, Member, Subscriber
    from ..config import AppConfig

__all__ = ["Adapter", "ChannelCounts", "HubView", "Joined", "Left", "SignedIn", "SignedOut"]


@dataclass(frozen=True, slots=True)
class Joined:
    """The cluster's answer to a subscription."""

    subscription_count: int
    """Sockets subscribed to the channel on every node, this one included."""
    occupied: bool
    """No subscriber anywhere before this one: ``channel_occupied`` is this node's to send."""
    added: bool = False
    """Presence: the member is new cluster-wide, so ``member_added`` is this node's to send."""
    roster: dict[str, Any] = field(default_factory=dict)
    """Presence: every member of the channel, user id to ``user_info``."""
    full: bool = False
    """Presence: refused, the channel already has ``max_presence_members`` members."""


@dataclass(frozen=True, slots=True)
class Left:
    """The cluster's answer to an unsubscription."""

    subscription_count: int
    vacated: bool
    """No subscriber is left anywhere: ``channel_vacated`` is this node's to send."""
    removed: bool = False
    """Presence: the member's last socket anywhere left, so ``member_removed`` is this node's."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The cluster's answer to a sign-in."""

    sockets: int
    """Sockets signed in as the user on every node, this one included."""
    online: bool
    """The user had no socket anywhere before: watchers are told it is online."""
    watched_online: tuple[str, ...]
    """The ids of the connection's watchlist that are online."""


@dataclass(frozen=True, slots=True)
class SignedOut:
    offline: bool
    """The user's last socket anywhere is gone: watchers are told it is offline."""


@dataclass(frozen=True, slots=True)
class ChannelCounts:
    subscription_count: int
    user_count: int


class HubView(Protocol):
    """What an adapter needs of the hub it serves: its local state to answer from and to
    resynchronise, and the ways in for what other nodes publish. The hub satisfies it; adapters
    name this, not the hub, so they sit below it."""

    clock: Callable[[], float]

    def channel(self, app_id: str, name: str) -> Channel | None: ...

    def channels(self, app_id: str) -> Iterator[Channel]: ...

    def user_connections(self, app_id: str, user_id: str) -> list[Subscriber]: ...

    def signed_in_users(self, app_id: str) -> dict[str, int]: ...

    def local_connection_count(self, app_id: str) -> int: ...

    def deliver(self, app_id: str, name: str, frame: bytes, except_socket_id: str | None = None
                ) -> None: ...

    def watch_event(self, app_id: str, user_id: str, online: bool) -> None: ...

    def terminate_local(self, app_id: str, user_id: str) -> None: ...

    def keep(self, app_id: str, name: str, frame: bytes, data: str, ttl: float) -> None: ...

    def resend_roster(self, app_id: str, name: str, roster: dict[str, Any]) -> None: ...

    def notify(self, app: AppConfig, event: dict[str, Any]) -> None: ...


class Adapter(Protocol):
    """The cluster as one hub sees it. Events flow both ways: outbound through these methods,
    inbound (events published on other nodes) through the hub's ``deliver`` family."""

    @property
    def ready(self) -> bool:
        """Whether this node is part of the cluster right now (readiness probes read it)."""

    @property
    def dropped(self) -> dict[tuple[str, str], int]:
        """Events this node could not send to the other nodes, by (app id, reason): counted
        for ``/metrics``."""

    def bind(self, hub: HubView) -> None:
        """Attach the hub that receives what other nodes publish."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def publish(self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
                ) -> None:
        """Send a framed event to the subscribers of the other nodes."""

    def remember(self, app: AppConfig, channel: str, frame: bytes) -> None:
        """Keep the last event of a cache channel for every node."""

    def terminate(self, app_id: str, user_id: str) -> None:
        """Close the user's sockets on the other nodes."""

    def joined(self, app: AppConfig, channel: Channel, member: Member | None, first: bool,
               done: Callable[[Joined], None]) -> None:
        """A socket of this node subscribed to ``channel``; ``member`` for presence channels,
        ``first`` when it is the member's first socket on this node."""

    def left(self, app: AppConfig, channel: Channel, member: Member | None,
             done: Callable[[Left], None]) -> None:
        """A socket of this node unsubscribed; ``member`` when it was the member's last socket
        on this node."""

    def signed_in(self, app: AppConfig, user_id: str, watchlist: tuple[str, ...],
                  done: Callable[[SignedIn], None]) -> None: ...

    def signed_out(self, app: AppConfig, user_id: str, done: Callable[[SignedOut], None]
                   ) -> None: ...

    def connection_count(self, app_id: str) -> int:
        """Open connections of the app on every node (quotas read it on each connect)."""

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        """Occupied channels whose name starts with ``prefix``, cluster-wide."""

    async def channel(self, app_id: str, name: str) -> ChannelCounts | None:
        """One channel's counts, cluster-wide; ``None`` when it is not occupied."""

    async def members(self, app_id: str, name: str) -> list[str]:
        """User ids of a presence channel's members, cluster-wide."""

    async def take(self, app_id: str, bucket: str, cost: int, limit: int) -> float | None:
        """Take ``cost`` units of a per-second ``limit`` shared by every node: ``None`` when
        allowed, else the seconds until the window ends (``Retry-After``)."""
