"""The identifiers clients and backends hand us, one rule each: socket ids, user ids and
watchlists. Every path that reads one (the WebSocket sign-in, ``/broadcasting/auth``,
``/broadcasting/user-auth``, the HTTP API bodies) goes through here, so the same value is
accepted or refused, and cleaned, the same way everywhere.
"""

from __future__ import annotations

from typing import Any

from . import schemas

__all__ = ["socket_id_error", "user_id", "watchlist"]


def socket_id_error(value: Any) -> str | None:
    """Why ``value`` is not a socket id, or ``None`` when it is.

    The rule is ``protocol/socket-id.json`` (``<digits>.<digits>``, at most 20 digits each),
    which the API body schemas reference too.
    """
    problem = schemas.validate("socket-id", value)
    if problem is None:
        return None
    shown = repr(value) if len(repr(value)) <= 50 else repr(value)[:50] + "..."
    return f"Invalid socket_id {shown}: expected digits.digits, at most 20 digits each"


def user_id(value: Any) -> str | None:
    """``value`` as a user id (a non-empty string, or an integer, as a string), else ``None``.

    Booleans are not user ids, although Python counts them as integers: ``true`` would
    otherwise become the user ``"True"``.
    """
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        return None
    return str(value)


def watchlist(value: Any) -> tuple[str, ...]:
    """The user ids of a ``watchlist`` (a sign-in's, or a JWT claim's), in order, without
    duplicates; entries that are not user ids (see :func:`user_id`) are dropped."""
    if not isinstance(value, list | tuple):
        return ()
    ids = (uid for item in value if (uid := user_id(item)) is not None)
    return tuple(dict.fromkeys(ids))
