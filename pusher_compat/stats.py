"""Statistics: per-app snapshots every interval, kept in SQLite, read back over the API and CLI.

The hot path only bumps :class:`~pusher_compat.hub.Counters`; :class:`StatisticsLogger` reads
them once per interval (pull, not push) and stores one row per app:

* ``connections_peak``: the most connections open at once during the interval (the logger
  restarts the hub's peak at the current count after reading it);
* ``connections``, ``channels``, ``subscriptions``: what was open at the end of the interval;
* ``ws_messages_in``, ``ws_bytes_in``, ``ws_messages_out``, ``ws_bytes_out``,
  ``api_messages``: how much the running totals grew during the interval;
* ``webhooks_delivered``, ``webhooks_failed``: deliveries first seen settled in the interval
  (see :class:`WebhookTally`).

Rows live in a SQLite file (stdlib :mod:`sqlite3`, written off the event loop): one table
``statistics`` with ``app_id``, ``time`` (unix seconds, end of the interval), ``seconds`` (its
length) and one integer column per figure above, indexed by app and time; the DDL is
``_SCHEMA`` below, versioned with ``PRAGMA user_version``.

They are read back through ``GET /apps/{id}/statistics?from=&to=`` (:class:`StatisticsApi`,
signed like the rest of the HTTP API) and ``pusher-compat stats``; ``pusher-compat stats
prune`` deletes old rows. Statistics are per process: there is no Redis adapter yet to
aggregate them across nodes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import os
import sqlite3
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from . import signatures
from .channels import kind_of

if TYPE_CHECKING:
    from aiohttp import web

    from .config import AppConfig
    from .hub import Hub

__all__ = [
    "DEFAULT_URL",
    "DeliveryLog",
    "Snapshot",
    "SqliteStore",
    "StatisticsApi",
    "StatisticsLogger",
    "WebhookTally",
    "add_stats_commands",
    "prune_command",
    "stats_command",
]

log = logging.getLogger("pusher_compat.stats")

DEFAULT_URL = "http://127.0.0.1:6001"
_DAY = 86400.0
_DEFAULT_RANGE = 3600.0
"""Seconds before ``to`` that ``GET /apps/{id}/statistics`` covers without ``from``."""
_SCHEMA_VERSION = 1


class DeliveryLog(Protocol):
    """What the statistics read of the webhook dispatcher."""

    def deliveries(self, app_id: str, status: str | None = None) -> list[dict[str, Any]]: ...


# -- webhook results -----------------------------------------------------------------------


class WebhookTally:
    """Running totals of settled webhook deliveries per app, read from the delivery log.

    The log holds each delivery with its status; a delivery is counted once, the first time
    :meth:`totals` sees it ``delivered`` or ``failed``. The log is bounded
    (``webhook_log_size`` per app): a delivery that settles and leaves the log between two
    reads is not counted, which takes more than ``webhook_log_size`` deliveries of one app
    within one read interval.
    """

    def __init__(self, webhooks: DeliveryLog | None) -> None:
        self._webhooks = webhooks
        self._seen: dict[str, set[str]] = {}
        self._totals: dict[str, dict[str, int]] = {}

    def totals(self, app_id: str) -> dict[str, int]:
        """``{"delivered": n, "failed": n, "pending": n}``: settled deliveries counted so far
        (never decreasing) and the deliveries pending now."""
        totals = self._totals.setdefault(app_id, {"delivered": 0, "failed": 0})
        if self._webhooks is None:
            return {**totals, "pending": 0}
        seen = self._seen.get(app_id, set())
        settled: set[str] = set()
        pending = 0
        for entry in self._webhooks.deliveries(app_id):
            status = entry["status"]
            if status == "pending":
                pending += 1
                continue
            settled.add(entry["id"])
            if entry["id"] not in seen and status in totals:
                totals[status] += 1
        # Only ids still in the log can be seen again: the set stays as small as the log.
        self._seen[app_id] = settled
        return {**totals, "pending": pending}


# -- snapshots -----------------------------------------------------------------------------


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
_TOTALS = ("ws_messages_in", "ws_bytes_in", "ws_messages_out", "ws_bytes_out", "api_messages")


class StatisticsLogger:
    """Every ``interval`` seconds, one :class:`Snapshot` per app written to ``store``.

    The first interval starts when the logger is made; counters are running totals since the
    hub was made, so the logger should be made with the hub (at server start).
    """

    def __init__(
        self,
        hub: Hub,
        webhooks: DeliveryLog | None,
        store: SqliteStore,
        interval: float = 60.0,
        clock: Callable[[], float] = time.time,
        retention_seconds: float = 0.0,
    ) -> None:
        """``clock`` gives wall-clock unix seconds (the rows' ``time``);
        ``retention_seconds`` > 0 deletes older rows after each write."""
        if interval <= 0:
            raise ValueError("the statistics interval must be positive")
        self._hub = hub
        self._store = store
        self._interval = interval
        self._clock = clock
        self._retention = retention_seconds
        self._tally = WebhookTally(webhooks)
        self._last_time = clock()
        self._previous: dict[str, tuple[int, ...]] = {}

    def snapshot(self) -> list[Snapshot]:
        """Read every app's counters now; restart the peaks at the current connection count."""
        now = self._clock()
        seconds = now - self._last_time
        self._last_time = now
        snapshots = []
        for app_id in self._hub.app_ids():
            counters = self._hub.counters(app_id)
            webhooks = self._tally.totals(app_id)
            totals = (
                *(getattr(counters, name) for name in _TOTALS),
                webhooks["delivered"], webhooks["failed"],
            )
            previous = self._previous.get(app_id, (0,) * len(totals))
            self._previous[app_id] = totals
            deltas = [now_ - before for now_, before in zip(totals, previous, strict=True)]
            connections = self._hub.local_connection_count(app_id)
            peak = max(counters.connections_peak, connections)
            counters.connections_peak = connections
            channels = list(self._hub.channels(app_id))
            snapshots.append(Snapshot(
                app_id, round(now, 3), round(seconds, 3), peak, connections, len(channels),
                sum(channel.subscription_count for channel in channels), *deltas,
            ))
        return snapshots

    async def record(self) -> list[Snapshot]:
        """Take a snapshot and write it (in a worker thread); prune past the retention."""
        snapshots = self.snapshot()
        cutoff = self._clock() - self._retention if self._retention > 0 else None
        await asyncio.to_thread(self._write, snapshots, cutoff)
        return snapshots

    def _write(self, snapshots: list[Snapshot], cutoff: float | None) -> None:
        self._store.write(snapshots)
        if cutoff is not None:
            self._store.prune(cutoff)

    async def run(self) -> None:
        """Record every ``interval`` seconds until cancelled; a failed write is logged."""
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + self._interval, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self.record()
            except Exception:
                log.exception("statistics not recorded")

    async def stop(self) -> None:
        """Record the last, partial interval (call after cancelling :meth:`run`)."""
        try:
            await self.record()
        except Exception:
            log.exception("last statistics not recorded")


# -- storage -------------------------------------------------------------------------------


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


# -- the HTTP API --------------------------------------------------------------------------


def _timestamp(value: str | None, name: str, default: float) -> float:
    from .http_api import ApiError

    if value is None or value == "":
        return default
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise ApiError(400, f"{name} must be unix seconds, got {value!r}")
    return number


class StatisticsApi:
    """``GET /apps/{id}/statistics?from=&to=``: a handler for ``HttpApi`` (signed requests).

    ``from`` and ``to`` are unix seconds, both inclusive; ``to`` defaults to now and ``from``
    to an hour before ``to``. The answer is ``{"statistics": [row, ...], "recording": bool,
    "current": {"connections", "channels", "subscriptions"}}``: the stored rows oldest first
    (each a :meth:`Snapshot.row`), whether this server records statistics at all, and the
    live counts of this process.
    """

    def __init__(
        self, store: SqliteStore | None, hub: Hub, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._hub = hub
        self._clock = clock

    async def statistics(self, app: AppConfig, request: web.Request, body: bytes) -> Any:
        from .http_api import ApiError

        to_ts = _timestamp(request.query.get("to"), "to", self._clock())
        from_ts = _timestamp(request.query.get("from"), "from", max(0.0, to_ts - _DEFAULT_RANGE))
        if from_ts > to_ts:
            raise ApiError(400, "from must not be after to")
        rows: list[dict[str, Any]] = []
        if self._store is not None:
            rows = await asyncio.to_thread(self._store.query, app.id, from_ts, to_ts)
        channels = list(self._hub.channels(app.id))
        current = {
            "connections": self._hub.local_connection_count(app.id),
            "channels": len(channels),
            "subscriptions": sum(channel.subscription_count for channel in channels),
        }
        return {"statistics": rows, "recording": self._store is not None, "current": current}


# -- the command line ----------------------------------------------------------------------


class CommandError(Exception):
    """A ``pusher-compat stats`` failure, printed without a traceback."""


def _signed_get(args: argparse.Namespace, path: str, query: dict[str, str]) -> Any:
    """GET ``/apps/{id}{path}`` of the server at ``args.url``, signed as the SDKs sign."""
    full_path = f"/apps/{args.app_id}{path}"
    params = {"auth_key": args.key, "auth_timestamp": str(int(time.time())),
              "auth_version": "1.0", **query}
    params["auth_signature"] = signatures.sign_request("GET", full_path, params, args.secret)
    url = f"{args.url.rstrip('/')}{full_path}?{urllib.parse.urlencode(params)}"
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")
        with contextlib.suppress(ValueError, KeyError, TypeError):
            detail = json.loads(detail)["error"]
        raise CommandError(f"{full_path}: HTTP {error.code}: {detail}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(f"cannot reach {args.url}: {reason}") from None


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]], right: int = 1) -> str:
    """A plain text table; the last ``right`` columns are right-aligned (numbers)."""
    cells = [list(map(str, headers)), *([str(cell) for cell in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    first_right = len(headers) - right

    def line(row: list[str]) -> str:
        return "  ".join(
            cell.rjust(width) if i >= first_right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule, *(line(row) for row in cells[1:])])


def _local_time(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def render_stats(app_id: str, url: str, channels: dict[str, Any], statistics: dict[str, Any],
                 intervals: int) -> str:
    """The ``pusher-compat stats`` report from the two API answers."""
    current = statistics.get("current", {})
    out = [f"App {app_id} at {url}",
           f"Connections: {current.get('connections', '?')}   "
           f"Channels: {len(channels)}   Subscriptions: {current.get('subscriptions', '?')}",
           ""]
    channel_rows = sorted(
        ((name, kind_of(name).name, attributes.get("subscription_count", 0))
         for name, attributes in channels.items()),
        key=lambda row: (-row[2], row[0]),
    )
    if channel_rows:
        out.append(_table(("Channel", "Type", "Subscribers"), channel_rows))
    else:
        out.append("No occupied channels.")
    out.append("")
    rows = statistics.get("statistics", [])[-intervals:] if intervals else []
    if not statistics.get("recording", True):
        out.append("Statistics are not recorded by this server (stats_path is empty).")
    elif not rows:
        out.append("No statistics recorded in the last hour yet.")
    else:
        out.append(f"Last {len(rows)} interval(s):")
        out.append(_table(
            ("End", "Seconds", "Peak conns", "WS msgs in", "WS msgs out", "API msgs",
             "Webhooks ok", "Webhooks failed"),
            [(_local_time(r["time"]), f"{r['seconds']:g}", r["connections_peak"],
              r["ws_messages_in"], r["ws_messages_out"], r["api_messages"],
              r["webhooks_delivered"], r["webhooks_failed"]) for r in rows],
            right=7,
        ))
    return "\n".join(out)


def stats_command(args: argparse.Namespace) -> int:
    """``pusher-compat stats``: print a running server's connections, channels and recent
    statistics of one app, read through its signed HTTP API."""
    try:
        channels = _signed_get(args, "/channels", {"info": "subscription_count"})["channels"]
        statistics = _signed_get(args, "/statistics", {})
    except CommandError as error:
        print(f"pusher-compat stats: {error}", file=sys.stderr)
        return 1
    print(render_stats(args.app_id, args.url, channels, statistics, args.intervals))
    return 0


def prune_command(args: argparse.Namespace) -> int:
    """``pusher-compat stats prune``: delete rows older than the retention from the SQLite file
    named by ``--path`` or by the config's ``stats_path``."""
    from .config import ConfigError, load_settings

    path = args.path
    days = args.older_than_days
    if path is None or days is None:
        try:
            server = load_settings(args.config).server
        except ConfigError as error:
            print(f"pusher-compat: configuration error: {error}", file=sys.stderr)
            return 2
        if path is None:
            path = server.stats_path
        if days is None:
            days = server.stats_retention_days
    if not path:
        print("pusher-compat stats prune: statistics are off (stats_path is empty)",
              file=sys.stderr)
        return 1
    if not os.path.isfile(path):
        print(f"pusher-compat stats prune: no statistics file {path!r}", file=sys.stderr)
        return 1
    cutoff = time.time() - days * _DAY
    try:
        store = SqliteStore(path)
        try:
            deleted = store.prune(cutoff)
        finally:
            store.close()
    except sqlite3.Error as error:
        print(f"pusher-compat stats prune: {path}: {error}", file=sys.stderr)
        return 1
    print(f"pruned {deleted} row(s) older than {days:g} day(s) ({_local_time(cutoff)}) "
          f"from {path}")
    return 0


def _non_negative(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative number, got {text!r}")
    return value


def add_stats_commands(commands: Any) -> argparse.ArgumentParser:
    """Add ``stats`` (and ``stats prune``) to the ``add_subparsers()`` object of the CLI.

    Both set ``args.run`` to the function to call with ``args``.
    """
    env = os.environ
    stats = commands.add_parser(
        "stats", help="show a running server's connections, channels and statistics",
        description="Show one app's connections, channels (with subscriber counts and types) "
                    "and recent statistics, read from a running server's signed HTTP API.",
    )
    stats.add_argument("--url", default=DEFAULT_URL, help=f"server URL (default {DEFAULT_URL})")
    stats.add_argument("--app-id", default=env.get("PUSHER_APP_ID") or "app-id",
                       help="app id (default $PUSHER_APP_ID or app-id)")
    stats.add_argument("--key", default=env.get("PUSHER_APP_KEY") or "app-key",
                       help="app key (default $PUSHER_APP_KEY or app-key)")
    stats.add_argument("--secret", default=env.get("PUSHER_APP_SECRET") or "app-secret",
                       help="app secret (default $PUSHER_APP_SECRET or app-secret)")
    stats.add_argument("--intervals", type=int, default=10,
                       help="recorded intervals to show, newest last (default 10)")
    stats.add_argument("--timeout", type=float, default=10.0, help=argparse.SUPPRESS)
    stats.set_defaults(run=stats_command)
    actions = stats.add_subparsers(dest="stats_action", metavar="ACTION")
    prune = actions.add_parser(
        "prune", help="delete old rows from the statistics file",
        description="Delete statistics rows older than the retention from the SQLite file.",
    )
    prune.add_argument("--config", metavar="FILE",
                       help="TOML configuration file (its stats_path and stats_retention_days)")
    prune.add_argument("--path", metavar="FILE", help="statistics file (overrides the config)")
    prune.add_argument("--older-than-days", type=_non_negative, metavar="N",
                       help="delete rows older than N days (default: stats_retention_days)")
    prune.set_defaults(run=prune_command)
    return stats
