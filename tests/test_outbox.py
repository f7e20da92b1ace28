"""The outbox of the Redis adapter, driven directly with a hand-moved clock: what it keeps
while the bus is down, in which order it gives it back, and what its bounds drop."""

from __future__ import annotations

import logging

import pytest
from helpers import FakeClock

from pusher_compat.adapters.outbox import LOG_INTERVAL, Drop, Outbox, Sequences


def outbox(clock: FakeClock, max_bytes: int = 100, max_age: float = 10.0) -> Outbox:
    return Outbox(max_bytes, max_age, clock)


def test_messages_come_out_in_the_order_they_went_in() -> None:
    box = outbox(FakeClock())
    for message in (b"one", b"two", b"three"):
        box.add("1001", message)
    box.add("2002", b"four")
    assert box.take() == [("1001", b"one"), ("1001", b"two"), ("1001", b"three"),
                          ("2002", b"four")]
    assert (len(box), box.bytes, box.dropped) == (0, 0, {})


def test_the_byte_bound_drops_the_oldest_messages_to_make_room() -> None:
    box = outbox(FakeClock(), max_bytes=10)
    for message in (b"aaaa", b"bbbb", b"cc", b"dddd"):
        box.add("1001", message)
    assert box.bytes == 10
    assert box.take() == [("1001", b"bbbb"), ("1001", b"cc"), ("1001", b"dddd")]
    assert box.dropped == {("1001", Drop.BYTES): 1}


def test_a_message_larger_than_the_whole_bound_is_dropped_and_the_others_kept() -> None:
    box = outbox(FakeClock(), max_bytes=10)
    box.add("1001", b"keep")
    box.add("1001", b"x" * 11)
    assert box.take() == [("1001", b"keep")]
    assert box.dropped == {("1001", Drop.BYTES): 1}


def test_a_zero_byte_bound_keeps_nothing() -> None:
    box = outbox(FakeClock(), max_bytes=0)
    box.add("1001", b"e")
    assert box.take() == []
    assert box.dropped == {("1001", Drop.BYTES): 1}


def test_messages_older_than_the_age_bound_when_taken_are_dropped() -> None:
    clock = FakeClock()
    box = outbox(clock, max_age=10.0)
    box.add("1001", b"stale")
    clock.advance(5.0)
    box.add("1001", b"fresh")
    clock.advance(5.5)
    assert box.take() == [("1001", b"fresh")]
    assert box.dropped == {("1001", Drop.AGE): 1}


def test_a_message_exactly_as_old_as_the_bound_is_still_sent() -> None:
    clock = FakeClock()
    box = outbox(clock, max_age=10.0)
    box.add("1001", b"e")
    clock.advance(10.0)
    assert box.take() == [("1001", b"e")]


def test_the_outbox_is_due_once_its_oldest_message_reaches_the_age_bound() -> None:
    clock = FakeClock()
    box = outbox(clock, max_age=10.0)
    assert not box.due()
    box.add("1001", b"e")
    clock.advance(9.75)
    assert not box.due()
    clock.advance(0.25)
    assert box.due()


def test_the_outbox_can_be_asked_whether_it_is_due_within_a_margin() -> None:
    clock = FakeClock()
    box = outbox(clock, max_age=10.0)
    box.add("1001", b"e")
    clock.advance(9.25)
    assert not box.due(within=0.5)
    clock.advance(0.25)
    assert box.due(within=0.5)


def test_messages_put_back_go_in_front_of_the_others_in_their_order() -> None:
    box = outbox(FakeClock())
    box.add("1001", b"later")
    box.put_back([("1001", b"first"), ("2002", b"second")])
    assert box.take() == [("1001", b"first"), ("2002", b"second"), ("1001", b"later")]


def test_clearing_counts_every_waiting_message_as_stopped() -> None:
    box = outbox(FakeClock())
    box.add("1001", b"a")
    box.add("2002", b"b")
    box.clear()
    assert box.take() == []
    assert box.dropped == {("1001", Drop.STOPPED): 1, ("2002", Drop.STOPPED): 1}


def test_drops_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    box = outbox(clock, max_bytes=4)
    caplog.set_level(logging.WARNING, "pusher_compat.redis")
    for message in (b"aaaa", b"bbbb", b"cccc"):
        box.add("1001", message)
    assert [r.getMessage() for r in caplog.records] == [
        "redis outbox: 1 (bytes) event(s) published while redis was unreachable were "
        "dropped, reaching only this node's sockets; bounds: 4 bytes, 10 s"]
    clock.advance(LOG_INTERVAL)
    box.add("1001", b"dddd")
    assert len(caplog.records) == 2
    assert caplog.records[1].getMessage().startswith("redis outbox: 2 (bytes) event(s)")


def test_drops_not_logged_yet_are_logged_when_the_outbox_is_taken(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    box = outbox(clock, max_bytes=4, max_age=1.0)
    caplog.set_level(logging.WARNING, "pusher_compat.redis")
    for message in (b"aaaa", b"bbbb", b"cccc"):
        box.add("1001", message)
    clock.advance(2.0)
    assert box.take() == []
    assert caplog.records[-1].getMessage().startswith(
        "redis outbox: 1 (age), 1 (bytes) event(s)")


def test_a_sequence_number_is_fresh_once_per_origin_and_app() -> None:
    seen = Sequences()
    assert seen.fresh("1001", b"node-a", 1)
    assert not seen.fresh("1001", b"node-a", 1)
    assert seen.fresh("1001", b"node-b", 1)
    assert seen.fresh("2002", b"node-a", 1)
    assert seen.fresh("1001", b"node-a", 3)
    assert not seen.fresh("1001", b"node-a", 2)


def test_sequences_forget_the_origin_heard_least_recently_past_their_limit() -> None:
    seen = Sequences(limit=2)
    seen.fresh("1001", b"old", 5)
    seen.fresh("1001", b"b", 1)
    seen.fresh("1001", b"c", 1)
    assert seen.fresh("1001", b"old", 5)
    assert not seen.fresh("1001", b"c", 1)
