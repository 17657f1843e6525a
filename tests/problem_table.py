"""Shared problem tables for parametrised tests."""

import functools

import invphys

FIDELITIES = [
    ("heat1d", "paper"),
    ("heat1d", "accurate"),
    ("oscillator", "paper"),
    ("oscillator", "accurate"),
]


@functools.cache
def problem(name: str, fidelity: str = "paper", **overrides) -> invphys.Problem:
    return invphys.load_problem(name, {"physics.fidelity": fidelity, **overrides})
