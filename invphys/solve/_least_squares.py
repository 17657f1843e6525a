"""``invphys.least_squares``: the general-purpose, certified least-squares entry point.

It runs the *same* loop as :func:`invphys.solve` (:func:`~invphys.solve.solve_one`) with the
*same* :class:`LevenbergMarquardt` method, under production rules instead of the
paper's protocol:

* no relaxation (rho = 1) and Armijo along the projection arc (``armijo="step"``), so
  bound-constrained solves converge to KKT points;
* LM damping from the gain ratio, Moré's column scaling, and an SVD of the scaled
  Jacobian per iteration (never the normal equations) whose trials trace the LM curve;
* stopping on the undamped Gauss-Newton step (``|dx_i| <= rtol |x_i| + atol``), on the
  projected gradient, on a vanished residual, or at the rounding floor (the GN step
  stops shrinking below sqrt(eps) |x|): never on a small cost reduction alone, which is
  what leaves other solvers at 6-7 correct digits when the cost already has 11;
* a second-order certificate where first-order tests are blind: at a minimiser with a
  non-zero residual and a vanishing Jacobian (r = x^2 + 1) J^T r = |J| |r| at every
  point, but the cost's Hessian (with the second-order term) shows no step lowers it
  beyond rounding (``RESULTS.cost_converged``);
* honest failure: a solve that ends where a parameter stopped affecting the residual
  (exp saturation, a minimum at infinity: scipy's ``lm`` reports success at RSS 9772 on
  NIST BoxBOD from start 1) reports ``RESULTS.degenerate``, ``success=False``; one
  stopped by NaN/inf along its steps reports ``RESULTS.nonfinite_trial``.

The solution is differentiable with respect to ``args``, to arrays ``fn`` closes over
and to the bounds, by the implicit function theorem on the KKT conditions (a custom
JVP, so both forward and reverse mode work); it does not depend on ``x0``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, Int, PyTree

from .._errors import BoundsError, NonFiniteError, ShapeError
from .._problem import Problem, as_real_array, check_finite, is_concrete
from ._core import Box, solve_one
from ._descents import AbstractDescent
from ._implicit import NoArgs, implicit_tangent
from ._lm import LevenbergMarquardt
from ._results import RESULTS, SUCCESS
from ._rules import Rules, check_setting

__all__ = ["LeastSquaresSolution", "least_squares"]


class LeastSquaresSolution(eqx.Module):
    """The result of :func:`least_squares` (under ``vmap`` every field gains an axis).

    Attributes:
        x: the solution.
        cost: ``0.5 * sum(fn(x)**2)`` (differentiable, like ``x``).
        fun: the residual vector at ``x``.
        success: x is a minimiser to the accuracy the problem allows: ``result`` is one
            of :data:`~invphys.solve.SUCCESS` (``step_converged``,
            ``gradient_converged``, ``zero_residual``, ``precision_limit``,
            ``cost_converged``). Exactly a function of ``result``, so the two never
            disagree.
        result: why it stopped, a :class:`RESULTS` item (``sol.result._value`` is its
            integer code, :func:`~invphys.solve.result_names` the names of a batch).
            Successes as above; failures: ``max_iterations`` (the limit ``max_steps``),
            ``no_progress`` (no step lowers the cost, at a point that is not a minimum to
            working precision: the gradient is larger than rounding explains),
            ``nonfinite_trial`` (the same, where the steps from x meet a NaN/inf
            residual: x is at the edge of where ``fn`` is finite), ``degenerate`` (a
            parameter stopped affecting the residual: a plateau or a minimum at infinity,
            where the cost is flat only because it keeps falling ever slower),
            ``nonfinite`` (a NaN/inf residual at the start, under jit/vmap).
        message: (property) ``RESULTS[result]``, the stop reason in a sentence; it starts
            with "converged" exactly when ``success`` (single, unbatched solves).
        steps: iterations taken (each one Jacobian and one line search).
        nfev, njev: residual and Jacobian evaluations (a Jacobian is one ``linearize``;
            the direct LM mode then takes n JVPs of it).
        accepted, rejected: iterations whose line search did / did not find a point.
        grad_inf: max-norm of the cost gradient ``J^T r`` over the free components.
        active: ``-1`` where x sits on an active lower bound, ``+1`` on an active upper
            bound, ``0`` free (scipy's ``active_mask``).
        x0_projected: x0 was outside the bounds and was projected onto them.
    """

    x: Float[Array, " n"]
    cost: Float[Array, ""]
    fun: Float[Array, " m"]
    success: Bool[Array, ""]
    result: RESULTS
    steps: Int[Array, ""]
    nfev: Int[Array, ""]
    njev: Int[Array, ""]
    accepted: Int[Array, ""]
    rejected: Int[Array, ""]
    grad_inf: Float[Array, ""]
    active: Int[Array, " n"]
    x0_projected: Bool[Array, ""]

    @property
    def message(self) -> str:
        """The stop reason in words (for a single, unbatched solve)."""
        return RESULTS[self.result]


_SUCCESS_ITEMS = tuple(getattr(RESULTS, name) for name in SUCCESS)


def _is_success(result) -> Array:
    ok = jnp.asarray(False)
    for item in _SUCCESS_ITEMS:
        ok = ok | (result == item)
    return ok


def least_squares(
    fn: Callable[..., Float[Array, " m"]],
    x0: ArrayLike,
    args: PyTree = None,
    *,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
    method: str | AbstractDescent = "lm",
    rtol: float = 1e-10,
    atol: float = 0.0,
    gtol: float = 0.0,
    max_steps: int = 1000,
) -> LeastSquaresSolution:
    """Minimise ``0.5 * sum(fn(x)**2)`` over ``lower <= x <= upper``.

    Arguments:
        fn: the residual, ``fn(x) -> (m,)`` (``fn(x, args)`` when ``args`` is given);
            jax-traceable. Its Jacobian is taken by forward-mode AD.
        x0: the start, shape ``(n,)``. A start outside the bounds is projected onto them
            (``sol.x0_projected``), not rejected: that is what a traced (jit/vmap) call
            can do too.
        args: a pytree passed to ``fn``; the solution is differentiable with respect to
            its arrays (and to arrays ``fn`` closes over, and to the bounds).
        lower, upper: box bounds, scalars or ``(n,)`` arrays (``-inf``/``inf`` allowed).
        method: ``"lm"`` (Levenberg-Marquardt, direct SVD mode for n <= 400, matrix-free
            CG beyond), or a configured :class:`LevenbergMarquardt`.
        rtol, atol: stop when the undamped Gauss-Newton step satisfies
            ``|dx_i| <= rtol * |x_i| + atol`` for every free component (the step is then
            taken, so x is better than that). The default 1e-10 returns about 10-11
            correct digits on well-posed problems; where rounding stops the step from
            shrinking first, the solve stops there (``RESULTS.precision_limit``).
        gtol: stop when the max-norm of the projected cost gradient is <= gtol (default
            0: only an exactly zero gradient).
        max_steps: iteration limit (each iteration is one Jacobian and one line search).

    Returns:
        A :class:`LeastSquaresSolution`. ``success`` is True at a minimiser: by the
        Gauss-Newton step, the gradient, a vanished residual, the rounding floor, or
        (``RESULTS.cost_converged``) a second-order certificate where the Jacobian
        cannot tell (a minimum with a non-zero residual and a vanishing Jacobian, such
        as r = x^2 + 1: the cost's Hessian on the gradient / GN span says no step lowers
        it beyond rounding). It is False for the iteration limit, a search that cannot
        progress away from a minimiser (``RESULTS.no_progress``, or
        ``RESULTS.nonfinite_trial`` when the steps met NaN/inf), and a point where a
        parameter has stopped affecting the residual (``RESULTS.degenerate``: a plateau
        or a minimum at infinity, reported instead of a false success).

    Raises (for concrete inputs; under ``jit``/``vmap`` only shapes can be checked, and
    a non-finite start returns ``RESULTS.nonfinite`` instead):
        SpecError: ``max_steps`` is not an integer >= 1, or ``rtol``, ``atol``, ``gtol``
            is negative, NaN or inf (a ``ValueError`` too).
        NonFiniteError: ``x0`` has NaN/inf, or the residual is not finite at ``x0``.
        BoundsError: ``lower > upper`` somewhere, or a NaN bound.
        ShapeError: ``x0`` is not a vector, a bound has the wrong shape, or ``fn`` does
            not return a vector.

    Works under ``jax.jit`` and ``jax.vmap`` (vmap over ``x0``, ``args`` or bounds gives
    the same answers as separate solves).
    """
    method = _as_lsq_method(method)
    check_setting("max_steps", max_steps, "least_squares")
    for name, value in (("rtol", rtol), ("atol", atol), ("gtol", gtol)):
        check_setting(name, value, "least_squares")
    if not isinstance(x0, jax.core.Tracer):  # concrete: check before the transfer
        x0 = as_real_array("x0", x0)  # a complex or non-numeric x0 is a ShapeError
        check_finite("x0", x0)
    x0 = jnp.asarray(x0)
    if not jnp.issubdtype(x0.dtype, jnp.floating):
        x0 = x0.astype(jnp.result_type(float))
    if x0.ndim != 1 or x0.size == 0:
        raise ShapeError(f"x0 must be a non-empty vector (n,), got shape {x0.shape}")
    lo = _bound("lower", lower, x0)
    hi = _bound("upper", upper, x0)
    if lo is not None and hi is not None and is_concrete(lo) and is_concrete(hi):
        bad = np.asarray(lo) > np.asarray(hi)
        if bad.any():
            i = int(np.argmax(bad))
            raise BoundsError(f"lower > upper at index {i} ({float(lo[i])} > {float(hi[i])})")
    call = NoArgs(fn) if args is None else fn  # equal wrappers: the jit cache hits
    rules = _production_rules(int(max_steps), float(rtol), float(atol), float(gtol))
    # one jax.jit dispatch: the arrays in (fn, args) are traced, everything else is static
    leaves, treedef = jax.tree.flatten((call, args))
    dynamic = [leaf if eqx.is_array(leaf) else None for leaf in leaves]
    static = tuple(None if eqx.is_array(leaf) else leaf for leaf in leaves)
    sol = _least_squares_jit(dynamic, x0, lo, hi, treedef=treedef, static=static,
                             key=_static_key(method, rules))
    if is_concrete(sol.steps) and int(sol.steps) == 0 \
            and int(sol.result._value) == int(RESULTS.nonfinite._value):
        raise NonFiniteError("the residual is not finite at x0")
    return sol


@functools.lru_cache(maxsize=64)
def _production_rules(max_steps: int, rtol: float, atol: float, gtol: float) -> Rules:
    """The production protocol (:meth:`Rules.certified`): no relaxation, Armijo along
    the projection arc, the certified stopping rules, Gauss-Newton polishing below
    1e-6 |x|."""
    return Rules.certified(rtol=rtol, atol=atol, gtol=gtol, max_iter=max_steps)


#: The production Levenberg-Marquardt: starts near Gauss-Newton (damping 1e-12 of the
#: scaled J^T J, like MINPACK's large initial trust region), rounding-aware gain ratio,
#: geodesic acceleration (Transtrum & Sethna) for curved valleys (MGH10, Bennett5).
DEFAULT_LM = LevenbergMarquardt(damping0=1e-12, geodesic=0.75, production=True)


def _bound(name, b, x0):
    """A bound as an (n,) array of x0's dtype (scalars broadcast); typed errors."""
    if b is None:
        return None
    n = x0.shape[0]
    arr = jnp.asarray(b, dtype=x0.dtype)
    if arr.ndim == 0:
        arr = jnp.broadcast_to(arr, (n,))
    if arr.shape != (n,):
        raise ShapeError(f"{name} has shape {arr.shape}, expected () or ({n},)")
    if is_concrete(arr) and bool(np.any(np.isnan(np.asarray(arr)))):
        raise BoundsError(f"{name} contains NaN")
    return arr


def _check_residual(call, x0, args):
    """At trace time: fn must map (n,) to a non-empty floating vector."""
    out = jax.eval_shape(call, jax.ShapeDtypeStruct(x0.shape, x0.dtype), args)
    if not hasattr(out, "shape") or len(out.shape) != 1 or out.shape[0] == 0:
        shape = getattr(out, "shape", type(out).__name__)
        raise ShapeError(f"fn must return a non-empty vector of residuals (m,), got {shape}")
    if not jnp.issubdtype(out.dtype, jnp.floating):
        raise ShapeError(f"fn must return floating-point residuals, got {out.dtype}")


class _StaticKey:
    """The (method, rules) pair as one jit static argument with a precomputed hash."""

    __slots__ = ("method", "rules", "_hash")

    def __init__(self, method, rules):
        self.method, self.rules = method, rules
        self._hash = hash((method, rules))

    def __hash__(self):
        return self._hash

    def __eq__(self, other):
        return self is other or (type(other) is _StaticKey and self._hash == other._hash
                                 and self.method == other.method
                                 and self.rules == other.rules)


@functools.lru_cache(maxsize=64)
def _static_key(method, rules) -> _StaticKey:
    return _StaticKey(method, rules)


def _as_lsq_method(method) -> AbstractDescent:
    if isinstance(method, AbstractDescent):
        return method
    if method == "lm":
        return DEFAULT_LM
    raise ValueError(f"unknown least-squares method {method!r} (use 'lm' or a "
                     "LevenbergMarquardt(...) instance)")


@functools.partial(jax.jit, static_argnames=("treedef", "static", "key"))
def _least_squares_jit(dynamic, x0, lower, upper, *, treedef, static, key):
    method, rules = key.method, key.rules
    leaves = [d if s is None else s for d, s in zip(dynamic, static, strict=True)]
    call, args = jax.tree.unflatten(treedef, leaves)
    _check_residual(call, x0, args)
    fn = eqx.filter_closure_convert(call, x0, args)
    x0p = x0
    if lower is not None:
        x0p = jnp.maximum(x0p, lower)
    if upper is not None:
        x0p = jnp.minimum(x0p, upper)
    projected = jnp.any(x0p != x0)
    sol = _implicit_solve((fn, args, lower, upper), jax.lax.stop_gradient(x0p),
                          method=method, rules=rules)
    x = sol.x
    r = fn(x, args)
    g = jax.lax.stop_gradient(jax.vjp(lambda z: fn(z, args), x)[1](r)[0])
    xs = jax.lax.stop_gradient(x)
    at_lo = jnp.zeros(x.shape, bool) if lower is None else (xs <= lower) & (g > 0)
    at_hi = jnp.zeros(x.shape, bool) if upper is None else (xs >= upper) & (g < 0)
    active = jnp.where(at_lo, -1, jnp.where(at_hi, 1, 0)).astype(jnp.int8)
    return LeastSquaresSolution(
        x=x, cost=0.5 * jnp.sum(r**2), fun=r, success=_is_success(sol.result),
        result=sol.result, steps=sol.steps, nfev=sol.stats["nfev"], njev=sol.stats["njev"],
        accepted=sol.stats["accepted"], rejected=sol.stats["rejected"],
        grad_inf=jnp.max(jnp.abs(jnp.where(active != 0, 0.0, g)), initial=0.0),
        active=active, x0_projected=projected,
    )


def _run(inputs, x0, method, rules):
    fn, args, lower, upper = inputs
    problem = Problem(lambda x: fn(x, args), lower=lower, upper=upper, x_size=x0.shape[0])
    m = jax.eval_shape(problem.fn, x0).shape[0]
    return solve_one(problem.fn, problem, method, rules, jnp.zeros((m,), x0.dtype), x0)


@eqx.filter_custom_jvp
def _implicit_solve(inputs, x0, *, method, rules):
    return _run(inputs, x0, method, rules)


@_implicit_solve.def_jvp
def _implicit_solve_jvp(primals, tangents, *, method, rules):
    """Implicit function theorem on the KKT system of the box-constrained problem.

    Free components solve grad_x C(x, theta) = 0 (C = 0.5 |fn(x, args)|^2, theta = the
    arrays in fn and args); a component on an active bound equals that bound. So
    dx_A = dbound_A and H_FF dx_F = -(d/dtheta grad_F C) dtheta - H_FA dx_A, with the
    full Hessian H of C (not the Gauss-Newton one, which is wrong for non-zero
    residuals). The linear solve is lineax's, so reverse mode transposes it.
    """
    inputs, x0 = primals
    t_inputs, _ = tangents
    sol = _implicit_solve(inputs, x0, method=method, rules=rules)
    fn, args, lower, upper = inputs
    t_fn, t_args, t_lower, t_upper = t_inputs
    t_x = implicit_tangent(lambda z, f, a: f(z, a), sol.x, (fn, args), (t_fn, t_args),
                           Box(lower, upper), Box(t_lower, t_upper))
    t_sol = jtu.tree_map(lambda _: None, sol)
    # tree_at, not dataclasses.replace: a tangent of None leaves is no Solution to
    # construct (its __init__ would check the annotations)
    t_sol = eqx.tree_at(lambda s: s.x, t_sol, t_x, is_leaf=lambda v: v is None)
    return sol, t_sol
