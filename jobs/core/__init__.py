"""Contracts shared by every stage: import these, never another stage.

Light at import: no module here imports pyspark, torch, mlflow or great_expectations at module
level except ``jobs.core.model`` (torch: the model artifact's engine).
"""
