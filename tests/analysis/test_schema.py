"""The analysis schema: topic spelling, judgement validation, labels, Structured Outputs."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from powerpulse.analysis.schema import (
    BatchJudgement,
    ConversationJudgement,
    SentimentLabel,
    normalise_topic,
    response_format,
    sentiment_label,
)

FIELDS = list(ConversationJudgement.model_fields)


def judgement(**overrides: Any) -> dict[str, Any]:
    value: dict[str, Any] = {
        "chat_id": "c1",
        "satisfaction_score": 4,
        "sentiment_score": 3,
        "initial_sentiment": 2,
        "final_sentiment": 5,
        "resolved": True,
        "effort_score": 4,
        "topics": ["token purchase"],
        "summary": "The customer's token arrived after a resend.",
        "language": "en",
    }
    value.update(overrides)
    return value


# ---------------------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("Power Outage", "power outage"),
        ("power outages", "power outage"),
        ("POWER   OUTAGES", "power outage"),
        ("  power\toutage \n", "power outage"),
        ("Power outage!", "power outage"),
        ("power, outage.", "power outage"),
        ("power_outage", "power outage"),
        ("Token Purchase?", "token purchase"),
        ("Billing", "billing"),
        ("bills", "bill"),
        ("Meter Issues", "meter issue"),
        ("batteries", "battery"),
        ("boxes", "box"),
        ("switches", "switch"),
        ("refunds", "refund"),
        # Words that only look plural stay as they are.
        ("status", "status"),
        ("address", "address"),
        ("analytics", "analytics"),
        ("analysis", "analysis"),
        ("gas", "gas"),
        ("Malipo ya LUKU", "malipo ya luku"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_normalise_topic(label: str, expected: str) -> None:
    assert normalise_topic(label) == expected


def test_power_outage_spellings_meet() -> None:
    spellings = ["Power Outage", "power outages", "  POWER  Outages! ", "power_outage."]
    assert {normalise_topic(spelling) for spelling in spellings} == {"power outage"}


def test_normalise_topic_is_idempotent_and_bounded() -> None:
    for label in ["Power Outages", "Token  purchase!!", "x" * 200, "meter issues " * 10]:
        once = normalise_topic(label)
        assert normalise_topic(once) == once
        assert len(once) <= 60


# ---------------------------------------------------------------------------- judgements


def test_a_valid_judgement_is_normalised() -> None:
    value = ConversationJudgement.model_validate(
        judgement(
            topics=["Power Outage", "power outages", "Billing!"],
            language=" EN ",
            summary="  Two \n lines\tof   text. ",
        )
    )
    assert value.topics == ["power outage", "billing"]
    assert value.language == "en"
    assert value.summary == "Two lines of text."


@pytest.mark.parametrize(
    "field",
    [
        "satisfaction_score",
        "sentiment_score",
        "initial_sentiment",
        "final_sentiment",
        "effort_score",
    ],
)
@pytest.mark.parametrize("score", [1, 2, 3, 4, 5])
def test_scores_from_one_to_five_are_accepted(field: str, score: int) -> None:
    assert (
        getattr(ConversationJudgement.model_validate(judgement(**{field: score})), field) == score
    )


@pytest.mark.parametrize(
    "field",
    [
        "satisfaction_score",
        "sentiment_score",
        "initial_sentiment",
        "final_sentiment",
        "effort_score",
    ],
)
@pytest.mark.parametrize("score", [0, 6, -1, 9, 3.5])
def test_scores_outside_one_to_five_are_rejected(field: str, score: float) -> None:
    with pytest.raises(ValidationError) as caught:
        ConversationJudgement.model_validate(judgement(**{field: score}))
    assert caught.value.errors()[0]["loc"] == (field,)


@pytest.mark.parametrize(
    ("topics", "expected"),
    [
        (["outage"], ["outage"]),
        (["a", "b", "c"], ["a", "b", "c"]),
        # Four labels that are three topics after normalising are fine.
        (
            ["Power Outage", "power outages", "billing", "token"],
            ["power outage", "billing", "token"],
        ),
        (["!!!", "billing"], ["billing"]),
    ],
)
def test_one_to_three_topics_after_dedupe(topics: list[str], expected: list[str]) -> None:
    assert ConversationJudgement.model_validate(judgement(topics=topics)).topics == expected


@pytest.mark.parametrize(
    "topics",
    [[], ["a", "b", "c", "d"], ["", "  ", "!!"], ["billing", "bills", "outage", "tokens", "meter"]],
)
def test_too_few_or_too_many_topics_are_rejected(topics: list[str]) -> None:
    with pytest.raises(ValidationError) as caught:
        ConversationJudgement.model_validate(judgement(topics=topics))
    assert caught.value.errors()[0]["loc"] == ("topics",)


@pytest.mark.parametrize("language", ["en", "sw", "EN", " Sw "])
def test_two_letter_languages_are_accepted(language: str) -> None:
    value = ConversationJudgement.model_validate(judgement(language=language))
    assert value.language == language.strip().lower()


@pytest.mark.parametrize("language", ["", "e", "eng", "en-GB", "e1", "english", "ñ"])
def test_other_languages_are_rejected(language: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ConversationJudgement.model_validate(judgement(language=language))
    assert caught.value.errors()[0]["loc"] == ("language",)


@pytest.mark.parametrize("summary", ["", "   ", "\n\t"])
def test_an_empty_summary_is_rejected(summary: str) -> None:
    with pytest.raises(ValidationError):
        ConversationJudgement.model_validate(judgement(summary=summary))


def test_a_long_summary_is_truncated() -> None:
    value = ConversationJudgement.model_validate(judgement(summary="word " * 500))
    assert len(value.summary) == 1000


@pytest.mark.parametrize("field", FIELDS)
def test_every_field_is_required(field: str) -> None:
    data = judgement()
    del data[field]
    with pytest.raises(ValidationError) as caught:
        ConversationJudgement.model_validate(data)
    assert caught.value.errors()[0]["type"] == "missing"


def test_unknown_fields_are_rejected() -> None:
    with pytest.raises(ValidationError):
        ConversationJudgement.model_validate(judgement(confidence=0.9))
    with pytest.raises(ValidationError):
        BatchJudgement.model_validate({"analyses": [judgement()], "note": "extra"})


def test_a_batch_validates_from_json() -> None:
    raw = json.dumps({"analyses": [judgement(), judgement(chat_id="c2", topics=["Bills"])]})
    batch = BatchJudgement.model_validate_json(raw)
    assert [item.chat_id for item in batch.analyses] == ["c1", "c2"]
    assert batch.analyses[1].topics == ["bill"]
    with pytest.raises(ValidationError):
        BatchJudgement.model_validate_json(raw[: len(raw) // 2])


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize(
    ("score", "label"),
    [
        (1, SentimentLabel.NEGATIVE),
        (2, SentimentLabel.NEGATIVE),
        (3, SentimentLabel.NEUTRAL),
        (4, SentimentLabel.POSITIVE),
        (5, SentimentLabel.POSITIVE),
    ],
)
def test_sentiment_label(score: int, label: SentimentLabel) -> None:
    assert sentiment_label(score) is label
    assert str(sentiment_label(score)) == label.name


# ---------------------------------------------------------------------------- response_format


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        if node.get("type") == "object":
            yield node
        for child in node.values():
            yield from _objects(child)
    elif isinstance(node, list):
        for child in node:
            yield from _objects(child)


def _keys(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, child in node.items():
            yield key
            if key != "properties":
                yield from _keys(child)
            else:
                for grandchild in child.values():
                    yield from _keys(grandchild)
    elif isinstance(node, list):
        for child in node:
            yield from _keys(child)


def test_response_format_is_strict_json_schema() -> None:
    value = response_format()
    assert value["type"] == "json_schema"
    assert value["json_schema"]["strict"] is True
    assert value["json_schema"]["name"] == "conversation_analyses"
    schema = value["json_schema"]["schema"]
    assert schema["type"] == "object"
    assert schema["properties"]["analyses"]["type"] == "array"
    assert schema["required"] == ["analyses"]
    assert schema["additionalProperties"] is False
    json.dumps(value)  # serialisable as a request body


def test_response_format_judgement_matches_the_model() -> None:
    schema = response_format()["json_schema"]["schema"]
    item = schema["properties"]["analyses"]["items"]
    if "$ref" in item:
        item = schema["$defs"][item["$ref"].rsplit("/", 1)[-1]]
    assert list(item["properties"]) == FIELDS
    assert sorted(item["required"]) == sorted(FIELDS)
    assert item["additionalProperties"] is False
    assert item["properties"]["topics"] == {
        "type": "array",
        "items": {"type": "string"},
        "description": ConversationJudgement.model_fields["topics"].description,
    }
    assert item["properties"]["resolved"]["type"] == "boolean"
    for field in FIELDS:
        if field.endswith(("_score", "_sentiment")):
            assert item["properties"][field]["type"] == "integer"


def test_every_object_in_the_schema_is_closed_and_fully_required() -> None:
    schema = response_format()["json_schema"]["schema"]
    objects = list(_objects(schema))
    assert len(objects) >= 2
    for node in objects:
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])
    # Keywords some compatible servers reject are left out; pydantic checks them instead.
    assert not {"minimum", "maximum", "title", "default"} & set(_keys(schema))


def test_response_format_is_a_fresh_value_each_time() -> None:
    first = response_format()
    snapshot = copy.deepcopy(first)
    first["json_schema"]["schema"]["properties"].clear()
    assert response_format() == snapshot
