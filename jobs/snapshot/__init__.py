"""Training snapshot: the time split of a window of validated days (``python -m jobs.snapshot``)."""
