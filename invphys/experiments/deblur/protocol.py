"""The Deblur-2D fairness protocol: methods, rules, batched per-sample solves, the test
sets and the per-method rows (see :mod:`invphys.experiments.deblur` for the protocol)."""

from __future__ import annotations

import dataclasses
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ..._errors import InvphysError
from ..._problem import Problem
from ..._spec import Spec
from ...learn import predict, split_keys
from ...physics import deblur2d
from ...solve import Box, LevenbergMarquardt, ProjectedGradient, Rules, solve_one
from ..timing import compile_ahead, time_call
from . import regularised as reg

MISMATCH_RANGE = (2.0, 2.6)
EPS_REL = 0.3
MAX_ITER = 80
PAPER = {"DeceptronNet": {"x_rmse": 0.0637, "iterations_mean": 6},
         "LM": {"x_rmse": 0.0883, "iterations_mean": 69.25},
         "x-GD": {"x_rmse": 0.1271, "iterations_mean": 80}}
TARGET_X_RMSE = 0.064
#: Beyond the paper. x-GD on the sum objective 1/2 |r|^2 (eta = m: the step the
#: protocol's mean objective makes 1024 times smaller); LM stopped at the noise level
#: (RMSE(A(x) - y) <= tau x delta, delta from the noise model, :func:`.regularised.noise_level`);
#: Tikhonov / TV regularised LM with alpha by the discrepancy principle or the oracle.
XGD_SUM = "x-GD (sum objective)"
LM_NOISE = "LM (stop at noise)"
REG_MAX_ITER = 12
REG_CG_STEPS = 20


# --------------------------------------------------------------------------- methods
def baseline_methods() -> dict[str, Any]:
    """x-GD (eta = 1) and LM as Newton-CG (10 CG iterations, damping from 1e-2)."""
    return {"x-GD": ProjectedGradient(eta=1.0),
            "LM": LevenbergMarquardt(damping0=1e-2, solver="cg", cg_steps=10)}


def protocol_rules(max_iter: int = MAX_ITER) -> Rules:
    """Armijo backtracking (halving, 8 times, c = 1e-4), no relaxation, no stall stop,
    stop at eps (set per sample by :func:`make_batched_solver`) or ``max_iter``."""
    return Rules(alpha0=1.0, max_halvings=8, rho=1.0, armijo_c=1e-4, armijo="proposal",
                 max_iter=max_iter, stall_tol=0.0, stop_at_eps=True)


# --------------------------------------------------------------------------- solving
def starts(y: Float[Array, "N mm"]) -> Float[Array, "N nn"]:
    """The common start of every method, for a batch of flat observations."""
    return jax.vmap(deblur2d.start)(y)


@eqx.filter_jit
def _residual_rmse(op, x, y, sigma):
    r = jax.vmap(lambda xi, si, yi: deblur2d.true_forward(op, xi, si) - yi)(x, sigma, y)
    return jnp.sqrt(jnp.mean(r**2, axis=-1))


def residual_rmse(op: deblur2d.Deblur2D, x: Float[Array, "N nn"], y: Float[Array, "N mm"],
                  sigma: Float[Array, " N"]) -> np.ndarray:
    """Per-image RMSE(A_sigma(x) - y), in the inputs' dtype."""
    return np.asarray(_residual_rmse(op, x, y, sigma))


def make_batched_solver(problem: Problem, method, rules: Rules):
    """A jitted ``(sigma, eps, y, x0) -> Solution`` over a batch, one problem per sample.

    Each sample runs the shared protocol's loop on ``true_problem(problem, sigma_i)``
    with ``rules.eps = eps_i``; the batch is a ``vmap`` of that loop (a ``while_loop``
    that runs until every sample has stopped; stopped samples are frozen).
    """
    def one(sigma, eps, y, x0):
        p = deblur2d.true_problem(problem, sigma)
        r = eqx.tree_at(lambda r: r.eps, rules, eps)
        return solve_one(p.fn, p, method, r, y, x0)

    return jax.jit(jax.vmap(one))


def require_x64(dtype) -> None:
    """Raise unless ``dtype`` is available: float64 needs ``jax_enable_x64``, which only
    an entry point (the CLI, the tests, a script) may switch on."""
    if jnp.dtype(dtype) == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise InvphysError("the Deblur-2D baselines run in float64: switch "
                           "jax_enable_x64 on at your entry point (the invphys CLI does)")


class SolverBank:
    """The baselines' batched solvers, compiled once per (method, batch shape, dtype)
    ahead of time, so compilation is timed apart and shared by every test set and
    kernel choice (only sigma and eps change between them, and those are traced).
    ``bank(name, sigma, eps, y, x0)`` is a :class:`~invphys.experiments.timing.Timing`
    (``compile_s`` is 0 when the shape was compiled before).

    ``jitted``: the paper's two baselines (x-GD, LM); ``extra``: the variants beyond
    the paper (x-GD on the sum objective, same call signature) and the regularised
    LM solves ``bank(term, alpha, sigma, y_aug, x0)`` (term: "Tikhonov" or "TV", see
    :func:`make_regularised_solver`)."""

    def __init__(self, problem: Problem, max_iter: int = MAX_ITER,
                 reg_max_iter: int = REG_MAX_ITER):
        rules = protocol_rules(max_iter)
        self.jitted = {name: make_batched_solver(problem, m, rules)
                       for name, m in baseline_methods().items()}
        m = problem.fn.m ** 2
        self.extra = {XGD_SUM: make_batched_solver(problem, ProjectedGradient(eta=float(m)),
                                                   rules)}
        self.extra.update({term: make_regularised_solver(problem, term, reg_max_iter)
                           for term in reg.TERMS})
        self.compiled: dict[tuple, Any] = {}

    def __call__(self, name: str, *args):
        key = (name,) + tuple((a.shape, str(a.dtype)) for a in args)
        compile_s = 0.0
        if key not in self.compiled:
            fn = self.jitted[name] if name in self.jitted else self.extra[name]
            self.compiled[key], compile_s = compile_ahead(fn, *args)
        t = time_call(self.compiled[key], *args, repeats=1, warmup=False)
        return dataclasses.replace(t, compile_s=compile_s)


def regularised_rules(max_iter: int = REG_MAX_ITER) -> Rules:
    """The regularised solves: the protocol's search, no eps stop (the regularised
    problem is well posed: it runs to the solver's convergence test or ``max_iter``)."""
    return Rules(alpha0=1.0, max_halvings=8, rho=1.0, armijo_c=1e-4, armijo="proposal",
                 max_iter=max_iter, stall_tol=0.0, stop_at_eps=False)


def make_regularised_solver(problem: Problem, term: str, max_iter: int = REG_MAX_ITER):
    """A jitted ``(alpha, sigma, y_aug, x0) -> Solution`` over a batch: LM (Newton-CG,
    :data:`REG_CG_STEPS` CG iterations, damping from 1e-2) on the augmented residual
    ``[A_sigma(x) - y; sqrt(alpha) R(x)]`` of :mod:`.regularised`, in the problem's box.
    The public solver layer unchanged: only the forward map is augmented."""
    op, n = problem.fn, problem.fn.n
    fn_term = reg.TERMS[term]
    method = LevenbergMarquardt(damping0=1e-2, solver="cg", cg_steps=REG_CG_STEPS)
    rules = regularised_rules(max_iter)

    def one(alpha, sigma, y_aug, x0):
        fn = reg.augmented(op.with_sigma(sigma), fn_term, alpha, n)
        box = Box(lower=jnp.zeros_like(x0), upper=jnp.ones_like(x0))
        return solve_one(fn, box, method, rules, y_aug, x0)

    return jax.jit(jax.vmap(one))

# --------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class TestSet:
    """x ``(N, n*n)``, the true sigma ``(N,)`` and the noisy y ``(N, m*m)``."""

    name: str
    x: np.ndarray
    sigma: np.ndarray
    y: np.ndarray


def test_sets(spec: Spec, n_test: int, mismatch: bool = True) -> list[TestSet]:
    """The spec's test split (the first ``n_test`` images; the training module's key) and,
    with ``mismatch``, as many images with sigma ~ U(2.0, 2.6) (their own key)."""
    problem = deblur2d.build(spec)
    k_test = split_keys(spec["data"]["seed"])[2]
    x, s, _, y = deblur2d.draw(problem, k_test, n_test)
    sets = [TestSet("test", np.asarray(x), np.asarray(s), np.asarray(y))]
    if mismatch:
        lo, hi = MISMATCH_RANGE
        sampler = dataclasses.replace(problem.sampler, sigma_min=lo, sigma_max=hi)
        k_x, k_n = jax.random.split(jax.random.fold_in(k_test, 1))
        xm, sm = sampler.pairs(k_x, n_test)
        _, ym = deblur2d.observe_true(problem.fn, problem.noise, k_n, xm, sm)
        sets.append(TestSet("mismatch", np.asarray(xm), np.asarray(sm), np.asarray(ym)))
    return sets



# --------------------------------------------------------------------------- model
def run_net(model, y: np.ndarray, chunk: int = 50) -> tuple[np.ndarray, float, float]:
    """The network's reconstructions, compile time and run wall time (seconds): one
    chunk compiles (the first call minus a warm one), then the whole batch is timed."""
    size = min(chunk, y.shape[0])
    warm = time_call(lambda: predict(model, y[:size], chunk=chunk), repeats=1)
    t = time_call(lambda: predict(model, y, chunk=chunk), repeats=1, warmup=False)
    return t.output, warm.compile_s, t.run_s


# --------------------------------------------------------------------------- runner
def _row(x_hat, ts: TestSet, op, res_dtype, *, iterations, reached, compile_s, run_s,
         **extra) -> dict[str, Any]:
    x64 = np.asarray(x_hat, np.float64)
    per = np.sqrt(np.mean((x64 - ts.x) ** 2, axis=-1))
    sig = jnp.asarray(ts.sigma, res_dtype)
    r0 = residual_rmse(op, jnp.asarray(starts(jnp.asarray(ts.y)), res_dtype),
                       jnp.asarray(ts.y, res_dtype), sig)
    r = residual_rmse(op, jnp.asarray(x_hat, res_dtype), jnp.asarray(ts.y, res_dtype), sig)
    n = ts.x.shape[0]
    iterations = np.asarray(iterations, float)
    return {
        "n": n,
        "x_rmse": float(per.mean()), "x_rmse_std": float(per.std()),
        "residual_rmse": float(np.mean(r)),
        "residual_ratio": float(np.mean(r / r0)),
        "iterations_mean": float(iterations.mean()),
        "reached_fraction": float(np.mean(reached)),
        "ms_per_image": float(run_s / n * 1e3),
        "compile_s": float(compile_s),
        **extra,
    }


def evaluate_baselines(bank: SolverBank, problem: Problem, ts: TestSet, *, kernel: str,
                       dtype=jnp.float64) -> tuple[dict[str, dict], dict[str, Any]]:
    """x-GD and LM on one test set; ``kernel="true"`` (per-sample sigma) or ``"nominal"``.

    Returns (rows, solutions): rows as in the tables, solutions (name -> Solution) for
    the figure and the tests. The stop threshold is 0.3 x the start's residual under
    the kernel the method is given. ``dtype``: float64 (the solver layer's precision;
    in float32 the matrix-free LM takes a zero step and reports convergence at once).
    """
    op = problem.fn
    y = jnp.asarray(ts.y, dtype)
    x0 = starts(y)
    sig_true = jnp.asarray(ts.sigma, dtype)
    sig = sig_true if kernel == "true" else jnp.full_like(sig_true, float(op.sigma))
    eps = jnp.asarray(EPS_REL * residual_rmse(op, x0, y, sig), dtype)
    rows, sols = {}, {}
    require_x64(dtype)
    for name in bank.jitted:
        t = bank(name, sig, eps, y, x0)
        sol = t.output
        rows[name] = _row(sol.x, ts, op, dtype, iterations=np.asarray(sol.steps),
                          reached=np.asarray(sol.converged), compile_s=t.compile_s,
                          run_s=t.run_s, kernel=kernel, dtype=jnp.dtype(dtype).name,
                          accepted_fraction=float(np.mean(
                              np.asarray(sol.stats["accepted"])
                              / np.maximum(np.asarray(sol.steps), 1))))
        sols[name] = sol
    return rows, sols


def baseline_rows(bank: SolverBank, problem: Problem, ts: TestSet, *, dtype=jnp.float64,
                  log=None, extended: bool = False
                  ) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """x-GD and LM with the true and with the nominal kernel on one test set (and, with
    ``extended``, :func:`extended_rows`). Returns (rows, reconstructions with the true
    kernel, for the figure)."""
    say = log or (lambda s: None)
    rows: dict[str, dict] = {}
    recon: dict[str, np.ndarray] = {}
    for kernel in ("true", "nominal"):
        b_rows, sols = evaluate_baselines(bank, problem, ts, kernel=kernel, dtype=dtype)
        for name, row in b_rows.items():
            key = name if kernel == "true" else f"{name} (nominal kernel)"
            rows[key] = row
            if kernel == "true":
                recon[name] = np.asarray(sols[name].x)
            say(f"  {ts.name}: {key} x-RMSE {row['x_rmse']:.4f}, "
                f"{row['iterations_mean']:.1f} it, {row['ms_per_image']:.1f} ms/image")
    if extended:
        e_rows, e_recon = extended_rows(bank, problem, ts, dtype=dtype, log=log)
        rows.update(e_rows)
        recon.update(e_recon)
    return rows, recon


def regularised_name(term: str, choice: str) -> str:
    """The row name of a regularised baseline: ``"TV-LM (discrepancy alpha)"``."""
    return f"{term}-LM ({choice} alpha)"


def extended_rows(bank: SolverBank, problem: Problem, ts: TestSet, *, dtype=jnp.float64,
                  tau: float = reg.TAU, alphas: dict[str, tuple] | None = None,
                  log=None) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The baselines beyond the paper, all with the TRUE kernel, on one test set:

    * ``x-GD (sum objective)``: x-GD with eta = m (the protocol otherwise);
    * ``LM (stop at noise)``: the protocol's LM stopped at RMSE(A(x) - y) <= tau delta
      (delta: the noise model's level at y, :func:`.regularised.noise_level`; its
      ``reached_fraction`` is, like every row's, the 0.3 rule's, ``met_own_stop`` its own);
    * Tikhonov / TV regularised LM (:func:`make_regularised_solver`) over the alpha grid
      ``alphas[term]``, alpha per image by the discrepancy principle (final residual
      closest to tau delta) and, separately, by the oracle (best x-RMSE: uses the truth).
      Their time per image is the whole grid's; ``iterations`` those of the chosen alpha
      (``grid_iterations``: summed over the grid).

    Returns (rows, reconstructions)."""
    say = log or (lambda s: None)
    require_x64(dtype)
    alphas = alphas or reg.ALPHAS
    op = problem.fn
    y = jnp.asarray(ts.y, dtype)
    x0 = starts(y)
    sig = jnp.asarray(ts.sigma, dtype)
    r0 = residual_rmse(op, x0, y, sig)
    noise = problem.noise
    delta = reg.noise_level(ts.y, noise.scale, getattr(noise, "additive", 0.0))
    kw = dict(kernel="true", dtype=jnp.dtype(dtype).name)
    rows, recon = {}, {}

    def add(name, x, t, steps, reached, **extra):
        rows[name] = _row(x, ts, op, dtype, iterations=steps, reached=reached,
                          compile_s=t.compile_s, run_s=t.run_s, **kw, **extra)
        recon[name] = np.asarray(x)
        r = rows[name]
        say(f"  {ts.name}: {name} x-RMSE {r['x_rmse']:.4f}, residual/start "
            f"{r['residual_ratio']:.3f}, {r['iterations_mean']:.1f} it, "
            f"{r['ms_per_image']:.1f} ms/image")

    t = bank(XGD_SUM, sig, jnp.asarray(EPS_REL * r0, dtype), y, x0)
    add(XGD_SUM, t.output.x, t, np.asarray(t.output.steps), np.asarray(t.output.converged))
    t = bank("LM", sig, jnp.asarray(tau * delta, dtype), y, x0)
    add(LM_NOISE, t.output.x, t, np.asarray(t.output.steps),
        rows_reached(op, t.output.x, ts, dtype), tau=tau, noise_level=float(np.mean(delta)),
        met_own_stop=float(np.mean(np.asarray(t.output.converged))))
    N = ts.x.shape[0]
    for term, grid in alphas.items():
        A = len(grid)
        k = reg.TERMS[term](x0[0], op.n).size
        y_aug = jax.vmap(lambda yi, k=k: reg.augmented_target(yi, k))(y)
        args = (jnp.repeat(jnp.asarray(grid, dtype), N), jnp.tile(sig, A),
                jnp.tile(y_aug, (A, 1)), jnp.tile(x0, (A, 1)))
        t = bank(term, *args)
        X = np.asarray(t.output.x).reshape(A, N, -1)
        steps = np.asarray(t.output.steps).reshape(A, N).T  # (N, A)
        x_rmse = np.sqrt(np.mean((X - ts.x[None]) ** 2, axis=-1)).T
        res = np.stack([residual_rmse(op, jnp.asarray(X[a], dtype), y, sig)
                        for a in range(A)], axis=1)
        picks = {"discrepancy": reg.discrepancy_choice(res, tau * delta),
                 "oracle": reg.oracle_choice(x_rmse)}
        for choice, idx in picks.items():
            x = X[idx, np.arange(N)]
            chosen = np.asarray(grid)[idx]
            add(regularised_name(term, choice), x, t, steps[np.arange(N), idx],
                rows_reached(op, x, ts, dtype), alpha_median=float(np.median(chosen)),
                alpha_grid=[float(a) for a in grid],
                alpha_counts=[int(np.sum(idx == a)) for a in range(A)],
                grid_iterations=float(steps.sum(axis=1).mean()))
    return rows, recon


def subset(ts: TestSet, k: int | None) -> TestSet:
    """The first ``k`` images of a test set (all of them for None)."""
    if k is None or k >= ts.x.shape[0]:
        return ts
    return TestSet(ts.name, ts.x[:k], ts.sigma[:k], ts.y[:k])


def evaluate_set(bank: SolverBank | None, problem: Problem, model, ts: TestSet, *,
                 dtype=jnp.float64, n_baseline: int | None = None, baselines=None,
                 log=None, extended: bool = False) -> tuple[dict[str, dict], dict]:
    """Every method on one test set: the start, DeceptronNet (in its own dtype), and
    x-GD / LM (in ``dtype``) with the true and with the nominal kernel. Returns (rows,
    reconstructions for the figure). Residuals are evaluated in ``dtype``.

    ``n_baseline``: run the baselines on the first ``n_baseline`` images only (CPU
    time); the network then also gets a row on that subset, for a like-for-like
    comparison. ``baselines``: their (rows, reconstructions) from an earlier run of
    :func:`baseline_rows` on that subset (they do not depend on the network)."""
    say = log or (lambda s: None)
    op = problem.fn
    y = jnp.asarray(ts.y, dtype)
    x0 = np.asarray(starts(y))
    rows: dict[str, dict] = {}
    recon: dict[str, np.ndarray] = {}
    rows["start"] = _row(x0, ts, op, dtype, iterations=np.zeros(len(x0)),
                         reached=np.zeros(len(x0), bool), compile_s=0.0, run_s=0.0,
                         kernel="-", dtype=jnp.dtype(dtype).name)
    x_net, c_s, r_s = run_net(model, np.asarray(ts.y))
    steps = model.n_steps
    net_dtype = jnp.dtype(model.gains.dtype).name
    rows["DeceptronNet"] = _row(x_net, ts, op, dtype, iterations=np.full(len(x0), steps),
                                reached=rows_reached(op, x_net, ts, dtype), compile_s=c_s,
                                run_s=r_s, kernel="nominal", dtype=net_dtype)
    recon["DeceptronNet"] = x_net
    say(f"  {ts.name}: DeceptronNet x-RMSE {rows['DeceptronNet']['x_rmse']:.4f}")
    sub = subset(ts, n_baseline)
    k = sub.x.shape[0]
    if k < len(x0):
        row = _row(x_net[:k], sub, op, dtype, iterations=np.full(k, steps),
                   reached=rows_reached(op, x_net[:k], sub, dtype), compile_s=c_s,
                   run_s=r_s * k / len(x0), kernel="nominal", dtype=net_dtype)
        rows[f"DeceptronNet [first {k}]"] = row
        say(f"  {ts.name}: DeceptronNet [first {k}] x-RMSE {row['x_rmse']:.4f}")
    if baselines is None:
        baselines = baseline_rows(bank, problem, sub, dtype=dtype, log=log,
                                  extended=extended)
    b_rows, b_recon = baselines
    rows.update(b_rows)
    recon.update(b_recon)
    return rows, recon


def rows_reached(op, x_hat, ts: TestSet, dtype) -> np.ndarray:
    """Whether each reconstruction meets the baselines' stop test (true kernel)."""
    y = jnp.asarray(ts.y, dtype)
    sig = jnp.asarray(ts.sigma, dtype)
    r0 = residual_rmse(op, jnp.asarray(starts(y), dtype), y, sig)
    r = residual_rmse(op, jnp.asarray(x_hat, dtype), y, sig)
    return r <= EPS_REL * r0
