"""Token buckets per client, in memory: each process of a deployment counts on its own."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """One token bucket per key: `capacity` requests at once, refilled at `rate` per second.

    Only the `max_keys` most recently seen keys are remembered; a forgotten key starts
    again with a full bucket (keys are API keys, tenants or client addresses, so this
    bounds memory without letting one busy client hide behind many idle ones).
    """

    def __init__(
        self,
        *,
        rate: float,
        capacity: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or capacity < 1:
            raise ValueError("a rate limiter needs a positive rate and a capacity of at least 1")
        self.rate = rate
        self.capacity = capacity
        self.max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    @classmethod
    def per_period(
        cls, requests: int, period_seconds: float, *, burst: int | None = None
    ) -> RateLimiter:
        """`requests` per `period_seconds`, at most `burst` (default: `requests`) at once."""
        return cls(rate=requests / period_seconds, capacity=burst or requests)

    def acquire(self, key: str) -> float:
        """Take one token for `key`: 0 when granted, else the seconds until one is free."""
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self.capacity, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(self.capacity, bucket.tokens + elapsed * self.rate)
            bucket.updated = now
        if bucket.tokens >= 1:
            bucket.tokens -= 1
            return 0.0
        return (1 - bucket.tokens) / self.rate


def retry_after_seconds(wait: float) -> int:
    """A Retry-After value: whole seconds, never 0."""
    return max(1, math.ceil(wait))
