"""Parsed and validated documents are reused for the same query text, and only what may be
reused is: limits that depend on variables, invalid documents and syntax errors are checked
on every request."""

from __future__ import annotations

from typing import Any

from chat_exports import error_codes

from powerpulse.graphql.documents import DocumentCache
from powerpulse.graphql.limits import QUERY_TOO_COMPLEX
from powerpulse.graphql.schema import build_schema
from powerpulse.settings import Settings

DEFINITIONS = "{ metricDefinitions { name unit } }"
PAGE_OF_PAGES = """
query($first: Int, $messages: Int) {
  conversations(first: $first) {
    edges { node { chatId messages(first: $messages) { edges { node { id } } } } }
  }
}
"""


async def test_a_query_text_is_parsed_and_validated_once() -> None:
    schema = build_schema(Settings.model_construct())
    documents = schema.documents
    for _ in range(3):
        result = await schema.execute(DEFINITIONS)
        assert result.errors is None
        assert result.data and result.data["metricDefinitions"]
    assert (documents.parsed, documents.validated) == (1, 1)
    # Another text is another document.
    assert (await schema.execute("{ metricDefinitions { name } }")).errors is None
    assert (documents.parsed, documents.validated) == (2, 2)


async def test_an_invalid_document_is_validated_and_refused_every_time() -> None:
    schema = build_schema(Settings.model_construct())
    for attempt in range(1, 4):
        result = await schema.execute("{ metricDefinitions { noSuchField } }")
        assert result.errors and "noSuchField" in result.errors[0].message
        assert schema.documents.validated == attempt
    assert schema.documents.parsed == 1


async def test_a_syntax_error_is_reported_as_always() -> None:
    schema = build_schema(Settings.model_construct())
    for _ in range(2):
        result = await schema.execute("{ metricDefinitions { name ")
        assert result.errors and "Syntax Error" in result.errors[0].message
    assert schema.documents.parsed == 0


async def test_cost_is_measured_for_each_request_of_a_kept_document(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(graphql_max_cost=2_000))
    small = await client.query(PAGE_OF_PAGES, {"first": 5, "messages": 5})
    assert "errors" not in small, small
    large = await client.query(PAGE_OF_PAGES, {"first": 100, "messages": 100})
    assert error_codes(large) == [QUERY_TOO_COMPLEX]
    again = await client.query(PAGE_OF_PAGES, {"first": 5, "messages": 5})
    assert again == small


def test_the_cache_keeps_a_bounded_number_of_documents() -> None:
    cache = DocumentCache(2)
    first = cache.document("{ a }", {})
    cache.document("{ b }", {})
    assert cache.document("{ a }", {}) is first  # kept, and now the most recent
    cache.document("{ c }", {})  # { b } goes
    assert cache.parsed == 3
    assert cache.document("{ a }", {}) is first
    cache.document("{ b }", {})
    assert cache.parsed == 4
    # The parser's options are part of the key: a token limit is never bypassed.
    assert cache.document("{ a }", {"max_tokens": 100}) is not first
