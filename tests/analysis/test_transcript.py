"""Rendering conversations for an analyzer: line format, day separators, budget, cache key."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from powerpulse.analysis.base import AnalyzerFingerprint, TranscriptLine
from powerpulse.analysis.transcript import (
    ATTACHMENT,
    MAX_LINE_CHARS,
    build_input,
    content_hash,
    estimate_tokens,
    render,
)

START = datetime(2026, 3, 2, 8, 5, tzinfo=UTC)
FINGERPRINT = AnalyzerFingerprint("openai", "gpt-test", "2026-11-22.1")


def row(
    minutes: float,
    sender: str,
    content: str | None,
    *,
    username: str | None = None,
    email: str | None = None,
) -> dict[str, Any]:
    return {
        "sender": sender,
        "sent_at": START + timedelta(minutes=minutes),
        "content": content,
        "agent_username": username,
        "agent_email": email,
    }


def line(index: int, content: str, *, day: str = "2026-03-02") -> TranscriptLine:
    return TranscriptLine("CUSTOMER", f"{index // 60:02d}:{index % 60:02d}", day, None, content)


# ---------------------------------------------------------------------------- line format


def test_renders_speakers_times_and_a_day_header() -> None:
    conversation = build_input(
        "c1",
        [
            row(0, "CUSTOMER", "Hello, my token did not arrive"),
            row(1, "BOT", "An agent will be with you shortly."),
            row(7, "AGENT", "Sorry about that, resending now.", username="jane"),
            row(9, "CUSTOMER", "Got it, thanks"),
        ],
        contact_count=1,
        token_budget=4000,
    )
    assert conversation.transcript == (
        "--- 2026-03-02 ---\n"
        "[08:05] Customer: Hello, my token did not arrive\n"
        "[08:06] Bot: An agent will be with you shortly.\n"
        "[08:12] Agent (jane): Sorry about that, resending now.\n"
        "[08:14] Customer: Got it, thanks"
    )
    assert conversation.chat_id == "c1"
    assert conversation.contact_count == 1
    assert [item.sender for item in conversation.lines] == ["CUSTOMER", "BOT", "AGENT", "CUSTOMER"]
    assert conversation.lines[2].agent == "jane"


def test_agent_name_falls_back_to_email_then_to_plain_agent() -> None:
    conversation = build_input(
        "c1",
        [
            row(0, "AGENT", "by username", username="jane", email="jane@example.com"),
            row(1, "AGENT", "by email", email="omar@example.com"),
            row(2, "AGENT", "anonymous"),
        ],
        contact_count=1,
        token_budget=4000,
    )
    assert conversation.transcript.splitlines()[1:] == [
        "[08:05] Agent (jane): by username",
        "[08:06] Agent (omar@example.com): by email",
        "[08:07] Agent: anonymous",
    ]


@pytest.mark.parametrize("content", [None, ""])
def test_a_message_without_text_is_an_attachment(content: str | None) -> None:
    conversation = build_input(
        "c1", [row(0, "CUSTOMER", content)], contact_count=1, token_budget=4000
    )
    assert conversation.transcript.splitlines()[-1] == f"[08:05] Customer: {ATTACHMENT}"
    assert ATTACHMENT == "[attachment]"


def test_whitespace_inside_a_message_is_collapsed_to_one_line() -> None:
    conversation = build_input(
        "c1",
        [row(0, "CUSTOMER", "  line one\n\n line\ttwo   \r\n")],
        contact_count=1,
        token_budget=4000,
    )
    assert conversation.transcript.splitlines()[-1] == "[08:05] Customer: line one line two"


def test_a_very_long_message_is_truncated_with_an_ellipsis() -> None:
    text = "a" * (MAX_LINE_CHARS + 500)
    rendered = render([line(0, text)], token_budget=100_000)
    last = rendered.splitlines()[-1]
    assert last == f"[00:00] Customer: {'a' * MAX_LINE_CHARS} …"


def test_a_day_separator_precedes_each_new_day_only() -> None:
    conversation = build_input(
        "c1",
        [
            row(0, "CUSTOMER", "first"),
            row(3, "AGENT", "second", username="jane"),
            row(24 * 60, "CUSTOMER", "next day"),
            row(24 * 60 + 2, "CUSTOMER", "same next day"),
            row(3 * 24 * 60, "CUSTOMER", "two days later"),
        ],
        contact_count=1,
        token_budget=4000,
    )
    assert conversation.transcript.splitlines() == [
        "--- 2026-03-02 ---",
        "[08:05] Customer: first",
        "[08:08] Agent (jane): second",
        "--- 2026-03-03 ---",
        "[08:05] Customer: next day",
        "[08:07] Customer: same next day",
        "--- 2026-03-05 ---",
        "[08:05] Customer: two days later",
    ]


def test_times_are_rendered_as_hours_and_minutes() -> None:
    late = datetime(2026, 3, 2, 23, 59, 59, tzinfo=UTC)
    conversation = build_input(
        "c1",
        [
            {
                "sender": "CUSTOMER",
                "sent_at": late,
                "content": "hi",
                "agent_username": None,
                "agent_email": None,
            }
        ],
        contact_count=1,
        token_budget=4000,
    )
    assert conversation.transcript.splitlines()[-1] == "[23:59] Customer: hi"


# ---------------------------------------------------------------------------- token budget


def test_estimate_tokens_rounds_up_and_is_never_zero() -> None:
    assert estimate_tokens("") == 1
    assert estimate_tokens("abc") == 1
    assert estimate_tokens("abcd") == 1
    assert estimate_tokens("abcde") == 2
    assert estimate_tokens("x" * 400) == 100


def test_a_transcript_within_budget_is_not_cut() -> None:
    lines = [line(i, f"message number {i}") for i in range(10)]
    full = render(lines, token_budget=100_000)
    assert render(lines, token_budget=estimate_tokens(full)) == full
    assert "omitted" not in full


@pytest.mark.parametrize("budget", [40, 50, 73, 100, 101, 103, 150, 200, 333])
def test_over_budget_keeps_start_and_end_with_a_marker_and_stays_within_budget(
    budget: int,
) -> None:
    lines = [line(i, f"message {i:03d} " + "x" * 20) for i in range(60)]
    full = render(lines, token_budget=100_000).splitlines()
    assert estimate_tokens("\n".join(full)) > budget

    text = render(lines, token_budget=budget)
    kept = text.splitlines()

    assert estimate_tokens(text) <= budget
    markers = [index for index, item in enumerate(kept) if "omitted" in item]
    assert len(markers) == 1
    marker = markers[0]
    match = re.fullmatch(r"\[… (\d+) lines omitted …\]", kept[marker])
    assert match is not None
    head, tail = kept[:marker], kept[marker + 1 :]
    # The start (with its day header) and the end survive, in order, and nothing is invented.
    assert head and tail
    assert head == full[: len(head)]
    assert tail == full[len(full) - len(tail) :]
    assert head[0] == "--- 2026-03-02 ---"
    assert tail[-1] == full[-1]
    assert int(match.group(1)) == len(full) - len(head) - len(tail)
    # Both ends get a fair share.
    assert abs(len(head) - len(tail)) <= 1


def test_over_budget_cut_keeps_the_first_and_last_customer_message() -> None:
    messages = [row(0, "CUSTOMER", "OPENING: my meter shows no units")]
    messages += [
        row(i + 1, "AGENT" if i % 2 else "CUSTOMER", f"middle chatter {i} " + "y" * 40)
        for i in range(200)
    ]
    messages.append(row(300, "CUSTOMER", "CLOSING: works now, thank you"))
    conversation = build_input("c1", messages, contact_count=1, token_budget=120)
    assert estimate_tokens(conversation.transcript) <= 120
    assert "OPENING: my meter shows no units" in conversation.transcript
    assert conversation.transcript.endswith("CLOSING: works now, thank you")
    assert "lines omitted" in conversation.transcript
    # Every line is still kept on the input for analyzers that read lines.
    assert len(conversation.lines) == 202


# ---------------------------------------------------------------------------- cache key


def _conversation(content: str = "hello", *, contact_count: int = 1) -> Any:
    return build_input(
        "c1",
        [row(0, "CUSTOMER", content), row(1, "AGENT", "hi there", username="jane")],
        contact_count=contact_count,
        token_budget=4000,
    )


def test_content_hash_is_stable_for_the_same_input() -> None:
    first = content_hash(_conversation(), FINGERPRINT)
    second = content_hash(_conversation(), AnalyzerFingerprint(*FINGERPRINT.key().split("|")))
    assert first == second
    assert re.fullmatch(r"[0-9a-f]{64}", first)


def test_content_hash_changes_with_content_contacts_and_fingerprint() -> None:
    base = content_hash(_conversation(), FINGERPRINT)
    variants = {
        "content": content_hash(_conversation("hello!"), FINGERPRINT),
        "contact_count": content_hash(_conversation(contact_count=2), FINGERPRINT),
        "model": content_hash(
            _conversation(), AnalyzerFingerprint("openai", "gpt-other", "2026-11-22.1")
        ),
        "prompt_version": content_hash(
            _conversation(), AnalyzerFingerprint("openai", "gpt-test", "2026-11-23.1")
        ),
        "analyzer": content_hash(
            _conversation(), AnalyzerFingerprint("lexicon", "gpt-test", "2026-11-22.1")
        ),
    }
    for name, value in variants.items():
        assert value != base, name
    assert len(set(variants.values())) == len(variants)


def test_content_hash_ignores_what_the_analyzer_does_not_see() -> None:
    # Whitespace the renderer collapses does not change what the analyzer reads.
    assert content_hash(_conversation("hello   world"), FINGERPRINT) == content_hash(
        _conversation("hello world"), FINGERPRINT
    )


def test_content_hash_handles_unpaired_surrogates() -> None:
    value = content_hash(_conversation("broken \ud83d emoji"), FINGERPRINT)
    assert value != content_hash(_conversation("broken emoji"), FINGERPRINT)
