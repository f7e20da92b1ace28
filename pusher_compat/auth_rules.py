"""Channel authorization rules, written the way Laravel users write ``routes/channels.php``.

A rule pairs a channel pattern such as ``orders.{orderId}`` with a declarative condition over
the JWT claims and the pattern's parameters. Nothing is evaluated as code. The pattern is
matched against the channel name without its kind prefix (``private-``, ``presence-``,
``private-encrypted-``, and their ``-cache-`` variants), so ``private-orders.7``,
``presence-orders.7`` and ``private-cache-orders.7`` all match ``orders.{orderId}``.

:func:`match` is pure; :func:`parse_rules` validates the ``[[auth.rules]]`` TOML tables (through
:func:`pusher_compat.config_fields.check_fields`, as every table).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from .channels import kind_of
from .config_fields import ConfigError, check_fields

__all__ = [
    "RULE_TYPES", "Rule", "channel_type", "match", "parse_rules", "rule_problem", "unprefixed",
]

RULE_TYPES = ("private", "presence", "encrypted")

_PARAM_RE = re.compile(r"\{([^{}]*)\}")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LITERAL_RE = re.compile(r"[A-Za-z0-9_\-=@,.;]+")


@dataclass(frozen=True, slots=True)
class Rule:
    """One authorization rule; the first rule whose pattern and type match decides.

    ``pattern`` is matched against the whole unprefixed channel name; each ``{name}`` stands
    for one dot-separated segment (``[^.]+``), everything else is literal. ``types`` limits the
    rule to some of ``"private"``, ``"presence"``, ``"encrypted"`` (empty: any). Conditions,
    all of which must hold:

    * ``claim_equals``: claim name → value; the claim's string form must equal it.
    * ``claim_contains``: claim name → value; the claim (an array, or a space-separated string
      such as an OAuth ``scope``) must contain it as an element.

    Values may reference the pattern's parameters as ``{name}``. A rule without conditions
    admits any authenticated user. In TOML::

        [auth]
        jwt_secret = "change-me"

        [[auth.rules]]
        pattern = "orders.{orderId}"
        types = ["private"]
        claim_contains = { orders = "{orderId}" }

        [[auth.rules]]
        pattern = "App.Models.User.{id}"
        claim_equals = { sub = "{id}" }

        [[auth.rules]]
        pattern = "chat.{room}"
        types = ["presence"]
    """

    pattern: str
    types: tuple[str, ...] = ()
    claim_equals: Mapping[str, str] = field(default_factory=dict)
    claim_contains: Mapping[str, str] = field(default_factory=dict)


# -- parsing ----------------------------------------------------------------------------


def parse_rules(value: Any, source: str) -> tuple[Rule, ...]:
    """Validate ``auth.rules`` (an array of tables); :class:`ConfigError` names the key."""
    if not isinstance(value, list):
        raise ConfigError(f"{source}: auth.rules must be an array of tables ([[auth.rules]])")
    return tuple(_rule(table, f"auth.rules[{i}]", source) for i, table in enumerate(value))


def _rule(table: Any, where: str, source: str) -> Rule:
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: {where} must be a table")
    table = dict(table)
    # The conditions are tables of their own; every other key is a typed field.
    equals = _condition(table.pop("claim_equals", {}), f"{where}.claim_equals", source)
    contains = _condition(table.pop("claim_contains", {}), f"{where}.claim_contains", source)
    values = check_fields(Rule, table, where, source)
    if "pattern" not in values:
        raise ConfigError(f"{source}: {where}.pattern is required (a string like 'orders.{{id}}')")
    rule = Rule(**values, claim_equals=equals, claim_contains=contains)
    problem = rule_problem(rule)
    if problem:
        raise ConfigError(f"{source}: {where}.{problem[0]} {problem[1]}")
    return rule


def _condition(value: Any, key: str, source: str) -> Mapping[str, str]:
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {key} must be a table of claim = value, got {value!r}")
    for claim, expected in value.items():
        if isinstance(expected, bool) or not isinstance(expected, str | int):
            raise ConfigError(f"{source}: {key}.{claim} must be a string, got {expected!r}")
    return MappingProxyType({claim: str(expected) for claim, expected in value.items()})


def rule_problem(rule: Rule) -> tuple[str, str] | None:
    """What is wrong with ``rule`` as ``(field, message)``, or ``None`` when it is valid."""
    try:
        params = _pattern_params(rule.pattern)
    except ValueError as error:
        return "pattern", str(error)
    for kind in rule.types:
        if kind not in RULE_TYPES:
            return "types", f"has unknown type {kind!r} (known: {', '.join(RULE_TYPES)})"
    for where, condition in (("claim_equals", rule.claim_equals),
                             ("claim_contains", rule.claim_contains)):
        for claim, value in condition.items():
            try:
                missing = set(_references(value)) - set(params)
            except ValueError as error:
                return f"{where}.{claim}", str(error)
            if missing:
                return (f"{where}.{claim}",
                        f"references {{{sorted(missing)[0]}}}, which the pattern "
                        f"{rule.pattern!r} does not have")
    return None


def _pattern_params(pattern: str) -> list[str]:
    """The ``{name}`` parameters of ``pattern``; ``ValueError`` when it is malformed."""
    if not pattern:
        raise ValueError("must not be empty")
    params = _references(pattern)
    if len(set(params)) != len(params):
        raise ValueError(f"{pattern!r} uses a parameter twice")
    for part in _PARAM_RE.split(pattern)[::2]:
        if part and not _LITERAL_RE.fullmatch(part):
            raise ValueError(f"{pattern!r} has characters a channel name cannot contain")
    return params


def _references(text: str) -> list[str]:
    """The ``{name}`` references in ``text``; ``ValueError`` on unbalanced or bad braces."""
    names = _PARAM_RE.findall(text)
    rest = _PARAM_RE.sub("", text)
    if "{" in rest or "}" in rest:
        raise ValueError(f"{text!r} has unbalanced braces")
    for name in names:
        if not _NAME_RE.fullmatch(name):
            raise ValueError(f"{text!r} has an invalid parameter name {{{name}}}")
    return names


# -- matching ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1024)
def _compile(pattern: str) -> re.Pattern[str]:
    # Literal parts are escaped so the dots of ``App.Models.User`` only match dots.
    parts = _PARAM_RE.split(pattern)
    regex = "".join(
        re.escape(part) if index % 2 == 0 else f"(?P<{part}>[^.]+)"
        for index, part in enumerate(parts)
    )
    return re.compile(regex)


def unprefixed(channel_name: str) -> str:
    """The channel name without its kind prefix, as patterns are written."""
    kind = kind_of(channel_name)
    # Kinds that need authorization are named after their prefix minus the final hyphen.
    prefix = f"{kind.name}-"
    if kind.needs_auth and channel_name.startswith(prefix):
        return channel_name[len(prefix):]
    return channel_name


def channel_type(channel_name: str) -> str | None:
    """``"private"``, ``"presence"`` or ``"encrypted"``; ``None`` when no auth is needed."""
    kind = kind_of(channel_name)
    if not kind.needs_auth:
        return None
    if kind.encrypted:
        return "encrypted"
    return "presence" if kind.presence else "private"


def match(rules: Iterable[Rule], channel_name: str, claims: Mapping[str, Any]) -> bool:
    """Whether ``claims`` may subscribe to ``channel_name``.

    Rules are tried in order; the first whose type and pattern match decides (as Laravel uses
    the first matching channel route), and no matching rule denies.
    """
    kind = channel_type(channel_name)
    if kind is None:
        return False
    name = unprefixed(channel_name)
    for rule in rules:
        if rule.types and kind not in rule.types:
            continue
        found = _compile(rule.pattern).fullmatch(name)
        if found is not None:
            return _conditions_hold(rule, found.groupdict(), claims)
    return False


def _conditions_hold(rule: Rule, params: Mapping[str, str], claims: Mapping[str, Any]) -> bool:
    for claim, value in rule.claim_equals.items():
        if _text(_claim(claims, claim)) != _fill(value, params):
            return False
    for claim, value in rule.claim_contains.items():
        if _fill(value, params) not in _elements(_claim(claims, claim)):
            return False
    return True


def _fill(value: str, params: Mapping[str, str]) -> str:
    return _PARAM_RE.sub(lambda found: params[found[1]], value)


def _claim(claims: Mapping[str, Any], name: str) -> Any:
    """A claim by name; a dotted name also reaches into nested objects (``realm.roles``).

    The exact name wins, since namespaced claims such as ``https://example.com/roles`` contain
    dots themselves.
    """
    if name in claims:
        return claims[name]
    value: Any = claims
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _text(value: Any) -> str | None:
    """A scalar claim's string form (``sub`` may be the int ``7``); ``None`` for the rest."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    return None


def _elements(value: Any) -> set[str]:
    # A string is split on whitespace rather than searched: "12" must not admit order "1".
    if isinstance(value, str):
        return set(value.split())
    if isinstance(value, list | tuple):
        return {text for item in value if (text := _text(item)) is not None}
    return set()
