"""Flow control for a rate-limited API: adaptive concurrency and per-minute budgets."""

from __future__ import annotations

import asyncio
import time


class AdaptiveConcurrency:
    """At most `limit` calls in flight; halves on a rate limit, creeps back up on success.

    Additive increase, multiplicative decrease: a throttled account gets fewer parallel
    requests at once, then recovers one slot per `recover_after` successes.
    """

    def __init__(self, maximum: int, *, recover_after: int = 8) -> None:
        self.maximum = maximum
        self.limit = maximum
        self.in_flight = 0
        self.peak = 0
        self._recover_after = recover_after
        self._successes = 0
        self._condition = asyncio.Condition()

    async def __aenter__(self) -> AdaptiveConcurrency:
        async with self._condition:
            await self._condition.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        async with self._condition:
            self.in_flight -= 1
            self._condition.notify_all()

    async def throttled(self) -> None:
        async with self._condition:
            self.limit = max(1, self.limit // 2)
            self._successes = 0

    async def succeeded(self) -> None:
        async with self._condition:
            if self.limit >= self.maximum:
                return
            self._successes += 1
            if self._successes >= self._recover_after:
                self.limit += 1
                self._successes = 0
                self._condition.notify_all()


class MinuteBudget:
    """A token bucket refilled continuously at `per_minute`; None means unlimited."""

    def __init__(self, per_minute: int | None) -> None:
        self.per_minute = per_minute
        self._available = float(per_minute or 0)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = time.monotonic()
        assert self.per_minute is not None
        self._available = min(
            float(self.per_minute),
            self._available + (now - self._updated) * self.per_minute / 60.0,
        )
        self._updated = now

    async def take(self, amount: int = 1) -> None:
        if self.per_minute is None:
            return
        # A single request larger than the whole budget may still go, once the bucket is full.
        amount = min(amount, self.per_minute)
        async with self._lock:
            while True:
                self._refill()
                if self._available >= amount:
                    self._available -= amount
                    return
                missing = amount - self._available
                await asyncio.sleep(missing * 60.0 / self.per_minute)
