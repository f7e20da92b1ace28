#!/usr/bin/env python3
"""Turn a ``run.py`` record (JSON lines) into a Markdown table: one row per figure, one
column per server.

    python bench/report.py bench/results/run-20260101T000000Z.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "rows"]

Figure = tuple[str, Callable[[dict[str, Any]], Any]]

_FLOW: list[Figure] = [
    ("deliveries/s", lambda r: r.get("deliveries_per_s")),
    ("server CPU µs per delivery", lambda r: r.get("server_cpu_us_per_delivery")),
    ("server CPU %", lambda r: r.get("server_cpu_pct")),
    ("receiver CPU %", lambda r: r.get("receiver_cpu_pct")),
    ("redis CPU % (whole run)", lambda r: r.get("redis_cpu_pct_whole_run")),
    ("missing deliveries", lambda r: r.get("missing_deliveries")),
]
_LATENCY: list[Figure] = [
    ("p50 ms", lambda r: r.get("p50_ms")),
    ("p99 ms", lambda r: r.get("p99_ms")),
    ("max ms", lambda r: r.get("max_ms")),
    ("server CPU µs per delivery", lambda r: r.get("server_cpu_us_per_delivery")),
    ("receiver CPU %", lambda r: r.get("receiver_cpu_pct")),
]
_PRESENCE: list[Figure] = [
    ("joins/s", lambda r: r.get("joins_per_s")),
    ("leaves/s", lambda r: r.get("leaves_per_s")),
    ("server CPU µs per join", lambda r: r.get("server_cpu_us_per_join")),
]

_PUBLISH: list[Figure] = [
    ("requests/s", lambda r: r.get("requests_per_s")),
    ("events/s", lambda r: r.get("events_per_s")),
    ("server CPU µs per request", lambda r: r.get("server_cpu_us_per_request")),
    ("server CPU µs per event", lambda r: r.get("server_cpu_us_per_event")),
    ("server CPU %", lambda r: r.get("server_cpu_pct")),
    ("p50 ms", lambda r: r.get("p50_ms")),
    ("p99 ms", lambda r: r.get("p99_ms")),
    ("wrk CPU %", lambda r: r.get("wrk_cpu_pct")),
    ("redis CPU % (whole run)", lambda r: r.get("redis_cpu_pct_whole_run")),
    ("receiver CPU %", lambda r: r.get("receiver_cpu_pct")),
    ("non-2xx", lambda r: r.get("non_2xx")),
    ("missing deliveries", lambda r: r.get("missing_deliveries")),
]


def _level_figures(record: dict[str, Any]) -> list[Figure]:
    figures: list[Figure] = []
    for index, level in enumerate(record.get("levels", [])):
        sockets = level["sockets"]

        def pick(key: str, i: int = index) -> Callable[[dict[str, Any]], Any]:
            return lambda r: (r["levels"][i].get(key) or r["levels"][i].get("skipped"))

        figures += [(f"RSS KiB per socket at {sockets:,}", pick("rss_kib_per_socket")),
                    (f"connects/s to {sockets:,}", pick("connect_per_s"))]
    return figures


def _figures(record: dict[str, Any]) -> list[Figure]:
    scenario = record.get("scenario")
    if scenario in ("fanout", "channels"):
        return _FLOW
    if scenario == "latency":
        return _LATENCY
    if scenario == "presence":
        return _PRESENCE
    if scenario == "publish":
        return _PUBLISH
    if scenario == "connections":
        return _level_figures(record)
    return [("errors", lambda r: r.get("errors"))]


def _cell(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def rows(records: Iterable[dict[str, Any]]) -> list[str]:
    """Markdown lines: ``| step | figure | server... |`` with steps in the order they ran."""
    by_step: dict[str, dict[str, dict[str, Any]]] = {}
    servers: list[str] = []
    for record in records:
        by_step.setdefault(record["step"], {})[record["server"]] = record
        if record["server"] not in servers:
            servers.append(record["server"])
    lines = ["| step | figure | " + " | ".join(servers) + " |",
             "|---|---|" + "---:|" * len(servers)]
    for step, results in by_step.items():
        first = next(iter(results.values()))
        for title, pick in _figures(first):
            cells = [_cell(pick(results[s])) if s in results else "n/a" for s in servers]
            lines.append(f"| {step} | {title} | " + " | ".join(cells) + " |")
        errors = [_cell(results[s].get("errors")) if s in results else "n/a" for s in servers]
        if any(e not in ("0", "n/a") for e in errors):
            lines.append(f"| {step} | errors | " + " | ".join(errors) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="report.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("record", type=Path, help="JSON-lines file written by run.py")
    args = parser.parse_args(argv)
    records = [json.loads(line) for line in args.record.read_text().splitlines() if line.strip()]
    print("\n".join(rows(records)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
