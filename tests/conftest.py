"""Fixtures: real databases (SQLite always, PostgreSQL when reachable), app clients."""

from __future__ import annotations

import contextlib
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from powerpulse.app import create_app
from powerpulse.settings import Settings

POSTGRES_ADMIN_URL = os.environ.get(
    "POWERPULSE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def _postgres_reachable() -> bool:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_ADMIN_URL)
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


POSTGRES_AVAILABLE = _postgres_reachable()
ON_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def _admin_dsn() -> str:
    from sqlalchemy.engine import make_url

    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


async def _run_admin(statement: str) -> None:
    import asyncpg

    connection = await asyncpg.connect(_admin_dsn())
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


@contextlib.asynccontextmanager
async def fresh_postgres_database() -> AsyncIterator[str]:
    """Create an empty PostgreSQL database for one test and drop it afterwards."""
    if not POSTGRES_AVAILABLE:
        if ON_CI:
            pytest.fail("PostgreSQL must be reachable on CI (POWERPULSE_TEST_DATABASE_URL)")
        pytest.skip("PostgreSQL is not reachable")
    from sqlalchemy.engine import make_url

    name = f"pp_test_{uuid.uuid4().hex[:12]}"
    await _run_admin(f'CREATE DATABASE "{name}"')
    url = make_url(POSTGRES_ADMIN_URL).set(drivername="postgresql+asyncpg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        await _run_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgres"])
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A fresh, empty database of each engine for one test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'powerpulse.db'}"
        return
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture
async def postgres_url() -> AsyncIterator[str]:
    """A fresh PostgreSQL database (for tests that compare engines side by side)."""
    async with fresh_postgres_database() as url:
        yield url


@pytest.fixture
def settings_factory(database_url: str) -> Any:
    def build(**overrides: Any) -> Settings:
        # Most tests act as the default tenant; authentication has tests of its own.
        # Analytics facts are read on the first question, not ahead in the background,
        # so tests that count a request's statements count only that request's; and every
        # write is seen by the next request (tests of the staleness window set their own).
        defaults = {
            "auth_disabled": True,
            "analytics_preload": False,
            "analytics_staleness_seconds": 0,
        }
        return Settings(database_url=database_url, env="test", **{**defaults, **overrides})

    return build


@pytest.fixture
def settings(settings_factory: Any) -> Settings:
    return settings_factory()


class GraphQLClient:
    """Talks to the ASGI app over HTTP exactly as a browser or script would."""

    def __init__(self, http: httpx.AsyncClient, state: Any = None) -> None:
        self.http = http
        self.state = state  # the app's AppState, for tests that reach behind the API

    async def query(
        self, query: str, variables: dict[str, Any] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        response = await self.http.post(
            "/graphql", json={"query": query, "variables": variables or {}}, **kwargs
        )
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> Any:
        body = await self.query(query, variables)
        assert "errors" not in body, body["errors"]
        return body["data"]

    async def upload(
        self,
        content: bytes,
        *,
        force_reprocess: bool = False,
        filename: str = "export.json",
        headers: dict[str, str] | None = None,
        selection: str = "conversationsReceived messagesReceived messagesStored "
        "duplicatesSkipped autoresponsesFiltered invalidRecords "
        "errors { chatId index message }",
    ) -> httpx.Response:
        import json

        operations = {
            "query": "mutation($file: Upload!, $force: Boolean!) { uploadChats(file: $file, "
            f"forceReprocess: $force) {{ {selection} }} }}",
            "variables": {"file": None, "force": force_reprocess},
        }
        return await self.http.post(
            "/graphql",
            data={
                "operations": json.dumps(operations),
                "map": json.dumps({"0": ["variables.file"]}),
            },
            files={"0": (filename, content, "application/json")},
            headers={"Apollo-Require-Preflight": "true", **(headers or {})},
        )


@pytest.fixture
async def app_client_factory(database_url: str) -> AsyncIterator[Any]:
    """Builds app clients; they shut down before the test's database is dropped."""
    managers: list[LifespanManager] = []
    clients: list[httpx.AsyncClient] = []

    async def build(settings: Settings, **app_options: Any) -> GraphQLClient:
        app = create_app(settings, **{"migrate": True, **app_options})
        manager = LifespanManager(app)
        await manager.__aenter__()
        managers.append(manager)
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver"
        )
        clients.append(http)
        return GraphQLClient(http, manager._state.get("powerpulse"))

    yield build
    for http in clients:
        await http.aclose()
    for manager in reversed(managers):
        await manager.__aexit__(None, None, None)


@pytest.fixture
async def client(app_client_factory: Any, settings: Settings) -> GraphQLClient:
    return await app_client_factory(settings)  # type: ignore[no-any-return]


@pytest.fixture
def data_dir() -> Iterator[Path]:
    yield Path(__file__).parent / "data"
