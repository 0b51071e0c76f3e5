"""The sequential family: SASRec over each user's recent items (``python -m jobs.seq``; ``torchrun`` for DDP).

``sequences`` (pure: histories, left-padded rows, training windows), ``events`` (the window's
order, from curated days), ``model`` (the torch module), ``trainer`` (the loop and the export),
``tracking`` (MLflow) and ``cli`` (the job, its flags and result). It exports the same
``recsys.npz`` as ``jobs.train``, so scoring serves it unchanged.
"""
