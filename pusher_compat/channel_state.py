"""What the hub and its adapters share, below both: a channel as one node holds it, its
presence members, the connection interface the hub fans out to, and the one place that builds
the member frames and the webhook/debug event records either of them sends.

The hub owns these objects; an adapter reads them (counts, rosters) to answer for the cluster
and builds the same frames and records when the cluster, not a local socket, caused the change
(a reaped node's members, a resynchronisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from . import wire
from .channels import ChannelKind

if TYPE_CHECKING:
    from .config import AppConfig

__all__ = ["Channel", "Member", "Subscriber", "channel_record", "count_record",
           "member_added_frame", "member_record", "member_removed_frame", "socket_record"]


class Subscriber(Protocol):
    """What the hub (and the gateway, through the hub's :meth:`connections`) needs of a
    connection."""

    socket_id: str
    app: AppConfig
    channels: dict[str, Member | None]
    user_id: str | None
    watchlist: tuple[str, ...]

    def send(self, frame: bytes) -> None: ...

    def fail(self, error: wire.PusherError) -> None: ...

    def close(self, code: int, reason: str) -> None:
        """Close from the server side (terminate, drain, shutdown)."""

    def check_activity(self) -> None:
        """Ping if silent, close if a ping went unanswered (the gateway's liveness check)."""


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
    local_sockets: int = 0
    """This node's sockets in the channel, including presence joins the cluster has not
    answered yet: what this node tells the cluster it holds."""

    @property
    def subscription_count(self) -> int:
        return len(self.subscribers)

    @property
    def user_count(self) -> int:
        return len(self.members)


# -- the frames every subscriber of a presence channel gets ----------------------------

def member_added_frame(channel: str, member: Member) -> bytes:
    """``pusher_internal:member_added``: ``user_id`` as the client sent it, with its info."""
    return wire.event_frame("pusher_internal:member_added",
                            {"user_id": member.user_id, "user_info": member.user_info}, channel)


def member_removed_frame(channel: str, user_id: str | int) -> bytes:
    """``pusher_internal:member_removed``."""
    return wire.event_frame("pusher_internal:member_removed", {"user_id": user_id}, channel)


# -- the records the hub's listeners (webhooks, the debug feed) get ----------------------

def channel_record(name: str, channel: str) -> dict[str, Any]:
    """``channel_occupied``, ``channel_vacated`` or ``cache_miss``."""
    return {"name": name, "channel": channel}


def member_record(name: str, channel: str, user_id: str) -> dict[str, Any]:
    """``member_added`` or ``member_removed``: webhooks carry the id as a string."""
    return {"name": name, "channel": channel, "user_id": user_id}


def count_record(channel: str, subscription_count: int) -> dict[str, Any]:
    """``subscription_count``."""
    return {"name": "subscription_count", "channel": channel,
            "subscription_count": subscription_count}


def socket_record(name: str, socket_id: str) -> dict[str, Any]:
    """``connection_opened`` or ``connection_closed``: for the debug feed only."""
    return {"name": name, "socket_id": socket_id}
