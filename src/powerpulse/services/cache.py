"""Answers of analytics queries, kept until the tenant's data changes.

A dashboard asks the same questions again and again (every panel, every refresh, every
viewer) while the data changes only when an upload or an analysis batch commits. Each of
those transactions raises the tenant's `data_version` as its last statement, and every
answer is kept under the version it was computed at: a changed tenant simply finds no
answer under its new version, in this process or in any other reading the same database.
Old versions age out, least recently used first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class CacheStats:
    hits: int = 0
    misses: int = 0


class AnswerCache:
    """A bounded map from (tenant, data version, question) to the answer.

    Answers are shared between requests: callers must treat them as read-only.
    """

    def __init__(self, entries: int) -> None:
        if entries < 0:
            raise ValueError("entries must be zero (off) or more")
        self._entries = entries
        self._answers: OrderedDict[Hashable, Any] = OrderedDict()
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
    ) -> T:
        """The answer kept under `key` (tenant, version, question), else computed and kept."""
        if not self.enabled:
            return await compute()
        if key in self._answers:
            self._answers.move_to_end(key)
            self.stats.hits += 1
            return self._answers[key]  # type: ignore[no-any-return]
        self.stats.misses += 1
        value = await compute()
        self._answers[key] = value
        self._answers.move_to_end(key)
        while len(self._answers) > self._entries:
            self._answers.popitem(last=False)
        return value
