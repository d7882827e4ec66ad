"""What every number PowerPulse reports means: one catalogue for the API and the docs.

`metricDefinitions` serves this list and docs/metrics.md carries it as a generated table
(`powerpulse docs metrics` rewrites it; a test fails when the two drift apart).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MetricDefinition:
    name: str
    scope: str
    description: str
    formula: str
    unit: str


def _define(scope: str, rows: list[tuple[str, str, str, str]]) -> list[MetricDefinition]:
    return [
        MetricDefinition(name, scope, text, formula, unit) for name, text, formula, unit in rows
    ]


CONVERSATION = _define(
    "conversation",
    [
        ("messageCount", "Stored messages of the chat.", "count(messages)", "messages"),
        (
            "durationMinutes",
            "How long the chat lasted.",
            "lastMessageAt − firstMessageAt",
            "minutes",
        ),
        (
            "firstResponseTimeMinutes",
            "How long the customer waited for the first human answer; null when no agent "
            "answered. Bot messages never count.",
            "first AGENT message at or after the first CUSTOMER message − that customer message",
            "minutes",
        ),
        (
            "avgResponseTimeMinutes",
            "Mean waiting time of the conversation's reply events.",
            "mean(reply event minutes); a reply event is an AGENT message while a customer "
            "is waiting, measured from the first unanswered customer message",
            "minutes",
        ),
        ("replyCount", "Reply events of the conversation.", "count(reply events)", "events"),
        (
            "contactCount",
            "How many times the customer had to come (back) to get help.",
            "1 + count(gaps ≥ POWERPULSE_SESSION_GAP_HOURS between consecutive messages)",
            "contacts",
        ),
        (
            "csi",
            "Customer Satisfaction Index of an analysed conversation.",
            "0.40 effectiveness + 0.25 effort + 0.15 efficiency + 0.20 empathy "
            "(weights: POWERPULSE_CSI_WEIGHTS)",
            "points 0–100",
        ),
        (
            "csi.effectiveness",
            "Was the issue solved, and at the first contact?",
            "50 × resolved + 50 × firstContactResolution",
            "points 0–100",
        ),
        (
            "csi.effort",
            "How little the customer had to do.",
            "(effortScore − 1) / 4 × 100",
            "points 0–100",
        ),
        (
            "csi.efficiency",
            "How fast the first human answer came.",
            "100 at or below POWERPULSE_CSI_FRT_TARGET_MINUTES, 0 at or above "
            "POWERPULSE_CSI_FRT_LIMIT_MINUTES, linear in log(minutes) between; no agent "
            "answer: 100 if resolved, else 0",
            "points 0–100",
        ),
        (
            "csi.empathy",
            "How the customer felt overall and at the end.",
            "50 × (sentimentScore − 1) / 4 + 50 × (finalSentiment − 1) / 4",
            "points 0–100",
        ),
    ],
)

SELECTION = _define(
    "selection",
    [
        (
            "totalConversations",
            "Conversations in the selection.",
            "count(conversations)",
            "conversations",
        ),
        ("totalMessages", "Messages of those conversations.", "Σ messageCount", "messages"),
        (
            "customerMessages",
            "Messages written by customers.",
            "Σ customerMessageCount",
            "messages",
        ),
        ("agentMessages", "Messages written by human agents.", "Σ agentMessageCount", "messages"),
        (
            "botMessages",
            "Automated messages kept (autoresponses are dropped at ingest).",
            "Σ botMessageCount",
            "messages",
        ),
        ("agentCount", "Distinct agents who wrote.", "count(distinct agent)", "agents"),
        (
            "repeatContactConversations",
            "Conversations where the customer came back after a long silence.",
            "count(contactCount > 1)",
            "conversations",
        ),
        (
            "avgFirstResponseTimeMinutes",
            "Mean first response time over conversations that have one.",
            "mean(firstResponseTimeMinutes)",
            "minutes",
        ),
        (
            "medianFirstResponseTimeMinutes",
            "Median first response time.",
            "percentile_cont(0.5) of firstResponseTimeMinutes",
            "minutes",
        ),
        (
            "p90FirstResponseTimeMinutes",
            "90th percentile of first response time.",
            "percentile_cont(0.9) of firstResponseTimeMinutes",
            "minutes",
        ),
        ("replyCount", "Reply events of the selection.", "count(reply events)", "events"),
        (
            "avgResponseTimeMinutes",
            "Mean over every reply event (event-weighted, not a mean of means).",
            "mean(reply event minutes)",
            "minutes",
        ),
        (
            "medianResponseTimeMinutes",
            "Median reply event.",
            "percentile_cont(0.5) of reply event minutes",
            "minutes",
        ),
        (
            "p90ResponseTimeMinutes",
            "90th percentile of reply events.",
            "percentile_cont(0.9) of reply event minutes",
            "minutes",
        ),
        (
            "analyzedConversations",
            "Conversations whose current analysis is DONE.",
            "count(analysisStatus = DONE)",
            "conversations",
        ),
        (
            "csatPercentage",
            "Share of analysed conversations whose customer is satisfied.",
            "100 × count(satisfactionScore ≥ 4) / analyzedConversations",
            "percent",
        ),
        (
            "fcrPercentage",
            "First contact resolution: solved without the customer coming back.",
            "100 × count(resolved and contactCount = 1) / analyzedConversations",
            "percent",
        ),
        (
            "resolutionRate",
            "Share of analysed conversations that were resolved.",
            "100 × count(resolved) / analyzedConversations",
            "percent",
        ),
        (
            "avgSatisfactionScore",
            "Mean satisfaction (1–5).",
            "mean(satisfactionScore)",
            "score 1–5",
        ),
        (
            "avgSentimentScore",
            "Mean overall customer sentiment (1–5).",
            "mean(sentimentScore)",
            "score 1–5",
        ),
        (
            "avgEffortScore",
            "Mean customer effort (5 = effortless).",
            "mean(effortScore)",
            "score 1–5",
        ),
        (
            "sentimentDistribution",
            "Analysed conversations by sentiment label, with fractions of analysed.",
            "count by NEGATIVE (1–2), NEUTRAL (3), POSITIVE (4–5)",
            "conversations",
        ),
        (
            "topTopics",
            "Most frequent topics; percentage of analysed conversations.",
            "count(conversations with topic); 100 × count / analyzedConversations",
            "conversations",
        ),
        (
            "csi",
            "Mean CSI of the analysed conversations.",
            "mean(conversation csi)",
            "points 0–100",
        ),
        ("inputTokens", "Tokens the current analyses read.", "Σ inputTokens", "tokens"),
        ("outputTokens", "Tokens the current analyses wrote.", "Σ outputTokens", "tokens"),
        ("costUsd", "What the current analyses cost.", "Σ tokens × POWERPULSE_MODEL_PRICES", "USD"),
        (
            "previousPeriod",
            "The same metrics for the equally long period just before the filter's dates.",
            "metrics(startDate − n days … startDate − 1 day), n = endDate − startDate + 1",
            "metrics",
        ),
    ],
)

BREAKDOWN = _define(
    "agent",
    [
        (
            "conversations",
            "Conversations the agent wrote in.",
            "count(conversations with an AGENT message by the agent)",
            "conversations",
        ),
        ("messages", "Messages the agent wrote.", "count(AGENT messages by the agent)", "messages"),
        (
            "replyCount",
            "Reply events the agent answered.",
            "count(reply events whose replying message is the agent's)",
            "events",
        ),
        (
            "avgResponseTimeMinutes",
            "Mean of the agent's reply events.",
            "mean(reply event minutes)",
            "minutes",
        ),
        (
            "medianResponseTimeMinutes",
            "Median of the agent's reply events.",
            "percentile_cont(0.5)",
            "minutes",
        ),
        (
            "firstResponses",
            "Conversations where the agent sent the first response.",
            "count(first response by the agent)",
            "conversations",
        ),
        (
            "avgFirstResponseTimeMinutes",
            "Mean first response time of those.",
            "mean(firstResponseTimeMinutes)",
            "minutes",
        ),
        (
            "csatPercentage",
            "CSAT of the analysed conversations the agent wrote in.",
            "100 × satisfied / analysed",
            "percent",
        ),
        (
            "resolutionRate",
            "Resolution of the analysed conversations the agent wrote in.",
            "100 × resolved / analysed",
            "percent",
        ),
        (
            "avgCsi",
            "Mean CSI of the analysed conversations the agent wrote in.",
            "mean(csi)",
            "points 0–100",
        ),
    ],
) + _define(
    "topic",
    [
        ("conversations", "Analysed conversations about the topic.", "count", "conversations"),
        (
            "percentage",
            "Share of all analysed conversations.",
            "100 × conversations / analyzedConversations",
            "percent",
        ),
        (
            "csatPercentage",
            "CSAT of the topic's conversations.",
            "100 × satisfied / conversations",
            "percent",
        ),
        (
            "avgSentimentScore",
            "Mean sentiment of the topic's conversations.",
            "mean(sentimentScore)",
            "score 1–5",
        ),
        (
            "resolutionRate",
            "Resolution of the topic's conversations.",
            "100 × resolved / conversations",
            "percent",
        ),
        ("avgCsi", "Mean CSI of the topic's conversations.", "mean(csi)", "points 0–100"),
        (
            "previousPeriodConversations",
            "The topic's conversations in the period just before (null without both dates).",
            "count in previousPeriod",
            "conversations",
        ),
    ],
)

METRIC_DEFINITIONS: tuple[MetricDefinition, ...] = (*CONVERSATION, *SELECTION, *BREAKDOWN)

DOCS_BEGIN = "<!-- metric-definitions:begin (generated by `powerpulse docs metrics`) -->"
DOCS_END = "<!-- metric-definitions:end -->"


def markdown_table() -> str:
    lines = [
        DOCS_BEGIN,
        "",
        "| Scope | Name | Meaning | Formula | Unit |",
        "| --- | --- | --- | --- | --- |",
    ]
    for definition in METRIC_DEFINITIONS:
        cells = (
            definition.scope,
            f"`{definition.name}`",
            definition.description,
            definition.formula,
            definition.unit,
        )
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    lines += ["", DOCS_END]
    return "\n".join(lines)


def with_table(document: str) -> str:
    """The document with its generated section replaced (appended when missing)."""
    table = markdown_table()
    if DOCS_BEGIN in document and DOCS_END in document:
        before = document[: document.index(DOCS_BEGIN)]
        after = document[document.index(DOCS_END) + len(DOCS_END) :]
        return before + table + after
    return document.rstrip("\n") + "\n\n## All definitions\n\n" + table + "\n"
