"""The resynchronisation diff: what a node that rejoins the cluster must tell Redis so that
Redis holds exactly what the node holds. Pure: the node's ledger in Redis and its local state
in, the script calls out (the adapter pipelines them).

The ledger is what Redis believes the node holds; the hub is the truth. Channels and members
in the ledger but no longer held are left (the scripts announce members gone); everything held
is joined again (idempotent: a script adds only what is missing); signed-in users are corrected
by the difference of socket counts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .. import wire
from ..channel_state import Channel, member_added_frame, member_removed_frame
from . import bus
from .redis_keys import AppKeys

__all__ = ["NO_LIMIT", "Ledger", "ScriptCall", "resync_calls"]

NO_LIMIT = 1 << 30
"""``max presence members`` for a rejoin: a member already admitted is never refused."""


@dataclass(frozen=True, slots=True)
class ScriptCall:
    """One call of a script of :mod:`.lua`, by name."""

    script: str
    keys: list[str]
    args: list[Any]


@dataclass(frozen=True, slots=True)
class Ledger:
    """What Redis says a node holds in one app."""

    channels: frozenset[str]
    members: frozenset[tuple[str, str]]
    """(channel, user id) pairs."""
    users: Mapping[str, int]
    """Signed-in user id to sockets."""


def resync_calls(keys: AppKeys, node: str, ledger: Ledger, channels: Iterable[Channel],
                 users: Mapping[str, int]) -> list[ScriptCall]:
    """The calls that make ``ledger`` equal to the node's ``channels`` and ``users``."""
    held = {channel.name: channel for channel in channels}
    members = {(c.name, key): m for c in held.values() for key, m in c.members.items()}
    source = node.encode()
    calls = []
    for name in sorted(ledger.channels - held.keys()):
        calls.append(ScriptCall("LEAVE", keys.channel(name), [node, name, 0, "", keys.bus, b""]))
    for name, user in sorted(ledger.members - members.keys()):
        count = held[name].local_sockets if name in held else 0
        gone = bus.event(source, name, wire.unframe(member_removed_frame(name, user)))
        calls.append(ScriptCall("LEAVE", keys.channel(name),
                                [node, name, count, user, keys.bus, gone]))
    for (name, user), member in members.items():
        added = bus.event(source, name, wire.unframe(member_added_frame(name, member)))
        calls.append(ScriptCall("JOIN", keys.channel(name),
                                [node, name, held[name].local_sockets, user,
                                 wire.dumps(member.user_info), NO_LIMIT, keys.bus, added]))
    for name, channel in held.items():
        calls.append(ScriptCall("JOIN", keys.channel(name),
                                [node, name, channel.local_sockets, "", b"", NO_LIMIT,
                                 keys.bus, b""]))
    for user in sorted(ledger.users.keys() | users.keys()):
        delta = users.get(user, 0) - ledger.users.get(user, 0)
        if delta:
            calls.append(ScriptCall("USERS", keys.user_keys(),
                                    [user, delta, keys.bus, bus.watch(source, user, True),
                                     bus.watch(source, user, False)]))
    return calls
