"""invphys.least_squares: certified accuracy (NIST StRD), MGH minima, KKT with bounds,
implicit gradients, typed errors, jit/vmap, and honest failure."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
from problem_table import box_linear_lsq, kkt_holds

import invphys
from invphys.certify import MGH_BOUNDED, NIST_MODELS, get_mgh, load_nist, lre
from invphys.solve._least_squares import least_squares
from invphys.solve._rules import RESULTS

# ------------------------------------------------------------------------------ NIST
# The default run: five of NIST's lower-difficulty datasets and three of the higher;
# the rest of the lower ones (and Lanczos1) are marked slow (``make test-all``). The
# data go in through ``args``, so datasets that share a model and a size share one
# compilation (Gauss1/Gauss2, Lanczos1/Lanczos3).
_SLOW = pytest.mark.slow
FAST_NIST = ["Misra1a", "Chwirut2", "DanWood", "Gauss1", "Gauss2", "MGH09", "BoxBOD", "MGH10",
             pytest.param("Misra1b", marks=_SLOW), pytest.param("Chwirut1", marks=_SLOW),
             pytest.param("Lanczos3", marks=_SLOW), pytest.param("Lanczos1", marks=_SLOW)]
_RESIDUALS = {}


def _nist_residual(model):
    if model not in _RESIDUALS:
        _RESIDUALS[model] = lambda b, data: data[1] - model(b, data[0])
    return _RESIDUALS[model]


@pytest.mark.parametrize("name", FAST_NIST)
def test_nist_certified_digits_from_both_starts(name):
    prob = load_nist(name)
    fn = _nist_residual(NIST_MODELS[name])
    data = (jnp.asarray(prob.x), jnp.asarray(prob.y))
    for k in range(2):
        s = least_squares(fn, prob.starts[k], data)
        digits = lre(s.x, prob.certified)
        assert bool(s.success), (k, s.message)
        assert digits >= 6.0, (k, digits, s.message)
        assert int(s.steps) <= 1000
        if name != "Lanczos1":  # its certified RSS is below float64's resolution
            np.testing.assert_allclose(2 * float(s.cost), prob.certified_rss, rtol=1e-9)


# ------------------------------------------------------------------------------- MGH
MGH_NAMES = ["freudenstein_roth", "bard", "powell_singular",
             pytest.param("rosenbrock", marks=_SLOW), pytest.param("penalty1_4", marks=_SLOW)]
# a unique minimiser with a non-zero residual where Gauss-Newton converges: x to 7 digits
# (Penalty I's minimum is flat to rounding in x: f only)
X_CHECKED = {"bard"}


@pytest.mark.parametrize("name", MGH_NAMES)
def test_mgh_reaches_known_minimum(name):
    prob = get_mgh(name)
    s = least_squares(prob.residual, prob.x0)
    f = 2.0 * float(s.cost)
    at_global = abs(f - prob.f_star) <= max(prob.f_star_tol, 1e-8 * max(1.0, prob.f_star))
    at_local = any(abs(f - fl) <= 1e-5 * abs(fl) for fl in prob.f_local)
    assert at_global or at_local, f
    assert bool(s.success), s.message
    if name in X_CHECKED:
        np.testing.assert_allclose(s.x, prob.x_star, rtol=1e-7)


@pytest.mark.parametrize("prob", [
    pytest.param(p, marks=() if p.name in ("rosenbrock_bounded", "wood_bounded") else _SLOW)
    for p in MGH_BOUNDED], ids=lambda p: p.name)
def test_mgh_bounded_kkt(prob):
    lo, hi = np.asarray(prob.lower), np.asarray(prob.upper)
    x0 = np.clip(prob.x0, lo, hi)
    s = least_squares(prob.residual, x0, lower=lo, upper=hi)
    x = np.asarray(s.x)
    assert bool(s.success), s.message
    assert np.all(x >= lo) and np.all(x <= hi)
    g = np.asarray(jax.jacfwd(prob.residual)(s.x).T @ prob.residual(s.x))
    assert kkt_holds(g, x, lo, hi, 1e-8 * max(1.0, float(np.max(np.abs(g))))), g
    assert np.any(np.asarray(s.active) != 0), "the box must be active"
    np.testing.assert_array_equal(np.asarray(s.active) != 0, (x <= lo) | (x >= hi))
    ref = scipy.optimize.least_squares(prob.residual, x0, bounds=(lo, hi), method="trf",
                                       xtol=1e-15, ftol=1e-15, gtol=1e-15)
    assert float(s.cost) <= ref.cost * (1 + 1e-10) + 1e-14


def _linear_residual(x, ab):
    return ab[0] @ x - ab[1]


@pytest.mark.parametrize("seed", range(3))
def test_box_linear_least_squares_matches_lsq_linear(seed):
    A, b, lo, hi, ref = box_linear_lsq(10 + seed)
    s = least_squares(_linear_residual, jnp.zeros(lo.size), (A, b), lower=lo, upper=hi)
    np.testing.assert_allclose(s.x, ref.x, atol=1e-10)
    np.testing.assert_array_equal(np.asarray(s.active), ref.active_mask)
    assert float(s.grad_inf) <= 1e-10


# ---------------------------------------------------------------------- gradients
T = jnp.linspace(0.0, 3.0, 20)


def _fit_residual(x, theta):
    data = theta[0] * jnp.exp(-theta[1] * T) + 0.1 * theta[2] * jnp.sin(5.0 * T)
    return x[0] * jnp.exp(-x[1] * T) + x[2] - data


def _central_jacobian(f, theta, h=1e-6):
    cols = [(f(theta.at[i].add(h)) - f(theta.at[i].add(-h))) / (2 * h)
            for i in range(theta.size)]
    return np.stack([np.asarray(c) for c in cols], axis=-1)


THETA = jnp.array([2.0, 1.3, 1.0])
X0 = jnp.array([1.0, 1.0, 0.0])


LO, HI = jnp.array([0.0, 0.0, 0.05]), jnp.array([10.0, 10.0, 10.0])


def _solve_bounded(th, l2):
    return least_squares(_fit_residual, X0, th, lower=LO.at[2].set(l2), upper=HI)


def test_gradients_through_the_solution_match_finite_differences():
    """Reverse mode through args (x and the cost), forward mode through a closure and
    the active bound, both against central differences of the same solve."""
    s = _solve_bounded(THETA, 0.05)
    assert np.asarray(s.active).tolist() == [0, 0, -1]
    fd_x = _central_jacobian(lambda th: _solve_bounded(th, 0.05).x, THETA)
    fd_c = _central_jacobian(lambda th: _solve_bounded(th, 0.05).cost, THETA)
    np.testing.assert_allclose(fd_x[2], 0.0)

    jx, jc = jax.jacrev(lambda th: (lambda r: (r.x, r.cost))(_solve_bounded(th, 0.05)))(THETA)
    np.testing.assert_allclose(jx, fd_x, atol=1e-7)
    np.testing.assert_allclose(jc, fd_c, rtol=1e-6, atol=1e-9)

    def solve_closure(th, l2):  # theta enters through a closure, not args
        return least_squares(lambda x: _fit_residual(x, th), X0, lower=LO.at[2].set(l2),
                             upper=HI).x

    d_theta, d_bound = jax.jacfwd(solve_closure, argnums=(0, 1))(THETA, 0.05)
    np.testing.assert_allclose(d_theta, fd_x, atol=1e-7)
    # with respect to the active bound itself: dx_2/dlower_2 = 1, the rest follows
    fdb = (_solve_bounded(THETA, 0.05 + 1e-6).x - _solve_bounded(THETA, 0.05 - 1e-6).x) / 2e-6
    np.testing.assert_allclose(d_bound, fdb, atol=1e-7)
    assert abs(float(d_bound[2]) - 1.0) < 1e-12


@pytest.mark.slow
def test_gradient_of_unconstrained_solution():
    fd = _central_jacobian(lambda th: least_squares(_fit_residual, X0, th).x, THETA)
    j = jax.jacrev(lambda th: least_squares(_fit_residual, X0, th).x)(THETA)
    np.testing.assert_allclose(j, fd, atol=1e-7)


# --------------------------------------------------------------------- jit / vmap
def test_vmap_equals_per_problem_solves():
    starts = jnp.array([[1.0, 1.0, 0.0], [2.5, 0.5, 0.2], [0.5, 2.0, -0.1]])
    thetas = jnp.array([[2.0, 1.3, 1.0], [1.5, 0.7, -1.0], [3.0, 2.0, 0.5]])
    batch = jax.vmap(lambda x0, th: least_squares(_fit_residual, x0, th))(starts, thetas)
    for i in range(3):
        one = least_squares(_fit_residual, starts[i], thetas[i])
        np.testing.assert_allclose(batch.x[i], one.x, rtol=1e-12, atol=1e-14)
        assert int(batch.steps[i]) == int(one.steps)
        assert bool(batch.success[i]) and int(batch.nfev[i]) == int(one.nfev)


def test_jit():
    solve = jax.jit(lambda x0: least_squares(_fit_residual, x0, THETA).x)
    np.testing.assert_allclose(solve(X0), least_squares(_fit_residual, X0, THETA).x)


# --------------------------------------------------------------------- reporting
def test_solution_reports_counts_and_message():
    s = least_squares(_fit_residual, X0, THETA)
    assert s.message.startswith("converged")
    assert int(s.accepted) + int(s.rejected) == int(s.steps)
    assert int(s.nfev) >= int(s.steps) and int(s.njev) == int(s.steps) + 1
    g = jax.jacfwd(_fit_residual)(s.x, THETA).T @ _fit_residual(s.x, THETA)
    np.testing.assert_allclose(float(s.grad_inf), float(jnp.max(jnp.abs(g))), rtol=1e-6,
                               atol=1e-14)
    np.testing.assert_allclose(s.fun, _fit_residual(s.x, THETA))


@pytest.mark.slow
def test_iteration_limit_is_a_failure():
    short = least_squares(_fit_residual, X0, THETA, max_steps=2)
    assert not bool(short.success) and short.message == RESULTS[RESULTS.max_iterations]


def test_plateau_is_reported_not_claimed():
    """BoxBOD from a start where exp(-b2 x) has saturated: b2 no longer affects the
    residual (scipy's lm reports success at RSS 9772 from NIST's start 1 this way)."""
    prob = load_nist("BoxBOD")
    fn, data = _nist_residual(NIST_MODELS["BoxBOD"]), (jnp.asarray(prob.x), jnp.asarray(prob.y))
    s = least_squares(fn, np.array([100.0, 1000.0]), data)
    assert not bool(s.success)
    assert s.message == RESULTS[RESULTS.degenerate]
    assert 2 * float(s.cost) > 2 * prob.certified_rss


# ------------------------------------------- first-order points a Jacobian cannot see
# Minimisers with a non-zero residual and a vanishing Jacobian column: J^T r = 0 there
# only because J = 0, so every first-order test (|J^T r| <= c eps |J| |r|, the cosine
# between a column and r) fails: with one residual |J^T r| = |J| |r| at every point. The
# cost is f* + H dx^2 / 2 with H = sum r_i r_i'' > 0, flat to rounding within
# |dx| ~ sqrt(2 c eps f* / H) ~ 1e-8 of x*: the solve must say "converged" there.
def _sq1(x):
    return jnp.array([x[0] ** 2 + 1.0])


def _shifted2(x):
    return jnp.array([(x[0] - 1.0) ** 2 + 0.5, (x[0] - 1.0) ** 2 + 0.25])


def _cosh(x):
    return jnp.cosh(x - 2.0)


def _mixed(x):  # x[0] enters linearly through r_3, x[1] only quadratically
    return jnp.array([x[0] ** 2 + 1.0, (x[1] - 1.0) ** 2 + 2.0, x[0] * x[1]])


FIRST_ORDER = {  # name: (fn, x0, x*, bounds)
    "x^2+1 from 1": (_sq1, [1.0], [0.0], None),
    "x^2+1 from 3": (_sq1, [3.0], [0.0], None),
    "x^2+1 at its minimum": (_sq1, [0.0], [0.0], None),
    "x^2+1 in a box": (_sq1, [1.5], [0.0], (-1.0, 2.0)),
    "(x-1)^2+c, two residuals": (_shifted2, [3.0], [1.0], None),
    "(x-1)^2+c at its minimum": (_shifted2, [1.0], [1.0], None),
    "cosh(x-2)": (_cosh, [0.3], [2.0], None),
    "one regular, one vanishing column": (_mixed, [0.7, 2.5], [0.0, 1.0], None),
}


@pytest.mark.parametrize("name", list(FIRST_ORDER))
def test_minimum_with_vanishing_jacobian_is_a_success(name):
    fn, x0, x_star, box = FIRST_ORDER[name]
    lo, hi = (None, None) if box is None else box
    s = least_squares(fn, jnp.asarray(x0), lower=lo, upper=hi)
    assert bool(s.success), s.message
    assert s.message.startswith("converged"), s.message
    # x to what a flat minimum allows (sqrt(eps)-ish), the cost to rounding
    np.testing.assert_allclose(s.x, x_star, atol=1e-6)
    f_star = 0.5 * float(jnp.sum(fn(jnp.asarray(x_star, float)) ** 2))
    assert abs(float(s.cost) - f_star) <= 1e-14 * f_star
    # as good as MINPACK's answer, and not the 66-80 evaluations of a stagnation stop
    bounds = (-np.inf, np.inf) if box is None else box
    ref = scipy.optimize.least_squares(lambda z: np.asarray(fn(jnp.asarray(z))),
                                       np.asarray(x0, float), bounds=bounds,
                                       method="lm" if box is None else "trf")
    assert ref.success
    assert float(s.cost) <= ref.cost * (1.0 + 1e-15)
    at_min = np.allclose(x0, x_star)
    assert int(s.nfev) <= (5 if at_min else 56), int(s.nfev)


def test_cost_converged_code_and_accuracy_of_x():
    """From a start away from x*, the stop is the second-order certificate, and the
    point is inside the rounding basin: the gradient is what rounding of f leaves."""
    s = least_squares(_sq1, jnp.array([1.5]))
    assert int(s.result._value) == int(RESULTS.cost_converged._value), s.message
    eps = np.finfo(float).eps
    # f = 1/2 + x^2 + ..., H = 2: the basin half-width for 16 ulps of f is sqrt(16 eps / 2)
    assert abs(float(s.x[0])) <= np.sqrt(16 * eps / 2.0)
    assert float(s.grad_inf) <= 2.0 * np.sqrt(16 * eps / 2.0) * 1.01


PLATEAUS = {  # minimum at infinity: the cost keeps falling, ever slower (scipy: success)
    "tanh(x) - 2": (lambda x: jnp.tanh(x) - 2.0, [0.0]),
    "exp(-x) + 1": (lambda x: jnp.exp(-x) + 1.0, [0.0]),
    "two exponentials": (lambda x: jnp.array([jnp.exp(-x[0]) + 1.0,
                                              2.0 * jnp.exp(-2.0 * x[0]) - 0.5]), [0.0]),
}


@pytest.mark.parametrize("name", list(PLATEAUS))
def test_minimum_at_infinity_stays_degenerate(name):
    """The same flat-to-rounding cost, but the curvature dies with the column: the
    quadratic model's minimiser is the curvature's decay length away, where it no longer
    holds. Reported as degenerate, not success (scipy's lm and trf report success)."""
    fn, x0 = PLATEAUS[name]
    s = least_squares(fn, jnp.asarray(x0))
    assert not bool(s.success)
    assert int(s.result._value) == int(RESULTS.degenerate._value), s.message
    ref = scipy.optimize.least_squares(lambda z: np.atleast_1d(np.asarray(fn(jnp.asarray(z)))),
                                       np.asarray(x0, float), method="lm")
    assert ref.success  # the false success this code exists to avoid


def test_boxbod_saturating_start_stays_degenerate():
    """BoxBOD from a start where exp(-b2 x) saturates gradually (not at once): b2 runs
    off to a minimum at infinity (RSS 9771.5, not the certified 1168)."""
    prob = load_nist("BoxBOD")
    fn, data = _nist_residual(NIST_MODELS["BoxBOD"]), (jnp.asarray(prob.x), jnp.asarray(prob.y))
    s = least_squares(fn, np.array([100.0, 20.0]), data)
    assert not bool(s.success)
    assert int(s.result._value) == int(RESULTS.degenerate._value), s.message
    assert 2 * float(s.cost) > 2 * prob.certified_rss


def test_maximum_with_vanishing_jacobian_is_not_a_success():
    """r = 1 - x^2 at x = 0: J = 0 and J^T r = 0, but the cost curves down."""
    s = least_squares(lambda x: 1.0 - x**2, jnp.array([0.0]))
    assert not bool(s.success), s.message


# ------------------------------------------------------- non-finite along the path
def _wall(x):  # finite for x <= 2 only; the minimum of the finite part is beyond it
    return jnp.where(x > 2.0, jnp.nan, x - 5.0)


@pytest.mark.parametrize("fn, x0", [
    (_wall, [0.0]),
    (lambda x: jnp.sqrt(x) + 1.0, [1.0]),  # NaN for x < 0; f falls towards x = 0
    (lambda x: jnp.stack([jnp.where(x[0] < 1.0, jnp.inf, x[0] + 1.0), x[1] - 2.0]),
     [3.0, 0.0]),  # inf below 1, the minimum of the finite formula at -1
], ids=["nan-beyond-2", "sqrt", "inf-below-1"])
def test_nonfinite_trials_are_reported(fn, x0):
    s = least_squares(fn, jnp.asarray(x0))
    assert not bool(s.success)
    assert int(s.result._value) == int(RESULTS.nonfinite_trial._value), s.message
    assert "NaN or inf" in s.message and not s.message.startswith("converged")
    assert bool(jnp.all(jnp.isfinite(s.x))) and np.isfinite(float(s.cost))


def test_nonfinite_trials_batched():
    batch = jax.vmap(lambda x0: least_squares(_wall, x0))(jnp.array([[0.0], [1.0], [1.9]]))
    assert not np.any(np.asarray(batch.success))
    assert set(np.asarray(batch.result._value).tolist()) == {int(RESULTS.nonfinite_trial._value)}


def test_nonfinite_trial_then_success_is_a_success():
    """A NaN trial on the way that the search steps around is not a failure: log(x) = 1
    from 0.05, where the first Gauss-Newton step lands at a negative x."""
    s = least_squares(lambda x: jnp.log(x) - 1.0, jnp.array([0.05]))
    assert bool(s.success), s.message
    np.testing.assert_allclose(s.x, [np.e], rtol=1e-12)


# ------------------------------------------------------------------------ errors
def test_bad_inputs_raise_typed_errors():
    fn = lambda x: jnp.log(x) - 1.0  # noqa: E731
    with pytest.raises(invphys.NonFiniteError, match="x0"):
        least_squares(fn, jnp.array([1.0, jnp.nan]))
    with pytest.raises(invphys.NonFiniteError, match="residual"):
        least_squares(fn, -jnp.ones(2))
    with pytest.raises(invphys.BoundsError, match="lower > upper"):
        least_squares(fn, jnp.ones(2), lower=jnp.array([0.0, 2.0]), upper=1.5)
    with pytest.raises(invphys.BoundsError, match="NaN"):
        least_squares(fn, jnp.ones(2), lower=jnp.array([0.0, jnp.nan]))
    with pytest.raises(invphys.ShapeError, match="x0"):
        least_squares(fn, jnp.ones((2, 2)))
    with pytest.raises(invphys.ShapeError, match="lower"):
        least_squares(fn, jnp.ones(2), lower=jnp.zeros(3))
    with pytest.raises(invphys.ShapeError, match="vector"):
        least_squares(lambda x: jnp.sum(x**2), jnp.ones(2))
    with pytest.raises(invphys.ShapeError, match="vector"):
        least_squares(lambda x: jnp.outer(x, x), jnp.ones(2))
    with pytest.raises(ValueError, match="method"):
        least_squares(fn, jnp.ones(2), method="trf")
    for kw, name in [(dict(max_steps=0), "max_steps"), (dict(max_steps=-5), "max_steps"),
                     (dict(rtol=-1.0), "rtol"),
                     (dict(gtol=float("nan")), "gtol"), (dict(atol=float("inf")), "atol")]:
        with pytest.raises(invphys.SpecError, match=name) as e:
            least_squares(fn, jnp.ones(2), **kw)
        assert isinstance(e.value, ValueError) and len(str(e.value).splitlines()) == 1


def test_start_outside_bounds_is_projected_and_reported():
    fn = lambda x: x - 3.0  # noqa: E731
    s = least_squares(fn, jnp.array([5.0, -5.0]), lower=0.0, upper=2.0)
    assert bool(s.x0_projected)
    np.testing.assert_allclose(s.x, [2.0, 2.0])
    assert np.asarray(s.active).tolist() == [1, 1] and bool(s.success)
    inside = least_squares(fn, jnp.array([1.0, 1.0]), lower=0.0, upper=2.0)
    assert not bool(inside.x0_projected)
