"""Judging what only reading can tell: satisfaction, sentiment, resolution, effort, topics."""
