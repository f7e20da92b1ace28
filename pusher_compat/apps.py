"""The apps a server serves: one lookup by id and by key, and one rule for refusing a
disabled app, for every layer that takes an app from a request (WebSocket path, HTTP API,
``/broadcasting/*``, dashboard, metrics, the Redis adapter's bus).

Built once from the configuration and read-only after: the hot paths (connect, publish) look
an app up in a dict and never wait.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from .config import AppConfig

__all__ = ["Apps"]


class Apps:
    """The configured apps, by id and by key (both unique: :func:`load_settings` checks)."""

    __slots__ = ("_by_id", "_by_key")

    def __init__(self, apps: Iterable[AppConfig]) -> None:
        self._by_id: dict[str, AppConfig] = {app.id: app for app in apps}
        """Every app, in configuration order, by its id."""
        self._by_key: dict[str, AppConfig] = {app.key: app for app in self._by_id.values()}
        """The same apps by key: clients name an app by key, the HTTP API by id."""

    def by_id(self, app_id: str) -> AppConfig | None:
        return self._by_id.get(app_id)

    def by_key(self, key: str) -> AppConfig | None:
        return self._by_key.get(key)

    def by_id_or_key(self, name: str) -> AppConfig | None:
        """An app named either way (``/broadcasting/auth``'s ``?app=``): ids first."""
        return self._by_id.get(name) or self._by_key.get(name)

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(self._by_id)

    def __iter__(self) -> Iterator[AppConfig]:
        return iter(self._by_id.values())

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, app_id: object) -> bool:
        return app_id in self._by_id

    @staticmethod
    def disabled(app: AppConfig) -> str | None:
        """Why ``app`` refuses service, or ``None`` when it serves: the one message every
        path answers a disabled app with (4003 on a WebSocket, 403 over HTTP)."""
        return None if app.enabled else f"App {app.id!r} is disabled"
