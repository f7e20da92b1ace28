"""The wire module: JSON limits and frame shapes."""

from __future__ import annotations

import pytest
from helpers import unframe

from pusher_compat import wire


def test_loads_accepts_nesting_up_to_the_limit() -> None:
    depth = wire.MAX_DEPTH
    assert wire.loads("[" * depth + "]" * depth) is not None


def test_loads_refuses_nesting_past_the_limit() -> None:
    depth = wire.MAX_DEPTH + 1
    with pytest.raises(wire.TooDeep, match="nested deeper than 100 levels"):
        wire.loads('{"a":' * depth + "1" + "}" * depth)


def test_too_deep_is_a_value_error_so_callers_treat_it_as_bad_input() -> None:
    assert issubclass(wire.TooDeep, ValueError)


def test_everything_within_the_limit_can_be_encoded_again() -> None:
    value = wire.loads("[" * wire.MAX_DEPTH + "]" * wire.MAX_DEPTH)
    assert wire.dumps(value) == b"[" * wire.MAX_DEPTH + b"]" * wire.MAX_DEPTH


def test_event_frame_without_data_leaves_data_out() -> None:
    frame = wire.event_frame("pusher:cache_miss", None, "cache-x")
    assert unframe(frame) == '{"event":"pusher:cache_miss","channel":"cache-x"}'


def test_signin_success_carries_user_data_in_an_object() -> None:
    frame = wire.signin_success_frame('{"id":"1"}')
    assert unframe(frame) == (
        '{"event":"pusher:signin_success","data":{"user_data":"{\\"id\\":\\"1\\"}"}}'
    )
