"""Channel membership as this node counts it: local sockets per channel, sockets per presence
member, and the frames that answer a subscription (``subscription_succeeded`` with its roster,
the ``presence`` full refusal).

Pure functions of a :class:`.channel_state.Channel`; the hub calls them as sockets join and
leave, and asks the cluster whether a member is new or gone anywhere.
"""

from __future__ import annotations

from typing import Any

from . import wire
from .channel_state import Channel, Member


def count_socket(channel: Channel, member: Member | None) -> bool:
    """Count one more local socket on ``channel``; True when it is ``member``'s first here."""
    channel.local_sockets += 1
    if member is None:
        return False
    count = channel.sockets_per_member.get(member.key, 0)
    channel.sockets_per_member[member.key] = count + 1
    return count == 0


def forget_socket(channel: Channel, member: Member | None) -> Member | None:
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


def succeeded_frame(channel: Channel, roster: dict[str, Any] | None) -> bytes:
    """``pusher_internal:subscription_succeeded``: ``"{}"`` as data, or a presence roster."""
    data: Any = "{}"
    if roster is not None:
        data = {"presence": {"ids": list(roster), "hash": roster, "count": len(roster)}}
    return wire.event_frame("pusher_internal:subscription_succeeded", data, channel.name)


def presence_full(channel: Channel, limit: int) -> wire.SubscriptionError:
    """The refusal of a new member when ``channel`` already holds ``limit`` members."""
    return wire.SubscriptionError(
        channel.name, "LimitReached",
        f"The maximum number of members in a presence channel ({limit}) has been reached",
        wire.SubscriptionStatus.PRESENCE_FULL,
    )
