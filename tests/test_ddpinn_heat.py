"""ddpinn's Heat-1D inverse study: the heat residual of closed-form solutions, the
identifiability cut, and (slow) a quick run of the study."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from invphys.experiments.ddpinn import studies
from invphys.physics import load_problem


def _mode(k, rate):
    """``sin(pi k x) exp(-rate tau)`` at ``z = (x, tau)``."""
    return lambda z: jnp.sin(jnp.pi * k * z[0]) * jnp.exp(-rate * z[1])


def test_heat_residual_of_closed_forms():
    kappa_t = 0.0227
    op = studies.heat_op_for(kappa_t)
    z = jax.random.uniform(jax.random.key(0), (50, 2), dtype=jnp.float64)
    q = jnp.zeros((0,))
    res = lambda u: jax.vmap(lambda p: op(u, p, q, 0.0))(z)
    # u = sin(pi x) exp(-pi^2 kappa T tau) + 0.5 sin(3 pi x) exp(-9 pi^2 kappa T tau):
    # u_tau = kappa T u_xx exactly, and forward-mode derivatives are exact to rounding
    u1, u3 = _mode(1, np.pi**2 * kappa_t), _mode(3, 9 * np.pi**2 * kappa_t)
    exact = res(lambda p: u1(p) + 0.5 * u3(p))
    assert np.max(np.abs(np.asarray(exact))) < 1e-13
    # a wrong decay rate leaves a residual of its size: (rate error) * u
    wrong = res(_mode(1, 1.1 * np.pi**2 * kappa_t))
    assert np.max(np.abs(np.asarray(wrong))) > 1e-2
    # the hard constraint holds u = 0 on x = 0 and x = 1 whatever the network says
    for x in (0.0, 1.0):
        assert float(studies.heat_ansatz(jnp.array([x, 0.3]), 7.0, q)) == 0.0


def test_heat_identifiable_modes():
    problem = load_problem("heat1d")
    ph, n = problem.spec["physics"], problem.x_size
    basis, decay, count, sigma_c = studies.heat_modes(problem)
    # the paper fidelity's decay of mode k: (1 - 4 s sin^2(pi k / (2 (n - 1))))^steps
    k = np.arange(1, 7)
    fd = (1 - 4 * ph["s"] * np.sin(np.pi * k / (2 * (n - 1))) ** 2) ** ph["steps"]
    np.testing.assert_allclose(decay[:6], fd, rtol=1e-10)
    # the grid's sine vectors are orthogonal with squared norm (n - 1) / 2
    gram = basis @ basis.T
    np.testing.assert_allclose(gram, (n - 1) / 2 * np.eye(n - 2), atol=1e-9)
    # signal d_k * amp_std against the noise on one coefficient: modes 1..4 stand out
    amp = problem.spec["prior"]["amp_std"]
    assert count == 4
    assert decay[3] * amp > sigma_c > decay[4] * amp
    np.testing.assert_allclose(sigma_c, 0.02 * np.sqrt(2 / (n - 1)))


@pytest.mark.slow
def test_heat_inverse_quick_runs():
    out = studies.heat_inverse(True, lambda _s: None)
    assert out["instances"] == 2 and out["modes_identifiable"] == 4
    for key in (
        "median_rel_err_ident_pinn",
        "median_rel_err_ident_lm",
        "median_rel_err_full_pinn",
        "median_rel_err_full_lm",
        "pinn_run_s",
        "lm_run_s",
    ):
        assert np.isfinite(out[key]), key
    # the simulator's identifiable part is near the noise's reach, even on 2 draws
    assert out["median_rel_err_ident_lm"] < 0.5
