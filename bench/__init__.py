"""PowerPulse benchmark suite: `python -m bench` (see bench/cli.py for the options).

Benchmarks are commands, not tests: they measure and report, they never assert on time.
Sections (each runs on its own; a failure in one is reported and the others continue):

1. ingest   — CLI, in-process driver, HTTP upload and the raw-driver insert floor
2. queries  — GraphQL and CSV latency (p50/p95) and SQL statements per request
3. load     — concurrent clients against `powerpulse serve` during an upload
4. analysis — analyzer throughput against the fake OpenAI server, and the lexicon analyzer
5. growth   — ingest time and query latency as the data grows
"""
