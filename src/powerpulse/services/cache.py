"""Answers of analytics queries, kept until the tenant's data changes.

A dashboard asks the same questions again and again (every panel, every refresh, every
viewer) while the data changes only when an upload or an analysis batch commits. Each of
those transactions raises the tenant's `data_version` as its last statement, and every
answer is kept under the version it was computed at: a changed tenant simply finds no
answer under its new version, in this process or in any other reading the same database.
Old versions age out, least recently used first.

Requests asking the same question at the same version while it is being computed wait for
that one computation instead of starting their own: after a write, twenty dashboards
refreshing at once cost one query, not twenty. The computation runs as its own task, so a
waiting request that is cancelled (a client gone, a timeout) stops no one else's answer.

While analysis stores a batch every fraction of a second, every answer would be computed
again for every batch: more work than two cores can do under a dashboard load. An answer
whose computation began less than `tolerance` seconds ago
(POWERPULSE_ANALYTICS_STALENESS_SECONDS) is therefore still given for a newer version; the
next request after that computes afresh.
Questions that must match what a request reads from the database at the same moment (a
list's totalCount) ask for exact answers.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # waited for a computation another request had started
    recent: int = 0  # given an answer of an older version computed within the tolerance


class AnswerCache:
    """A bounded map from (tenant, data version, question) to the answer.

    Answers are shared between requests: callers must treat them as read-only.
    """

    def __init__(self, entries: int, *, tolerance: float = 0.0) -> None:
        if entries < 0:
            raise ValueError("entries must be zero (off) or more")
        self._entries = entries
        self._tolerance = tolerance
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()
        self._computing: dict[Hashable, asyncio.Future[Any]] = {}
        # (tenant, question) -> (version, when its computation began, answer): the newest.
        self._latest: OrderedDict[Hashable, tuple[int, float, Any]] = OrderedDict()
        self.stats = CacheStats()

    @property
    def enabled(self) -> bool:
        return self._entries > 0

    def __len__(self) -> int:
        return len(self._answers)

    async def answer(
        self,
        key: tuple[int, int, Hashable],
        compute: Callable[[], Awaitable[T]],
        *,
        exact: bool = False,
    ) -> T:
        """The answer kept under `key` (tenant, version, question), else computed and kept.

        Unless `exact`, an answer of an older version computed within the tolerance is
        given instead of computing. `compute` must not use anything the calling request
        owns (its connection): it may finish after that request has gone, for others
        waiting on the same answer.
        """
        if not self.enabled:
            return await compute()
        if key in self._answers:
            self._answers.move_to_end(key)
            self.stats.hits += 1
            return self._answers[key]  # type: ignore[no-any-return]
        tenant_id, version, question = key
        latest = self._latest.get((tenant_id, question))
        if (
            not exact
            and latest is not None
            and latest[0] < version
            and time.monotonic() - latest[1] < self._tolerance
        ):
            self.stats.recent += 1
            return latest[2]  # type: ignore[no-any-return]
        running = self._computing.get(key)
        if running is None:
            self.stats.misses += 1
            # An answer's age counts from when its computation began: the data it reads is
            # at least that recent, so a write is never hidden for longer than the tolerance.
            started = time.monotonic()
            running = asyncio.ensure_future(compute())
            self._computing[key] = running
            running.add_done_callback(lambda done: self._settle(key, started, done))
        else:
            self.stats.shared += 1
        return await asyncio.shield(running)  # type: ignore[no-any-return]

    def _settle(self, key: Hashable, started: float, done: asyncio.Future[Any]) -> None:
        """Keep a finished computation's answer; a failure is not kept (nor left unread)."""
        self._computing.pop(key, None)
        if done.cancelled() or done.exception() is not None:
            return
        self._answers[key] = done.result()
        self._answers.move_to_end(key)
        while len(self._answers) > self._entries:
            self._answers.popitem(last=False)
        tenant_id, version, question = key  # type: ignore[misc]
        newest = (tenant_id, question)
        if newest not in self._latest or self._latest[newest][0] <= version:
            self._latest[newest] = (version, started, done.result())
            self._latest.move_to_end(newest)
            while len(self._latest) > self._entries:
                self._latest.popitem(last=False)
