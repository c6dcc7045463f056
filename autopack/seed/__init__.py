"""Seed runs: known-easy phases that yield clean telemetry samples."""
