"""SelectivBench: which recurrence keeps what matters and ignores distractors (arXiv:2601.12598)."""
__version__ = "0.1.0"
