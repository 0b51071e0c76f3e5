"""Airflow building blocks of the recsys pipeline (imported by the DAG files).

Light at import: nothing here imports torch, pyspark, pandas, mlflow or great_expectations at
module level; the workloads they launch live in ``jobs/``.
"""
