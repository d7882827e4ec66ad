"""Parsed and validated documents, reused while the same query text comes again.

Dashboards send the same few query texts over and over, with other variables. Parsing one
and running graphql-core's validation rules over it cost more CPU than answering it from
kept analytics (a third of the API's time under load, BENCHMARKS.md). A query text seen
before reuses its parsed document and, when it was valid, skips validation: a document's
validity depends on the schema alone, never on variables. The limits on depth, aliases and
cost (graphql/limits.py) depend on variables and still measure every request, before this
cache is consulted. Invalid documents are validated every time (their errors are built
anew for each request). Both caches are bounded, so unique query texts cannot grow memory.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from graphql import DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document


class DocumentCache:
    """Parsed documents by (query text, parse options), and the documents found valid."""

    def __init__(self, entries: int) -> None:
        self._entries = entries
        self._documents: OrderedDict[tuple[str, tuple[Any, ...]], DocumentNode] = OrderedDict()
        self._valid: OrderedDict[tuple[int, tuple[Any, ...]], DocumentNode] = OrderedDict()
        self.parsed = 0
        self.validated = 0

    def document(self, query: str, options: dict[str, Any]) -> DocumentNode:
        key = (query, tuple(sorted(options.items())))
        found = self._documents.get(key)
        if found is None:
            found = parse(query, **options)  # a syntax error propagates, and is not kept
            self.parsed += 1
            self._keep(self._documents, key, found)
        else:
            self._documents.move_to_end(key)
        return found

    def errors(self, schema: Any, document: DocumentNode, rules: tuple[Any, ...]) -> list[Any]:
        key = (id(document), rules)
        if self._valid.get(key) is document:
            self._valid.move_to_end(key)
            return []
        errors: list[Any] = validate_document(schema, document, rules)
        self.validated += 1
        if not errors:
            # Keyed by the document's identity, which the kept document itself holds on to.
            self._keep(self._valid, key, document)
        return errors

    def _keep(self, store: OrderedDict[Any, DocumentNode], key: Any, value: DocumentNode) -> None:
        store[key] = value
        while len(store) > self._entries:
            store.popitem(last=False)


class DocumentCacheExtension(SchemaExtension):
    """Uses one process-wide DocumentCache; list it after the document limits."""

    def __init__(self, cache: DocumentCache) -> None:
        self.cache = cache

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.graphql_document is None and context.query:
            # A document that does not parse is left to strawberry, which parses it again
            # and reports its syntax error (or its token count) as it always does.
            with contextlib.suppress(GraphQLError):
                context.graphql_document = self.cache.document(context.query, context.parse_options)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if context.pre_execution_errors is None and document is not None:
            rules = tuple(context.validation_rules)
            context.pre_execution_errors = self.cache.errors(
                context.schema._schema, document, rules
            )
        yield


def document_cache_extension(cache: DocumentCache) -> Callable[[], SchemaExtension]:
    """A factory: strawberry builds a fresh extension for every operation."""
    return lambda: DocumentCacheExtension(cache)
