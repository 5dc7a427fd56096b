"""Fault injection with real processes (pytest -m faults; tools/test runs them as a second step)."""
