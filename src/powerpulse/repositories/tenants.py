"""SQL for tenants."""

from __future__ import annotations

from sqlalchemy import insert, select

from ..models import Tenant, utcnow
from .base import Repository

tenants = Tenant.__table__  # type: ignore[attr-defined]


class TenantRepository(Repository):
    async def id_by_name(self, name: str) -> int | None:
        return (
            await self.connection.execute(select(tenants.c.id).where(tenants.c.name == name))
        ).scalar_one_or_none()

    async def create(self, name: str) -> int:
        result = await self.connection.execute(
            insert(tenants).values(name=name, created_at=utcnow()).returning(tenants.c.id)
        )
        return int(result.scalar_one())

    async def ensure(self, name: str) -> int:
        existing = await self.id_by_name(name)
        return existing if existing is not None else await self.create(name)
