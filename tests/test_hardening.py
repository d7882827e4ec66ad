"""The HTTP surface under bad input: upload shape and size, content types, GET mutations,
CORS, security headers, rate limits, query timeouts, and secrets kept out of logs and
responses."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from pydantic import ValidationError
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from powerpulse.app import create_app
from powerpulse.db import Database, create_engine
from powerpulse.ratelimit import RateLimiter, retry_after_seconds
from powerpulse.services.analytics import AnalyticsService
from powerpulse.services.tenants import TenantAdmin
from powerpulse.settings import Settings

MIB = 1024 * 1024
METRICS = "{ metrics { totalConversations totalMessages } }"
EXPORT = json.dumps(
    {
        "chat-1": [
            {
                "DIRECTION": "to_company",
                "SOCIAL_CREATE_TIME": "2025-03-01T10:00:00Z",
                "MESSAGE_CONTENT": "hello, my bill is wrong",
                "PLATFORM": "facebook",
            }
        ]
    }
).encode()
ONE_FILE = {"0": ("a.json", EXPORT, "application/json")}
UPLOAD_QUERY = "mutation($file: Upload!) { uploadChats(file: $file) { messagesStored } }"


def error_codes(response: httpx.Response) -> list[str]:
    body = response.json()
    return [error.get("extensions", {}).get("code") for error in body.get("errors", [])]


def operations(query: str = UPLOAD_QUERY, **extra: Any) -> str:
    return json.dumps({"query": query, "variables": {"file": None}, **extra})


def multipart(
    files: dict[str, tuple[str, bytes, str]],
    *,
    operations_field: str | None = None,
    file_map: dict[str, list[str]] | None = None,
) -> httpx.Request:
    return httpx.Request(
        "POST",
        "http://testserver/graphql",
        data={
            "operations": operations_field or operations(),
            "map": json.dumps(file_map or {"0": ["variables.file"]}),
        },
        files=files,
    )


async def send_multipart(client: Any, request: httpx.Request, **headers: str) -> httpx.Response:
    return await client.http.post(
        "/graphql",
        content=request.read(),
        headers={
            "content-type": request.headers["content-type"],
            "Apollo-Require-Preflight": "1",
            **headers,
        },
    )


async def stored_messages(client: Any) -> int:
    response = await client.http.post("/graphql", json={"query": METRICS})
    assert response.status_code == 200, response.text
    return response.json()["data"]["metrics"]["totalMessages"]


# -- uploads ------------------------------------------------------------------------------


async def test_an_upload_with_one_file_is_stored(client: Any) -> None:
    response = await send_multipart(client, multipart(ONE_FILE))

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"uploadChats": {"messagesStored": 1}}}


async def test_an_upload_with_two_files_is_refused(client: Any) -> None:
    request = multipart(
        {
            "0": ("a.json", EXPORT, "application/json"),
            "1": ("b.json", EXPORT, "application/json"),
        },
        file_map={"0": ["variables.file"], "1": ["variables.other"]},
    )

    response = await send_multipart(client, request)

    assert response.status_code == 400, response.text
    assert error_codes(response) == ["TOO_MANY_FILES"]
    assert "at most 1 file" in response.json()["errors"][0]["message"]
    assert await stored_messages(client) == 0


async def test_an_oversized_operations_field_is_refused(client: Any) -> None:
    padded = operations(UPLOAD_QUERY + " " * (64 * 1024))
    request = multipart(ONE_FILE, operations_field=padded)

    response = await send_multipart(client, request)

    assert response.status_code == 413, response.text
    assert error_codes(response) == ["FIELD_TOO_LARGE"]
    assert "'operations'" in response.json()["errors"][0]["message"]
    assert await stored_messages(client) == 0


async def test_form_field_limit_is_a_setting(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(max_form_field_bytes=64))
    request = multipart(ONE_FILE)

    response = await send_multipart(client, request)

    assert response.status_code == 413
    assert error_codes(response) == ["FIELD_TOO_LARGE"]


async def test_a_sixty_mib_upload_is_refused_after_reading_the_limit_and_one_chunk(
    client: Any, settings: Settings
) -> None:
    chunk_size = 64 * 1024
    file_size = 60 * MIB
    assert settings.max_upload_bytes == 50 * MIB  # the default
    boundary = "hardening-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
        f"{operations()}\r\n"
        f'--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        '{"0": ["variables.file"]}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="0"; filename="big.json"\r\n'
        "Content-Type: application/json\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        sent += len(head)
        yield head
        block = b"x" * chunk_size
        for _ in range(file_size // chunk_size):
            sent += len(block)
            yield block
        sent += len(tail)
        yield tail

    response = await client.http.post(
        "/graphql",
        content=body(),
        headers={
            "content-type": f"multipart/form-data; boundary={boundary}",
            "Apollo-Require-Preflight": "1",
        },
    )

    assert "content-length" not in response.request.headers  # streamed, size undeclared
    assert response.status_code == 413, response.text
    assert error_codes(response) == ["PAYLOAD_TOO_LARGE"]
    assert settings.max_upload_bytes < sent <= settings.max_upload_bytes + chunk_size
    assert await stored_messages(client) == 0


@pytest.mark.parametrize(
    ("content_type", "content"),
    [
        (
            "application/x-www-form-urlencoded",
            "query=%7B%20metrics%20%7B%20totalMessages%20%7D%20%7D",
        ),
        ("text/plain", json.dumps({"query": METRICS})),
        ("application/graphql", METRICS),
    ],
)
async def test_post_bodies_other_than_json_and_multipart_are_415(
    client: Any, content_type: str, content: str
) -> None:
    response = await client.http.post(
        "/graphql", content=content, headers={"content-type": content_type}
    )

    assert response.status_code == 415, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert error_codes(response) == ["UNSUPPORTED_MEDIA_TYPE"]


async def test_a_post_without_a_content_type_is_415(client: Any) -> None:
    response = await client.http.post("/graphql", content=json.dumps({"query": METRICS}))

    assert response.status_code == 415
    assert error_codes(response) == ["UNSUPPORTED_MEDIA_TYPE"]


async def test_json_with_a_charset_is_accepted(client: Any) -> None:
    response = await client.http.post(
        "/graphql",
        content=json.dumps({"query": METRICS}),
        headers={"content-type": "application/json; charset=utf-8"},
    )

    assert response.status_code == 200, response.text


async def test_get_never_runs_a_mutation(client: Any) -> None:
    response = await client.http.get("/graphql", params={"query": "mutation { __typename }"})
    upload = await client.http.get(
        "/graphql",
        params={
            "query": UPLOAD_QUERY,
            "variables": json.dumps({"file": None}),
        },
    )

    for refused in (response, upload):
        assert refused.status_code == 400, refused.text
        assert error_codes(refused) == ["BAD_REQUEST"]
        assert "GET" in refused.json()["errors"][0]["message"]
    assert await stored_messages(client) == 0


async def test_queries_via_get_still_work(client: Any) -> None:
    response = await client.http.get("/graphql", params={"query": METRICS})

    assert response.status_code == 200
    assert response.json()["data"]["metrics"]["totalMessages"] == 0


# -- CORS ---------------------------------------------------------------------------------

DASHBOARD = "https://dashboard.example.com"
EVIL = "https://evil.example.net"


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }


async def test_no_origin_is_allowed_by_default(client: Any) -> None:
    response = await client.http.options("/graphql", headers=preflight(DASHBOARD))
    simple = await client.http.post(
        "/graphql", json={"query": METRICS}, headers={"Origin": DASHBOARD}
    )

    assert response.status_code == 400
    assert "access-control-allow-origin" not in response.headers
    assert "access-control-allow-origin" not in simple.headers


async def test_cors_preflight_from_an_allowed_origin_only(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(cors_origins=DASHBOARD))

    allowed = await client.http.options("/graphql", headers=preflight(DASHBOARD))
    refused = await client.http.options("/graphql", headers=preflight(EVIL))
    allowed_post = await client.http.post(
        "/graphql", json={"query": METRICS}, headers={"Origin": DASHBOARD}
    )
    refused_post = await client.http.post(
        "/graphql", json={"query": METRICS}, headers={"Origin": EVIL}
    )

    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == DASHBOARD
    assert "POST" in allowed.headers["access-control-allow-methods"]
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in allowed.headers
    assert refused.status_code == 400
    assert "access-control-allow-origin" not in refused.headers
    assert allowed_post.headers["access-control-allow-origin"] == DASHBOARD
    assert "x-request-id" in allowed_post.headers["access-control-expose-headers"].lower()
    assert "access-control-allow-origin" not in refused_post.headers


async def test_cors_preflight_needs_no_api_key(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(cors_origins=DASHBOARD, auth_disabled=False))

    response = await client.http.options("/graphql", headers=preflight(DASHBOARD))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == DASHBOARD


def test_cors_settings_are_validated() -> None:
    parsed = Settings(cors_origins=f" {DASHBOARD}, http://localhost:5173 ")
    assert parsed.cors_origins == [DASHBOARD, "http://localhost:5173"]
    assert Settings().cors_origins == []

    with pytest.raises(ValidationError, match="CREDENTIALS"):
        Settings(cors_origins="*", cors_allow_credentials=True)
    for not_an_origin in ("dashboard.example.com", "https://x.example/path", "ftp://x.example"):
        with pytest.raises(ValidationError, match="not an origin"):
            Settings(cors_origins=not_an_origin)

    credentials = Settings(cors_origins=DASHBOARD, cors_allow_credentials=True)
    assert credentials.cors_allow_credentials


async def test_a_wildcard_origin_never_comes_with_credentials(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(cors_origins="*"))

    response = await client.http.options("/graphql", headers=preflight(EVIL))

    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


# -- security headers ---------------------------------------------------------------------


def csp_directives(header: str) -> dict[str, list[str]]:
    directives = {}
    for part in header.split(";"):
        name, *values = part.split()
        directives[name] = values
    return directives


async def test_graphiql_page_has_security_headers_and_a_csp_that_lets_it_load(
    client: Any,
) -> None:
    response = await client.http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    csp = csp_directives(response.headers["content-security-policy"])
    html = response.text

    script_urls = re.findall(r'<script[^>]*\ssrc="([^"]+)"', html)
    style_urls = re.findall(r'<link[^>]*rel="stylesheet"[^>]*href="([^"]+)"', html, re.S)
    assert script_urls and style_urls
    for url in script_urls:
        assert _origin(url) in csp["script-src"], url
    for url in style_urls:
        assert _origin(url) in csp["style-src"], url
    inline = re.findall(r"<script>(.*?)</script>", html, re.S)
    assert inline
    for script in inline:
        digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp["script-src"]
    assert "'unsafe-inline'" not in csp["script-src"]
    assert "'unsafe-eval'" not in csp["script-src"]
    assert "https://fonts.googleapis.com" in csp["style-src"]
    assert "https://fonts.gstatic.com" in csp["font-src"]
    assert csp["connect-src"] == ["'self'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["object-src"] == ["'none'"]
    assert set(csp["script-src"]) <= {"'self'", *map(_origin, script_urls)} | {
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'" for s in inline
    }


def _origin(url: str) -> str:
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.split('/')[0]}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/graphql", {"query": METRICS}),
        ("POST", "/graphql", {"query": "{ nope }"}),
        ("GET", "/health", None),
        ("GET", "/export/conversations.csv", None),
    ],
)
async def test_other_responses_are_nosniff_and_unframeable(
    client: Any, method: str, path: str, body: Any
) -> None:
    response = await client.http.request(method, path, json=body)

    assert response.status_code == 200
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert csp_directives(response.headers["content-security-policy"]) == {
        "default-src": ["'none'"],
        "frame-ancestors": ["'none'"],
    }


async def test_refusals_are_nosniff_too(client: Any) -> None:
    response = await client.http.post(
        "/graphql", content="x=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )

    assert response.status_code == 415
    assert response.headers["x-content-type-options"] == "nosniff"


# -- rate limits --------------------------------------------------------------------------


def test_token_bucket_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=1.0, capacity=3, clock=lambda: now[0])

    assert [limiter.acquire("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.acquire("a") == pytest.approx(1.0)
    assert limiter.acquire("b") == 0.0  # another key, another bucket
    now[0] = 0.5
    assert limiter.acquire("a") == pytest.approx(0.5)
    now[0] = 1.0
    assert limiter.acquire("a") == 0.0
    now[0] = 100.0
    assert [limiter.acquire("a") for _ in range(4)][-1] > 0  # never more than the burst


def test_token_bucket_forgets_the_least_recent_keys() -> None:
    limiter = RateLimiter(rate=1.0, capacity=1, max_keys=2, clock=lambda: 0.0)
    limiter.acquire("a")
    limiter.acquire("b")
    limiter.acquire("a")  # a is now the most recent
    limiter.acquire("c")  # forgets b

    assert limiter.acquire("a") > 0
    assert limiter.acquire("b") == 0.0


def test_retry_after_is_whole_seconds_and_never_zero() -> None:
    assert retry_after_seconds(0.01) == 1
    assert retry_after_seconds(19.2) == 20
    assert retry_after_seconds(20.0) == 20


def assert_rate_limited(response: httpx.Response, at_most_seconds: int) -> None:
    assert response.status_code == 429, response.text
    assert error_codes(response) == ["RATE_LIMITED"]
    assert 1 <= int(response.headers["retry-after"]) <= at_most_seconds


async def test_requests_over_the_budget_get_429_with_retry_after(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(rate_limit_per_minute=3))

    answers = [await client.http.post("/graphql", json={"query": METRICS}) for _ in range(4)]

    assert [answer.status_code for answer in answers[:3]] == [200, 200, 200]
    assert_rate_limited(answers[3], 20)  # one request per 20 s
    assert (await client.http.get("/health")).status_code == 200  # health is never limited


async def test_the_upload_budget_is_separate(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(
        settings_factory(rate_limit_per_minute=3, upload_rate_limit_per_hour=1)
    )
    upload = multipart(ONE_FILE)

    first = await send_multipart(client, upload)
    second = await send_multipart(client, upload)
    queries = [await client.http.post("/graphql", json={"query": METRICS}) for _ in range(4)]

    assert first.status_code == 200, first.text
    assert_rate_limited(second, 3600)
    assert int(second.headers["retry-after"]) > 60  # one upload per hour
    assert [query.status_code for query in queries[:3]] == [200, 200, 200]
    assert queries[0].json()["data"]["metrics"]["totalMessages"] == 1
    assert_rate_limited(queries[3], 20)


async def test_each_api_key_has_its_own_budget(
    app_client_factory: Any, settings_factory: Any
) -> None:
    settings = settings_factory(auth_disabled=False, rate_limit_per_minute=2)
    client = await app_client_factory(settings)
    async with _tenant_admin(settings) as admin:
        _, _, first_key = await admin.create_tenant("first")
        _, second_key = await admin.create_key("first", read_only=True)

    async def ask(key: str) -> httpx.Response:
        return await client.http.post(
            "/graphql", json={"query": METRICS}, headers={"Authorization": f"Bearer {key}"}
        )

    spent = [(await ask(first_key)).status_code for _ in range(3)]
    other = await ask(second_key)

    assert spent == [200, 200, 429]
    assert other.status_code == 200


async def test_rate_limits_can_be_turned_off(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(rate_limit_per_minute=0))

    answers = [await client.http.post("/graphql", json={"query": METRICS}) for _ in range(5)]

    assert {answer.status_code for answer in answers} == {200}


@contextlib.asynccontextmanager
async def _tenant_admin(settings: Settings) -> AsyncIterator[TenantAdmin]:
    database = Database(create_engine(settings))
    try:
        yield TenantAdmin(database, settings)
    finally:
        await database.dispose()


# -- timeouts -----------------------------------------------------------------------------

SLOW_QUERY = """
{
  conversations(first: 100) {
    totalCount
    edges { node { chatId agents messages(first: 100) { totalCount edges { node { id } } } } }
  }
  metrics { totalMessages previousPeriod { totalMessages } topTopics { topic } }
  agents { edges { node { agent } } }
}
"""


async def test_a_query_over_the_timeout_gets_503(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await app_client_factory(settings_factory(request_timeout_seconds=0.001))

    response = await client.http.post("/graphql", json={"query": SLOW_QUERY})

    assert response.status_code == 503, response.text
    assert error_codes(response) == ["REQUEST_TIMEOUT"]
    assert response.headers["x-request-id"]


async def test_uploads_are_not_timed_out(app_client_factory: Any, settings_factory: Any) -> None:
    client = await app_client_factory(settings_factory(request_timeout_seconds=0.001))

    response = await send_multipart(client, multipart(ONE_FILE))

    assert response.status_code == 200, response.text
    assert response.json() == {"data": {"uploadChats": {"messagesStored": 1}}}


async def test_queries_within_the_timeout_answer(client: Any) -> None:
    response = await client.http.post("/graphql", json={"query": SLOW_QUERY})

    assert response.status_code == 200, response.text
    assert "errors" not in response.json()


# -- secrets ------------------------------------------------------------------------------

OPENAI_KEY = "sk-test-" + "Zq9" * 12
DATABASE_PASSWORD = "db-pa55-Xy7Wq"


async def test_secrets_stay_out_of_logs_and_responses(
    app_client_factory: Any,
    settings_factory: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    database_url = settings_factory().database_url
    if not database_url.startswith("sqlite"):
        # PostgreSQL with a password in DATABASE_URL (the test server trusts local users).
        url = make_url(database_url).set(password=DATABASE_PASSWORD)
        database_url = url.render_as_string(hide_password=False)
    settings = Settings(
        database_url=database_url,
        env="test",
        auth_disabled=False,
        analyzer="openai",
        openai_api_key=OPENAI_KEY,
        openai_base_url="http://127.0.0.1:9/v1",  # never reached: nothing is analysed
    )
    caplog.set_level(logging.DEBUG)
    responses: list[httpx.Response] = []

    client = await app_client_factory(settings, run_worker=False)  # start-up
    async with _tenant_admin(settings) as admin:
        _, _, api_key = await admin.create_tenant("secretive")
    bearer = {"Authorization": f"Bearer {api_key}"}
    responses.append(await client.http.post("/graphql", json={"query": METRICS}, headers=bearer))
    responses.append(await client.http.get("/health"))
    responses.append(await client.http.post("/graphql", json={"query": "{ x }"}, headers=bearer))
    responses.append(
        await client.http.post(
            "/graphql", json={"query": METRICS}, headers={"Authorization": f"Bearer {api_key}x"}
        )
    )

    async def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise OperationalError("SELECT 1", (), Exception("server closed the connection"))

    monkeypatch.setattr(AnalyticsService, "metrics", broken)
    responses.append(await client.http.post("/graphql", json={"query": METRICS}, headers=bearer))

    async def unreachable(self: Any) -> None:
        raise OperationalError("SELECT 1", (), Exception("connection refused"))

    monkeypatch.setattr(Database, "ping", unreachable)
    responses.append(await client.http.get("/health"))

    assert [response.status_code for response in responses] == [200, 200, 200, 401, 200, 503]
    assert error_codes(responses[4]) == ["INTERNAL_SERVER_ERROR"]
    assert "unexpected error" in caplog.text  # the failures were logged...
    assert "health check" in caplog.text
    secrets = [OPENAI_KEY, DATABASE_PASSWORD, api_key]
    for secret in secrets:  # ...without any secret
        assert secret not in caplog.text
        for response in responses:
            assert secret not in response.text
            assert secret not in str(response.headers)


async def test_a_failed_start_does_not_log_the_database_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = Settings(
        database_url=f"postgresql://powerpulse:{DATABASE_PASSWORD}@127.0.0.1:1/powerpulse",
        env="test",
        openai_api_key=OPENAI_KEY,
        db_pool_timeout=2,
    )
    caplog.set_level(logging.DEBUG)

    with pytest.raises(Exception) as failure:
        async with LifespanManager(create_app(settings, run_worker=False), startup_timeout=30):
            pass

    assert DATABASE_PASSWORD not in settings.redacted_database_url()
    chain: list[str] = []
    error: BaseException | None = failure.value
    while error is not None and len(chain) < 20:
        chain.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    for secret in (DATABASE_PASSWORD, OPENAI_KEY):
        assert secret not in caplog.text
        assert all(secret not in text for text in chain)
