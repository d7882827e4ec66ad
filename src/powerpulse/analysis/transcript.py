"""Rendering a conversation compactly for an analyzer, within a token budget."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from .base import AnalyzerFingerprint, ConversationInput, TranscriptLine

ATTACHMENT = "[attachment]"
# A common rule of thumb for English and Swahili chat text with tiktoken-style tokenisers.
CHARS_PER_TOKEN = 4
MAX_LINE_CHARS = 2000


def estimate_tokens(text: str) -> int:
    return max(1, (len(text) + CHARS_PER_TOKEN - 1) // CHARS_PER_TOKEN)


def _line_text(line: TranscriptLine) -> str:
    who = {"CUSTOMER": "Customer", "BOT": "Bot"}.get(line.sender)
    if who is None:
        who = f"Agent ({line.agent})" if line.agent else "Agent"
    content = line.content if line.content else ATTACHMENT
    content = " ".join(content.split())
    if len(content) > MAX_LINE_CHARS:
        content = content[:MAX_LINE_CHARS] + " …"
    return f"[{line.sent_at_minute}] {who}: {content}"


def render(lines: Sequence[TranscriptLine], *, token_budget: int) -> str:
    """The transcript text; over budget, the middle is cut and the start and end kept."""
    rendered: list[str] = []
    day: str | None = None
    for line in lines:
        if line.day != day:
            rendered.append(f"--- {line.day} ---")
            day = line.day
        rendered.append(_line_text(line))
    text = "\n".join(rendered)
    if estimate_tokens(text) <= token_budget:
        return text
    # Room for the omission marker (and its newline) is kept out of the budget for lines.
    marker_room = len(f"[… {len(rendered)} lines omitted …]") + 1
    budget_chars = token_budget * CHARS_PER_TOKEN - marker_room
    head: list[str] = []
    tail: list[str] = []
    used = 0
    low, high = 0, len(rendered) - 1
    # Alternate from both ends so the opening request and the ending both survive.
    take_head = True
    while low <= high:
        candidate = rendered[low] if take_head else rendered[high]
        if used + len(candidate) + 1 > budget_chars:
            break
        used += len(candidate) + 1
        if take_head:
            head.append(candidate)
            low += 1
        else:
            tail.append(candidate)
            high -= 1
        take_head = not take_head
    omitted = high - low + 1
    marker = [f"[… {omitted} lines omitted …]"] if omitted > 0 else []
    return "\n".join([*head, *marker, *reversed(tail)])


def build_input(
    chat_id: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    contact_count: int,
    token_budget: int,
) -> ConversationInput:
    """Messages (rows with sender, sent_at, content, agent_username, agent_email) in time order."""
    lines = tuple(
        TranscriptLine(
            sender=row["sender"],
            sent_at_minute=row["sent_at"].strftime("%H:%M"),
            day=row["sent_at"].strftime("%Y-%m-%d"),
            agent=row["agent_username"] or row["agent_email"],
            content=row["content"],
        )
        for row in messages
    )
    return ConversationInput(
        chat_id=chat_id,
        transcript=render(lines, token_budget=token_budget),
        lines=lines,
        contact_count=contact_count,
    )


def content_hash(conversation: ConversationInput, fingerprint: AnalyzerFingerprint) -> str:
    """The processed-chat cache key: what the analyzer would see, and who would look."""
    digest = hashlib.sha256()
    digest.update(fingerprint.key().encode())
    digest.update(b"\x00")
    digest.update(str(conversation.contact_count).encode())
    digest.update(b"\x00")
    digest.update(conversation.transcript.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()
