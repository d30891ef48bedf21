"""Evaluation: the SPEC metrics, scoring checkpoints and the results tables."""
