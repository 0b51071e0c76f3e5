"""Benchmarks of the pipeline's stages: ``python -m benchmarks [--only NAME] [--quick]``."""
