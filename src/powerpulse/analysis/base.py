"""The one small interface every analyzer implements, and the values it exchanges."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from .schema import ConversationJudgement


@dataclass(frozen=True, slots=True)
class AnalyzerFingerprint:
    """Identifies what produced an analysis; a different fingerprint means analyse again."""

    analyzer: str
    model: str
    prompt_version: str

    def key(self) -> str:
        return f"{self.analyzer}|{self.model}|{self.prompt_version}"


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    sender: str  # CUSTOMER, AGENT or BOT
    sent_at_minute: str  # HH:MM in UTC
    day: str  # YYYY-MM-DD
    agent: str | None
    content: str | None


@dataclass(frozen=True, slots=True)
class ConversationInput:
    """What an analyzer reads about one conversation."""

    chat_id: str
    transcript: str
    lines: tuple[TranscriptLine, ...]
    contact_count: int


@dataclass(slots=True)
class AnalysisOutcome:
    """One conversation's result: a judgement, or the reason there is none."""

    chat_id: str
    judgement: ConversationJudgement | None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class AnalysisUnavailable(Exception):
    """The analyzer cannot work at all (bad key, no quota): stop the job, say why."""


class Analyzer(Protocol):
    fingerprint: AnalyzerFingerprint

    async def analyze(
        self, conversations: Sequence[ConversationInput]
    ) -> list[AnalysisOutcome]: ...

    async def aclose(self) -> None: ...
