"""API keys over HTTP and WebSocket: who may call, what a read-only key may do, and the
development mode without keys.

Keys are made with TenantAdmin on the app's own database (the CLI does the same; its
subprocess tests are in tests/test_tenants.py). The app does not cache keys, so a revoked
key fails on the very next request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from chat_exports import SAMPLE, SAMPLE_UPLOAD_REPORT, error_codes, upload_ok
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from powerpulse.app import create_app
from powerpulse.db import Database, create_engine
from powerpulse.services.tenants import TenantAdmin
from powerpulse.settings import Settings

METRICS = "{ metrics { totalConversations totalMessages } }"
PROTECTED_GETS = (
    "/export/conversations.csv",
    "/export/messages.csv",
    "/api/download?export_type=conversations",
    "/api/download?export_type=messages",
    f"/graphql?query={METRICS}",
)
UNKNOWN_KEY = "pp_" + "A" * 43


@contextlib.asynccontextmanager
async def tenant_admin(settings: Settings) -> AsyncIterator[TenantAdmin]:
    database = Database(create_engine(settings))
    try:
        yield TenantAdmin(database, settings)
    finally:
        await database.dispose()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class KeyClient:
    """One API key's view of the app: every request carries `Authorization: Bearer key`."""

    def __init__(self, client: Any, key: str) -> None:
        self.client = client
        self.headers = bearer(key)

    async def query(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        return await self.client.query(query, variables, headers=self.headers)

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.query(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def upload(self, content: bytes, **kwargs: Any) -> httpx.Response:
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.client.upload(content, headers=headers, **kwargs)

    async def get(self, path: str) -> httpx.Response:
        return await self.client.http.get(path, headers=self.headers)


def assert_unauthenticated(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["www-authenticate"].lower().startswith("bearer")
    assert error_codes(response.json()) == ["UNAUTHENTICATED"]


@pytest.fixture
def auth_settings(settings_factory: Any) -> Settings:
    return settings_factory(auth_disabled=False)  # type: ignore[no-any-return]


@pytest.fixture
async def auth_client(app_client_factory: Any, auth_settings: Settings) -> Any:
    return await app_client_factory(auth_settings)


@pytest.fixture
async def keys(auth_client: Any, auth_settings: Settings) -> dict[str, Any]:
    """Tenant acme with a read-write and a read-only key, and tenant bolt with one key."""
    async with tenant_admin(auth_settings) as admin:
        _, acme_key_id, acme_key = await admin.create_tenant("acme")
        read_only_id, read_only_key = await admin.create_key("acme", read_only=True)
        _, _, bolt_key = await admin.create_tenant("bolt")
    return {
        "acme": acme_key,
        "acme_id": acme_key_id,
        "acme_read_only": read_only_key,
        "acme_read_only_id": read_only_id,
        "bolt": bolt_key,
    }


async def test_graphql_post_without_a_key_is_401_with_a_json_error(auth_client: Any) -> None:
    response = await auth_client.http.post("/graphql", json={"query": METRICS})

    assert_unauthenticated(response)
    assert "Bearer" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize("path", PROTECTED_GETS)
async def test_queries_via_get_and_csv_exports_without_a_key_are_401(
    auth_client: Any, path: str
) -> None:
    assert_unauthenticated(await auth_client.http.get(path))


@pytest.mark.parametrize("path", PROTECTED_GETS)
async def test_an_unknown_key_is_401_everywhere(auth_client: Any, path: str) -> None:
    assert_unauthenticated(await auth_client.http.get(path, headers=bearer(UNKNOWN_KEY)))
    response = await auth_client.http.post(
        "/graphql", json={"query": METRICS}, headers=bearer(UNKNOWN_KEY)
    )
    assert_unauthenticated(response)
    assert "not valid" in response.json()["errors"][0]["message"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer    ",
        "Basic dXNlcjpwYXNz",
        "Token {key}",
        "{key}",
        "Bearer {key}x",
        "Bearer {key_without_prefix}",
        "Bearer pp_",
        "Bearer " + "pp_" + "A" * 300,
    ],
)
async def test_malformed_or_altered_credentials_are_401(
    auth_client: Any, keys: dict[str, Any], header: str
) -> None:
    key = keys["acme"]
    value = header.format(key=key, key_without_prefix=key.removeprefix("pp_"))

    response = await auth_client.http.post(
        "/graphql", json={"query": METRICS}, headers={"Authorization": value}
    )

    assert_unauthenticated(response)


async def test_a_valid_key_answers_graphql_post_and_get_and_csv_exports(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    acme = KeyClient(auth_client, keys["acme"])
    await upload_ok(acme, SAMPLE)

    assert (await acme.data(METRICS))["metrics"]["totalConversations"] == 7
    response = await acme.get(f"/graphql?query={METRICS}")
    assert response.status_code == 200, response.text
    assert response.json()["data"]["metrics"]["totalMessages"] == 28
    for path in PROTECTED_GETS[:4]:
        export = await acme.get(path)
        assert export.status_code == 200, export.text
        assert export.headers["content-type"].startswith("text/csv")
        assert "alpha" in export.text


async def test_the_bearer_scheme_is_case_insensitive(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    response = await auth_client.http.post(
        "/graphql", json={"query": METRICS}, headers={"Authorization": f"bearer {keys['bolt']}"}
    )

    assert response.status_code == 200, response.text
    assert response.json()["data"]["metrics"]["totalConversations"] == 0


async def test_graphiql_page_loads_without_a_key(auth_client: Any) -> None:
    response = await auth_client.http.get("/graphql", headers={"Accept": "text/html"})

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_a_browser_get_carrying_a_query_still_needs_a_key(auth_client: Any) -> None:
    response = await auth_client.http.get(
        "/graphql", params={"query": METRICS}, headers={"Accept": "text/html"}
    )

    assert_unauthenticated(response)


async def test_a_browser_get_with_a_percent_encoded_query_parameter_still_needs_a_key(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    await upload_ok(KeyClient(auth_client, keys["acme"]), SAMPLE)

    response = await auth_client.http.get(
        f"/graphql?%71uery={METRICS}", headers={"Accept": "text/html"}
    )

    assert_unauthenticated(response)


async def test_health_needs_no_key(auth_client: Any) -> None:
    response = await auth_client.http.get("/health")

    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_a_revoked_key_is_refused_on_the_next_request(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    acme = KeyClient(auth_client, keys["acme"])
    assert (await acme.data(METRICS))["metrics"]["totalConversations"] == 0

    async with tenant_admin(auth_settings) as admin:
        await admin.revoke_key(keys["acme_id"])

    assert_unauthenticated(await auth_client.http.post("/graphql", json={"query": METRICS}))
    response = await auth_client.http.post(
        "/graphql", json={"query": METRICS}, headers=acme.headers
    )
    assert_unauthenticated(response)
    assert_unauthenticated(await acme.get("/export/conversations.csv"))
    upload = await acme.upload(SAMPLE)
    assert_unauthenticated(upload)
    # The tenant's other key is untouched.
    read_only = KeyClient(auth_client, keys["acme_read_only"])
    assert (await read_only.data(METRICS))["metrics"]["totalConversations"] == 0


async def test_read_only_key_cannot_upload_and_nothing_is_stored(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    read_only = KeyClient(auth_client, keys["acme_read_only"])

    response = await read_only.upload(SAMPLE, selection="messagesStored job { id }")

    assert response.status_code == 200, response.text
    body = response.json()
    assert error_codes(body) == ["FORBIDDEN"]
    assert "read-only" in body["errors"][0]["message"]
    assert body["data"] is None
    acme = KeyClient(auth_client, keys["acme"])
    stored = await acme.data(
        "{ metrics { totalConversations totalMessages } jobs { totalCount } "
        "conversations { totalCount } }"
    )
    assert stored == {
        "metrics": {"totalConversations": 0, "totalMessages": 0},
        "jobs": {"totalCount": 0},
        "conversations": {"totalCount": 0},
    }


async def test_read_only_key_queries_and_exports_its_tenants_data(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    report = await upload_ok(KeyClient(auth_client, keys["acme"]), SAMPLE)
    assert report == SAMPLE_UPLOAD_REPORT
    read_only = KeyClient(auth_client, keys["acme_read_only"])

    data = await read_only.data(
        '{ metrics { totalConversations totalMessages } conversation(chatId: "alpha") '
        "{ messageCount } jobs { totalCount } }"
    )
    conversations = await read_only.get("/export/conversations.csv")
    messages = await read_only.get("/export/messages.csv")

    assert data == {
        "metrics": {"totalConversations": 7, "totalMessages": 28},
        "conversation": {"messageCount": 6},
        "jobs": {"totalCount": 1},
    }
    assert conversations.status_code == 200
    assert len(conversations.text.strip().splitlines()) == 1 + 7
    assert messages.status_code == 200
    assert len(messages.text.strip().splitlines()) == 1 + 28


async def test_a_key_stores_and_reads_only_its_own_tenants_data(
    auth_client: Any, keys: dict[str, Any]
) -> None:
    await upload_ok(KeyClient(auth_client, keys["acme"]), SAMPLE)

    bolt = KeyClient(auth_client, keys["bolt"])
    acme_read_only = KeyClient(auth_client, keys["acme_read_only"])

    assert (await bolt.data(METRICS))["metrics"]["totalConversations"] == 0
    assert (await acme_read_only.data(METRICS))["metrics"]["totalConversations"] == 7


async def test_using_a_key_records_when_it_was_last_used(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    async with tenant_admin(auth_settings) as admin:
        before = {row["id"]: row["last_used_at"] for row in await admin.keys("acme")}
    assert before == {keys["acme_id"]: None, keys["acme_read_only_id"]: None}

    await KeyClient(auth_client, keys["acme_read_only"]).data(METRICS)

    async with tenant_admin(auth_settings) as admin:
        after = {row["id"]: row["last_used_at"] for row in await admin.keys("acme")}
    assert after[keys["acme_id"]] is None
    assert after[keys["acme_read_only_id"]] is not None


# -- POWERPULSE_AUTH_DISABLED ------------------------------------------------------------


async def test_without_auth_every_request_acts_as_the_default_tenant(
    app_client_factory: Any, settings_factory: Any
) -> None:
    open_client = await app_client_factory(settings_factory(auth_disabled=True))
    await upload_ok(open_client, SAMPLE)
    auth_settings = settings_factory(auth_disabled=False)
    async with tenant_admin(auth_settings) as admin:
        _, default_key = await admin.create_key("default", read_only=True)
        _, _, other_key = await admin.create_tenant("other")

    # A key is not needed, and one that is sent changes nothing: it is still the default.
    with_other_key = await open_client.query(METRICS, headers=bearer(other_key))
    with_unknown_key = await open_client.query(METRICS, headers=bearer(UNKNOWN_KEY))
    export = await open_client.http.get("/export/conversations.csv")
    secured = await app_client_factory(auth_settings)
    as_default = await KeyClient(secured, default_key).data(METRICS)
    as_other = await KeyClient(secured, other_key).data(METRICS)

    assert with_other_key["data"]["metrics"]["totalConversations"] == 7
    assert with_unknown_key["data"]["metrics"]["totalConversations"] == 7
    assert export.status_code == 200
    assert len(export.text.strip().splitlines()) == 1 + 7
    # What was uploaded without a key belongs to the tenant named "default".
    assert as_default["metrics"]["totalConversations"] == 7
    assert as_other["metrics"]["totalConversations"] == 0


# -- GraphQL over WebSocket ----------------------------------------------------------------


def websocket_query(settings: Settings, payload: Any, query: str) -> dict[str, Any]:
    """connection_init with `payload`, then one subscribe; the `next` payload or the close code.

    Runs a second, synchronous app on the same database (the TestClient has its own loop).
    """
    app = create_app(settings, run_worker=False, migrate=True)
    with (
        TestClient(app) as client,
        client.websocket_connect("/graphql", subprotocols=["graphql-transport-ws"]) as socket,
    ):
        init: dict[str, Any] = {"type": "connection_init"}
        if payload is not None:
            init["payload"] = payload
        socket.send_json(init)
        try:
            ack = socket.receive_json()
        except WebSocketDisconnect as exc:
            return {"closed": exc.code}
        assert ack["type"] == "connection_ack", ack
        socket.send_json({"id": "1", "type": "subscribe", "payload": {"query": query}})
        result = socket.receive_json()
        assert result["type"] == "next", result
        assert socket.receive_json() == {"id": "1", "type": "complete"}
        return result["payload"]  # type: ignore[no-any-return]


async def ws(settings: Settings, payload: Any, query: str = METRICS) -> dict[str, Any]:
    return await asyncio.to_thread(websocket_query, settings, payload, query)


async def test_the_app_itself_serves_graphql_over_websocket(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    payload = {"Authorization": f"Bearer {keys['bolt']}"}

    result = await asyncio.to_thread(websocket_query, auth_settings, payload, METRICS)

    assert result == {"data": {"metrics": {"totalConversations": 0, "totalMessages": 0}}}


async def test_websocket_with_a_key_in_connection_params_answers_for_its_tenant(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    await upload_ok(KeyClient(auth_client, keys["acme"]), SAMPLE)

    acme = await ws(auth_settings, {"Authorization": f"Bearer {keys['acme_read_only']}"})
    bolt = await ws(auth_settings, {"Authorization": f"Bearer {keys['bolt']}"})

    assert acme == {"data": {"metrics": {"totalConversations": 7, "totalMessages": 28}}}
    assert bolt == {"data": {"metrics": {"totalConversations": 0, "totalMessages": 0}}}


@pytest.mark.parametrize(
    "payload",
    [
        None,
        {},
        {"Authorization": f"Bearer {UNKNOWN_KEY}"},
        {"Authorization": UNKNOWN_KEY},
        {"Authorization": "Bearer"},
        {"Authorization": 42},
        {"apiKey": "not-a-key"},
    ],
    ids=["no-payload", "empty", "unknown", "bare-unknown", "no-token", "number", "junk"],
)
async def test_websocket_without_a_valid_key_is_closed_with_4403(
    auth_client: Any, auth_settings: Settings, payload: Any
) -> None:
    assert await ws(auth_settings, payload) == {"closed": 4403}


async def test_websocket_with_a_revoked_key_is_closed_with_4403(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    payload = {"Authorization": f"Bearer {keys['acme']}"}
    assert "data" in await ws(auth_settings, payload)

    async with tenant_admin(auth_settings) as admin:
        await admin.revoke_key(keys["acme_id"])

    assert await ws(auth_settings, payload) == {"closed": 4403}


async def test_websocket_accepts_the_bare_key_and_the_apikey_parameter(
    auth_client: Any, auth_settings: Settings, keys: dict[str, Any]
) -> None:
    expected = {"data": {"metrics": {"totalConversations": 0, "totalMessages": 0}}}

    assert await ws(auth_settings, {"authorization": keys["bolt"]}) == expected
    assert await ws(auth_settings, {"apiKey": keys["bolt"]}) == expected
