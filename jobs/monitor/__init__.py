"""Drift monitoring of a served day: report and retrain decision (``python -m jobs.monitor``)."""
