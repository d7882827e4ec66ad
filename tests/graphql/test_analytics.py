"""Analytics a support lead can act on: CSI, period comparison, time series, heatmap,
first-response histogram, agents and topics, each number reproducible by drill-down.

The analysed data set (TEAM) is judged by FakeOpenAI, whose documented rules give every
judgement by hand: a customer line's mood is 5 with "thank"/"asante", else 1 with the word
"still"/"not", else 3; satisfaction = final = mood of the last customer line, initial = mood
of the first, sentiment = (initial + final) // 2, resolved = satisfaction == 5, effort =
5 - (customer lines - 1) // 2 (at most 2 when the ending is unhappy); firstContactResolution
= resolved and contactCount == 1. CSI (default weights .40/.25/.15/.20, FRT target 5 min,
limit 240 min): effectiveness = 50 resolved + 50 FCR, effort = (effort - 1) × 25,
efficiency = 100 ln(240/m) / ln(48) between the target and the limit, empathy =
12.5 (sentiment - 1) + 12.5 (final - 1).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chat_exports import agent, customer, error_codes, export, upload_ok

from fakes.openai_server import FakeOpenAI

# -- the analysed data set ------------------------------------------------------------------

TEAM: dict[str, list[dict[str, Any]]] = {
    # Previous period (1-7 August).
    "g-limit": [  # first response exactly at the CSI limit: efficiency 0
        customer("2025-08-03T10:00:00Z", "my bill is not right"),
        agent("2025-08-03T14:00:00Z", "Corrected", username="jane"),
        customer("2025-08-03T14:10:00Z", "still wrong"),
    ],
    "h-token": [
        customer("2025-08-05T11:00:00Z", "token not received"),
        agent("2025-08-05T12:30:00Z", "Resent", username="mike"),
        customer("2025-08-05T12:35:00Z", "thanks"),
    ],
    "i-slow": [  # answered after 26 h by an agent known only by email: two contacts
        customer("2025-08-06T10:00:00Z", "need a new meter"),
        agent("2025-08-07T12:00:00Z", "Booked", email="bob@example.com"),
        customer("2025-08-07T12:10:00Z", "not happy with the wait"),
    ],
    # Current period (8-14 August); the 14th has no conversation starting.
    "a-token": [
        customer("2025-08-08T09:00:00Z", "my token did not arrive"),
        agent("2025-08-08T09:03:00Z", "Resent it", username="jane"),
        customer("2025-08-08T09:05:00Z", "got it, thank you"),
    ],
    "b-outage": [
        customer("2025-08-09T10:00:00Z", "power outage in my area"),
        agent("2025-08-09T10:30:00Z", "Crew dispatched", username="mike"),
        customer("2025-08-09T10:40:00Z", "still no power"),
    ],
    "c-billing": [  # jane answers first, mike answers the follow-up
        customer("2025-08-10T12:00:00Z", "question about my bill"),
        agent("2025-08-10T12:10:00Z", "Explained the charges", username="jane"),
        customer("2025-08-10T12:15:00Z", "and the due date"),
        agent("2025-08-10T12:20:00Z", "It is the 5th", username="mike"),
        customer("2025-08-10T12:30:00Z", "ok thanks"),
    ],
    "j-failed": [  # zed writes before the customer: no reply, no first response
        agent("2025-08-11T07:00:00Z", "Scheduled maintenance tonight", username="zed"),
        customer("2025-08-11T07:30:00Z", "ok"),
    ],
    "d-unanswered": [customer("2025-08-11T08:00:00Z", "hello is anyone there")],
    "e-swahili": [
        customer("2025-08-12T14:00:00Z", "habari, my token is missing"),
        agent("2025-08-12T16:00:00Z", "Sent", username="mike"),
        customer("2025-08-12T16:05:00Z", "asante"),
    ],
    "f-repeat": [  # first response exactly at the target; back 27 h later: two contacts
        customer("2025-08-13T09:00:00Z", "power outage again"),
        agent("2025-08-13T09:05:00Z", "Restoring", username="jane"),
        customer("2025-08-14T12:00:00Z", "thank you, power is back"),
    ],
}
TEAM_EXPORT = export(TEAM)
FAILED_CHAT = "j-failed"  # FakeOpenAI answers it malformed twice: analysis FAILED
CURRENT = {"startDate": "2025-08-08", "endDate": "2025-08-14"}
PREVIOUS = {"startDate": "2025-08-01", "endDate": "2025-08-07"}


def efficiency(minutes: float) -> float:
    """100 at 5 min, 0 at 240 min, linear in ln(minutes) between."""
    return 100 * math.log(240 / minutes) / math.log(240 / 5)


# chatId: (effectiveness, effort, efficiency, empathy), worked out from the rules above.
PILLARS: dict[str, tuple[float, float, float, float]] = {
    "g-limit": (0, 25, 0, 0),  # sentiment 1, final 1, effort 2, FRT 240
    "h-token": (100, 100, efficiency(90), 75),  # sentiment 3, final 5, effort 5
    "i-slow": (0, 25, 0, 12.5),  # sentiment 2, final 1, effort 2, FRT 1560
    "a-token": (100, 100, 100, 75),  # sentiment 3, final 5, FRT 3
    "b-outage": (0, 25, efficiency(30), 12.5),  # sentiment 2, final 1, effort 2
    "c-billing": (100, 75, efficiency(10), 87.5),  # three customer lines: effort 4
    "d-unanswered": (0, 100, 0, 50),  # nobody answered and not resolved: efficiency 0
    "e-swahili": (100, 100, efficiency(120), 87.5),
    "f-repeat": (50, 100, 100, 87.5),  # resolved, but two contacts: no FCR
}
WEIGHTS = (0.40, 0.25, 0.15, 0.20)
CSI = {
    chat_id: sum(w * p for w, p in zip(WEIGHTS, pillars, strict=True))
    for chat_id, pillars in PILLARS.items()
}
SATISFIED = {"h-token", "a-token", "c-billing", "e-swahili", "f-repeat"}


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def test_hand_computed_csi_values() -> None:
    assert efficiency(5) == pytest.approx(100)
    assert efficiency(240) == pytest.approx(0)
    assert efficiency(30) == pytest.approx(53.7157, abs=1e-4)
    assert CSI["a-token"] == pytest.approx(95.0)
    assert CSI["b-outage"] == pytest.approx(16.8074, abs=1e-4)
    assert CSI["c-billing"] == pytest.approx(88.5642, abs=1e-4)
    assert CSI["d-unanswered"] == pytest.approx(35.0)
    assert CSI["f-repeat"] == pytest.approx(77.5)
    assert CSI["g-limit"] == pytest.approx(6.25)
    assert CSI["i-slow"] == pytest.approx(8.75)


# -- helpers --------------------------------------------------------------------------------

JOB = "query($id: ID!) { job(id: $id) { status finishedAt } }"
CONVERSATIONS = """
query($filter: ConversationFilter) {
  conversations(first: 100, filter: $filter) {
    totalCount
    edges { node { chatId analysisStatus csi { score effectiveness effort efficiency empathy } } }
  }
}
"""
METRICS_FIELDS = """
totalConversations totalMessages customerMessages agentMessages botMessages agentCount
repeatContactConversations replyCount analyzedConversations csatPercentage fcrPercentage
resolutionRate avgFirstResponseTimeMinutes avgResponseTimeMinutes avgSentimentScore
csi csiEffectiveness csiEffort csiEfficiency csiEmpathy
"""
METRICS = f"""
query($filter: ConversationFilter) {{
  metrics(filter: $filter) {{ {METRICS_FIELDS} previousPeriod {{ {METRICS_FIELDS} }} }}
}}
"""
AGENT_FIELDS = (
    "agent conversations messages replyCount avgResponseTimeMinutes medianResponseTimeMinutes "
    "firstResponses avgFirstResponseTimeMinutes analyzedConversations csatPercentage "
    "resolutionRate avgCsi"
)
AGENTS = f"""
query($filter: ConversationFilter, $first: Int, $after: String, $order: AgentOrder!) {{
  agents(filter: $filter, first: $first, after: $after, orderBy: $order) {{
    totalCount
    pageInfo {{ hasNextPage hasPreviousPage endCursor }}
    edges {{ cursor node {{ {AGENT_FIELDS} }} }}
  }}
}}
"""
TOPICS = """
query($filter: ConversationFilter, $limit: Int) {
  topics(filter: $filter, limit: $limit) {
    topic conversations percentage csatPercentage avgSentimentScore resolutionRate avgCsi
    previousPeriodConversations
  }
}
"""
HISTOGRAM = """
query($filter: ConversationFilter) {
  firstResponseTimeHistogram(filter: $filter) { label minMinutes maxMinutes conversations }
}
"""
SERIES_FIELDS = (
    "totalConversations totalMessages customerMessages agentMessages botMessages replyCount "
    "repeatContactConversations analyzedConversations inputTokens outputTokens"
)
SERIES = f"""
query($filter: ConversationFilter, $interval: Interval!) {{
  timeseries(filter: $filter, interval: $interval) {{
    start metrics {{ {SERIES_FIELDS} }}
  }}
}}
"""
HEATMAP = """
query($filter: ConversationFilter) {
  activityHeatmap(filter: $filter) { weekday hour customerMessages conversationsStarted }
}
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def team(app_client_factory: Any, settings_factory: Any, fake: FakeOpenAI) -> Any:
    """A client over TEAM, analysed by FakeOpenAI (j-failed fails)."""
    client = await app_client_factory(
        settings_factory(
            analyzer="openai",
            openai_api_key="k",
            openai_base_url=fake.base_url,
            worker_poll_seconds=0.05,
            analysis_batch_size=1,
        )
    )
    fake.fail_chat(FAILED_CHAT, "malformed_json", times=2)
    payload = await upload_ok(client, TEAM_EXPORT, selection="job { id }")
    await wait_for_job(client, payload["job"]["id"])
    return client


async def wait_for_job(client: Any, job_id: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while True:
        job = (await client.data(JOB, {"id": job_id}))["job"]
        if job["finishedAt"] is not None:
            assert job["status"] == "PARTIAL", job  # every chat but j-failed analysed
            return
        assert time.monotonic() < deadline, f"job {job_id} did not finish"
        await asyncio.sleep(0.05)


@pytest.fixture
async def plain(app_client_factory: Any, settings_factory: Any) -> Any:
    """A client without an analysis worker (UTC): conversations stay PENDING."""
    return await app_client_factory(settings_factory(), run_worker=False)


async def zoned(app_client_factory: Any, settings_factory: Any, zone: str) -> Any:
    return await app_client_factory(settings_factory(timezone=zone), run_worker=False)


async def selected(client: Any, filter: dict[str, Any]) -> dict[str, dict[str, Any]]:
    data = (await client.data(CONVERSATIONS, {"filter": filter}))["conversations"]
    nodes = {edge["node"]["chatId"]: edge["node"] for edge in data["edges"]}
    assert data["totalCount"] == len(nodes)
    return nodes


async def count(client: Any, filter: dict[str, Any]) -> int:
    return len(await selected(client, filter))


async def metrics(client: Any, filter: dict[str, Any] | None = None) -> dict[str, Any]:
    return (await client.data(METRICS, {"filter": filter}))["metrics"]  # type: ignore[no-any-return]


async def agents(client: Any, order: str = "CONVERSATIONS_DESC", **variables: Any) -> Any:
    return (await client.data(AGENTS, {"order": order, **variables}))["agents"]


async def series(client: Any, interval: str, filter: dict[str, Any] | None = None) -> Any:
    return (await client.data(SERIES, {"filter": filter, "interval": interval}))["timeseries"]


def approx(value: Any) -> Any:
    return pytest.approx(value, rel=1e-9, abs=1e-9)


# -- CSI of each conversation and of the selection ------------------------------------------


async def test_each_analysed_conversation_carries_its_hand_computed_csi(team: Any) -> None:
    found = await selected(team, {})

    assert set(found) == set(TEAM)
    for chat_id, (effectiveness, effort, efficiency_, empathy) in PILLARS.items():
        assert found[chat_id]["csi"] == {
            "score": approx(CSI[chat_id]),
            "effectiveness": approx(effectiveness),
            "effort": approx(effort),
            "efficiency": approx(efficiency_),
            "empathy": approx(empathy),
        }, chat_id
    assert found[FAILED_CHAT]["analysisStatus"] == "FAILED"
    assert found[FAILED_CHAT]["csi"] is None


async def test_metrics_csi_is_the_mean_over_analysed_conversations(team: Any) -> None:
    found = await metrics(team, CURRENT)

    current = ["a-token", "b-outage", "c-billing", "d-unanswered", "e-swahili", "f-repeat"]
    assert found["totalConversations"] == 7  # with j-failed, which has no CSI
    assert found["analyzedConversations"] == 6
    assert found["csi"] == approx(mean([CSI[c] for c in current]))
    for index, field in enumerate(("csiEffectiveness", "csiEffort", "csiEfficiency", "csiEmpathy")):
        assert found[field] == approx(mean([PILLARS[c][index] for c in current])), field
    assert found["csiEffectiveness"] == approx(350 / 6)
    assert found["csiEmpathy"] == approx(400 / 6)


async def test_metrics_csi_is_null_when_nothing_is_analysed(plain: Any) -> None:
    await upload_ok(plain, TEAM_EXPORT)

    found = await metrics(plain)

    assert found["totalConversations"] == 10
    assert found["analyzedConversations"] == 0
    assert [found[f] for f in ("csi", "csiEffectiveness", "csiEffort")] == [None, None, None]


# -- previous period ------------------------------------------------------------------------


async def test_previous_period_is_the_equally_long_period_just_before(team: Any) -> None:
    found = await metrics(team, CURRENT)
    earlier = await metrics(team, PREVIOUS)

    previous = found["previousPeriod"]
    assert earlier["previousPeriod"] is not None  # 25-31 July: nothing there
    assert earlier["previousPeriod"]["totalConversations"] == 0
    assert previous == {key: value for key, value in earlier.items() if key != "previousPeriod"}
    # g-limit, h-token, i-slow: 9 messages, 3 reply events, only h-token satisfied.
    assert previous["totalConversations"] == 3
    assert previous["totalMessages"] == 9
    assert previous["replyCount"] == 3
    assert previous["analyzedConversations"] == 3
    assert previous["csatPercentage"] == approx(100 / 3)
    assert previous["csi"] == approx(mean([CSI["g-limit"], CSI["h-token"], CSI["i-slow"]]))
    assert previous["avgFirstResponseTimeMinutes"] == approx((240 + 90 + 1560) / 3)


async def test_previous_period_of_a_single_day_is_the_day_before(team: Any) -> None:
    found = await metrics(team, {"startDate": "2025-08-10", "endDate": "2025-08-10"})

    assert found["totalConversations"] == 1  # c-billing
    assert found["previousPeriod"]["totalConversations"] == 1  # b-outage on the 9th
    assert found["previousPeriod"]["csi"] == approx(CSI["b-outage"])


async def test_previous_period_is_null_without_both_dates(team: Any) -> None:
    for filter in (None, {}, {"startDate": "2025-08-08"}, {"endDate": "2025-08-14"}):
        assert (await metrics(team, filter))["previousPeriod"] is None, filter


async def test_previous_period_keeps_the_other_filters(team: Any) -> None:
    found = await metrics(team, {**CURRENT, "agent": "mike"})

    # Current: b-outage, c-billing, e-swahili; previous: h-token.
    assert found["totalConversations"] == 3
    assert found["previousPeriod"]["totalConversations"] == 1
    assert found["previousPeriod"]["csi"] == approx(CSI["h-token"])


# -- time series ----------------------------------------------------------------------------


async def test_day_series_has_every_day_of_the_range_with_empty_days(team: Any) -> None:
    buckets = await series(team, "DAY", CURRENT)

    assert [b["start"] for b in buckets] == [
        f"2025-08-{d:02d}T00:00:00+00:00" for d in range(8, 15)
    ]
    # 8th a-token, 9th b-outage, 10th c-billing, 11th j-failed + d-unanswered, 12th
    # e-swahili, 13th f-repeat (which ends on the 14th), 14th nothing.
    assert [b["metrics"]["totalConversations"] for b in buckets] == [1, 1, 1, 2, 1, 1, 0]
    assert [b["metrics"]["analyzedConversations"] for b in buckets] == [1, 1, 1, 1, 1, 1, 0]
    assert [b["metrics"]["totalMessages"] for b in buckets] == [3, 3, 5, 3, 3, 3, 0]
    assert [b["metrics"]["replyCount"] for b in buckets] == [1, 1, 2, 0, 1, 1, 0]


async def test_day_bucket_totals_add_up_to_the_overall_totals(team: Any) -> None:
    for filter in (CURRENT, None, {"agent": "jane"}, {"startDate": "2025-08-05"}):
        buckets = await series(team, "DAY", filter)
        overall = (
            await team.data(
                f"query($f: ConversationFilter) {{ metrics(filter: $f) {{ {SERIES_FIELDS} }} }}",
                {"f": filter},
            )
        )["metrics"]
        assert overall["totalConversations"] > 0
        for field, total in overall.items():
            assert sum(b["metrics"][field] for b in buckets) == total, (filter, field)


async def test_series_without_dates_spans_the_data(team: Any) -> None:
    buckets = await series(team, "DAY")

    # From g-limit (3 August) to f-repeat (13 August): 11 days.
    assert buckets[0]["start"] == "2025-08-03T00:00:00+00:00"
    assert buckets[-1]["start"] == "2025-08-13T00:00:00+00:00"
    assert len(buckets) == 11
    assert sum(b["metrics"]["totalConversations"] for b in buckets) == 10


async def test_each_day_bucket_is_the_conversations_of_that_day(team: Any) -> None:
    buckets = await series(team, "DAY", CURRENT)

    for bucket in buckets:
        day = bucket["start"][:10]
        assert bucket["metrics"]["totalConversations"] == await count(
            team, {"startDate": day, "endDate": day}
        ), day


async def test_week_buckets_start_on_monday(team: Any) -> None:
    # 8 August 2025 is a Friday: its week starts on Monday the 4th.
    buckets = await series(team, "WEEK", CURRENT)

    assert [b["start"] for b in buckets] == [
        "2025-08-04T00:00:00+00:00",
        "2025-08-11T00:00:00+00:00",
    ]
    # Only the filter's days count: h-token (5th) and i-slow (6th) stay out of the first week.
    assert [b["metrics"]["totalConversations"] for b in buckets] == [3, 4]


async def test_week_series_without_dates_starts_on_the_monday_before_the_data(team: Any) -> None:
    buckets = await series(team, "WEEK")

    # g-limit is on Sunday 3 August, in the week of Monday 28 July.
    assert [b["start"][:10] for b in buckets] == ["2025-07-28", "2025-08-04", "2025-08-11"]
    assert [b["metrics"]["totalConversations"] for b in buckets] == [1, 5, 4]


async def test_month_buckets_start_on_the_first_and_include_empty_months(team: Any) -> None:
    buckets = await series(team, "MONTH", {"startDate": "2025-07-20", "endDate": "2025-09-10"})

    assert [b["start"] for b in buckets] == [
        "2025-07-01T00:00:00+00:00",
        "2025-08-01T00:00:00+00:00",
        "2025-09-01T00:00:00+00:00",
    ]
    assert [b["metrics"]["totalConversations"] for b in buckets] == [0, 10, 0]


async def test_hour_buckets_cover_the_day(team: Any) -> None:
    buckets = await series(team, "HOUR", {"startDate": "2025-08-11", "endDate": "2025-08-11"})

    assert len(buckets) == 24
    assert buckets[0]["start"] == "2025-08-11T00:00:00+00:00"
    assert buckets[23]["start"] == "2025-08-11T23:00:00+00:00"
    counts = [b["metrics"]["totalConversations"] for b in buckets]
    assert counts[7] == 1  # j-failed at 07:00
    assert counts[8] == 1  # d-unanswered at 08:00
    assert sum(counts) == 2


async def test_series_of_an_empty_database_without_dates_is_empty(plain: Any) -> None:
    assert await series(plain, "DAY") == []


@pytest.mark.parametrize(
    ("interval", "filter"),
    [
        ("HOUR", {"startDate": "2025-01-01", "endDate": "2025-12-31"}),  # 8760 hours
        ("DAY", {"startDate": "2015-01-01", "endDate": "2025-12-31"}),  # 4018 days
    ],
)
async def test_too_many_buckets_is_bad_user_input(
    plain: Any, interval: str, filter: dict[str, Any]
) -> None:
    body = await plain.query(SERIES, {"filter": filter, "interval": interval})

    assert error_codes(body) == ["BAD_USER_INPUT"]
    assert body.get("data") is None


NAIROBI_CHATS = {
    # 21:00Z on the 9th is midnight on the 10th in Nairobi (+03:00).
    "n-midnight": [customer("2025-08-09T21:00:00Z", "hi")],
    # 20:59Z is 23:59 on the 10th.
    "n-late": [customer("2025-08-10T20:59:00Z", "hi")],
    # 22:30Z on the 10th is 01:30 on the 11th.
    "n-next-day": [customer("2025-08-10T22:30:00Z", "hi")],
}


async def test_day_buckets_follow_the_configured_timezone(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "Africa/Nairobi")
    await upload_ok(client, export(NAIROBI_CHATS))

    buckets = await series(client, "DAY", {"startDate": "2025-08-10", "endDate": "2025-08-11"})

    assert [b["start"] for b in buckets] == [
        "2025-08-10T00:00:00+03:00",
        "2025-08-11T00:00:00+03:00",
    ]
    assert [b["metrics"]["totalConversations"] for b in buckets] == [2, 1]
    unfiltered = await series(client, "DAY")
    assert [b["start"][:10] for b in unfiltered] == ["2025-08-10", "2025-08-11"]
    assert [b["metrics"]["totalConversations"] for b in unfiltered] == [2, 1]


NEW_YORK_CHATS = {
    "ny-1": [customer("2025-11-02T03:59:00Z", "hi")],  # 23:59 EDT on 1 November
    "ny-2": [customer("2025-11-02T04:00:00Z", "hi")],  # 00:00 EDT on 2 November
    "ny-3": [customer("2025-11-02T06:30:00Z", "hi")],  # 01:30 EST (the second 01:30)
    "ny-4": [customer("2025-11-03T04:30:00Z", "hi")],  # 23:30 EST on 2 November
    "ny-5": [customer("2025-11-03T05:00:00Z", "hi")],  # 00:00 EST on 3 November
}


async def test_day_buckets_carry_the_local_offset_across_a_dst_change(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "America/New_York")
    await upload_ok(client, export(NEW_YORK_CHATS))

    buckets = await series(client, "DAY", {"startDate": "2025-11-01", "endDate": "2025-11-03"})

    assert [b["start"] for b in buckets] == [
        "2025-11-01T00:00:00-04:00",
        "2025-11-02T00:00:00-04:00",
        "2025-11-03T00:00:00-05:00",
    ]
    assert [b["metrics"]["totalConversations"] for b in buckets] == [1, 3, 1]


async def test_hour_buckets_of_the_day_clocks_go_back_are_25(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "America/New_York")
    await upload_ok(client, export(NEW_YORK_CHATS))

    buckets = await series(client, "HOUR", {"startDate": "2025-11-02", "endDate": "2025-11-02"})

    assert len(buckets) == 25
    assert [b["start"] for b in buckets[:4]] == [
        "2025-11-02T00:00:00-04:00",
        "2025-11-02T01:00:00-04:00",
        "2025-11-02T01:00:00-05:00",
        "2025-11-02T02:00:00-05:00",
    ]
    assert buckets[-1]["start"] == "2025-11-02T23:00:00-05:00"
    counts = [b["metrics"]["totalConversations"] for b in buckets]
    assert (counts[0], counts[2], counts[24]) == (1, 1, 1)  # ny-2, ny-3, ny-4
    assert sum(counts) == 3


async def test_hour_buckets_of_the_day_clocks_go_forward_are_23(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "America/New_York")

    buckets = await series(client, "HOUR", {"startDate": "2025-03-09", "endDate": "2025-03-09"})

    assert len(buckets) == 23
    assert buckets[1]["start"] == "2025-03-09T01:00:00-05:00"
    assert buckets[2]["start"] == "2025-03-09T03:00:00-04:00"


async def test_week_and_month_buckets_start_at_local_midnight(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "America/New_York")
    await upload_ok(client, export(NEW_YORK_CHATS))

    weeks = await series(client, "WEEK", {"startDate": "2025-10-27", "endDate": "2025-11-09"})
    months = await series(client, "MONTH", {"startDate": "2025-10-15", "endDate": "2025-11-15"})

    # 27 October is a Monday (EDT); 3 November is the Monday after the change (EST).
    assert [b["start"] for b in weeks] == [
        "2025-10-27T00:00:00-04:00",
        "2025-11-03T00:00:00-05:00",
    ]
    assert [b["metrics"]["totalConversations"] for b in weeks] == [4, 1]
    assert [b["start"] for b in months] == [
        "2025-10-01T00:00:00-04:00",
        "2025-11-01T00:00:00-04:00",
    ]
    assert [b["metrics"]["totalConversations"] for b in months] == [0, 5]


# -- activity heatmap -----------------------------------------------------------------------

HEATMAP_CHATS = {
    # Sunday 10 August 22:30Z = Monday 01:30 in Nairobi; the agent's message is not counted.
    "x": [
        customer("2025-08-10T22:30:00Z", "hi"),
        agent("2025-08-10T22:35:00Z", "hello", username="jane"),
        customer("2025-08-10T22:50:00Z", "my meter"),
    ],
    # Wednesday 13 August 09:10Z = Wednesday 12:10.
    "y": [customer("2025-08-13T09:10:00Z", "hi")],
    # Started by an agent on Saturday 20:00Z (23:00 local); the customer writes on Sunday
    # 00:05 local.
    "z": [
        agent("2025-08-16T20:00:00Z", "notice", username="jane"),
        customer("2025-08-16T21:05:00Z", "ok"),
    ],
}


def cells(heatmap: list[dict[str, Any]]) -> dict[tuple[int, int], tuple[int, int]]:
    return {
        (c["weekday"], c["hour"]): (c["customerMessages"], c["conversationsStarted"])
        for c in heatmap
        if c["customerMessages"] or c["conversationsStarted"]
    }


async def test_heatmap_has_168_cells_in_the_configured_timezone(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "Africa/Nairobi")
    await upload_ok(client, export(HEATMAP_CHATS))

    heatmap = (await client.data(HEATMAP))["activityHeatmap"]

    assert len(heatmap) == 168
    assert {(c["weekday"], c["hour"]) for c in heatmap} == {
        (weekday, hour) for weekday in range(1, 8) for hour in range(24)
    }
    assert cells(heatmap) == {
        (1, 1): (2, 1),  # x
        (3, 12): (1, 1),  # y
        (6, 23): (0, 1),  # z started
        (7, 0): (1, 0),  # z's customer message
    }


async def test_heatmap_in_a_half_hour_timezone(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "Asia/Kolkata")
    chats = {
        "k-1": [customer("2025-08-11T00:20:00Z", "hi")],  # Monday 05:50
        "k-2": [customer("2025-08-10T18:40:00Z", "hi")],  # Monday 00:10
        "k-3": [customer("2025-08-10T18:20:00Z", "hi")],  # Sunday 23:50
    }
    await upload_ok(client, export(chats))

    heatmap = (await client.data(HEATMAP))["activityHeatmap"]

    assert cells(heatmap) == {(1, 5): (1, 1), (1, 0): (1, 1), (7, 23): (1, 1)}


async def test_heatmap_is_narrowed_by_the_filter(
    app_client_factory: Any, settings_factory: Any
) -> None:
    client = await zoned(app_client_factory, settings_factory, "Africa/Nairobi")
    await upload_ok(client, export(HEATMAP_CHATS))

    heatmap = (await client.data(HEATMAP, {"filter": {"chatIds": ["x"]}}))["activityHeatmap"]

    assert cells(heatmap) == {(1, 1): (2, 1)}


# -- first response histogram ---------------------------------------------------------------

HISTOGRAM_EXPECTED = [
    # label, min, max, chats
    ("0 min to 5 min", 0.0, 5.0, {"a-token"}),  # 3
    ("5 min to 15 min", 5.0, 15.0, {"f-repeat", "c-billing"}),  # exactly 5, and 10
    ("15 min to 1 h", 15.0, 60.0, {"b-outage"}),  # 30
    ("1 h to 4 h", 60.0, 240.0, {"h-token", "e-swahili"}),  # 90, 120
    ("4 h to 24 h", 240.0, 1440.0, {"g-limit"}),  # exactly 240
    ("over 24 h", 1440.0, None, {"i-slow"}),  # 1560
    ("no agent response", None, None, {"d-unanswered", FAILED_CHAT}),
]


async def test_first_response_histogram_buckets_are_half_open(team: Any) -> None:
    found = (await team.data(HISTOGRAM))["firstResponseTimeHistogram"]

    assert found == [
        {
            "label": label,
            "minMinutes": low,
            "maxMinutes": high,
            "conversations": len(chats),
        }
        for label, low, high, chats in HISTOGRAM_EXPECTED
    ]


async def test_first_response_histogram_is_narrowed_by_the_filter(team: Any) -> None:
    found = (await team.data(HISTOGRAM, {"filter": CURRENT}))["firstResponseTimeHistogram"]

    assert [b["conversations"] for b in found] == [1, 2, 1, 1, 0, 0, 2]


async def test_histogram_buckets_are_reproduced_by_response_time_filters(team: Any) -> None:
    found = (await team.data(HISTOGRAM))["firstResponseTimeHistogram"]

    for bucket, (_, low, high, chats) in zip(found, HISTOGRAM_EXPECTED, strict=True):
        if low is None:
            continue
        # The filter's maximum is inclusive: stop just short of the bucket's end.
        filter: dict[str, Any] = {"minFirstResponseTimeMinutes": low}
        if high is not None:
            filter["maxFirstResponseTimeMinutes"] = high - 0.01
        drilled = await selected(team, filter)
        assert set(drilled) == chats, bucket["label"]
        assert bucket["conversations"] == len(drilled)
    answered = await count(team, {"minFirstResponseTimeMinutes": 0})
    total = (await metrics(team))["totalConversations"]
    assert found[-1]["conversations"] == total - answered == 2


# -- agents ---------------------------------------------------------------------------------

JANE = ["a-token", "c-billing", "f-repeat", "g-limit"]
MIKE = ["b-outage", "c-billing", "e-swahili", "h-token"]
EXPECTED_AGENTS = {
    # jane answers a-token (3), c-billing (10), f-repeat (5), g-limit (240), each first.
    "jane": {
        "agent": "jane",
        "conversations": 4,
        "messages": 4,
        "replyCount": 4,
        "avgResponseTimeMinutes": approx(258 / 4),
        "medianResponseTimeMinutes": approx(7.5),
        "firstResponses": 4,
        "avgFirstResponseTimeMinutes": approx(258 / 4),
        "analyzedConversations": 4,
        "csatPercentage": approx(75.0),  # all but g-limit
        "resolutionRate": approx(75.0),
        "avgCsi": approx(mean([CSI[c] for c in JANE])),
    },
    # mike answers b-outage (30, first), c-billing's follow-up (5, not first), e-swahili
    # (120, first), h-token (90, first).
    "mike": {
        "agent": "mike",
        "conversations": 4,
        "messages": 4,
        "replyCount": 4,
        "avgResponseTimeMinutes": approx(245 / 4),
        "medianResponseTimeMinutes": approx(60.0),
        "firstResponses": 3,
        "avgFirstResponseTimeMinutes": approx(80.0),
        "analyzedConversations": 4,
        "csatPercentage": approx(75.0),  # all but b-outage
        "resolutionRate": approx(75.0),
        "avgCsi": approx(mean([CSI[c] for c in MIKE])),
    },
    "bob@example.com": {
        "agent": "bob@example.com",
        "conversations": 1,
        "messages": 1,
        "replyCount": 1,
        "avgResponseTimeMinutes": approx(1560.0),
        "medianResponseTimeMinutes": approx(1560.0),
        "firstResponses": 1,
        "avgFirstResponseTimeMinutes": approx(1560.0),
        "analyzedConversations": 1,
        "csatPercentage": approx(0.0),
        "resolutionRate": approx(0.0),
        "avgCsi": approx(CSI["i-slow"]),
    },
    # zed only wrote before the customer, in a conversation whose analysis failed.
    "zed": {
        "agent": "zed",
        "conversations": 1,
        "messages": 1,
        "replyCount": 0,
        "avgResponseTimeMinutes": None,
        "medianResponseTimeMinutes": None,
        "firstResponses": 0,
        "avgFirstResponseTimeMinutes": None,
        "analyzedConversations": 0,
        "csatPercentage": None,
        "resolutionRate": None,
        "avgCsi": None,
    },
}
# avgCsi: mike ≈ 68.59, jane ≈ 66.83; response time: mike 61.25, jane 64.5.
AGENT_ORDERS = {
    "CONVERSATIONS_DESC": ["jane", "mike", "bob@example.com", "zed"],
    "RESPONSE_TIME_ASC": ["mike", "jane", "bob@example.com", "zed"],
    "RESPONSE_TIME_DESC": ["bob@example.com", "jane", "mike", "zed"],
    "CSAT_DESC": ["jane", "mike", "bob@example.com", "zed"],
    "CSAT_ASC": ["bob@example.com", "jane", "mike", "zed"],
    "CSI_DESC": ["mike", "jane", "bob@example.com", "zed"],
    "CSI_ASC": ["bob@example.com", "jane", "mike", "zed"],
}


async def test_agent_stats_match_hand_computed_values(team: Any) -> None:
    found = await agents(team)

    assert found["totalCount"] == 4
    assert {edge["node"]["agent"]: edge["node"] for edge in found["edges"]} == EXPECTED_AGENTS
    assert mean([CSI[c] for c in MIKE]) == pytest.approx(68.5895, abs=1e-4)
    assert mean([CSI[c] for c in JANE]) == pytest.approx(66.8286, abs=1e-4)


async def test_agents_are_ordered_with_missing_values_last(team: Any, subtests: Any) -> None:
    for order, expected in AGENT_ORDERS.items():
        with subtests.test(order=order):
            found = await agents(team, order)
            assert [edge["node"]["agent"] for edge in found["edges"]] == expected


async def test_agent_pages_visit_each_agent_once(team: Any, subtests: Any) -> None:
    for order, expected in AGENT_ORDERS.items():
        for size in (1, 3):
            with subtests.test(order=order, size=size):
                seen: list[str] = []
                after = None
                for _ in range(10):
                    page = await agents(team, order, first=size, after=after)
                    seen += [edge["node"]["agent"] for edge in page["edges"]]
                    assert page["totalCount"] == 4
                    assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
                    if not page["pageInfo"]["hasNextPage"]:
                        break
                    after = page["pageInfo"]["endCursor"]
                assert seen == expected


async def test_agent_cursor_of_another_order_is_bad_user_input(team: Any) -> None:
    page = await agents(team, "CSI_DESC", first=1)

    body = await team.query(
        AGENTS, {"order": "CSAT_ASC", "first": 1, "after": page["pageInfo"]["endCursor"]}
    )

    assert error_codes(body) == ["BAD_USER_INPUT"]


async def test_agent_stats_follow_the_filter(team: Any) -> None:
    found = await agents(team, filter=PREVIOUS)

    # g-limit (jane), h-token (mike), i-slow (bob).
    by_agent = {edge["node"]["agent"]: edge["node"] for edge in found["edges"]}
    assert set(by_agent) == {"jane", "mike", "bob@example.com"}
    assert by_agent["jane"]["conversations"] == 1
    assert by_agent["jane"]["avgResponseTimeMinutes"] == approx(240.0)
    assert by_agent["mike"]["csatPercentage"] == approx(100.0)
    assert by_agent["mike"]["avgCsi"] == approx(CSI["h-token"])


async def test_agent_stats_are_reproduced_by_conversation_filters(team: Any) -> None:
    found = await agents(team)

    for edge in found["edges"]:
        stats = edge["node"]
        name = stats["agent"]
        assert stats["conversations"] == await count(team, {"agents": [name]}), name
        analysed = await count(team, {"agents": [name], "analysisStatus": "DONE"})
        satisfied = await count(team, {"agents": [name], "satisfied": True})
        resolved = await count(team, {"agents": [name], "resolved": True})
        assert stats["analyzedConversations"] == analysed, name
        if analysed:
            assert stats["csatPercentage"] == approx(100 * satisfied / analysed), name
            assert stats["resolutionRate"] == approx(100 * resolved / analysed), name
        else:
            assert stats["csatPercentage"] is None
        by_agent = await metrics(team, {"agents": [name]})
        assert by_agent["totalConversations"] == stats["conversations"]
        assert by_agent["csi"] == (None if stats["avgCsi"] is None else approx(stats["avgCsi"]))


# -- topics ---------------------------------------------------------------------------------


async def test_topic_stats_match_hand_computed_values(team: Any) -> None:
    found = (await team.data(TOPICS, {"filter": CURRENT}))["topics"]

    # Analysed in the period: a-token, e-swahili (token purchase); b-outage, f-repeat
    # (outage); c-billing (billing); d-unanswered (enquiry). Previous period: h-token,
    # g-limit, i-slow.
    assert found == [
        {
            "topic": "outage",
            "conversations": 2,
            "percentage": approx(100 * 2 / 6),
            "csatPercentage": approx(50.0),
            "avgSentimentScore": approx(3.0),
            "resolutionRate": approx(50.0),
            "avgCsi": approx(mean([CSI["b-outage"], CSI["f-repeat"]])),
            "previousPeriodConversations": 0,
        },
        {
            "topic": "token purchase",
            "conversations": 2,
            "percentage": approx(100 * 2 / 6),
            "csatPercentage": approx(100.0),
            "avgSentimentScore": approx(3.5),
            "resolutionRate": approx(100.0),
            "avgCsi": approx(mean([CSI["a-token"], CSI["e-swahili"]])),
            "previousPeriodConversations": 1,
        },
        {
            "topic": "billing",
            "conversations": 1,
            "percentage": approx(100 / 6),
            "csatPercentage": approx(100.0),
            "avgSentimentScore": approx(4.0),
            "resolutionRate": approx(100.0),
            "avgCsi": approx(CSI["c-billing"]),
            "previousPeriodConversations": 1,
        },
        {
            "topic": "enquiry",
            "conversations": 1,
            "percentage": approx(100 / 6),
            "csatPercentage": approx(0.0),
            "avgSentimentScore": approx(3.0),
            "resolutionRate": approx(0.0),
            "avgCsi": approx(CSI["d-unanswered"]),
            "previousPeriodConversations": 1,
        },
    ]


async def test_topics_without_a_date_range_have_no_previous_period(team: Any) -> None:
    found = (await team.data(TOPICS, {"limit": 2}))["topics"]

    # Over all the data: token purchase 3 (a, e, h), outage 2, billing 2 (c, g), enquiry 2.
    assert [(t["topic"], t["conversations"]) for t in found] == [
        ("token purchase", 3),
        ("billing", 2),
    ]
    assert [t["previousPeriodConversations"] for t in found] == [None, None]
    assert found[0]["percentage"] == approx(100 * 3 / 9)


async def test_topics_limit_out_of_range_is_bad_user_input(team: Any) -> None:
    for limit in (0, 101):
        assert error_codes(await team.query(TOPICS, {"limit": limit})) == ["BAD_USER_INPUT"]


async def test_topic_stats_are_reproduced_by_conversation_filters(team: Any) -> None:
    found = (await team.data(TOPICS, {"filter": CURRENT}))["topics"]

    for stats in found:
        topic = {**CURRENT, "topics": [stats["topic"]]}
        assert stats["conversations"] == await count(team, topic), stats["topic"]
        drilled = await metrics(team, topic)
        assert drilled["totalConversations"] == stats["conversations"]
        assert drilled["csatPercentage"] == stats["csatPercentage"]
        assert drilled["csi"] == approx(stats["avgCsi"])
        previous = await count(team, {**PREVIOUS, "topics": [stats["topic"]]})
        assert stats["previousPeriodConversations"] == previous, stats["topic"]


# -- drill-down of the selection metrics ----------------------------------------------------


async def test_outage_metrics_are_reproduced_by_the_conversation_list(team: Any) -> None:
    filter = {"topics": ["outage"]}

    found = await metrics(team, filter)

    assert set(await selected(team, filter)) == {"b-outage", "f-repeat"}
    assert found["totalConversations"] == 2
    assert found["csatPercentage"] == approx(50.0)
    assert found["csatPercentage"] == approx(
        100 * await count(team, {**filter, "satisfied": True}) / found["analyzedConversations"]
    )


async def test_csat_percentage_is_reproduced_with_satisfied_counts(team: Any) -> None:
    for filter in ({}, CURRENT, PREVIOUS, {"agents": ["jane", "bob@example.com"]}):
        found = await metrics(team, filter)
        satisfied = await count(team, {**filter, "satisfied": True})
        analysed = await count(team, {**filter, "analysisStatus": "DONE"})
        assert found["analyzedConversations"] == analysed, filter
        assert found["csatPercentage"] == approx(100 * satisfied / analysed), filter
    assert set(await selected(team, {"satisfied": True})) == SATISFIED


async def test_csi_range_filters_select_by_conversation_csi(team: Any) -> None:
    high = await selected(team, {"minCsi": 80})
    low = await selected(team, {"maxCsi": 20})

    # a-token 95, c-billing ≈ 88.6, e-swahili ≈ 85.2, h-token ≈ 83.8.
    assert set(high) == {"a-token", "c-billing", "e-swahili", "h-token"}
    assert all(node["csi"]["score"] >= 80 for node in high.values())
    # b-outage ≈ 16.8, g-limit 6.25, i-slow 8.75; j-failed has no CSI.
    assert set(low) == {"b-outage", "g-limit", "i-slow"}
    assert (await metrics(team, {"minCsi": 80}))["csi"] == approx(mean([CSI[c] for c in high]))
    # Inclusive bounds: exactly 35 (d-unanswered) is inside [35, 35].
    assert set(await selected(team, {"minCsi": 35, "maxCsi": 35})) == {"d-unanswered"}


async def test_repeat_contact_conversations_are_reproduced_by_the_filter(team: Any) -> None:
    found = await metrics(team)

    repeat = await selected(team, {"repeatContact": True})
    assert set(repeat) == {"f-repeat", "i-slow"}
    assert found["repeatContactConversations"] == len(repeat)
    assert await count(team, {"repeatContact": False}) == found["totalConversations"] - 2
    assert (await metrics(team, {"repeatContact": True}))["totalConversations"] == 2


async def test_language_filter_selects_analysed_conversations_in_that_language(
    team: Any,
) -> None:
    assert set(await selected(team, {"language": "sw"})) == {"e-swahili"}
    assert set(await selected(team, {"language": " SW "})) == {"e-swahili"}
    assert (await metrics(team, {"language": "sw"}))["totalConversations"] == 1
    # j-failed has no analysis, so no language.
    assert await count(team, {"language": "en"}) == 8


async def test_first_response_filters_are_inclusive_on_both_ends(team: Any) -> None:
    exact = await selected(
        team, {"minFirstResponseTimeMinutes": 5, "maxFirstResponseTimeMinutes": 5}
    )

    assert set(exact) == {"f-repeat"}
    assert set(await selected(team, {"maxFirstResponseTimeMinutes": 5})) == {
        "a-token",
        "f-repeat",
    }
