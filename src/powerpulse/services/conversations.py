"""Reading conversations and their metrics for one tenant."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import BadUserInput
from ..ingest.records import clean_text
from ..repositories.analyses import AnalysisRepository
from ..repositories.conversations import ConversationRepository
from ..repositories.messages import TIME_ORDER, MessageRepository
from .base import ReadService
from .filters import ConversationFilter, ConversationOrder, resolve_filter


@dataclass(slots=True)
class Page:
    """A keyset page: rows with their cursors, and whether another page follows."""

    rows: list[Mapping[str, Any]]
    cursors: list[str]
    has_next_page: bool

    @property
    def end_cursor(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


# (conversation id, first, after cursor or None): one conversation's page of messages.
MessagePageRequest = tuple[int, int, str | None]


# Up to this many messages in one read run in place (Database.read(quick=True)).
QUICK_MESSAGE_ROWS = 1000


def check_page_size(first: int, limit: int) -> None:
    if first < 0 or first > limit:
        raise BadUserInput(f"`first` must be between 0 and {limit}, got {first}")


class ConversationService(ReadService):
    @property
    def max_page_size(self) -> int:
        return self._settings.max_page_size

    def _conversations(self, connection: Any) -> ConversationRepository:
        return ConversationRepository(connection, csi=self._csi)

    async def page(
        self,
        tenant_id: int,
        selection: ConversationFilter | None,
        *,
        order: ConversationOrder,
        first: int,
        after: str | None,
    ) -> Page:
        check_page_size(first, self._settings.max_page_size)
        criteria = resolve_filter(selection, await self._zone(tenant_id))
        quick = ConversationRepository.reads_few(criteria, order)
        async with self._database.read(quick=quick) as connection:
            rows, has_next, ordering = await self._conversations(connection).page(
                tenant_id, criteria, order=order, first=first, after=after
            )
        return Page(rows, [ordering.cursor_for(row) for row in rows], has_next)

    async def count(self, tenant_id: int, selection: ConversationFilter | None) -> int:
        """How many conversations the filter selects (kept while the data is unchanged)."""
        criteria = resolve_filter(selection, await self._zone(tenant_id))

        async def count(version: int) -> int:
            _facts, mask = await self._selected(tenant_id, version, criteria)
            return int(mask.sum())

        # Exact: the count goes with a page read from the database at the same moment.
        return await self._kept(tenant_id, ("conversation_count", criteria), count, exact=True)

    async def get(self, tenant_id: int, chat_id: str) -> Mapping[str, Any] | None:
        # Chat ids were stored cleaned (no NUL, no unpaired surrogates, which the drivers
        # refuse); a lookup is cleaned the same way.
        chat_id = clean_text(chat_id)
        async with self._database.read(quick=True) as connection:
            return await self._conversations(connection).get_by_chat_id(tenant_id, chat_id)

    async def agents(self, tenant_id: int, conversation_ids: list[int]) -> dict[int, list[str]]:
        async with self._database.read(quick=True) as connection:
            return await self._conversations(connection).agents_for(tenant_id, conversation_ids)

    async def topics(self, tenant_id: int, conversation_ids: list[int]) -> dict[int, list[str]]:
        async with self._database.read(quick=True) as connection:
            return await AnalysisRepository(connection).topics_for(tenant_id, conversation_ids)

    async def message_pages(
        self, tenant_id: int, requests: Sequence[MessagePageRequest]
    ) -> list[Page | BadUserInput]:
        """A page of messages for each request, all read in one statement.

        A request with a `first` out of range or a cursor that is not valid gets its
        BadUserInput instead of a page; the others are answered all the same.
        """
        answers: list[Page | BadUserInput | None] = []  # None: to be read
        valid: list[MessagePageRequest] = []
        for request in requests:
            try:
                check_page_size(request[1], self._settings.max_page_size)
            except BadUserInput as exc:
                answers.append(exc)
                continue
            answers.append(None)
            valid.append(request)
        read = []
        if valid:
            # Each page is a limited read along the messages' index.
            quick = sum(request[1] for request in valid) <= QUICK_MESSAGE_ROWS
            async with self._database.read(quick=quick) as connection:
                read = await MessageRepository(connection).pages(tenant_id, valid)
        pages = iter(read)
        return [_message_page(next(pages)) if answer is None else answer for answer in answers]


def _message_page(
    found: tuple[list[Mapping[str, Any]], bool] | BadUserInput,
) -> Page | BadUserInput:
    if isinstance(found, BadUserInput):
        return found
    rows, has_next = found
    return Page(rows, [TIME_ORDER.cursor_for(row) for row in rows], has_next)
