"""Limits: one fixed one-second window, shared by every limit that counts per second, and one
byte budget, shared by every queue bounded in bytes."""

from __future__ import annotations

__all__ = ["ByteBudget", "PerSecond"]


class PerSecond:
    """At most ``limit`` units in each one-second window (0 = unlimited).

    A fixed window is enough here: Pusher's own limits are stated per second, and the state is
    two numbers, which matters when every socket carries one.
    """

    __slots__ = ("_start", "_used", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._start = float("-inf")
        self._used = 0

    def allow(self, now: float, cost: int = 1) -> bool:
        """Take ``cost`` units at time ``now`` (seconds) if the window has room for them."""
        if not self.limit:
            return True
        if now - self._start >= 1.0:
            self._start = now
            self._used = 0
        if self._used + cost > self.limit:
            return False
        self._used += cost
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the current window ends."""
        return max(0.0, 1.0 - (now - self._start))


class ByteBudget:
    """Bytes held against a ``limit``: the holder adds what it keeps, removes what it lets go,
    and sheds its oldest (or least useful) items while :attr:`over` is true.

    The budget only counts; what to shed is the holder's policy.
    """

    __slots__ = ("limit", "used")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        """Bytes allowed."""
        self.used = 0
        """Bytes held now."""

    def add(self, size: int) -> None:
        self.used += size

    def remove(self, size: int) -> None:
        self.used -= size

    @property
    def over(self) -> bool:
        """Whether more than ``limit`` bytes are held."""
        return self.used > self.limit
