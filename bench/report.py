"""Markdown building blocks and number formatting for the benchmark report."""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

MISSING = "–"


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 100]."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summarise(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/min/max/mean of durations in seconds, as milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else value * 1000

    return {
        "n": len(seconds),
        "p50": ms(percentile(seconds, 50)),
        "p95": ms(percentile(seconds, 95)),
        "p99": ms(percentile(seconds, 99)),
        "min": ms(min(seconds)) if seconds else None,
        "max": ms(max(seconds)) if seconds else None,
        "mean": ms(sum(seconds) / len(seconds)) if seconds else None,
    }


def num(value: float | int | None, digits: int = 1) -> str:
    """A number with thousands separators; `digits` decimals for non-integers."""
    if value is None:
        return MISSING
    if isinstance(value, float) and not math.isfinite(value):
        return MISSING
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:,.{digits}f}"


def ms(value: float | None) -> str:
    """Milliseconds with sensible precision."""
    if value is None:
        return MISSING
    if value < 10:
        return f"{value:.2f}"
    if value < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def secs(value: float | None) -> str:
    if value is None:
        return MISSING
    if value < 10:
        return f"{value:.2f}"
    return f"{value:,.1f}"


def mib(value_bytes: float | int | None) -> str:
    if value_bytes is None:
        return MISSING
    return (
        f"{value_bytes / (1024 * 1024):,.0f}"
        if value_bytes >= 100 * 1024 * 1024
        else (f"{value_bytes / (1024 * 1024):,.1f}")
    )


def rate(count: float | int | None, seconds: float | None) -> str:
    if count is None or not seconds:
        return MISSING
    return f"{count / seconds:,.0f}" if count / seconds >= 100 else f"{count / seconds:,.1f}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or not base:
        return MISSING
    return f"{value / base:.1f}×"


def cell(value: Any) -> str:
    text = MISSING if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], align: str = "") -> str:
    """A Markdown table; `align` has one letter per column (l, r, c), default: first l, rest r."""
    rows = [list(row) for row in rows]
    if not align:
        align = "l" + "r" * (len(headers) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "| " + " | ".join(marks.get(a, "---") for a in align.ljust(len(headers), "r")) + " |",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def short_error(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= 600 else text[:600] + "…"


@dataclass
class Section:
    """One numbered report section, filled progressively so partial results survive errors."""

    number: int
    key: str
    title: str
    blocks: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    failure: str | None = None
    failure_trace: str | None = None
    skipped: str | None = None
    seconds: float | None = None

    def add(self, markdown: str) -> None:
        self.blocks.append(markdown.rstrip() + "\n")

    def note(self, text: str) -> None:
        self.add(text)

    def error(self, where: str, exc: BaseException | str) -> None:
        message = exc if isinstance(exc, str) else short_error(exc)
        self.errors.append(f"{where}: {message}")

    def fail(self, exc: BaseException) -> None:
        self.failure = short_error(exc)
        self.failure_trace = "".join(traceback.format_exception(exc))[-4000:]

    def render(self) -> str:
        parts = [f"## {self.number}. {self.title}\n"]
        if self.skipped:
            parts.append(f"_Not run: {self.skipped}_\n")
            return "\n".join(parts)
        parts += self.blocks
        if self.errors:
            parts.append("**Errors in this section** (the rest of it ran):\n")
            parts += [f"- `{cell(error)}`" for error in self.errors]
            parts.append("")
        if self.failure:
            parts.append(f"**Section failed:** `{cell(self.failure)}`\n")
            if self.failure_trace:
                parts.append(
                    "<details><summary>traceback</summary>\n\n```\n"
                    + self.failure_trace.rstrip()
                    + "\n```\n</details>\n"
                )
        if self.seconds is not None:
            parts.append(f"_Section wall time: {secs(self.seconds)} s._\n")
        return "\n".join(parts)
