"""The physics registry: problem name -> simulator, and :func:`load_problem`.

Every simulator module ends with one ``register(name, SCHEMA, build, ...)`` call. That
puts it in :data:`REGISTRY` and hands its spec sections to the schema layer
(:func:`invphys._spec.register_schema`), so a spec naming the problem validates
without the schema layer importing physics: the registry imports the spec layer,
never the other way.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

import numpy as np

from .._problem import Problem
from .._spec import Schema, Spec, load_spec, register_schema

#: ``x (K, n) -> (values (K, q), names)``: the quantities an observation identifies.
Identifiable = Callable[[np.ndarray], tuple[np.ndarray, tuple[str, ...]]]


@dataclasses.dataclass(frozen=True)
class Simulator:
    """A registered physics problem.

    ``schema``: its spec sections (``[physics]``, ``[prior]``, any it replaces);
    ``build(spec) -> Problem``; ``identifiable``: the combinations of x the observation
    determines (None: the problem declares none, x is scored as is).
    """

    name: str
    schema: Schema
    build: Callable[[Spec], Problem]
    identifiable: Identifiable | None = None


REGISTRY: dict[str, Simulator] = {}


def register(name: str, schema: Schema, build: Callable[[Spec], Problem], *,
             identifiable: Identifiable | None = None) -> Simulator:
    """Make ``name`` a problem: ``problem = "name"`` in a spec, ``load_problem("name")``."""
    sim = Simulator(name=name, schema=schema, build=build, identifiable=identifiable)
    REGISTRY[name] = sim
    register_schema(name, schema)
    return sim


def load_problem(spec: str | Spec, overrides: Mapping | None = None) -> Problem:
    """Build a :class:`Problem` from a bundled spec name (``"heat1d"``), a path, or a Spec.

    ``overrides`` maps ``"section.key"`` to values, e.g. ``{"physics.fidelity": "accurate"}``.
    """
    s = load_spec(spec)
    if overrides:
        s = s.replace(overrides)
    return REGISTRY[s.problem].build(s)
