"""The webhook delivery ledger on its own, without I/O: what pending deliveries hold against
their limits, what the delivery log keeps within its bytes, and the totals."""

from __future__ import annotations

import pytest
from helpers import FakeClock

from pusher_compat.config import AppConfig, ServerConfig, WebhookEndpoint
from pusher_compat.webhook_log import (
    LOG_DATA_CHARS,
    Delivery,
    DeliveryLedger,
    DeliveryTotals,
    Drop,
    NotReplayable,
    Status,
)
from pusher_compat.wire import dumps

APP = AppConfig(id="1001", key="278d425bdf160c739803", secret="7ad3773142a6692b25b8")
ENDPOINT = WebhookEndpoint("http://127.0.0.1:9/hook")
OCCUPIED = dumps([{"name": "channel_occupied", "channel": "my-channel"}])
"""52 bytes: what a delivery of one ``channel_occupied`` holds and the budgets count."""


def delivery(seq: int, payload: bytes = OCCUPIED, client_only: bool = False) -> Delivery:
    return Delivery(f"d{seq}", seq, APP, ENDPOINT, payload, client_only, created_ms=1000)


def ledger(**limits: int) -> DeliveryLedger:
    return DeliveryLedger(ServerConfig(**limits), FakeClock())


def ids(app_ledger: DeliveryLedger) -> list[tuple[str, str]]:
    return [(entry["id"], entry["status"]) for entry in app_ledger.entries(APP.id)]


def test_pending_deliveries_over_their_count_are_over_the_pending_limit_before_the_bytes() -> None:
    deliveries = ledger(webhook_max_pending=1, webhook_max_pending_bytes=len(OCCUPIED))
    deliveries.add(delivery(0))
    assert deliveries.over_limit() is None
    deliveries.add(delivery(1))
    assert deliveries.over_limit() is Drop.PENDING_LIMIT


def test_pending_deliveries_over_their_bytes_are_over_the_pending_byte_budget() -> None:
    deliveries = ledger(webhook_max_pending_bytes=2 * len(OCCUPIED) - 1)
    deliveries.add(delivery(0))
    deliveries.add(delivery(1))
    assert deliveries.over_limit() is Drop.PENDING_BYTES


def test_the_oldest_client_event_only_delivery_is_the_first_to_drop() -> None:
    deliveries = ledger()
    for seq, client_only in enumerate((False, True, True)):
        deliveries.add(delivery(seq, client_only=client_only))
    assert deliveries.first_to_drop().id == "d1"
    deliveries.settle(deliveries.first_to_drop(), Status.FAILED)
    deliveries.settle(deliveries.first_to_drop(), Status.FAILED)
    assert deliveries.first_to_drop().id == "d0"


def test_a_delivery_settles_once() -> None:
    deliveries = ledger()
    first = delivery(0)
    deliveries.add(first)
    assert deliveries.settle(first, Status.DELIVERED, None) is True
    assert deliveries.settle(first, Status.FAILED, "late") is False
    assert (first.status, first.last_error) == (Status.DELIVERED, None)
    assert deliveries.totals(APP.id) == DeliveryTotals(1, 0, 0, {})


def test_the_log_sheds_its_oldest_delivered_entries_before_any_failure() -> None:
    deliveries = ledger(webhook_log_max_bytes=2 * len(OCCUPIED))
    settled = [(delivery(0), Status.FAILED), (delivery(1), Status.DELIVERED),
               (delivery(2), Status.DELIVERED)]
    for each, status in settled:
        deliveries.add(each)
        deliveries.settle(each, status)
    assert ids(deliveries) == [("d0", "failed"), ("d2", "delivered")]
    assert deliveries.totals(APP.id) == DeliveryTotals(2, 1, 0, {"log_bytes": 1})


def test_a_delivery_alone_over_the_log_budget_stays_in_the_log() -> None:
    deliveries = ledger(webhook_log_max_bytes=1)
    alone = delivery(0)
    deliveries.add(alone)
    deliveries.settle(alone, Status.FAILED)
    assert ids(deliveries) == [("d0", "failed")]
    assert deliveries.dropped(APP.id) == {}


def test_a_logged_delivery_keeps_256_characters_of_data_and_cannot_be_replayed() -> None:
    deliveries = ledger()
    long = delivery(0, dumps([{"name": "client_event", "channel": "c", "data": "x" * 300}]))
    deliveries.add(long)
    assert deliveries.replayable(APP.id, "d0") is long  # pending: still whole
    deliveries.settle(long, Status.DELIVERED)
    [entry] = deliveries.entries(APP.id)
    assert entry["events"][0]["data"] == "x" * LOG_DATA_CHARS
    assert entry["truncated"] is True
    with pytest.raises(NotReplayable):
        deliveries.replayable(APP.id, "d0")
    with pytest.raises(KeyError):
        deliveries.replayable(APP.id, "nope")
