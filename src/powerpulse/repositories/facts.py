"""SQL that reads a tenant's conversation facts for the in-memory analytics columns.

The facts are what aggregates need of each conversation (its measurements, its analysis
and CSI, its reply events, agents and topics), read either whole or for the conversations
whose rows changed since a data version (services/facts.py keeps them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import BigInteger, Integer, and_, case, cast, func, select, union

from ..models import AnalysisStatus
from ..services.filters import ConversationCriteria
from .base import Repository
from .selection import (
    DONE,
    SOURCE,
    CsiParameters,
    Selection,
    analyses,
    conversation_agents,
    conversations,
    reply_events,
    topics,
)

_c = conversations.c
_a = analyses.c
# Ids per statement when SQLite reads facts by conversation id (PostgreSQL sends one array).
SQLITE_IDS_PER_STATEMENT = 10_000
STATUS_CODES = {
    AnalysisStatus.PENDING.value: 0,
    AnalysisStatus.DONE.value: 1,
    AnalysisStatus.FAILED.value: 2,
}
SENTIMENT_LABELS = ("NEGATIVE", "NEUTRAL", "POSITIVE")


def epoch_microseconds(column: Any, *, postgres: bool) -> Any:
    """Microseconds since 1970 of a stored timestamp, exactly, as an integer expression.

    SQLite stores naive UTC text with six fraction digits (models.UTCDateTime); strftime
    gives the whole seconds and the fraction is read off the text.
    """
    if postgres:
        return cast(func.extract("epoch", column) * 1_000_000, BigInteger)
    seconds = cast(func.strftime("%s", column), Integer)
    return seconds * 1_000_000 + cast(func.substr(column, 21, 6), Integer)


class FactRepository(Repository):
    def __init__(self, connection: Any, *, csi: CsiParameters | None = None) -> None:
        super().__init__(connection)
        self.csi_parameters = csi or CsiParameters()

    async def begin_snapshot(self) -> None:
        """Make the reads that follow see one committed state, whatever commits meanwhile.

        PostgreSQL: a REPEATABLE READ transaction. SQLite (WAL): an explicit read
        transaction, which keeps its snapshot until the connection goes back to the pool.
        """
        if self.is_postgres:
            await self.connection.execution_options(isolation_level="REPEATABLE READ")
        else:
            await self.connection.exec_driver_sql("BEGIN")

    async def changed_since(self, tenant_id: int, version: int) -> list[int]:
        """Conversations whose own row or analysis row was written after `version`."""
        statement = union(
            select(_c.id).where(_c.tenant_id == tenant_id, _c.data_version > version),
            select(_a.conversation_id).where(_a.tenant_id == tenant_id, _a.data_version > version),
        )
        return [int(row[0]) for row in await self.connection.execute(statement)]

    async def conversations(
        self, tenant_id: int, ids: Sequence[int] | None = None
    ) -> list[Sequence[Any]]:
        """Every conversation's facts, or those of `ids`, in services/facts.py's column order.

        Judgements count only while their analysis is DONE (a changed chat keeps its old
        one while it waits to be judged again): otherwise flags and scores read -1, the
        language NULL and tokens and cost 0, and the CSI is NULL already.
        """
        selection = Selection(tenant_id, ConversationCriteria(), self.csi_parameters)
        csi = selection.csi

        def judged(column: Any, otherwise: Any = -1) -> Any:
            return case((DONE, func.coalesce(cast(column, Integer), otherwise)), else_=otherwise)

        statement = select(
            _c.id,
            epoch_microseconds(_c.first_message_at, postgres=self.is_postgres),
            _c.message_count,
            _c.customer_message_count,
            _c.agent_message_count,
            _c.bot_message_count,
            _c.contact_count,
            _c.first_response_time_minutes,
            _c.first_response_agent,
            case(
                *((_a.status == name, code) for name, code in STATUS_CODES.items()),
                else_=STATUS_CODES[AnalysisStatus.PENDING.value],
            ),
            judged(_a.is_satisfied),
            judged(_a.first_contact_resolution),
            judged(_a.resolved),
            judged(_a.satisfaction_score),
            judged(_a.sentiment_score),
            judged(_a.effort_score),
            case(
                *(
                    (and_(DONE, _a.sentiment_label == label), code)
                    for code, label in enumerate(SENTIMENT_LABELS)
                ),
                else_=-1,
            ),
            case((DONE, _a.language), else_=None),
            judged(_a.input_tokens, 0),
            judged(_a.output_tokens, 0),
            case((DONE, func.coalesce(_a.cost_usd, 0.0)), else_=0.0),
            csi["csi"],
            csi["csi_effectiveness"],
            csi["csi_effort"],
            csi["csi_efficiency"],
            csi["csi_empathy"],
        ).select_from(SOURCE)
        if ids is None:
            return await self._fetch(statement.where(*selection.conditions))
        found: list[Sequence[Any]] = []
        for chunk in self._chunks(ids):
            found.extend(
                await self._fetch(
                    statement.where(
                        self.owned_by(_c.tenant_id, tenant_id), self.among(_c.id, chunk)
                    )
                )
            )
        return found

    async def reply_events(
        self, tenant_id: int, ids: Sequence[int] | None = None
    ) -> list[Sequence[Any]]:
        """(conversation id, agent, response minutes) of every reply event."""
        table = reply_events
        columns = (table.c.conversation_id, table.c.agent, table.c.response_minutes)
        return await self._children(table, columns, tenant_id, ids)

    async def agents(self, tenant_id: int, ids: Sequence[int] | None = None) -> list[Sequence[Any]]:
        """(conversation id, agent, messages the agent wrote in it)."""
        table = conversation_agents
        columns = (table.c.conversation_id, table.c.agent, table.c.message_count)
        return await self._children(table, columns, tenant_id, ids)

    async def topics(self, tenant_id: int, ids: Sequence[int] | None = None) -> list[Sequence[Any]]:
        """(conversation id, topic) of every analysis topic."""
        columns = (topics.c.conversation_id, topics.c.topic)
        return await self._children(topics, columns, tenant_id, ids)

    async def matching(self, tenant_id: int, criteria: ConversationCriteria) -> list[int]:
        """Ids of the conversations a filter selects, by the filter's own SQL.

        For the conditions the facts do not hold: message text (`search`) and chat ids.
        """
        selection = Selection(tenant_id, criteria, self.csi_parameters)
        return [int(row[0]) for row in await self.connection.execute(selection.ids())]

    async def _children(
        self,
        table: Any,
        columns: Sequence[Any],
        tenant_id: int,
        ids: Sequence[int] | None,
    ) -> list[Sequence[Any]]:
        statement = select(*columns)
        if ids is None:
            return await self._fetch(statement.where(table.c.tenant_id == tenant_id))
        found: list[Sequence[Any]] = []
        for chunk in self._chunks(ids):
            found.extend(
                await self._fetch(
                    statement.where(
                        self.owned_by(table.c.tenant_id, tenant_id),
                        self.among(table.c.conversation_id, chunk),
                    )
                )
            )
        return found

    async def _fetch(self, statement: Any) -> list[Sequence[Any]]:
        """All rows of a read as the driver gives them (tuples, or asyncpg records).

        Skipping SQLAlchemy's result rows halves the time for hundreds of thousands of
        rows, which the facts turn into arrays anyway. The statement's parameters must be
        plain numbers, strings or (PostgreSQL) arrays: no type processing happens.
        """
        compiled = statement.compile(
            dialect=self.connection.dialect, compile_kwargs={"render_postcompile": True}
        )
        values = compiled.construct_params()
        parameters = tuple(values[name] for name in compiled.positiontup or ())
        result = await self.connection.exec_driver_sql(str(compiled), parameters)
        try:
            return list(result.cursor.fetchall())
        finally:
            result.close()

    def _chunks(self, ids: Sequence[int]) -> Iterator[Sequence[int]]:
        if self.is_postgres:
            yield ids
            return
        for start in range(0, len(ids), SQLITE_IDS_PER_STATEMENT):
            yield ids[start : start + SQLITE_IDS_PER_STATEMENT]
