"""EASE, the closed-form item-item model, as a model family behind the factory (``python -m jobs.ease``)."""
