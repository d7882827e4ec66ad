"""The offline lexicon analyzer, on hand-written conversations with known answers."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from powerpulse.analysis.base import ConversationInput
from powerpulse.analysis.lexicon import (
    INLINE_BATCH,
    LEXICON_VERSION,
    LexiconAnalyzer,
    satisfaction,
    sentiment_bucket,
)
from powerpulse.analysis.schema import SentimentLabel, normalise_topic, sentiment_label
from powerpulse.analysis.transcript import build_input
from powerpulse.errors import ConfigurationError

START = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)

Row = tuple[int, str, str | None]  # minutes after START, sender, content


def chat(chat_id: str, rows: list[Row], *, contact_count: int = 1) -> ConversationInput:
    messages = [
        {
            "sender": sender,
            "sent_at": START + timedelta(minutes=minutes),
            "content": content,
            "agent_username": "jane" if sender == "AGENT" else None,
            "agent_email": None,
        }
        for minutes, sender, content in rows
    ]
    return build_input(chat_id, messages, contact_count=contact_count, token_budget=4000)


HAPPY_TOKENS = chat(
    "happy-tokens",
    [
        (0, "CUSTOMER", "Habari, nimenunua token kwa mpesa lakini sijapata units"),
        (
            12,
            "AGENT",
            "Pole sana. Token yako ni 1234-5678-9012-3456. Tafadhali ingiza kwenye mita.",
        ),
        (15, "CUSTOMER", "Asante sana, tokens received"),
    ],
)

ANGRY_OUTAGE = chat(
    "angry-outage",
    [
        (0, "CUSTOMER", "We have no power since morning in Kasarani"),
        (30, "AGENT", "Sorry for the inconvenience, we are checking with the technical team."),
        (90, "CUSTOMER", "Still no power, third time I report this outage. Useless service"),
        (95, "CUSTOMER", "hello?"),
    ],
    contact_count=3,
)

NEVER_ANSWERED = chat(
    "never-answered",
    [
        (0, "CUSTOMER", "How do I change the name on my account?"),
        (10, "CUSTOMER", "hello?"),
    ],
)


@pytest.fixture(scope="module")
def analyzer() -> LexiconAnalyzer:
    return LexiconAnalyzer()


def write_topics(path: Path, topics: dict[str, list[str]]) -> Path:
    path.write_text(json.dumps({"version": 1, "topics": topics}), encoding="utf-8")
    return path


# --- the three reference conversations -------------------------------------------------


def test_happy_swahili_token_purchase_is_resolved(analyzer: LexiconAnalyzer) -> None:
    judgement = analyzer.judge(HAPPY_TOKENS)
    assert judgement.chat_id == "happy-tokens"
    assert judgement.resolved is True
    assert judgement.satisfaction_score >= 4
    assert sentiment_label(judgement.final_sentiment) is SentimentLabel.POSITIVE
    assert judgement.topics[0] == "token purchase"
    assert judgement.language == "sw"
    assert judgement.effort_score == 5
    assert "token purchase" in judgement.summary
    assert "after 12 min" in judgement.summary


def test_angry_repeated_outage_is_unresolved_and_effortful(analyzer: LexiconAnalyzer) -> None:
    judgement = analyzer.judge(ANGRY_OUTAGE)
    assert judgement.resolved is False
    assert judgement.satisfaction_score <= 2
    assert judgement.effort_score <= 3
    assert judgement.topics[0] == "outage"
    assert judgement.language == "en"
    assert sentiment_label(judgement.sentiment_score) is SentimentLabel.NEGATIVE
    assert "contact 3" in judgement.summary


def test_chat_never_answered_is_not_resolved(analyzer: LexiconAnalyzer) -> None:
    judgement = analyzer.judge(NEVER_ANSWERED)
    assert judgement.resolved is False
    assert judgement.satisfaction_score <= 3
    assert judgement.topics == ["account"]
    assert judgement.summary.endswith("nobody replied; 2 messages; not resolved.")


# --- resolution rules ---------------------------------------------------------------------


def test_bot_greeting_before_the_customer_is_not_a_reply(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "bot-first",
        [(0, "BOT", "Welcome! How can we help?"), (1, "CUSTOMER", "My meter shows an error")],
    )
    assert analyzer.judge(conversation).resolved is False


def test_answered_question_with_agent_last_is_resolved(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "question",
        [
            (0, "CUSTOMER", "How do I buy tokens?"),
            (1, "AGENT", "Dial *977# and follow the prompts."),
        ],
    )
    judgement = analyzer.judge(conversation)
    assert judgement.resolved is True
    assert judgement.topics == ["token purchase"]


def test_agent_asking_back_is_not_an_answer(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "asked-back",
        [
            (0, "CUSTOMER", "Why is my bill so high?"),
            (3, "AGENT", "Could you share your account number?"),
        ],
    )
    assert analyzer.judge(conversation).resolved is False


def test_cues_in_the_opening_request_do_not_decide(analyzer: LexiconAnalyzer) -> None:
    # "not received" describes the problem; the agent then reports the fix.
    conversation = chat(
        "opening",
        [
            (0, "CUSTOMER", "I paid 500 but token not received. Meter 123456"),
            (4, "AGENT", "We have resent the token: 1111-2222-3333. Have a nice day."),
        ],
    )
    assert analyzer.judge(conversation).resolved is True


def test_a_promised_fix_is_not_a_fix(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "promise",
        [
            (0, "CUSTOMER", "There is a blackout on our street"),
            (4, "AGENT", "Technicians are on site; power will be restored by 5pm."),
        ],
    )
    assert analyzer.judge(conversation).resolved is False


def test_latest_cue_wins_and_thanks_again_is_positive(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "latest",
        [
            (0, "CUSTOMER", "My tokens are not loading"),
            (2, "AGENT", "Please enter the token again slowly."),
            (5, "CUSTOMER", "Still not working"),
            (6, "AGENT", "Try this one instead: 9999-8888-7777."),
            (8, "CUSTOMER", "It worked, thanks again!"),
        ],
    )
    judgement = analyzer.judge(conversation)
    assert judgement.resolved is True
    assert judgement.satisfaction_score == 5


def test_negative_cue_outweighs_thanks_in_the_same_message(
    analyzer: LexiconAnalyzer,
) -> None:
    conversation = chat(
        "mixed",
        [
            (0, "CUSTOMER", "Tokens za umeme hazijafika"),
            (2, "AGENT", "Please restart the meter."),
            (5, "CUSTOMER", "Ok thanks but it is still not working"),
        ],
    )
    assert analyzer.judge(conversation).resolved is False


def test_unanswered_last_message_without_cue_is_not_resolved(
    analyzer: LexiconAnalyzer,
) -> None:
    conversation = chat(
        "dangling",
        [
            (0, "CUSTOMER", "Which documents do I need for a new connection?"),
            (2, "AGENT", "A copy of your ID and the plot title deed."),
            (3, "CUSTOMER", "Where do I take them?"),
        ],
    )
    judgement = analyzer.judge(conversation)
    assert judgement.resolved is False
    assert judgement.topics[0] == "connection"


def test_no_customer_text_is_neutral_and_unresolved(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "attachments",
        [(0, "CUSTOMER", None), (1, "AGENT", "We received your photo of the meter.")],
    )
    judgement = analyzer.judge(conversation)
    assert (judgement.sentiment_score, judgement.initial_sentiment) == (3, 3)
    assert (judgement.final_sentiment, judgement.satisfaction_score) == (3, 3)
    assert judgement.resolved is False
    # No customer text to match, so topics come from the agent's words.
    assert judgement.topics == ["meter"]
    assert judgement.summary.startswith("Customer sent only attachments about meter")


def test_swahili_no_problem_idiom_reads_positive(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "hakuna-shida",
        [
            (0, "CUSTOMER", "Token yangu haijafika"),
            (2, "AGENT", "Tumetuma tena token yako."),
            (4, "CUSTOMER", "Imefika, hakuna shida"),
        ],
    )
    judgement = analyzer.judge(conversation)
    assert judgement.resolved is True
    assert sentiment_label(judgement.final_sentiment) is SentimentLabel.POSITIVE
    assert judgement.language == "sw"


# --- effort ---------------------------------------------------------------------------------


def test_effort_counts_repeats_burst_and_return(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "effort",
        [
            (0, "CUSTOMER", "My meter number 445566 is not accepting tokens"),
            (1, "CUSTOMER", "My meter number 445566 is not accepting tokens!!"),
            (2, "CUSTOMER", "Please help"),
            (20, "AGENT", "It has been reset, please try again now."),
            (25, "CUSTOMER", "Asante, it worked"),
        ],
        contact_count=2,
    )
    judgement = analyzer.judge(conversation)
    assert judgement.resolved is True
    # repeated text, 3 messages before the agent, a return contact
    assert judgement.effort_score == 2


def test_effort_never_drops_below_one(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "worst",
        [
            (0, "CUSTOMER", "No power again in Umoja since last night"),
            (1, "CUSTOMER", "No power again in Umoja since last night"),
            (2, "CUSTOMER", "hello? anyone there?"),
            (3, "CUSTOMER", "third time asking"),
        ],
        contact_count=4,
    )
    judgement = analyzer.judge(conversation)
    assert judgement.effort_score == 1
    assert judgement.satisfaction_score <= 2


# --- topics and language ------------------------------------------------------------------


def test_topics_are_normalised_ranked_and_at_most_three(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "many-topics",
        [
            (
                0,
                "CUSTOMER",
                "My BILL is wrong, the bill shows arrears. I paid via M-Pesa, meter 12, "
                "I want a refund, my password fails and there is a blackout.",
            ),
            (5, "AGENT", "We are looking into it."),
        ],
    )
    topics = analyzer.judge(conversation).topics
    assert 1 <= len(topics) <= 3
    assert all(topic == normalise_topic(topic) for topic in topics)
    # billing 3 hits, payment 2 ("paid", "m-pesa"); of the one-hit topics (outage, meter,
    # refund, password) the first in file order wins the tie
    assert topics == ["billing", "payment", "outage"]


def test_no_keyword_means_enquiry(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "small-talk", [(0, "CUSTOMER", "Good morning"), (1, "AGENT", "Good morning!")]
    )
    assert analyzer.judge(conversation).topics == ["enquiry"]


def test_keywords_match_whole_words_only(analyzer: LexiconAnalyzer) -> None:
    # "unite" and "repay" contain no keyword as a whole word ("unit", "pay").
    conversation = chat(
        "whole-words", [(0, "CUSTOMER", "We unite to repay nothing"), (1, "AGENT", "Okay.")]
    )
    assert analyzer.judge(conversation).topics == ["enquiry"]


def test_english_chat_is_en(analyzer: LexiconAnalyzer) -> None:
    conversation = chat(
        "english",
        [
            (0, "CUSTOMER", "Hello, I bought tokens and they have not arrived, asante"),
            (3, "AGENT", "Here is your token: 1234."),
            (4, "CUSTOMER", "Thanks, it worked"),
        ],
    )
    assert analyzer.judge(conversation).language == "en"


# --- scores ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("compound", "score"),
    [
        (-1.0, 1),
        (-0.5, 1),
        (-0.49, 2),
        (-0.05, 2),
        (-0.04, 3),
        (0.0, 3),
        (0.05, 4),
        (0.49, 4),
        (0.5, 5),
        (1.0, 5),
    ],
)
def test_sentiment_bucket(compound: float, score: int) -> None:
    assert sentiment_bucket(compound) == score


def test_satisfaction_is_monotonic() -> None:
    for final in range(1, 5):
        for resolved in (False, True):
            assert satisfaction(resolved, final) <= satisfaction(resolved, final + 1)
        assert satisfaction(False, final) < satisfaction(True, final)
    assert satisfaction(True, 5) == 5
    assert satisfaction(False, 1) == 1


# --- the analyzer as a whole ---------------------------------------------------------------


def test_judgement_is_deterministic(analyzer: LexiconAnalyzer) -> None:
    for conversation in (HAPPY_TOKENS, ANGRY_OUTAGE, NEVER_ANSWERED):
        first = analyzer.judge(conversation)
        assert analyzer.judge(conversation) == first
        assert LexiconAnalyzer().judge(conversation) == first


async def test_analyze_keeps_order_and_costs_nothing(analyzer: LexiconAnalyzer) -> None:
    batch = [HAPPY_TOKENS, ANGRY_OUTAGE, NEVER_ANSWERED]
    outcomes = await analyzer.analyze(batch)
    assert [outcome.chat_id for outcome in outcomes] == [c.chat_id for c in batch]
    for outcome, conversation in zip(outcomes, batch, strict=True):
        assert outcome.error is None
        assert outcome.judgement == analyzer.judge(conversation)
        assert (outcome.input_tokens, outcome.output_tokens, outcome.cost_usd) == (0, 0, 0.0)
    assert await analyzer.analyze([]) == []
    await analyzer.aclose()


async def test_large_batch_sanity(analyzer: LexiconAnalyzer) -> None:
    # Throughput sanity only (a big batch runs off the event loop); no timing assertion.
    templates = [HAPPY_TOKENS, ANGRY_OUTAGE, NEVER_ANSWERED]
    batch = [
        ConversationInput(
            chat_id=f"chat-{index}",
            transcript=template.transcript,
            lines=template.lines,
            contact_count=template.contact_count,
        )
        for index in range(2000)
        for template in [templates[index % 3]]
    ]
    assert len(batch) > INLINE_BATCH
    outcomes = await analyzer.analyze(batch)
    assert [outcome.chat_id for outcome in outcomes] == [c.chat_id for c in batch]
    assert all(outcome.judgement is not None for outcome in outcomes)
    assert outcomes[3].judgement is not None
    assert outcomes[3].judgement.resolved is True


# --- topics file and fingerprint ------------------------------------------------------------


def test_default_fingerprint(analyzer: LexiconAnalyzer) -> None:
    fingerprint = analyzer.fingerprint
    assert fingerprint.analyzer == "lexicon"
    assert re.fullmatch(r"vader-[\w.]+\+topics-[0-9a-f]{12}", fingerprint.model)
    assert fingerprint.prompt_version == LEXICON_VERSION


def test_custom_topics_file_replaces_default(tmp_path: Path) -> None:
    topics_file = write_topics(tmp_path / "topics.json", {"Solar Panels": ["solar", "panel"]})
    custom = LexiconAnalyzer(topics_file)
    solar = chat("solar", [(0, "CUSTOMER", "My solar panel is broken"), (1, "AGENT", "Ok.")])
    assert custom.judge(solar).topics == ["solar panel"]
    # The default taxonomy is gone: tokens are no topic here.
    assert custom.judge(HAPPY_TOKENS).topics == ["enquiry"]
    assert LexiconAnalyzer(str(topics_file)).fingerprint == custom.fingerprint


def test_fingerprint_follows_the_topics_file(tmp_path: Path, analyzer: LexiconAnalyzer) -> None:
    topics_file = write_topics(tmp_path / "topics.json", {"outage": ["blackout"]})
    before = LexiconAnalyzer(topics_file).fingerprint
    write_topics(topics_file, {"outage": ["blackout", "no power"]})
    after = LexiconAnalyzer(topics_file).fingerprint
    assert before != after
    assert before.model != analyzer.fingerprint.model
    assert before.prompt_version == after.prompt_version == LEXICON_VERSION


@pytest.mark.parametrize(
    "content",
    [
        "not json at all",
        b"\xff\xfe not utf-8",
        "[]",
        json.dumps({"topics": {"outage": ["blackout"]}}),
        json.dumps({"version": 2, "topics": {"outage": ["blackout"]}}),
        json.dumps({"version": 1, "topics": {}}),
        json.dumps({"version": 1, "topics": ["outage"]}),
        json.dumps({"version": 1, "topics": {"outage": "blackout"}}),
        json.dumps({"version": 1, "topics": {"outage": []}}),
        json.dumps({"version": 1, "topics": {"outage": ["blackout", ""]}}),
        json.dumps({"version": 1, "topics": {"outage": [1]}}),
        json.dumps({"version": 1, "topics": {"!!!": ["blackout"]}}),
        json.dumps({"version": 1, "topics": {"Outages": ["a"], "outage": ["b"]}}),
    ],
)
def test_invalid_topics_file_raises(tmp_path: Path, content: str | bytes) -> None:
    topics_file = tmp_path / "topics.json"
    if isinstance(content, bytes):
        topics_file.write_bytes(content)
    else:
        topics_file.write_text(content, encoding="utf-8")
    with pytest.raises(ConfigurationError, match="Invalid topics file"):
        LexiconAnalyzer(topics_file)


def test_missing_topics_file_raises(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="Cannot read topics file"):
        LexiconAnalyzer(tmp_path / "absent.json")
