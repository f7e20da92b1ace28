"""Limits: one fixed one-second window, shared by every limit that counts per second; one
byte budget, shared by every queue bounded in bytes; and a throttle of failed attempts
(password guesses) per client address and overall."""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

__all__ = ["ByteBudget", "FailureThrottle", "PerSecond"]


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


@dataclass(slots=True)
class _Failures:
    """One client address's failed attempts."""

    count: int
    """Failures since the address was last forgotten or succeeded."""
    locked_until: float
    """No attempt from the address is evaluated before this time (seconds); when it is not
    locked, the time of its last failure, from which forgetting counts."""


class FailureThrottle:
    """Failed attempts limited per key (a client address) and overall, in bounded memory.

    After ``free`` failures in a row a key is locked for ``base_delay`` seconds, and each
    further failure doubles that, up to ``max_delay``. Overall, at most ``overall`` failures
    count in any ``overall_window`` seconds (0: no overall limit); past that every key waits,
    so guesses spread over many addresses are slowed too. A key is forgotten ``forget_after``
    seconds after its lock ends, or, past ``max_keys`` keys, when it is the one that failed
    longest ago.

    Time is passed in (``now``, seconds), so callers inject their clock. Nothing here awaits:
    a caller that checks :meth:`retry_after` and then records the outcome without awaiting in
    between cannot be overtaken by concurrent attempts.
    """

    def __init__(self, *, free: int = 5, base_delay: float = 1.0, max_delay: float = 900.0,
                 forget_after: float = 900.0, max_keys: int = 10_000, overall: int = 100,
                 overall_window: float = 60.0) -> None:
        self.free = free
        """Failures in a row that lock a key."""
        self.base_delay = base_delay
        """The first lock, in seconds; each later failure doubles it."""
        self.max_delay = max_delay
        """The longest lock, in seconds."""
        self.forget_after = forget_after
        """Seconds after a key's lock ends before its failures are forgotten."""
        self.max_keys = max_keys
        """Keys remembered at most (each costs about 200 bytes)."""
        self.overall_window = overall_window
        """The window the overall limit counts in, in seconds."""
        self._keys: OrderedDict[str, _Failures] = OrderedDict()
        # Least recently failed first, so both forgetting and eviction pop from the front.
        self._recent: deque[float] = deque(maxlen=overall)
        # The times of the last ``overall`` failures, of any key.

    def retry_after(self, key: str, now: float) -> float:
        """Seconds before an attempt from ``key`` may be evaluated; 0 when it may be now."""
        wait = 0.0
        record = self._keys.get(key)
        if record is not None:
            wait = record.locked_until - now
        recent = self._recent
        if recent.maxlen and len(recent) == recent.maxlen:
            wait = max(wait, recent[0] + self.overall_window - now)
        return max(0.0, wait)

    def failed(self, key: str, now: float) -> int:
        """Record a failure of ``key`` at ``now``; returns its failures in a row."""
        self._forget(now)
        record = self._keys.pop(key, None) or _Failures(0, now)
        record.count += 1
        record.locked_until = now
        if record.count >= self.free:
            delay = self.base_delay * 2 ** min(record.count - self.free, 32)
            record.locked_until = now + min(delay, self.max_delay)
        self._keys[key] = record
        self._recent.append(now)
        while len(self._keys) > self.max_keys:
            self._keys.popitem(last=False)
        return record.count

    def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures: the right password ends its backoff."""
        self._keys.pop(key, None)

    def _forget(self, now: float) -> None:
        keys = self._keys
        while keys:
            oldest = next(iter(keys.values()))
            if oldest.locked_until + self.forget_after > now:
                break
            keys.popitem(last=False)


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
