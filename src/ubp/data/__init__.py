"""Data stages: synthetic generator, ingest/validation, split and targets."""
