"""The benchmark suite's smallest mode runs end to end and writes a report.

Benchmarks are commands, not tests: this checks only that the suite works and that its
report has the expected shape, never any timing.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_quick_ingest_benchmark_writes_a_report(tmp_path: Path) -> None:
    output = tmp_path / "report.md"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--only",
            "ingest",
            "--engines",
            "sqlite",
            "--sizes",
            "2000",
            "--rounds",
            "2",
            "--output",
            str(output),
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-print",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    report = output.read_text()
    assert report.startswith("# PowerPulse benchmark report")
    # The run records the machine and the exact command.
    for machine_field in ("CPUs (nproc)", "CPU model", "Memory", "Python", "SQLite"):
        assert f"| {machine_field} |" in report
    assert "-m bench --quick --only ingest --engines sqlite --sizes 2000 --rounds 2" in report

    assert "## 1. Ingest" in report
    ingest = report.split("## 1. Ingest", 1)[1]
    assert "| Messages | Engine | Method | Stored | Time (s) | Messages/s |" in ingest
    for method in (
        "floor: sqlite3.executemany",
        "driver: IngestService.ingest",
        "CLI: wall",
        "HTTP: uploadChats",
    ):
        assert f"| 2,000 | sqlite | {method}" in ingest
    # The same file sent again stores nothing new.
    again = next(line for line in ingest.splitlines() if "| CLI again, the same file" in line)
    assert again.split("|")[4].strip() == "0"
    # Every path ran in both rounds; the main table holds one row per method, the median.
    assert "**Round by round** (2 round(s) per size" in ingest
    for path in ("floor", "in-process", "CLI", "CLI again", "HTTP"):
        row = next(line for line in ingest.splitlines() if line.startswith(f"| 2,000 | {path} |"))
        cells = [cell.strip() for cell in row.split("|")[1:-1]]
        sqlite_rounds, sqlite_median = cells[2], cells[3]
        assert len(sqlite_rounds.split(", ")) == 2, row
        if "–" not in sqlite_rounds:
            # Of two rounds, the median is the faster one.
            assert sqlite_median == min(sqlite_rounds.split(", "), key=float), row
        # No PostgreSQL in this run: its columns and the comparison are empty.
        assert cells[4:] == ["–", "–", "–"], row
    assert sum(1 for line in ingest.splitlines() if "| 2,000 | sqlite | driver:" in line) == 1
    assert "Section failed" not in report
    assert "Errors in this section" not in report
    # Only the requested section is in the report.
    assert "## 2. Queries" not in report
