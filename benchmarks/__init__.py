"""Benchmarks: run as modules, e.g. ``python -m benchmarks.forward``. Never part of tests."""
