"""The one-node adapter: this process is the whole cluster, so every answer is read off the
hub's own state and given at once."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..limits import PerSecond
from .base import ChannelCounts, HubView, Joined, Left, SignedIn, SignedOut

if TYPE_CHECKING:
    from ..channel_state import Channel, Member
    from ..config import AppConfig

__all__ = ["LocalAdapter"]


class LocalAdapter:
    """In-memory, the default: nothing to start, nothing to share."""

    def __init__(self) -> None:
        self._hub: HubView | None = None
        self._rates: dict[tuple[str, str], PerSecond] = {}

    @property
    def ready(self) -> bool:
        return True

    @property
    def dropped(self) -> dict[tuple[str, str], int]:
        return {}  # there are no other nodes

    def bind(self, hub: HubView) -> None:
        self._hub = hub

    @property
    def hub(self) -> HubView:
        assert self._hub is not None, "LocalAdapter used before bind()"
        return self._hub

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def publish(self, app_id: str, channel: str, frame: bytes, except_socket_id: str | None
                ) -> None:
        pass

    def remember(self, app: AppConfig, channel: str, frame: bytes) -> None:
        pass

    def terminate(self, app_id: str, user_id: str) -> None:
        pass

    def joined(self, app: AppConfig, channel: Channel, member: Member | None, first: bool,
               done: Callable[[Joined], None]) -> None:
        count = channel.local_sockets
        if member is None:
            done(Joined(count, occupied=count == 1))
            return
        roster = {key: m.user_info for key, m in channel.members.items()}
        if first:
            if len(roster) >= app.max_presence_members:
                done(Joined(count - 1, occupied=False, full=True))
                return
            roster[member.key] = member.user_info
        done(Joined(count, occupied=count == 1, added=first, roster=roster))

    def left(self, app: AppConfig, channel: Channel, member: Member | None,
             done: Callable[[Left], None]) -> None:
        count = channel.local_sockets
        done(Left(count, vacated=count == 0, removed=member is not None))

    def signed_in(self, app: AppConfig, user_id: str, watchlist: tuple[str, ...],
                  done: Callable[[SignedIn], None]) -> None:
        sockets = len(self.hub.user_connections(app.id, user_id)) + 1
        online = tuple(u for u in watchlist
                       if u == user_id or self.hub.user_connections(app.id, u))
        done(SignedIn(sockets, online=sockets == 1, watched_online=online))

    def signed_out(self, app: AppConfig, user_id: str, done: Callable[[SignedOut], None]
                   ) -> None:
        done(SignedOut(offline=not self.hub.user_connections(app.id, user_id)))

    def connection_count(self, app_id: str) -> int:
        return self.hub.local_connection_count(app_id)

    async def channels(self, app_id: str, prefix: str) -> dict[str, ChannelCounts]:
        return {channel.name: _counts(channel) for channel in self.hub.channels(app_id)
                if channel.name.startswith(prefix)}

    async def channel(self, app_id: str, name: str) -> ChannelCounts | None:
        channel = self.hub.channel(app_id, name)
        return _counts(channel) if channel is not None else None

    async def members(self, app_id: str, name: str) -> list[str]:
        channel = self.hub.channel(app_id, name)
        return list(channel.members) if channel is not None else []


    async def take(self, app_id: str, bucket: str, cost: int, limit: int) -> float | None:
        rate = self._rates.get((app_id, bucket))
        if rate is None or rate.limit != limit:
            rate = self._rates[app_id, bucket] = PerSecond(limit)
        now = self.hub.clock()
        return None if rate.allow(now, cost) else rate.retry_after(now)


def _counts(channel: Channel) -> ChannelCounts:
    return ChannelCounts(len(channel.subscribers), len(channel.members))
