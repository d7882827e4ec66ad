"""One raw export record -> normalised message, or an InvalidRecord with a reason."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from powerpulse.ingest.records import (
    InvalidRecord,
    is_autoresponse,
    message_identity,
    normalise_record,
    parse_timestamp,
)
from powerpulse.models import SenderKind

MAX_CHARS = 100_000
AUTORESPONSE = ["*977#"]


def record(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "DIRECTION": "to_company",
        "SOCIAL_CREATE_TIME": "2025-08-12T10:00:00Z",
        "MESSAGE_CONTENT": "hello",
        "UNIQUE_POST_ID": None,
        "AGENT_USERNAME": None,
        "AGENT_EMAIL": None,
    }
    base.update(fields)
    return base


def normalise(raw: Any, chat_id: str = "chat-1", index: int = 0, **kwargs: Any):
    return normalise_record(
        chat_id, index, raw, max_message_chars=kwargs.get("max_chars", MAX_CHARS)
    )


def reason_for(raw: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidRecord) as caught:
        normalise(raw, **kwargs)
    return str(caught.value)


# -- content ------------------------------------------------------------------------------


@pytest.mark.parametrize("content", [None, "", "   ", "\n\t "])
def test_null_empty_or_blank_content_is_kept_as_a_non_text_message(content: Any) -> None:
    message = normalise(record(MESSAGE_CONTENT=content))
    assert message.content is None
    assert message.sender is SenderKind.CUSTOMER


def test_missing_content_field_is_kept_as_a_non_text_message() -> None:
    raw = record()
    del raw["MESSAGE_CONTENT"]
    assert normalise(raw).content is None


@pytest.mark.parametrize(("value", "text"), [(42, "42"), (3.5, "3.5"), (0, "0")])
def test_numeric_content_is_coerced_to_text(value: Any, text: str) -> None:
    assert normalise(record(MESSAGE_CONTENT=value)).content == text


def test_content_surrounding_whitespace_is_trimmed() -> None:
    assert normalise(record(MESSAGE_CONTENT="  hi there \n")).content == "hi there"


@pytest.mark.parametrize(
    ("value", "type_name"), [(True, "bool"), (False, "bool"), ({"a": 1}, "dict"), ([1], "list")]
)
def test_boolean_or_structured_content_is_rejected_with_a_reason(
    value: Any, type_name: str
) -> None:
    reason = reason_for(record(MESSAGE_CONTENT=value))
    assert "MESSAGE_CONTENT" in reason
    assert type_name in reason


def test_content_longer_than_the_limit_is_rejected() -> None:
    assert normalise(record(MESSAGE_CONTENT="abcde"), max_chars=5).content == "abcde"
    reason = reason_for(record(MESSAGE_CONTENT="abcdef"), max_chars=5)
    assert "MESSAGE_CONTENT" in reason and "5" in reason


def test_nul_bytes_are_removed_from_text() -> None:
    message = normalise(record(MESSAGE_CONTENT="he\x00llo", AGENT_USERNAME=None))
    assert message.content == "hello"


def test_nul_bytes_are_removed_from_agent_names() -> None:
    message = normalise(record(DIRECTION="to_client", AGENT_USERNAME="al\x00ice"))
    assert message.agent_username == "alice"


def test_lone_surrogates_are_replaced_so_the_text_is_storable() -> None:
    message = normalise(record(MESSAGE_CONTENT="a\ud800b\udfffc"))
    assert message.content == "a\ufffdb\ufffdc"
    message.content.encode("utf-8")  # would raise on a surrogate


def test_content_of_only_nul_bytes_is_a_non_text_message() -> None:
    assert normalise(record(MESSAGE_CONTENT="\x00\x00")).content is None


# -- sender -------------------------------------------------------------------------------


def test_to_company_is_a_customer_even_with_agent_fields() -> None:
    message = normalise(record(DIRECTION="to_company", AGENT_USERNAME="alice"))
    assert message.sender is SenderKind.CUSTOMER


def test_to_client_with_username_is_an_agent() -> None:
    message = normalise(
        record(DIRECTION="to_client", AGENT_USERNAME="alice", AGENT_EMAIL="a@example.com")
    )
    assert message.sender is SenderKind.AGENT
    assert message.agent == "alice"


def test_to_client_with_email_only_is_an_agent_counted_under_the_email() -> None:
    message = normalise(record(DIRECTION="to_client", AGENT_EMAIL="carol@example.com"))
    assert message.sender is SenderKind.AGENT
    assert message.agent_username is None
    assert message.agent == "carol@example.com"


@pytest.mark.parametrize(("username", "email"), [(None, None), ("", ""), ("  ", None)])
def test_to_client_without_agent_identity_is_a_bot(username: Any, email: Any) -> None:
    message = normalise(record(DIRECTION="to_client", AGENT_USERNAME=username, AGENT_EMAIL=email))
    assert message.sender is SenderKind.BOT
    assert message.agent is None


def test_direction_is_matched_case_insensitively() -> None:
    assert normalise(record(DIRECTION=" TO_CLIENT ")).sender is SenderKind.BOT


@pytest.mark.parametrize(
    "loose",
    [
        {"DIRECTION": " To_Company "},
        {"SOCIAL_CREATE_TIME": " 2025-08-12T10:00:00Z "},
        {"SOCIAL_CREATE_TIME": "2025-08-12T12:00:00+02:00"},
        {"SOCIAL_CREATE_TIME": "2025-08-12 10:00:00"},
        {"SOCIAL_CREATE_TIME": 1754992800},
        {"MESSAGE_CONTENT": "  hello\n"},
        {"AGENT_USERNAME": " ", "AGENT_EMAIL": ""},
        {"PLATFORM": " FaceBook ", "VIA": "FB_CHAT"},
    ],
)
def test_a_record_written_loosely_is_the_same_message_as_one_written_exactly(
    loose: dict[str, Any],
) -> None:
    """The usual record takes a shorter path than the rest; both reach the same message."""
    exact = record(PLATFORM="facebook", VIA="fb_chat")
    assert normalise(record(**{**exact, **loose})) == normalise(exact)
    reply = {**exact, "DIRECTION": "to_client", "AGENT_USERNAME": "amina"}
    loose_reply = {**reply, **loose, "DIRECTION": " TO_CLIENT"}
    if "AGENT_USERNAME" not in loose:
        assert normalise(loose_reply) == normalise(reply)


# -- invalid records ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([1, 2], "array"),
        ("text", "string"),
        (None, "null"),
        (7, "number"),
        (True, "boolean"),
    ],
)
def test_a_record_that_is_not_an_object_is_rejected(raw: Any, expected: str) -> None:
    reason = reason_for(raw)
    assert "object" in reason
    assert expected in reason


def test_missing_direction_is_rejected() -> None:
    raw = record()
    del raw["DIRECTION"]
    assert "DIRECTION" in reason_for(raw)
    assert "DIRECTION" in reason_for(record(DIRECTION=None))


@pytest.mark.parametrize("direction", ["sideways", "", "to_agent"])
def test_unknown_direction_is_rejected(direction: str) -> None:
    reason = reason_for(record(DIRECTION=direction))
    assert "DIRECTION" in reason


@pytest.mark.parametrize("direction", [1, True, ["to_client"]])
def test_non_string_direction_is_rejected(direction: Any) -> None:
    assert "DIRECTION" in reason_for(record(DIRECTION=direction))


def test_missing_time_is_rejected() -> None:
    raw = record()
    del raw["SOCIAL_CREATE_TIME"]
    assert "SOCIAL_CREATE_TIME" in reason_for(raw)


@pytest.mark.parametrize("field", ["AGENT_USERNAME", "AGENT_EMAIL", "UNIQUE_POST_ID"])
@pytest.mark.parametrize("value", [True, {"x": 1}, ["a"]])
def test_boolean_or_structured_identity_fields_are_rejected(field: str, value: Any) -> None:
    assert field in reason_for(record(DIRECTION="to_client", **{field: value}))


def test_an_overlong_agent_name_is_rejected() -> None:
    assert "AGENT_USERNAME" in reason_for(record(DIRECTION="to_client", AGENT_USERNAME="a" * 321))


def test_unknown_fields_and_a_missing_fb_chat_id_are_ignored() -> None:
    raw = record(SOMETHING_NEW={"nested": [1, 2]}, ANOTHER=True)
    raw.pop("FB_CHAT_ID", None)
    message = normalise(raw, chat_id="from-key")
    assert message.chat_id == "from-key"
    assert message.content == "hello"


def test_fb_chat_id_disagreeing_with_the_key_does_not_change_the_chat() -> None:
    message = normalise(record(FB_CHAT_ID="something-else"), chat_id="the-key")
    assert message.chat_id == "the-key"


def test_labels_are_lower_cased_and_kept_short() -> None:
    message = normalise(record(PLATFORM="WhatsApp", MESSAGE_TYPE="X" * 80, VIA=None))
    assert message.platform == "whatsapp"
    assert message.message_type == "x" * 50
    assert message.via is None


# -- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-08-12T10:00:00Z", datetime(2025, 8, 12, 10, 0, tzinfo=UTC)),
        ("2025-08-12T10:00:00+00:00", datetime(2025, 8, 12, 10, 0, tzinfo=UTC)),
        ("2025-08-12T13:30:00+03:00", datetime(2025, 8, 12, 10, 30, tzinfo=UTC)),
        ("2025-08-12T06:15:00-04:00", datetime(2025, 8, 12, 10, 15, tzinfo=UTC)),
        ("2025-08-13T01:00:00+05:30", datetime(2025, 8, 12, 19, 30, tzinfo=UTC)),
        ("2025-08-12T10:00:00.250Z", datetime(2025, 8, 12, 10, 0, 0, 250_000, tzinfo=UTC)),
        ("  2025-08-12T10:00:00Z ", datetime(2025, 8, 12, 10, 0, tzinfo=UTC)),
    ],
)
def test_iso_timestamps_with_z_or_offset_become_utc(value: str, expected: datetime) -> None:
    moment = parse_timestamp(value)
    assert moment == expected
    assert moment.utcoffset() == timedelta(0)


def test_offset_crossing_midnight_moves_the_utc_date() -> None:
    assert parse_timestamp("2025-08-13T01:30:00+03:00") == datetime(2025, 8, 12, 22, 30, tzinfo=UTC)


@pytest.mark.parametrize("value", ["2025-08-12 10:00:00", "2025-08-12T10:00:00"])
def test_naive_timestamps_are_utc(value: str) -> None:
    moment = parse_timestamp(value)
    assert moment == datetime(2025, 8, 12, 10, 0, tzinfo=UTC)
    assert moment.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_000_000_000, datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)),
        (1_700_000_000, datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)),
        (1_700_000_000.5, datetime(2023, 11, 14, 22, 13, 20, 500_000, tzinfo=UTC)),
        (0, datetime(1970, 1, 1, tzinfo=UTC)),
        (4_102_444_799, datetime(2099, 12, 31, 23, 59, 59, tzinfo=UTC)),
    ],
)
def test_epoch_seconds_are_accepted(value: float, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_000_000_000_000, datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)),
        (1_700_000_000_250, datetime(2023, 11, 14, 22, 13, 20, 250_000, tzinfo=UTC)),
    ],
)
def test_epoch_milliseconds_are_accepted(value: int, expected: datetime) -> None:
    assert parse_timestamp(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "2099-12-31T23:59:59Z",
        "1970-01-01T00:00:00Z",
        "2100-01-01T01:00:00+02:00",  # 2099-12-31T23:00Z
    ],
)
def test_the_edges_of_the_plausible_range_are_accepted(value: str) -> None:
    assert 1970 <= parse_timestamp(value).year <= 2099


@pytest.mark.parametrize(
    "value",
    [
        "not a date",
        "2025-02-30T10:00:00Z",
        "2025-13-01T00:00:00Z",
        "12/08/2025 10:00",
        "",
        "   ",
        "2100-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "1970-01-01T01:00:00+02:00",  # 1969-12-31T23:00Z
        "9999-12-31T23:59:59Z",
        "9999-12-31T23:59:59-05:00",  # past datetime.max once moved to UTC
        "0001-01-01T00:00:00+01:00",  # before datetime.min once moved to UTC
        "0001-01-01T00:00:00Z",
        4_102_444_800,  # 2100-01-01T00:00Z in seconds
        -1,
        253_402_300_799_000,  # 9999-12-31 in milliseconds
        1e300,
        float("nan"),
        float("inf"),
        float("-inf"),
        True,
        False,
        {"seconds": 1},
        [1_700_000_000],
        None,
    ],
)
def test_invalid_or_implausible_timestamps_are_rejected(value: Any) -> None:
    with pytest.raises(InvalidRecord) as caught:
        parse_timestamp(value)
    assert "SOCIAL_CREATE_TIME" in str(caught.value)


def test_invalid_time_in_a_record_is_rejected_with_the_field_named() -> None:
    assert "SOCIAL_CREATE_TIME" in reason_for(record(SOCIAL_CREATE_TIME="yesterday"))
    assert "SOCIAL_CREATE_TIME" in reason_for(record(SOCIAL_CREATE_TIME="9999-12-31T23:00-05:00"))


def test_unparseable_time_reason_does_not_echo_a_long_value() -> None:
    reason = reason_for(record(SOCIAL_CREATE_TIME="x" * 5000))
    assert len(reason) < 200


def test_record_time_is_stored_in_utc() -> None:
    message = normalise(record(SOCIAL_CREATE_TIME="2025-08-12T13:30:00+03:00"))
    assert message.sent_at == datetime(2025, 8, 12, 10, 30, tzinfo=UTC)
    assert message.sent_at.utcoffset() == timedelta(0)


# -- identity -----------------------------------------------------------------------------


def test_post_id_is_the_identity_when_present() -> None:
    first = normalise(record(UNIQUE_POST_ID="post-1", MESSAGE_CONTENT="a"))
    edited = normalise(
        record(UNIQUE_POST_ID="post-1", MESSAGE_CONTENT="b", SOCIAL_CREATE_TIME=1_700_000_000)
    )
    other = normalise(record(UNIQUE_POST_ID="post-2", MESSAGE_CONTENT="a"))
    assert first.message_key == edited.message_key
    assert first.message_key != other.message_key
    assert first.external_id == "post-1"


def test_numeric_post_id_matches_its_text_form() -> None:
    assert (
        normalise(record(UNIQUE_POST_ID=12345)).message_key
        == normalise(record(UNIQUE_POST_ID="12345")).message_key
    )


@pytest.mark.parametrize("missing", [None, "", "   "])
def test_identical_records_without_post_id_have_equal_identity(missing: Any) -> None:
    one = normalise(record(UNIQUE_POST_ID=missing))
    again = normalise(record(UNIQUE_POST_ID=missing), index=5)
    assert one.external_id is None
    assert one.message_key == again.message_key


def test_identity_without_post_id_ignores_how_the_time_was_written() -> None:
    utc = normalise(record(SOCIAL_CREATE_TIME="2025-08-12T10:00:00Z"))
    offset = normalise(record(SOCIAL_CREATE_TIME="2025-08-12T13:00:00+03:00"))
    naive = normalise(record(SOCIAL_CREATE_TIME="2025-08-12 10:00:00"))
    assert utc.message_key == offset.message_key == naive.message_key


def test_same_text_resent_hours_apart_has_distinct_identity() -> None:
    morning = normalise(
        record(DIRECTION="to_client", AGENT_USERNAME="alice", MESSAGE_CONTENT="Are you there?")
    )
    later = normalise(
        record(
            DIRECTION="to_client",
            AGENT_USERNAME="alice",
            MESSAGE_CONTENT="Are you there?",
            SOCIAL_CREATE_TIME="2025-08-12T13:00:00Z",
        )
    )
    assert morning.message_key != later.message_key


@pytest.mark.parametrize(
    "change",
    [
        {"MESSAGE_CONTENT": "hello!"},
        {"DIRECTION": "to_client"},
        {"DIRECTION": "to_client", "AGENT_USERNAME": "bob"},
    ],
)
def test_identity_without_post_id_depends_on_what_the_message_is(change: dict[str, Any]) -> None:
    base = normalise(record())
    assert normalise(record(**change)).message_key != base.message_key


def test_identity_without_post_id_differs_between_chats() -> None:
    assert (
        normalise(record(), chat_id="a").message_key != normalise(record(), chat_id="b").message_key
    )


def test_identity_distinguishes_agents_sending_the_same_text_at_the_same_time() -> None:
    alice = normalise(record(DIRECTION="to_client", AGENT_USERNAME="alice"))
    bob = normalise(record(DIRECTION="to_client", AGENT_USERNAME="bob"))
    assert alice.message_key != bob.message_key


def test_message_identity_prefers_post_id_and_fits_the_key_column() -> None:
    moment = datetime(2025, 8, 12, 10, tzinfo=UTC)
    common = {
        "chat_id": "c",
        "direction": "to_company",
        "sent_at": moment,
        "content": "x",
        "agent_username": None,
    }
    long_id = "9" * 1000
    assert message_identity(external_id="abc", **common) != message_identity(
        external_id=None, **common
    )
    long_key = message_identity(external_id=long_id, **common)
    assert len(long_key) <= 255
    assert long_key != message_identity(external_id="9" * 999, **common)


def test_message_identity_handles_surrogates_without_crashing() -> None:
    key = message_identity(
        chat_id="c\ud800",
        external_id=None,
        direction="to_company",
        sent_at=datetime(2025, 8, 12, tzinfo=UTC),
        content="\udfff",
        agent_username=None,
    )
    assert key.startswith("h:")


# -- autoresponses ------------------------------------------------------------------------


def bot(text: Any) -> Any:
    return normalise(record(DIRECTION="to_client", MESSAGE_CONTENT=text))


@pytest.mark.parametrize(
    "text", ["*977#", "Dial *977# to check your balance", "menu:*977#.", "x *977#*977# y"]
)
def test_bot_message_containing_the_pattern_is_an_autoresponse(text: str) -> None:
    assert is_autoresponse(bot(text), AUTORESPONSE)


def test_autoresponse_pattern_matches_case_insensitively() -> None:
    assert is_autoresponse(bot("Please DIAL *977# now"), ["dial *977#"])
    assert is_autoresponse(bot("please dial *977# now"), ["DIAL *977#"])


@pytest.mark.parametrize("text", ["Dial *978#", "977", "*977", None])
def test_bot_message_without_the_pattern_is_kept(text: Any) -> None:
    assert not is_autoresponse(bot(text), AUTORESPONSE)


def test_any_of_several_patterns_marks_an_autoresponse() -> None:
    assert is_autoresponse(bot("Reply STOP to opt out"), ["*977#", "reply stop"])


def test_customer_quoting_the_pattern_is_kept() -> None:
    message = normalise(record(DIRECTION="to_company", MESSAGE_CONTENT="I dialed *977# already"))
    assert not is_autoresponse(message, AUTORESPONSE)


def test_agent_quoting_the_pattern_is_kept() -> None:
    for identity in ({"AGENT_USERNAME": "alice"}, {"AGENT_EMAIL": "carol@example.com"}):
        message = normalise(
            record(DIRECTION="to_client", MESSAGE_CONTENT="Please dial *977#", **identity)
        )
        assert message.sender is SenderKind.AGENT
        assert not is_autoresponse(message, AUTORESPONSE)


def test_no_patterns_means_no_autoresponses() -> None:
    assert not is_autoresponse(bot("Dial *977#"), [])
