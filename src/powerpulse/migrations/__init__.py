"""Alembic migrations: the only way PowerPulse's database schema changes."""
