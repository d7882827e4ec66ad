"""The OpenAI analyzer: Structured Outputs over any OpenAI-compatible endpoint.

tenacity is the one retry layer (the SDK's own retries are off). It retries rate limits,
server errors, timeouts and connection failures with jittered exponential backoff that
honours Retry-After, and never retries what cannot succeed (400, 401, 403, no quota).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import openai
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from .base import AnalysisOutcome, AnalysisUnavailable, AnalyzerFingerprint, ConversationInput
from .limits import AdaptiveConcurrency, MinuteBudget
from .schema import PROMPT_VERSION, SYSTEM_PROMPT, BatchJudgement, response_format
from .transcript import estimate_tokens

logger = logging.getLogger("powerpulse.analysis.openai")

MAX_ATTEMPTS = 6
MAX_SECONDS_PER_CONVERSATION = 120.0
INITIAL_BACKOFF = 0.5
MAX_BACKOFF = 30.0
# Answers come back short; this bounds what a batch may cost in output tokens.
OUTPUT_TOKENS_PER_CONVERSATION = 220


@dataclass(frozen=True, slots=True)
class OpenAIOptions:
    api_key: str
    model: str
    base_url: str | None = None
    timeout_seconds: float = 60.0
    concurrency: int = 16
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    batch_size: int = 1
    batch_max_tokens: int = 1500
    input_price_per_million: float = 0.0
    output_price_per_million: float = 0.0
    max_attempts: int = MAX_ATTEMPTS
    max_seconds: float = MAX_SECONDS_PER_CONVERSATION
    initial_backoff: float = INITIAL_BACKOFF


class InvalidReply(Exception):
    """The model answered, but not with a valid analysis of every conversation sent.

    `usage` is the (input, output) tokens the answer was billed for, when it was read.
    """

    usage: tuple[int, int] = (0, 0)


def _retry_after_seconds(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    milliseconds = headers.get("retry-after-ms")
    if milliseconds:
        try:
            return max(0.0, float(milliseconds) / 1000)
        except ValueError:
            pass
    seconds = headers.get("retry-after")
    if not seconds:
        return None
    try:
        return max(0.0, float(seconds))
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(seconds)
    except (TypeError, ValueError):
        return None  # an unreadable hint: fall back to our own backoff
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "code", None)
    if code:
        return str(code)
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and inner.get("code"):
            return str(inner["code"])
    return None


def is_quota_exhausted(exc: BaseException) -> bool:
    return isinstance(exc, openai.RateLimitError) and _error_code(exc) == "insufficient_quota"


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.RateLimitError):
        return not is_quota_exhausted(exc)
    if isinstance(exc, (openai.APITimeoutError, openai.APIConnectionError)):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in (408, 409)
    return False


class OpenAIAnalyzer:
    """Analyses conversations with a chat-completions model, several to a request."""

    def __init__(self, options: OpenAIOptions, *, client: openai.AsyncOpenAI | None = None):
        self.options = options
        self.fingerprint = AnalyzerFingerprint("openai", options.model, PROMPT_VERSION)
        self._client = client or openai.AsyncOpenAI(
            api_key=options.api_key,
            base_url=options.base_url,
            timeout=options.timeout_seconds,
            max_retries=0,
        )
        self.concurrency = AdaptiveConcurrency(options.concurrency)
        self._requests = MinuteBudget(options.requests_per_minute)
        self._tokens = MinuteBudget(options.tokens_per_minute)
        self.requests_sent = 0

    async def aclose(self) -> None:
        await self._client.close()

    # -- batching --------------------------------------------------------------------
    def pack(self, conversations: Sequence[ConversationInput]) -> list[list[ConversationInput]]:
        """Group short conversations into requests; a long one always travels alone."""
        batches: list[list[ConversationInput]] = []
        current: list[ConversationInput] = []
        current_tokens = 0
        for conversation in conversations:
            tokens = estimate_tokens(conversation.transcript)
            fits = (
                len(current) < self.options.batch_size
                and current_tokens + tokens <= self.options.batch_max_tokens
            )
            if current and not fits:
                batches.append(current)
                current, current_tokens = [], 0
            current.append(conversation)
            current_tokens += tokens
        if current:
            batches.append(current)
        return batches

    async def analyze(self, conversations: Sequence[ConversationInput]) -> list[AnalysisOutcome]:
        batches = self.pack(conversations)
        tasks = [asyncio.ensure_future(self._analyze_batch(batch)) for batch in batches]
        try:
            results = await asyncio.gather(*tasks)
        except BaseException:
            # AnalysisUnavailable (or cancellation) ends the call: stop the other requests too.
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        by_chat = {outcome.chat_id: outcome for batch in results for outcome in batch}
        return [by_chat[conversation.chat_id] for conversation in conversations]

    # -- one request -----------------------------------------------------------------
    @staticmethod
    def user_message(batch: Sequence[ConversationInput]) -> str:
        return "\n\n".join(
            f"### chat_id: {conversation.chat_id}\n{conversation.transcript}"
            for conversation in batch
        )

    async def _analyze_batch(self, batch: list[ConversationInput]) -> list[AnalysisOutcome]:
        pending = list(batch)
        outcomes: dict[str, AnalysisOutcome] = {}
        # Tokens of answers that judged nothing (a reply that did not validate): billed all
        # the same, so they go to the conversations of the next answer that does, or to the
        # conversations that fail.
        unattributed = (0, 0)
        # A reply that does not validate gets exactly one more chance.
        for validation_attempt in range(2):
            try:
                reply, usage = await self._request_with_retries(pending)
            except openai.APIStatusError as exc:
                if is_quota_exhausted(exc) or exc.status_code in (401, 403):
                    raise AnalysisUnavailable(_describe_unavailable(exc)) from exc
                reason = f"the model endpoint refused the request ({exc.status_code})"
                return self._fail(batch, outcomes, reason, unattributed)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                reason = f"no answer from the model: {type(exc).__name__}"
                return self._fail(batch, outcomes, reason, unattributed)
            except InvalidReply as exc:
                unattributed = _add(unattributed, exc.usage)
                if validation_attempt == 1:
                    return self._fail(batch, outcomes, f"invalid reply: {exc}", unattributed)
                logger.info(
                    "invalid reply for %d conversations, asking again: %s", len(pending), exc
                )
                continue
            unattributed = self._record(pending, reply, _add(usage, unattributed), outcomes)
            pending = [c for c in pending if c.chat_id not in outcomes]
            if not pending:
                break
            if validation_attempt == 1:
                reason = "the reply did not include this conversation"
                return self._fail(batch, outcomes, reason, unattributed)
        return [outcomes[c.chat_id] for c in batch]

    def _fail(
        self,
        batch: list[ConversationInput],
        outcomes: dict[str, AnalysisOutcome],
        reason: str,
        usage: tuple[int, int],
    ) -> list[AnalysisOutcome]:
        """Every conversation without an outcome fails; they share the tokens billed for
        answers that judged none of them."""
        failed = [c for c in batch if c.chat_id not in outcomes]
        for conversation, (tokens_in, tokens_out) in zip(
            failed, _shares([estimate_tokens(c.transcript) for c in failed], usage), strict=True
        ):
            outcomes[conversation.chat_id] = AnalysisOutcome(
                conversation.chat_id,
                None,
                error=reason,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=self.cost(tokens_in, tokens_out),
            )
        return [outcomes[c.chat_id] for c in batch]

    def _record(
        self,
        pending: list[ConversationInput],
        reply: BatchJudgement,
        usage: tuple[int, int],
        outcomes: dict[str, AnalysisOutcome],
    ) -> tuple[int, int]:
        """Record the judgements of a reply; returns its usage when it judged none."""
        wanted = {c.chat_id: c for c in pending}
        found = {j.chat_id: j for j in reply.analyses if j.chat_id in wanted}
        if not found:
            return usage
        # Tokens of a shared request are split by transcript length.
        weights = [estimate_tokens(wanted[chat_id].transcript) for chat_id in found]
        for (chat_id, judgement), (tokens_in, tokens_out) in zip(
            found.items(), _shares(weights, usage), strict=True
        ):
            outcomes[chat_id] = AnalysisOutcome(
                chat_id,
                judgement,
                input_tokens=tokens_in,
                output_tokens=tokens_out,
                cost_usd=self.cost(tokens_in, tokens_out),
            )
        return (0, 0)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (
            input_tokens * self.options.input_price_per_million
            + output_tokens * self.options.output_price_per_million
        ) / 1_000_000

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        backoff = min(MAX_BACKOFF, self.options.initial_backoff * 2 ** (state.attempt_number - 1))
        jittered = random.uniform(backoff / 2, backoff)
        hinted = _retry_after_seconds(exc) if exc is not None else None
        return max(jittered, hinted) if hinted is not None else jittered

    async def _request_with_retries(
        self, batch: list[ConversationInput]
    ) -> tuple[BatchJudgement, tuple[int, int]]:
        retrying = AsyncRetrying(
            # Never sleep past the time cap: give up when the next wait would cross it.
            stop=stop_after_attempt(self.options.max_attempts)
            | stop_before_delay(self.options.max_seconds),
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return await self._request(batch)
        raise AssertionError("unreachable: tenacity either returns or reraises")

    async def _request(
        self, batch: list[ConversationInput]
    ) -> tuple[BatchJudgement, tuple[int, int]]:
        content = self.user_message(batch)
        expected_tokens = estimate_tokens(
            SYSTEM_PROMPT + content
        ) + OUTPUT_TOKENS_PER_CONVERSATION * len(batch)
        await self._requests.take(1)
        await self._tokens.take(expected_tokens)
        async with self.concurrency:
            self.requests_sent += 1
            try:
                completion = await self._client.chat.completions.create(
                    model=self.options.model,
                    messages=[
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": content},
                    ],
                    response_format=response_format(),  # type: ignore[arg-type]
                    temperature=0,
                    max_tokens=OUTPUT_TOKENS_PER_CONVERSATION * len(batch) + 200,
                )
            except openai.RateLimitError as exc:
                if not is_quota_exhausted(exc):
                    await self.concurrency.throttled()
                raise
        await self.concurrency.succeeded()
        usage = completion.usage
        tokens = (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
        try:
            return _parse_reply(completion), tokens
        except InvalidReply as exc:
            exc.usage = tokens
            raise


def _add(first: tuple[int, int], second: tuple[int, int]) -> tuple[int, int]:
    return first[0] + second[0], first[1] + second[1]


def _shares(weights: Sequence[int], usage: tuple[int, int]) -> list[tuple[int, int]]:
    """Split (input, output) tokens in proportion to the weights. Rounding the running total
    (not each share) makes the shares add up to exactly the usage."""
    if not any(weights):
        weights = [1] * len(weights)
    total = sum(weights) or 1
    tokens_in, tokens_out = usage
    shares: list[tuple[int, int]] = []
    so_far = 0
    for weight in weights:
        before, so_far = so_far, so_far + weight
        shares.append(
            (
                round(tokens_in * so_far / total) - round(tokens_in * before / total),
                round(tokens_out * so_far / total) - round(tokens_out * before / total),
            )
        )
    return shares


def _parse_reply(completion: Any) -> BatchJudgement:
    if not completion.choices:
        raise InvalidReply("the reply has no choices")
    choice = completion.choices[0]
    message = choice.message
    if getattr(message, "refusal", None):
        raise InvalidReply(f"the model refused: {str(message.refusal)[:200]}")
    if choice.finish_reason == "length":
        raise InvalidReply("the reply was cut off at the token limit")
    if not message.content:
        raise InvalidReply("the reply is empty")
    try:
        return BatchJudgement.model_validate_json(message.content)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        raise InvalidReply(f"{where}: {first.get('msg')}"[:300]) from exc
    except json.JSONDecodeError as exc:
        raise InvalidReply("the reply is not JSON") from exc


def _describe_unavailable(exc: openai.APIStatusError) -> str:
    if is_quota_exhausted(exc):
        return "the OpenAI account has no quota left (insufficient_quota); add credit or change key"
    if exc.status_code == 401:
        return "the OpenAI API key was rejected (401); check OPENAI_API_KEY"
    return (
        f"the model endpoint forbids this request ({exc.status_code}); check key and model access"
    )
