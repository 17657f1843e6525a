"""Shared pieces of the Gauss-Newton benchmarks (the ``full-gn`` and ``sgn`` papers).

* small functional models (:func:`init_mlp`, :func:`mlp_apply`: a list of ``{"w", "b"}``
  layers, so :func:`invphys.optim.by_layer` gives one block per layer and Muon sees
  2-D weight matrices) and their losses;
* :class:`Method`: an optimizer as a function of its learning rate, so one compiled
  loop serves a whole learning-rate grid (the rate is a traced argument);
* :class:`Bench`: one problem (model, loss, training data, batch size) and two loops
  over any optimizer of the extra-args contract (:mod:`invphys.optim`):
  :meth:`Bench.curve` records the full training loss after every outer iteration and
  stops at a target; :meth:`Bench.timed` reruns exactly ``n`` iterations without any
  recording, compiled ahead, so wall-clock excludes compilation and bookkeeping;
* :func:`iters_to_target`, :func:`peak_bytes` (XLA's memory analysis of a compiled step).

Mini-batches are drawn from the seed and the iteration number alone, so the curve
and the timed rerun follow the same trajectory.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray, PyTree, Scalar

from .. import optim
from .timing import compile_ahead, time_call

Params = list[dict[str, Array]]


# --------------------------------------------------------------------------- models
def init_mlp(key: PRNGKeyArray, sizes: Sequence[int], dtype=None) -> Params:
    """LeCun-normal weights (``w``: in x out) and zero biases, one dict per layer."""
    dtype = dtype or jnp.result_type(float)
    keys = jax.random.split(key, len(sizes) - 1)
    return [{"w": jax.random.normal(k, (a, b), dtype) / math.sqrt(a), "b": jnp.zeros(b, dtype)}
            for k, a, b in zip(keys, sizes[:-1], sizes[1:], strict=True)]


def mlp_apply(params: Params, x: Float[Array, "n d"], act: Callable = jnp.tanh) -> Array:
    """The MLP on a batch: ``act`` between layers, a linear last layer."""
    for layer in params[:-1]:
        x = act(x @ layer["w"] + layer["b"])
    return x @ params[-1]["w"] + params[-1]["b"]


def num_params(params: PyTree[Array]) -> int:
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(params)))


def cross_entropy(logits: Float[Array, "n k"], labels: Int[Array, " n"]) -> Scalar:
    """Mean softmax cross-entropy (convex in the logits: a PSD Gauss-Newton matrix)."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def half_mse(out: Array, y: Array) -> Scalar:
    """``1/2`` the mean over samples of the squared error (summed over outputs)."""
    return 0.5 * jnp.mean(jnp.sum(jnp.reshape(out - y, (out.shape[0], -1)) ** 2, axis=1))


# ------------------------------------------------------------------------- methods
class Method(NamedTuple):
    """An optimizer as a function of its learning rate; ``tuned``: swept over the grid
    (the Gauss-Newton methods set their own step: damping and line search)."""

    name: str
    make: Callable[[Scalar], optax.GradientTransformationExtraArgs]
    tuned: bool = True


def with_obj_fn(opt: optax.GradientTransformationExtraArgs):
    """``opt`` called with the contract's ``value_fn`` as optax.contrib's ``obj_fn``
    (Sophia's Hutchinson estimator needs it under that name)."""

    def update(updates, state, params=None, **extra):
        return opt.update(updates, state, params, obj_fn=extra["value_fn"])

    return optax.GradientTransformationExtraArgs(opt.init, update)


def muon_hidden_weights(params: PyTree[Array]) -> PyTree[Any]:
    """Muon's documented scope (its author's usage notes; Keras's and MLX's docs): the 2-D
    weights of *hidden* layers. The input and output layers (an MLP's first and last
    ``w``, a transformer's embeddings and head), biases and gains get ``None``: optax's
    Muon sends those to its AdamW branch. (optax's own default orthogonalises every 2-D
    leaf, the input and output layers included.) Params: the MLP's list of ``{"w",
    "b"}`` layers, or a dict whose hidden layers sit under ``"blocks"``."""
    from optax.contrib import MuonDimensionNumbers

    if isinstance(params, list):
        last = len(params) - 1
        return [{k: MuonDimensionNumbers() if k == "w" and 0 < i < last else None
                 for k in layer} for i, layer in enumerate(params)]

    def label(path, leaf):
        hidden = any(getattr(p, "key", None) == "blocks" for p in path)
        return MuonDimensionNumbers() if hidden and leaf.ndim == 2 else None

    return jax.tree_util.tree_map_with_path(label, params)


def first_order_methods() -> list[Method]:
    """optax AdamW, optax.contrib Muon twice: ``muon`` as its authors document it (the
    hidden layers' weights only, :func:`muon_hidden_weights`, AdamW on the rest at the
    same rate) and ``muon-all-2d`` as optax sets it up by default (every 2-D leaf), since
    neither is better on every problem; and Sophia; all at their documented defaults
    but the learning rate."""
    from optax import contrib

    return [
        Method("adamw", lambda lr: optax.with_extra_args_support(optax.adamw(lr))),
        Method("muon", lambda lr: optax.with_extra_args_support(
            contrib.muon(lr, muon_weight_dimension_numbers=muon_hidden_weights))),
        Method("muon-all-2d", lambda lr: optax.with_extra_args_support(contrib.muon(lr))),
        Method("sophia", lambda lr: with_obj_fn(contrib.sophia(lr))),
    ]


def gn_methods(cg_max_steps: int = 50, damping: float = 1e-3,
               cg_atol: float = 1e-12) -> list[Method]:
    """Full and layer-wise (one block per layer) Gauss-Newton of :mod:`invphys.optim`.

    ``cg_atol > 0``: lineax's CG tests convergence element by element (``|r_i| <= atol +
    rtol |b_i|``); with ``atol = 0`` a gradient entry that is exactly zero (a constant
    input pixel of digits, an unused parameter) makes the test 0/0 = NaN, read as
    converged, and CG stops after one step (a steepest-descent direction).
    """
    kw = dict(cg_max_steps=cg_max_steps, cg_atol=cg_atol)
    return [
        Method("gn-full", lambda _: optim.gauss_newton(damping, **kw), tuned=False),
        Method("gn-layerwise", lambda _: optim.gauss_newton(
            damping, mode="layerwise", groups=optim.by_layer, **kw), tuned=False),
    ]


# --------------------------------------------------------------------------- loops
@dataclasses.dataclass(eq=False)
class Bench:
    """A training problem: ``loss(apply(params, x), y)`` on ``(x, y)`` with mini-batches
    of ``batch`` samples (``batch >= n``: the full batch every iteration)."""

    apply: Callable[[PyTree[Array], Array], Array]
    loss: Callable[[Array, Array], Scalar]
    x: Array
    y: Array
    batch: int
    seed: int = 0
    _cache: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def full(self) -> bool:
        return self.batch >= self.n

    def full_loss(self, params, data=None) -> Scalar:
        x, y = (self.x, self.y) if data is None else data
        return self.loss(self.apply(params, x), y)

    def _step(self, make, lr, carry, i, data):
        # the data are a traced argument: as closure constants, XLA constant-folds
        # products with them and compiles for many seconds
        params, state = carry
        x, y = data
        key = jax.random.fold_in(jax.random.key(self.seed), i)
        if self.full:
            xb, yb = x, y
        else:
            idx = jax.random.permutation(key, self.n)[: self.batch]
            xb, yb = x[idx], y[idx]
        model_fn = lambda p: self.apply(p, xb)
        loss_fn = lambda out: self.loss(out, yb)
        _, grads, kw = optim.extra_args(model_fn, loss_fn, params, jax.random.fold_in(key, 1))
        updates, state = make(lr).update(grads, state, params, **kw)
        return optax.apply_updates(params, updates), state

    def _chunk(self, method: Method, length: int):
        """``length`` outer iterations from iteration ``first`` as one scan, returning the
        carry and the full training loss after each (unjitted: callers jit or vmap it)."""
        def chunk(carry, lr, first, data):
            def body(c, i):
                c = self._step(method.make, lr, c, i, data)
                return c, self.full_loss(c[0], data)

            return jax.lax.scan(body, carry, first + jnp.arange(length))

        return chunk

    def _chunk_fn(self, method: Method, length: int):
        k = (method, "chunk", length)
        if k not in self._cache:
            self._cache[k] = (jax.jit(self._chunk(method, length)),
                              jax.jit(lambda p, lr: method.make(lr).init(p)))
        return self._cache[k]

    def curve(self, method: Method, params0, lr: float = 0.0, *, steps: int,
              target: float | None = None, chunk: int = 25) -> np.ndarray:
        """The full training loss before the first and after every outer iteration
        (length ``<= steps + 1``): stops after the chunk in which it reaches ``target``
        or turns non-finite."""
        run, init = self._chunk_fn(method, chunk)
        lr = jnp.asarray(lr, jnp.result_type(float))
        carry = (params0, init(params0, lr))
        losses = [float(self.full_loss(params0))]
        for first in range(0, steps, chunk):
            carry, ls = run(carry, lr, jnp.asarray(first), (self.x, self.y))
            losses.extend(np.asarray(ls, float).tolist())
            last = losses[-1]
            if not np.isfinite(last) or (target is not None and min(losses) <= target):
                break
        return np.asarray(losses[: steps + 1], float)

    def paths(self, method: Method, params0, lrs: Sequence[float], *, steps: int, every: int):
        """``(losses, snapshots)`` for every rate of ``lrs`` at once (the loop ``vmap``-ped
        over the rate, one compilation): ``losses[j]`` the full training loss before and
        after every outer iteration of rate ``j`` (``steps + 1`` values), ``snapshots[k]``
        the parameters of every rate (a leading axis) every ``every`` iterations, the
        initial ones first."""
        k = (method, "paths", every)
        if k not in self._cache:
            chunk = self._chunk(method, every)
            init = lambda p, lr: (p, method.make(lr).init(p))
            self._cache[k] = (jax.jit(jax.vmap(chunk, in_axes=(0, 0, None, None))),
                              jax.jit(jax.vmap(init, in_axes=(None, 0))))
        run, init = self._cache[k]
        lr = jnp.asarray(list(lrs), jnp.result_type(float))
        carry = init(params0, lr)
        p0 = jax.tree.map(lambda a: jnp.broadcast_to(a, (len(lrs), *a.shape)), params0)
        losses, snaps = [np.full(len(lrs), float(self.full_loss(params0)))], [p0]
        for first in range(0, steps, every):
            carry, ls = run(carry, lr, jnp.asarray(first), (self.x, self.y))
            losses.append(np.asarray(ls, float))  # (rates, every)
            snaps.append(carry[0])
        return np.concatenate([losses[0][:, None]] + losses[1:], axis=1), snaps

    def timed(self, method: Method, params0, lr: float, n: int, *, repeats: int = 3,
              budget_s: float = 5.0) -> dict[str, float]:
        """Wall-clock of exactly ``n`` outer iterations (one compiled ``fori_loop``, the
        count a runtime argument): ``compile_s`` apart, ``run_s`` the best of up to
        ``repeats`` runs (fewer once they add up to ``budget_s``)."""
        k = (method, "timed")
        if k not in self._cache:
            def loop(p0, lr, count, data):
                carry = (p0, method.make(lr).init(p0))
                body = lambda i, c: self._step(method.make, lr, c, i, data)
                params, _ = jax.lax.fori_loop(0, count, body, carry)
                return self.full_loss(params, data)

            self._cache[k] = jax.jit(loop)
        args = (params0, jnp.asarray(lr, jnp.result_type(float)), jnp.asarray(n, jnp.int32),
                (self.x, self.y))
        t = time_call(self._cache[k], *args, repeats=repeats, budget_s=budget_s, aot=True,
                      warmup=False)
        return {"compile_s": t.compile_s, "run_s": t.run_s, "iters": int(n),
                "per_iter_ms": 1e3 * t.run_s / max(int(n), 1),
                "final_loss": float(t.output)}

    def step_memory(self, method: Method, params0, lr: float = 1e-3) -> dict[str, int]:
        """XLA's memory analysis of one compiled outer iteration (bytes)."""
        make = method.make

        def one(p, s, lr, data):
            return self._step(make, lr, (p, s), jnp.asarray(0), data)

        state = make(jnp.asarray(lr)).init(params0)
        return peak_bytes(one, params0, state, jnp.asarray(lr, jnp.result_type(float)),
                          (self.x, self.y))


def peak_bytes(fn: Callable, *args) -> dict[str, int]:
    """Arguments, outputs and temporaries of ``fn`` compiled for ``args`` (XLA's own
    accounting; ``peak`` is their sum, an upper bound on the live set)."""
    compiled, _ = compile_ahead(fn, *args)
    m = compiled.memory_analysis()
    if m is None:
        return {}
    out = {"argument": int(m.argument_size_in_bytes), "output": int(m.output_size_in_bytes),
           "temp": int(m.temp_size_in_bytes)}
    out["peak"] = out["argument"] + out["output"] + out["temp"]
    return out


def dense_gn_step(apply: Callable, loss: Callable, *, form_g: bool, damping: float = 1e-3,
                  cg_max_steps: int = 50) -> Callable:
    """``(params, x, y) -> params + d``: one damped GN step with the Jacobian materialised
    (the reference the matrix-free optimizers avoid, for memory comparisons).

    ``J`` (``outputs x P``, ``jax.jacrev``) and ``H_loss`` (``outputs x outputs``) are
    formed; ``form_g``: ``G = J^T H J + damping I`` (``P x P``) is formed and solved by
    Cholesky, else ``(G + damping I) d = -g`` by CG with ``G v = J^T (H (J v))``."""
    import jax.flatten_util
    import lineax as lx

    def step(p, x, y):
        w, unravel = jax.flatten_util.ravel_pytree(p)
        out = apply(p, x)
        loss_o = lambda o: loss(o.reshape(out.shape), y)
        jac = jax.jacrev(lambda v: apply(unravel(v), x).ravel())(w)
        hess = jax.hessian(loss_o)(out.ravel())
        g = jac.T @ jax.grad(loss_o)(out.ravel())
        if form_g:
            gmat = jac.T @ (hess @ jac) + damping * jnp.eye(w.size, dtype=w.dtype)
            d = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(gmat), -g)
        else:
            op = lx.FunctionLinearOperator(
                lambda v: jac.T @ (hess @ (jac @ v)) + damping * v, jax.eval_shape(lambda: g),
                tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
            d = lx.linear_solve(op, -g, lx.CG(rtol=1e-6, atol=1e-12, max_steps=cg_max_steps),
                                throw=False).value
        return unravel(w + d)

    return step


def single_threaded_blas():
    """A context in which the OpenBLAS behind numpy and behind JAX's CPU LAPACK calls
    (scipy's) runs one thread. Left to its own thread pool, OpenBLAS competes with
    XLA's for the cores: with 2 cores the sgn study's SVDs ran 10x slower. (Setting
    ``OPENBLAS_NUM_THREADS=1`` before numpy loads does the same.)"""
    import scipy.linalg  # noqa: F401  (loads scipy's OpenBLAS, so the limit reaches it)
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas")


# ------------------------------------------------------------------------ analysis
def iters_to_target(curve: ArrayLike | Sequence[float], target: float) -> int | None:
    """The first outer iteration ``k`` (``curve[k]``: the loss after ``k`` updates) with
    loss ``<= target``; None if never reached."""
    hits = np.flatnonzero(np.asarray(curve, float) <= target)
    return int(hits[0]) if hits.size else None


def sweep(bench: Bench, method: Method, params0, grid: Sequence[float], *, steps: int,
          target: float, log: Callable[[str], None] = print) -> dict[str, Any]:
    """``method`` over the learning-rate ``grid`` (once, for an untuned method): every
    rate's curve and iterations to ``target``, and the best rate (fewest iterations;
    the lowest final loss when none reaches it)."""
    rates = list(grid) if method.tuned else [0.0]
    runs = []
    for lr in rates:
        c = bench.curve(method, params0, lr, steps=steps, target=target)
        it = iters_to_target(c, target)
        runs.append({"lr": lr if method.tuned else None, "iters": it, "curve": c,
                     "final": float(c[-1]) if np.isfinite(c[-1]) else math.inf})
        log(f"  {method.name:<13} lr {lr:<8.3g} iters-to-target {it}  last loss {c[-1]:.3g}")

    def rank(r):
        return (0, r["iters"], 0.0) if r["iters"] is not None else (1, 0, r["final"])

    best = min(runs, key=rank)
    return {"runs": runs, "best": best}


def fmt(v: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for missing, ``g`` format for floats."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


__all__ = ["Bench", "Method", "cross_entropy", "dense_gn_step", "first_order_methods", "fmt",
           "gn_methods", "half_mse", "init_mlp", "iters_to_target", "mlp_apply", "num_params",
           "peak_bytes", "single_threaded_blas", "sweep", "with_obj_fn"]
