"""The server side of RFC 6455 without I/O: bytes from the client in, messages and replies out.

:func:`handshake_accept` checks an upgrade request's headers and :func:`switching_protocols`
answers it. :class:`WebSocket` then parses what the client sends and tells the server what
happened, as events: a text or binary message, a ping (with the pong to send), a pong, or the
end of the connection (with the close frame to send, if any, before closing TCP). Nothing here
reads or writes a socket, so tests feed it bytes and assert the exact frames it answers with.

Only what a Pusher server needs: no extension is negotiated (any RSV bit is a protocol error),
client frames must be masked, control frames may interleave with a fragmented message, a text
message must be valid UTF-8 (else 1007), a message above ``max_size`` is refused as soon as its
header announces it (1009), and every other violation closes with 1002. After such a failure the
parser discards what the client still sends, up to its close frame: closing TCP while the rest
of a refused message is arriving would reset the connection, and the client would lose our close
frame (pusher-js then reports 1006 instead of the code that explains what happened).
"""

from __future__ import annotations

import base64
import enum
import hashlib
import struct
from dataclasses import dataclass

from multidict import MultiMapping

__all__ = [
    "Binary",
    "Close",
    "Event",
    "HandshakeError",
    "Ping",
    "Pong",
    "State",
    "Text",
    "WebSocket",
    "accept_key",
    "close_frame",
    "encode_frame",
    "handshake_accept",
    "switching_protocols",
]

PROTOCOL_ERROR = 1002
INVALID_DATA = 1007
MESSAGE_TOO_BIG = 1009

_CONTINUATION, TEXT, _BINARY, _CLOSE, _PING, _PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = frozenset({TEXT, _BINARY})
_CONTROL_OPCODES = frozenset({_CLOSE, _PING, _PONG})
_MAX_CONTROL_PAYLOAD = 125
_DISCARD_LIMIT = 1 << 20
"""Bytes a failed connection may still send before the server stops waiting for its close
frame: enough for the rest of any message a client plausibly sends, bounded."""
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

_PEER_CLOSE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015)) | frozenset(
    range(3000, 5000)
)
"""Codes a peer may send in a close frame (RFC 6455 §7.4): 1004-1006 and 1015 are reserved
for reporting, never for the wire."""


def accept_key(key: str) -> str:
    """``Sec-WebSocket-Accept`` for a client's ``Sec-WebSocket-Key`` (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


@dataclass(frozen=True, slots=True)
class HandshakeError(Exception):
    """Why a request is not a WebSocket handshake we accept: answered with ``status`` and
    ``headers`` (RFC 6455 §4.2.2), and ``message`` in the body."""

    status: int
    message: str
    headers: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        return f"{self.status}: {self.message}"


_VERSION_13 = HandshakeError(
    426, "Unsupported Sec-WebSocket-Version: only 13 (RFC 6455) is spoken here",
    (("Sec-WebSocket-Version", "13"),),
)


def handshake_accept(headers: MultiMapping[str]) -> str:
    """``Sec-WebSocket-Accept`` when ``headers`` (of a GET) ask for a version 13 WebSocket with
    a valid key (RFC 6455 §4.2.1); raises :class:`HandshakeError` saying what is wrong."""
    if "websocket" not in _tokens(headers, "Upgrade"):
        raise HandshakeError(
            400, "Missing Upgrade: websocket header: this endpoint is for WebSocket connections"
        )
    if "upgrade" not in _tokens(headers, "Connection"):
        raise HandshakeError(400, "Missing Connection: Upgrade header")
    if headers.get("Sec-WebSocket-Version") != "13":
        raise _VERSION_13
    key = headers.get("Sec-WebSocket-Key", "")
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except ValueError:  # binascii.Error, or a key that is not ASCII
        valid = False
    if not valid:
        problem = "Invalid" if key else "Missing"
        raise HandshakeError(
            400, f"{problem} Sec-WebSocket-Key header: 16 random bytes in base64 are required"
        )
    return accept_key(key)


def _tokens(headers: MultiMapping[str], name: str) -> set[str]:
    """The comma-separated tokens of every ``name`` header, lower-cased."""
    return {token.strip().lower() for value in headers.getall(name, ())
            for token in value.split(",")}


def switching_protocols(accept: str) -> bytes:
    """The 101 answer to an upgrade; no extension and no subprotocol are agreed."""
    return (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n")


def encode_frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame: a server never masks (RFC 6455 §5.1). The one frame
    encoder: :func:`pusher_compat.wire.frame` wraps every Pusher message with it."""
    length = len(payload)
    if length < 126:
        header = struct.pack("!BB", 0x80 | opcode, length)
    elif length < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, length)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, length)
    return header + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame; ``reason`` is cut to fit the 125-byte control payload on a character
    boundary, so the peer never sees invalid UTF-8 (which it would answer with 1007)."""
    text = reason.encode()[:_MAX_CONTROL_PAYLOAD - 2].decode("utf-8", "ignore").encode()
    return encode_frame(_CLOSE, struct.pack("!H", code) + text)


def _unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    # XOR as one big integer: linear time in C, where a Python loop would cost ~50 ns a byte.
    size = len(payload)
    if not size:
        return b""
    key = (bytes(mask) * (size // 4 + 1))[:size]
    value = int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(size, "little")


@dataclass(frozen=True, slots=True)
class Text:
    """A complete text message."""

    text: str


@dataclass(frozen=True, slots=True)
class Binary:
    """A complete binary message."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """A ping; ``reply`` is the pong frame to send."""

    reply: bytes


@dataclass(frozen=True, slots=True)
class Pong:
    """A pong (an answer to a ping, or an unsolicited heartbeat)."""


@dataclass(frozen=True, slots=True)
class Close:
    """The connection is over: send ``reply`` (empty when our close frame already went out),
    then close the TCP connection (the server closes first, RFC 6455 §7.1.1), or, when the
    parser is left ``DISCARDING`` (we failed the connection), keep it open until the peer's
    close frame arrives as a second ``Close``, or the peer gives up.

    ``code`` is the peer's close code (``None`` when its close frame had none), or ours when
    the peer broke the protocol; ``reason`` says what happened.
    """

    code: int | None
    reason: str
    reply: bytes


Event = Text | Binary | Ping | Pong | Close


class State(enum.Enum):
    OPEN = "open"
    CLOSING = "closing"
    """Our close frame is sent; waiting for the peer's."""
    DISCARDING = "discarding"
    """The peer broke the protocol (1002/1007/1009) and our close frame is sent: what it still
    sends is dropped unread, except its close frame, so that TCP stays open until the peer
    has read ours."""
    CLOSED = "closed"


class _Failure(Exception):
    """The peer broke the protocol: fail the connection with ``code``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason
        self.end: int | None = None
        """Where the refused frame ends in the input, when its header could be read (an
        oversized or unknown frame): what follows it is still framed. ``None``: the framing
        itself is broken (reserved bits, no mask)."""


class WebSocket:
    """One server-side WebSocket after its handshake: :meth:`receive` parses client bytes."""

    __slots__ = ("_budget", "_buffer", "_fragments", "_max_size", "_opcode", "_size", "_skip",
                 "state")

    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._buffer: bytes | bytearray = b""
        self._fragments: list[bytes] | None = None
        """Payloads of a fragmented message so far; ``None`` between messages."""
        self._opcode = TEXT
        self._size = 0
        self._skip = 0
        """Bytes of a dropped frame still to arrive (``DISCARDING`` only): skipped unread."""
        self._budget = _DISCARD_LIMIT
        """Bytes the peer may still send while ``DISCARDING`` before we stop waiting."""
        self.state = State.OPEN

    def receive(self, data: bytes | bytearray) -> list[Event]:
        """The events in ``data`` (and in what earlier calls left incomplete), in order.

        Nothing more is parsed after a :class:`Close` event, except, after a failure (state
        ``DISCARDING``), the peer's close frame: a second :class:`Close`, which ends it.
        """
        if self.state is State.CLOSED:
            return []
        if self.state is State.DISCARDING:
            data = self._discard(data)
            if self.state is State.CLOSED:
                return [Close(None, f"No close frame after {_DISCARD_LIMIT} bytes", b"")]
        if self._buffer:
            self._buffer += data
            data = self._buffer
        events: list[Event] = []
        offset = 0
        while self.state is not State.CLOSED and (step := self._step(data, offset)):
            event, offset = step
            if event is not None:
                events.append(event)
        self._keep(data, offset)
        return events

    def start_close(self, code: int, reason: str = "") -> bytes:
        """Start a close from the server side: the frame to send (empty if already closing)."""
        if self.state is not State.OPEN:
            return b""
        self.state = State.CLOSING
        return close_frame(code, reason)

    def _discard(self, data: bytes | bytearray) -> bytes | bytearray:
        """Drop what is left of a skipped frame; count every byte against the budget."""
        self._budget -= len(data)
        if self._budget < 0:
            self.state = State.CLOSED
            self._buffer = b""
            return b""
        skipped = min(self._skip, len(data))
        self._skip -= skipped
        return data[skipped:] if skipped else data

    def _step(self, data: bytes | bytearray, offset: int) -> tuple[Event | None, int] | None:
        """The event of the frame at ``offset`` and where the next one starts; ``None``
        until that frame is complete."""
        try:
            frame = self._frame(data, offset)
        except _Failure as failure:
            return self._fail(failure.code, failure.reason), self._resume(failure.end, len(data))
        if frame is None:
            return None
        opcode, fin, payload, end = frame
        try:
            return self._handle(opcode, fin, payload), end
        except _Failure as failure:  # the frame was whole: what follows it is still framed
            return self._fail(failure.code, failure.reason), end

    def _resume(self, end: int | None, size: int) -> int:
        """Where parsing goes on after a refused frame that ends at ``end`` (at ``size``, the
        end of the input, when the framing is lost); the rest of the frame still to come is
        skipped as it arrives."""
        if end is None:
            return size
        self._skip = max(0, end - size)
        return min(end, size)

    def _keep(self, data: bytes | bytearray, offset: int) -> None:
        """Keep the unparsed tail; a message arriving in many reads grows one buffer in place
        instead of being copied on every read."""
        if self.state is State.CLOSED or offset == len(data):
            self._buffer = b""
        elif isinstance(self._buffer, bytearray) and data is self._buffer:
            del self._buffer[:offset]
        else:
            self._buffer = bytearray(data[offset:])

    # -- frames ------------------------------------------------------------------------

    def _frame(
        self, data: bytes | bytearray, offset: int
    ) -> tuple[int, bool, bytes, int] | None:
        """``(opcode, fin, unmasked payload, offset after it)``, or ``None`` until complete."""
        if len(data) - offset < 2:
            return None
        first, second = data[offset], data[offset + 1]
        if first & 0x70:
            raise _Failure(PROTOCOL_ERROR, "Reserved bits are set but no extension was agreed")
        if not second & 0x80:
            raise _Failure(PROTOCOL_ERROR, "Client frames must be masked")
        opcode, fin, length = first & 0x0F, bool(first & 0x80), second & 0x7F
        start = offset + 2
        if length == 126:
            if len(data) < start + 2:
                return None
            (length,) = struct.unpack_from("!H", data, start)
            start += 2
        elif length == 127:
            if len(data) < start + 8:
                return None
            (length,) = struct.unpack_from("!Q", data, start)
            start += 8
        end = start + 4 + length
        if self.state is State.DISCARDING and opcode not in _CONTROL_OPCODES:
            # Dropped as it arrives, never buffered: only a close frame matters any more.
            self._skip = max(0, end - len(data))
            return opcode, fin, b"", min(end, len(data))
        try:
            self._check_header(opcode, fin, length)
        except _Failure as failure:
            failure.end = end
            raise
        if len(data) < end:
            return None
        return opcode, fin, _unmask(data[start + 4:end], data[start:start + 4]), end

    def _check_header(self, opcode: int, fin: bool, length: int) -> None:
        """Refuse a bad frame from its header alone, before waiting for its payload."""
        if opcode in _CONTROL_OPCODES:
            if not fin or length > _MAX_CONTROL_PAYLOAD:
                raise _Failure(PROTOCOL_ERROR, "Control frames must be final and short")
            return
        if opcode == _CONTINUATION:
            if self._fragments is None:
                raise _Failure(PROTOCOL_ERROR, "Continuation frame without a message to continue")
            length += self._size
        elif opcode in _DATA_OPCODES:
            if self._fragments is not None:
                raise _Failure(PROTOCOL_ERROR, "New message before the fragmented one ended")
        else:
            raise _Failure(PROTOCOL_ERROR, f"Unknown opcode {opcode:#x}")
        if length > self._max_size:
            raise _Failure(MESSAGE_TOO_BIG, f"Message over {self._max_size} bytes")

    def _handle(self, opcode: int, fin: bool, payload: bytes) -> Event | None:
        if self.state is State.DISCARDING and opcode != _CLOSE:
            return None
        if opcode == _PING:
            return Ping(encode_frame(_PONG, payload))
        if opcode == _PONG:
            return Pong()
        if opcode == _CLOSE:
            return self._peer_close(payload)
        if opcode != _CONTINUATION:
            if fin:
                return _message(opcode, payload)
            self._opcode, self._fragments, self._size = opcode, [payload], len(payload)
            return None
        assert self._fragments is not None  # _check_header refused a stray continuation
        self._fragments.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        message = b"".join(self._fragments)
        self._fragments = None
        self._size = 0
        return _message(self._opcode, message)

    def _peer_close(self, payload: bytes) -> Close:
        code: int | None = None
        reason = ""
        if payload:
            if len(payload) == 1:
                raise _Failure(PROTOCOL_ERROR, "Close frame with a one-byte payload")
            (code,) = struct.unpack_from("!H", payload)
            if code not in _PEER_CLOSE_CODES:
                raise _Failure(PROTOCOL_ERROR, f"Invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise _Failure(INVALID_DATA, "Close reason is not valid UTF-8") from None
        # Echo the peer's code (RFC 6455 §5.5.1), unless our own close frame already went out.
        reply = encode_frame(_CLOSE, payload[:2]) if self.state is State.OPEN else b""
        self.state = State.CLOSED
        return Close(code, reason, reply)

    def _fail(self, code: int, reason: str) -> Close | None:
        """Fail the connection: our close frame goes out and the rest is discarded (nothing
        new when already discarding); after our own close, the peer's error ends it."""
        if self.state is State.DISCARDING:
            return None
        if self.state is State.CLOSING:
            self.state = State.CLOSED
            return Close(code, reason, b"")
        self.state = State.DISCARDING
        self._fragments = None
        self._size = 0
        return Close(code, reason, close_frame(code, reason))


def _message(opcode: int, payload: bytes) -> Text | Binary:
    if opcode == _BINARY:
        return Binary(payload)
    try:
        return Text(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Failure(INVALID_DATA, "Text message is not valid UTF-8") from None
