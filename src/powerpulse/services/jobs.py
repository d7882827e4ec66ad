"""Reading analysis jobs for one tenant."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..db import Database
from ..repositories.jobs import JobRepository
from ..settings import Settings
from .conversations import Page, check_page_size


class JobService:
    def __init__(self, database: Database, settings: Settings) -> None:
        self._database = database
        self._settings = settings

    async def get(self, tenant_id: int, job_id: int) -> Mapping[str, Any] | None:
        async with self._database.read(quick=True) as connection:
            return await JobRepository(connection).get(tenant_id, job_id)

    async def page(self, tenant_id: int, *, first: int, after: str | None) -> Page:
        check_page_size(first, self._settings.max_page_size)
        async with self._database.read(quick=True) as connection:
            rows, has_next, ordering = await JobRepository(connection).page(
                tenant_id, first=first, after=after
            )
        return Page(rows, [ordering.cursor_for(row) for row in rows], has_next)

    async def count(self, tenant_id: int) -> int:
        async with self._database.read(quick=True) as connection:
            return await JobRepository(connection).count(tenant_id)
