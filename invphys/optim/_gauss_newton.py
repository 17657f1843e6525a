"""Generalised Gauss-Newton with Levenberg-Marquardt damping, full or layer-wise, and its
prox-linear variant (an inner optimizer on the linearised model), as optax transformations.

Each update linearises the model on the current batch at ``params``, builds the
GGN ``G = J^T H_loss J`` matrix-free (see :mod:`._curvature`), computes a direction
``d``, line-searches along it, and accepts the step only if the loss went down.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any, Literal, NamedTuple

import jax
import jax.numpy as jnp
import lineax as lx
import optax
from jaxtyping import Array, Bool, Float, Int, PyTree

from ._contract import require_model_and_loss, value_fn_of
from ._curvature import GGN, linearize_ggn, tree_axpy, tree_vdot
from ._linesearch import backtracking, lm_damping_update

__all__ = [
    "GaussNewtonState",
    "by_layer",
    "gauss_newton",
    "gauss_newton_direction",
    "gauss_newton_prox_linear",
]

Groups = PyTree[Hashable] | Callable[[PyTree[Array]], PyTree[Hashable]] | None


class GaussNewtonState(NamedTuple):
    """Arrays only, so the state checkpoints with equinox serialisation.

    ``damping`` is LM's lambda (the prox weight, constant, for the prox-linear variant);
    the other fields describe the last step: ``rho`` = actual / predicted reduction,
    ``predicted`` and ``actual`` reductions of the loss, ``step_size`` the line-search
    alpha, ``accepted`` whether the update was non-zero, ``solver_steps`` the CG steps
    (summed over blocks) or the inner optimizer's steps.
    """

    count: Int[Array, ""]
    damping: Float[Array, ""]
    rho: Float[Array, ""]
    predicted: Float[Array, ""]
    actual: Float[Array, ""]
    step_size: Float[Array, ""]
    accepted: Bool[Array, ""]
    solver_steps: Int[Array, ""]


def _float_dtype(params) -> Any:
    leaves = jax.tree.leaves(params)
    return jnp.result_type(*leaves) if leaves else jnp.result_type(float)


def _init_state(params, damping: float) -> GaussNewtonState:
    dtype = _float_dtype(params)
    z = jnp.zeros((), dtype)
    return GaussNewtonState(jnp.zeros((), jnp.int32), jnp.asarray(damping, dtype), z, z, z, z,
                            jnp.asarray(False), jnp.zeros((), jnp.int32))


def by_layer(params: PyTree[Array]) -> PyTree[str]:
    """Label each leaf with the path of its parent node, so that e.g. an ``eqx.nn.Linear``'s
    weight and bias form one block (``".layers[0]"``); pass as ``groups=by_layer``."""
    return jax.tree_util.tree_map_with_path(lambda path, _: jax.tree_util.keystr(path[:-1]),
                                            params)


def _blocks(params, groups: Groups) -> list[list[int]]:
    """Leaf indices of each block, in order of first appearance (static: structure only)."""
    leaves = jax.tree.leaves(params)
    if groups is None:
        return [[i] for i in range(len(leaves))]
    labels = groups(params) if callable(groups) else groups
    labels = jax.tree.leaves(labels)
    if len(labels) != len(leaves):
        raise ValueError(f"groups gives {len(labels)} labels for {len(leaves)} parameter leaves")
    order: dict[Hashable, list[int]] = {}
    for i, label in enumerate(labels):
        order.setdefault(label, []).append(i)
    return list(order.values())


def _cg_solve(matvec, rhs, structure, cg: lx.CG):
    # lineax tests convergence per element against atol + rtol |b_i|: with atol = 0 a zero
    # entry of b divides by zero, NaN passes as converged and CG stops after one step. So
    # atol is floored at rtol times the root-mean-square of b (a norm-wise relative test).
    size = sum(x.size for x in jax.tree.leaves(rhs))
    rms = jnp.sqrt(tree_vdot(rhs, rhs) / size)
    cg = lx.CG(rtol=cg.rtol, atol=cg.atol + cg.rtol * rms, max_steps=cg.max_steps)
    op = lx.FunctionLinearOperator(matvec, structure,
                                   tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
    sol = lx.linear_solve(op, rhs, cg, throw=False)
    return sol.value, jnp.asarray(sol.stats["num_steps"], jnp.int32)


def _block_operators(model_fn: Callable, ggn: GGN, params, blocks):
    """``v_b -> G_bb v_b`` for each block ``b``: ``G_bb = J_b^T H_loss J_b`` with ``J_b`` the
    Jacobian of the outputs with respect to the block's leaves only.

    Each block linearises ``model_fn`` as a function of its own leaves (the others closed
    over as constants), so the block's JVP and transpose propagate tangents only through
    the operations that depend on the block (for an MLP's layer ``l`` of ``L``: layers
    ``l..L`` forward, ``L..l`` back) instead of a full product with zeros in the other
    leaves. The primal forward pass runs once per block per update, not per CG step.
    (Under ``jit``, XLA's simplifier already folded most of the zero-padded product away:
    ``python -m benchmarks.gn_memory`` measured the same per-CG-step time for both on
    CPU; here the restriction holds by construction, without relying on it.)
    """
    leaves, treedef = jax.tree.flatten(params)
    ops = []
    for idx in blocks:

        def model_b(block, idx=idx):
            full = list(leaves)
            for j, i in enumerate(idx):
                full[i] = block[j]
            return model_fn(jax.tree.unflatten(treedef, full))

        primal = tuple(leaves[i] for i in idx)
        _, jvp_b = jax.linearize(model_b, primal)
        transpose_b = jax.linear_transpose(jvp_b, primal)

        def mv(vb, jvp_b=jvp_b, transpose_b=transpose_b):
            (out,) = transpose_b(ggn.loss_hvp(jvp_b(vb)))
            return out

        ops.append(mv)
    return ops


def _gn_direction(ggn: GGN, g, params, damping, blocks, cg: lx.CG, model_fn: Callable):
    """Solve ``(G + damping I) d = -g``, on the whole of ``G`` or on its diagonal blocks
    (each block's product restricted to the block, see :func:`_block_operators`)."""
    rhs = jax.tree.map(jnp.negative, g)
    if blocks is None:
        structure = jax.eval_shape(lambda: params)
        return _cg_solve(lambda v: tree_axpy(damping, v, ggn.matvec(v)), rhs, structure, cg)
    leaves, treedef = jax.tree.flatten(params)
    rhs_leaves = jax.tree.leaves(rhs)
    d_leaves = [None] * len(leaves)
    steps = jnp.zeros((), jnp.int32)
    for idx, op in zip(blocks, _block_operators(model_fn, ggn, params, blocks), strict=True):

        def block_mv(vb, op=op):
            return tuple(tree_axpy(damping, vb, op(vb)))

        structure = tuple(jax.ShapeDtypeStruct(leaves[i].shape, leaves[i].dtype) for i in idx)
        db, nb = _cg_solve(block_mv, tuple(rhs_leaves[i] for i in idx), structure, cg)
        for j, i in enumerate(idx):
            d_leaves[i] = db[j]
        steps = steps + nb
    return jax.tree.unflatten(treedef, d_leaves), steps


def gauss_newton_direction(
    model_fn: Callable,
    loss_fn: Callable,
    params: PyTree[Array],
    grads: PyTree[Array],
    damping: float | Float[Array, ""],
    *,
    mode: Literal["full", "layerwise"] = "full",
    groups: Groups = None,
    cg_max_steps: int = 50,
    cg_rtol: float = 1e-6,
    cg_atol: float = 0.0,
) -> tuple[PyTree[Array], Int[Array, ""]]:
    """The damped GN direction ``d = -(G + damping I)^{-1} grads`` and the CG steps taken,
    as :func:`gauss_newton` computes it (``mode="layerwise"``: ``G``'s diagonal blocks)."""
    ggn = linearize_ggn(model_fn, loss_fn, params)
    blocks = None if mode == "full" else _blocks(params, groups)
    cg = lx.CG(rtol=cg_rtol, atol=cg_atol, max_steps=cg_max_steps)
    return _gn_direction(ggn, grads, params, jnp.asarray(damping), blocks, cg, model_fn)


def _finish_step(state, params, direction, value0, slope, predicted_fn, value_fn, *,
                 line_search, max_backtracks, armijo, accept_threshold, new_damping):
    """Line search along ``direction``, the reduction ratio, the accept/reject decision."""
    alpha, f_new, _, _ = backtracking(value_fn, params, direction, value0, slope,
                                      max_backtracks=max_backtracks if line_search else 0,
                                      armijo=armijo)
    dtype = state.damping.dtype
    actual = (value0 - f_new).astype(dtype)
    predicted = jnp.asarray(predicted_fn(alpha), dtype)
    rho = jnp.where(predicted > 0, actual / jnp.where(predicted > 0, predicted, 1.0), -jnp.inf)
    rho = jnp.where(jnp.isfinite(actual), rho, -jnp.inf).astype(dtype)
    accepted = jnp.isfinite(f_new) & (actual > 0) & (rho > accept_threshold)
    # where, not a zero scale: a rejected direction may hold NaN, and 0 * NaN = NaN
    updates = jax.tree.map(lambda x: jnp.where(accepted, alpha * x, 0.0).astype(x.dtype),
                           direction)
    return updates, state._replace(count=state.count + 1, damping=new_damping(rho), rho=rho,
                                   predicted=predicted, actual=actual,
                                   step_size=alpha.astype(dtype), accepted=accepted)


def gauss_newton(
    damping: float = 1e-3,
    *,
    mode: Literal["full", "layerwise"] = "full",
    groups: Groups = None,
    adaptive_damping: bool = True,
    decrease: float = 1.0 / 3.0,
    increase: float = 3.0,
    min_damping: float = 1e-12,
    max_damping: float = 1e12,
    accept_threshold: float = 0.0,
    line_search: bool = True,
    max_backtracks: int = 10,
    armijo: float = 1e-4,
    cg_max_steps: int = 50,
    cg_rtol: float = 1e-6,
    cg_atol: float = 0.0,
) -> optax.GradientTransformationExtraArgs:
    """Generalised Gauss-Newton with Levenberg-Marquardt damping and a backtracking line search.

    Per update (extra args: ``model_fn`` and ``loss_fn``, see :mod:`invphys.optim`):

    1. linearise ``model_fn`` at ``params``; ``G v = J^T H_loss J v`` matrix-free;
    2. solve ``(G + lambda I) d = -g`` with lineax CG (at most ``cg_max_steps`` steps;
       ``g`` is the incoming update, i.e. the gradient when this is first in a chain).
       ``mode="layerwise"`` keeps only ``G``'s diagonal blocks, one per leaf or per label
       of ``groups`` (a pytree of labels, or a function of ``params`` giving one, e.g.
       :func:`by_layer`), and solves each block on its own: no cross-layer curvature;
    3. backtrack ``alpha`` in ``1, 1/2, ...`` for Armijo decrease (``line_search``);
    4. ``rho`` = actual / predicted reduction, with ``m(alpha d) = alpha g.d +
       alpha^2/2 d.G d`` the (undamped) GN model; the update is ``alpha d`` if the loss
       decreased and ``rho > accept_threshold``, else zero (a rejected step);
    5. LM: ``lambda`` shrinks by ``decrease`` when ``rho > 0.75`` and grows by ``increase``
       when ``rho < 0.25`` or the step was rejected (``adaptive_damping``).

    The actual reduction re-evaluates the loss on the same batch (``value_fn`` if given).
    Nothing of size ``P x P`` or ``outputs x P`` is formed.
    """
    if mode not in ("full", "layerwise"):
        raise ValueError(f"mode must be 'full' or 'layerwise', got {mode!r}")
    if mode == "full" and groups is not None:
        raise ValueError("groups applies to mode='layerwise' only")
    cg = lx.CG(rtol=cg_rtol, atol=cg_atol, max_steps=cg_max_steps)

    def new_damping_fn(old):
        if not adaptive_damping:
            return lambda rho: old
        return lambda rho: lm_damping_update(old, rho, decrease=decrease, increase=increase,
                                             min_damping=min_damping, max_damping=max_damping)

    def init(params):
        return _init_state(params, damping)

    def update(updates, state, params=None, **extra):
        if params is None:
            raise ValueError("gauss_newton needs params in update(updates, state, params)")
        model_fn, loss_fn = require_model_and_loss(extra, "gauss_newton")
        value_fn = extra.get("value_fn") or value_fn_of(model_fn, loss_fn)
        ggn = linearize_ggn(model_fn, loss_fn, params)
        g = updates
        blocks = None if mode == "full" else _blocks(params, groups)
        lam = state.damping
        d, steps = _gn_direction(ggn, g, params, lam, blocks, cg, model_fn)
        gd = tree_vdot(g, d)
        dgd = tree_vdot(d, ggn.matvec(d))
        out, new_state = _finish_step(
            state, params, d, ggn.value, gd, lambda a: -(a * gd + 0.5 * a * a * dgd), value_fn,
            line_search=line_search, max_backtracks=max_backtracks, armijo=armijo,
            accept_threshold=accept_threshold, new_damping=new_damping_fn(lam))
        return out, new_state._replace(solver_steps=steps)

    return optax.GradientTransformationExtraArgs(init, update)


def gauss_newton_prox_linear(
    inner: optax.GradientTransformation,
    inner_steps: int,
    *,
    prox: float = 0.0,
    line_search: bool = True,
    max_backtracks: int = 10,
    armijo: float = 1e-4,
) -> optax.GradientTransformationExtraArgs:
    """Prox-linear Gauss-Newton, as in the full/layer-wise GN paper (Abreu et al. 2025).

    Per update: linearise the model at ``theta_0 = params``, run ``inner_steps`` steps of
    ``inner`` (any optax optimizer, fresh state each outer step, under ``lax.scan``) from
    ``delta = 0`` on the linearised objective ``loss_fn(f(theta_0) + J delta) +
    prox/2 |delta|^2`` (the loss itself, not its quadratic model; ``J delta`` is one JVP),
    then line-search along ``d = delta_N`` (= theta_inner - theta_0) on the true loss.
    The step is accepted only if the loss decreased. ``rho`` compares the actual
    reduction with the linearised model's reduction at ``alpha d``; ``damping`` holds ``prox``.
    Extra args to ``inner`` (value, grad, value_fn) refer to the linearised objective.
    """
    inner = optax.with_extra_args_support(inner)

    def init(params):
        return _init_state(params, prox)

    def update(updates, state, params=None, **extra):
        del updates
        if params is None:
            raise ValueError("gauss_newton_prox_linear needs params in update(..., params)")
        model_fn, loss_fn = require_model_and_loss(extra, "gauss_newton_prox_linear")
        value_fn = extra.get("value_fn") or value_fn_of(model_fn, loss_fn)
        ggn = linearize_ggn(model_fn, loss_fn, params)

        def lin_loss(delta):
            return loss_fn(jax.tree.map(jnp.add, ggn.outputs, ggn.jvp(delta)))

        def objective(delta):
            return lin_loss(delta) + 0.5 * prox * tree_vdot(delta, delta)

        def step(carry, _):
            delta, inner_state = carry
            val, grd = jax.value_and_grad(objective)(delta)
            upd, inner_state = inner.update(grd, inner_state, delta, value=val, grad=grd,
                                            value_fn=objective)
            return (optax.apply_updates(delta, upd), inner_state), None

        delta0 = jax.tree.map(jnp.zeros_like, params)
        (d, _), _ = jax.lax.scan(step, (delta0, inner.init(delta0)), None, length=inner_steps)
        g = ggn.gradient()
        out, new_state = _finish_step(
            state, params, d, ggn.value, tree_vdot(g, d),
            lambda a: ggn.value - lin_loss(jax.tree.map(lambda x: a * x, d)), value_fn,
            line_search=line_search, max_backtracks=max_backtracks, armijo=armijo,
            accept_threshold=-jnp.inf, new_damping=lambda rho: state.damping)
        return out, new_state._replace(solver_steps=jnp.asarray(inner_steps, jnp.int32))

    return optax.GradientTransformationExtraArgs(init, update)
