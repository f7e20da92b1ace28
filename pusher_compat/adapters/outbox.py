"""What a node publishes while its bus is down: kept, bounded, and sent in order later.

The Redis adapter writes an event to its own sockets at once and sends it to the other nodes
over the bus. While Redis cannot be reached, the bus messages wait here, oldest first, bounded
in bytes (of the encoded bus messages) and in age; what the bounds push out is counted by app
and reason and logged, at most once per :data:`LOG_INTERVAL` seconds. Pure: no I/O, and the
clock is given, so tests move time by hand.

A message of the outbox may reach Redis twice (a pipeline that failed half-way is sent again),
so each carries its origin's sequence number; :class:`Sequences` is the receiving side, which
lets each message of an origin through once.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

__all__ = ["LOG_INTERVAL", "Drop", "Outbox", "Sequences"]

log = logging.getLogger("pusher_compat.redis")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about dropped messages: an outage drops in bursts."""


class Drop(Enum):
    """Why the outbox let a message go: the ``reason`` label of the dropped-messages metric."""

    BYTES = "bytes"
    """The outbox was full (``redis_outbox_max_bytes``): the oldest messages made room."""
    AGE = "age"
    """Older than ``redis_outbox_max_age_seconds`` when the bus came back: too stale to send."""
    STOPPED = "stopped"
    """Still waiting when the node stopped."""


@dataclass(frozen=True, slots=True)
class _Entry:
    app_id: str
    message: bytes
    """The bus message, encoded as it will be published."""
    at: float
    """When the outbox took it (the outbox's clock)."""


class Outbox:
    """Bus messages of every app waiting for the bus, oldest first."""

    def __init__(self, max_bytes: int, max_age: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_bytes = max_bytes
        """Sum of the waiting messages' lengths never exceeds this; 0 keeps nothing."""
        self.max_age = max_age
        """Messages that waited longer than this many seconds are not sent."""
        self._clock = clock
        self._entries: deque[_Entry] = deque()
        self.bytes = 0
        """Sum of the lengths of the waiting messages."""
        self.dropped: dict[tuple[str, Drop], int] = {}
        """Messages let go since start, by (app id, reason)."""
        self._unlogged: dict[Drop, int] = {}
        """Drops not logged yet, by reason: the next log line reports them."""
        self._next_log = float("-inf")
        """The clock's time from which a drop may be logged again."""

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, app_id: str, message: bytes) -> None:
        """Keep ``message`` behind the others, making room by dropping the oldest."""
        self._add(_Entry(app_id, message, self._clock()), last=True)

    def put_back(self, messages: list[tuple[str, bytes]]) -> None:
        """Put messages that were on their way to Redis when it failed in front of the others
        (they are older), in their order. Their age counts from now."""
        now = self._clock()
        for app_id, message in reversed(messages):
            self._add(_Entry(app_id, message, now), last=False)

    def due(self, within: float = 0.0) -> bool:
        """Whether the oldest message reaches the age bound within ``within`` seconds: sending
        it cannot wait."""
        return (bool(self._entries)
                and self._clock() - self._entries[0].at >= self.max_age - within)

    def take(self) -> list[tuple[str, bytes]]:
        """Every message young enough, oldest first, as (app id, message); empties the outbox."""
        entries, self._entries, self.bytes = self._entries, deque(), 0
        oldest = self._clock() - self.max_age
        taken = [(e.app_id, e.message) for e in entries if e.at >= oldest]
        for entry in entries:
            if entry.at < oldest:
                self._drop(entry, Drop.AGE)
        self._log(force=True)
        return taken

    def clear(self) -> None:
        """Let every waiting message go: the node stops."""
        for entry in self._entries:
            self._drop(entry, Drop.STOPPED)
        self._entries, self.bytes = deque(), 0
        self._log(force=True)

    def _add(self, entry: _Entry, last: bool) -> None:
        size = len(entry.message)
        if size > self.max_bytes:
            self._drop(entry, Drop.BYTES)
        else:
            # Room is made at the old end: what is dropped is what is stalest.
            while self.bytes + size > self.max_bytes:
                oldest = self._entries.popleft()
                self.bytes -= len(oldest.message)
                self._drop(oldest, Drop.BYTES)
            if last:
                self._entries.append(entry)
            else:
                self._entries.appendleft(entry)
            self.bytes += size
        self._log(force=False)

    def _drop(self, entry: _Entry, reason: Drop) -> None:
        key = (entry.app_id, reason)
        self.dropped[key] = self.dropped.get(key, 0) + 1
        self._unlogged[reason] = self._unlogged.get(reason, 0) + 1

    def _log(self, force: bool) -> None:
        """Report unlogged drops: when forced (the outbox empties) or the interval is over."""
        if not self._unlogged:
            return
        now = self._clock()
        if not force and now < self._next_log:
            return
        counts = ", ".join(f"{count} ({reason.value})" for reason, count in
                           sorted(self._unlogged.items(), key=lambda item: item[0].value))
        log.warning("redis outbox: %s event(s) published while redis was unreachable were "
                    "dropped, reaching only this node's sockets; bounds: %d bytes, %g s",
                    counts, self.max_bytes, self.max_age)
        self._unlogged.clear()
        self._next_log = now + LOG_INTERVAL


class Sequences:
    """The last sequence number seen from each origin node, per app: a message that comes
    again (at or below it) is a repeat. Remembers at most ``limit`` (app, origin) pairs, the
    least recently heard forgotten first: nodes come and go with each restart."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._last: OrderedDict[tuple[str, bytes], int] = OrderedDict()

    def fresh(self, app_id: str, origin: bytes, seq: int) -> bool:
        """Whether message ``seq`` of ``origin`` on ``app_id``'s bus is new; remembers it."""
        key = (app_id, origin)
        last = self._last.get(key)
        if last is not None and seq <= last:
            return False
        self._last[key] = seq
        self._last.move_to_end(key)
        if len(self._last) > self._limit:
            self._last.popitem(last=False)
        return True
