"""The differentiable entry point of the core: :func:`solve_core`.

The solution x*(theta) of min Phi over the constraint set is differentiated by the
implicit function theorem on its KKT conditions (a custom JVP, so forward and reverse
mode both work), with respect to ``y_obs``, ``args``, arrays the forward map closes
over, and the bounds; never through the loop, and not with respect to ``x0``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import lineax as lx

from ._core import Box, Solution, solve_one
from ._descents import AbstractDescent, GaussNewton, ProjectedGradient
from ._lm import LevenbergMarquardt
from ._rules import Rules

__all__ = ["METHODS", "NoArgs", "as_method", "implicit_tangent", "solve_core"]

METHODS = {"pg": ProjectedGradient, "gn": GaussNewton, "lm": LevenbergMarquardt}


def as_method(method: str | AbstractDescent) -> AbstractDescent:
    if isinstance(method, AbstractDescent):
        return method
    if method == "dipg":
        raise ValueError("method 'dipg' needs a learned inverse: use invphys.DIPG(inverse=g)")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r} (known: {', '.join(METHODS)}, or a "
                         "method object such as invphys.DIPG(inverse=g))")
    return METHODS[method]()


@jtu.register_pytree_node_class
class NoArgs:
    """``fn(x)`` called as ``fn(x, args)``. A pytree with ``fn`` as its child, so that
    arrays inside ``fn`` (an eqx.Module) are traced and one function compiles once."""

    __slots__ = ("fn", "__weakref__")

    def __init__(self, fn):
        self.fn = fn

    def __call__(self, x, args):
        return self.fn(x)

    def tree_flatten(self):
        return (self.fn,), None

    @classmethod
    def tree_unflatten(cls, aux, children):
        return cls(*children)


def solve_core(fn, y_obs, x0, args=None, *, cset=None,
               method: str | AbstractDescent = "gn", rules: Rules | None = None) -> Solution:
    """Recover x from one observation: the traceable, differentiable core of
    :func:`invphys.solve`.

    ``fn(x)`` (or ``fn(x, args)`` when ``args`` is given) is the forward map of one x;
    ``cset`` a constraint set (a :class:`~invphys.Problem` or :class:`Box`; None: none);
    ``x0`` one start (projected onto ``cset``). No host-side checks: it works inside
    ``jax.jit`` and ``jax.vmap`` (vmap over ``y_obs``, ``x0`` or ``args``: a blur width,
    a noise level, a diffusivity), and ``jax.grad``/``jax.jvp`` of anything computed
    from ``sol.x`` give the implicit derivative with respect to ``y_obs``, ``args``,
    arrays ``fn`` closes over and the bounds.

        sol = jax.jit(jax.vmap(lambda y, k: solve_core(f, y, x0, k, method="lm")))(Y, K)
        g = jax.grad(lambda y: jnp.sum(solve_core(f, y, x0, k).x ** 2))(y)
    """
    method = as_method(method)
    rules = rules if rules is not None else Rules()
    x0 = jnp.asarray(x0)
    y_obs = jnp.asarray(y_obs, x0.dtype)
    # strong types: a weak-typed tracer (jax.grad of a Python float) would not match
    # the closure-converted example inside the custom derivative
    args = jax.tree.map(lambda a: jax.lax.convert_element_type(a, a.dtype)
                        if eqx.is_array(a) else a, args)
    call = NoArgs(fn) if args is None else fn
    conv = eqx.filter_closure_convert(call, x0, args)
    box = Box.of(cset)
    x0 = jax.lax.stop_gradient(box.project(x0))
    return _implicit((conv, args, y_obs, box), x0, method=method, rules=rules)


@eqx.filter_custom_jvp
def _implicit(inputs, x0, *, method, rules):
    fn, args, y_obs, box = inputs
    return solve_one(lambda x: fn(x, args), box, method, rules, y_obs, x0)


@_implicit.def_jvp
def _implicit_jvp(primals, tangents, *, method, rules):
    inputs, x0 = primals
    sol = _implicit(inputs, x0, method=method, rules=rules)
    fn, args, y_obs, box = inputs
    t_fn, t_args, t_y, t_box = tangents[0]
    t_x = implicit_tangent(lambda z, f, a, y: f(z, a) - y, sol.x, (fn, args, y_obs),
                           (t_fn, t_args, t_y), box, t_box)
    t_sol = jtu.tree_map(lambda _: None, sol)
    # tree_at, not dataclasses.replace: a tangent of None leaves is no Solution to
    # construct (its __init__ would check the annotations)
    return sol, eqx.tree_at(lambda s: s.x, t_sol, t_x, is_leaf=lambda v: v is None)


def implicit_tangent(residual, x, theta, t_theta, box, t_box):
    """dx of the KKT point x of min 0.5 |residual(x, *theta)|^2 over ``box``.

    Free components solve grad_x C(x, theta) = 0; a component on an active bound (or
    pinned) equals that bound. So dx_A = dbound_A and H_FF dx_F = -(d/dtheta grad_F C)
    dtheta - H_FA dx_A, with the full Hessian H of C (not the Gauss-Newton one, which is
    wrong for non-zero residuals). The linear solve is lineax's, so reverse mode
    transposes it."""
    lower, upper, pinned = box.lower, box.upper, box.pinned
    t_lower = None if t_box is None else t_box.lower
    t_upper = None if t_box is None else t_box.upper
    g = jax.vjp(lambda z: residual(z, *theta), x)[1](residual(x, *theta))[0]
    at_lo = jnp.zeros(x.shape, bool) if lower is None else (x <= lower) & (g > 0)
    at_hi = jnp.zeros(x.shape, bool) if upper is None else (x >= upper) & (g < 0)
    active = at_lo | at_hi
    if pinned is not None:
        active = active | pinned
    free = ~active
    dx_active = jnp.zeros_like(x)
    if lower is not None and t_lower is not None:
        dx_active = jnp.where(at_lo, t_lower, dx_active)
    if upper is not None and t_upper is not None:
        dx_active = jnp.where(at_hi, t_upper, dx_active)
    if pinned is not None:
        dx_active = jnp.where(pinned, 0.0, dx_active)

    # tangents of the inexact arrays in theta; symbolic zeros materialised
    dyn, static = eqx.partition(theta, eqx.is_array)

    def materialise(p, t):
        if p is None or not eqx.is_inexact_array(p):
            return None
        return jnp.zeros_like(p) if t is None else t

    t_dyn = jtu.tree_map(materialise, dyn, t_theta, is_leaf=lambda v: v is None)
    diff, nondiff = eqx.partition(dyn, eqx.is_inexact_array)

    def grad_of(z, d):
        th = eqx.combine(d, nondiff, static)
        return jax.grad(lambda w: 0.5 * jnp.sum(residual(w, *th) ** 2))(z)

    _, rhs = jax.jvp(grad_of, (x, diff), (dx_active, t_dyn))
    rhs = jnp.where(free, -rhs, 0.0)

    def hvp(v):  # H_FF on the free components, the identity on the active ones
        hv = jax.jvp(lambda z: grad_of(z, diff), (x,), (jnp.where(free, v, 0.0),))[1]
        return jnp.where(free, hv, v)

    op = lx.FunctionLinearOperator(hvp, jax.ShapeDtypeStruct(x.shape, x.dtype),
                                   lx.symmetric_tag)
    # SVD: the minimum-norm tangent where H_FF is singular (parameters the data do not
    # identify, e.g. the oscillator's m, c, k up to scale): identifiable functions of x
    # then get their true derivative
    solver = lx.SVD() if x.size <= 400 else lx.GMRES(rtol=1e-10, atol=1e-12,
                                                     max_steps=4 * x.size)
    dx_free = lx.linear_solve(op, rhs, solver, throw=False).value
    return jnp.where(free, dx_free, dx_active)
