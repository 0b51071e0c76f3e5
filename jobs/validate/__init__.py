"""Great Expectations validation of a curated day (``python -m jobs.validate``)."""
