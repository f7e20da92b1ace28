"""The WebSocket layer: the sans-I/O parser (bytes in, events and exact frames out), the
handshake checks, the socket protocol's shape, and the same behaviour end to end over raw
sockets to the real listener, in process."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from helpers import SWITCHING, UPGRADE, GatewayTestServer, RawSocket, client_frame, upgraded
from multidict import CIMultiDict

from pusher_compat import socket_transport, websocket
from pusher_compat.config import AppConfig, Settings
from pusher_compat.server import create_app
from pusher_compat.socket_transport import WebSocketProtocol
from pusher_compat.websocket import Binary, Close, Event, Ping, Pong, State, Text, WebSocket

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA


def failure(code: int, reason: str) -> Close:
    """The event of a connection the server fails: its close frame goes out, exactly."""
    return Close(code, reason, b"\x88" + bytes([2 + len(reason)]) + struct.pack("!H", code)
                 + reason.encode())


# -- frames in, events out -------------------------------------------------------------------


def test_masked_text_frame_from_rfc_6455_is_read() -> None:
    # RFC 6455 §5.7: a single-frame masked text message containing "Hello".
    frame = bytes([0x81, 0x85, 0x37, 0xFA, 0x21, 0x3D, 0x7F, 0x9F, 0x4D, 0x51, 0x58])
    assert WebSocket(1024).receive(frame) == [Text("Hello")]


def test_unmasked_client_frame_fails_with_1002() -> None:
    ws = WebSocket(1024)
    assert ws.receive(client_frame(TEXT, b"Hello", mask=None)) == [
        failure(1002, "Client frames must be masked")
    ]
    assert ws.state is State.DISCARDING
    assert ws.receive(client_frame(TEXT, b"ignored")) == []


def test_several_frames_in_one_read_come_out_in_order() -> None:
    data = client_frame(TEXT, b"one") + client_frame(BINARY, b"\x00\xff") + client_frame(
        TEXT, b"two")
    assert WebSocket(1024).receive(data) == [Text("one"), Binary(b"\x00\xff"), Text("two")]


def test_frames_split_at_every_byte_are_reassembled() -> None:
    ws = WebSocket(1024)
    data = client_frame(TEXT, "héllo".encode()) + client_frame(PING, b"p")
    events = [event for i in range(len(data)) for event in ws.receive(data[i:i + 1])]
    assert events == [Text("héllo"), Ping(b"\x8a\x01p")]


def test_fragmented_message_with_an_interleaved_ping() -> None:
    ws = WebSocket(1024)
    assert ws.receive(client_frame(TEXT, b"Hel", fin=False)) == []
    assert ws.receive(client_frame(PING, b"Hi")) == [Ping(b"\x8a\x02Hi")]
    assert ws.receive(client_frame(CONTINUATION, b"l", fin=False)) == []
    assert ws.receive(client_frame(CONTINUATION, b"o")) == [Text("Hello")]
    assert ws.receive(client_frame(TEXT, b"next")) == [Text("next")]


def test_multibyte_character_split_across_fragments_is_valid() -> None:
    euro = "€".encode()
    data = client_frame(TEXT, euro[:1], fin=False) + client_frame(CONTINUATION, euro[1:])
    assert WebSocket(1024).receive(data) == [Text("€")]


def test_fragmented_binary_message() -> None:
    data = client_frame(BINARY, b"\x01", fin=False) + client_frame(CONTINUATION, b"\x02")
    assert WebSocket(1024).receive(data) == [Binary(b"\x01\x02")]


def test_16_bit_length() -> None:
    payload = b"x" * 300
    frame = client_frame(TEXT, payload)
    assert frame[1] == 0x80 | 126 and frame[2:4] == b"\x01\x2c"
    assert WebSocket(1024).receive(frame) == [Text("x" * 300)]


def test_64_bit_length() -> None:
    payload = bytes(range(256)) * 300  # 76,800 bytes: needs the 64-bit form
    frame = client_frame(BINARY, payload)
    assert frame[1] == 0x80 | 127 and frame[2:10] == struct.pack("!Q", len(payload))
    ws = WebSocket(100_000)
    assert ws.receive(frame[:5000]) == []
    assert ws.receive(frame[5000:]) == [Binary(payload)]


def test_ping_is_answered_with_a_pong_of_the_same_payload() -> None:
    assert WebSocket(1024).receive(client_frame(PING, b"Hello")) == [Ping(b"\x8a\x05Hello")]
    assert WebSocket(1024).receive(client_frame(PING, b"")) == [Ping(b"\x8a\x00")]


def test_pong_is_reported() -> None:
    assert WebSocket(1024).receive(client_frame(PONG, b"x")) == [Pong()]


# -- the close handshake ---------------------------------------------------------------------


def test_client_close_is_echoed_with_its_code() -> None:
    ws = WebSocket(1024)
    close = client_frame(CLOSE, struct.pack("!H", 4000) + b"bye")
    assert ws.receive(close + client_frame(TEXT, b"after")) == [
        Close(4000, "bye", b"\x88\x02\x0f\xa0")
    ]
    assert ws.state is State.CLOSED
    assert ws.start_close(1000) == b""


def test_client_close_without_a_code_is_answered_without_one() -> None:
    assert WebSocket(1024).receive(client_frame(CLOSE, b"")) == [Close(None, "", b"\x88\x00")]


def test_server_close_then_client_answer_needs_no_reply() -> None:
    ws = WebSocket(1024)
    assert ws.start_close(4200, "Server shutting down") == (
        b"\x88\x16\x10\x68Server shutting down"
    )
    assert ws.state is State.CLOSING
    assert ws.start_close(4201) == b""  # one close frame per connection
    assert ws.receive(client_frame(TEXT, b"late")) == [Text("late")]
    assert ws.receive(client_frame(CLOSE, struct.pack("!H", 4200))) == [Close(4200, "", b"")]
    assert ws.state is State.CLOSED


def test_close_reason_is_cut_on_a_character_boundary() -> None:
    # 200 bytes of reason; 123 fit, and the 123rd is half an "é".
    assert websocket.close_frame(1000, "é" * 100) == b"\x88\x7c\x03\xe8" + ("é" * 61).encode()


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x03", failure(1002, "Close frame with a one-byte payload")),
        (struct.pack("!H", 999), failure(1002, "Invalid close code 999")),
        (struct.pack("!H", 1005), failure(1002, "Invalid close code 1005")),
        (struct.pack("!H", 2000), failure(1002, "Invalid close code 2000")),
        (struct.pack("!H", 5000), failure(1002, "Invalid close code 5000")),
        (struct.pack("!H", 1000) + b"\xff", failure(1007, "Close reason is not valid UTF-8")),
    ],
    ids=["one-byte", "999", "1005", "2000", "5000", "reason-not-utf8"],
)
def test_bad_close_frame(payload: bytes, expected: Close) -> None:
    assert WebSocket(1024).receive(client_frame(CLOSE, payload)) == [expected]


# -- what fails the connection ---------------------------------------------------------------

SHORT_CONTROL = "Control frames must be final and short"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (client_frame(TEXT, b"x", rsv=0x40),
         failure(1002, "Reserved bits are set but no extension was agreed")),
        (client_frame(0x3, b"x"), failure(1002, "Unknown opcode 0x3")),
        (client_frame(0xB, b""), failure(1002, "Unknown opcode 0xb")),
        (client_frame(CONTINUATION, b"x"),
         failure(1002, "Continuation frame without a message to continue")),
        (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"),
         failure(1002, "New message before the fragmented one ended")),
        (client_frame(PING, b"x", fin=False), failure(1002, SHORT_CONTROL)),
        (client_frame(PING, b"x" * 126), failure(1002, SHORT_CONTROL)),
    ],
    ids=["rsv1", "opcode-3", "opcode-b", "stray-continuation", "interrupted-message",
         "fragmented-ping", "long-ping"],
)
def test_protocol_error_fails_with_1002(data: bytes, expected: Close) -> None:
    assert WebSocket(1024).receive(data) == [expected]


@pytest.mark.parametrize(
    "payload",
    [b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", "€".encode()[:2]],
    ids=["invalid-bytes", "overlong", "encoded-surrogate", "truncated"],
)
def test_invalid_utf8_text_fails_with_1007(payload: bytes) -> None:
    assert WebSocket(1024).receive(client_frame(TEXT, payload)) == [
        failure(1007, "Text message is not valid UTF-8")
    ]


def test_invalid_utf8_across_fragments_fails_with_1007() -> None:
    data = client_frame(TEXT, b"ok", fin=False) + client_frame(CONTINUATION, b"\xff")
    assert WebSocket(1024).receive(data) == [failure(1007, "Text message is not valid UTF-8")]


def test_oversized_message_fails_with_1009_from_its_header_alone() -> None:
    frame = client_frame(TEXT, b"x" * 1025)
    assert WebSocket(1024).receive(frame[:8]) == [failure(1009, "Message over 1024 bytes")]
    assert WebSocket(1024).receive(client_frame(TEXT, b"x" * 1024)) == [Text("x" * 1024)]


def test_oversized_fragmented_message_fails_with_1009() -> None:
    ws = WebSocket(1024)
    assert ws.receive(client_frame(TEXT, b"x" * 1000, fin=False)) == []
    assert ws.receive(client_frame(CONTINUATION, b"x" * 25)) == [
        failure(1009, "Message over 1024 bytes")
    ]


# -- after a failure: discard until the client's close frame --------------------------------

CLIENT_CLOSE = client_frame(CLOSE, struct.pack("!H", 1009))
PEER_CLOSED = Close(1009, "", b"")
"""The client's answer to our 1009, and its event: nothing more to send, TCP may close."""


def test_rest_of_an_oversized_message_is_skipped_then_the_close_frame_read() -> None:
    ws = WebSocket(1024)
    data = client_frame(TEXT, b"x" * 5000) + CLIENT_CLOSE
    assert ws.receive(data[:100]) == [failure(1009, "Message over 1024 bytes")]
    assert ws.state is State.DISCARDING
    assert ws.receive(data[100:3000]) == []
    assert ws.receive(data[3000:]) == [PEER_CLOSED]
    assert ws.state is State.CLOSED


def test_discarding_survives_input_split_at_every_byte() -> None:
    ws = WebSocket(1024)
    data = (client_frame(TEXT, b"x" * 1100) + client_frame(TEXT, b"dropped")
            + client_frame(PING, b"p") + CLIENT_CLOSE)
    events = [event for i in range(len(data)) for event in ws.receive(data[i:i + 1])]
    assert events == [failure(1009, "Message over 1024 bytes"), PEER_CLOSED]


def test_frames_after_invalid_utf8_are_dropped_but_the_close_frame_is_read() -> None:
    data = (client_frame(TEXT, b"\xff") + client_frame(TEXT, b"dropped")
            + client_frame(PING, b"unanswered") + CLIENT_CLOSE)
    assert WebSocket(1024).receive(data) == [
        failure(1007, "Text message is not valid UTF-8"), PEER_CLOSED
    ]


def test_after_broken_framing_everything_is_dropped() -> None:
    ws = WebSocket(1024)
    data = client_frame(TEXT, b"x", mask=None) + CLIENT_CLOSE
    assert ws.receive(data) == [failure(1002, "Client frames must be masked")]
    assert ws.state is State.DISCARDING


def test_discarding_gives_up_after_a_mebibyte_without_a_close_frame() -> None:
    ws = WebSocket(1024)
    assert ws.receive(client_frame(TEXT, b"x", mask=None)) == [
        failure(1002, "Client frames must be masked")
    ]
    assert ws.receive(b"\0" * (1 << 20)) == []
    assert ws.receive(b"\0") == [Close(None, "No close frame after 1048576 bytes", b"")]
    assert ws.state is State.CLOSED


def test_error_after_server_close_sends_no_second_close_frame() -> None:
    ws = WebSocket(1024)
    ws.start_close(4200)
    assert ws.receive(client_frame(TEXT, b"x", mask=None)) == [
        Close(1002, "Client frames must be masked", b"")
    ]


# -- the handshake ---------------------------------------------------------------------------


def upgrade_headers(**overrides: str) -> CIMultiDict[str]:
    headers = CIMultiDict({
        "Upgrade": "websocket", "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version": "13",
    })
    for name, value in overrides.items():
        headers.popall(name.replace("_", "-"), None)
        if value:
            headers[name.replace("_", "-")] = value
    return headers


def test_accept_key_of_rfc_6455_example() -> None:
    # RFC 6455 §1.3.
    assert websocket.handshake_accept(upgrade_headers()) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def test_upgrade_tokens_are_case_insensitive_and_may_be_lists() -> None:
    headers = upgrade_headers(Upgrade="WebSocket", Connection="keep-alive, Upgrade")
    assert websocket.handshake_accept(headers) == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


NO_UPGRADE = "Missing Upgrade: websocket header: this endpoint is for WebSocket connections"
BAD_KEY = " Sec-WebSocket-Key header: 16 random bytes in base64 are required"
VERSION_13 = websocket.HandshakeError(
    426, "Unsupported Sec-WebSocket-Version: only 13 (RFC 6455) is spoken here",
    (("Sec-WebSocket-Version", "13"),),
)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [({"Upgrade": ""}, websocket.HandshakeError(400, NO_UPGRADE)),
     ({"Upgrade": "h2c"}, websocket.HandshakeError(400, NO_UPGRADE)),
     ({"Connection": "keep-alive"},
      websocket.HandshakeError(400, "Missing Connection: Upgrade header")),
     ({"Sec_WebSocket_Version": "8"}, VERSION_13),
     ({"Sec_WebSocket_Version": ""}, VERSION_13),
     ({"Sec_WebSocket_Key": ""}, websocket.HandshakeError(400, "Missing" + BAD_KEY)),
     ({"Sec_WebSocket_Key": "c2hvcnQ="}, websocket.HandshakeError(400, "Invalid" + BAD_KEY)),
     ({"Sec_WebSocket_Key": "not base64 at all!!!!!!!"},
      websocket.HandshakeError(400, "Invalid" + BAD_KEY)),
     ({"Sec_WebSocket_Key": "é" * 24}, websocket.HandshakeError(400, "Invalid" + BAD_KEY))],
    ids=["no-upgrade", "other-upgrade", "no-connection-upgrade", "version-8", "no-version",
         "no-key", "short-key", "bad-base64", "non-ascii-key"],
)
def test_failed_handshake_says_what_is_wrong(
    overrides: dict[str, str], expected: websocket.HandshakeError
) -> None:
    with pytest.raises(websocket.HandshakeError) as raised:
        websocket.handshake_accept(upgrade_headers(**overrides))
    assert raised.value == expected


def test_switching_protocols_answer() -> None:
    assert websocket.switching_protocols("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=") == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    )


# -- the socket protocol: the parser as its base class ----------------------------------------


def names_shadowing(cls: type, base: type) -> set[str]:
    """Names ``cls`` defines (methods, slots, class attributes) that ``base`` defines too,
    dunders aside (``__init__`` and ``__slots__`` are meant to be a class's own)."""
    def own(klass: type) -> set[str]:
        return {name for name in vars(klass) if not name.startswith("__")}
    return own(cls) & set().union(*(own(k) for k in base.__mro__ if k is not object))


def test_socket_protocol_shadows_none_of_the_parsers_names() -> None:
    # The parser is a base class to save each socket an object; a name of its own reused
    # by the protocol (a slot, a method) would silently break the parser's state.
    assert names_shadowing(WebSocketProtocol, WebSocket) == set()


def test_shadowing_guard_sees_a_slot_reused_by_a_subclass() -> None:
    class Shadowing(WebSocket):
        __slots__ = ("_buffer_size", "state")  # one new slot, one of the parser's

        def receive(self, data: bytes) -> list[Event]:
            return []

    assert names_shadowing(Shadowing, WebSocket) == {"receive", "state"}


def test_socket_protocol_keeps_no_per_instance_dict() -> None:
    # Every class in its line declares __slots__: an idle socket costs its slots alone.
    assert WebSocketProtocol.__dictoffset__ == 0
    assert WebSocketProtocol.__weakrefoffset__ == 0


# -- end to end, raw sockets against the real listener, in process -------------------------

async def test_upgrade_is_answered_101_then_connection_established(raw: RawSocket) -> None:
    first = await upgraded(raw)
    assert first["event"] == "pusher:connection_established"


async def test_head_sent_a_byte_at_a_time_is_still_upgraded(raw: RawSocket) -> None:
    for byte in UPGRADE.format(path="/app/app-key?protocol=7").encode():
        await raw.send(bytes([byte]))
    assert await raw.head() == SWITCHING
    assert (await raw.message())["event"] == "pusher:connection_established"


async def test_ping_pong_and_close_echo_over_the_wire(raw: RawSocket) -> None:
    await upgraded(raw)
    await raw.send(client_frame(PING, b"hi"))
    assert await raw.frame() == (PONG, b"hi")
    await raw.send(client_frame(TEXT, b'{"event":"pusher:ping","data":{}}'))
    assert await raw.message() == {"event": "pusher:pong", "data": "{}"}
    await raw.send(client_frame(CLOSE, struct.pack("!H", 1000) + b"bye"))
    assert await raw.frame() == (CLOSE, struct.pack("!H", 1000))
    assert await raw.closed()


async def test_unmasked_frame_is_closed_with_1002_over_the_wire(raw: RawSocket) -> None:
    await upgraded(raw)
    await raw.send(client_frame(TEXT, b"{}", mask=None))
    assert await raw.frame() == (CLOSE, struct.pack("!H", 1002) + b"Client frames must be masked")
    raw.writer.write_eof()  # the framing is lost: only the client's end of stream ends it now
    assert await raw.closed()


async def test_oversized_message_gets_its_1009_close_frame_every_time(
    served: GatewayTestServer,
) -> None:
    # Closing TCP while the rest of the message arrives would reset the connection, and the
    # client would mostly lose the close frame (pusher-js then reports 1006).
    message = client_frame(TEXT, b"x" * 65537)
    for _ in range(10):
        raw = await RawSocket.connect(served.host, served.port)
        await upgraded(raw)
        await raw.send(message)
        assert await raw.frame() == (CLOSE, struct.pack("!H", 1009) + b"Message over 65536 bytes")
        await raw.send(CLIENT_CLOSE)
        assert await raw.closed()
        raw.writer.close()


async def test_failed_connection_is_cut_when_the_client_never_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(socket_transport, "_CLOSE_TIMEOUT", 0.2)
    settings = Settings(apps=(AppConfig(id="1001", key="app-key", secret="app-secret"),))
    async with GatewayTestServer(create_app(settings)) as gateway:
        raw = await RawSocket.connect(gateway.host, gateway.port)
        await upgraded(raw)
        started = time.monotonic()
        await raw.send(client_frame(TEXT, b"{}", mask=None))
        assert await raw.frame() == (
            CLOSE, struct.pack("!H", 1002) + b"Client frames must be masked"
        )
        assert await raw.closed()
        assert 0.2 <= time.monotonic() - started < 2
        raw.writer.close()


async def test_upgrade_after_other_requests_on_a_kept_alive_connection(raw: RawSocket) -> None:
    # A proxy reusing its upstream connection: aiohttp parses this upgrade, then hands it over.
    assert await raw.http_get("/up") == (b"HTTP/1.1 200 OK", b'{"status": "ok"}')
    first = await upgraded(raw)
    assert first["event"] == "pusher:connection_established"
    await raw.send(client_frame(PING, b"x"))
    assert await raw.frame() == (PONG, b"x")


async def test_refusal_after_other_requests_on_a_kept_alive_connection(raw: RawSocket) -> None:
    await raw.http_get("/ready")
    assert await upgraded(raw, "/app/nope?protocol=7") == {
        "event": "pusher:error", "data": {"code": 4001, "message": "App key nope does not exist"}
    }
    assert await raw.frame() == (CLOSE, struct.pack("!H", 4001) + b"App key nope does not exist")


async def test_http_routes_still_served_on_the_first_request(raw: RawSocket) -> None:
    assert await raw.http_get("/up") == (b"HTTP/1.1 200 OK", b'{"status": "ok"}')
    assert await raw.http_get("/ready") == (b"HTTP/1.1 200 OK", b'{"status": "ready"}')


JSON = {"Content-Type": "application/json"}
APP_UPGRADE = UPGRADE.format(path="/app/app-key")


@pytest.mark.parametrize(
    ("request_text", "expected"),
    [
        ("GET /app/app-key HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
         (b"HTTP/1.1 400 Bad Request", JSON, {"error": NO_UPGRADE, "code": 400})),
        (APP_UPGRADE.replace("Upgrade: websocket\r\n", ""),
         (b"HTTP/1.1 400 Bad Request", JSON, {"error": NO_UPGRADE, "code": 400})),
        (APP_UPGRADE.replace("Connection: Upgrade", "Connection: keep-alive"),
         (b"HTTP/1.1 400 Bad Request", JSON,
          {"error": "Missing Connection: Upgrade header", "code": 400})),
        (APP_UPGRADE.replace("dGhlIHNhbXBsZSBub25jZQ==", "c2hvcnQ="),
         (b"HTTP/1.1 400 Bad Request", JSON, {"error": "Invalid" + BAD_KEY, "code": 400})),
        (APP_UPGRADE.replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", ""),
         (b"HTTP/1.1 400 Bad Request", JSON, {"error": "Missing" + BAD_KEY, "code": 400})),
        (APP_UPGRADE.replace("Version: 13", "Version: 8"),
         (b"HTTP/1.1 426 Upgrade Required", {"Sec-WebSocket-Version": "13", **JSON},
          {"error": VERSION_13.message, "code": 426})),
        (APP_UPGRADE.replace("HTTP/1.1", "HTTP/1.0"),
         (b"HTTP/1.0 400 Bad Request", JSON,
          {"error": "WebSocket upgrades need HTTP/1.1", "code": 400})),
    ],
    ids=["plain-get", "no-upgrade", "no-connection-upgrade", "short-key", "no-key",
         "version-8", "http-1.0"],
)
async def test_failed_handshake_on_app_path_is_answered_in_json(
    raw: RawSocket, request_text: str, expected: tuple[bytes, dict[str, str], Any]
) -> None:
    await raw.send(request_text.encode())
    assert await raw.response() == expected
