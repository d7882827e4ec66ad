"""The committed SDL (schema.graphql) must be exactly the schema the code builds."""

from __future__ import annotations

import difflib
from pathlib import Path

from powerpulse.graphql.schema import build_schema

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"
REGENERATE = "powerpulse export-schema > schema.graphql"


def test_committed_schema_matches_the_code() -> None:
    built = build_schema().as_str().strip() + "\n"
    assert SCHEMA_FILE.is_file(), (
        f"{SCHEMA_FILE} is missing; create it from the repository root with: {REGENERATE}"
    )
    committed = SCHEMA_FILE.read_text(encoding="utf-8").strip() + "\n"

    if committed != built:
        diff = "".join(
            difflib.unified_diff(
                committed.splitlines(keepends=True),
                built.splitlines(keepends=True),
                fromfile="schema.graphql (committed)",
                tofile="schema built from the code",
            )
        )
        raise AssertionError(
            "schema.graphql is out of date with the GraphQL code. If the change is "
            f"intended, regenerate it from the repository root with:\n\n    {REGENERATE}\n\n"
            f"and commit it.\n\n{diff}"
        )
