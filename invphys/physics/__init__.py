"""The forward simulators. Each module defines ``SCHEMA`` (its [physics] and [prior]
spec sections) and ``build(spec) -> Problem``; adding a problem is one file here plus
one spec in ``problems/``."""

from . import heat1d, oscillator

REGISTRY = {"heat1d": heat1d, "oscillator": oscillator}

__all__ = ["REGISTRY", "heat1d", "oscillator"]
