"""The one mechanism that checks a TOML table against a frozen dataclass's typed fields.

``[server]``, ``[[apps]]``, ``[[apps.webhooks]]`` and ``[auth]`` are all read through
:func:`check_fields`: the field annotations are the schema. ``bool``, ``int``, ``float``,
``str``, ``Literal[...]`` (one of fixed strings; the CLI's ``choices`` read the same types) and
``tuple[T, ...]`` of those (a TOML array) are checked here; numbers must not be negative.
``Annotated[T, "must ..."]`` words the error message of a field instead, and
``Annotated[T, Minimum(...)]`` bounds a number more tightly than "not negative".
Tables a field holds (webhooks, rules) are parsed by the caller, which removes them first.

This module is the bottom of the configuration: ``config`` (server and apps) and
``auth_config`` (``[auth]``) are built on it, so neither imports the other's parsing.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

__all__ = ["ConfigError", "Minimum", "check_fields", "choices"]


class ConfigError(Exception):
    """The configuration is invalid; the message names the file and the key."""


@dataclass(frozen=True, slots=True)
class Minimum:
    """The least value a number field takes, as ``Annotated[int, Minimum(1, "...")]``."""

    least: float
    words: str
    """The message when the value is below, e.g. ``"must be at least 1 second"``."""
    exclusive: bool = False
    """``least`` itself is refused too (``Minimum(0, "must be positive", exclusive=True)``)."""

    def admits(self, value: float) -> bool:
        return value > self.least if self.exclusive else value >= self.least


def choices(literal: Any) -> tuple[str, ...]:
    """The strings a ``Literal[...]`` type allows, in order (for messages and ``choices``)."""
    return tuple(typing.get_args(literal))


def check_fields(cls: type, table: Mapping[str, Any], where: str,
                 source: str) -> dict[str, Any]:
    """``table`` checked against the fields of the dataclass ``cls``, ready for ``cls(**)``.

    ``where`` prefixes key names in messages (``server``, ``apps[0]``); arrays become tuples
    and whole numbers given for a ``float`` field become floats.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls, include_extras=True)
    values: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{where}.{name}" if where else name
        if name not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"{source}: unknown key {key!r} (known: {known})")
        values[name] = _checked(value, hints[name], key, source)
    return values


def _checked(value: Any, hint: Any, key: str, source: str) -> Any:
    expected, words, minimum = hint, None, None
    if typing.get_origin(hint) is Annotated:
        expected, rule = typing.get_args(hint)[0], typing.get_args(hint)[1]
        words, minimum = (None, rule) if isinstance(rule, Minimum) else (rule, None)
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not _conforms(value, expected) or (words and number and value < 0):
        raise ConfigError(f"{source}: {key} {words or f'must be {_describe(expected)}'}, "
                          f"got {value!r}")
    if minimum is not None and not minimum.admits(value):
        raise ConfigError(f"{source}: {key} {minimum.words}, got {value!r}")
    if number and value < 0:
        raise ConfigError(f"{source}: {key} must not be negative, got {value!r}")
    if isinstance(value, list):
        return tuple(value)
    return float(value) if expected is float else value


def _conforms(value: Any, expected: Any) -> bool:
    if typing.get_origin(expected) is Literal:
        return value in typing.get_args(expected)
    if expected is bool:
        return isinstance(value, bool)
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if expected is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected is str:
        return isinstance(value, str)
    if _item_type(expected) is not None:
        return isinstance(value, list) and all(_conforms(v, _item_type(expected)) for v in value)
    raise TypeError(f"no configuration check for fields of type {expected!r}")


def _describe(expected: Any) -> str:
    if typing.get_origin(expected) is Literal:
        return f"one of {', '.join(choices(expected))}"
    if expected is str:
        return "a string"
    if _item_type(expected) is str:
        return "an array of strings"
    if _item_type(expected) is not None:
        return f"an array of: {', '.join(choices(_item_type(expected)))}"
    return str(expected.__name__)


def _item_type(expected: Any) -> Any:
    """``T`` of ``tuple[T, ...]``; ``None`` for any other type."""
    args = typing.get_args(expected)
    if typing.get_origin(expected) is tuple and len(args) == 2 and args[1] is Ellipsis:
        return args[0]
    return None
