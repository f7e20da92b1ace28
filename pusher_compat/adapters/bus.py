"""The bus codec: what nodes say to each other on an app's pub/sub channel. Pure functions.

A message is NUL-separated fields: a kind, the origin, then the kind's fields. The origin is
``node#seq`` for what a node sends itself (receivers let each sequence number through once:
an outbox may send a message twice) and ``node`` alone for what the scripts publish (sent once,
inside the script that decided it).

=====  ===========  ==============================================================
kind   message      fields
=====  ===========  ==============================================================
``e``  :class:`Event`      channel, socket id to skip (empty: none), event payload (JSON)
``w``  :class:`Watch`      user id, ``1`` online / ``0`` offline
``t``  :class:`Terminate`  user id
``c``  :class:`Cache`      channel, time to live (ms), event payload (JSON)
=====  ===========  ==============================================================
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Cache", "Event", "Message", "Origin", "Terminate", "Watch", "decode", "encode",
           "event", "origin", "watch"]

SEP = b"\0"


@dataclass(frozen=True, slots=True)
class Event:
    """An event for this node's subscribers of ``channel``, except ``except_socket_id``."""

    channel: str
    except_socket_id: str | None
    payload: bytes


@dataclass(frozen=True, slots=True)
class Watch:
    """A user came online or went offline: watchers are told."""

    user_id: str
    online: bool


@dataclass(frozen=True, slots=True)
class Terminate:
    """Close the user's sockets."""

    user_id: str


@dataclass(frozen=True, slots=True)
class Cache:
    """A cache channel's last event, to keep for ``ttl`` seconds."""

    channel: str
    ttl_ms: int
    payload: bytes


Message = Event | Watch | Terminate | Cache


@dataclass(frozen=True, slots=True)
class Origin:
    node: bytes
    seq: int | None
    """``None`` for messages the scripts publish: they are never sent twice."""


def origin(node: bytes, seq: int | None = None) -> bytes:
    """The origin field: ``node#seq``, or ``node`` for a script's message."""
    return node if seq is None else b"%s#%d" % (node, seq)


def _join(kind: bytes, source: bytes, *fields: bytes | str) -> bytes:
    return SEP.join([kind, source, *(f if isinstance(f, bytes) else f.encode() for f in fields)])


def encode(source: bytes, message: Message) -> bytes:
    """``message`` on the wire, from ``source`` (see :func:`origin`)."""
    match message:
        case Event(channel, except_id, payload):
            return _join(b"e", source, channel, except_id or "", payload)
        case Watch(user, online):
            return _join(b"w", source, user, "1" if online else "0")
        case Terminate(user):
            return _join(b"t", source, user)
        case Cache(channel, ttl_ms, payload):
            return _join(b"c", source, channel, str(ttl_ms), payload)
    raise TypeError(message)


def event(source: bytes, channel: str, payload: bytes) -> bytes:
    """An event for every subscriber (a script publishes it: member added/removed)."""
    return encode(source, Event(channel, None, payload))


def watch(source: bytes, user_id: str, online: bool) -> bytes:
    return encode(source, Watch(user_id, online))


def decode(data: bytes) -> tuple[Origin, Message]:
    """The origin and message of what :func:`encode` wrote."""
    kind, source, rest = data.split(SEP, 2)
    node, _, seq = source.partition(b"#")
    sender = Origin(node, int(seq) if seq else None)
    if kind == b"e":
        channel, except_id, payload = rest.split(SEP, 2)
        return sender, Event(channel.decode(), except_id.decode() or None, payload)
    if kind == b"w":
        user, online = rest.split(SEP, 1)
        return sender, Watch(user.decode(), online == b"1")
    if kind == b"t":
        return sender, Terminate(rest.decode())
    if kind == b"c":
        channel, ttl_ms, payload = rest.split(SEP, 2)
        return sender, Cache(channel.decode(), int(ttl_ms), payload)
    raise ValueError(f"unknown bus message kind {kind!r}")
