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


@pytest.mark.parametrize(
    ("data", "text"),
    [("already text", "already text"), ({"a": [1, None]}, '{"a":[1,null]}'), (7, "7"),
     (None, "null")],
    ids=["string-kept", "object-encoded", "number-encoded", "null-encoded"],
)
def test_event_data_is_always_a_string(data: object, text: str) -> None:
    assert wire.event_data(data) == text


def test_subscription_statuses_are_http_codes_for_signatures_and_pusher_codes_otherwise() -> None:
    assert {status.name: int(status) for status in wire.SubscriptionStatus} == {
        "UNAUTHORIZED": 401, "FORBIDDEN": 403, "INVALID": wire.Code.UNAUTHORIZED,
        "PRESENCE_FULL": wire.Code.OVER_CAPACITY, "CHANNEL_LIMIT": wire.Code.SUBSCRIPTION_LIMIT,
        "OVER_LIMIT": wire.Code.RATE_LIMITED,
    }


def test_subscription_error_writes_its_status_as_a_plain_number() -> None:
    forbidden = wire.SubscriptionStatus.FORBIDDEN
    error = wire.SubscriptionError("private-a", "AuthError", "no", forbidden)
    scoped, connection_level = error.to_frames()
    assert unframe(scoped) == ('{"event":"pusher:subscription_error","channel":"private-a",'
                               '"data":{"type":"AuthError","error":"no","status":403}}')
    assert unframe(connection_level) == (
        '{"event":"pusher:error","data":{"code":null,"message":"no"}}'
    )
