"""Structured logs: human-readable text or one JSON object per line, level configurable.

JSON lines carry ``time`` (UTC, ISO 8601 with milliseconds), ``level`` (lower case),
``logger``, ``message``, then every ``extra=`` field given to the logging call, and
``exception`` (the formatted traceback) when there is one. Text lines read
``2024-05-01 12:00:00,123 INFO pusher_compat: message key=value ...``.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO, get_args

__all__ = [
    "FORMATS", "LEVELS", "JsonFormatter", "LogFormat", "LogLevel", "TextFormatter", "configure",
]

LogLevel = Literal["debug", "info", "warning", "error"]
"""The levels a configuration may choose: ``server.log_level``, ``--log-level`` and
:func:`configure` all read this type."""
LogFormat = Literal["text", "json"]
"""The line formats: ``server.log_format``, ``--log-format`` and :func:`configure`."""
LEVELS: tuple[str, ...] = get_args(LogLevel)
FORMATS: tuple[str, ...] = get_args(LogFormat)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "taskName",
}


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The fields given through ``extra=`` to the logging call that made ``record``."""
    return {key: value for key, value in vars(record).items()
            if key not in _STANDARD and not key.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
                    .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``asctime LEVEL logger: message``, then ``key=value`` for every extra field."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = extra_fields(record)
        if not extras:
            return text
        first, newline, rest = text.partition("\n")
        pairs = " ".join(f"{key}={value!r}" if isinstance(value, str) and " " in value
                         else f"{key}={value}" for key, value in extras.items())
        return f"{first} {pairs}{newline}{rest}"


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs, told apart from anyone else's."""


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) as
    ``fmt`` (``text`` or ``json``). Calling it again replaces the previous configuration."""
    if level.lower() not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}, got {level!r}")
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    handler = _Handler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
