"""The forward simulators. Each module defines ``SCHEMA`` (its [physics] and [prior]
spec sections) and ``build(spec) -> Problem``; adding a problem is one file here plus
one spec in ``problems/``."""

from . import deblur2d, heat1d, oscillator

REGISTRY = {"heat1d": heat1d, "oscillator": oscillator}
REGISTRY["deblur2d"] = deblur2d

__all__ = ["REGISTRY", "heat1d", "oscillator"]
