"""The one rule for each identifier: socket ids, user ids and watchlist entries."""

from __future__ import annotations

from typing import Any

import pytest

from pusher_compat import ids
from pusher_compat.hub import Hub


@pytest.mark.parametrize("socket_id", ["1.1", "1234.1234", "9" * 20 + "." + "9" * 20])
def test_a_socket_id_is_two_runs_of_1_to_20_digits(socket_id: str) -> None:
    assert ids.socket_id_error(socket_id) is None


@pytest.mark.parametrize(
    "socket_id",
    ["", "1", "1.", ".1", "1.1.1", "a.1", "1.1\n", " 1.1", "²³.1", "\uff11.1", "9" * 21 + ".9"],
)
def test_anything_else_is_not_a_socket_id(socket_id: str) -> None:
    assert ids.socket_id_error(socket_id) == (
        f"Invalid socket_id {socket_id!r}: expected digits.digits, at most 20 digits each"
    )


def test_a_socket_id_that_is_not_a_string_is_refused() -> None:
    assert ids.socket_id_error(12.5) == (
        "Invalid socket_id 12.5: expected digits.digits, at most 20 digits each"
    )


def test_a_huge_socket_id_is_named_in_50_characters() -> None:
    assert ids.socket_id_error("1" * 100_000) == (
        f"Invalid socket_id '{'1' * 49}...: expected digits.digits, at most 20 digits each"
    )


def test_the_socket_ids_the_hub_makes_follow_the_rule() -> None:
    hub = Hub()
    for _ in range(1000):
        assert ids.socket_id_error(hub.new_socket_id("1")) is None


@pytest.mark.parametrize(("value", "expected"), [
    ("42", "42"), (42, "42"), (0, "0"), ("", None), (True, None), (False, None), (1.5, None),
    (None, None), (["42"], None), ({"id": 1}, None),
])
def test_a_user_id_is_a_non_empty_string_or_an_integer(value: Any, expected: str | None) -> None:
    assert ids.user_id(value) == expected


def test_a_watchlist_keeps_user_ids_in_order_as_strings_once_each() -> None:
    value = ["8", 9, True, False, "", 1.5, {"id": 3}, None, ["7"], "8", 9]
    assert ids.watchlist(value) == ("8", "9")


@pytest.mark.parametrize("value", [None, "8", 8, {"8": True}])
def test_a_watchlist_that_is_not_a_list_is_empty(value: Any) -> None:
    assert ids.watchlist(value) == ()
