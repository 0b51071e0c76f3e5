"""The popularity baseline as a servable model: the second trainer of the model-pipeline factory (``python -m jobs.popularity``)."""
