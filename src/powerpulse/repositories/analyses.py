"""SQL for conversation analyses and their topics."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from sqlalchemy import and_, delete, select, update

from ..models import AnalysisStatus, ConversationAnalysis, ConversationTopic, utcnow
from .base import Repository

analyses = ConversationAnalysis.__table__  # type: ignore[attr-defined]
topics = ConversationTopic.__table__  # type: ignore[attr-defined]
_a = analyses.c

RESULT_COLUMNS = (
    "status",
    "failure_reason",
    "content_hash",
    "fingerprint",
    "satisfaction_score",
    "is_satisfied",
    "sentiment_score",
    "initial_sentiment",
    "final_sentiment",
    "sentiment_label",
    "resolved",
    "first_contact_resolution",
    "effort_score",
    "summary",
    "language",
    "analyzer",
    "model",
    "prompt_version",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "analyzed_at",
    "updated_at",
)


class AnalysisRepository(Repository):
    async def mark_pending(
        self,
        tenant_id: int,
        conversation_ids: Sequence[int],
        *,
        created: Collection[int] = (),
        version: int,
    ) -> None:
        """New or changed conversations wait for analysis; an older judgement is kept.

        `created` are conversations made by this transaction: they have no analysis row
        yet, so they are not looked up.
        """
        if not conversation_ids:
            return
        now = utcnow()
        unknown = [cid for cid in conversation_ids if cid not in created]
        existing: set[int] = set()
        if unknown:
            existing = set(
                (
                    await self.lookup(
                        self.each_by_key(
                            analyses, _a.conversation_id, tenant_id, unknown, [_a.conversation_id]
                        )
                    )
                ).scalars()
            )
        if existing:
            await self.connection.execute(
                update(analyses)
                .where(
                    self.owned_by(_a.tenant_id, tenant_id),
                    self.among(_a.conversation_id, sorted(existing)),
                )
                .values(status=AnalysisStatus.PENDING.value, updated_at=now, data_version=version)
            )
        await self.insert_for_conversations(
            analyses,
            tenant_id,
            (),
            [
                (conversation_id, ())
                for conversation_id in conversation_ids
                if conversation_id not in existing
            ],
            {
                "status": AnalysisStatus.PENDING.value,
                "input_tokens": 0,
                "output_tokens": 0,
                "cost_usd": 0.0,
                "updated_at": now,
                "data_version": version,
            },
        )

    async def state_of(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, Mapping[str, Any]]:
        """Status, fingerprint and content hash of each conversation's analysis."""
        if not conversation_ids:
            return {}
        rows = await self.lookup(
            self.each_by_key(
                analyses,
                _a.conversation_id,
                tenant_id,
                conversation_ids,
                [_a.conversation_id, _a.status, _a.fingerprint, _a.content_hash],
            )
        )
        return {row.conversation_id: row._mapping for row in rows}

    async def set_status(
        self,
        tenant_id: int,
        conversation_ids: Sequence[int],
        status: AnalysisStatus,
        *,
        failure_reason: str | None = None,
        version: int,
    ) -> None:
        if not conversation_ids:
            return
        await self.connection.execute(
            update(analyses)
            .where(
                self.owned_by(_a.tenant_id, tenant_id),
                self.among(_a.conversation_id, conversation_ids),
            )
            .values(
                status=status.value,
                failure_reason=failure_reason,
                updated_at=utcnow(),
                data_version=version,
            )
        )

    async def store(
        self,
        tenant_id: int,
        rows: Sequence[dict[str, Any]],
        topic_rows: Sequence[tuple[int, str, int]],
        *,
        version: int,
    ) -> None:
        """Write finished analyses (rows carry conversation_id and RESULT_COLUMNS)."""
        if not rows:
            return
        await self.upsert(
            analyses,
            [{**row, "tenant_id": tenant_id, "data_version": version} for row in rows],
            key=("conversation_id",),
            update=(*RESULT_COLUMNS, "data_version"),
        )
        ids = [row["conversation_id"] for row in rows]
        await self.connection.execute(
            delete(topics).where(
                and_(
                    self.owned_by(topics.c.tenant_id, tenant_id),
                    self.among(topics.c.conversation_id, ids),
                )
            )
        )
        # One statement (COPY on PostgreSQL), whose triggers then run once.
        await self.bulk_insert(
            topics,
            ("conversation_id", "topic", "position", "tenant_id"),
            [
                (conversation_id, topic, position, tenant_id)
                for conversation_id, topic, position in topic_rows
            ],
        )

    async def topics_for(
        self, tenant_id: int, conversation_ids: Sequence[int]
    ) -> dict[int, list[str]]:
        if not conversation_ids:
            return {}
        rows = await self.connection.execute(
            select(topics.c.conversation_id, topics.c.topic)
            .where(
                self.owned_by(topics.c.tenant_id, tenant_id),
                self.among(topics.c.conversation_id, conversation_ids),
            )
            .order_by(topics.c.conversation_id, topics.c.position)
        )
        found: dict[int, list[str]] = {conversation_id: [] for conversation_id in conversation_ids}
        for conversation_id, topic in rows:
            found[conversation_id].append(topic)
        return found
