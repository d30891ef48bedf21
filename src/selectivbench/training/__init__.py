"""Training: arguments, the Accelerate loop, resumable states, run records and the transformers.Trainer glue."""
