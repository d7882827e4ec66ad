"""The OpenAI analyzer, driven over HTTP against the fake OpenAI-compatible server.

The real ``openai`` client talks to a real loopback server; nothing is patched. Timing is
only ever checked as a lower bound (a retry never comes before its Retry-After hint) or with
generous ceilings that only catch a hang.
"""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import openai
import pytest

from fakes.openai_server import FakeOpenAI, fake_openai_server, judge, parse_conversations
from powerpulse.analysis.base import (
    AnalysisOutcome,
    AnalysisUnavailable,
    AnalyzerFingerprint,
    ConversationInput,
)
from powerpulse.analysis.limits import AdaptiveConcurrency, MinuteBudget
from powerpulse.analysis.openai_analyzer import (
    MAX_ATTEMPTS,
    MAX_SECONDS_PER_CONVERSATION,
    OpenAIAnalyzer,
    OpenAIOptions,
    is_retryable,
)
from powerpulse.analysis.schema import (
    PROMPT_VERSION,
    SYSTEM_PROMPT,
    ConversationJudgement,
    response_format,
)
from powerpulse.analysis.transcript import build_input, estimate_tokens

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
INPUT_PRICE = 2.5  # USD per million input tokens
OUTPUT_PRICE = 10.0  # USD per million output tokens
# A ceiling that only catches a hang (a retry sleeping a whole Retry-After it should not).
HANG_GUARD = 10.0
# A hung reply outlasts every client timeout used here, and ends soon after.
HANG_SECONDS = 1.0

Builder = Callable[..., OpenAIAnalyzer]


# ---------------------------------------------------------------------------- helpers


def chat(
    chat_id: str, *customer: str, agent: str = "Let me check that for you."
) -> ConversationInput:
    """A short conversation: customer lines with one agent reply after the first."""
    texts = customer or ("my token did not arrive", "got it, thank you")
    rows: list[dict[str, Any]] = []
    for index, text in enumerate(texts):
        rows.append(_row(index * 3, "CUSTOMER", text))
        if index == 0:
            rows.append(_row(1, "AGENT", agent, username="jane"))
    return build_input(chat_id, rows, contact_count=1, token_budget=4000)


def long_chat(chat_id: str, lines: int = 200) -> ConversationInput:
    rows = [
        _row(index, "CUSTOMER" if index % 2 else "AGENT", f"line {index}: " + "power " * 12)
        for index in range(lines)
    ]
    return build_input(chat_id, rows, contact_count=1, token_budget=100_000)


def _row(minutes: int, sender: str, content: str, *, username: str | None = None) -> dict[str, Any]:
    return {
        "sender": sender,
        "sent_at": START + timedelta(minutes=minutes),
        "content": content,
        "agent_username": username,
        "agent_email": None,
    }


def user_text(batch: Sequence[ConversationInput]) -> str:
    """The user message as the spec lays it out, built by hand."""
    return "\n\n".join(f"### chat_id: {c.chat_id}\n{c.transcript}" for c in batch)


def expected_usage(batch: Sequence[ConversationInput]) -> tuple[int, int]:
    """What the fake bills: len(all message text)//4 in, len(reply content)//4 out."""
    user = user_text(batch)
    prompt = max(1, (len(SYSTEM_PROMPT) + len(user)) // 4)
    sections = parse_conversations(user)
    content = json.dumps(
        {"analyses": [judge(chat_id, section) for chat_id, section in sections.items()]},
        ensure_ascii=False,
    )
    return prompt, max(1, len(content) // 4)


def expected_judgement(conversation: ConversationInput) -> ConversationJudgement:
    return ConversationJudgement.model_validate(
        judge(conversation.chat_id, conversation.transcript)
    )


def dollars(input_tokens: int, output_tokens: int) -> float:
    return (input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE) / 1e6


def assert_ok(outcome: AnalysisOutcome, conversation: ConversationInput) -> None:
    assert outcome.error is None, outcome.error
    assert outcome.chat_id == conversation.chat_id
    assert outcome.judgement == expected_judgement(conversation)


def assert_failed(outcome: AnalysisOutcome, *fragments: str, billed: bool = False) -> None:
    """A failed outcome; `billed` when the model answered (invalidly) and charged for it."""
    assert outcome.judgement is None
    assert outcome.error
    for fragment in fragments:
        assert fragment in outcome.error, outcome.error
    if billed:
        assert outcome.input_tokens > 0 and outcome.output_tokens > 0
        assert outcome.cost_usd == pytest.approx(
            dollars(outcome.input_tokens, outcome.output_tokens)
        )
    else:
        assert (outcome.input_tokens, outcome.output_tokens, outcome.cost_usd) == (0, 0, 0.0)


def assert_billed_in_full(outcomes: list[AnalysisOutcome], fake: FakeOpenAI) -> None:
    """Every token the model answered with, valid or not, is on some conversation."""
    assert fake.usage_billed != (0, 0)
    spent = (sum(o.input_tokens for o in outcomes), sum(o.output_tokens for o in outcomes))
    assert spent == fake.usage_billed
    assert sum(o.cost_usd for o in outcomes) == pytest.approx(dollars(*spent))


def statuses(fake: FakeOpenAI) -> list[int | None]:
    return [entry.status for entry in fake.request_log]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeOpenAI]:
    yield from fake_openai_server()


@pytest.fixture
def fake(shared_fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    """The module's server, clean for each test (starting one per test is the slow part)."""
    shared_fake.latency = 0.0
    shared_fake.reset()
    yield shared_fake
    # Hung requests outlive a client's timeout; let them end so counts start from zero.
    deadline = time.monotonic() + HANG_GUARD
    while shared_fake.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert shared_fake.in_flight == 0
    shared_fake.latency = 0.0
    shared_fake.reset()


@pytest.fixture
async def make_analyzer(fake: FakeOpenAI) -> AsyncIterator[Builder]:
    """Analyzers against the fake with fast backoff; closed before the server stops."""
    made: list[OpenAIAnalyzer] = []

    def build(**overrides: Any) -> OpenAIAnalyzer:
        values: dict[str, Any] = {
            "api_key": "sk-test",
            "model": "gpt-test",
            "base_url": fake.base_url,
            "timeout_seconds": 5.0,
            "concurrency": 4,
            "initial_backoff": 0.01,
            "max_seconds": 10.0,
            "input_price_per_million": INPUT_PRICE,
            "output_price_per_million": OUTPUT_PRICE,
        }
        values.update(overrides)
        analyzer = OpenAIAnalyzer(OpenAIOptions(**values))
        made.append(analyzer)
        return analyzer

    yield build
    for analyzer in made:
        await analyzer.aclose()


# ---------------------------------------------------------------------------- happy path


async def test_one_request_per_conversation_with_judgements_in_input_order(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    analyzer = make_analyzer()
    conversations = [
        chat("c-happy", "I bought a token but it has not arrived", "got it, thank you!"),
        chat("c-angry", "power outage since morning", "still no power and my bill is due"),
        chat("c-sw", "habari, nataka kujua salio"),
        chat("c-4"),
        chat("c-5", "hello?"),
    ]
    outcomes = await analyzer.analyze(conversations)

    assert [o.chat_id for o in outcomes] == [c.chat_id for c in conversations]
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)
    assert fake.requests == len(conversations) == analyzer.requests_sent
    assert fake.requests_by_chat == {c.chat_id: 1 for c in conversations}
    assert set(statuses(fake)) == {200}
    happy, angry, swahili = (o.judgement for o in outcomes[:3])
    assert happy is not None and happy.resolved and happy.satisfaction_score == 5
    assert angry is not None and not angry.resolved
    assert angry.topics == ["outage", "billing"]
    assert swahili is not None and swahili.language == "sw"


async def test_nothing_to_analyse_sends_nothing(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    assert await make_analyzer().analyze([]) == []
    assert fake.requests == 0


async def test_fingerprint_names_model_and_prompt_version(make_analyzer: Builder) -> None:
    analyzer = make_analyzer(model="gpt-4o-mini")
    assert analyzer.fingerprint == AnalyzerFingerprint("openai", "gpt-4o-mini", PROMPT_VERSION)


def test_defaults_follow_the_spec() -> None:
    options = OpenAIOptions(api_key="sk-test", model="gpt-test")
    assert options.max_attempts == MAX_ATTEMPTS == 6
    assert options.max_seconds == MAX_SECONDS_PER_CONVERSATION == 120.0
    assert options.batch_size == 1
    assert options.timeout_seconds > 0


# ---------------------------------------------------------------------------- the request


async def test_request_asks_for_strict_structured_outputs(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    conversation = chat("c1")
    await make_analyzer().analyze([conversation])
    body = fake.last_request
    assert body is not None

    assert body["model"] == "gpt-test"
    assert body["temperature"] == 0
    assert body["messages"] == [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_text([conversation])},
    ]
    fmt = body["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["strict"] is True
    assert fmt == response_format()

    schema = fmt["json_schema"]["schema"]
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["analyses"]
    item = schema["properties"]["analyses"]["items"]
    if "$ref" in item:
        item = schema["$defs"][item["$ref"].rsplit("/", 1)[-1]]
    fields = list(ConversationJudgement.model_fields)
    assert list(item["properties"]) == fields
    assert sorted(item["required"]) == sorted(fields)
    assert item["additionalProperties"] is False


async def test_sdk_retries_are_off(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    # With one attempt allowed, a 500 is seen once: the SDK does not retry on its own.
    fake.fail_next("server_error", times=5)
    [outcome] = await make_analyzer(max_attempts=1).analyze([chat("c1")])
    assert_failed(outcome, "500")
    assert fake.requests == 1


# ---------------------------------------------------------------------------- retries


@pytest.mark.parametrize(
    ("kind", "options"),
    [
        ("server_error", {}),
        ("server_error", {"status": 503}),
        ("bad_gateway", {}),
        ("bad_gateway", {"status": 504}),
        ("bad_gateway", {"status": 503}),
        ("rate_limit", {"retry_after": None, "retry_after_ms": 10}),
        ("server_error", {"headers": {"x-should-retry": "false"}}),
    ],
)
async def test_transient_errors_are_retried(
    fake: FakeOpenAI, make_analyzer: Builder, kind: str, options: dict[str, Any]
) -> None:
    fake.fail_next(kind, times=2, **options)
    conversation = chat("c1")
    [outcome] = await make_analyzer().analyze([conversation])
    assert_ok(outcome, conversation)
    assert fake.requests == 3
    assert statuses(fake)[-1] == 200


async def test_at_most_six_attempts_then_a_failed_outcome(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("server_error", times=20)
    analyzer = make_analyzer(initial_backoff=0.001)
    outcomes = await analyzer.analyze([chat("c1"), chat("c2")])
    for outcome in outcomes:
        assert_failed(outcome, "500")
    assert fake.requests_by_chat == {"c1": 6, "c2": 6}
    assert analyzer.requests_sent == 12


async def test_persistent_rate_limit_ends_as_a_failed_outcome(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("rate_limit", times=20, retry_after=None, retry_after_ms=1)
    [outcome] = await make_analyzer(max_attempts=3).analyze([chat("c1")])
    assert_failed(outcome, "429")
    assert fake.requests == 3


async def test_retry_waits_at_least_retry_after_ms(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("rate_limit", retry_after=None, retry_after_ms=50)
    conversation = chat("c1")
    [outcome] = await make_analyzer(initial_backoff=0.001).analyze([conversation])
    assert_ok(outcome, conversation)
    first, second = fake.request_log
    assert (first.status, second.status) == (429, 200)
    assert second.timestamp - first.timestamp >= 0.05


async def test_retry_waits_at_least_retry_after_seconds(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("rate_limit", retry_after=0.2)
    conversation = chat("c1")
    [outcome] = await make_analyzer(initial_backoff=0.001).analyze([conversation])
    assert_ok(outcome, conversation)
    first, second = fake.request_log
    assert second.timestamp - first.timestamp >= 0.2


async def test_retry_after_ms_takes_precedence_over_seconds(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("rate_limit", retry_after=60, retry_after_ms=20)
    conversation = chat("c1")
    async with asyncio.timeout(HANG_GUARD):
        [outcome] = await make_analyzer(initial_backoff=0.001).analyze([conversation])
    assert_ok(outcome, conversation)
    first, second = fake.request_log
    assert second.timestamp - first.timestamp >= 0.02


@pytest.mark.parametrize(
    "value",
    [
        "soon",
        "",
        "-5",
        format_datetime(datetime.now(UTC) - timedelta(minutes=5), usegmt=True),
        "Mon, 02 Mar 2026 08:00:00 -0000",
    ],
)
async def test_odd_retry_after_values_still_retry(
    fake: FakeOpenAI, make_analyzer: Builder, value: str
) -> None:
    fake.fail_next("rate_limit", retry_after=None, headers={"retry-after": value})
    conversation = chat("c1")
    async with asyncio.timeout(HANG_GUARD):
        [outcome] = await make_analyzer().analyze([conversation])
    assert_ok(outcome, conversation)
    assert fake.requests == 2


async def test_a_hung_request_times_out_and_is_retried(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("hang", seconds=HANG_SECONDS)
    conversation = chat("c1")
    [outcome] = await make_analyzer(timeout_seconds=0.5).analyze([conversation])
    assert_ok(outcome, conversation)
    assert fake.requests == 2


async def test_time_cap_stops_retrying_timeouts(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    fake.fail_next("hang", times=20, seconds=HANG_SECONDS)
    analyzer = make_analyzer(timeout_seconds=0.3, max_seconds=0.5)
    async with asyncio.timeout(HANG_GUARD):
        [outcome] = await analyzer.analyze([chat("c1")])
    assert_failed(outcome, "no answer from the model", "Timeout")
    # Two 0.3 s attempts pass the 0.5 s cap long before the six-attempt limit.
    assert 1 <= fake.requests <= 2


async def test_time_cap_is_not_overslept_by_a_long_retry_after(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    # Sleeping 60 s for a retry would blow the 1 s cap: give up instead.
    fake.fail_next("rate_limit", retry_after=60)
    async with asyncio.timeout(HANG_GUARD):
        [outcome] = await make_analyzer(max_seconds=1.0).analyze([chat("c1")])
    assert_failed(outcome, "429")
    assert fake.requests == 1


async def test_connection_errors_are_retried_then_fail(make_analyzer: Builder) -> None:
    analyzer = make_analyzer(base_url=f"http://127.0.0.1:{free_port()}/v1", max_attempts=3)
    async with asyncio.timeout(HANG_GUARD):
        [outcome] = await analyzer.analyze([chat("c1")])
    assert_failed(outcome, "no answer from the model", "Connection")
    assert analyzer.requests_sent == 3


async def test_a_bad_request_is_not_retried_and_fails_only_its_conversations(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_chat("c2", "bad_request", times=5)
    conversations = [chat("c1"), chat("c2"), chat("c3")]
    outcomes = await make_analyzer().analyze(conversations)
    assert_ok(outcomes[0], conversations[0])
    assert_failed(outcomes[1], "400")
    assert_ok(outcomes[2], conversations[2])
    assert fake.requests_by_chat == {"c1": 1, "c2": 1, "c3": 1}


async def test_a_bad_request_fails_every_conversation_packed_with_it(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("bad_request")
    outcomes = await make_analyzer(batch_size=4).analyze([chat("c1"), chat("c2")])
    for outcome in outcomes:
        assert_failed(outcome, "400")
    assert fake.requests == 1


@pytest.mark.parametrize(
    ("kind", "says"),
    [
        ("unauthorized", "401"),
        ("forbidden", "403"),
        ("insufficient_quota", "insufficient_quota"),
    ],
)
async def test_unusable_account_raises_analysis_unavailable_without_retrying(
    fake: FakeOpenAI, make_analyzer: Builder, kind: str, says: str
) -> None:
    fake.fail_next(kind, times=10)
    analyzer = make_analyzer(concurrency=4)
    with pytest.raises(AnalysisUnavailable, match=says):
        await analyzer.analyze([chat("c1")])
    assert fake.requests == 1
    # Running out of quota is not a rate limit: parallelism is left alone.
    assert analyzer.concurrency.limit == 4


async def test_unusable_account_stops_the_whole_call(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.latency = 0.05
    fake.fail_next("unauthorized")
    analyzer = make_analyzer(concurrency=2)
    with pytest.raises(AnalysisUnavailable, match="401"):
        await analyzer.analyze([chat(f"c{index}") for index in range(20)])
    sent = analyzer.requests_sent
    assert sent < 20
    # Nothing keeps calling the API after the failure was reported.
    await asyncio.sleep(0.3)
    assert analyzer.requests_sent == sent
    assert fake.requests <= sent


# ---------------------------------------------------------------------------- invalid replies


@pytest.mark.parametrize("kind", ["malformed_json", "out_of_range", "refusal", "length"])
async def test_an_invalid_reply_is_asked_again_once(
    fake: FakeOpenAI, make_analyzer: Builder, kind: str
) -> None:
    fake.fail_next(kind)
    conversation = chat("c1")
    [outcome] = await make_analyzer().analyze([conversation])
    assert_ok(outcome, conversation)
    assert fake.requests == 2
    # The invalid answer was billed too: the conversation carries both answers' tokens.
    assert_billed_in_full([outcome], fake)
    assert outcome.input_tokens == 2 * expected_usage([conversation])[0]


@pytest.mark.parametrize(
    ("kind", "options", "reason"),
    [
        ("malformed_json", {}, "invalid reply"),
        ("malformed_json", {"content": "not json at all"}, "invalid reply"),
        ("out_of_range", {}, "satisfaction_score"),
        ("out_of_range", {"field": "language", "value": "english"}, "language"),
        ("out_of_range", {"field": "topics", "value": []}, "topics"),
        ("refusal", {}, "refused"),
        ("length", {}, "cut off"),
    ],
)
async def test_an_invalid_reply_twice_is_a_failed_outcome(
    fake: FakeOpenAI, make_analyzer: Builder, kind: str, options: dict[str, Any], reason: str
) -> None:
    fake.fail_next(kind, times=2, **options)
    [outcome] = await make_analyzer().analyze([chat("c1")])
    assert_failed(outcome, "invalid reply", reason, billed=True)
    assert fake.requests == 2
    assert_billed_in_full([outcome], fake)


async def test_an_invalid_reply_fails_only_its_own_conversation(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_chat("c2", "malformed_json", times=5)
    conversations = [chat("c1"), chat("c2"), chat("c3")]
    outcomes = await make_analyzer().analyze(conversations)
    assert_ok(outcomes[0], conversations[0])
    assert_failed(outcomes[1], "invalid reply", billed=True)
    assert_ok(outcomes[2], conversations[2])
    assert fake.requests_by_chat == {"c1": 1, "c2": 2, "c3": 1}
    assert_billed_in_full(outcomes, fake)


async def test_a_missing_chat_is_asked_for_again_alone(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("missing_chat", chat_id="b")
    conversations = [chat("a"), chat("b"), chat("c")]
    outcomes = await make_analyzer(batch_size=4).analyze(conversations)
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)
    assert [entry.chat_ids for entry in fake.request_log] == [("a", "b", "c"), ("b",)]
    assert_billed_in_full(outcomes, fake)


async def test_a_chat_missing_twice_is_a_failed_outcome(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("missing_chat", times=2, chat_id="b")
    conversations = [chat("a"), chat("b")]
    outcomes = await make_analyzer(batch_size=4).analyze(conversations)
    assert_ok(outcomes[0], conversations[0])
    assert_failed(outcomes[1], "did not include", billed=True)
    assert fake.requests == 2
    assert_billed_in_full(outcomes, fake)


async def test_a_reply_without_the_only_chat_fails_after_one_more_try(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("missing_chat", times=2)
    [outcome] = await make_analyzer().analyze([chat("c1")])
    assert_failed(outcome, "did not include", billed=True)
    assert fake.requests == 2
    assert_billed_in_full([outcome], fake)


async def test_an_invalid_reply_then_a_server_error_is_still_recovered(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.fail_next("refusal")
    fake.fail_next("server_error", times=2)
    conversation = chat("c1")
    [outcome] = await make_analyzer().analyze([conversation])
    assert_ok(outcome, conversation)
    assert statuses(fake) == [200, 500, 500, 200]


# ---------------------------------------------------------------------------- concurrency


async def test_at_most_concurrency_requests_in_flight_and_it_reaches_the_limit(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    fake.latency = 0.1
    analyzer = make_analyzer(concurrency=4)
    conversations = [chat(f"c{index}") for index in range(24)]
    outcomes = await analyzer.analyze(conversations)
    assert all(outcome.error is None for outcome in outcomes)
    assert fake.requests == 24
    assert fake.peak_concurrency == 4
    assert analyzer.concurrency.peak == 4
    assert analyzer.concurrency.in_flight == 0


async def test_concurrency_one_is_sequential(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    fake.latency = 0.02
    await make_analyzer(concurrency=1).analyze([chat(f"c{index}") for index in range(6)])
    assert fake.peak_concurrency == 1
    assert fake.requests == 6


async def test_a_rate_limit_halves_concurrency_and_successes_restore_it(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    analyzer = make_analyzer(concurrency=8)
    fake.fail_next("rate_limit", retry_after=None, retry_after_ms=5)
    await analyzer.analyze([chat("first")])
    assert analyzer.concurrency.limit == 4  # halved; one success since

    # One more slot per eight successes: 16 successes in all -> 4 + 2.
    outcomes = await analyzer.analyze([chat(f"c{index}") for index in range(15)])
    assert all(outcome.error is None for outcome in outcomes)
    assert analyzer.concurrency.limit == 6

    outcomes = await analyzer.analyze([chat(f"d{index}") for index in range(40)])
    assert all(outcome.error is None for outcome in outcomes)
    assert analyzer.concurrency.limit == 8  # never above the configured maximum


async def test_fewer_requests_in_flight_after_throttling(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    analyzer = make_analyzer(concurrency=8)
    fake.fail_next("rate_limit", times=2, retry_after=None, retry_after_ms=5)
    await analyzer.analyze([chat("first")])
    assert analyzer.concurrency.limit == 2

    fake.reset()
    fake.latency = 0.05
    outcomes = await analyzer.analyze([chat(f"c{index}") for index in range(12)])
    assert all(outcome.error is None for outcome in outcomes)
    # Limit 2, growing to 3 after the eighth success since the throttle.
    assert 2 <= fake.peak_concurrency <= 3


async def test_adaptive_concurrency_halves_with_a_floor_and_recovers_to_the_maximum() -> None:
    limiter = AdaptiveConcurrency(8, recover_after=2)
    for expected in (4, 2, 1, 1):
        await limiter.throttled()
        assert limiter.limit == expected
    for expected in (1, 2, 2, 3):
        await limiter.succeeded()
        assert limiter.limit == expected
    # A throttle resets the count of successes towards the next slot.
    await limiter.succeeded()
    await limiter.throttled()
    assert limiter.limit == 1
    await limiter.succeeded()
    assert limiter.limit == 1
    for _ in range(40):
        await limiter.succeeded()
    assert limiter.limit == limiter.maximum == 8


async def test_adaptive_concurrency_blocks_beyond_the_limit() -> None:
    limiter = AdaptiveConcurrency(4)
    await limiter.throttled()  # limit 2
    release = asyncio.Event()
    entered: list[int] = []

    async def worker(index: int) -> None:
        async with limiter:
            entered.append(index)
            await release.wait()

    tasks = [asyncio.create_task(worker(index)) for index in range(4)]
    for _ in range(10):
        await asyncio.sleep(0)
    assert entered == [0, 1]
    assert limiter.in_flight == 2

    # Recovering a slot lets one more in at once.
    for _ in range(8):
        await limiter.succeeded()
    for _ in range(10):
        await asyncio.sleep(0)
    assert entered == [0, 1, 2]

    release.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2, 3]
    assert limiter.in_flight == 0
    assert limiter.peak == 3


# ---------------------------------------------------------------------------- minute budgets


async def test_minute_budget_none_is_unlimited() -> None:
    budget = MinuteBudget(None)
    async with asyncio.timeout(HANG_GUARD):
        for _ in range(1000):
            await budget.take(10**9)


async def test_minute_budget_starts_full_then_waits_for_refill() -> None:
    budget = MinuteBudget(6000)  # 100 per second
    started = time.monotonic()
    await budget.take(6000)
    await budget.take(20)  # 0.2 s of refill
    assert time.monotonic() - started >= 0.2


async def test_minute_budget_serves_waiters_in_order() -> None:
    budget = MinuteBudget(6000)
    started = time.monotonic()
    await budget.take(6000)
    finished: list[int] = []

    async def taker(index: int) -> None:
        await budget.take(5)
        finished.append(index)

    async with asyncio.timeout(HANG_GUARD):
        await asyncio.gather(*(taker(index) for index in range(5)))
    assert finished == [0, 1, 2, 3, 4]
    assert time.monotonic() - started >= 0.25


async def test_minute_budget_does_not_bank_more_than_a_minute() -> None:
    budget = MinuteBudget(600_000)  # 10,000 per second
    await asyncio.sleep(0.05)  # would be 500 extra if the bucket overflowed
    started = time.monotonic()
    await budget.take(600_000)
    await budget.take(500)
    assert time.monotonic() - started >= 0.05


async def test_minute_budget_lets_an_oversized_request_through_when_full() -> None:
    budget = MinuteBudget(60)
    async with asyncio.timeout(HANG_GUARD):
        await budget.take(10_000)


async def test_analyzer_works_with_per_minute_budgets(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    analyzer = make_analyzer(requests_per_minute=1000, tokens_per_minute=1_000_000)
    conversations = [chat(f"c{index}") for index in range(5)]
    async with asyncio.timeout(HANG_GUARD):
        outcomes = await analyzer.analyze(conversations)
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)
    assert fake.requests == 5


# ---------------------------------------------------------------------------- packing and cost


def test_cost_is_per_million_tokens(make_analyzer: Builder) -> None:
    analyzer = make_analyzer()
    assert analyzer.cost(1_000_000, 0) == pytest.approx(INPUT_PRICE)
    assert analyzer.cost(0, 1_000_000) == pytest.approx(OUTPUT_PRICE)
    assert analyzer.cost(1234, 567) == pytest.approx((1234 * 2.5 + 567 * 10.0) / 1e6)
    assert (
        make_analyzer(input_price_per_million=0.0, output_price_per_million=0.0).cost(10**6, 10**6)
        == 0.0
    )


async def test_usage_and_cost_of_single_requests(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    analyzer = make_analyzer()
    conversations = [
        chat("c1"),
        chat("c2", "power outage since morning", "still no power"),
        chat("c3", "habari, asante sana"),
    ]
    for conversation in conversations:
        [outcome] = await analyzer.analyze([conversation])
        assert_ok(outcome, conversation)
        body = fake.last_request
        assert body is not None
        sent = sum(len(message["content"]) for message in body["messages"])
        prompt, completion = expected_usage([conversation])
        assert prompt == sent // 4
        assert (outcome.input_tokens, outcome.output_tokens) == (prompt, completion)
        assert outcome.cost_usd == pytest.approx(dollars(prompt, completion))
    assert fake.requests == 3


def test_pack_respects_batch_size_and_token_limit(make_analyzer: Builder) -> None:
    analyzer = make_analyzer(batch_size=4, batch_max_tokens=1500)
    short = [chat(f"s{index}") for index in range(9)]
    assert [len(batch) for batch in analyzer.pack(short)] == [4, 4, 1]
    assert [c for batch in analyzer.pack(short) for c in batch] == short

    big = long_chat("big")
    assert estimate_tokens(big.transcript) > 1500
    batches = analyzer.pack([short[0], short[1], big, short[2], short[3]])
    assert [[c.chat_id for c in batch] for batch in batches] == [
        ["s0", "s1"],
        ["big"],
        ["s2", "s3"],
    ]

    medium = [long_chat(f"m{index}", lines=40) for index in range(3)]
    tokens = estimate_tokens(medium[0].transcript)
    assert 750 < tokens <= 1500
    assert [len(batch) for batch in analyzer.pack(medium)] == [1, 1, 1]

    assert [len(batch) for batch in make_analyzer(batch_size=1).pack(short)] == [1] * 9
    assert analyzer.pack([]) == []


async def test_short_conversations_are_packed_four_to_a_request(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    conversations = [chat(f"c{index:02d}") for index in range(10)]
    outcomes = await make_analyzer(batch_size=4).analyze(conversations)
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)
    assert fake.requests == math.ceil(10 / 4)
    ids = [c.chat_id for c in conversations]
    assert sorted(entry.chat_ids for entry in fake.request_log) == [
        tuple(ids[0:4]),
        tuple(ids[4:8]),
        tuple(ids[8:10]),
    ]


async def test_long_transcripts_travel_alone(fake: FakeOpenAI, make_analyzer: Builder) -> None:
    conversations = [chat("s1"), chat("s2"), long_chat("big"), chat("s3"), chat("s4")]
    outcomes = await make_analyzer(batch_size=4, batch_max_tokens=1500).analyze(conversations)
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)
    assert sorted(entry.chat_ids for entry in fake.request_log) == [
        ("big",),
        ("s1", "s2"),
        ("s3", "s4"),
    ]
    # The long one's request is billed to it alone.
    big = outcomes[2]
    prompt, completion = expected_usage([conversations[2]])
    assert (big.input_tokens, big.output_tokens) == (prompt, completion)
    assert big.cost_usd == pytest.approx(dollars(prompt, completion))


async def test_packed_usage_is_split_by_transcript_length_and_adds_up(
    fake: FakeOpenAI, make_analyzer: Builder
) -> None:
    conversations = [
        chat("tiny", "hi"),
        chat("mid", "my token did not arrive, I paid by mpesa this morning", "still nothing"),
        chat("big", *(f"message {index}: the meter shows an error" for index in range(8))),
        chat("same", "hi"),
    ]
    outcomes = await make_analyzer(batch_size=4).analyze(conversations)
    assert fake.requests == 1
    for outcome, conversation in zip(outcomes, conversations, strict=True):
        assert_ok(outcome, conversation)

    prompt, completion = expected_usage(conversations)
    assert sum(o.input_tokens for o in outcomes) == prompt
    assert sum(o.output_tokens for o in outcomes) == completion
    assert sum(o.cost_usd for o in outcomes) == pytest.approx(dollars(prompt, completion))

    weights = [estimate_tokens(c.transcript) for c in conversations]
    for outcome, weight in zip(outcomes, weights, strict=True):
        assert abs(outcome.input_tokens - prompt * weight / sum(weights)) <= 1
        assert abs(outcome.output_tokens - completion * weight / sum(weights)) <= 1
        assert outcome.cost_usd == pytest.approx(
            dollars(outcome.input_tokens, outcome.output_tokens)
        )
    # Equal transcripts get equal shares, give or take the one token rounding moves.
    assert abs(outcomes[0].input_tokens - outcomes[3].input_tokens) <= 1
    assert outcomes[2].input_tokens > outcomes[1].input_tokens > outcomes[0].input_tokens


@pytest.mark.parametrize("count", [3, 6, 7])
async def test_equal_shares_still_add_up_to_the_request(
    fake: FakeOpenAI, make_analyzer: Builder, count: int
) -> None:
    conversations = [chat(f"c{index}") for index in range(count)]
    outcomes = await make_analyzer(batch_size=count, batch_max_tokens=100_000).analyze(
        conversations
    )
    assert fake.requests == 1
    prompt, completion = expected_usage(conversations)
    assert sum(o.input_tokens for o in outcomes) == prompt
    assert sum(o.output_tokens for o in outcomes) == completion
    assert max(o.input_tokens for o in outcomes) - min(o.input_tokens for o in outcomes) <= 1


# ---------------------------------------------------------------------------- is_retryable


async def _error(fake: FakeOpenAI, kind: str, **options: Any) -> openai.APIError:
    fake.fail_next(kind, **options)
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=fake.base_url, max_retries=0, timeout=0.3
    ) as client:
        try:
            await client.chat.completions.create(
                model="gpt-test", messages=[{"role": "user", "content": "### chat_id: x\nhi"}]
            )
        except openai.APIError as exc:
            return exc
    raise AssertionError(f"{kind} did not fail")


@pytest.mark.parametrize(
    ("kind", "options", "retryable"),
    [
        ("rate_limit", {}, True),
        ("server_error", {}, True),
        ("bad_gateway", {}, True),
        ("server_error", {"status": 408}, True),
        ("hang", {"seconds": HANG_SECONDS}, True),
        ("insufficient_quota", {}, False),
        ("rate_limit", {"code": "insufficient_quota"}, False),
        ("bad_request", {}, False),
        ("unauthorized", {}, False),
        ("forbidden", {}, False),
        ("server_error", {"status": 404}, False),
        ("server_error", {"status": 422}, False),
    ],
)
async def test_is_retryable(
    fake: FakeOpenAI, kind: str, options: dict[str, Any], retryable: bool
) -> None:
    exc = await _error(fake, kind, **options)
    assert is_retryable(exc) is retryable


async def test_connection_errors_are_retryable() -> None:
    async with openai.AsyncOpenAI(
        api_key="sk-test", base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=0
    ) as client:
        with pytest.raises(openai.APIConnectionError) as caught:
            await client.models.list()
    assert is_retryable(caught.value)
    assert not is_retryable(ValueError("not an API error"))
