"""SQL that reads a tenant's conversation facts for the in-memory analytics columns.

The facts are what aggregates need of each conversation (its measurements, its analysis
and CSI, its reply events, agents and topics), read either whole or for the conversations
whose rows changed since a data version (services/facts.py keeps them).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
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
    csi_columns,
    reply_events,
    topics,
)

_c = conversations.c
_a = analyses.c
# Conversations per statement: the caller turns each statement's rows into arrays before
# the next is read, so reading a tenant of any size holds one batch of rows as Python
# objects at a time (a conversation's children are a few rows each). Below SQLite's limit
# of bound parameters, for reads by lists of ids.
CONVERSATIONS_PER_BATCH = 20_000
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
    def __init__(
        self,
        connection: Any,
        *,
        csi: CsiParameters | None = None,
        batch: int = CONVERSATIONS_PER_BATCH,
    ) -> None:
        super().__init__(connection)
        self.csi_parameters = csi or CsiParameters()
        self._batch = batch

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

    def conversations(
        self, tenant_id: int, ids: Sequence[int] | None = None
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """Every conversation's facts, or those of `ids`, in services/facts.py's column order,
        a batch of rows at a time.

        Judgements count only while their analysis is DONE (a changed chat keeps its old
        one while it waits to be judged again): otherwise flags and scores read -1, the
        language NULL and tokens and cost 0, and the CSI is NULL already.
        """
        csi = csi_columns(self.csi_parameters)

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
        if ids is not None:
            return self._batches(
                statement.where(self.owned_by(_c.tenant_id, tenant_id), self.among(_c.id, chunk))
                for chunk in self._chunks(ids)
            )
        return self._every_conversation(statement.where(self.owned_by(_c.tenant_id, tenant_id)))

    async def _every_conversation(self, statement: Any) -> AsyncIterator[list[Sequence[Any]]]:
        """A whole tenant's conversations, in batches by id (keyset: each batch walks the
        primary key on from the last id of the one before; the tenant is checked per row,
        as `owned_by` explains, so no index on the tenant is chosen and sorted instead)."""
        last = None
        while True:
            page = statement if last is None else statement.where(_c.id > last)
            rows = await self._fetch(page.order_by(_c.id).limit(self._batch))
            if rows:
                yield rows
            if len(rows) < self._batch:
                return
            last = rows[-1][0]

    def reply_events(
        self, tenant_id: int, ids: Sequence[int], *, every: bool = False
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """(conversation id, agent, response minutes) of every reply event."""
        table = reply_events
        columns = (table.c.conversation_id, table.c.agent, table.c.response_minutes)
        return self._children(table, columns, tenant_id, ids, every=every)

    def agents(
        self, tenant_id: int, ids: Sequence[int], *, every: bool = False
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """(conversation id, agent, messages the agent wrote in it)."""
        table = conversation_agents
        columns = (table.c.conversation_id, table.c.agent, table.c.message_count)
        return self._children(table, columns, tenant_id, ids, every=every)

    def topics(
        self, tenant_id: int, ids: Sequence[int], *, every: bool = False
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """(conversation id, topic) of every analysis topic."""
        columns = (topics.c.conversation_id, topics.c.topic)
        return self._children(topics, columns, tenant_id, ids, every=every)

    async def matching(self, tenant_id: int, criteria: ConversationCriteria) -> list[int]:
        """Ids of the conversations a filter selects, by the filter's own SQL.

        For the conditions the facts do not hold: message text (`search`) and chat ids.
        """
        selection = Selection(tenant_id, criteria, self.csi_parameters)
        return [int(row[0]) for row in await self.connection.execute(selection.ids())]

    def _children(
        self,
        table: Any,
        columns: Sequence[Any],
        tenant_id: int,
        ids: Sequence[int],
        *,
        every: bool,
    ) -> AsyncIterator[list[Sequence[Any]]]:
        """Rows of `table` belonging to the conversations `ids` (ascending), a batch of
        conversations at a time. `every`: the ids are all the tenant's conversations, so
        each batch is read as a range of ids rather than a list of them."""
        statement = select(*columns)
        owner = table.c.conversation_id
        owned = self.owned_by(table.c.tenant_id, tenant_id)
        if every:
            return self._batches(
                statement.where(owned, owner.between(chunk[0], chunk[-1]))
                for chunk in self._chunks(ids)
            )
        return self._batches(
            statement.where(owned, self.among(owner, chunk)) for chunk in self._chunks(ids)
        )

    async def _batches(self, statements: Iterable[Any]) -> AsyncIterator[list[Sequence[Any]]]:
        for statement in statements:
            rows = await self._fetch(statement)
            if rows:
                yield rows

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
        for start in range(0, len(ids), self._batch):
            yield ids[start : start + self._batch]
