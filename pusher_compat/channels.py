"""Channel kinds and names: what a channel's prefix means, decided once.

The kind is taken from one ordered prefix table, longest prefix first and hyphen included, so
``private-encrypted-cache-x`` is an encrypted cache channel and ``cachet`` is public.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["USER_CHANNEL_PREFIX", "ChannelKind", "channel_name_error", "kind_of"]

USER_CHANNEL_PREFIX = "#server-to-user-"

_NAME_RE = re.compile(r"[A-Za-z0-9_\-=@,.;]+")


@dataclass(frozen=True, slots=True)
class ChannelKind:
    """What a channel prefix grants and requires."""

    name: str
    needs_auth: bool = False
    presence: bool = False
    encrypted: bool = False
    cached: bool = False
    client_events: bool = False
    user: bool = False


PUBLIC = ChannelKind("public")
_PREFIXES: tuple[tuple[str, ChannelKind], ...] = (
    ("private-encrypted-cache-", ChannelKind("private-encrypted-cache", True, encrypted=True,
                                             cached=True)),
    ("private-encrypted-", ChannelKind("private-encrypted", True, encrypted=True)),
    ("private-cache-", ChannelKind("private-cache", True, cached=True, client_events=True)),
    ("private-", ChannelKind("private", True, client_events=True)),
    ("presence-cache-", ChannelKind("presence-cache", True, presence=True, cached=True,
                                    client_events=True)),
    ("presence-", ChannelKind("presence", True, presence=True, client_events=True)),
    ("cache-", ChannelKind("cache", cached=True)),
    (USER_CHANNEL_PREFIX, ChannelKind("user", user=True)),
)


def kind_of(channel: str) -> ChannelKind:
    """The kind of ``channel``, from its prefix."""
    for prefix, kind in _PREFIXES:
        if channel.startswith(prefix):
            return kind
    return PUBLIC


def channel_name_error(channel: str, max_length: int) -> str | None:
    """Why ``channel`` is not a valid channel name, or ``None`` when it is.

    Names use ``A-Z a-z 0-9 _ - = @ , . ;``; ``#`` is reserved for ``#server-to-user-{id}``.
    """
    if not channel:
        return "Channel name must not be empty"
    if len(channel) > max_length:
        return f"Channel name too long: {len(channel)} > {max_length} characters"
    rest = channel.removeprefix(USER_CHANNEL_PREFIX)
    if not rest or not _NAME_RE.fullmatch(rest):
        return (
            f"Invalid channel name {channel!r}: "
            "only A-Z, a-z, 0-9 and _ - = @ , . ; are allowed"
        )
    return None
