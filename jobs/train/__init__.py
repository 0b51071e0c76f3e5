"""Training of the MF recommender on one snapshot (``python -m jobs.train``; ``torchrun`` for DDP).

``cli`` (the job, its flags and result), ``trainer`` (the loop), ``model`` (the torch module),
``checkpoint`` (resume) and ``tracking`` (MLflow). The artifact it writes is ``jobs.core.model``.
"""
