"""Business rules: ingest, metric formulas and queries, independent of HTTP and GraphQL."""
