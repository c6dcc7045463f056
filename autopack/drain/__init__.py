"""Draining phases: claims, sessions and results (and, later, the batch controller)."""
