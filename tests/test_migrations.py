"""Migrations are the only way the schema changes: they must match the models exactly."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from powerpulse.db import create_engine
from powerpulse.errors import ConfigurationError
from powerpulse.migrate import head_revision, prepare_schema, schema_differences, schema_state
from powerpulse.settings import Settings


async def test_initial_migration_matches_the_models_exactly(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await prepare_schema(engine, migrate=True)
        assert await schema_differences(engine) == []
        assert (await schema_state(engine)).current == head_revision()
    finally:
        await engine.dispose()


async def test_an_empty_database_has_no_revision_until_migrated(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        state = await schema_state(engine)
        assert state.current is None
        assert not state.up_to_date
    finally:
        await engine.dispose()


async def test_outdated_schema_is_refused_when_migration_is_not_allowed(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        with pytest.raises(ConfigurationError, match="powerpulse db upgrade"):
            await prepare_schema(engine, migrate=False)
        async with engine.connect() as connection:
            tables = await connection.run_sync(lambda c: inspect(c).get_table_names())
        assert "conversations" not in tables
    finally:
        await engine.dispose()


async def test_default_policy_migrates_sqlite_but_not_postgres(database_url: str) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        if engine.dialect.name == "sqlite":
            await prepare_schema(engine, migrate=None)
            assert (await schema_state(engine)).up_to_date
        else:
            with pytest.raises(ConfigurationError, match="--migrate"):
                await prepare_schema(engine, migrate=None)
    finally:
        await engine.dispose()
