"""The forward simulators. Each module defines ``SCHEMA`` (its [physics] and [prior]
spec sections) and ``build(spec) -> Problem`` and registers them (:func:`register`);
adding a problem is one file here (imported below) plus one spec in ``problems/``."""

from . import deblur2d, heat1d, oscillator
from ._registry import REGISTRY, Identifiable, Simulator, load_problem, register

__all__ = [
    "REGISTRY", "Identifiable", "Simulator", "deblur2d", "heat1d", "load_problem",
    "oscillator", "register",
]
