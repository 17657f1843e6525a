"""The solver layer: protocol invariants, exact-step formulas, batching, bounds (KKT)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from hypothesis import given, settings
from hypothesis import strategies as st
from problem_table import (
    FAST_PROBLEMS,
    PROBLEMS,
    box_linear_lsq,
    kkt_holds,
    problem_entry,
)
from problem_table import (
    METHODS as METHOD_TABLE,
)

import invphys
from invphys import DIPG, GaussNewton, Rules
from invphys.certify import MGH_BOUNDED, get_mgh


def linear_problem(seed, m=12, n=5, bounded=False):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    A = jax.random.normal(k1, (m, n))
    x_true = jax.random.normal(k2, (n,))
    lo, hi = (-0.5 * jnp.ones(n), 0.5 * jnp.ones(n)) if bounded else (None, None)
    p = invphys.Problem(forward=lambda x: A @ x, lower=lo, upper=hi, x_size=n)
    y = A @ x_true + 0.1 * jax.random.normal(k3, (m,))
    return p, A, y


METHODS = ["pg", "gn", "lm"]


# ------------------------------------------------------------ exact steps
def test_gn_lands_in_one_step_on_linear_full_rank():
    p, A, y = linear_problem(0)
    x_ls = np.linalg.lstsq(np.asarray(A), np.asarray(y), rcond=None)[0]
    s = invphys.solve(p, y, jnp.zeros(5), method=GaussNewton(damping=1e-13, cg_steps=5),
                      rules=Rules(rho=1.0, max_iter=1))
    np.testing.assert_allclose(s.x, x_ls, atol=1e-9)


def test_dipg_exact_inverse_lands_in_one_step():
    p, A, y = linear_problem(1)
    pinv = jnp.linalg.pinv(A)
    s = invphys.solve(p, y, jnp.zeros(5), method=DIPG(inverse=lambda z: pinv @ z),
                      rules=Rules(rho=1.0, max_iter=1))
    np.testing.assert_allclose(s.x, pinv @ y, atol=1e-12)


@pytest.mark.parametrize("form", ["paper", "local"])
def test_relaxed_exact_step_shrinks_residual_by_0_6(form):
    """rho = 0.4 with an exact step on a consistent linear problem: r_k = 0.6^k r_0,
    so the iterations to eps are ceil(log(eps / r0) / log 0.6)."""
    k1, k2 = jax.random.split(jax.random.key(2))
    A = jax.random.normal(k1, (6, 6)) + 3 * jnp.eye(6)
    y = A @ jax.random.normal(k2, (6,))
    p = invphys.Problem(forward=lambda x: A @ x, x_size=6)
    inv = jnp.linalg.inv(A)
    s = invphys.solve(p, y, jnp.zeros(6), method=DIPG(inverse=lambda z: inv @ z, form=form),
                      rules=Rules(max_iter=30, eps=1e-3))
    h = np.asarray(s.history["rmse"])
    np.testing.assert_allclose(h[1:20] / h[:19], 0.6, rtol=1e-9)
    r0 = h[0]
    assert int(s.stats["steps_to_eps"]) == int(np.ceil(np.log(1e-3 / r0) / np.log(0.6)))


# ------------------------------------------------------- protocol invariants
@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 10_000), method=st.sampled_from(METHODS),
       width=st.floats(0.05, 2.0))
def test_every_accepted_step_is_armijo_and_feasible(seed, method, width):
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    n = 4
    A = jax.random.normal(k1, (7, n))
    lo = -width * jax.random.uniform(k2, (n,))
    hi = width * jax.random.uniform(k3, (n,))
    # a nonlinear forward map so that every method needs several iterations
    p = invphys.Problem(forward=lambda x: jnp.tanh(A @ x) + 0.1 * (A @ x) ** 2,
                        lower=lo, upper=hi)
    y = jnp.tanh(A @ jnp.ones(n))
    rules = Rules(max_iter=15)
    s = invphys.solve(p, y, jnp.zeros(n), method=method, rules=rules)
    # replay: every accepted iterate satisfies Armijo against its predecessor and is feasible
    h = np.asarray(s.history["rmse"])
    acc = np.asarray(s.history["accepted"])
    steps = int(s.steps)
    phi = 0.5 * h**2
    for k in range(steps):
        if acc[k]:
            assert phi[k + 1] <= phi[k] + 1e-15 * max(phi[k], 1.0)
        else:
            assert phi[k + 1] == phi[k]
    assert bool(p.is_feasible(s.x))


def test_armijo_holds_exactly_on_the_proposal():
    """The protocol's test: Phi(x+) <= Phi(x) + c rho <G, p>, checked by re-running it."""
    p, A, y = linear_problem(3, bounded=True)
    rules = Rules(max_iter=1, armijo_c=0.5)
    s = invphys.solve(p, y, jnp.zeros(5), method="pg", rules=rules)
    x0 = jnp.zeros(5)
    G = A.T @ (A @ x0 - y) / y.size
    alpha = float(s.history["alpha"][0])
    prop = -alpha * G
    phi = lambda x: 0.5 * jnp.mean((A @ x - y) ** 2)
    assert float(phi(s.x)) <= float(phi(x0) + 0.5 * 0.4 * jnp.vdot(G, prop)) + 1e-15
    # the previous (larger) alpha must have failed the same test
    if alpha < 1.0:
        xp = 0.6 * x0 + 0.4 * p.project(x0 - 2 * alpha * G)
        assert float(phi(xp)) > float(phi(x0) + 0.5 * 0.4 * jnp.vdot(G, -2 * alpha * G))


def test_nonfinite_trial_is_a_rejection_not_a_nan():
    # forward is NaN for x > 1: the first trials overshoot into it
    p = invphys.Problem(forward=lambda x: jnp.where(x > 1.0, jnp.nan, x**2 - 0.25), x_size=1)
    s = invphys.solve(p, jnp.array([0.75]), jnp.array([0.1]), method="pg",
                      rules=Rules(rho=1.0, alpha0=1e3, max_iter=10))
    assert bool(jnp.all(jnp.isfinite(s.x))) and float(s.x[0]) <= 1.0
    assert int(s.stats["rejected"]) + int(s.stats["accepted"]) == int(s.steps)


# --------------------------------------------------------------- batching
@pytest.mark.parametrize("method", METHODS)
def test_batched_equals_per_problem(method):
    p, A, _ = linear_problem(4, bounded=True)
    ys = jnp.stack([A @ jnp.full(5, 0.1 * i) + 0.3 for i in range(3)])
    batch = invphys.solve(p, ys, jnp.zeros(5), method=method, rules=Rules(max_iter=20))
    for i in range(3):
        one = invphys.solve(p, ys[i], jnp.zeros(5), method=method, rules=Rules(max_iter=20))
        np.testing.assert_allclose(batch.x[i], one.x, rtol=1e-10, atol=1e-12)
        assert int(batch.steps[i]) == int(one.steps)


def test_public_traceable_core_is_the_solve_loop():
    """invphys.solve.solve_one (one problem, no checks) under the caller's own jit and
    vmap gives what invphys.solve gives."""
    from invphys.solve import GaussNewton, solve_one

    p, A, _ = linear_problem(4, bounded=True)
    ys = jnp.stack([A @ jnp.full(5, 0.1 * i) + 0.3 for i in range(3)])
    rules = Rules(max_iter=20)
    one = jax.jit(jax.vmap(lambda y: solve_one(p.fn, p, GaussNewton(), rules, y,
                                               jnp.zeros(5))))(ys)
    ref = invphys.solve(p, ys, jnp.zeros(5), method=GaussNewton(), rules=rules)
    np.testing.assert_array_equal(one.x, ref.x)
    np.testing.assert_array_equal(one.steps, ref.steps)


@pytest.mark.parametrize("method", ["pg", "gn", "lm"])
def test_compacted_batch_equals_one_loop_batch(method):
    """Gathering the members still running into smaller batches between rounds changes
    no member's iterations: same x, steps, history and stop reasons."""
    p = invphys.load_problem("heat1d")
    xs = p.sample(jax.random.key(0), 19)  # 19: the sub-batches are padded (sizes 19, 8)
    _, y = p.observe(jax.random.key(1), xs)
    rules = Rules(eps=0.3, max_iter=40, stall_patience=5)
    full = invphys.solve(p, y, None, method=method, rules=rules)
    comp = invphys.solve(p, y, None, method=method, rules=rules, compact=3)
    assert len(set(np.asarray(full.steps).tolist())) > 1  # members stop at different times
    np.testing.assert_array_equal(np.asarray(comp.steps), np.asarray(full.steps))
    np.testing.assert_array_equal(np.asarray(comp.stats["result"]),
                                  np.asarray(full.stats["result"]))
    np.testing.assert_allclose(comp.x, full.x, rtol=0, atol=1e-12)
    np.testing.assert_allclose(comp.history["rmse"], full.history["rmse"], rtol=0,
                               atol=1e-12)


def test_compact_needs_a_batch():
    p, _, y = linear_problem(5)
    with pytest.raises(ValueError, match="batched"):
        invphys.solve(p, y, jnp.zeros(5), compact=True)


def test_float32_and_float64_both_run():
    p, A, y = linear_problem(5)
    for dtype in (jnp.float32, jnp.float64):
        s = invphys.solve(p, y.astype(dtype), jnp.zeros(5, dtype), method="lm",
                          rules=Rules(rho=1.0, max_iter=30))
        assert s.x.dtype == dtype
        x_ls = np.linalg.lstsq(np.asarray(A), np.asarray(y), rcond=None)[0]
        tol = 1e-4 if dtype == jnp.float32 else 1e-10
        np.testing.assert_allclose(np.asarray(s.x, float), x_ls, atol=tol)


# ---------------------------------------------------------------- errors
def test_bad_inputs_raise_typed_errors():
    p, A, y = linear_problem(6, bounded=True)
    with pytest.raises(invphys.NonFiniteError):
        invphys.solve(p, y.at[0].set(jnp.nan), jnp.zeros(5))
    with pytest.raises(invphys.ShapeError):
        invphys.solve(p, y[:5], jnp.zeros(5))
    with pytest.raises(invphys.ShapeError):
        invphys.solve(p, y, jnp.zeros(4))
    q = invphys.Problem(forward=lambda x: jnp.log(x), x_size=2)
    with pytest.raises(invphys.NonFiniteError, match="x0"):
        invphys.solve(q, jnp.ones(2), -jnp.ones(2))
    s = invphys.solve(p, y, 5 * jnp.ones(5), method="pg", rules=Rules(max_iter=2))
    assert s.x0_projected


# ------------------------------------------------------------- LM and bounds
@pytest.mark.parametrize("name", ["rosenbrock", "freudenstein_roth", "beale", "helical_valley",
                                  "powell_singular", "wood", "bard", "box_3d"])
def test_lm_solves_mgh_from_standard_start(name):
    prob = get_mgh(name)
    p = invphys.Problem(forward=prob.residual, x_size=prob.n)
    s = invphys.solve(p, jnp.zeros(prob.m), jnp.asarray(prob.x0), method="lm",
                      rules=Rules(rho=1.0, max_iter=500, stall_tol=0.0, eps=0.0,
                                  armijo="step", xtol=1e-14))
    f = float(jnp.sum(prob.residual(s.x) ** 2))
    at_global = abs(f - prob.f_star) <= max(prob.f_star_tol, 1e-8 * max(1.0, prob.f_star))
    # MGH print local minima to 6 significant digits: one unit in the last digit
    at_local = any(abs(f - fl) <= 1e-5 * abs(fl) for fl in prob.f_local)
    assert at_global or at_local, f


KKT_RULES = Rules(rho=1.0, max_iter=300, stall_tol=0.0, eps=0.0, armijo="step", xtol=1e-15)


@pytest.mark.parametrize("seed", range(6))
def test_lm_reaches_constrained_optimum_of_box_linear_lsq(seed):
    A, b, lo, hi, ref = box_linear_lsq(100 + seed)
    p = invphys.Problem(forward=lambda x: A @ x, lower=lo, upper=hi)
    s = invphys.solve(p, b, jnp.zeros(lo.size), method="lm", rules=KKT_RULES)
    cost = 0.5 * float(jnp.sum((A @ s.x - b) ** 2))
    assert cost <= ref.cost + 1e-8 * max(1.0, ref.cost), (cost, ref.cost)
    grad = A.T @ (A @ s.x - b)
    assert kkt_holds(grad, s.x, lo, hi, 1e-7 * max(1.0, float(jnp.max(jnp.abs(A.T @ b)))),
                     bound_slack=1e-10)


def test_projected_gn_is_not_kkt_but_lm_is():
    """The paper's projected GN stalls at a non-KKT point on a coupled box problem."""
    A = jnp.array([[1.0, 0.9], [0.9, 1.0], [0.0, 0.3]])
    b = jnp.array([2.0, -1.0, 0.0])
    p = invphys.Problem(forward=lambda x: A @ x, lower=jnp.array([-0.2, -0.2]),
                        upper=jnp.array([0.2, 0.2]))
    ref = scipy.optimize.lsq_linear(np.asarray(A), np.asarray(b), bounds=(-0.2, 0.2), tol=1e-14)
    gn = invphys.solve(p, b, jnp.zeros(2), method=GaussNewton(damping=1e-12), rules=KKT_RULES)
    lm = invphys.solve(p, b, jnp.zeros(2), method="lm", rules=KKT_RULES)
    cost = lambda x: 0.5 * float(jnp.sum((A @ x - b) ** 2))
    assert cost(lm.x) <= ref.cost + 1e-10
    assert cost(gn.x) > ref.cost + 1e-3  # projection of a coupled GN step is not enough


@pytest.mark.parametrize("prob", MGH_BOUNDED, ids=lambda p: p.name)
def test_lm_kkt_on_bounded_nonlinear(prob):
    p = invphys.Problem(forward=prob.residual, lower=prob.lower, upper=prob.upper)
    x0 = p.project(jnp.asarray(prob.x0))
    s = invphys.solve(p, jnp.zeros(prob.m), x0, method="lm", rules=KKT_RULES)
    lo, hi = np.asarray(prob.lower, float), np.asarray(prob.upper, float)
    ref = scipy.optimize.least_squares(prob.residual, np.asarray(x0), bounds=(lo, hi),
                                       method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15)
    f = float(jnp.sum(prob.residual(s.x) ** 2))
    assert f <= 2 * ref.cost * (1 + 1e-8) + 1e-12, (f, 2 * ref.cost)
    grad = jax.jacfwd(prob.residual)(s.x).T @ prob.residual(s.x)
    assert kkt_holds(grad, s.x, lo, hi, 1e-6 * max(1.0, float(jnp.max(jnp.abs(grad)))),
                     bound_slack=1e-10)


# ------------------------------------------------- invariants over the shared tables
def _table_params():
    return [pytest.param(m, q, id=f"{m}-{q}",
                         marks=() if q in FAST_PROBLEMS else pytest.mark.slow)
            for q in PROBLEMS for m in METHOD_TABLE]


TABLE_RULES = Rules(max_iter=12)


@pytest.mark.parametrize(("mname", "pname"), _table_params())
def test_invariants_over_methods_x_problems(mname, pname):
    """Armijo replay, feasibility and batch == single for every (method, problem)."""
    entry = problem_entry(pname)
    method = METHOD_TABLE[mname](entry)
    if method is None:
        pytest.skip("the method does not apply (no exact inverse)")
    p, ys, x0, _ = entry
    batch = invphys.solve(p, ys, x0, method=method, rules=TABLE_RULES)
    for i in range(ys.shape[0]):
        h = np.asarray(batch.history["rmse"][i])
        acc = np.asarray(batch.history["accepted"][i])
        phi = 0.5 * h**2
        for k in range(int(batch.steps[i])):
            if acc[k]:
                assert phi[k + 1] <= phi[k] * (1 + 1e-12) + 1e-300
            else:
                assert phi[k + 1] == phi[k]
    assert bool(jnp.all(p.is_feasible(batch.x)))
    one = invphys.solve(p, ys[1], x0, method=method, rules=TABLE_RULES)
    np.testing.assert_allclose(batch.x[1], one.x, rtol=1e-10, atol=1e-12)
    assert int(batch.steps[1]) == int(one.steps)


@pytest.mark.parametrize("mname", [m if m in ("pg", "lm-direct") else
                                   pytest.param(m, marks=pytest.mark.slow)
                                   for m in METHOD_TABLE])
def test_compact_equals_batch_over_methods(mname):
    entry = problem_entry("linear")
    method = METHOD_TABLE[mname](entry)
    p, ys, x0, _ = entry
    rules = Rules(max_iter=12, stall_patience=3)
    full = invphys.solve(p, ys, x0, method=method, rules=rules)
    comp = invphys.solve(p, ys, x0, method=method, rules=rules, compact=2)
    np.testing.assert_array_equal(np.asarray(comp.steps), np.asarray(full.steps))
    np.testing.assert_allclose(comp.x, full.x, rtol=0, atol=1e-12)


# ------------------------------------------- fairness: search and termination are shared
def test_search_and_termination_decide_for_every_method():
    """Swap the method under one Rules: the acceptance test and the stopping decision are
    the shared objects' (a search that takes alpha = 1/4 always, a stop after 3
    iterations), whatever the method would have done."""
    from invphys.solve import AbstractSearch, AbstractTermination, SearchResult, Trial
    from invphys.solve._search import objective

    class QuarterStep(AbstractSearch):
        def run(self, descent, fn, x, y_obs, lin, query, cset, newton):
            alpha = jnp.asarray(0.25, x.dtype)
            p = descent.step(fn, x, y_obs, lin, query, Trial(alpha=alpha, index=jnp.asarray(2)))
            x_new = cset.project(x + p)
            return SearchResult(accepted=jnp.asarray(True), trial=Trial(alpha, jnp.asarray(2)),
                                x=x_new, phi=objective(fn, x_new, y_obs), nfev=jnp.asarray(1),
                                floor=jnp.asarray(False))

    class ThreeSteps(AbstractTermination):
        eps: float = 0.0
        stop_at_eps: bool = False

        def init(self, x0, phi0):
            return jnp.asarray(0)

        def check(self, state, it):
            return state + 1 >= 3, invphys.RESULTS.stalled, state + 1

    rules = Rules(QuarterStep(), ThreeSteps(), max_iter=50)
    entry = problem_entry("linear")
    p, ys, x0, _ = entry
    for mname, make in METHOD_TABLE.items():
        s = invphys.solve(p, ys[0], x0, method=make(entry), rules=rules)
        assert int(s.steps) == 3, mname
        assert s.message == invphys.RESULTS[invphys.RESULTS.stalled]
        np.testing.assert_array_equal(np.asarray(s.history["alpha"][:3]), 0.25)
        assert bool(jnp.all(s.history["accepted"][:3]))


# ------------------------------------------------------------------ rules as a composition
def test_rules_presets_and_legacy_keywords():
    import dataclasses

    from invphys.solve import Backtracking, CertifiedStop, PaperStop, Polished, Relaxed

    assert Rules() == Rules.paper()
    r = Rules(eps=0.1, max_iter=7, rho=1.0, armijo="step")
    assert isinstance(r.search, Relaxed) and r.search.search.armijo == "step"
    assert isinstance(r.termination, PaperStop) and r.eps == 0.1 and r.max_iter == 7
    r2 = dataclasses.replace(r, stop_at_eps=True)
    assert r2.stop_at_eps and r2.eps == 0.1 and r2.search == r.search
    c = Rules.certified(rtol=1e-8)
    assert isinstance(c.search, Polished) and isinstance(c.search.search, Backtracking)
    assert isinstance(c.termination, CertifiedStop) and c.endgame and c.rho == 1.0
    with pytest.raises(TypeError):
        Rules(bogus=1)
    with pytest.raises(ValueError, match="armijo"):
        Backtracking(armijo="wolfe")


def test_cg_descent_takes_a_preconditioner():
    from invphys.solve import JacobiPreconditioner, LevenbergMarquardtCG

    p, A, y = linear_problem(8)
    x_ls = np.linalg.lstsq(np.asarray(A), np.asarray(y), rcond=None)[0]
    rules = Rules(rho=1.0, max_iter=40, armijo="step", xtol=1e-14)
    for pre in (None, JacobiPreconditioner()):
        s = invphys.solve(p, y, jnp.zeros(5), rules=rules,
                          method=LevenbergMarquardtCG(preconditioner=pre))
        np.testing.assert_allclose(s.x, x_ls, atol=1e-8)


# ------------------------------------------------------------------------ traceability
def test_core_under_jit_vmap_equals_batched_solve():
    from invphys.solve import solve_core

    p = invphys.load_problem("heat1d")
    xs = p.sample(jax.random.key(0), 8)
    _, Y = p.observe(jax.random.key(1), xs)
    x0 = p.start(Y.dtype)
    rules = Rules(max_iter=20)
    core = jax.jit(jax.vmap(lambda y: solve_core(p.fn, y, x0, cset=p, method="gn",
                                                 rules=rules)))(Y)
    ref = invphys.solve(p, Y, x0, method="gn", rules=rules)
    np.testing.assert_allclose(core.x, ref.x, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(core.steps, ref.steps)
    # the public wrapper itself under a user's vmap (the one-liner)
    X0 = jnp.broadcast_to(x0, (8, x0.size))
    v = jax.vmap(lambda y, x: invphys.solve(p, y, x, method="gn", rules=rules).x)(Y, X0)
    np.testing.assert_allclose(v, ref.x, rtol=0, atol=1e-12)


def _fd_grad_check(fn, y, x0, cset, scalar, h=1e-6, count=4):
    from invphys.solve import LevenbergMarquardt, solve_core

    rules = Rules.certified(rtol=1e-13)
    f = lambda yy: scalar(solve_core(fn, yy, x0, cset=cset, method=LevenbergMarquardt(),  # noqa
                                     rules=rules).x)
    g = np.asarray(jax.grad(f)(y))
    fj = jax.jit(f)
    fd = np.array([(fj(y.at[i].add(h)) - fj(y.at[i].add(-h))) / (2 * h) for i in range(count)])
    np.testing.assert_allclose(g[:count], fd, rtol=1e-6, atol=1e-6 * np.max(np.abs(fd)))


def test_grad_wrt_y_obs_bounded_mgh_with_active_bound():
    from invphys.solve import solve_core

    prob = next(q for q in MGH_BOUNDED if q.name == "rosenbrock_bounded")
    box = invphys.Problem(forward=prob.residual, lower=prob.lower, upper=prob.upper)
    x0 = box.project(jnp.asarray(prob.x0))
    s = solve_core(prob.residual, jnp.zeros(prob.m), x0, cset=box, method="lm",
                   rules=Rules.certified())
    assert bool(jnp.any(s.active))
    _fd_grad_check(prob.residual, jnp.zeros(prob.m), x0, box,
                   lambda x: jnp.vdot(jnp.array([0.7, 1.3]), x), count=prob.m)


@pytest.mark.slow
def test_grad_wrt_y_obs_oscillator():
    """Through an identifiable scalar (m, c, k are known only up to scale: the tangent
    is the minimum-norm one, right for what the data determine)."""
    o = invphys.load_problem("oscillator")
    y = o.fn(o.sample(jax.random.key(2), 1)[0])
    _fd_grad_check(o.fn, y, o.start(y.dtype), o,
                   lambda x: x[1] / x[0] + 0.7 * x[2] / x[0] + 1.3 * x[3] + 0.9 * x[4])


def test_vmap_over_problem_parameters_as_args():
    from invphys.solve import solve_core

    t = jnp.linspace(0.0, 2.0, 12)
    f = lambda x, k: x[0] * jnp.exp(-k * t) + x[1]  # noqa: E731
    ks = jnp.array([0.5, 1.0, 2.0])
    Y = jax.vmap(lambda k: f(jnp.array([1.5, 0.2]), k))(ks)
    sols = jax.jit(jax.vmap(lambda y, k: solve_core(f, y, jnp.zeros(2), k, method="lm",
                                                    rules=Rules.certified())))(Y, ks)
    np.testing.assert_allclose(sols.x, jnp.tile(jnp.array([1.5, 0.2]), (3, 1)), atol=1e-9)
    dk = jax.grad(lambda k: solve_core(f, Y[1], jnp.zeros(2), k, method="lm",
                                       rules=Rules.certified()).x[0])(1.0)
    assert np.isfinite(float(dk))


# ------------------------------------------------------------ Rules: bad values
RULES_BAD = [  # (keywords, the argument the message must name)
    (dict(max_iter=0), "max_iter"), (dict(max_iter=-5), "max_iter"),
    (dict(max_iter=True), "max_iter"),
    (dict(eps=-1.0), "eps"), (dict(eps=float("nan")), "eps"), (dict(eps=float("inf")), "eps"),
    (dict(eps="0.3"), "eps"), (dict(rho=0.0), "rho"), (dict(rho=1.5), "rho"),
    (dict(alpha0=0.0), "alpha0"), (dict(max_halvings=-1), "max_halvings"),
    (dict(armijo_c=1.0), "armijo_c"), (dict(stall_patience=0), "stall_patience"),
    (dict(stall_tol=float("nan")), "stall_tol"), (dict(gtol=-1e-3), "gtol"),
    (dict(endgame=True, rtol=-1.0), "rtol"), (dict(endgame=True, max_rejections=0),
                                              "max_rejections"),
]


@pytest.mark.parametrize("kw, name", RULES_BAD, ids=[str(kw) for kw, _ in RULES_BAD])
def test_rules_bad_values_are_typed_errors(kw, name):
    """A bad setting is a SpecError (also a ValueError, for old ``except ValueError``)
    naming the argument, in one line, from every way of building a Rules."""
    with pytest.raises(invphys.SpecError, match=rf"\b{name}\b") as e:
        Rules(**kw)
    assert isinstance(e.value, ValueError) and len(str(e.value).splitlines()) == 1


def test_rules_bad_values_in_composed_parts_and_presets():
    from invphys.solve import Backtracking, CertifiedStop, PaperStop, Relaxed

    for make, name in [(lambda: Rules(termination=PaperStop(eps=-1.0)), "eps"),
                       (lambda: Rules(search=Relaxed(Backtracking(), rho=2.0)), "rho"),
                       (lambda: Rules(Backtracking(alpha0=float("nan")), CertifiedStop()),
                        "alpha0"),
                       (lambda: Rules.paper(eps=float("nan")), "eps"),
                       (lambda: Rules.paper(max_iter=0), "max_iter"),
                       (lambda: Rules.certified(gtol=-1.0), "gtol"),
                       (lambda: Rules.certified(polish=-1e-6), "polish"),
                       (lambda: dataclasses.replace(Rules(), eps=-2.0), "eps")]:
        with pytest.raises(invphys.SpecError, match=name):
            make()
    # the edges of the ranges are fine
    Rules(eps=0.0, max_iter=1, rho=1.0, stall_tol=0.0, armijo_c=0.0, max_halvings=0)
    Rules.certified(rtol=0.0, atol=0.0, gtol=0.0, polish=0.0)
