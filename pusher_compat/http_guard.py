"""Bounds on connections that have not sent a whole request head yet.

Such a connection holds a file descriptor and has given the server nothing to act on: 1,010
of them, sending half a head each, once took every descriptor of a 1,024-file process and
locked every other client out. Here each one is *pending* from its accept (or, kept alive,
from the first byte of its next request) until its head has been read, and:

* its head must be complete within ``request_head_timeout`` of that moment, however slowly
  the bytes come (a byte every few seconds does not extend it), else it is closed;
* pending connections are capped per client address and in total; past a cap a new
  connection is closed at once, before anything is read or written, and counted.

A connection stops being pending when its head has been read: a WebSocket is never touched
again, and an HTTP request is served by aiohttp or, for the hot API routes, by
:mod:`pusher_compat.api_transport` (idle kept-alive connections are closed after
``http_keepalive_timeout`` by either).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import resource
from collections.abc import Callable

from aiohttp.web_protocol import RequestHandler

from .config import ServerConfig

__all__ = ["HttpGuard", "Pending", "PendingHeads", "Refusal", "pending_caps"]

log = logging.getLogger("pusher_compat")

_WARN_EVERY = 10.0
"""Seconds between two warnings about refused connections: an attack refuses thousands."""


class Refusal(enum.Enum):
    """Which cap refused a new connection (the ``reason`` label of the refusal metric)."""

    ADDRESS = "per_address"
    TOTAL = "total"


def pending_caps(server: ServerConfig) -> tuple[int, int]:
    """(total, per address) caps on pending connections, the zeros of ``server`` derived from
    the process's open-files limit as the settings document."""
    total = server.max_pending_connections
    if not total:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Half for heads still on their way leaves the other half for WebSockets, requests
        # being served, Redis, logs and the listening socket.
        total = max(1, soft // 2) if soft != resource.RLIM_INFINITY else 1 << 20
    per_address = server.max_pending_connections_per_address or max(1, total // 8)
    return total, per_address


class PendingHeads:
    """The pending connections of one server: counts, caps, deadlines, refusals."""

    __slots__ = ("_by_address", "_last_warning", "_suppressed", "count", "per_address",
                 "refused", "timed_out", "timeout", "total")

    def __init__(self, server: ServerConfig) -> None:
        self.timeout = server.request_head_timeout
        """Seconds a head may take, from its first byte (a new connection: its accept)."""
        self.total, self.per_address = pending_caps(server)
        self._by_address: dict[str, int] = {}
        """Pending connections per client address; addresses at 0 are removed."""
        self.count = 0
        """Pending connections in all."""
        self.refused = dict.fromkeys(Refusal, 0)
        """New connections closed at once, by the cap that refused them."""
        self.timed_out = 0
        """Connections closed because their head was not complete in time."""
        self._last_warning = float("-inf")
        self._suppressed = 0
        """Refusals since the last warning, which reports them."""

    def admit(self, transport: asyncio.Transport, address: str) -> Pending | None:
        """A new connection: counted as pending with its deadline running, or, past a cap,
        closed at once (``None``). Closed without an answer: the client has not sent its
        request yet, so a 503 could reach it only as a reset, and writing costs a system
        call per refusal in a flood."""
        refusal = None
        if self.count >= self.total:
            refusal = Refusal.TOTAL
        elif self._by_address.get(address, 0) >= self.per_address:
            refusal = Refusal.ADDRESS
        if refusal is None:
            return self.begin(transport, address)
        self.refused[refusal] += 1
        self._warn(refusal, address)
        transport.abort()
        return None

    def begin(self, transport: asyncio.Transport, address: str) -> Pending:
        """A head starts on ``transport`` (a later request of a kept-alive connection, which
        was admitted already): counted, and closed unless finished within the timeout."""
        self.count += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return Pending(self, transport, address)

    def _schedule(self, callback: Callable[[], None]) -> asyncio.TimerHandle:
        return asyncio.get_running_loop().call_later(self.timeout, callback)

    def _release(self, address: str) -> None:
        self.count -= 1
        remaining = self._by_address.pop(address) - 1
        if remaining:
            self._by_address[address] = remaining

    def _warn(self, refusal: Refusal, address: str) -> None:
        self._suppressed += 1
        now = asyncio.get_running_loop().time()
        if now - self._last_warning < _WARN_EVERY:
            return
        cap = (f"{self.total} in total" if refusal is Refusal.TOTAL
               else f"{self.per_address} from {address}")
        log.warning("refused %d new connection(s): at most %s may be sending a request head "
                    "at once", self._suppressed, cap)
        self._last_warning = now
        self._suppressed = 0


class Pending:
    """One connection's head on its way: counted, with its deadline timer."""

    __slots__ = ("_heads", "_timer", "_transport", "address")

    def __init__(self, heads: PendingHeads, transport: asyncio.Transport, address: str) -> None:
        self._heads = heads
        self._transport = transport
        self.address = address
        """The client address the connection counts for."""
        self._timer: asyncio.TimerHandle | None = heads._schedule(self._expire)
        """Running until the head is read or the connection is gone; ``None`` after."""

    def finish(self) -> None:
        """The head has been read, or the connection is gone: no longer pending."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            self._heads._release(self.address)

    def _expire(self) -> None:
        self._timer = None
        self._heads._release(self.address)
        self._heads.timed_out += 1
        log.debug("closed a connection from %s: no complete request head within %.1f s",
                  self.address, self._heads.timeout)
        self._transport.abort()


class HttpGuard(asyncio.Protocol):
    """aiohttp's protocol for one HTTP connection, with a deadline on every request head.

    aiohttp bounds a head only by its keep-alive timer, which runs from the accept or the last
    response and is meant for idle connections; this wrapper passes every call through and
    starts a :class:`Pending` head whenever bytes arrive while aiohttp waits for a request.
    The head is read when aiohttp has parsed one more request. A head pipelined behind a
    request being served is not seen starting: aiohttp's keep-alive timer closes it, as it
    does any idle connection.
    """

    __slots__ = ("_address", "_handler", "_heads", "_pending", "_transport")

    def __init__(self, handler: RequestHandler, heads: PendingHeads,
                 transport: asyncio.Transport, pending: Pending) -> None:
        self._handler = handler
        self._heads = heads
        self._transport = transport
        self._address = pending.address
        self._pending: Pending | None = pending
        """The head on its way, if one is: at first the connection's first head."""

    @classmethod
    def hand_over(cls, handler: RequestHandler, heads: PendingHeads,
                  transport: asyncio.Transport, pending: Pending,
                  received: bytes | bytearray) -> None:
        """Give ``transport``, whose head ``pending`` is on its way, to ``handler`` (a new
        aiohttp connection protocol) behind a guard, replaying the bytes ``received`` so
        far: aiohttp serves the connection as if it had accepted it itself."""
        guard = cls(handler, heads, transport, pending)
        transport.set_protocol(guard)
        handler.connection_made(transport)
        guard.data_received(bytes(received))

    def data_received(self, data: bytes) -> None:
        handler = self._handler
        # aiohttp keeps these private: whether it waits for a request, and how many it read.
        waiter = handler._waiter
        starts_head = self._pending is None and waiter is not None and not waiter.done()
        parsed = handler._request_count
        handler.data_received(data)
        if handler._request_count != parsed:
            self._finish()
        elif starts_head:
            self._pending = self._heads.begin(self._transport, self._address)

    def _finish(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.finish()

    def eof_received(self) -> None:
        self._handler.eof_received()

    def pause_writing(self) -> None:
        self._handler.pause_writing()

    def resume_writing(self) -> None:
        self._handler.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._finish()
        self._handler.connection_lost(exc)
