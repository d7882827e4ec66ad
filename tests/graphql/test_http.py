"""The HTTP surface: health, GraphiQL, the upload preflight and the upload size limit."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from chat_exports import SAMPLE, customer, error_codes, export, metrics, upload_ok


async def test_health_reports_ok_with_the_database_engine(client: Any, settings: Any) -> None:
    response = await client.http.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    engine = "sqlite" if settings.database_url.startswith("sqlite") else "postgresql"
    assert body["databaseEngine"] == engine


async def test_graphql_get_from_a_browser_serves_graphiql(client: Any) -> None:
    response = await client.http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_every_response_carries_a_request_id(client: Any) -> None:
    first = await client.http.get("/health")
    second = await client.http.post("/graphql", json={"query": "{ metrics { totalMessages } }"})

    assert first.headers["x-request-id"]
    assert second.headers["x-request-id"]
    assert first.headers["x-request-id"] != second.headers["x-request-id"]


def _multipart(content: bytes) -> httpx.Request:
    """An uploadChats request as the GraphQL multipart request spec lays it out."""
    operations = {
        "query": "mutation($file: Upload!) { uploadChats(file: $file) { messagesStored } }",
        "variables": {"file": None},
    }
    return httpx.Request(
        "POST",
        "http://testserver/graphql",
        data={"operations": json.dumps(operations), "map": json.dumps({"0": ["variables.file"]})},
        files={"0": ("export.json", content, "application/json")},
    )


async def test_upload_without_a_preflight_header_is_refused(client: Any) -> None:
    request = _multipart(SAMPLE)

    response = await client.http.post(
        "/graphql",
        content=request.read(),
        headers={"content-type": request.headers["content-type"]},
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    assert error_codes(response.json()) == ["PREFLIGHT_REQUIRED"]
    assert (await metrics(client))["totalMessages"] == 0


async def test_upload_with_graphql_require_preflight_header_is_accepted(client: Any) -> None:
    request = _multipart(SAMPLE)

    response = await client.http.post(
        "/graphql",
        content=request.read(),
        headers={
            "content-type": request.headers["content-type"],
            "GraphQL-Require-Preflight": "1",
        },
    )

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"uploadChats": {"messagesStored": 28}}}


async def test_upload_with_apollo_require_preflight_header_is_accepted(client: Any) -> None:
    report = await upload_ok(client, SAMPLE)  # the client sends Apollo-Require-Preflight

    assert report["messagesStored"] == 28


LIMIT = 2048
SMALL = export({"tiny": [customer("2025-01-01T00:00:00Z", "hi")]})


async def _chunks(body: bytes, size: int = 256) -> AsyncIterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def _limited_client(app_client_factory: Any, settings_factory: Any) -> Any:
    return await app_client_factory(settings_factory(max_upload_bytes=LIMIT))


def _assert_too_large(response: httpx.Response) -> None:
    assert response.status_code == 413, response.text
    assert error_codes(response.json()) == ["PAYLOAD_TOO_LARGE"]


async def test_upload_declared_larger_than_the_limit_is_refused_with_413(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await _limited_client(app_client_factory, settings_factory)
    assert len(SAMPLE) > LIMIT

    response = await client.upload(SAMPLE)

    assert int(response.request.headers["content-length"]) > LIMIT
    _assert_too_large(response)
    assert (await metrics(client))["totalMessages"] == 0


async def test_streamed_upload_larger_than_the_limit_is_refused_with_413(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await _limited_client(app_client_factory, settings_factory)
    request = _multipart(SAMPLE)
    body = request.read()

    response = await client.http.post(
        "/graphql",
        content=_chunks(body),
        headers={
            "content-type": request.headers["content-type"],
            "Apollo-Require-Preflight": "1",
        },
    )

    # Nothing declared the size: the limit must hold on the bytes as they arrive.
    assert "content-length" not in response.request.headers
    _assert_too_large(response)
    assert (await metrics(client))["totalMessages"] == 0


async def test_streamed_upload_within_the_limit_is_stored(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await _limited_client(app_client_factory, settings_factory)
    request = _multipart(SMALL)
    body = request.read()
    assert len(body) < LIMIT

    response = await client.http.post(
        "/graphql",
        content=_chunks(body, 64),
        headers={
            "content-type": request.headers["content-type"],
            "Apollo-Require-Preflight": "1",
        },
    )

    assert "content-length" not in response.request.headers
    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"uploadChats": {"messagesStored": 1}}}


async def test_json_request_larger_than_the_limit_is_refused_with_413(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await _limited_client(app_client_factory, settings_factory)
    query = "{ metrics { totalMessages } }" + " " * LIMIT

    declared = await client.http.post("/graphql", json={"query": query})
    streamed = await client.http.post(
        "/graphql",
        content=_chunks(json.dumps({"query": query}).encode()),
        headers={"content-type": "application/json"},
    )

    _assert_too_large(declared)
    _assert_too_large(streamed)
