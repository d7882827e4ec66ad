"""Conversation analysis over HTTP: jobs, metrics, per-conversation results, filters, the
processed-chat cache and failure handling, with the real openai client talking to FakeOpenAI.

Expected judgements are worked out by hand from FakeOpenAI's documented rules: a customer
line's mood is 5 with "thank"/"asante", else 1 with the word "still"/"not", else 3;
satisfaction = final = mood of the last customer line, initial = mood of the first,
sentiment = (initial + final) // 2, resolved = satisfaction == 5, effort = 5 - (customer
lines - 1) // 2 (at most 2 when the ending is unhappy); topics from the customer text.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from chat_exports import SAMPLE, agent, bot, customer, export, upload_ok

from fakes.openai_server import FakeOpenAI, judge
from powerpulse.analysis.schema import PROMPT_VERSION, SYSTEM_PROMPT

JOB_FIELDS = (
    "id status total processed analyzed cached failed forced inputTokens outputTokens "
    "costUsd createdAt startedAt finishedAt error"
)
UPLOAD_SELECTION = (
    f"conversationsReceived analysisQueued analysisCached analysisForced job {{ {JOB_FIELDS} }}"
)
JOB = f"query($id: ID!) {{ job(id: $id) {{ {JOB_FIELDS} }} }}"
ANALYSIS_FIELDS = (
    "satisfactionScore isSatisfied sentimentScore initialSentiment finalSentiment "
    "sentimentLabel resolved firstContactResolution effortScore topics summary language "
    "analyzer model promptVersion inputTokens outputTokens costUsd analyzedAt"
)
CONVERSATION = (
    "query($chatId: String!) { conversation(chatId: $chatId) { chatId contactCount "
    f"analysisStatus analysisFailureReason analysis {{ {ANALYSIS_FIELDS} }} }} }}"
)
ANALYSIS_METRICS = """
query($filter: ConversationFilter) {
  metrics(filter: $filter) {
    totalConversations analyzedConversations csatPercentage fcrPercentage resolutionRate
    avgSatisfactionScore avgSentimentScore avgEffortScore inputTokens outputTokens costUsd
    sentimentDistribution {
      positive neutral negative positiveFraction neutralFraction negativeFraction
    }
    topTopics(limit: 3) { topic count percentage }
  }
}
"""
SELECTED = """
query($filter: ConversationFilter) {
  conversations(first: 100, filter: $filter) { totalCount edges { node { chatId } } }
}
"""
INPUT_PRICE, OUTPUT_PRICE = 0.15, 0.60  # gpt-4o-mini, USD per million tokens (the default)

# -- hand-built chats -----------------------------------------------------------------------

CHATS: dict[str, list[dict[str, Any]]] = {
    "c-token": [
        customer("2025-05-01T09:00:00Z", "I bought a token but it has not arrived"),
        agent("2025-05-01T09:05:00Z", "I have resent it now", username="jane"),
        customer("2025-05-01T09:07:00Z", "got it, thank you"),
    ],
    "c-outage": [
        customer("2025-05-02T07:00:00Z", "power outage since morning"),
        bot("2025-05-02T07:00:30Z", "We are looking into it."),
        customer("2025-05-02T09:30:00Z", "still no power and my bill is due"),
    ],
    # 26 silent hours: contactCount 2, so resolved but not a first-contact resolution.
    "c-gap": [
        customer("2025-05-03T10:00:00Z", "my bill is wrong this month"),
        agent("2025-05-03T10:10:00Z", "We are checking it", username="mike"),
        customer("2025-05-04T12:00:00Z", "thanks, it is sorted now"),
    ],
    "c-balance": [
        customer("2025-05-05T08:00:00Z", "habari, I want to check my balance"),
        agent("2025-05-05T08:02:00Z", "Your balance is 20 units", username="jane"),
    ],
    "c-chase": [
        customer("2025-05-06T11:00:00Z", "My token has not been received"),
        customer("2025-05-06T11:10:00Z", "hello?"),
        agent("2025-05-06T11:12:00Z", "Checking", username="mike"),
        customer("2025-05-06T11:20:00Z", "still waiting"),
        agent("2025-05-06T11:25:00Z", "Sent now", username="mike"),
        customer("2025-05-06T11:26:00Z", "asante sana"),
    ],
}
ANALYSED = export(CHATS)

# chatId: (satisfaction, sentiment, initial, final, label, resolved, fcr, effort, topics, lang)
EXPECTED: dict[str, tuple[Any, ...]] = {
    "c-token": (5, 3, 1, 5, "NEUTRAL", True, True, 5, ["token purchase"], "en"),
    "c-outage": (1, 2, 3, 1, "NEGATIVE", False, False, 2, ["outage", "billing"], "en"),
    "c-gap": (5, 4, 3, 5, "POSITIVE", True, False, 5, ["billing"], "en"),
    "c-balance": (3, 3, 3, 3, "NEUTRAL", False, False, 5, ["enquiry"], "sw"),
    "c-chase": (5, 3, 1, 5, "NEUTRAL", True, True, 4, ["token purchase"], "sw"),
}
EXPECTED_CONTACTS = {"c-token": 1, "c-outage": 1, "c-gap": 2, "c-balance": 1, "c-chase": 1}


def rendered(chat_id: str) -> str:
    """The transcript as the system prompt describes it: day markers, then [HH:MM] lines."""
    lines: list[str] = []
    day = None
    for record in sorted(CHATS[chat_id], key=lambda r: r["SOCIAL_CREATE_TIME"]):
        moment = record["SOCIAL_CREATE_TIME"]
        if moment[:10] != day:
            day = moment[:10]
            lines.append(f"--- {day} ---")
        if record["DIRECTION"] == "to_company":
            who = "Customer"
        elif record.get("AGENT_USERNAME"):
            who = f"Agent ({record['AGENT_USERNAME']})"
        else:
            who = "Bot"
        lines.append(f"[{moment[11:16]}] {who}: {record['MESSAGE_CONTENT']}")
    return "\n".join(lines)


def expected_tokens(chat_id: str) -> tuple[int, int]:
    """FakeOpenAI's usage for a one-chat request: characters sent // 4, reply // 4."""
    user = f"### chat_id: {chat_id}\n{rendered(chat_id)}"
    reply = json.dumps({"analyses": [judge(chat_id, rendered(chat_id))]}, ensure_ascii=False)
    return (len(SYSTEM_PROMPT) + len(user)) // 4, len(reply) // 4


def cost(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE) / 1_000_000


# -- helpers --------------------------------------------------------------------------------


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture
def openai_settings(settings_factory: Any, fake: FakeOpenAI) -> Any:
    def build(**overrides: Any) -> Any:
        options: dict[str, Any] = {
            "analyzer": "openai",
            "openai_api_key": "test-key",
            "openai_base_url": fake.base_url,
            "worker_poll_seconds": 0.05,
            "analysis_batch_size": 1,
            **overrides,
        }
        return settings_factory(**options)

    return build


@pytest.fixture
async def openai_client(app_client_factory: Any, openai_settings: Any) -> Any:
    return await app_client_factory(openai_settings())


async def upload(client: Any, content: bytes, **kwargs: Any) -> dict[str, Any]:
    return await upload_ok(client, content, selection=UPLOAD_SELECTION, **kwargs)


async def wait_for_job(client: Any, job_id: str, within: float = 30.0) -> dict[str, Any]:
    """Poll job(id) until it has finished; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        job = (await client.data(JOB, {"id": job_id}))["job"]
        assert job is not None, f"no job {job_id}"
        if job["finishedAt"] is not None:
            return job  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, f"job {job_id} did not finish: {job}"
        await asyncio.sleep(0.05)


async def upload_and_wait(client: Any, content: bytes, **kwargs: Any) -> tuple[dict, dict]:
    payload = await upload(client, content, **kwargs)
    return payload, await wait_for_job(client, payload["job"]["id"])


async def conversation(client: Any, chat_id: str) -> dict[str, Any]:
    found = (await client.data(CONVERSATION, {"chatId": chat_id}))["conversation"]
    assert found is not None, chat_id
    return found  # type: ignore[no-any-return]


async def analysis_metrics(client: Any, filter: dict[str, Any] | None = None) -> dict[str, Any]:
    return (await client.data(ANALYSIS_METRICS, {"filter": filter}))["metrics"]  # type: ignore[no-any-return]


async def selected(client: Any, **filter: Any) -> set[str]:
    data = (await client.data(SELECTED, {"filter": filter}))["conversations"]
    chat_ids = [edge["node"]["chatId"] for edge in data["edges"]]
    assert data["totalCount"] == len(chat_ids)
    return set(chat_ids)


# -- the judge rules, as the tests read them --------------------------------------------------


def test_hand_computed_judgements_agree_with_the_fake_judge() -> None:
    for chat_id, values in EXPECTED.items():
        judged = judge(chat_id, rendered(chat_id))
        assert (
            judged["satisfaction_score"],
            judged["sentiment_score"],
            judged["initial_sentiment"],
            judged["final_sentiment"],
            judged["resolved"],
            judged["effort_score"],
            judged["topics"],
            judged["language"],
        ) == (*values[:4], values[5], values[7], values[8], values[9]), chat_id


# -- a job from upload to metrics -------------------------------------------------------------


async def test_upload_returns_a_job_that_finishes_succeeded(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    payload = await upload(openai_client, ANALYSED)

    assert payload["analysisQueued"] == 5
    assert payload["analysisCached"] == 0
    queued = payload["job"]
    assert queued["total"] == 5
    assert queued["status"] in {"QUEUED", "RUNNING", "SUCCEEDED"}
    job = await wait_for_job(openai_client, queued["id"])
    assert job["status"] == "SUCCEEDED"
    assert (job["total"], job["processed"], job["analyzed"], job["cached"], job["failed"]) == (
        5,
        5,
        5,
        0,
        0,
    )
    assert job["error"] is None
    assert job["startedAt"] is not None
    assert fake.requests == 5
    assert fake.requests_by_chat == dict.fromkeys(CHATS, 1)


async def test_metrics_of_analysed_conversations_match_hand_computed_values(
    openai_client: Any,
) -> None:
    _, job = await upload_and_wait(openai_client, ANALYSED)
    assert job["status"] == "SUCCEEDED"

    found = await analysis_metrics(openai_client)

    input_tokens = sum(expected_tokens(chat_id)[0] for chat_id in CHATS)
    output_tokens = sum(expected_tokens(chat_id)[1] for chat_id in CHATS)
    assert found == {
        "totalConversations": 5,
        "analyzedConversations": 5,
        "csatPercentage": pytest.approx(60.0),  # c-token, c-gap, c-chase score 5
        "fcrPercentage": pytest.approx(40.0),  # c-gap was resolved on its second contact
        "resolutionRate": pytest.approx(60.0),
        "avgSatisfactionScore": pytest.approx(3.8),  # (5 + 1 + 5 + 3 + 5) / 5
        "avgSentimentScore": pytest.approx(3.0),  # (3 + 2 + 4 + 3 + 3) / 5
        "avgEffortScore": pytest.approx(4.2),  # (5 + 2 + 5 + 5 + 4) / 5
        "inputTokens": input_tokens,
        "outputTokens": output_tokens,
        "costUsd": pytest.approx(cost(input_tokens, output_tokens)),
        "sentimentDistribution": {
            "positive": 1,
            "neutral": 3,
            "negative": 1,
            "positiveFraction": pytest.approx(0.2),
            "neutralFraction": pytest.approx(0.6),
            "negativeFraction": pytest.approx(0.2),
        },
        # Ties are broken by topic name.
        "topTopics": [
            {"topic": "billing", "count": 2, "percentage": pytest.approx(40.0)},
            {"topic": "token purchase", "count": 2, "percentage": pytest.approx(40.0)},
            {"topic": "enquiry", "count": 1, "percentage": pytest.approx(20.0)},
        ],
    }
    assert job["inputTokens"] == input_tokens
    assert job["outputTokens"] == output_tokens
    assert job["costUsd"] == pytest.approx(found["costUsd"])


async def test_analysis_percentages_are_null_when_nothing_is_analysed(
    openai_client: Any,
) -> None:
    found = await analysis_metrics(openai_client)

    assert found == {
        "totalConversations": 0,
        "analyzedConversations": 0,
        "csatPercentage": None,
        "fcrPercentage": None,
        "resolutionRate": None,
        "avgSatisfactionScore": None,
        "avgSentimentScore": None,
        "avgEffortScore": None,
        "inputTokens": 0,
        "outputTokens": 0,
        "costUsd": 0.0,
        "sentimentDistribution": {
            "positive": 0,
            "neutral": 0,
            "negative": 0,
            "positiveFraction": None,
            "neutralFraction": None,
            "negativeFraction": None,
        },
        "topTopics": [],
    }


async def test_conversation_analysis_fields_match_the_judgement(openai_client: Any) -> None:
    await upload_and_wait(openai_client, ANALYSED)

    for chat_id, values in EXPECTED.items():
        (satisfaction, sentiment, initial, final, label, resolved, fcr, effort, topics, lang) = (
            values
        )
        found = await conversation(openai_client, chat_id)
        assert found["analysisStatus"] == "DONE"
        assert found["analysisFailureReason"] is None
        assert found["contactCount"] == EXPECTED_CONTACTS[chat_id]
        analysis = found["analysis"]
        input_tokens, output_tokens = expected_tokens(chat_id)
        assert analysis == {
            "satisfactionScore": satisfaction,
            "isSatisfied": satisfaction >= 4,
            "sentimentScore": sentiment,
            "initialSentiment": initial,
            "finalSentiment": final,
            "sentimentLabel": label,
            "resolved": resolved,
            "firstContactResolution": fcr,
            "effortScore": effort,
            "topics": topics,
            "summary": judge(chat_id, rendered(chat_id))["summary"],
            "language": lang,
            "analyzer": "openai",
            "model": "gpt-4o-mini",
            "promptVersion": PROMPT_VERSION,
            "inputTokens": input_tokens,
            "outputTokens": output_tokens,
            "costUsd": pytest.approx(cost(input_tokens, output_tokens)),
            "analyzedAt": analysis["analyzedAt"],
        }, chat_id
        assert analysis["analyzedAt"] is not None


async def test_unanalysed_conversation_is_pending_without_analysis(
    app_client_factory: Any, openai_settings: Any, fake: FakeOpenAI
) -> None:
    fake.fail_next("hang", seconds=30)
    client = await app_client_factory(
        openai_settings(analysis_concurrency=1, shutdown_grace_seconds=0.2)
    )
    await upload(client, export({"c-token": CHATS["c-token"]}))

    found = await conversation(client, "c-token")

    assert found["analysisStatus"] == "PENDING"
    assert found["analysis"] is None
    assert await selected(client, analysisStatus="PENDING") == {"c-token"}
    assert (await analysis_metrics(client))["analyzedConversations"] == 0


FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({"satisfied": True}, {"c-token", "c-gap", "c-chase"}),
    ({"satisfied": False}, {"c-outage", "c-balance"}),
    ({"minSatisfaction": 4}, {"c-token", "c-gap", "c-chase"}),
    ({"minSatisfaction": 2, "maxSatisfaction": 3}, {"c-balance"}),
    ({"maxSatisfaction": 1}, {"c-outage"}),
    ({"sentiment": "NEGATIVE"}, {"c-outage"}),
    ({"sentiment": "NEUTRAL"}, {"c-token", "c-balance", "c-chase"}),
    ({"sentiment": "POSITIVE"}, {"c-gap"}),
    ({"topic": "Token Purchases"}, {"c-token", "c-chase"}),
    ({"topic": "  BILLING "}, {"c-outage", "c-gap"}),
    ({"topic": "meter"}, set()),
    ({"resolved": True}, {"c-token", "c-gap", "c-chase"}),
    ({"resolved": False}, {"c-outage", "c-balance"}),
    ({"analysisStatus": "DONE"}, set(CHATS)),
    ({"analysisStatus": "PENDING"}, set()),
    ({"analysisStatus": "FAILED"}, set()),
    ({"satisfied": True, "topic": "token purchase", "resolved": True}, {"c-token", "c-chase"}),
]


async def test_analysis_filters_select_matching_conversations(
    openai_client: Any, subtests: Any
) -> None:
    await upload_and_wait(openai_client, ANALYSED)

    for filter, expected in FILTER_CASES:
        with subtests.test(filter=filter):
            assert await selected(openai_client, **filter) == expected
            found = await analysis_metrics(openai_client, filter)
            assert found["totalConversations"] == len(expected)
            assert found["analyzedConversations"] == len(expected)


async def test_topic_filter_narrows_metrics(openai_client: Any) -> None:
    await upload_and_wait(openai_client, ANALYSED)

    found = await analysis_metrics(openai_client, {"topic": "Token Purchases"})

    assert found["analyzedConversations"] == 2
    assert found["csatPercentage"] == pytest.approx(100.0)
    assert found["avgEffortScore"] == pytest.approx(4.5)  # c-token 5, c-chase 4
    assert found["topTopics"] == [
        {"topic": "token purchase", "count": 2, "percentage": pytest.approx(100.0)}
    ]


async def test_satisfaction_desc_orders_and_pages_without_gaps(openai_client: Any) -> None:
    await upload_and_wait(openai_client, ANALYSED)
    query = """
    query($after: String) {
      conversations(first: 2, after: $after, orderBy: SATISFACTION_DESC) {
        edges { node { chatId analysis { satisfactionScore } } }
        pageInfo { hasNextPage endCursor }
      }
    }
    """

    seen: list[tuple[str, int]] = []
    more: list[bool] = []
    after = None
    while True:
        page = (await openai_client.data(query, {"after": after}))["conversations"]
        seen += [
            (edge["node"]["chatId"], edge["node"]["analysis"]["satisfactionScore"])
            for edge in page["edges"]
        ]
        more.append(page["pageInfo"]["hasNextPage"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]

    assert more == [True, True, False]
    assert [score for _, score in seen] == [5, 5, 5, 3, 1]
    assert {chat_id for chat_id, _ in seen[:3]} == {"c-token", "c-gap", "c-chase"}
    assert [chat_id for chat_id, _ in seen[3:]] == ["c-balance", "c-outage"]


async def test_jobs_are_listed_newest_first_a_page_at_a_time(openai_client: Any) -> None:
    first, _ = await upload_and_wait(openai_client, ANALYSED)
    second, _ = await upload_and_wait(openai_client, export({"c-token": CHATS["c-token"]}))
    query = """
    query($after: String) {
      jobs(first: 1, after: $after) {
        totalCount edges { node { id total } } pageInfo { hasNextPage endCursor }
      }
    }
    """

    newest = (await openai_client.data(query, {"after": None}))["jobs"]
    older = (await openai_client.data(query, {"after": newest["pageInfo"]["endCursor"]}))["jobs"]

    assert newest["totalCount"] == older["totalCount"] == 2
    assert [edge["node"] for edge in newest["edges"]] == [{"id": second["job"]["id"], "total": 1}]
    assert newest["pageInfo"]["hasNextPage"] is True
    assert [edge["node"] for edge in older["edges"]] == [{"id": first["job"]["id"], "total": 5}]
    assert older["pageInfo"]["hasNextPage"] is False


async def test_job_query_returns_null_for_unknown_ids(openai_client: Any) -> None:
    for job_id in ["999999", "abc", "-1"]:
        assert (await openai_client.data(JOB, {"id": job_id}))["job"] is None


async def test_lexicon_analyzer_analyses_without_a_key_and_costs_nothing(
    app_client_factory: Any, settings_factory: Any, fake: FakeOpenAI
) -> None:
    client = await app_client_factory(
        settings_factory(openai_api_key=None, worker_poll_seconds=0.05)
    )

    payload, job = await upload_and_wait(client, SAMPLE)

    assert payload["analysisQueued"] == 7
    assert job["status"] == "SUCCEEDED"
    assert (job["analyzed"], job["failed"]) == (7, 0)
    assert job["costUsd"] == 0
    found = await conversation(client, "alpha")
    assert found["analysisStatus"] == "DONE"
    assert found["analysis"]["analyzer"] == "lexicon"
    assert found["analysis"]["costUsd"] == 0
    totals = await analysis_metrics(client)
    assert totals["analyzedConversations"] == 7
    assert totals["costUsd"] == 0
    assert fake.requests == 0


# -- the processed-chat cache -----------------------------------------------------------------


async def test_reupload_of_the_same_file_is_cached_without_requests(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    await upload_and_wait(openai_client, ANALYSED)
    before = fake.requests

    payload = await upload(openai_client, ANALYSED)

    assert (payload["analysisQueued"], payload["analysisCached"]) == (0, 5)
    assert payload["analysisForced"] == 0
    job = payload["job"]
    # Nothing to analyse: the job is finished in the upload's own answer.
    assert job["status"] == "SUCCEEDED"
    assert job["finishedAt"] is not None
    assert (job["total"], job["cached"], job["analyzed"], job["processed"]) == (5, 5, 0, 5)
    assert (await wait_for_job(openai_client, job["id"]))["status"] == "SUCCEEDED"
    await asyncio.sleep(0.2)  # a few worker polls
    assert fake.requests == before
    assert (await analysis_metrics(openai_client))["analyzedConversations"] == 5


async def test_new_message_in_one_chat_reanalyses_only_that_chat(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    await upload_and_wait(openai_client, ANALYSED)
    assert (await conversation(openai_client, "c-token"))["analysis"]["satisfactionScore"] == 5
    changed = {
        **CHATS,
        "c-token": [*CHATS["c-token"], customer("2025-05-01T09:30:00Z", "it is still not working")],
    }

    payload, job = await upload_and_wait(openai_client, export(changed))

    assert (payload["analysisQueued"], payload["analysisCached"]) == (1, 4)
    assert job["status"] == "SUCCEEDED"
    assert (job["total"], job["analyzed"], job["cached"]) == (5, 1, 4)
    assert fake.requests == 6
    assert fake.requests_by_chat == {**dict.fromkeys(CHATS, 1), "c-token": 2}
    # The new judgement reads the new last message.
    found = await conversation(openai_client, "c-token")
    assert found["analysisStatus"] == "DONE"
    assert found["analysis"]["satisfactionScore"] == 1
    assert found["analysis"]["resolved"] is False


async def test_force_reprocess_reanalyses_every_conversation_of_the_upload(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    await upload_and_wait(openai_client, ANALYSED)
    subset = {chat_id: CHATS[chat_id] for chat_id in ("c-token", "c-gap", "c-outage")}

    payload, job = await upload_and_wait(openai_client, export(subset), force_reprocess=True)

    assert (payload["analysisQueued"], payload["analysisForced"]) == (3, 3)
    assert payload["analysisCached"] == 0
    assert job["status"] == "SUCCEEDED"
    assert (job["total"], job["analyzed"], job["cached"], job["forced"]) == (3, 3, 0, 3)
    assert fake.requests_by_chat == {
        **dict.fromkeys(CHATS, 1),
        **dict.fromkeys(subset, 2),
    }
    assert (await analysis_metrics(openai_client))["analyzedConversations"] == 5


async def test_upload_with_nothing_to_analyse_returns_a_finished_job(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    payload = await upload(openai_client, b"{}")

    job = payload["job"]
    assert payload["analysisQueued"] == payload["analysisCached"] == 0
    assert job["status"] == "SUCCEEDED"
    assert job["total"] == 0
    assert job["finishedAt"] is not None
    assert fake.requests == 0


# -- failures ---------------------------------------------------------------------------------


async def test_twice_malformed_reply_fails_one_conversation_and_the_job_is_partial(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    fake.fail_chat("c-outage", "malformed_json", times=2)

    _, job = await upload_and_wait(openai_client, ANALYSED)

    assert job["status"] == "PARTIAL"
    assert (job["analyzed"], job["failed"], job["processed"]) == (4, 1, 5)
    assert job["error"] is None
    # A malformed reply is asked once more, then given up.
    assert fake.requests_by_chat["c-outage"] == 2
    failed = await conversation(openai_client, "c-outage")
    assert failed["analysisStatus"] == "FAILED"
    assert failed["analysisFailureReason"]
    assert "invalid reply" in failed["analysisFailureReason"]
    assert failed["analysis"] is None
    for chat_id in set(CHATS) - {"c-outage"}:
        assert (await conversation(openai_client, chat_id))["analysisStatus"] == "DONE"
    assert await selected(openai_client, analysisStatus="FAILED") == {"c-outage"}
    found = await analysis_metrics(openai_client)
    assert found["analyzedConversations"] == 4
    assert found["csatPercentage"] == pytest.approx(75.0)  # 3 of the 4 analysed


async def test_malformed_reply_answered_well_on_the_second_ask_succeeds(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    fake.fail_chat("c-outage", "malformed_json", times=1)

    _, job = await upload_and_wait(openai_client, ANALYSED)

    assert job["status"] == "SUCCEEDED"
    assert fake.requests_by_chat["c-outage"] == 2
    assert (await conversation(openai_client, "c-outage"))["analysisStatus"] == "DONE"


async def test_failed_conversation_is_analysed_again_on_reupload(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    fake.fail_chat("c-outage", "malformed_json", times=2)
    await upload_and_wait(openai_client, ANALYSED)

    payload, job = await upload_and_wait(openai_client, ANALYSED)

    # A failure is not a cached result.
    assert (payload["analysisQueued"], payload["analysisCached"]) == (1, 4)
    assert job["status"] == "SUCCEEDED"
    assert fake.requests_by_chat["c-outage"] == 3
    found = await conversation(openai_client, "c-outage")
    assert found["analysisStatus"] == "DONE"
    assert found["analysisFailureReason"] is None
    assert found["analysis"]["satisfactionScore"] == 1


async def test_insufficient_quota_fails_the_job_fast_without_retries(
    app_client_factory: Any, openai_settings: Any, fake: FakeOpenAI
) -> None:
    client = await app_client_factory(openai_settings(analysis_concurrency=1))
    fake.fail_next("insufficient_quota")
    started = time.monotonic()

    payload, job = await upload_and_wait(client, ANALYSED)

    assert time.monotonic() - started < 10
    assert job["status"] == "FAILED"
    assert "quota" in job["error"]
    assert (job["total"], job["failed"], job["analyzed"]) == (5, 5, 0)
    assert fake.requests == 1
    await asyncio.sleep(0.2)  # a few worker polls: nothing more is asked
    assert fake.requests == 1
    for chat_id in CHATS:
        found = await conversation(client, chat_id)
        assert found["analysisStatus"] == "FAILED", chat_id
        assert "quota" in found["analysisFailureReason"]
    assert payload["job"]["total"] == 5


async def test_rate_limit_with_retry_hint_is_retried_and_the_job_succeeds(
    openai_client: Any, fake: FakeOpenAI
) -> None:
    fake.fail_next("rate_limit", times=2, retry_after_ms=20)

    _, job = await upload_and_wait(openai_client, ANALYSED)

    assert job["status"] == "SUCCEEDED"
    assert (job["analyzed"], job["failed"]) == (5, 0)
    statuses = [entry.status for entry in fake.request_log]
    assert statuses.count(429) == 2
    assert statuses.count(200) == 5
    assert fake.requests == 7
