"""The metric catalogue, the API and docs/metrics.md say the same thing."""

from __future__ import annotations

from pathlib import Path

import graphql

from powerpulse.graphql.schema import build_schema
from powerpulse.metric_definitions import METRIC_DEFINITIONS, with_table

DOCS = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def test_docs_carry_the_current_definitions() -> None:
    document = DOCS.read_text(encoding="utf-8")
    assert with_table(document) == document, (
        "docs/metrics.md is out of date: run `powerpulse docs metrics docs/metrics.md`"
    )


def test_every_selection_metric_field_is_defined() -> None:
    schema = graphql.build_schema(build_schema().as_str())
    camel = set(schema.type_map["Metrics"].fields)  # type: ignore[attr-defined]
    defined = {d.name for d in METRIC_DEFINITIONS if d.scope == "selection"}
    pillars = {"csiEffectiveness", "csiEffort", "csiEfficiency", "csiEmpathy"}
    assert camel - pillars <= defined


async def test_metric_definitions_query_serves_the_catalogue(client) -> None:
    data = await client.data("{ metricDefinitions { name scope description formula unit } }")
    served = data["metricDefinitions"]
    assert len(served) == len(METRIC_DEFINITIONS)
    assert {"name": "csatPercentage", "scope": "selection"}.items() <= next(
        d for d in served if d["name"] == "csatPercentage"
    ).items()
    assert all(d["description"] and d["formula"] and d["unit"] for d in served)
