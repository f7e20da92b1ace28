"""Time as the timers of the outer layer see it: a :class:`Scheduler` gives the monotonic time,
runs callbacks later and sleeps. :class:`LoopScheduler` is the event loop's own; tests pass a
manual one (``tests/helpers.py``'s ``ManualScheduler``) and move time forward themselves, so
that a batch window or a leave delay passes without waiting for it.

Wall-clock time (unix seconds for timestamps) is a separate ``clock`` callable wherever it is
needed: it never drives a timer.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

__all__ = ["Cancellable", "LoopScheduler", "Scheduler"]


class Cancellable(Protocol):
    """A scheduled callback (``asyncio.TimerHandle`` is one)."""

    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Monotonic seconds, callbacks at a time, and sleeps, all on one time line."""

    def time(self) -> float: ...

    def call_at(self, when: float, callback: Callable[..., object], *args: Any
                ) -> Cancellable: ...

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any
                   ) -> Cancellable: ...

    async def sleep(self, delay: float) -> None: ...


class LoopScheduler:
    """The running event loop's time and timers (the default everywhere)."""

    def time(self) -> float:
        return asyncio.get_running_loop().time()

    def call_at(self, when: float, callback: Callable[..., object], *args: Any
                ) -> Cancellable:
        return asyncio.get_running_loop().call_at(when, callback, *args)

    def call_later(self, delay: float, callback: Callable[..., object], *args: Any
                   ) -> Cancellable:
        return asyncio.get_running_loop().call_later(delay, callback, *args)

    async def sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)
