"""Channel kinds by prefix and channel-name validation (protocol.md §3.1, §3.8, §9)."""

from __future__ import annotations

import pytest

from pusher_compat.channels import USER_CHANNEL_PREFIX, channel_name_error, kind_of

# name -> (kind name, needs_auth, presence, encrypted, cached, client_events, user),
# one row per line of the protocol.md §3.1 table.
KINDS = {
    "private-encrypted-cache-x": ("private-encrypted-cache", True, False, True, True, False, False),
    "private-encrypted-x": ("private-encrypted", True, False, True, False, False, False),
    "private-cache-x": ("private-cache", True, False, False, True, True, False),
    "private-x": ("private", True, False, False, False, True, False),
    "presence-cache-x": ("presence-cache", True, True, False, True, True, False),
    "presence-x": ("presence", True, True, False, False, True, False),
    "cache-x": ("cache", False, False, False, True, False, False),
    "#server-to-user-x": ("user", False, False, False, False, False, True),
    "x": ("public", False, False, False, False, False, False),
}


def flags(name: str) -> tuple[str, bool, bool, bool, bool, bool, bool]:
    kind = kind_of(name)
    return (kind.name, kind.needs_auth, kind.presence, kind.encrypted, kind.cached,
            kind.client_events, kind.user)


@pytest.mark.parametrize(("name", "expected"), KINDS.items())
def test_prefix_table_row(name: str, expected: tuple[object, ...]) -> None:
    assert flags(name) == expected


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        # The longest prefix wins: the encrypted-cache trap and its neighbours.
        ("private-encrypted-cache-", "private-encrypted-cache"),
        ("private-encrypted-cache-private-x", "private-encrypted-cache"),
        ("private-encrypted-cachex", "private-encrypted"),
        ("private-encrypted-", "private-encrypted"),
        ("private-encrypted", "private"),
        ("private-encryptedx", "private"),
        ("private-cache-", "private-cache"),
        ("private-cachex", "private"),
        ("private-cache", "private"),
        ("private-presence-x", "private"),
        ("private-", "private"),
        ("presence-cache-", "presence-cache"),
        ("presence-cachex", "presence"),
        ("presence-private-x", "presence"),
        ("presence-", "presence"),
        ("cache-", "cache"),
        ("cache-private-x", "cache"),
        # No hyphen, no prefix: public.
        ("cache", "public"),
        ("cachet", "public"),
        ("cachex-y", "public"),
        ("private", "public"),
        ("privatex", "public"),
        ("private_x", "public"),
        ("presence", "public"),
        ("presencex", "public"),
        ("encrypted-x", "public"),
        ("private-encrypted-cache", "private-encrypted"),
        # Prefixes are case-sensitive and anchored at the start.
        ("Private-x", "public"),
        ("PRESENCE-x", "public"),
        ("Cache-x", "public"),
        ("x-private-y", "public"),
        ("my-cache-x", "public"),
        ("#server-to-user-", "user"),
        ("#server-to-user", "public"),
        ("server-to-user-1", "public"),
    ],
)
def test_kind_by_prefix(name: str, kind: str) -> None:
    assert kind_of(name).name == kind


def test_user_channel_prefix_constant() -> None:
    assert USER_CHANNEL_PREFIX == "#server-to-user-"


def test_only_private_and_presence_kinds_allow_client_events() -> None:
    allowed = {flags(name)[0] for name in KINDS if kind_of(name).client_events}
    assert allowed == {"private", "private-cache", "presence", "presence-cache"}


@pytest.mark.parametrize(
    "name",
    [
        "a",
        "my-channel",
        "private-orders.1",
        "presence-room.1",
        "private-encrypted-cache-x",
        "A-Za-z0-9_-=@,.;",
        "_-=@,.;",
        "0",
        ";",
        "App.Models.User.1",
        "#server-to-user-1",
        "#server-to-user-abc_DEF-1=@,.;",
        "a" * 200,
        "private-" + "a" * 192,
        USER_CHANNEL_PREFIX + "1" * (200 - len(USER_CHANNEL_PREFIX)),
    ],
)
def test_valid_channel_name(name: str) -> None:
    assert channel_name_error(name, 200) is None


@pytest.mark.parametrize(
    "name",
    [
        "",
        " ",
        "a b",
        "a\tb",
        "a\nb",
        "abc\n",
        "#server-to-user-1\n",
        "a/b",
        "a\\b",
        "a:b",
        "a*b",
        "a+b",
        "a!b",
        "a?b",
        "a%b",
        "a&b",
        "a'b",
        'a"b',
        "a(b)",
        "a[b]",
        "a{b}",
        "a|b",
        "a~b",
        "a$b",
        "a^b",
        "a<b>",
        "caf\u00e9",
        "\u0430",  # Cyrillic a
        "a\u00a0b",
        "a\x00b",
        # '#' only as the user-channel prefix.
        "#",
        "#foo",
        "foo#bar",
        "foo#",
        "##server-to-user-1",
        "#server-to-user-",
        "#server-to-user-#1",
        "#server-to-user-a b",
        "#server-to-user-#server-to-user-1",
        "#server-to-users-1",
        "private-#server-to-user-1",
        "x#server-to-user-1",
        "#Server-to-user-1",
    ],
)
def test_invalid_channel_name(name: str) -> None:
    error = channel_name_error(name, 200)
    assert isinstance(error, str)
    assert error


@pytest.mark.parametrize(
    "name",
    [
        "a" * 201,
        "private-" + "a" * 193,
        USER_CHANNEL_PREFIX + "1" * (201 - len(USER_CHANNEL_PREFIX)),
    ],
)
def test_channel_name_over_the_length_limit(name: str) -> None:
    assert len(name) == 201
    assert channel_name_error(name, 200)


@pytest.mark.parametrize(("limit", "length", "valid"),
                         [(164, 164, True), (164, 165, False), (1, 1, True), (1, 2, False)])
def test_length_limit_is_the_configured_one(limit: int, length: int, valid: bool) -> None:
    assert (channel_name_error("a" * length, limit) is None) is valid


def test_length_limit_counts_characters_including_the_prefix() -> None:
    assert channel_name_error("presence-" + "a" * 191, 200) is None
    assert channel_name_error("presence-" + "a" * 192, 200)
