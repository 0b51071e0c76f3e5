"""Evaluation before promotion: the gate (``gate``) and infra validation (``infra``).

``python -m jobs.evaluate gate ...`` / ``python -m jobs.evaluate infra ...``.
"""
