"""Dashboard sessions, kept server-side so that logging out really ends one.

The cookie carries only a random token; the table maps the token's SHA-256 to its expiry, so
the table itself holds nothing a reader could replay, and looking a token up does not compare
secrets byte by byte. The table is bounded: past :attr:`Sessions.capacity` the oldest session
ends.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import OrderedDict

__all__ = ["Sessions"]

log = logging.getLogger("pusher_compat")


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Sessions:
    """Signed-in sessions: created at login, checked on every request, deleted at logout."""

    def __init__(self, lifetime: float, capacity: int) -> None:
        self.lifetime = lifetime
        """Seconds a session lasts from its login."""
        self.capacity = capacity
        """Sessions kept at most; a login past it ends the oldest one."""
        self._expiry: OrderedDict[str, float] = OrderedDict()
        # Token digest -> expiry time. Every session lives ``lifetime``, so insertion order is
        # expiry order: expired sessions are always at the front.

    def __len__(self) -> int:
        return len(self._expiry)

    def create(self, now: float) -> str:
        """A new session's token (the cookie value), valid until ``now + lifetime``."""
        self._prune(now)
        while len(self._expiry) >= self.capacity:
            self._expiry.popitem(last=False)
            log.warning("dashboard: %d sessions open, the oldest one ended", self.capacity)
        token = secrets.token_urlsafe(32)
        self._expiry[_digest(token)] = now + self.lifetime
        return token

    def valid(self, token: str, now: float) -> bool:
        """Whether ``token`` is a session that has neither expired nor been revoked."""
        expires = self._expiry.get(_digest(token)) if token else None
        return expires is not None and now < expires

    def revoke(self, token: str) -> None:
        """End the session of ``token`` (logout); unknown tokens are ignored."""
        self._expiry.pop(_digest(token), None)

    def _prune(self, now: float) -> None:
        expiry = self._expiry
        while expiry and next(iter(expiry.values())) <= now:
            expiry.popitem(last=False)
