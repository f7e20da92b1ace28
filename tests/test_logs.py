"""Structured logs (pusher_compat.logs): JSON lines parse, text lines carry extras, the level
filters, and configuring twice does not double the output."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from pusher_compat import logs


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)

    logging.getLogger("pusher_compat.test").info(
        "app %s connected", "1001", extra={"app": "1001", "connections": 3})
    logging.getLogger("pusher_compat.test").warning("quota ü")

    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first.pop("time"))
    assert first == {"level": "info", "logger": "pusher_compat.test",
                     "message": "app 1001 connected", "app": "1001", "connections": 3}
    second.pop("time")
    assert second == {"level": "warning", "logger": "pusher_compat.test", "message": "quota ü"}


def test_json_line_holds_the_traceback_and_unserialisable_extras_as_text() -> None:
    stream = io.StringIO()
    logs.configure("info", "json", stream)

    try:
        raise ValueError("bad value")
    except ValueError:
        logging.getLogger("x").exception("failed", extra={"where": {1, 2} - {2}})

    [line] = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["message"] == "failed"
    assert entry["where"] == "{1}"
    assert entry["exception"].startswith("Traceback (most recent call last):")
    assert entry["exception"].endswith("ValueError: bad value")


def test_text_lines_append_extra_fields() -> None:
    stream = io.StringIO()
    logs.configure("debug", "text", stream)

    logging.getLogger("pusher_compat").info("served", extra={"app": "1001", "path": "a b"})

    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO pusher_compat: served app=1001 path='a b'\n",
        stream.getvalue(),
    )


def test_level_drops_records_below_it() -> None:
    stream = io.StringIO()
    logs.configure("WARNING", "json", stream)

    logging.getLogger("x").info("hidden")
    logging.getLogger("x").error("shown")

    assert [json.loads(line)["message"] for line in stream.getvalue().splitlines()] == ["shown"]


def test_configuring_again_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure("info", "text", first)
    logs.configure("info", "json", second)

    logging.getLogger("x").info("once")

    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


@pytest.mark.parametrize(("level", "fmt"), [("verbose", "text"), ("info", "yaml")])
def test_unknown_level_or_format_is_refused(level: str, fmt: str) -> None:
    with pytest.raises(ValueError, match="must be one of"):
        logs.configure(level, fmt, io.StringIO())
