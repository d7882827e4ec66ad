"""The Customer Satisfaction Index, computed in SQL, checked against hand-computed values on
SQLite and PostgreSQL.

effectiveness = 50 × resolved + 50 × firstContactResolution
effort        = (effortScore − 1) / 4 × 100
efficiency    = 100 at or below the target (5 min), 0 at or above the limit (240 min),
                100 × (ln limit − ln m) / (ln limit − ln target) between; without an agent
                answer 100 if resolved, else 0
empathy       = 50 × (sentimentScore − 1) / 4 + 50 × (finalSentiment − 1) / 4
CSI           = 0.40 effectiveness + 0.25 effort + 0.15 efficiency + 0.20 empathy

Conversations and analyses are written straight into the tables, so every input is exact.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import insert

from powerpulse.db import Database, create_engine, create_schema
from powerpulse.models import Conversation, ConversationAnalysis
from powerpulse.repositories.tenants import TenantRepository
from powerpulse.services.analytics import AnalyticsService
from powerpulse.services.conversations import ConversationService
from powerpulse.services.filters import ConversationFilter
from powerpulse.settings import Settings

conversations = Conversation.__table__  # type: ignore[attr-defined]
analyses = ConversationAnalysis.__table__  # type: ignore[attr-defined]
START = datetime(2025, 8, 1, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Case:
    """One conversation: its first response time and its analysis (None: none stored)."""

    frt: float | None
    resolved: bool | None = None
    fcr: bool | None = None
    effort: int | None = None
    sentiment: int | None = None
    final: int | None = None
    status: str | None = "DONE"


CASES: dict[str, Case] = {
    # pillars (50, 75, 100, 75): 20 + 18.75 + 15 + 15
    "at-target": Case(5.0, resolved=True, fcr=False, effort=4, sentiment=3, final=5),
    # pillars (100, 50, 0, 50): 40 + 12.5 + 0 + 10
    "at-limit": Case(240.0, resolved=True, fcr=True, effort=3, sentiment=2, final=4),
    # pillars (0, 25, 100 ln 8 / ln 48 ≈ 53.7157, 25): 0 + 6.25 + 8.0574 + 5
    "between": Case(30.0, resolved=False, fcr=False, effort=2, sentiment=3, final=1),
    # pillars (0, 0, 100, 0): 15
    "below-target": Case(0.5, resolved=False, fcr=False, effort=1, sentiment=1, final=1),
    # pillars (100, 100, 0, 100): 85
    "over-limit": Case(1000.0, resolved=True, fcr=True, effort=5, sentiment=5, final=5),
    # nobody answered, resolved: pillars (100, 100, 100, 75): 95
    "no-answer-resolved": Case(None, resolved=True, fcr=True, effort=5, sentiment=4, final=4),
    # nobody answered, not resolved: pillars (0, 25, 0, 12.5): 8.75
    "no-answer-unresolved": Case(None, resolved=False, fcr=False, effort=2, sentiment=2, final=1),
    # A re-analysis is pending: the previous judgement is kept but has no CSI.
    "pending": Case(3.0, resolved=True, fcr=True, effort=5, sentiment=5, final=5, status="PENDING"),
    "failed": Case(3.0, status="FAILED"),
    "never-analysed": Case(3.0, status=None),
}
LN_8_OVER_LN_48 = math.log(8) / math.log(48)  # ≈ 0.537157
EXPECTED: dict[str, tuple[float, float, float, float, float]] = {
    # chat: (score, effectiveness, effort, efficiency, empathy)
    "at-target": (68.75, 50, 75, 100, 75),
    "at-limit": (62.5, 100, 50, 0, 50),
    "between": (11.25 + 15 * LN_8_OVER_LN_48, 0, 25, 100 * LN_8_OVER_LN_48, 25),
    "below-target": (15, 0, 0, 100, 0),
    "over-limit": (85, 100, 100, 0, 100),
    "no-answer-resolved": (95, 100, 100, 100, 75),
    "no-answer-unresolved": (8.75, 0, 25, 0, 12.5),
}


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(create_engine(Settings(database_url=database_url, env="test")))
    await create_schema(database.engine)
    try:
        yield database
    finally:
        await database.dispose()


async def store(database: Database, cases: dict[str, Case]) -> int:
    """Write the cases as conversations (and analyses); returns the tenant id."""
    async with database.write() as connection:
        tenant_id = await TenantRepository(connection).ensure("default")
        for index, (chat_id, case) in enumerate(cases.items()):
            started = START + timedelta(hours=index)
            result = await connection.execute(
                insert(conversations)
                .values(
                    tenant_id=tenant_id,
                    chat_id=chat_id,
                    message_count=2,
                    customer_message_count=1,
                    agent_message_count=1 if case.frt is not None else 0,
                    bot_message_count=0,
                    first_message_at=started,
                    last_message_at=started + timedelta(minutes=case.frt or 0),
                    duration_minutes=case.frt or 0,
                    first_response_time_minutes=case.frt,
                    first_response_agent="jane" if case.frt is not None else None,
                    reply_count=1 if case.frt is not None else 0,
                    contact_count=1,
                    updated_at=START,
                )
                .returning(conversations.c.id)
            )
            conversation_id = result.scalar_one()
            if case.status is None:
                continue
            judged = case.sentiment is not None
            await connection.execute(
                insert(analyses).values(
                    conversation_id=conversation_id,
                    tenant_id=tenant_id,
                    status=case.status,
                    satisfaction_score=case.final,
                    is_satisfied=(case.final >= 4) if case.final is not None else None,
                    sentiment_score=case.sentiment,
                    initial_sentiment=case.sentiment,
                    final_sentiment=case.final,
                    sentiment_label="NEUTRAL" if judged else None,
                    resolved=case.resolved,
                    first_contact_resolution=case.fcr,
                    effort_score=case.effort,
                    summary="s" if judged else None,
                    language="en" if judged else None,
                    analyzed_at=START if judged else None,
                    updated_at=START,
                )
            )
    return tenant_id


def settings_for(database_url: str, **overrides: Any) -> Settings:
    return Settings(database_url=database_url, env="test", **overrides)


async def csi_of(service: ConversationService, tenant_id: int, chat_id: str) -> Any:
    row = await service.get(tenant_id, chat_id)
    assert row is not None, chat_id
    keys = ("csi", "csi_effectiveness", "csi_effort", "csi_efficiency", "csi_empathy")
    if row["csi"] is None:
        assert all(row[key] is None for key in keys), chat_id
        return None
    return tuple(float(row[key]) for key in keys)


def approx(values: Any) -> Any:
    return pytest.approx(values, rel=1e-9, abs=1e-9)


# -- each conversation ----------------------------------------------------------------------


async def test_csi_and_pillars_of_each_conversation_match_hand_computed_values(
    database: Database, database_url: str, subtests: Any
) -> None:
    tenant_id = await store(database, CASES)
    service = ConversationService(database, settings_for(database_url))

    for chat_id, expected in EXPECTED.items():
        with subtests.test(chat_id=chat_id):
            assert await csi_of(service, tenant_id, chat_id) == approx(expected)


async def test_first_response_exactly_at_target_scores_full_efficiency(
    database: Database, database_url: str
) -> None:
    tenant_id = await store(database, {"at-target": CASES["at-target"]})
    service = ConversationService(database, settings_for(database_url))

    found = await csi_of(service, tenant_id, "at-target")

    assert found[3] == pytest.approx(100.0, abs=1e-12)
    assert found[0] == pytest.approx(68.75)


async def test_first_response_exactly_at_limit_scores_no_efficiency(
    database: Database, database_url: str
) -> None:
    tenant_id = await store(database, {"at-limit": CASES["at-limit"]})
    service = ConversationService(database, settings_for(database_url))

    found = await csi_of(service, tenant_id, "at-limit")

    assert found[3] == pytest.approx(0.0, abs=1e-12)
    assert found[0] == pytest.approx(62.5)


async def test_efficiency_is_linear_in_log_minutes_between_target_and_limit(
    database: Database, database_url: str
) -> None:
    # ln 5 = 1.6094, ln 240 = 5.4806, ln 30 = 3.4012: (5.4806 - 3.4012) / 3.8712 = 0.5372.
    steps = {f"frt-{m:g}": Case(m, False, False, 1, 1, 1) for m in (10, 30, 60, 120)}
    tenant_id = await store(database, steps)
    service = ConversationService(database, settings_for(database_url))

    found = {m: (await csi_of(service, tenant_id, f"frt-{m:g}"))[3] for m in (10, 30, 60, 120)}

    assert found[30] == pytest.approx(53.7157, abs=1e-4)
    for minutes, efficiency in found.items():
        assert efficiency == approx(100 * math.log(240 / minutes) / math.log(48)), minutes
    # Each doubling of the wait costs the same: 100 ln 2 / ln 48 ≈ 17.905 points.
    assert found[60] - found[120] == approx(found[30] - found[60])
    assert found[60] - found[120] == pytest.approx(17.9052, abs=1e-4)


async def test_without_an_agent_answer_efficiency_follows_resolution(
    database: Database, database_url: str
) -> None:
    tenant_id = await store(
        database,
        {
            "resolved": CASES["no-answer-resolved"],
            "unresolved": CASES["no-answer-unresolved"],
        },
    )
    service = ConversationService(database, settings_for(database_url))

    assert (await csi_of(service, tenant_id, "resolved"))[3] == 100.0
    assert (await csi_of(service, tenant_id, "unresolved"))[3] == 0.0


async def test_conversations_without_a_done_analysis_have_no_csi(
    database: Database, database_url: str
) -> None:
    tenant_id = await store(database, CASES)
    service = ConversationService(database, settings_for(database_url))

    for chat_id in ("pending", "failed", "never-analysed"):
        assert await csi_of(service, tenant_id, chat_id) is None, chat_id


# -- over a selection -----------------------------------------------------------------------


async def test_selection_csi_is_the_mean_over_analysed_conversations(
    database: Database, database_url: str
) -> None:
    tenant_id = await store(database, CASES)
    service = AnalyticsService(database, settings_for(database_url))

    totals = await service.metrics(tenant_id, None)

    assert totals.total_conversations == 10
    assert totals.analyzed_conversations == 7
    columns = list(zip(*EXPECTED.values(), strict=True))
    means = [sum(column) / 7 for column in columns]
    assert (
        totals.csi,
        totals.csi_effectiveness,
        totals.csi_effort,
        totals.csi_efficiency,
        totals.csi_empathy,
    ) == approx(tuple(means))
    # effectiveness: (50 + 100 + 0 + 0 + 100 + 100 + 0) / 7 = 350 / 7 = 50.
    assert totals.csi_effectiveness == approx(50.0)


async def test_csi_filters_use_the_same_score(database: Database, database_url: str) -> None:
    tenant_id = await store(database, CASES)
    service = AnalyticsService(database, settings_for(database_url))

    async def chats(**bounds: float) -> int:
        return (await service.metrics(tenant_id, ConversationFilter(**bounds))).total_conversations

    # Scores: 95, 85, 68.75, 62.5, ≈ 19.31, 15, 8.75; the others have none.
    assert await chats(min_csi=62.5) == 4  # inclusive
    assert await chats(min_csi=62.5001) == 3
    assert await chats(max_csi=15) == 2
    assert await chats(min_csi=15, max_csi=68.75) == 4
    assert await chats(min_csi=0) == 7  # never one without a score


# -- configuration --------------------------------------------------------------------------

CUSTOM_WEIGHTS = {"effectiveness": 0.1, "effort": 0.2, "efficiency": 0.3, "empathy": 0.4}


async def test_custom_weights_and_thresholds_change_the_score(
    database: Database, database_url: str
) -> None:
    cases = {
        "at-target": CASES["at-target"],  # 5 min, below the new target of 10
        "between": CASES["between"],  # 30 min, between 10 and 60
        "at-limit": CASES["at-limit"],  # 240 min, over the new limit of 60
        "new-target": Case(10.0, False, False, 1, 1, 1),
        "new-limit": Case(60.0, False, False, 1, 1, 1),
    }
    tenant_id = await store(database, cases)
    settings = settings_for(
        database_url,
        csi_weights=CUSTOM_WEIGHTS,
        csi_frt_target_minutes=10,
        csi_frt_limit_minutes=60,
    )
    service = ConversationService(database, settings)

    # 0.1 × 50 + 0.2 × 75 + 0.3 × 100 + 0.4 × 75 = 5 + 15 + 30 + 30
    assert await csi_of(service, tenant_id, "at-target") == approx((80.0, 50, 75, 100, 75))
    # efficiency 100 ln(60/30) / ln(60/10) = 100 ln 2 / ln 6 ≈ 38.685;
    # 0.2 × 25 + 0.3 × 38.685 + 0.4 × 25 ≈ 26.606
    efficiency = 100 * math.log(2) / math.log(6)
    assert efficiency == pytest.approx(38.6853, abs=1e-4)
    assert await csi_of(service, tenant_id, "between") == approx(
        (15 + 0.3 * efficiency, 0, 25, efficiency, 25)
    )
    # 0.1 × 100 + 0.2 × 50 + 0.3 × 0 + 0.4 × 50 = 10 + 10 + 0 + 20
    assert await csi_of(service, tenant_id, "at-limit") == approx((40.0, 100, 50, 0, 50))
    assert (await csi_of(service, tenant_id, "new-target"))[3] == pytest.approx(100.0)
    assert (await csi_of(service, tenant_id, "new-limit"))[3] == pytest.approx(0.0, abs=1e-12)
    totals = await AnalyticsService(database, settings).metrics(tenant_id, None)
    assert totals.csi == approx((80 + 15 + 0.3 * efficiency + 40 + 30 + 0) / 5)


def test_weights_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "POWERPULSE_CSI_WEIGHTS",
        '{"effectiveness": 0.1, "effort": 0.2, "efficiency": 0.3, "empathy": 0.4}',
    )
    monkeypatch.setenv("POWERPULSE_CSI_FRT_TARGET_MINUTES", "10")
    monkeypatch.setenv("POWERPULSE_CSI_FRT_LIMIT_MINUTES", "60")

    settings = Settings()

    assert settings.csi_weights == CUSTOM_WEIGHTS
    assert (settings.csi_frt_target_minutes, settings.csi_frt_limit_minutes) == (10, 60)


def test_default_weights_are_the_documented_ones() -> None:
    settings = Settings()

    assert settings.csi_weights == {
        "effectiveness": 0.40,
        "effort": 0.25,
        "efficiency": 0.15,
        "empathy": 0.20,
    }
    assert (settings.csi_frt_target_minutes, settings.csi_frt_limit_minutes) == (5, 240)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            {
                "csi_weights": {
                    "effectiveness": 0.5,
                    "effort": 0.25,
                    "efficiency": 0.15,
                    "empathy": 0.2,
                }
            },
            "sum to 1",
        ),
        ({"csi_weights": {"effectiveness": 0.5, "effort": 0.5, "efficiency": 0.0}}, "keys"),
        (
            {
                "csi_weights": {
                    "effectiveness": 0.4,
                    "effort": 0.25,
                    "efficiency": 0.15,
                    "empathy": 0.2,
                    "speed": 0.0,
                }
            },
            "keys",
        ),
        (
            {
                "csi_weights": {
                    "effectiveness": 1.2,
                    "effort": -0.2,
                    "efficiency": 0.0,
                    "empathy": 0.0,
                }
            },
            "negative",
        ),
        ({"csi_frt_target_minutes": 240, "csi_frt_limit_minutes": 240}, "exceed"),
        ({"csi_frt_target_minutes": 30, "csi_frt_limit_minutes": 10}, "exceed"),
        ({"csi_frt_target_minutes": 0}, "greater than 0"),
    ],
)
def test_invalid_csi_settings_are_rejected(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**overrides)
