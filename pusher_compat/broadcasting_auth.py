"""Laravel-style auth endpoints: ``POST /broadcasting/auth`` and ``/broadcasting/user-auth``.

pusher-js (and Laravel Echo on top of it) calls these with a form-encoded ``socket_id`` and
``channel_name``; they answer exactly what a Laravel app would (protocol.md §10.2, §10.3). The
user is identified by a JWT (``Authorization: Bearer``, else a cookie, else, only when
``query_parameter`` names one, a query parameter);
channel access is decided by declarative rules (:mod:`pusher_compat.auth_rules`) or by a
Python hook. Configured in TOML::

    [auth]
    jwt_secret = "change-me"              # or jwt_public_key_file = "jwt.pem" (RS256/ES256)
    algorithms = ["HS256"]
    issuer = "https://app.example.com"    # optional; so are audience and leeway
    user_info_claims = ["name", "email"]  # copied into presence user_info / sign-in user_info
    require_claims = ["exp"]              # the default: a token without exp is refused
    allowed_origins = ["https://app.example.com"]

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

The settings and their check live in :mod:`pusher_compat.auth_config`. Errors are
:class:`~pusher_compat.http_errors.HttpError`, JSON bodies ``{"error": ..., "code": status}``:
400 bad request, 401 no or bad token, 403 denied.
"""

from __future__ import annotations

import base64
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import jwt
from aiohttp import web

from . import ids, signatures, wire
from .apps import Apps
from .auth_config import AuthConfig, HookResult, check_auth
from .auth_rules import channel_type, match
from .channels import channel_name_error, kind_of
from .config import AppConfig
from .http_errors import HttpError, json_answer

__all__ = ["BroadcastingAuth"]

log = logging.getLogger("pusher_compat")

_JWT_OPTIONS = {"verify_sub": False, "verify_jti": False}  # ``sub`` may be a number
_ALLOW_HEADERS = "Authorization, Content-Type, X-CSRF-TOKEN, X-Socket-Id, X-Requested-With, " \
    "X-Pusher-App"


def _unauthorized(message: str) -> HttpError:
    # RFC 6750 §3: a 401 names the scheme the client should use.
    return HttpError(401, message, [("WWW-Authenticate", "Bearer")])


class BroadcastingAuth:
    """The two endpoints for ``apps``; :class:`ConfigError` if ``config`` cannot work."""

    def __init__(self, apps: Sequence[AppConfig], config: AuthConfig) -> None:
        self._apps = Apps(apps)
        """The apps a request may name (``?app=`` or ``X-Pusher-App``)."""
        self._config = config
        """The ``[auth]`` settings."""
        self._master_keys = {
            app.id: _master_key(app) for app in self._apps if app.encryption_master_key_base64
        }
        """Decoded ``encryption_master_key_base64`` of the apps that have one, by app id."""
        check = check_auth(config, "auth config")
        self._public_key = check.public_key
        """The key asymmetric tokens are verified with; ``None`` without a key file."""
        self._verifies = check.verifies(config)
        """Whether tokens are read at all; without, only the hook decides."""
        self._hook = check.hook
        """The imported hook; ``None`` when the rules decide."""

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/broadcasting/auth", self._endpoint(self._channel_auth)),
            web.post("/broadcasting/user-auth", self._endpoint(self._user_auth)),
            web.options("/broadcasting/auth", self._preflight),
            web.options("/broadcasting/user-auth", self._preflight),
        ]

    Handler = Callable[[web.Request], Awaitable[Any]]

    def _endpoint(self, handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def endpoint(request: web.Request) -> web.Response:
            try:
                response = json_answer(await handler(request))
            except HttpError as error:
                response = error.response()
            # Errors carry CORS headers too, or the browser hides why it was refused.
            self._add_cors(request, response)
            return response

        return endpoint

    async def _channel_auth(self, request: web.Request) -> dict[str, str]:
        app = self._app(request)
        fields = await _fields(request)
        socket_id = _socket_id(fields)
        channel = _channel(fields, app)
        claims = self._claims(request)
        decision = await self._decide(channel, claims, socket_id)
        kind = kind_of(channel)
        if kind.encrypted:
            master_key = self._master_keys.get(app.id)
            if master_key is None:
                raise HttpError(400, f"Encrypted channels are not configured for app {app.id!r}:"
                                     " it has no encryption_master_key_base64")
            string = signatures.channel_string(socket_id, channel)
            return {"auth": signatures.sign_auth(app.key, app.secret, string),
                    "shared_secret": signatures.shared_secret(channel, master_key)}
        if kind.presence:
            channel_data = wire.dumps(self._member(claims, decision)).decode()
            string = signatures.channel_string(socket_id, channel, channel_data)
            return {"auth": signatures.sign_auth(app.key, app.secret, string),
                    "channel_data": channel_data}
        string = signatures.channel_string(socket_id, channel)
        return {"auth": signatures.sign_auth(app.key, app.secret, string)}

    async def _user_auth(self, request: web.Request) -> dict[str, str]:
        app = self._app(request)
        socket_id = _socket_id(await _fields(request))
        if not self._verifies:
            raise _unauthorized("User sign-in needs auth.jwt_secret or auth.jwt_public_key_file")
        claims = self._claims(request)
        user: dict[str, Any] = {"id": self._user_id(claims)}
        info = self._user_info(claims)
        if info:
            user["user_info"] = info
        watchlist = claims.get(self._config.watchlist_claim)
        if isinstance(watchlist, list):
            user["watchlist"] = list(ids.watchlist(watchlist))
        user_data = wire.dumps(user).decode()
        string = signatures.user_string(socket_id, user_data)
        return {"auth": signatures.sign_auth(app.key, app.secret, string), "user_data": user_data}

    # -- request parts ------------------------------------------------------------------

    def _app(self, request: web.Request) -> AppConfig:
        chosen = request.query.get("app") or request.headers.get("X-Pusher-App")
        if chosen:
            app = self._apps.by_id_or_key(chosen)
            if app is None:
                raise HttpError(404, f"Unknown app {chosen!r} (give an app id or key)")
        elif len(self._apps) == 1:
            app = next(iter(self._apps))
        else:
            raise HttpError(400, "Several apps are configured: choose one with ?app=<id or key>"
                                 " or the X-Pusher-App header")
        disabled = Apps.disabled(app)
        if disabled:
            raise HttpError(403, disabled)
        return app

    def _token(self, request: web.Request) -> str | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        if self._config.cookie and request.cookies.get(self._config.cookie):
            return request.cookies[self._config.cookie]
        if self._config.query_parameter:
            return request.query.get(self._config.query_parameter) or None
        return None

    def _claims(self, request: web.Request) -> dict[str, Any]:
        """The verified claims of the request's token; ``{}`` when no key is configured."""
        if not self._verifies:
            return {}
        token = self._token(request)
        if token is None:
            raise _unauthorized("No token: send the JWT as 'Authorization: Bearer <token>'")
        claims = self._decode(token)
        self._user_id(claims)
        return claims

    def _decode(self, token: str) -> dict[str, Any]:
        config = self._config
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.PyJWTError as error:
            raise _unauthorized(f"Malformed token: {error}") from None
        if algorithm not in config.algorithms:
            accepted = ", ".join(config.algorithms)
            raise _unauthorized(f"Token algorithm {algorithm!r} is not accepted ({accepted})")
        # The key follows the algorithm family, so an HS256 token is never checked against the
        # public key (the classic algorithm-confusion attack).
        key = config.jwt_secret if algorithm.startswith("HS") else self._public_key
        # check_auth accepted each listed asymmetric algorithm only with a key file loaded.
        assert key is not None
        options = {**_JWT_OPTIONS, "verify_aud": bool(config.audience),
                   "require": list(config.require_claims)}
        try:
            return jwt.decode(
                token, key, algorithms=[algorithm], issuer=config.issuer or None,
                audience=config.audience or None, leeway=config.leeway,
                options=options,  # type: ignore[arg-type]
            )
        except jwt.PyJWTError as error:
            raise _unauthorized(_token_problem(error, config)) from None

    async def _decide(self, channel: str, claims: dict[str, Any], socket_id: str) -> HookResult:
        if self._hook is None:
            allowed: HookResult = match(self._config.rules, channel, claims)
        else:
            allowed = await self._call_hook(channel, claims, socket_id)
        if allowed is False:
            raise HttpError(403, f"Access to channel {channel!r} is denied")
        return allowed

    async def _call_hook(self, channel: str, claims: dict[str, Any], socket_id: str) -> HookResult:
        assert self._hook is not None
        try:
            result = self._hook(channel, dict(claims), socket_id)
            if inspect.isawaitable(result):
                result = await result
        except Exception:
            log.exception("auth hook %s failed for channel %s", self._config.hook, channel)
            raise HttpError(500, "The authorization hook failed") from None
        if not isinstance(result, bool | dict):
            log.error("auth hook %s returned %r", self._config.hook, result)
            raise HttpError(500, "The authorization hook returned neither a bool nor a dict")
        return result

    def _user_id(self, claims: Mapping[str, Any]) -> str:
        claim = self._config.user_id_claim
        value = ids.user_id(claims.get(claim))
        if value is None:
            raise _unauthorized(f"The token has no {claim!r} claim identifying the user")
        return value

    def _user_info(self, claims: Mapping[str, Any]) -> dict[str, Any]:
        return {name: claims[name] for name in self._config.user_info_claims if name in claims}

    def _member(self, claims: Mapping[str, Any], decision: HookResult) -> dict[str, Any]:
        """The presence ``channel_data``: the hook's dict wins over the claims."""
        given = decision if isinstance(decision, dict) else {}
        if "user_id" in given:
            user_id = ids.user_id(given["user_id"])
            if user_id is None:
                raise HttpError(500, "The authorization hook returned an invalid user_id")
        else:
            user_id = self._user_id(claims)
        info = given["user_info"] if "user_info" in given else self._user_info(claims)
        # Laravel leaves user_info out when the channel callback returns nothing.
        return {"user_id": user_id, "user_info": info} if info else {"user_id": user_id}

    # -- CORS ---------------------------------------------------------------------------

    def _allowed_origin(self, request: web.Request) -> str | None:
        origin = request.headers.get("Origin")
        origins = self._config.allowed_origins
        if origin and ("*" in origins or origin in origins):
            return origin
        return None

    def _add_cors(self, request: web.Request, response: web.StreamResponse) -> bool:
        origin = self._allowed_origin(request)
        if origin is None:
            return False
        # The origin is echoed rather than "*": credentialed requests (cookies) require it.
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Allow-Credentials"] = "true"
        response.headers["Vary"] = "Origin"
        return True

    async def _preflight(self, request: web.Request) -> web.Response:
        response = web.Response(status=204)
        if not self._add_cors(request, response):
            origin = request.headers.get("Origin")
            return HttpError(403, f"Origin {origin!r} is not allowed").response()
        response.headers["Access-Control-Allow-Methods"] = "POST, OPTIONS"
        response.headers["Access-Control-Allow-Headers"] = _ALLOW_HEADERS
        response.headers["Access-Control-Max-Age"] = "600"
        return response


async def _fields(request: web.Request) -> Mapping[str, str]:
    """The string fields of a form-encoded (pusher-js) or JSON body."""
    if request.content_type == "application/json":
        try:
            body = wire.loads(await request.read())
        except ValueError:
            raise HttpError(400, "The request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise HttpError(400, "The JSON body must be an object")
        return {k: v for k, v in body.items() if isinstance(v, str)}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _socket_id(fields: Mapping[str, str]) -> str:
    socket_id = fields.get("socket_id")
    if socket_id is None:
        raise HttpError(400, "socket_id is required")
    problem = ids.socket_id_error(socket_id)
    if problem:
        raise HttpError(400, problem)
    return socket_id


def _channel(fields: Mapping[str, str], app: AppConfig) -> str:
    channel = fields.get("channel_name")
    if channel is None:
        raise HttpError(400, "channel_name is required")
    invalid = channel_name_error(channel, app.max_channel_name_length)
    if invalid:
        raise HttpError(400, invalid)
    if channel_type(channel) is None:
        if kind_of(channel).user:
            raise HttpError(400, f"{channel!r} is a user channel: sign in through "
                                 "/broadcasting/user-auth instead")
        raise HttpError(400, f"{channel!r} is a public channel: public channels need no "
                             "authorization")
    return channel


def _master_key(app: AppConfig) -> bytes:
    # The config loader has checked that it is 32 bytes of base64.
    return base64.b64decode(app.encryption_master_key_base64)


def _token_problem(error: jwt.PyJWTError, config: AuthConfig) -> str:
    """Why the token was refused, in words a developer can act on."""
    if isinstance(error, jwt.ExpiredSignatureError):
        return "Token expired"
    if isinstance(error, jwt.ImmatureSignatureError):
        return "Token is not valid yet (nbf)"
    if isinstance(error, jwt.InvalidSignatureError):
        return "Token signature is invalid"
    if isinstance(error, jwt.InvalidAudienceError):
        return f"Token audience is wrong: expected {config.audience!r}"
    if isinstance(error, jwt.InvalidIssuerError):
        return f"Token issuer is wrong: expected {config.issuer!r}"
    if isinstance(error, jwt.MissingRequiredClaimError):
        if error.claim in config.require_claims:
            return f"Token has no {error.claim!r} claim, which auth.require_claims requires"
        return f"Token has no {error.claim!r} claim"
    if isinstance(error, jwt.DecodeError):
        return f"Malformed token: {error}"
    return f"Invalid token: {error}"
