"""The lean HTTP/1.1 transport of the hot API routes: ``POST /apps/{id}/events`` and
``POST /apps/{id}/batch_events``, served by a bare asyncio protocol without any aiohttp
object per request.

Every Laravel ``broadcast()`` is one such request. Served by aiohttp, its request, response,
handler task and stream writer were about 40 % of the server's CPU per request; here a
request is one head parsed from bytes, one :class:`ApiRequest` handed to the HTTP API
(:class:`HotRoutes`, the same handlers as aiohttp's routes) and one ``write`` of the answer,
synchronously when the answer is known at once.

Only what this strict reading understands is served here: ``POST``, exactly one of the two
paths (plain path characters, a query string), HTTP/1.1, one valid ``Content-Length``, no
``Transfer-Encoding``, ``Content-Encoding`` or ``Upgrade``, no ``Expect`` but
``100-continue``, well-formed header lines. Anything else, at any request boundary, is handed
with every byte read so far to aiohttp (:meth:`HttpGuard.hand_over
<pusher_compat.http_guard.HttpGuard.hand_over>`), which keeps the connection from then on.

The same guards as aiohttp's connections: a head is :class:`~pusher_compat.http_guard.Pending`
from its first byte until read (``request_head_timeout``), an idle connection is closed after
``http_keepalive_timeout``, and a body must be whole within ``http_keepalive_timeout`` of
its head (else 408 and close). Answers carry the same head as aiohttp's: ``Content-Type``,
``Content-Length``, ``Date``, aiohttp's ``Server`` and, when closing, ``Connection: close``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from email.utils import formatdate
from http import HTTPStatus
from typing import NamedTuple, Protocol, cast

from aiohttp.http import SERVER_SOFTWARE
from aiohttp.web_protocol import RequestHandler
from multidict import MultiDict
from yarl import URL

from .http_errors import HttpError
from .http_guard import HttpGuard, Pending, PendingHeads

__all__ = ["HOT_PREFIX", "ApiProtocol", "ApiRequest", "ApiService", "HotRoutes", "Reply"]

log = logging.getLogger("pusher_compat")

HOT_PREFIX = b"POST /apps/"
"""How every hot request starts: a connection starting otherwise is aiohttp's at once."""
HEAD_LIMIT = 16384
"""Bytes of a head read while it may still be a hot request; past it aiohttp decides (and
applies its own limits)."""
_REQUEST_LINE = re.compile(
    rb"POST (/apps/(?!\.\.?/)([A-Za-z0-9._~-]+)/(events|batch_events))"
    rb"(?:\?([A-Za-z0-9._~!$&'()*+,;=:@/?%-]*))? HTTP/1\.1")
"""A hot request line. The app id is one segment of unreserved characters (not ``.`` or
``..``, which a URL resolves away), so the raw path and the decoded path are the same."""
_PLAIN_QUERY = re.compile(rb"[\w.~-]+=[\w.~-]*(?:&[\w.~-]+=[\w.~-]*)*", re.ASCII)
"""A query string decoded by splitting it (the SDKs' ``auth_*`` and ``body_md5``); any other
is decoded by yarl, as aiohttp decodes ``request.query``."""
_HEADERS = re.compile(rb"(?:\r\n[!#$%&'*+.^_`|~0-9A-Za-z-]+:[^\x00-\x08\x0a-\x1f\x7f]*)*")
"""Well-formed header lines, each after its CRLF: a token, a colon, a value without control
characters (horizontal tab allowed). Anything else (obs-fold, a bare LF, a space before the
colon) is aiohttp's to refuse."""
_FIELDS = re.compile(
    rb"\r\n(content-length|connection|expect|transfer-encoding|content-encoding|upgrade)"
    rb":[ \t]*([^\r]*?)[ \t]*(?=\r|\Z)")
"""The header lines this transport reads, in a lower-cased head; the others are ignored."""
_NOT_LEAN = frozenset({b"transfer-encoding", b"content-encoding", b"upgrade"})
"""Headers whose request is aiohttp's: a coded body, or a protocol switch."""
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REASONS = {status.value: status.phrase for status in HTTPStatus}


class ApiRequest(NamedTuple):
    """One HTTP API request, whichever transport read it: what the API's handlers read."""

    method: str
    raw_path: str
    """The path as sent, percent-escapes kept (what most SDKs sign)."""
    path: str
    """The percent-decoded path (what some SDKs sign)."""
    query: Mapping[str, str]
    """The decoded query parameters: a multidict when a name repeats (the first value is
    the one read, as aiohttp's ``request.query``)."""
    body: bytes
    params: Mapping[str, str]
    """The route's path parameters (``app_id``, ``channel``, ``user_id``...)."""


class Reply(NamedTuple):
    """An answer: always JSON (the API answers nothing else)."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    """Headers beyond the usual ones (``Retry-After``)."""


class HotRoutes(Protocol):
    """What the lean transport asks of the HTTP API above it. Stated here, so this module
    imports nothing of the layer that decides what a request means."""

    def answer(self, route: str, request: ApiRequest) -> Reply | Awaitable[Reply]:
        """The answer to ``request`` on ``route`` (``events`` or ``batch_events``), counted
        in the API's metrics; an awaitable when it is not known at once."""

    def refuse(self, request: ApiRequest, error: HttpError) -> Reply:
        """``error`` as the answer to ``request`` (whose body was not read), counted."""


@dataclass(frozen=True, slots=True)
class ApiService:
    """The hot routes, the limits they are served with, and the connections serving them."""

    routes: HotRoutes
    max_body: int
    """``max_request_bytes``: a larger ``Content-Length`` is answered 413 at once."""
    idle_timeout: float
    """``http_keepalive_timeout``: seconds a connection may stay idle between requests, and
    the time a body has, from the end of its head, to arrive whole."""
    connections: set[ApiProtocol] = field(default_factory=set)
    """The open connections (not those handed to aiohttp), for :meth:`close_all`."""

    def close_all(self) -> None:
        """The server stops: idle connections are closed now, the others after the answer
        to the request they are sending (as aiohttp's shutdown treats its own)."""
        for connection in list(self.connections):
            connection.shut_down()


class _Head(NamedTuple):
    """A hot request head, read."""

    route: str
    raw_path: str
    app_id: str
    query: bytes
    length: int
    expect_continue: bool
    close: bool

    def request(self, body: bytes) -> ApiRequest:
        return ApiRequest("POST", self.raw_path, self.raw_path, _decode_query(self.query), body,
                          {"app_id": self.app_id})


def _read_head(head: bytes) -> _Head | None:
    """The hot request in ``head`` (without its blank line); ``None`` for anything else."""
    line_end = head.find(b"\r\n")
    if line_end < 0:
        return None  # no headers, so no Content-Length
    match = _REQUEST_LINE.fullmatch(head, 0, line_end)
    if match is None or not _HEADERS.fullmatch(head, line_end):
        return None
    length: int | None = None
    expect_continue = close = False
    for name, value in _FIELDS.findall(head.lower(), line_end):
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"connection":
            close = close or b"close" in (token.strip(b" \t") for token in value.split(b","))
        elif name in _NOT_LEAN or value != b"100-continue":  # or an Expect it cannot meet
            return None
        else:
            expect_continue = True
    if length is None:
        return None
    path, app_id, route, query = match.groups()
    return _Head(route.decode(), path.decode(), app_id.decode(), query or b"", length,
                 expect_continue, close)


def _decode_query(query: bytes) -> Mapping[str, str]:
    """``query`` decoded exactly as aiohttp decodes ``request.query``."""
    if not query:
        return {}
    if _PLAIN_QUERY.fullmatch(query):
        # Each pair holds a "=" (the pattern says so): split in two, a [name, value] list.
        split = [pair.split("=", 1) for pair in query.decode().split("&")]
        pairs = cast(list[tuple[str, str]], split)
        decoded = dict(pairs)
        if len(decoded) == len(pairs):
            return decoded  # no name twice: a dict reads as the multidict would
        return MultiDict(pairs)
    return URL.build(query_string=query.decode(), encoded=True).query


class _Clock:
    """The ``Date`` header (RFC 9110 §6.6.1), formatted once per second, and the usual
    answer (200, ``{}``, kept alive) made with it."""

    __slots__ = ("_date", "_ok", "_second")

    def __init__(self) -> None:
        self._second = -1
        self._date = self._ok = b""

    def date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._date = formatdate(now, usegmt=True).encode()
            self._ok = _render(200, b"{}", (), self._date, False)
        return self._date

    def ok(self) -> bytes:
        self.date()
        return self._ok


_CLOCK = _Clock()
_SERVER = SERVER_SOFTWARE.encode()


def render(reply: Reply, close: bool) -> bytes:
    """``reply`` as an HTTP/1.1 response, its head as aiohttp writes one."""
    status, body, headers = reply
    if status == 200 and not close and not headers and body == b"{}":
        return _CLOCK.ok()
    return _render(status, body, headers, _CLOCK.date(), close)


def _render(status: int, body: bytes, headers: tuple[tuple[str, str], ...], date: bytes,
            close: bool) -> bytes:
    extra = "".join(f"{name}: {value}\r\n" for name, value in headers).encode()
    return b"".join((
        b"HTTP/1.1 %d %s\r\n" % (status, _REASONS.get(status, "").encode()),
        extra,
        b"Content-Type: application/json\r\nContent-Length: %d\r\nDate: %s\r\nServer: %s\r\n"
        % (len(body), date, _SERVER),
        b"Connection: close\r\n\r\n" if close else b"\r\n",
        body,
    ))


class Phase(enum.Enum):
    """Where a connection is in its current request."""

    IDLE = "idle"
    """Between requests: nothing of the next one yet (the idle timeout runs)."""
    HEAD = "head"
    """Reading a head (it is pending: the head deadline runs)."""
    BODY = "body"
    """Reading a hot request's body (the body deadline runs)."""
    DISCARD = "discard"
    """Reading and dropping the body of a request refused at its head (413)."""
    ANSWERING = "answering"
    """Waiting for an answer that was not known at once; reading is paused."""
    DONE = "done"
    """Closed, closing, or handed to aiohttp: nothing more is read here."""


class ApiProtocol(asyncio.Protocol):
    """One HTTP connection whose requests are hot ones: each is read, answered through
    :class:`HotRoutes` and written in one ``write`` (answers to pipelined requests read
    together leave in one ``write`` too), until one is not hot and the connection is handed
    to aiohttp (``http`` makes its connection protocols)."""

    __slots__ = ("_address", "_buffer", "_deadline", "_head", "_heads", "_http", "_left",
                 "_loop", "_out", "_pending", "_phase", "_service", "_shutting_down", "_timer",
                 "_transport", "_writing_paused")

    def __init__(self, service: ApiService, heads: PendingHeads,
                 http: Callable[[], RequestHandler], transport: asyncio.Transport,
                 pending: Pending) -> None:
        self._service = service
        self._heads = heads
        """Counts and times every head of this connection."""
        self._http = http
        self._transport = transport
        self._loop = asyncio.get_running_loop()
        self._address = pending.address
        """The client's address, which its pending heads count for."""
        self._pending: Pending | None = pending
        """The head on its way, when one did not arrive whole in one read (the first head's
        runs from the accept). A head read whole at once is never counted: it is pending for
        no time at all."""
        self._phase = Phase.HEAD
        self._buffer: bytes | bytearray = b""
        """Bytes read and not consumed yet: the current head or body, pipelined requests."""
        self._head: _Head | None = None
        """The head whose body is being read or dropped."""
        self._left = 0
        """Bytes of a refused request's body still to drop."""
        self._out: list[bytes] = []
        """Answers written together at the end of the current read."""
        self._timer: asyncio.TimerHandle | None = None
        """The idle or body deadline's timer, when one is running."""
        self._deadline = 0.0
        """Loop time at which the current idle or body wait ends. The timer is not moved per
        request: firing early, it is set again for the deadline then current."""
        self._writing_paused = False
        """The transport's buffer is full: reading waits until the client reads."""
        self._shutting_down = False
        """The server stops: the answer being read or computed is the last one."""
        service.connections.add(self)

    def shut_down(self) -> None:
        """Close now when between requests or in a head; else once the request is answered."""
        if self._phase is Phase.IDLE or self._phase is Phase.HEAD:
            self._stop()
            self._transport.close()
        else:
            self._shutting_down = True

    # -- asyncio.Protocol -----------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        if not buffer:
            self._buffer = data  # the usual case: a whole request in one read, not copied
        elif isinstance(buffer, bytearray):
            buffer += data
        else:  # a request in several reads (a large body): appended in place, not copied
            self._buffer = bytearray(buffer)
            self._buffer += data
        self._advance()

    def eof_received(self) -> bool:
        # An answer still being computed is written before the connection closes.
        return self._phase is Phase.ANSWERING

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._transport.pause_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        if self._phase is not Phase.ANSWERING and self._phase is not Phase.DONE:
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop()

    # -- requests ---------------------------------------------------------------------------

    def _advance(self) -> None:
        """Consume the buffer as far as it goes, write the answers in one write, and start
        the deadline of what the connection then waits for."""
        progressed = True
        while progressed:
            phase = self._phase
            if phase is Phase.IDLE:
                progressed = bool(self._buffer)
                if progressed:
                    self._phase = Phase.HEAD
            elif phase is Phase.HEAD:
                progressed = bool(self._buffer) and self._read_head()
            elif phase is Phase.BODY:
                progressed = self._read_body()
            elif phase is Phase.DISCARD:
                progressed = bool(self._buffer) and self._discard()
            else:
                progressed = False
        self._flush()
        self._wait()

    def _read_head(self) -> bool:
        """Read a head if it is whole; hand the connection over if it is not a hot one."""
        buffer = self._buffer
        if not (buffer.startswith(HOT_PREFIX) or HOT_PREFIX.startswith(buffer)):
            self._hand_over()
            return False
        end = buffer.find(b"\r\n\r\n", len(HOT_PREFIX))
        if end < 0:
            if len(buffer) >= HEAD_LIMIT:
                self._hand_over()
            return False
        head = _read_head(bytes(buffer[:end]))
        if head is None:
            self._hand_over()
            return False
        self._finish_pending()
        self._buffer = buffer[end + 4:]
        self._head = head
        self._deadline = self._loop.time() + self._service.idle_timeout
        if head.length > self._service.max_body:
            self._phase, self._left = Phase.DISCARD, head.length
            # With 100-continue the client waits: it will not send the body, so close.
            self._refuse(head, 413, f"Maximum request body size {self._service.max_body} "
                                    "exceeded.", close=head.expect_continue)
        else:
            if head.expect_continue and len(self._buffer) < head.length:
                self._out.append(_CONTINUE)
            self._phase = Phase.BODY
        return True

    def _read_body(self) -> bool:
        """Answer the request if its body is whole: at once, or later (``ANSWERING``)."""
        head = self._head
        assert head is not None
        length = head.length
        if len(self._buffer) < length:
            return False
        body, self._buffer = bytes(self._buffer[:length]), self._buffer[length:]
        self._head = None
        answer = self._service.routes.answer(head.route, head.request(body))
        if isinstance(answer, Reply):
            self._answer(answer, head.close)
            return self._phase is not Phase.DONE
        self._phase = Phase.ANSWERING
        self._transport.pause_reading()
        task = asyncio.ensure_future(answer)
        task.add_done_callback(lambda done: self._answered(done, head.close))
        return False

    def _answered(self, task: asyncio.Future[Reply], close: bool) -> None:
        if self._phase is not Phase.ANSWERING:
            return  # the connection is gone
        if task.cancelled() or task.exception() is not None:
            log.error("no answer to an HTTP API request", exc_info=task.exception()
                      if not task.cancelled() else None)
            self._stop()
            self._transport.abort()
            return
        self._answer(task.result(), close)
        if not self._transport.is_closing() and not self._writing_paused:
            self._transport.resume_reading()
        self._advance()

    def _answer(self, reply: Reply, close: bool) -> None:
        """Queue ``reply``; the connection then waits for its next request, or closes."""
        self._phase = Phase.IDLE
        self._deadline = self._loop.time() + self._service.idle_timeout
        self._send(reply, close or self._shutting_down)

    def _discard(self) -> bool:
        """Drop what is buffered of a refused body; it is over once all of it is dropped."""
        dropped = min(self._left, len(self._buffer))
        self._buffer = self._buffer[dropped:]
        self._left -= dropped
        if not self._left:
            self._head = None
            self._phase = Phase.IDLE
            self._deadline = self._loop.time() + self._service.idle_timeout
            if self._shutting_down:
                self.shut_down()
        return True

    def _send(self, reply: Reply, close: bool) -> None:
        self._out.append(render(reply, close))
        if close:
            self._flush()
            self._stop()
            self._transport.close()

    def _refuse(self, head: _Head, status: int, message: str, close: bool) -> None:
        """Answer ``status`` to ``head`` without its body, logged as aiohttp's refusals are."""
        log.info("answered POST %s with %d: %s", head.raw_path, status, message)
        request = ApiRequest("POST", head.raw_path, head.raw_path, MultiDict(), b"",
                             {"app_id": head.app_id})
        self._send(self._service.routes.refuse(request, HttpError(status, message)), close)

    def _flush(self) -> None:
        out = self._out
        if out:
            self._transport.write(out[0] if len(out) == 1 else b"".join(out))
            out.clear()

    # -- deadlines and hand-over --------------------------------------------------------

    def _wait(self) -> None:
        """Make sure the deadline of what the connection now waits for runs."""
        phase = self._phase
        if phase is Phase.HEAD:
            if self._pending is None:
                self._pending = self._heads.begin(self._transport, self._address)
        elif _timed(phase) and self._timer is None:
            self._timer = self._loop.call_at(self._deadline, self._expire)

    def _expire(self) -> None:
        self._timer = None
        phase = self._phase
        if not _timed(phase):
            return  # a head or an answer is on its way: the timer is set again after it
        if self._loop.time() < self._deadline:
            self._timer = self._loop.call_at(self._deadline, self._expire)
        elif phase is Phase.BODY:
            head = self._head
            assert head is not None
            self._refuse(head, 408, "The request body did not arrive within "
                                    f"{self._service.idle_timeout:g} s", close=True)
        else:
            self._stop()
            self._transport.close()

    def _hand_over(self) -> None:
        """Give the connection, and every byte of its current head, to aiohttp: answers
        already queued are written first, so they leave in order."""
        pending = self._pending or self._heads.begin(self._transport, self._address)
        self._pending = None
        self._flush()
        received, self._buffer = self._buffer, b""
        self._stop()
        if self._writing_paused:
            self._transport.resume_reading()  # aiohttp keeps its own flow control
        HttpGuard.hand_over(self._http(), self._heads, self._transport, pending, received)

    def _stop(self) -> None:
        """Nothing more is read here: timers stop, a pending head stops counting."""
        self._phase = Phase.DONE
        self._service.connections.discard(self)
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
        self._finish_pending()

    def _finish_pending(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.finish()


def _timed(phase: Phase) -> bool:
    """Whether the connection waits for the client under the idle or body deadline. By
    identity: an enum member's hash is computed in Python, a set lookup costs more."""
    return phase is Phase.IDLE or phase is Phase.BODY or phase is Phase.DISCARD
