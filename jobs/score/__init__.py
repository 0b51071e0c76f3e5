"""Batch scoring: top-K recommendations of a validated day with one pinned model version (``python -m jobs.score``)."""
