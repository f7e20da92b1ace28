"""The bus codec: the exact bytes nodes send each other, and their decoding."""

from __future__ import annotations

import pytest

from pusher_compat.adapters import bus
from pusher_compat.adapters.bus import Cache, Event, Origin, Terminate, Watch

NODE = b"host-1-abc"


def test_a_node_message_carries_its_sequence_number_in_the_origin() -> None:
    assert bus.encode(bus.origin(NODE, 7), Event("news", "1.2", b'{"event":"e"}')) == (
        b'e\0host-1-abc#7\0news\x001.2\0{"event":"e"}')


def test_a_script_message_carries_the_node_alone() -> None:
    assert bus.event(NODE, "presence-room", b"{}") == b"e\0host-1-abc\0presence-room\0\0{}"


def test_watch_terminate_and_cache_messages_on_the_wire() -> None:
    assert bus.watch(NODE, "u1", True) == b"w\0host-1-abc\0u1\x001"
    assert bus.watch(NODE, "u1", False) == b"w\0host-1-abc\0u1\x000"
    assert bus.encode(NODE, Terminate("u1")) == b"t\0host-1-abc\0u1"
    assert bus.encode(NODE, Cache("cache-x", 30000, b"{}")) == (
        b"c\0host-1-abc\0cache-x\x0030000\0{}")


@pytest.mark.parametrize("message", [
    Event("news", None, b'{"data":"a\\u0000b"}'),
    Event("news", "1.2", b"{}"),
    Watch("user\u00e9", True),
    Watch("u", False),
    Terminate("42"),
    Cache("cache-x", 1500, b'{"event":"e","data":"x"}'),
])
def test_every_message_decodes_to_what_was_encoded(message: bus.Message) -> None:
    assert bus.decode(bus.encode(bus.origin(NODE, 3), message)) == (Origin(NODE, 3), message)


def test_a_payload_may_hold_the_separator() -> None:
    payload = b'{"data":"\0"}'
    assert bus.decode(bus.event(NODE, "news", payload)) == (
        Origin(NODE, None), Event("news", None, payload))


def test_an_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown bus message kind b'x'"):
        bus.decode(b"x\0node\0rest")
