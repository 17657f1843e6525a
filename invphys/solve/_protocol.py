"""``invphys.solve``: the public wrapper around the traceable core.

It validates what it can (shapes always; finiteness only where values are concrete, an
``eqx.error_if`` otherwise), projects the start, and dispatches to one jitted call
(single or batched, optionally sharded or compacted: :mod:`._batch`). Called with
traced inputs (inside a user's ``jax.jit``, ``jax.vmap`` or ``jax.grad``) it stays
traceable: the derivative of the solution is the implicit one of :func:`solve_core`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import ArrayLike

from .._errors import NonFiniteError, ShapeError
from .._problem import Problem, check_finite, validate_solve_inputs
from ._batch import shard_batch, solve_batch, solve_compacted, solve_single
from ._core import Solution
from ._descents import AbstractDescent
from ._implicit import as_method
from ._rules import Rules
from ._search import objective

__all__ = ["COMPACT_AUTO_MIN", "solve"]

#: The batch size from which ``compact="auto"`` gathers finished members out between
#: rounds (see :func:`solve`). The batch-size table of benchmarks/solvers.py (16 / 200 /
#: 1000 problems, both modes) is the record it was set from: at 16 the rounds cost more
#: than they save, at 200 the two modes were within the run-to-run noise, at 1000
#: compaction was usually ahead (a bigger batch has a longer tail of slow members).
COMPACT_AUTO_MIN = 512


def solve(
    problem: Problem,
    # Shapes (..., m) and (..., n), and real dtypes, are checked by validate_solve_inputs
    # (a ShapeError naming the argument); lists and integer arrays are accepted.
    y_obs: ArrayLike | Sequence,
    x0: ArrayLike | Sequence | None = None,
    method: str | AbstractDescent = "gn",
    rules: Rules | None = None,
    *,
    shard: bool | jax.sharding.Sharding = False,
    compact: bool | int | str = "auto",
) -> Solution:
    """Recover x from observations ``y_obs`` under the shared protocol.

    ``method`` is ``"pg"``, ``"gn"``, ``"lm"`` or a descent object (``invphys.DIPG(inverse=g)``,
    ``invphys.LevenbergMarquardt(...)``); ``rules`` a :class:`Rules` (default
    :meth:`Rules.paper`). ``x0`` defaults to the problem's fixed start; a start outside
    the constraint set is projected (``sol.x0_projected``, known for concrete inputs).

    Batched solve: give ``y_obs`` a leading batch axis (``(B, m)``); ``x0`` may be one
    start (broadcast) or ``(B, n)``. The batch is one jitted, vmapped call; with
    ``shard=True`` it is split across all devices (``jax.sharding``; pass a Sharding to
    choose), which gives the same answers as the unsharded call.

    ``compact=True`` (or a round length in iterations; True = max_iter // 10, at least
    5) stops finished members of a batch from costing compute: the loop runs in rounds
    and the members still running are gathered into smaller batches between rounds
    (a few extra compiles, one host sync per round; combines with ``shard``). Same
    answers per member. Under tracing (inside a user's jit/vmap/grad) compaction needs
    host syncs, so the batch runs as one loop instead (the same answers).
    ``compact="auto"`` (the default) compacts batches of at least
    :data:`COMPACT_AUTO_MIN` members and runs smaller ones as one loop: in one vmapped
    loop every member pays for the slowest member's iterations, and the slowest of a
    batch gets slower as the batch grows (the tail of the iteration count), so a large
    batch's cost per problem grows with its size unless finished members are gathered
    out; a small batch has little tail to cut, and there the rounds' host syncs and
    extra compiles cost more than they save. ``compact=False`` always runs one loop.

    Traceable: ``jax.vmap(lambda y: invphys.solve(problem, y, x0).x)(Y)`` works, and
    ``jax.grad`` through ``sol.x`` is the implicit derivative (see :func:`solve_core`).
    """
    rules = rules if rules is not None else Rules()
    method = as_method(method)
    concrete = not any(isinstance(a, jax.core.Tracer)
                       for a in jax.tree.leaves((y_obs, x0)))
    if concrete:  # values to check now; the jitted core never sees a bad input
        y_obs, x0 = validate_solve_inputs(problem, y_obs, x0,
                                          inverse=getattr(method, "inverse", None))
    y_obs = jnp.asarray(y_obs)
    if y_obs.ndim == 0:
        raise ShapeError("y_obs must be an array of observations, got a scalar")
    if x0 is None:
        x0 = problem.start(y_obs.dtype if jnp.issubdtype(y_obs.dtype, jnp.floating) else None)
    x0 = jnp.asarray(x0, dtype=jnp.result_type(x0, y_obs, float))
    y_obs = y_obs.astype(x0.dtype)
    if concrete:
        check_finite("x0", x0)
    n = problem.x_size or x0.shape[-1]
    if x0.shape[-1] != n or x0.ndim > 2:
        raise ShapeError(f"x0 has shape {x0.shape}, expected ({n},) or (batch, {n})")
    y_shape = jax.eval_shape(problem.fn, jax.ShapeDtypeStruct((n,), x0.dtype)).shape
    if len(y_shape) != 1:
        raise ShapeError(f"forward must return a vector, got shape {y_shape}")
    batched = y_obs.ndim == 2
    if y_obs.shape[-1] != y_shape[0] or y_obs.ndim > 2:
        raise ShapeError(f"y_obs has shape {y_obs.shape}, expected {y_shape} or "
                         f"(batch, {y_shape[0]})")
    if x0.ndim == 2 and not batched:
        raise ShapeError("x0 has a batch axis but y_obs does not")
    if isinstance(compact, str):
        if compact != "auto":
            raise ValueError(f"compact must be 'auto', a bool or a round length, got {compact!r}")
        compact = batched and y_obs.shape[0] >= COMPACT_AUTO_MIN
    if compact and not batched:
        raise ValueError("compact=True needs a batched solve (a leading batch axis on y_obs)")
    rounds = 0
    if compact:
        rounds = max(5, rules.max_iter // 10) if compact is True else int(compact)
        if rounds < 1:
            raise ValueError(f"compact must be True or a positive round length, got {compact}")
    x0p = problem.project(x0)
    projected = bool(jnp.any(x0p != x0)) if concrete else False
    if batched:
        x0p = jnp.broadcast_to(x0p, (y_obs.shape[0], n))
    if concrete:
        _check_objective_finite(problem, y_obs, x0p, batched)
    else:
        x0p = _error_if_nonfinite(problem, y_obs, x0p, batched)
    if not batched:
        sol = solve_single(problem, method, rules, y_obs, x0p)
    elif compact and concrete:
        sol = solve_compacted(problem, method, rules, y_obs, x0p, rounds, shard=shard)
    elif shard and concrete:
        y_obs, x0p, pad = shard_batch(y_obs, x0p, shard)
        sol = solve_batch(problem, method, rules, y_obs, x0p)
        if pad:
            sol = jax.tree.map(lambda a: a[: a.shape[0] - pad], sol)
    else:
        sol = solve_batch(problem, method, rules, y_obs, x0p)
    return dataclasses.replace(sol, x0_projected=True) if projected else sol


_objective_jit = eqx.filter_jit(objective)
_objective_batch_jit = eqx.filter_jit(jax.vmap(objective, in_axes=(None, 0, 0)))


def _check_objective_finite(problem, y_obs, x0, batched):
    # module-level jitted checks: a wrapper built per call would recompile every time
    phi = (_objective_batch_jit if batched else _objective_jit)(problem.fn, x0, y_obs)
    bad = ~np.isfinite(np.asarray(phi))
    if bad.any():
        where = f" (problem {int(np.argmax(bad))} of the batch)" if batched else ""
        raise NonFiniteError(f"the objective is not finite at x0{where}")


def _error_if_nonfinite(problem, y_obs, x0, batched):
    """The traced form of the finiteness checks: a runtime ``eqx.error_if``."""
    phi = (jax.vmap(objective, in_axes=(None, 0, 0)) if batched else objective)(
        problem.fn, x0, y_obs)
    bad = ~jnp.all(jnp.isfinite(phi)) | ~jnp.all(jnp.isfinite(y_obs))
    return eqx.error_if(x0, bad, "y_obs, x0 or the objective at x0 is not finite")
