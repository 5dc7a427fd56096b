"""Benchmarks that run against a real cloud (`python -m bench.<name>`); not part of the tests."""
