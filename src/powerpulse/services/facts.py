"""A tenant's conversations as columns in memory: what every aggregate is computed from.

An aggregate reads a whole selection: percentiles sort every selected reply, distinct
agents and per-agent medians group them. In SQL that costs a scan and a sort of every
selected row per question (over a second at 100,000 conversations on SQLite). Here each
tenant's facts are numpy arrays, one per measurement, and a question is a few vectorised
passes over them (services/aggregates.py).

The arrays follow the database by version. Every write stamps the conversation and
analysis rows it changes with the tenant data_version it commits
(TenantRepository.begin_change), so a request that finds a newer version than the one
held reads only the rows changed since, in one consistent snapshot. Arrays are never
changed in place (they are read-only): a refresh builds new ones, and a computation still
reading the old ones is unaffected. A refresh shares with the version before it every
array whose values it would not change, and the sorted orders computed from them: an
analysis batch changes the judgements of a few hundred conversations, not their
measurements, reply events or agents, and re-sorting every reply event after each batch
cost more than the refresh itself (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property, partial
from operator import itemgetter
from typing import Any

import numpy as np

from ..db import Database
from ..models import AnalysisStatus
from ..repositories.facts import (
    CONVERSATIONS_PER_BATCH,
    SENTIMENT_LABELS,
    STATUS_CODES,
    FactRepository,
)
from ..repositories.selection import CsiParameters
from ..repositories.tenants import TenantRepository

logger = logging.getLogger("powerpulse.facts")

NULL = -1
DONE = STATUS_CODES[AnalysisStatus.DONE.value]
# A refresh that would read more than this share of the conversations reads them all.
FULL_RELOAD_SHARE = 0.25
# A refresh of at most this many conversations reads them as a quick read does
# (Database.read): key lookups of a few rows each, such as after an analysis batch. About
# 17 ms for 200 of 100,000 conversations, 40 ms for 1,000 (BENCHMARKS.md): more would hold
# up the process's other requests for longer than the hand-offs to the connection's thread
# cost.
QUICK_REFRESH = 250

# Per-conversation columns in FactRepository.conversations order: name -> dtype. Analysis
# values are NULL (NaN for the CSI, 0 for tokens and cost) unless the analysis is DONE:
# every aggregate and filter counts finished judgements only.
CONVERSATION_COLUMNS: dict[str, Any] = {
    "ids": np.int64,
    "first_us": np.int64,
    "messages": np.int32,
    "customer_messages": np.int32,
    "agent_messages": np.int32,
    "bot_messages": np.int32,
    "contacts": np.int32,
    "first_response": np.float64,
    "first_response_agent": np.int32,
    "status": np.int8,
    "satisfied": np.int8,
    "fcr": np.int8,
    "resolved": np.int8,
    "satisfaction": np.int8,
    "sentiment": np.int8,
    "effort": np.int8,
    "label": np.int8,
    "language": np.int32,
    "input_tokens": np.int64,
    "output_tokens": np.int64,
    "cost": np.float64,
    "csi": np.float64,
    "csi_effectiveness": np.float64,
    "csi_effort": np.float64,
    "csi_efficiency": np.float64,
    "csi_empathy": np.float64,
}
# Rows that belong to a conversation, by position: name -> dtype, first the position.
REPLY_COLUMNS: dict[str, Any] = {
    "reply_conversation": np.int32,
    "reply_agent": np.int32,
    "reply_minutes": np.float64,
}
AGENT_COLUMNS: dict[str, Any] = {
    "agent_conversation": np.int32,
    "agent_code": np.int32,
    "agent_written": np.int32,  # messages the agent wrote in the conversation
}
TOPIC_COLUMNS: dict[str, Any] = {"topic_conversation": np.int32, "topic_code": np.int32}
CHILD_TABLES = (REPLY_COLUMNS, AGENT_COLUMNS, TOPIC_COLUMNS)
# Orders computed from the facts on first use: name -> the column each is computed from.
# A later version that shares that column shares the order too.
DERIVED_FROM = {
    "answered_by_first_response": "first_response",
    "replies_by_minutes": "reply_minutes",
    "done": "status",
}


class Vocabulary:
    """Names (agents, topics, languages) as small integer codes; codes never change."""

    def __init__(self, names: Iterable[str] = ()) -> None:
        # A new name takes the next code as it is looked up.
        self._codes: defaultdict[str, int] = defaultdict(itertools.count().__next__)
        self.names: list[str] = []
        self.encode(names)

    def encode(self, names: Iterable[str | None]) -> np.ndarray:
        """Codes of names (NULL for None), new names given new codes."""
        codes = self._codes
        found = np.fromiter(
            (NULL if name is None else codes[name] for name in names), dtype=np.int32
        )
        if len(codes) > len(self.names):
            self.names.extend(itertools.islice(codes, len(self.names), None))
        return found

    def find(self, name: str) -> int:
        """The code of a known name, else NULL (which no stored value has)."""
        return self._codes.get(name, NULL)

    def codes(self, names: Iterable[str]) -> np.ndarray:
        """Codes of the known names among `names`."""
        return np.array(
            [self._codes[name] for name in names if name in self._codes], dtype=np.int32
        )

    def __len__(self) -> int:
        return len(self.names)


@dataclass(slots=True)
class Vocabularies:
    """A tenant's vocabularies, shared by every version of its facts."""

    agents: Vocabulary = field(default_factory=Vocabulary)
    topics: Vocabulary = field(default_factory=Vocabulary)
    languages: Vocabulary = field(default_factory=Vocabulary)
    labels: Vocabulary = field(default_factory=lambda: Vocabulary(SENTIMENT_LABELS))


def _column(rows: Sequence[Sequence[Any]], index: int, dtype: Any) -> np.ndarray:
    values = map(itemgetter(index), rows)
    if np.issubdtype(dtype, np.floating):  # NULL reads NaN
        return np.array(list(values), dtype=dtype)
    return np.fromiter(values, dtype=dtype, count=len(rows))


def _conversation_columns(
    rows: Sequence[Sequence[Any]], vocabularies: Vocabularies
) -> dict[str, np.ndarray]:
    """Columns from FactRepository.conversations rows (the CONVERSATION_COLUMNS order)."""
    coded = {
        "first_response_agent": vocabularies.agents,
        "language": vocabularies.languages,
    }
    columns: dict[str, np.ndarray] = {}
    for index, (name, dtype) in enumerate(CONVERSATION_COLUMNS.items()):
        if name in coded:
            columns[name] = coded[name].encode(map(itemgetter(index), rows))
        else:
            columns[name] = _column(rows, index, dtype)
    return columns


def _child_columns(
    rows: Sequence[Sequence[Any]],
    columns: dict[str, Any],
    positions_of: Any,
    vocabulary: Vocabulary,
) -> dict[str, np.ndarray]:
    """(conversation id, name, value...) rows as columns, ids turned into positions."""
    names = list(columns)
    owners = positions_of(_column(rows, 0, np.int64))
    arrays = {names[0]: owners.astype(np.int32)}
    arrays[names[1]] = vocabulary.encode(map(itemgetter(1), rows))
    for index, name in enumerate(names[2:], start=2):
        arrays[name] = _column(rows, index, columns[name])
    # A child whose conversation is not in the facts (written after their snapshot) waits
    # for the refresh that reads its conversation.
    known = owners >= 0
    if not known.all():
        arrays = {name: values[known] for name, values in arrays.items()}
    return arrays


def _same_values(old: np.ndarray, new: np.ndarray) -> bool:
    """Equal lengths and values, NaN equal to NaN."""
    return np.array_equal(old, new, equal_nan=old.dtype.kind == "f")


def _same_rows(old: dict[str, np.ndarray], new: dict[str, np.ndarray]) -> bool:
    """The same rows, in any order (a child table's rows have no order)."""
    names = list(old)
    if len(old[names[0]]) != len(new[names[0]]):
        return False
    old_order = np.lexsort([old[name] for name in reversed(names)])
    new_order = np.lexsort([new[name] for name in reversed(names)])
    return all(_same_values(old[name][old_order], new[name][new_order]) for name in names)


class ConversationFacts:
    """One version of a tenant's facts. Read-only: refreshes build a new object.

    `previous`: the version these facts were built from. Arrays they share with it (the
    same objects) share its id index and sorted orders too, instead of computing them again.
    """

    def __init__(
        self,
        version: int,
        vocabularies: Vocabularies,
        columns: dict[str, np.ndarray],
        previous: ConversationFacts | None = None,
    ) -> None:
        self.version = version
        self.vocabularies = vocabularies
        self._columns = columns
        for values in columns.values():
            values.flags.writeable = False  # shared by later versions
        ids = columns["ids"]
        self._order: np.ndarray
        self._sorted_ids: np.ndarray
        if previous is not None and previous._columns["ids"] is ids:
            self._order, self._sorted_ids = previous._order, previous._sorted_ids
        else:
            self._order = np.argsort(ids, kind="stable")
            self._sorted_ids = ids[self._order]
        if previous is not None:
            for name, source in DERIVED_FROM.items():
                if name in previous.__dict__ and previous._columns[source] is columns[source]:
                    self.__dict__[name] = previous.__dict__[name]

    @cached_property
    def done(self) -> np.ndarray:
        """Which conversations have a finished analysis."""
        return self.status == DONE

    @cached_property
    def answered_by_first_response(self) -> np.ndarray:
        """Positions of the answered conversations, quickest first response first."""
        answered = np.flatnonzero(~np.isnan(self.first_response))
        return answered[np.argsort(self.first_response[answered], kind="stable")]

    @cached_property
    def replies_by_minutes(self) -> np.ndarray:
        """Reply event indexes, quickest reply first."""
        return np.argsort(self.reply_minutes, kind="stable")

    def __getattr__(self, name: str) -> np.ndarray:
        try:
            return self._columns[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def size(self) -> int:
        return len(self._columns["ids"])

    @property
    def nbytes(self) -> int:
        """Memory of the columns, the id index and the sorted orders computed so far."""
        derived = (self.__dict__.get(name) for name in DERIVED_FROM)
        return (
            sum(values.nbytes for values in self._columns.values())
            + self._order.nbytes
            + self._sorted_ids.nbytes
            + sum(values.nbytes for values in derived if values is not None)
        )

    def positions(self, ids: np.ndarray) -> np.ndarray:
        """Positions of conversation ids in the columns; NULL for ids not held."""
        if not self.size:
            return np.full(len(ids), NULL, dtype=np.int64)
        index = np.searchsorted(self._sorted_ids, ids)
        index = np.minimum(index, self.size - 1)
        found = self._sorted_ids[index] == ids
        return np.where(found, self._order[index], NULL)

    def mask_of(self, ids: Sequence[int]) -> np.ndarray:
        """A selection mask of the held conversations among `ids`."""
        mask = np.zeros(self.size, dtype=bool)
        positions = self.positions(np.array(ids, dtype=np.int64))
        mask[positions[positions >= 0]] = True
        return mask

    def at_version(self, version: int) -> ConversationFacts:
        """The same facts, known to be current at a later version (nothing changed)."""
        facts = object.__new__(ConversationFacts)
        facts.__dict__.update(self.__dict__)
        facts.version = version
        return facts

    @classmethod
    def loading(
        cls, version: int, vocabularies: Vocabularies, fresh: dict[str, np.ndarray]
    ) -> _Assembly:
        """Facts of every conversation, from their columns; the children come next."""
        facts = cls(version, vocabularies, fresh)
        return _Assembly(
            positions_of=facts.positions,
            finish=lambda children: cls(version, vocabularies, {**fresh, **children}),
        )

    def merging(self, version: int, fresh: dict[str, np.ndarray]) -> _Assembly:
        """These facts with the `fresh` conversations (and all their children) replaced.

        A column or child table whose values the fresh rows would not change is shared
        with these facts rather than copied (no conversation added: positions stay).
        """
        positions = self.positions(fresh["ids"])
        known = positions >= 0
        added = int((~known).sum())
        columns: dict[str, np.ndarray] = {}
        for name, values in self._columns.items():
            if name not in fresh:
                continue
            if not added and _same_values(values[positions], fresh[name]):
                columns[name] = values
                continue
            updated = np.concatenate([values, fresh[name][~known]])
            updated[positions[known]] = fresh[name][known]
            columns[name] = updated
        size = self.size + added
        new_positions = positions.copy()
        new_positions[~known] = np.arange(self.size, size)
        changed = np.zeros(size, dtype=bool)
        changed[new_positions] = True
        order = np.argsort(fresh["ids"], kind="stable")
        sorted_ids = fresh["ids"][order]

        def positions_of(ids: np.ndarray) -> np.ndarray:
            if not len(sorted_ids):
                return np.full(len(ids), NULL, dtype=np.int64)
            index = np.minimum(np.searchsorted(sorted_ids, ids), len(sorted_ids) - 1)
            found = sorted_ids[index] == ids
            return np.where(found, new_positions[order[index]], NULL)

        def finish(children: dict[str, np.ndarray]) -> ConversationFacts:
            merged = dict(columns)
            for table in CHILD_TABLES:
                owner = next(iter(table))
                kept = ~changed[self._columns[owner]]
                if not added and _same_rows(
                    {name: self._columns[name][~kept] for name in table},
                    {name: children[name] for name in table},
                ):
                    merged.update((name, self._columns[name]) for name in table)
                    continue
                for name in table:
                    merged[name] = np.concatenate([self._columns[name][kept], children[name]])
            return ConversationFacts(version, self.vocabularies, merged, previous=self)

        return _Assembly(positions_of=positions_of, finish=finish)


@dataclass(frozen=True, slots=True)
class _Assembly:
    """New facts being built: conversations are placed, their children are read next.

    `positions_of` maps conversation ids to positions in the new facts (NULL for ids not
    in them); `finish` takes the children's columns and returns the facts.
    """

    positions_of: Callable[[np.ndarray], np.ndarray]
    finish: Callable[[dict[str, np.ndarray]], ConversationFacts]


async def _columns_in_batches(
    batches: AsyncIterator[Sequence[Sequence[Any]]],
    convert: Callable[[Sequence[Sequence[Any]]], dict[str, np.ndarray]],
) -> dict[str, np.ndarray]:
    """Rows read a batch at a time, each batch turned into columns before the next is read,
    then the columns joined: a read never holds more than one batch of rows."""
    parts = [convert(rows) async for rows in batches]
    if not parts:
        return convert([])
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}


@dataclass(slots=True)
class FactStats:
    loads: int = 0  # every conversation read
    refreshes: int = 0  # only the changed ones read
    conversations_read: int = 0


class FactStore:
    """Each tenant's current facts, refreshed on demand, least recently used evicted first."""

    def __init__(
        self,
        database: Database,
        csi: CsiParameters,
        *,
        memory_bytes: int,
        full_reload_share: float = FULL_RELOAD_SHARE,
        quick_refresh: int = QUICK_REFRESH,
        batch: int = CONVERSATIONS_PER_BATCH,
    ) -> None:
        self._database = database
        self._csi = csi
        self._memory_bytes = memory_bytes
        self._full_reload_share = full_reload_share
        self._quick_refresh = quick_refresh
        self._batch = batch  # conversations read per statement
        self._held: OrderedDict[int, ConversationFacts] = OrderedDict()
        self._locks: dict[int, asyncio.Lock] = {}
        self._vocabularies: dict[int, Vocabularies] = {}
        self.stats = FactStats()

    async def current(self, tenant_id: int, version: int) -> ConversationFacts:
        """The tenant's facts at `version` or later (the caller read `version` just now)."""
        facts = self._held.get(tenant_id)
        if facts is None or facts.version < version:
            lock = self._locks.setdefault(tenant_id, asyncio.Lock())
            async with lock:
                facts = self._held.get(tenant_id)
                if facts is None or facts.version < version:
                    facts = await self._read(tenant_id, facts)
                    self._held[tenant_id] = facts
                    self._evict(keep=tenant_id)
        self._held.move_to_end(tenant_id)
        return facts

    async def _read(self, tenant_id: int, held: ConversationFacts | None) -> ConversationFacts:
        vocabularies = self._vocabularies.setdefault(tenant_id, Vocabularies())
        async with self._database.read(consistent=True) as connection:
            facts = FactRepository(connection, csi=self._csi, batch=self._batch)
            await facts.begin_snapshot()
            version = await TenantRepository(connection).data_version(tenant_id)
            changed: list[int] | None = None
            if held is not None:
                changed = await facts.changed_since(tenant_id, held.version)
                if not changed:
                    return held.at_version(version)
                if len(changed) > self._full_reload_share * held.size:
                    changed = None
                elif len(changed) <= self._quick_refresh:
                    await self._database.in_place(connection)
            ids = None if changed is None else sorted(changed)
            fresh = await _columns_in_batches(
                facts.conversations(tenant_id, ids),
                lambda rows: _conversation_columns(rows, vocabularies),
            )
            if held is None or ids is None:
                self.stats.loads += 1
                assembly = ConversationFacts.loading(version, vocabularies, fresh)
            else:
                self.stats.refreshes += 1
                assembly = held.merging(version, fresh)
            # Children of every conversation read, or of the changed ones.
            owners = fresh["ids"].tolist() if ids is None else ids
            children: dict[str, np.ndarray] = {}
            for read, columns, vocabulary in (
                (facts.reply_events, REPLY_COLUMNS, vocabularies.agents),
                (facts.agents, AGENT_COLUMNS, vocabularies.agents),
                (facts.topics, TOPIC_COLUMNS, vocabularies.topics),
            ):
                children |= await _columns_in_batches(
                    read(tenant_id, owners, every=ids is None),
                    partial(
                        _child_columns,
                        columns=columns,
                        positions_of=assembly.positions_of,
                        vocabulary=vocabulary,
                    ),
                )
        self.stats.conversations_read += len(fresh["ids"])
        return assembly.finish(children)

    async def preload(self, tenant_ids: Sequence[int]) -> None:
        """Read tenants' facts before anyone asks, while the memory bound allows.

        Runs in the background after a process starts: the first dashboards then find the
        facts ready (or wait for the read already under way) instead of each starting one.
        """
        for tenant_id in tenant_ids:
            if self.held_bytes() >= self._memory_bytes:
                break
            async with self._database.read() as connection:
                version = await TenantRepository(connection).data_version(tenant_id)
            started = time.perf_counter()
            facts = await self.current(tenant_id, version)
            logger.info(
                "analytics facts of tenant %d read: %d conversations, %.1f MiB, %.2f s",
                tenant_id,
                facts.size,
                facts.nbytes / 2**20,
                time.perf_counter() - started,
            )

    def held_bytes(self) -> int:
        return sum(facts.nbytes for facts in self._held.values())

    def _evict(self, *, keep: int) -> None:
        total = self.held_bytes()
        for tenant_id in list(self._held):
            if total <= self._memory_bytes:
                break
            if tenant_id == keep:
                continue
            total -= self._held.pop(tenant_id).nbytes
            self._vocabularies.pop(tenant_id, None)
            logger.info("analytics facts of tenant %d evicted (memory limit)", tenant_id)

    def held(self, tenant_id: int) -> ConversationFacts | None:
        return self._held.get(tenant_id)
