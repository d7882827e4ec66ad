"""Generated GraphQL documents against the app over HTTP: never a 5xx, never leaked internals.

hypothesis-graphql builds documents from the schema: valid queries (POSITIVE), queries with
one schema violation (NEGATIVE) and mutations whose `file` is not a file (so they cannot
change anything). Some of their literal arguments are moved into variables and some variable
values then replaced by arbitrary JSON; a few requests go over GET, and a few carry text
that is not GraphQL or a JSON body that is not a request object.

The client's response hook (tests/graphql/conftest.py) fails any response that leaks a
traceback, SQL or a driver name; the test also checks the status and the response's shape
and that no error is a masked INTERNAL_SERVER_ERROR. It runs on SQLite and PostgreSQL
(15-30 s each for 150 examples).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from typing import Any

import graphql
import pytest
from chat_exports import SAMPLE, upload_ok
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_graphql import Mode, mutations, nodes, queries

from powerpulse.graphql.schema import build_schema

SDL = build_schema().as_str()
SCHEMA = graphql.build_schema(SDL)
MAX_EXAMPLES = 150

# Dates and times as the API takes them, and also as it must refuse them.
_DATE_TEXT = st.one_of(
    st.dates(min_value=date(1, 1, 1), max_value=date(9999, 12, 31)).map(date.isoformat),
    st.sampled_from(["", "2025-02-30", "yesterday", "2025-03-01T10:00:00Z", "0000-00-00"]),
    st.text(max_size=12),
)
_DATETIME_TEXT = st.one_of(
    st.datetimes(
        min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
    ).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),
    st.sampled_from(["", "2025-03-01T25:00:00", "9999-12-31T23:59:59-12:00", "now"]),
    st.text(max_size=12),
)
CUSTOM_SCALARS = {
    "Date": st.one_of(_DATE_TEXT.map(nodes.String), st.integers().map(nodes.Int)),
    "DateTime": st.one_of(_DATETIME_TEXT.map(nodes.String), st.integers().map(nodes.Int)),
    # Never a file: only a multipart request part is one.
    "Upload": st.one_of(st.text(max_size=20).map(nodes.String), st.integers().map(nodes.Int)),
}
# Arbitrary JSON values to put in place of a well-typed variable.
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    # Text no database takes as it is: NUL (PostgreSQL), unpaired surrogates (every driver).
    | st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udc00y"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=8,
)


def _documents() -> st.SearchStrategy[graphql.DocumentNode]:
    def keep(document: graphql.DocumentNode) -> graphql.DocumentNode:
        return document

    options: dict[str, Any] = {"custom_scalars": CUSTOM_SCALARS, "print_ast": keep}
    return st.one_of(
        queries(SCHEMA, mode=Mode.POSITIVE, **options),
        queries(SCHEMA, mode=Mode.POSITIVE, allow_null=False, **options),
        queries(SCHEMA, mode=Mode.NEGATIVE, **options),
        mutations(SCHEMA, mode=Mode.POSITIVE, **options),
    )


class _ArgumentsToVariables(graphql.Visitor):
    """Moves chosen literal arguments into variables of the argument's declared type."""

    def __init__(self, type_info: graphql.TypeInfo, choose: Any) -> None:
        super().__init__()
        self.type_info = type_info
        self.choose = choose
        self.definitions: list[graphql.VariableDefinitionNode] = []
        self.values: dict[str, Any] = {}

    def enter_argument(self, node: graphql.ArgumentNode, *_: Any) -> Any:
        argument = self.type_info.get_argument()
        if argument is None or isinstance(node.value, graphql.VariableNode) or not self.choose():
            return None
        name = f"v{len(self.definitions)}"
        variable = graphql.VariableNode(name=graphql.NameNode(value=name))
        self.definitions.append(
            graphql.VariableDefinitionNode(
                variable=variable, type=graphql.parse_type(str(argument.type))
            )
        )
        self.values[name] = graphql.value_from_ast_untyped(node.value)
        return graphql.ArgumentNode(name=node.name, value=variable)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    """One HTTP request: method, document text and variables."""
    kind = draw(st.integers(0, 19))
    if kind == 0:
        # Not GraphQL at all, or barely.
        text = draw(st.one_of(st.text(max_size=60), st.sampled_from(["{", "query {", "}}}"])))
        return {"method": "POST", "query": text, "variables": draw(st.none() | JSON_VALUES)}
    if kind == 1:
        # A JSON body that is not a GraphQL request object at all.
        return {"method": "RAW", "body": json.dumps(draw(JSON_VALUES))}
    document = draw(_documents())
    type_info = graphql.TypeInfo(SCHEMA)
    moving = _ArgumentsToVariables(type_info, lambda: draw(st.booleans()))
    document = graphql.visit(document, graphql.TypeInfoVisitor(type_info, moving))
    if moving.definitions:
        operation = document.definitions[0]
        assert isinstance(operation, graphql.OperationDefinitionNode)
        # Nodes are frozen: build the operation and the document anew.
        operation = graphql.OperationDefinitionNode(
            operation=operation.operation,
            name=operation.name,
            variable_definitions=tuple(moving.definitions),
            directives=operation.directives,
            selection_set=operation.selection_set,
        )
        document = graphql.DocumentNode(definitions=(operation, *document.definitions[1:]))
    variables = dict(moving.values)
    for name in list(variables):
        if draw(st.integers(0, 9)) == 0:
            variables[name] = draw(JSON_VALUES)  # a value of the wrong shape
    is_query = all(
        not isinstance(d, graphql.OperationDefinitionNode) or d.operation.value == "query"
        for d in document.definitions
    )
    method = "GET" if is_query and draw(st.integers(0, 4)) == 0 else "POST"
    return {"method": method, "query": graphql.print_ast(document), "variables": variables}


async def _send(client: Any, request: dict[str, Any]) -> Any:
    if request["method"] == "RAW":
        return await client.http.post(
            "/graphql", content=request["body"], headers={"content-type": "application/json"}
        )
    if request["method"] == "GET":
        params = {"query": request["query"]}
        if request["variables"] is not None:
            params["variables"] = json.dumps(request["variables"])
        return await client.http.get(
            "/graphql", params=params, headers={"Accept": "application/json"}
        )
    # json.dumps writes unpaired surrogates as escapes; httpx's json= cannot send them.
    body = json.dumps({"query": request["query"], "variables": request["variables"]})
    return await client.http.post(
        "/graphql", content=body, headers={"content-type": "application/json"}
    )


@pytest.fixture
async def sample_client(app_client_factory: Any, settings_factory: Any) -> Any:
    # Thousands of requests from one client in a minute: no rate limits here.
    client = await app_client_factory(
        settings_factory(rate_limit_per_minute=0, upload_rate_limit_per_hour=0),
        run_worker=False,
    )
    await upload_ok(client, SAMPLE)
    return client


@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    print_blob=True,  # a failure prints how to replay it
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(request=requests())
async def test_generated_documents_never_fail_the_server(
    sample_client: Any, request: dict[str, Any]
) -> None:
    response = await _send(sample_client, request)

    assert response.status_code < 500, (request, response.status_code, response.text[:2000])
    body = response.json()
    assert isinstance(body, dict) and ("data" in body or "errors" in body), body
    for error in body.get("errors") or []:
        code = (error.get("extensions") or {}).get("code")
        assert code, f"an error without a code: {error}"
        assert code != "INTERNAL_SERVER_ERROR", (request, error)
