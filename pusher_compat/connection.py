"""The per-socket protocol state machine: text frames in, frames and hub actions out.

A :class:`Connection` knows nothing of sockets. It reads client messages through
:meth:`Connection.receive`, answers through its :class:`Sink` and changes channel state through
the :class:`~pusher_compat.hub.Hub`. Tests drive it with plain strings and a list sink.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from . import ids, schemas, signatures, wire
from .channels import USER_CHANNEL_PREFIX, channel_name_error, kind_of
from .config import AppConfig, ServerConfig
from .hub import Hub, Member
from .limits import PerSecond
from .wire import Code, PusherError, SubscriptionError
from .wire import SubscriptionStatus as Status

__all__ = ["Connection", "SignIn", "Sink", "State"]

log = logging.getLogger("pusher_compat")


class Sink(Protocol):
    """Where a connection's output goes: the server's socket writer, or a list in tests."""

    def send(self, frame: bytes) -> None:
        """Queue one complete WebSocket frame."""

    def close(self, code: int, reason: str) -> None:
        """Flush what is queued, then close the WebSocket with ``code``."""


class State(enum.Enum):
    OPEN = "open"
    CLOSED = "closed"


class SignIn(enum.Enum):
    """Where a connection stands with ``pusher:signin``. The cluster answers a sign-in later
    (Redis), so "signing in" is a state of its own, as a pending presence join is: a second
    sign-in meanwhile would be counted twice by the cluster and released once."""

    ANONYMOUS = "anonymous"
    SIGNING_IN = "signing in"
    """A sign-in was sent to the cluster and has no answer yet: another one is refused."""
    SIGNED_IN = "signed in"
    """Admitted: ``user_id``, ``user_info`` and ``watchlist`` say who the connection is."""


class Connection:
    """One client connection of one app, from ``connection_established`` to close."""

    __slots__ = (
        "_client_events", "_clock", "_counters", "_hub", "_refused", "_signin_deadline",
        "_sink", "_subscribes", "app", "channels", "last_activity", "ping_sent_at", "server",
        "signin", "socket_id", "state", "user_id", "user_info", "watchlist",
    )

    def __init__(
        self,
        app: AppConfig,
        server: ServerConfig,
        hub: Hub,
        sink: Sink,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.server = server
        self.socket_id = hub.new_socket_id(app.id)
        self.channels: dict[str, Member | None] = {}
        self.signin = SignIn.ANONYMOUS
        """Where this socket stands with ``pusher:signin``; changed only by :meth:`_signin`."""
        self.user_id: str | None = None
        """Set when :attr:`signin` becomes ``SIGNED_IN``, ``None`` before."""
        self.user_info: Any = None
        self.watchlist: tuple[str, ...] = ()
        self.state = State.OPEN
        self._hub = hub
        self._counters = hub.counters(app.id)
        self._sink = sink
        self._clock = clock
        self.last_activity = now = clock()
        timeout = app.user_authentication_timeout
        self._signin_deadline = now + timeout if timeout else None
        """When an anonymous socket is closed (4009) for not having signed in; ``None`` when
        the app sets no ``user_authentication_timeout`` (the default: no float kept)."""
        self.ping_sent_at: float | None = None
        self._client_events: PerSecond | None = None
        """Made on the first client event: most sockets never send one."""
        self._subscribes = PerSecond(app.max_subscriptions_per_second)
        """``pusher:subscribe`` messages in the current second."""
        self._refused = 0
        """Subscriptions refused by a limit: only the first is logged, so that a flood of
        them cannot flood the log too."""

    # -- lifecycle ---------------------------------------------------------------------

    def open(self) -> None:
        """Join the hub and send ``pusher:connection_established``."""
        self._hub.add(self)
        data = {"socket_id": self.socket_id, "activity_timeout": self.server.activity_timeout}
        self.send(wire.event_frame("pusher:connection_established", data))

    def close(self, code: int, reason: str) -> None:
        """Close from the server side (shutdown, terminate, liveness)."""
        if self.state is State.OPEN:
            self._sink.close(code, reason)
            self.closed()

    def closed(self) -> None:
        """The socket is gone: leave every channel (presence members are announced gone)."""
        if self.state is State.OPEN:
            self.state = State.CLOSED
            self._hub.remove(self)

    def send(self, frame: bytes) -> None:
        if self.state is State.OPEN:
            self._sink.send(frame)
            counters = self._counters
            counters.ws_messages_out += 1
            counters.ws_bytes_out += len(frame)

    def touch(self) -> None:
        """Any inbound traffic (text, WebSocket ping or pong) counts as activity."""
        self.last_activity = self._clock()
        self.ping_sent_at = None

    def check_activity(self) -> None:
        """Ping a socket silent for ``activity_timeout``; close it 4201 if the ping goes
        unanswered for ``pong_timeout``. Called periodically by the server."""
        now = self._clock()
        deadline = self._signin_deadline
        if deadline is not None and self.signin is not SignIn.SIGNED_IN and now >= deadline:
            self.fail(PusherError(
                Code.UNAUTHORIZED, "Connection not signed in within "
                f"{self.app.user_authentication_timeout} seconds", close=True,
            ))
            return
        if self.ping_sent_at is None:
            if now - self.last_activity >= self.server.activity_timeout:
                self.ping_sent_at = now
                self.send(wire.event_frame("pusher:ping", {}))
        elif now - self.ping_sent_at >= self.server.pong_timeout:
            self.fail(PusherError(Code.PONG_NOT_RECEIVED, "Pong reply not received", close=True))

    # -- inbound -----------------------------------------------------------------------

    def receive(self, text: str) -> None:
        """Handle one text frame from the client."""
        if self.state is not State.OPEN:
            return
        self.touch()
        self._counters.ws_messages_in += 1
        self._counters.ws_bytes_in += len(text)
        try:
            self._dispatch(text)
        except PusherError as error:
            self.fail(error)
        except SubscriptionError as error:
            for frame in error.to_frames():
                self.send(frame)

    def fail(self, error: PusherError) -> None:
        """Send ``error``; close the socket with its code when the error closes."""
        self.send(error.to_frame())
        if error.close and error.code is not None:
            self.close(error.code, error.message)

    def _dispatch(self, text: str) -> None:
        try:
            message = wire.loads(text)
        except wire.TooDeep as error:
            raise PusherError(None, f"Invalid message: {error}") from None
        except ValueError:
            raise PusherError(None, "Invalid JSON: the message could not be parsed") from None
        problem = schemas.validate("client-message", message)
        if problem:
            raise PusherError(None, f"Invalid message: {problem}")
        event: str = message["event"]
        handler = _HANDLERS.get(event)
        if handler is not None:
            handler(self, _data_object(message.get("data")))
        elif event.startswith("client-"):
            self._client_event(message)
        else:
            raise PusherError(None, f"Unknown event {event!r}")

    def _ping(self, data: Any) -> None:
        self.send(wire.event_frame("pusher:pong", {}))

    def _pong(self, data: Any) -> None:
        """Activity was already recorded by :meth:`receive`."""

    def _subscribe(self, data: Any) -> None:
        problem = schemas.validate("pusher-subscribe", data)
        if problem:
            raise PusherError(None, f"Invalid pusher:subscribe: {problem}")
        name: str = data["channel"]
        self._check_subscription_limits(name)
        invalid = channel_name_error(name, self.app.max_channel_name_length)
        if invalid:
            raise SubscriptionError(name, "InvalidChannel", invalid, Status.INVALID)
        kind = kind_of(name)
        member: Member | None = None
        if kind.user:
            if (self.signin is not SignIn.SIGNED_IN
                    or name[len(USER_CHANNEL_PREFIX):] != self.user_id):
                raise SubscriptionError(
                    name, "AuthError", "A user channel needs a sign-in as that user",
                    Status.FORBIDDEN,
                )
        elif kind.needs_auth:
            channel_data = data.get("channel_data")
            self._check_channel_auth(name, data.get("auth") or "", channel_data)
            if kind.presence:
                member = self._presence_member(name, channel_data)
        self._hub.join(self, name, member)

    def _check_subscription_limits(self, name: str) -> None:
        """Refuse past the subscribe rate or the channel count: both checked before any
        signature, so a flood costs a counter, not an HMAC, and cannot grow the hub."""
        app = self.app
        refusal = None
        # The frame's arrival time, read once by receive: the window start shares its float.
        if not self._subscribes.allow(self.last_activity):
            refusal = SubscriptionError(
                name, "LimitReached",
                f"Subscription rate limit reached: at most {app.max_subscriptions_per_second} "
                "subscriptions per second", Status.OVER_LIMIT, Code.RATE_LIMITED,
            )
        elif (app.max_channels_per_connection and name not in self.channels
              and len(self.channels) >= app.max_channels_per_connection):
            refusal = SubscriptionError(
                name, "LimitReached",
                f"Channel limit reached: a connection may be subscribed to at most "
                f"{app.max_channels_per_connection} channels", Status.CHANNEL_LIMIT,
                Code.SUBSCRIPTION_LIMIT,
            )
        if refusal is not None:
            self._refused += 1
            if self._refused == 1:
                log.info("socket %s of app %s: subscription refused (%s); later refusals on "
                         "this socket are not logged", self.socket_id, app.id, refusal.message)
            raise refusal

    def _check_channel_auth(self, name: str, auth: str, channel_data: str | None) -> None:
        string = signatures.channel_string(self.socket_id, name, channel_data)
        if not signatures.verify_auth(self.app.key, self.app.secret, auth, string):
            raise SubscriptionError(
                name, "AuthError",
                f"Invalid signature: Expected HMAC SHA256 hex digest of {string}, but got {auth}",
                Status.UNAUTHORIZED,
            )

    def _presence_member(self, name: str, channel_data: str | None) -> Member:
        if channel_data is None:
            if self.signin is not SignIn.SIGNED_IN:
                raise SubscriptionError(
                    name, "AuthError",
                    "Presence channels need channel_data or a signed-in user",
                    Status.UNAUTHORIZED,
                )
            assert self.user_id is not None  # set with SIGNED_IN
            return Member(self.user_id, self.user_info)
        try:
            parsed = wire.loads(channel_data)
        except ValueError:
            parsed = None
        user_id = parsed.get("user_id") if isinstance(parsed, dict) else None
        if isinstance(user_id, bool) or not isinstance(user_id, str | int) or user_id == "":
            raise SubscriptionError(
                name, "AuthError", "channel_data must be a JSON object with a user_id",
                Status.UNAUTHORIZED,
            )
        if len(str(user_id)) > self.app.max_presence_user_id_length:
            raise SubscriptionError(
                name, "LimitReached",
                f"user_id is longer than {self.app.max_presence_user_id_length} characters",
                Status.INVALID,
            )
        user_info = parsed.get("user_info")
        size = len(wire.dumps(user_info))
        if size > self.app.max_presence_user_info_bytes:
            raise SubscriptionError(
                name, "LimitReached",
                f"user_info is {size} bytes, over the "
                f"{self.app.max_presence_user_info_bytes} bytes allowed",
                Status.OVER_LIMIT,
            )
        return Member(user_id, user_info)

    def _unsubscribe(self, data: Any) -> None:
        problem = schemas.validate("pusher-unsubscribe", data)
        if problem:
            raise PusherError(None, f"Invalid pusher:unsubscribe: {problem}")
        self._hub.leave(self, data["channel"])

    def _signin(self, data: Any) -> None:
        if self.signin is SignIn.SIGNING_IN:
            raise PusherError(
                Code.UNAUTHORIZED, "A sign-in is already pending on this connection: "
                "this one is ignored",
            )
        user_data, user_id, user = self._verified_user(data)
        if self.signin is SignIn.SIGNED_IN:
            if self.user_id != user_id:
                raise PusherError(Code.UNAUTHORIZED, "The connection is signed in as another user")
            # The same user again (pusher-js signs in after every reconnect): nothing changes.
            self.send(wire.signin_success_frame(user_data))
            return
        watchlist = ids.watchlist(user.get("watchlist"))
        self.signin = SignIn.SIGNING_IN

        def admitted() -> None:
            self.send(wire.signin_success_frame(user_data))
            self.signin = SignIn.SIGNED_IN
            self.user_id = user_id
            self.user_info = user.get("user_info")
            self.watchlist = watchlist[:_WATCHLIST_LIMIT]
            if len(watchlist) > _WATCHLIST_LIMIT:
                self.send(wire.error_frame(
                    Code.WATCHLIST_OVER_LIMIT,
                    f"Watchlist has {len(watchlist)} user ids: only the first "
                    f"{_WATCHLIST_LIMIT} are watched",
                ))

        self._hub.sign_in(self, user_id, watchlist[:_WATCHLIST_LIMIT], admitted)

    def _verified_user(self, data: Any) -> tuple[str, str, dict[str, Any]]:
        """``(user_data, id, parsed user_data)`` of a correctly signed ``pusher:signin``."""
        problem = schemas.validate("pusher-signin", data)
        if problem:
            raise PusherError(Code.UNAUTHORIZED, f"Invalid pusher:signin: {problem}")
        user_data: str = data["user_data"]
        string = signatures.user_string(self.socket_id, user_data)
        if not signatures.verify_auth(self.app.key, self.app.secret, data["auth"], string):
            raise PusherError(Code.UNAUTHORIZED, f"Invalid signature for sign-in over {string}")
        try:
            user = wire.loads(user_data)
        except ValueError:
            user = None
        user_id = ids.user_id(user.get("id")) if isinstance(user, dict) else None
        if user_id is None:
            raise PusherError(Code.UNAUTHORIZED, "user_data must be a JSON object with an id")
        assert isinstance(user, dict)
        return user_data, user_id, user

    def _client_event(self, message: dict[str, Any]) -> None:
        if not self.app.client_events:
            raise PusherError(
                Code.CLIENT_EVENT_REJECTED, "The app does not have client messaging enabled."
            )
        problem = schemas.validate("client-event", message)
        if problem:
            raise PusherError(None, f"Invalid client event: {problem}")
        event: str = message["event"]
        name: str = message["channel"]
        if not kind_of(name).client_events:
            raise PusherError(
                None,
                f"Cannot broadcast client event on {name}: client events are only allowed "
                "on private and presence channels",
            )
        if name not in self.channels:
            raise PusherError(
                None,
                f"Cannot broadcast client event (connection not subscribed to channel {name})",
            )
        data = message.get("data")
        encoded = wire.event_data(data)
        self._check_client_event_limits(event, encoded)
        member = self.channels[name]
        user_id = member.user_id if member is not None else None
        frame = wire.event_frame(event, encoded, name, user_id)
        self._hub.publish(self.app.id, name, frame, self.socket_id)
        if self._hub.listening:
            hook: dict[str, Any] = {"name": "client_event", "channel": name, "event": event,
                                    "data": encoded, "socket_id": self.socket_id}
            if user_id is not None:
                hook["user_id"] = str(user_id)
            self._hub.notify(self.app, hook)

    def _check_client_event_limits(self, event: str, data: str) -> None:
        if len(event) > self.app.max_event_name_length:
            raise PusherError(
                Code.CLIENT_EVENT_REJECTED,
                f"Event name is longer than {self.app.max_event_name_length} characters",
            )
        if len(data.encode()) > self.app.max_event_payload_bytes:
            raise PusherError(
                Code.CLIENT_EVENT_REJECTED,
                f"Event data is over {self.app.max_event_payload_bytes} bytes",
            )
        if self._client_events is None:
            self._client_events = PerSecond(self.app.max_client_events_per_second)
        if not self._client_events.allow(self._clock()):
            raise PusherError(
                Code.CLIENT_EVENT_REJECTED,
                f"Client event rate limit reached: at most "
                f"{self.app.max_client_events_per_second} events per second; event dropped",
            )


_WATCHLIST_LIMIT = 100


def _data_object(data: Any) -> Any:
    """``data`` of a ``pusher:*`` event: pusher-js sends an object, others a JSON string."""
    if isinstance(data, str):
        try:
            return wire.loads(data)
        except ValueError:
            return data
    return data


_HANDLERS: dict[str, Callable[[Connection, Any], None]] = {
    "pusher:ping": Connection._ping,
    "pusher:pong": Connection._pong,
    "pusher:subscribe": Connection._subscribe,
    "pusher:unsubscribe": Connection._unsubscribe,
    "pusher:signin": Connection._signin,
}
