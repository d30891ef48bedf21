"""Task loading: a config of a generated folder, a Hub dataset or built here; the collator; Hub ids."""
