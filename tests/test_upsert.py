"""Repository.upsert: the same result as upserting the rows one by one, on both engines."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from powerpulse.db import create_engine
from powerpulse.migrate import upgrade
from powerpulse.models import Tenant
from powerpulse.repositories.base import Repository
from powerpulse.settings import Settings

tenants = Tenant.__table__  # type: ignore[attr-defined]
NOW = datetime(2026, 12, 7, tzinfo=UTC)


def _tenant(name: str, timezone: str) -> dict[str, object]:
    return {"name": name, "created_at": NOW, "timezone": timezone}


async def test_upsert_keeps_the_last_row_of_a_key_or_the_first_without_update(
    database_url: str,
) -> None:
    engine = create_engine(Settings(database_url=database_url))
    try:
        await upgrade(engine)
        # More rows than one multi-row statement takes on PostgreSQL (1,000), with the same
        # key repeated inside one page and across pages.
        many = [_tenant(f"t{index % 1500}", f"zone {index}") for index in range(2600)]
        async with engine.begin() as connection:
            repository = Repository(connection)
            await repository.upsert(
                tenants,
                [_tenant("a", "UTC"), _tenant("a", "Europe/Paris"), _tenant("b", "UTC")],
                key=["name"],
                update=["timezone"],
            )
            await repository.upsert(
                tenants,
                [_tenant("a", "Asia/Tokyo"), _tenant("c", "first"), _tenant("c", "second")],
                key=["name"],
                update=[],
            )
            await repository.upsert(tenants, many, key=["name"], update=["timezone"])
            await repository.upsert(
                tenants,
                [_tenant("b", "America/Lima"), _tenant("b", "Africa/Accra")],
                key=["name"],
                update=["timezone"],
            )
        async with engine.connect() as connection:
            zones = dict(
                (await connection.execute(select(tenants.c.name, tenants.c.timezone))).all()
            )
        assert zones["a"] == "Europe/Paris"
        assert zones["b"] == "Africa/Accra"
        assert zones["c"] == "first"
        # Row i names t(i % 1500): t0 is given zones 0 and 1500, t1100 only zone 1100.
        assert zones["t0"] == "zone 1500"
        assert zones["t1099"] == "zone 2599"
        assert zones["t1100"] == "zone 1100"
        assert len(zones) == 3 + 1500
    finally:
        await engine.dispose()
