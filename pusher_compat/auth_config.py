"""The ``[auth]`` settings of ``/broadcasting/auth``: their fields, and the one check that
they can verify tokens (the key file loads and fits the algorithms, the hook imports).

Read through :func:`pusher_compat.config_fields.check_fields`, as ``[server]`` and
``[[apps]]`` are; :mod:`pusher_compat.broadcasting_auth` serves the endpoints with the
:class:`TokenCheck` that :func:`check_auth` returns. The TOML form is shown in that module.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

from .auth_rules import Rule, parse_rules
from .config_fields import ConfigError, check_fields

__all__ = [
    "AuthConfig", "Hook", "HookResult", "PublicKey", "TokenCheck", "check_auth",
    "parse_auth_config",
]

HookResult = bool | dict[str, Any]
Hook = Callable[[str, dict[str, Any], str], HookResult | Awaitable[HookResult]]
"""``hook(channel_name, claims, socket_id)``: False denies, True allows, a dict allows and for
presence channels gives ``{"user_id": ..., "user_info": ...}``. May be a coroutine function."""

PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey \
    | ed448.Ed448PublicKey


@dataclass(frozen=True, slots=True)
class AuthConfig:
    """The ``[auth]`` section; see :mod:`pusher_compat.broadcasting_auth` for its TOML form.

    Without ``jwt_secret`` and ``jwt_public_key_file`` (allowed only with ``hook``) no token is
    read: the hook gets empty claims and decides alone, and user sign-in is refused.
    """

    jwt_secret: str = ""
    jwt_public_key_file: str = ""
    algorithms: tuple[str, ...] = ("HS256",)
    issuer: str = ""
    audience: str = ""
    leeway: Annotated[float, "must be a non-negative number"] = 0
    """Seconds of clock difference tolerated on ``exp``/``nbf``/``iat``."""
    cookie: str = ""
    query_parameter: str = ""
    """Query parameter a token may come in (e.g. ``"token"``); empty, the default, reads none:
    tokens in URLs end up in proxy logs and ``Referer`` headers."""
    require_claims: tuple[str, ...] = ("exp",)
    """Claims a token must carry; ``exp`` by default, so that no token is valid forever."""
    user_id_claim: str = "sub"
    user_info_claims: tuple[str, ...] = ("name",)
    watchlist_claim: str = "watchlist"
    allowed_origins: tuple[str, ...] = ()
    hook: str = ""
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """What :func:`check_auth` loaded from an :class:`AuthConfig` that works."""

    public_key: PublicKey | None
    """The key of ``jwt_public_key_file``; ``None`` without one."""
    hook: Hook | None
    """The imported ``hook`` function; ``None`` without one (the rules decide)."""

    def verifies(self, config: AuthConfig) -> bool:
        """Whether tokens are read at all (a secret or a key is configured)."""
        return bool(config.jwt_secret) or self.public_key is not None


_ALGORITHMS = tuple(sorted(set(jwt.algorithms.get_default_algorithms()) - {"none"}))
# The public key type each asymmetric family verifies with.
_KEY_TYPES: tuple[tuple[str, Any], ...] = (
    ("RS", rsa.RSAPublicKey), ("PS", rsa.RSAPublicKey), ("ES", ec.EllipticCurvePublicKey),
    ("Ed", (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)),
)
# The algorithm assumed for a key file when [auth] names none.
_DEFAULT_FOR_FAMILY = {"RS": "RS256", "ES": "ES256", "Ed": "EdDSA"}


def parse_auth_config(table: Mapping[str, Any], source: str) -> AuthConfig:
    """Validate the ``[auth]`` table of ``source``; raise :class:`ConfigError` naming the key.

    Without ``algorithms``, HS256 is accepted when ``jwt_secret`` is set, and the algorithm
    fitting the key file (RS256, ES256 or EdDSA) when ``jwt_public_key_file`` is.
    """
    if not isinstance(table, Mapping):
        raise ConfigError(f"{source}: [auth] must be a table")
    table = dict(table)
    rules = table.pop("rules", None)
    values = check_fields(AuthConfig, table, "auth", source)
    if rules is not None:
        values["rules"] = parse_rules(rules, source)
    path = values.get("jwt_public_key_file", "")
    key = load_public_key(path, source) if path else None
    secret = values.get("jwt_secret", "")
    if "algorithms" not in values and (secret or key is not None):
        values["algorithms"] = _default_algorithms(secret, key)
    config = AuthConfig(**values)
    _check(config, key, source)
    return config


def check_auth(config: AuthConfig, source: str) -> TokenCheck:
    """The one check that ``config`` can verify tokens and that its hook imports, returning
    what it loaded; :class:`ConfigError` naming ``source`` and the key otherwise."""
    path = config.jwt_public_key_file
    return _check(config, load_public_key(path, source) if path else None, source)


def _check(config: AuthConfig, key: PublicKey | None, source: str) -> TokenCheck:
    hook = load_hook(config.hook, source) if config.hook else None
    if hook is not None and config.rules:
        raise ConfigError(f"{source}: auth.hook and auth.rules exclude each other")
    if not config.jwt_secret and key is None:
        if hook is None:
            raise ConfigError(
                f"{source}: auth needs jwt_secret or jwt_public_key_file to verify tokens"
            )
        return TokenCheck(None, hook)
    if not config.algorithms:
        raise ConfigError(f"{source}: auth.algorithms must not be empty")
    for algorithm in config.algorithms:
        _check_algorithm(algorithm, config.jwt_secret, key, source)
    return TokenCheck(key, hook)


def load_public_key(path: str, source: str) -> PublicKey:
    """The PEM public key in ``path``; :class:`ConfigError` when unreadable or unusable."""
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(
            f"{source}: auth.jwt_public_key_file {path!r} cannot be read: {error.strerror}"
        ) from None
    except ValueError:
        raise ConfigError(
            f"{source}: auth.jwt_public_key_file {path!r} is not a PEM public key"
        ) from None
    if not any(isinstance(key, types) for _, types in _KEY_TYPES):
        raise ConfigError(
            f"{source}: auth.jwt_public_key_file {path!r} is not an RSA, EC or EdDSA key"
        )
    return key  # type: ignore[return-value]


def _default_algorithms(secret: str, key: PublicKey | None) -> tuple[str, ...]:
    algorithms = ["HS256"] if secret else []
    if key is not None:
        family = next(family for family, types in _KEY_TYPES if isinstance(key, types))
        algorithms.append(_DEFAULT_FOR_FAMILY[family])
    return tuple(algorithms)


def _check_algorithm(algorithm: str, secret: str, key: PublicKey | None, source: str) -> None:
    if algorithm not in _ALGORITHMS:
        raise ConfigError(
            f"{source}: auth.algorithms has unknown algorithm {algorithm!r} "
            f"(known: {', '.join(_ALGORITHMS)})"
        )
    if algorithm.startswith("HS"):
        if not secret:
            raise ConfigError(f"{source}: auth.algorithms {algorithm} needs auth.jwt_secret")
        return
    if key is None:
        raise ConfigError(f"{source}: auth.algorithms {algorithm} needs auth.jwt_public_key_file")
    if not isinstance(key, dict(_KEY_TYPES)[algorithm[:2]]):
        raise ConfigError(
            f"{source}: auth.algorithms {algorithm} does not fit the key in "
            "auth.jwt_public_key_file"
        )


def load_hook(spec: str, source: str) -> Hook:
    """Import ``module:function``; :class:`ConfigError` when it cannot be found."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{source}: auth.hook must be 'module:function', got {spec!r}")
    try:
        target: Any = importlib.import_module(module_name)
    except Exception as error:  # the module's own code may raise anything while importing
        raise ConfigError(f"{source}: auth.hook cannot import {module_name!r}: {error}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
    if not callable(target):
        raise ConfigError(f"{source}: auth.hook {spec!r} is not a function")
    return target  # type: ignore[no-any-return]
