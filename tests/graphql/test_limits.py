"""GraphQL limits over HTTP: depth, aliases, repeats, tokens and cost are refused with
QUERY_TOO_COMPLEX before anything runs; documents at the limits run. Batching is off;
introspection, GraphiQL and field suggestions follow POWERPULSE_ENV."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from chat_exports import SAMPLE, error_codes, upload_ok

from powerpulse.graphql.limits import QUERY_TOO_COMPLEX
from powerpulse.services.analytics import AnalyticsService
from powerpulse.settings import Settings

TOO_COMPLEX = [QUERY_TOO_COMPLEX]


def nested_previous_periods(levels: int) -> str:
    """metrics { previousPeriod { ... { totalMessages } } }: `levels` + 1 deep."""
    return (
        "{ metrics { "
        + "previousPeriod { " * (levels - 1)
        + "totalMessages"
        + " }" * (levels - 1)
        + " } }"
    )


def aliased_metrics(count: int) -> str:
    return "{ metrics { " + " ".join(f"a{n}: totalMessages" for n in range(count)) + " } }"


@pytest.fixture
def metrics_calls(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Records every call of AnalyticsService.metrics: refused documents make none."""
    calls: list[Any] = []
    original = AnalyticsService.metrics

    async def recording(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(AnalyticsService, "metrics", recording)
    return calls


def assert_refused(body: dict[str, Any], *fragments: str) -> None:
    """Refused with QUERY_TOO_COMPLEX only, nothing run; the messages say why."""
    codes = error_codes(body)
    assert codes and set(codes) == {QUERY_TOO_COMPLEX}, body
    assert body.get("data") is None
    messages = " | ".join(error["message"] for error in body["errors"])
    for fragment in fragments:
        assert fragment in messages, messages


# -- depth -------------------------------------------------------------------------------


async def test_depth_at_the_limit_runs(client: Any, metrics_calls: list[Any]) -> None:
    body = await client.query(nested_previous_periods(10))

    assert "errors" not in body, body
    assert body["data"]["metrics"]["previousPeriod"] is None  # no dates: no earlier period
    assert len(metrics_calls) == 1


async def test_depth_over_the_limit_is_refused_before_running(
    client: Any, metrics_calls: list[Any]
) -> None:
    body = await client.query(nested_previous_periods(11))

    assert_refused(body, "11 levels deep", "at most 10")
    assert metrics_calls == []


async def test_depth_through_fragments_counts(client: Any) -> None:
    inner = "previousPeriod { " * 8 + "totalMessages" + " }" * 8
    query = (
        "query Deep { metrics { ...A } } "
        f"fragment A on Metrics {{ previousPeriod {{ ...B }} }} "
        f"fragment B on Metrics {{ previousPeriod {{ {inner} }} }}"
    )

    body = await client.query(query)

    assert_refused(body, "operation 'Deep'", "11 levels deep")


async def test_depth_limit_is_a_setting(app_client_factory: Any, settings_factory: Any) -> None:
    client = await app_client_factory(settings_factory(graphql_max_depth=2))

    assert "errors" not in await client.query(nested_previous_periods(2))
    assert_refused(await client.query(nested_previous_periods(3)), "at most 2")


# -- aliases -----------------------------------------------------------------------------


async def test_fifteen_aliases_run(client: Any) -> None:
    body = await client.query(aliased_metrics(15))

    assert "errors" not in body, body
    assert len(body["data"]["metrics"]) == 15


async def test_sixteen_aliases_are_refused(client: Any, metrics_calls: list[Any]) -> None:
    body = await client.query(aliased_metrics(16))

    assert_refused(body, "16 aliases", "at most 15")
    assert metrics_calls == []


async def test_fragments_cannot_hide_aliases(client: Any, metrics_calls: list[Any]) -> None:
    fragment = (
        "fragment Eight on Metrics { " + " ".join(f"f{n}: totalMessages" for n in range(8)) + " }"
    )
    once = "{ metrics { ...Eight } } " + fragment
    twice = "{ metrics { ...Eight ... on Metrics { ...Eight } } } " + fragment

    assert "errors" not in await client.query(once)
    assert_refused(await client.query(twice), "16 aliases")
    assert len(metrics_calls) == 1


async def test_a_fragment_bomb_is_refused_quickly(client: Any) -> None:
    # Each fragment spreads the next twice: 2^40 aliased fields once expanded.
    fragments = " ".join(
        f"fragment F{n} on Metrics {{ ...F{n + 1} ...F{n + 1} }}" for n in range(40)
    )
    query = "{ metrics { ...F0 } } " + fragments + " fragment F40 on Metrics { a: totalMessages }"

    started = time.monotonic()
    body = await client.query(query)

    assert time.monotonic() - started < 5
    assert_refused(body, "more than 10^12 aliases")


# -- repeats -----------------------------------------------------------------------------


async def test_a_field_repeated_hundreds_of_times_is_refused(client: Any) -> None:
    query = "{ " + " ".join("metrics { totalMessages }" for _ in range(400)) + " }"

    body = await client.query(query)

    assert_refused(body, "400 times", "at most 20")


async def test_a_field_repeated_up_to_the_limit_runs(client: Any) -> None:
    query = "{ " + " ".join("metrics { totalMessages }" for _ in range(20)) + " }"

    assert "errors" not in await client.query(query)


# -- tokens ------------------------------------------------------------------------------


def document_of_tokens(tokens: int) -> str:
    """{ metrics { ... } } with exactly `tokens` tokens (5 of them braces and metrics)."""
    names = ["totalMessages", "customerMessages", "agentMessages", "botMessages"]
    fields = [names[n % len(names)] for n in range(tokens - 5)]
    return "{ metrics { " + " ".join(fields) + " } }"


async def test_token_limit_is_a_setting_and_refuses_larger_documents(
    app_client_factory: Any, settings_factory: Any, metrics_calls: list[Any]
) -> None:
    client = await app_client_factory(settings_factory(graphql_max_tokens=50))

    at_limit = await client.query(document_of_tokens(50))
    over = await client.query(document_of_tokens(51))

    assert "errors" not in at_limit, at_limit
    assert_refused(over, "more than 50 tokens")
    assert len(metrics_calls) == 1


async def test_two_thousand_tokens_by_default(client: Any) -> None:
    padding = " ".join(["__typename"] * 2100)
    body = await client.query("{ metrics { totalMessages " + padding + " } }")

    assert_refused(body, "more than 2000 tokens")


# -- cost --------------------------------------------------------------------------------

PAGE_OF_PAGES = """
query($first: Int, $messages: Int) {
  conversations(first: $first) {
    edges { node { chatId messages(first: $messages) { edges { node { id } } } } }
  }
}
"""


@pytest.fixture
async def sample_client(client: Any) -> Any:
    await upload_ok(client, SAMPLE)
    return client


async def test_cost_within_the_limit_runs(sample_client: Any) -> None:
    # 1 + 100 × (edges 1 + node 1 + messages (1 + 100 × (edges 1 + node 1))) = 20,301
    body = await sample_client.query(PAGE_OF_PAGES, {"first": 100, "messages": 100})

    assert "errors" not in body, body
    assert len(body["data"]["conversations"]["edges"]) == 7


async def test_cost_multiplies_nested_page_sizes(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(graphql_max_cost=20_301))
    # One more object per conversation: pageInfo, inside the page of 100, costs 100.
    larger = PAGE_OF_PAGES.replace(
        "conversations(first: $first) {", "conversations(first: $first) { pageInfo { hasNextPage }"
    )
    sizes = {"first": 100, "messages": 100}

    at_limit = await client.query(PAGE_OF_PAGES, sizes)
    over = await client.query(larger, sizes)
    smaller_pages = await client.query(larger, {"first": 99, "messages": 100})

    assert "errors" not in at_limit, at_limit
    assert_refused(over, "20,401", "at most 20,301")
    assert "errors" not in smaller_pages, smaller_pages


async def test_cost_reads_variables_literals_and_defaults(
    app_client_factory: Any, settings_factory: Any
) -> None:
    # conversations default first 20, messages default first 50:
    # 1 + 20 × (1 + 1 + (1 + 50 × (1 + 1))) = 2,061
    client = await app_client_factory(settings_factory(graphql_max_cost=2_061))
    literal = PAGE_OF_PAGES.replace("query($first: Int, ", "query(").replace("$first", "21")

    assert "errors" not in await client.query(PAGE_OF_PAGES)
    assert "errors" not in await client.query(PAGE_OF_PAGES, {"first": None, "messages": None})
    assert_refused(await client.query(PAGE_OF_PAGES, {"first": 21}), "2,164")
    assert_refused(await client.query(literal), "2,164")
    with_default = PAGE_OF_PAGES.replace("$messages: Int", "$messages: Int = 60")
    assert_refused(await client.query(with_default), "2,461")


async def test_three_pages_of_pages_are_refused_before_running(
    client: Any, metrics_calls: list[Any]
) -> None:
    page = (
        "conversations(first: 100) { edges { node { messages(first: 100) "
        "{ edges { node { id content } } } } } }"
    )
    query = f"{{ a: {page} b: {page} c: {page} metrics {{ totalMessages }} }}"

    body = await client.query(query)

    assert_refused(body, "60,904", "at most 50,000")
    assert metrics_calls == []


async def test_sizes_above_the_page_limit_fail_as_bad_input_not_as_cost(client: Any) -> None:
    body = await client.query(PAGE_OF_PAGES, {"first": 1_000_000_000, "messages": 10})

    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert "100" in body["errors"][0]["message"]


async def test_lists_without_a_size_count_their_typical_size(
    app_client_factory: Any, settings_factory: Any
) -> None:
    # timeseries counts as 100 buckets: 1 + 100 × (metrics 1 + topTopics 1) = 201
    client = await app_client_factory(settings_factory(graphql_max_cost=200))
    topics = "{ timeseries { start metrics { topTopics(limit: 10) { topic } } } }"
    totals = "{ timeseries { start metrics { totalMessages } } }"  # 1 + 100 × 1

    assert_refused(await client.query(topics), "201")
    assert "errors" not in await client.query(totals)


# -- batching, introspection, GraphiQL, suggestions --------------------------------------


async def test_a_batch_of_operations_is_refused(client: Any, metrics_calls: list[Any]) -> None:
    operation = {"query": "{ metrics { totalMessages } }"}

    response = await client.http.post("/graphql", json=[operation, operation])

    assert response.status_code == 400
    assert error_codes(response.json()) == ["BAD_REQUEST"]
    assert "batching" in response.json()["errors"][0]["message"].lower()
    assert metrics_calls == []


INTROSPECTION = "{ __schema { queryType { name } } }"


def in_env(settings_factory: Any, env: str, **overrides: Any) -> Settings:
    """settings_factory's settings (it fixes env="test") in another environment."""
    base = settings_factory()
    return Settings(database_url=base.database_url, env=env, auth_disabled=True, **overrides)


async def introspects(client: Any) -> bool:
    body = await client.query(INTROSPECTION)
    if "errors" in body:
        assert set(error_codes(body)) == {"GRAPHQL_VALIDATION_FAILED"}
        assert "introspection has been disabled" in body["errors"][0]["message"]
        assert body["data"] is None
        return False
    return body["data"]["__schema"]["queryType"]["name"] == "Query"


async def serves_graphiql(client: Any) -> bool:
    response = await client.http.get("/graphql", headers={"Accept": "text/html"})
    if response.status_code == 404:
        return False
    assert response.status_code == 200
    assert "graphiql" in response.text.lower()
    return True


@pytest.mark.parametrize("env", ["development", "test"])
async def test_introspection_and_graphiql_are_on_outside_production(
    app_client_factory: Any, settings_factory: Any, env: str
) -> None:
    client = await app_client_factory(in_env(settings_factory, env))

    assert await introspects(client)
    assert await serves_graphiql(client)


async def test_introspection_and_graphiql_are_off_in_production(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(in_env(settings_factory, "production"))

    assert not await introspects(client)
    assert not await serves_graphiql(client)
    # The API itself works; __typename is not introspection.
    assert (await client.data("{ metrics { __typename totalMessages } }"))["metrics"] == {
        "__typename": "Metrics",
        "totalMessages": 0,
    }


async def test_production_can_turn_introspection_and_graphiql_on(
    app_client_factory: Any, settings_factory: Any
) -> None:
    both = await app_client_factory(
        in_env(settings_factory, "production", introspection=True, graphiql=True)
    )
    only_graphiql = await app_client_factory(in_env(settings_factory, "production", graphiql=True))

    assert await introspects(both)
    assert await serves_graphiql(both)
    assert not await introspects(only_graphiql)
    assert await serves_graphiql(only_graphiql)


async def test_introspection_can_be_turned_off_in_development(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(in_env(settings_factory, "development", introspection=False))

    assert not await introspects(client)


async def test_field_suggestions_only_outside_production(
    app_client_factory: Any, settings_factory: Any
) -> None:
    development = await app_client_factory(in_env(settings_factory, "development"))
    production = await app_client_factory(in_env(settings_factory, "production"))
    typo = "{ metrics { totalMesages } }"

    suggested = (await development.query(typo))["errors"][0]["message"]
    plain = await production.query(typo)

    assert "Did you mean" in suggested and "totalMessages" in suggested
    assert error_codes(plain) == ["GRAPHQL_VALIDATION_FAILED"]
    message = plain["errors"][0]["message"]
    assert "totalMesages" in message
    assert "Did you mean" not in message and "totalMessages" not in message


async def test_introspection_of_graphiql_fits_the_limits(client: Any) -> None:
    from graphql import get_introspection_query

    body = await client.query(get_introspection_query(descriptions=True))

    assert "errors" not in body, body["errors"]
    assert body["data"]["__schema"]["queryType"]["name"] == "Query"


async def test_limit_errors_over_get_are_coded_too(client: Any) -> None:
    response = await client.http.get("/graphql", params={"query": nested_previous_periods(11)})

    assert response.status_code == 200
    assert error_codes(response.json()) == TOO_COMPLEX
    assert json.loads(response.text)["data"] is None
