"""The Hub side: dataset folders (generate, validate, load, card, publish) and model cards and uploads."""
