"""The model registry: registration with lineage, promotion and rollback by alias (``python -m jobs.registry``)."""
