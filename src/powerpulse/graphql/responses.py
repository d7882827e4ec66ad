"""Whole responses to conversation reads, kept while the tenant's data is unchanged.

Dashboards and their viewers ask for the same page of conversations, or the same
conversation, again and again. Such a response costs a few statements and, above all,
graphql-core completing every field of every node (a page of 20 conversations has about
280): about 6 ms of CPU, against 1–2 ms for an analytics answer kept in services/cache.py.

Every write that changes what these reads show (an upload, a stored analysis batch) raises
the tenant's data version in its own transaction, so a response is kept under the version
read before it was computed, with the timezone its dates were read in, the query text,
the operation and the variables. A request that finds its key answered gets the kept
response and executes nothing; any write makes every key of the tenant new. A response
computed while a write commits may hold that write's rows under the version before it:
a request that later reads that older version started before the write committed, so the
response is as fresh as what it would have read itself.

Only queries whose every top-level field is `conversations` or `conversation` are kept:
analytics answers may trail a write by the staleness tolerance, and kept under a version
they would outlive it; jobs change without a data version. Responses with errors are
never kept. Responses are held as JSON text, so requests never share objects and the
memory bound (POWERPULSE_RESPONSE_CACHE_MIB per process) counts the characters actually
held, keys included; least recently used ones go first.

After a write every key is new, and viewers of one page all miss it at once. The first
request computes the response; the others asking for the same key meanwhile wait for it
and get a copy of its data (or, if it ended in an error, compute their own).
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass
from typing import Any

from graphql import ExecutionResult, FieldNode, OperationType, get_operation_ast
from strawberry.extensions import SchemaExtension

# Top-level fields whose whole response depends on the tenant's versioned data alone.
KEPT_FIELDS = frozenset({"conversations", "conversation", "__typename"})
# A single response larger than this share of the memory bound is not kept.
LARGEST_SHARE = 8


@dataclass(slots=True)
class ResponseStats:
    hits: int = 0
    misses: int = 0
    shared: int = 0  # waited for the same response another request was computing
    kept: int = 0
    too_large: int = 0


class ResponseCache:
    """A bounded map from a request's key to its response data, as JSON text."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:
            raise ValueError("max_bytes must be zero (off) or more")
        self.max_bytes = max_bytes
        self.used_bytes = 0
        self._responses: OrderedDict[Hashable, str] = OrderedDict()
        # Keys being computed by a request -> its response as JSON text (None: an error).
        self._computing: dict[Hashable, asyncio.Future[str | None]] = {}
        self.stats = ResponseStats()

    @property
    def enabled(self) -> bool:
        return self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._responses)

    def get(self, key: Hashable) -> Any | None:
        """A fresh copy of the data kept under `key`, else None (and a miss counted)."""
        found = self._responses.get(key)
        if found is None:
            self.stats.misses += 1
            return None
        self._responses.move_to_end(key)
        self.stats.hits += 1
        return json.loads(found)

    async def claim(self, key: Hashable) -> tuple[Any | None, bool]:
        """(data, computes) for a request about to execute under `key`.

        The data is a fresh copy: kept, or computed meanwhile by the request that claimed
        the key first. Otherwise it is None and, when `computes`, the caller now computes
        the key for everyone and must `settle` it, whatever happens; when not, the request
        it waited for ended without data, and it computes its own.
        """
        found = self.get(key)
        if found is not None:
            return found, False
        running = self._computing.get(key)
        if running is None:
            self._computing[key] = asyncio.get_running_loop().create_future()
            return None, True
        self.stats.shared += 1
        # Shielded: a waiter that goes away must not cancel the others' wait.
        text = await asyncio.shield(running)
        return (None if text is None else json.loads(text)), False

    def settle(self, key: Hashable, data: Any | None) -> None:
        """The claimed `key` computed: its data is kept and given to the requests waiting
        (None: it failed, and they compute their own)."""
        text = None if data is None else self.put(key, data)
        running = self._computing.pop(key, None)
        if running is not None and not running.done():
            running.set_result(text)

    def put(self, key: Hashable, data: Any) -> str:
        """Keep `data` under `key` if it fits its share; its JSON text."""
        text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
        size = _size(key, text)
        if size > self.max_bytes // LARGEST_SHARE:
            self.stats.too_large += 1
            return text
        previous = self._responses.pop(key, None)
        if previous is not None:
            self.used_bytes -= _size(key, previous)
        self._responses[key] = text
        self.used_bytes += size
        self.stats.kept += 1
        while self.used_bytes > self.max_bytes:
            old_key, old_text = self._responses.popitem(last=False)
            self.used_bytes -= _size(old_key, old_text)
        return text


def _size(key: Hashable, text: str) -> int:
    # The text, plus the query text and variables the key holds (the request's own strings,
    # kept alive by the key), in characters; close enough for a memory bound.
    held = len(text)
    if isinstance(key, tuple):
        held += sum(len(part) for part in key if isinstance(part, str))
    return held


def keeps(document: Any, operation_name: str | None) -> bool:
    """Whether the operation is a query of kept fields only (fragments are not followed)."""
    operation = get_operation_ast(document, operation_name)
    if operation is None or operation.operation is not OperationType.QUERY:
        return False
    return all(
        isinstance(selection, FieldNode) and selection.name.value in KEPT_FIELDS
        for selection in operation.selection_set.selections
    )


class ResponseCacheExtension(SchemaExtension):
    """Answers a kept conversation read from the request context's ResponseCache."""

    async def on_execute(self) -> AsyncIterator[None]:
        key = await self._key()
        if key is None:
            yield
            return
        cache: ResponseCache = self.execution_context.context.responses
        data, computes = await cache.claim(key)
        if data is not None:
            # strawberry runs no resolver when the result is already set.
            self.execution_context.result = ExecutionResult(data=data)
            yield
            return
        if not computes:
            yield
            return
        kept = None
        try:
            yield
            result = self.execution_context.result
            if isinstance(result, ExecutionResult) and not result.errors and result.data:
                kept = result.data
        finally:
            cache.settle(key, kept)

    async def _key(self) -> Hashable | None:
        execution = self.execution_context
        context = execution.context
        cache = getattr(context, "responses", None)
        if cache is None or not cache.enabled or not context.tenant_id:
            return None
        if execution.graphql_document is None or not execution.query:
            return None
        if not keeps(execution.graphql_document, execution.operation_name):
            return None
        try:
            variables = json.dumps(execution.variables, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):  # a file or another value JSON cannot hold
            return None
        version, zone = await context.services.conversations.version_and_zone(context.tenant_id)
        return (
            context.tenant_id,
            version,
            zone,
            execution.query,
            execution.operation_name or "",
            variables,
        )
