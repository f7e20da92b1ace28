"""The statistics store: one SQLite file of per-app, per-interval rows (:class:`Snapshot`).

One table ``statistics`` with ``app_id``, ``time`` (unix seconds, end of the interval),
``seconds`` (its length) and one integer column per figure of :class:`Snapshot`, indexed by app
and time; the DDL is ``_SCHEMA`` below, versioned with ``PRAGMA user_version``. Written by
:class:`~pusher_compat.stats.StatisticsLogger`, read by the HTTP API's statistics endpoint and
the dashboard, pruned by ``pusher-compat stats prune``.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Snapshot", "SqliteStore"]

_SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One app's statistics for one interval (one row of the ``statistics`` table)."""

    app_id: str
    time: float
    """Unix seconds at the end of the interval."""
    seconds: float
    """Length of the interval."""
    connections_peak: int
    connections: int
    channels: int
    subscriptions: int
    ws_messages_in: int
    ws_bytes_in: int
    ws_messages_out: int
    ws_bytes_out: int
    api_messages: int
    webhooks_delivered: int
    webhooks_failed: int

    def row(self) -> dict[str, Any]:
        """The snapshot as the API returns it (without ``app_id``)."""
        values = dataclasses.asdict(self)
        del values["app_id"]
        return values


_FIELDS = tuple(f.name for f in dataclasses.fields(Snapshot))
_ROW_FIELDS = _FIELDS[1:]


_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS statistics (
    app_id             TEXT    NOT NULL,
    time               REAL    NOT NULL,
    seconds            REAL    NOT NULL,
    connections_peak   INTEGER NOT NULL,
    connections        INTEGER NOT NULL,
    channels           INTEGER NOT NULL,
    subscriptions      INTEGER NOT NULL,
    ws_messages_in     INTEGER NOT NULL,
    ws_bytes_in        INTEGER NOT NULL,
    ws_messages_out    INTEGER NOT NULL,
    ws_bytes_out       INTEGER NOT NULL,
    api_messages       INTEGER NOT NULL,
    webhooks_delivered INTEGER NOT NULL,
    webhooks_failed    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS statistics_app_time ON statistics (app_id, time);
CREATE INDEX IF NOT EXISTS statistics_time ON statistics (time);
PRAGMA user_version = {_SCHEMA_VERSION};
"""


class SqliteStore:
    """Statistics rows in one SQLite file (see the module docstring for the schema).

    Methods block: call them from a worker thread (``asyncio.to_thread``) on the event loop.
    One connection serves every thread, one operation at a time. WAL mode lets
    ``pusher-compat stats prune`` run against the file of a running server.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        try:
            with self._lock:
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, _SCHEMA_VERSION):
                    raise sqlite3.DatabaseError(
                        f"{self.path}: statistics schema version {version}, "
                        f"expected {_SCHEMA_VERSION}"
                    )
                if self.path != ":memory:":
                    self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(_SCHEMA)
        except BaseException:
            self._db.close()
            raise

    def write(self, snapshots: Iterable[Snapshot]) -> None:
        """Insert the snapshots, in one transaction."""
        rows = [dataclasses.astuple(snapshot) for snapshot in snapshots]
        if not rows:
            return
        placeholders = ", ".join("?" for _ in _FIELDS)
        with self._lock, self._db:
            self._db.executemany(
                f"INSERT INTO statistics ({', '.join(_FIELDS)}) VALUES ({placeholders})", rows
            )

    def query(self, app_id: str, from_ts: float, to_ts: float) -> list[dict[str, Any]]:
        """The app's rows with ``from_ts <= time <= to_ts``, oldest first."""
        with self._lock:
            cursor = self._db.execute(
                f"SELECT {', '.join(_ROW_FIELDS)} FROM statistics "
                "WHERE app_id = ? AND time >= ? AND time <= ? ORDER BY time, rowid",
                (app_id, from_ts, to_ts),
            )
            return [dict(zip(_ROW_FIELDS, row, strict=True)) for row in cursor]

    def prune(self, older_than_ts: float) -> int:
        """Delete every row with ``time < older_than_ts``; the number deleted."""
        with self._lock, self._db:
            cursor = self._db.execute("DELETE FROM statistics WHERE time < ?", (older_than_ts,))
            return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
