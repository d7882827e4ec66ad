"""Aggregates over a selection of a tenant's conversation facts (services/facts.py).

Each function takes the facts and a selection (a boolean mask over the conversations, or a
group index per conversation with NULL for the unselected) and answers with plain domain
objects. Every aggregate of the API is defined here once; docs/metrics.md states them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from ..repositories.facts import STATUS_CODES
from .facts import NULL, ConversationFacts
from .filters import ConversationCriteria

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


@dataclass(frozen=True, slots=True)
class Fraction:
    """A percentile rank as an exact fraction, so rank arithmetic stays integral."""

    numerator: int
    denominator: int

    @property
    def value(self) -> float:
        return self.numerator / self.denominator


MEDIAN = Fraction(1, 2)
P90 = Fraction(9, 10)


@dataclass(slots=True)
class MetricTotals:
    """Every aggregate of `metrics` for one selection (or one group of it)."""

    total_conversations: int = 0
    total_messages: int = 0
    customer_messages: int = 0
    agent_messages: int = 0
    bot_messages: int = 0
    repeat_contact_conversations: int = 0
    avg_first_response_time_minutes: float | None = None
    median_first_response_time_minutes: float | None = None
    p90_first_response_time_minutes: float | None = None
    reply_count: int = 0
    avg_response_time_minutes: float | None = None
    median_response_time_minutes: float | None = None
    p90_response_time_minutes: float | None = None
    agent_count: int = 0
    analyzed_conversations: int = 0
    satisfied_conversations: int = 0
    first_contact_resolutions: int = 0
    resolved_conversations: int = 0
    avg_satisfaction_score: float | None = None
    avg_sentiment_score: float | None = None
    avg_effort_score: float | None = None
    positive_conversations: int = 0
    neutral_conversations: int = 0
    negative_conversations: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    csi: float | None = None
    csi_effectiveness: float | None = None
    csi_effort: float | None = None
    csi_efficiency: float | None = None
    csi_empathy: float | None = None


@dataclass(slots=True)
class AgentTotals:
    agent: str
    conversations: int = 0
    messages: int = 0
    reply_count: int = 0
    avg_response_time_minutes: float | None = None
    median_response_time_minutes: float | None = None
    first_responses: int = 0
    avg_first_response_time_minutes: float | None = None
    analyzed_conversations: int = 0
    satisfied_conversations: int = 0
    resolved_conversations: int = 0
    avg_csi: float | None = None


@dataclass(slots=True)
class TopicTotals:
    topic: str
    conversations: int = 0
    satisfied_conversations: int = 0
    resolved_conversations: int = 0
    avg_sentiment_score: float | None = None
    avg_csi: float | None = None
    previous_period_conversations: int | None = None


def epoch_microseconds(moment: datetime) -> int:
    return (moment - EPOCH) // MICROSECOND


def from_epoch_microseconds(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=int(value))


# -- selection ------------------------------------------------------------------------


def needs_database(criteria: ConversationCriteria) -> bool:
    """Whether the filter has conditions the facts do not hold (message text, chat ids)."""
    return criteria.search is not None or criteria.chat_ids is not None


def select(
    facts: ConversationFacts,
    criteria: ConversationCriteria,
    *,
    matching: np.ndarray | None = None,
) -> np.ndarray:
    """The conversations a filter selects, as a mask; the same conditions as
    repositories/selection.py. `matching` is the mask of the database-held conditions.
    """
    mask = np.ones(facts.size, dtype=bool)
    if matching is not None:
        mask &= matching
    if criteria.first_message_from is not None:
        mask &= facts.first_us >= epoch_microseconds(criteria.first_message_from)
    if criteria.first_message_before is not None:
        mask &= facts.first_us < epoch_microseconds(criteria.first_message_before)
    vocabularies = facts.vocabularies
    if criteria.agents:
        codes = vocabularies.agents.codes(criteria.agents)
        mask &= _owning(facts, facts.agent_conversation[np.isin(facts.agent_code, codes)])
    frt = facts.first_response
    if criteria.min_first_response_time is not None:
        mask &= frt >= criteria.min_first_response_time
    if criteria.max_first_response_time is not None:
        mask &= frt <= criteria.max_first_response_time
    if criteria.repeat_contact is not None:
        mask &= (facts.contacts > 1) if criteria.repeat_contact else (facts.contacts == 1)
    if criteria.satisfied is not None:
        mask &= facts.satisfied == int(criteria.satisfied)
    satisfaction = facts.satisfaction
    if criteria.min_satisfaction is not None:
        mask &= (satisfaction != NULL) & (satisfaction >= criteria.min_satisfaction)
    if criteria.max_satisfaction is not None:
        mask &= (satisfaction != NULL) & (satisfaction <= criteria.max_satisfaction)
    if criteria.sentiment is not None:
        mask &= facts.label == vocabularies.labels.find(criteria.sentiment)
    if criteria.resolved is not None:
        mask &= facts.resolved == int(criteria.resolved)
    if criteria.language is not None:
        mask &= facts.language == vocabularies.languages.find(criteria.language)
    if criteria.min_csi is not None:
        mask &= facts.csi >= criteria.min_csi
    if criteria.max_csi is not None:
        mask &= facts.csi <= criteria.max_csi
    if criteria.analysis_status is not None:
        mask &= facts.status == STATUS_CODES.get(criteria.analysis_status, NULL)
    if criteria.topics:
        codes = vocabularies.topics.codes(criteria.topics)
        with_topic = _owning(facts, facts.topic_conversation[np.isin(facts.topic_code, codes)])
        mask &= facts.done & with_topic
    return mask


def _owning(facts: ConversationFacts, positions: np.ndarray) -> np.ndarray:
    mask = np.zeros(facts.size, dtype=bool)
    mask[positions] = True
    return mask


def groups_of(mask: np.ndarray) -> np.ndarray:
    """One group (0) of the selected conversations, NULL for the others."""
    return np.where(mask, 0, NULL)


def bucket_groups(
    facts: ConversationFacts, mask: np.ndarray, boundaries: Sequence[datetime]
) -> np.ndarray:
    """Bucket i of [boundaries[i], boundaries[i + 1]) by first message time; NULL outside."""
    edges = np.array([epoch_microseconds(moment) for moment in boundaries], dtype=np.int64)
    index = np.searchsorted(edges, facts.first_us, side="right") - 1
    inside = mask & (index >= 0) & (index < len(edges) - 1)
    return np.where(inside, index, NULL)


# -- percentiles ----------------------------------------------------------------------


def percentiles(
    ordered: np.ndarray, groups: np.ndarray, group_count: int, ranks: Sequence[Fraction]
) -> np.ndarray:
    """Continuous percentiles per group (linear between the closest ranks, as SQL's
    percentile_cont): an array of group_count × len(ranks), NaN for an empty group.

    `ordered` holds values in ascending order and `groups` the group of each (NULL: not
    selected); the facts keep their values sorted once per version for this.
    """
    found = np.full((group_count, len(ranks)), np.nan)
    chosen = groups >= 0
    values = ordered[chosen]
    if not len(values):
        return found
    if group_count == 1:
        counts = np.array([len(values)])
        starts = np.zeros(1, dtype=np.int64)
    else:
        members = groups[chosen]
        # Grouped by a stable sort, each group stays in ascending order (a radix sort
        # for 16-bit keys).
        key = members.astype(np.int16 if group_count <= np.iinfo(np.int16).max else np.int32)
        values = values[np.argsort(key, kind="stable")]
        counts = np.bincount(members, minlength=group_count)
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    present = counts > 0
    for column, rank in enumerate(ranks):
        scaled = (counts - 1) * rank.numerator
        low = starts + scaled // rank.denominator
        high = np.minimum(low + 1, starts + counts - 1)
        fraction = (scaled % rank.denominator) / rank.denominator
        low_values = values[low[present]]
        high_values = values[high[present]]
        found[present, column] = low_values + fraction[present] * (high_values - low_values)
    return found


# -- totals ---------------------------------------------------------------------------


def _number(value: float) -> float | None:
    return None if np.isnan(value) else float(value)


class _PerGroup:
    """Counts, sums and means of the selected rows of a table, per group.

    `groups` holds each row's group (NULL: not selected). One group is reduced directly,
    many by bincount; a selection of every row is not copied.
    """

    def __init__(self, groups: np.ndarray, group_count: int) -> None:
        self.group_count = group_count
        chosen = groups >= 0
        self._chosen = None if chosen.all() else chosen
        self._groups = groups if self._chosen is None else groups[chosen]
        self._single = group_count == 1
        self.rows = len(self._groups)

    def take(self, values: np.ndarray) -> np.ndarray:
        """The selected rows' values, in the order the other methods expect."""
        return values if self._chosen is None else values[self._chosen]

    def count(self, condition: np.ndarray | None = None) -> np.ndarray:
        """Selected rows per group (where `condition`, over the selected rows, holds)."""
        if self._single:
            return np.array([self.rows if condition is None else np.count_nonzero(condition)])
        groups = self._groups if condition is None else self._groups[condition]
        return np.bincount(groups, minlength=self.group_count)

    def total(self, values: np.ndarray) -> np.ndarray:
        if self._single:
            return np.array([values.sum(dtype=np.float64)])
        return np.bincount(self._groups, weights=values, minlength=self.group_count)

    def mean(self, values: np.ndarray) -> np.ndarray:
        """Mean per group of the values that are not NaN; NaN where a group has none."""
        known = ~np.isnan(values)
        if self._single:
            count = np.count_nonzero(known)
            return np.array([values[known].sum() / count if count else np.nan])
        groups = self._groups[known]
        counts = np.bincount(groups, minlength=self.group_count)
        sums = np.bincount(groups, weights=values[known], minlength=self.group_count)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)

    def score_mean(self, scores: np.ndarray) -> np.ndarray:
        """Mean of small integer scores, NULL ignored."""
        return self.mean(np.where(scores == NULL, np.nan, scores.astype(np.float64)))


def totals(facts: ConversationFacts, groups: np.ndarray, group_count: int) -> list[MetricTotals]:
    """Metrics of each group of conversations (`groups`: a group per conversation)."""
    found = [MetricTotals() for _ in range(group_count)]
    per = _PerGroup(groups, group_count)
    if not per.rows:
        return found
    take = per.take
    conversations = per.count()
    messages = per.total(take(facts.messages))
    customer = per.total(take(facts.customer_messages))
    agent = per.total(take(facts.agent_messages))
    bot = per.total(take(facts.bot_messages))
    repeat = per.count(take(facts.contacts) > 1)
    frt_mean = per.mean(take(facts.first_response))
    answered = facts.answered_by_first_response
    frt_ranks = percentiles(
        facts.first_response[answered], groups[answered], group_count, (MEDIAN, P90)
    )
    analyzed = per.count(take(facts.done))
    satisfied = per.count(take(facts.satisfied) == 1)
    fcr = per.count(take(facts.fcr) == 1)
    resolved = per.count(take(facts.resolved) == 1)
    satisfaction = per.score_mean(take(facts.satisfaction))
    sentiment = per.score_mean(take(facts.sentiment))
    effort = per.score_mean(take(facts.effort))
    labels = take(facts.label)
    vocabulary = facts.vocabularies.labels
    positive = per.count(labels == vocabulary.find("POSITIVE"))
    neutral = per.count(labels == vocabulary.find("NEUTRAL"))
    negative = per.count(labels == vocabulary.find("NEGATIVE"))
    input_tokens = per.total(take(facts.input_tokens))
    output_tokens = per.total(take(facts.output_tokens))
    cost = per.total(take(facts.cost))
    csi = {
        name: per.mean(take(getattr(facts, name)))
        for name in ("csi", "csi_effectiveness", "csi_effort", "csi_efficiency", "csi_empathy")
    }

    per_reply = _PerGroup(groups[facts.reply_conversation], group_count)
    replies = per_reply.count()
    reply_mean = per_reply.mean(per_reply.take(facts.reply_minutes))
    by_minutes = facts.replies_by_minutes
    reply_ranks = percentiles(
        facts.reply_minutes[by_minutes],
        groups[facts.reply_conversation[by_minutes]],
        group_count,
        (MEDIAN, P90),
    )

    agent_groups = groups[facts.agent_conversation]
    writing = agent_groups >= 0
    pairs = np.unique(
        agent_groups[writing].astype(np.int64) * (1 << 31) + facts.agent_code[writing]
    )
    agent_counts = np.bincount((pairs >> 31).astype(np.int64), minlength=group_count)

    for index in np.flatnonzero(conversations):
        totals = found[index]
        totals.total_conversations = int(conversations[index])
        totals.total_messages = int(messages[index])
        totals.customer_messages = int(customer[index])
        totals.agent_messages = int(agent[index])
        totals.bot_messages = int(bot[index])
        totals.repeat_contact_conversations = int(repeat[index])
        totals.avg_first_response_time_minutes = _number(frt_mean[index])
        totals.median_first_response_time_minutes = _number(frt_ranks[index, 0])
        totals.p90_first_response_time_minutes = _number(frt_ranks[index, 1])
        totals.reply_count = int(replies[index])
        totals.avg_response_time_minutes = _number(reply_mean[index])
        totals.median_response_time_minutes = _number(reply_ranks[index, 0])
        totals.p90_response_time_minutes = _number(reply_ranks[index, 1])
        totals.agent_count = int(agent_counts[index])
        totals.analyzed_conversations = int(analyzed[index])
        totals.satisfied_conversations = int(satisfied[index])
        totals.first_contact_resolutions = int(fcr[index])
        totals.resolved_conversations = int(resolved[index])
        totals.avg_satisfaction_score = _number(satisfaction[index])
        totals.avg_sentiment_score = _number(sentiment[index])
        totals.avg_effort_score = _number(effort[index])
        totals.positive_conversations = int(positive[index])
        totals.neutral_conversations = int(neutral[index])
        totals.negative_conversations = int(negative[index])
        totals.input_tokens = int(input_tokens[index])
        totals.output_tokens = int(output_tokens[index])
        totals.cost_usd = float(cost[index])
        totals.csi = _number(csi["csi"][index])
        totals.csi_effectiveness = _number(csi["csi_effectiveness"][index])
        totals.csi_effort = _number(csi["csi_effort"][index])
        totals.csi_efficiency = _number(csi["csi_efficiency"][index])
        totals.csi_empathy = _number(csi["csi_empathy"][index])
    return found


def top_topics(
    facts: ConversationFacts, groups: np.ndarray, group_count: int, *, limit: int
) -> list[list[tuple[str, int]]]:
    """Most frequent topics of each group's analysed conversations, most frequent first
    (ties by name)."""
    names = facts.vocabularies.topics.names
    topic_groups = groups[facts.topic_conversation]
    counted = (topic_groups >= 0) & facts.done[facts.topic_conversation]
    width = max(len(names), 1)
    cells = np.bincount(
        topic_groups[counted].astype(np.int64) * width + facts.topic_code[counted],
        minlength=group_count * width,
    ).reshape(group_count, width)
    found: list[list[tuple[str, int]]] = []
    for row in cells:
        present = np.flatnonzero(row)
        items = sorted(((names[code], int(row[code])) for code in present), key=_by_count)
        found.append(items[:limit])
    return found


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return (-item[1], item[0])


def first_message_range(
    facts: ConversationFacts, mask: np.ndarray
) -> tuple[datetime | None, datetime | None]:
    first = facts.first_us[mask]
    if not len(first):
        return None, None
    return from_epoch_microseconds(first.min()), from_epoch_microseconds(first.max())


def first_response_histogram(
    facts: ConversationFacts, mask: np.ndarray, *, edges: Sequence[float]
) -> dict[int | None, int]:
    """Conversations per first-response bucket [edges[i-1], edges[i]); None = no answer."""
    minutes = facts.first_response[mask]
    answered = ~np.isnan(minutes)
    buckets = np.searchsorted(np.array(edges, dtype=np.float64), minutes[answered], side="right")
    counts = np.bincount(buckets, minlength=len(edges) + 1)
    found: dict[int | None, int] = {
        index: int(value) for index, value in enumerate(counts) if value
    }
    unanswered = int((~answered).sum())
    if unanswered:
        found[None] = unanswered
    return found


# -- breakdowns -----------------------------------------------------------------------


def agents(facts: ConversationFacts, mask: np.ndarray) -> list[AgentTotals]:
    """Per agent: conversations written in, replies, first responses and outcomes."""
    names = facts.vocabularies.agents.names
    width = max(len(names), 1)
    owners = facts.agent_conversation
    per = _PerGroup(np.where(mask[owners], facts.agent_code, NULL), width)
    conversations = per.count()
    messages = per.total(per.take(facts.agent_written))
    owner_of = per.take(owners)
    analyzed = per.count(facts.done[owner_of])
    satisfied = per.count(facts.satisfied[owner_of] == 1)
    resolved = per.count(facts.resolved[owner_of] == 1)
    csi = per.mean(facts.csi[owner_of])

    reply_agents = np.where(mask[facts.reply_conversation], facts.reply_agent, NULL)
    per_reply = _PerGroup(reply_agents, width)
    replies = per_reply.count()
    reply_mean = per_reply.mean(per_reply.take(facts.reply_minutes))
    by_minutes = facts.replies_by_minutes
    reply_median = percentiles(
        facts.reply_minutes[by_minutes], reply_agents[by_minutes], width, (MEDIAN,)
    )

    per_first = _PerGroup(np.where(mask, facts.first_response_agent, NULL), width)
    first_responses = per_first.count()
    first_mean = per_first.mean(per_first.take(facts.first_response))

    found: list[AgentTotals] = []
    for code in np.flatnonzero((conversations > 0) | (replies > 0) | (first_responses > 0)):
        found.append(
            AgentTotals(
                agent=names[code],
                conversations=int(conversations[code]),
                messages=int(messages[code]),
                reply_count=int(replies[code]),
                avg_response_time_minutes=_number(reply_mean[code]),
                median_response_time_minutes=_number(reply_median[code, 0]),
                first_responses=int(first_responses[code]),
                avg_first_response_time_minutes=_number(first_mean[code]),
                analyzed_conversations=int(analyzed[code]),
                satisfied_conversations=int(satisfied[code]),
                resolved_conversations=int(resolved[code]),
                avg_csi=_number(csi[code]),
            )
        )
    return found


def topics(
    facts: ConversationFacts, mask: np.ndarray, *, previous: np.ndarray | None
) -> list[TopicTotals]:
    """Per topic of the selected analysed conversations, with the previous period's count."""
    names = facts.vocabularies.topics.names
    width = max(len(names), 1)
    owners = facts.topic_conversation
    judged = facts.done[owners]
    per = _PerGroup(np.where(mask[owners] & judged, facts.topic_code, NULL), width)
    owner_of = per.take(owners)
    conversations = per.count()
    satisfied = per.count(facts.satisfied[owner_of] == 1)
    resolved = per.count(facts.resolved[owner_of] == 1)
    sentiment = per.score_mean(facts.sentiment[owner_of])
    csi = per.mean(facts.csi[owner_of])
    earlier = None
    if previous is not None:
        earlier = _PerGroup(np.where(previous[owners] & judged, facts.topic_code, NULL), width)
        earlier_counts = earlier.count()
    return [
        TopicTotals(
            topic=names[code],
            conversations=int(conversations[code]),
            satisfied_conversations=int(satisfied[code]),
            resolved_conversations=int(resolved[code]),
            avg_sentiment_score=_number(sentiment[code]),
            avg_csi=_number(csi[code]),
            previous_period_conversations=None if earlier is None else int(earlier_counts[code]),
        )
        for code in np.flatnonzero(conversations)
    ]
