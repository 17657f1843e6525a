"""The shared protocol's rules and result codes."""

from __future__ import annotations

import equinox as eqx


class RESULTS(eqx.Enumeration):
    """Why a solve stopped."""

    target_reached = "the residual RMSE reached the target eps (stop_at_eps)"
    max_iterations = "the iteration limit was reached"
    stalled = "the RMSE changed by less than stall_tol for stall_patience iterations"
    converged = "converged: projected gradient or scaled step below tolerance"
    no_progress = "no trial point reduced the objective (at the limit of precision)"
    # the production stopping rules (``Rules(endgame=True)``, used by least_squares)
    step_converged = "converged: the Gauss-Newton step is below rtol * |x| + atol"
    gradient_converged = "converged: the projected gradient is below gtol"
    zero_residual = "converged: the residual vanished (below eps^2 of its start)"
    precision_limit = ("converged to the limit of floating-point precision: the "
                       "Gauss-Newton step stopped shrinking")
    degenerate = ("stopped where a parameter no longer affects the residual (a plateau or "
                  "a minimum at infinity): not a certified minimum")
    nonfinite = "the residual is not finite at the start"


#: The result codes that mean a least-squares solve succeeded (``Rules(endgame=True)``).
SUCCESS = ("converged", "step_converged", "gradient_converged", "zero_residual",
           "precision_limit")


class Rules(eqx.Module):
    """The protocol every method runs under: backtracking, relaxation, Armijo, stopping.

    Defaults are the Deceptron paper's: alpha0 = 1 halved up to 8 times, relaxation
    x <- (1 - rho) x + rho Proj(x + p) with rho = 0.4, Armijo constant c = 1e-4 on the
    unprojected proposal p, at most 200 iterations, a stall stop after 20 iterations
    whose RMSE changed by < 1e-4, and the target eps = 0.30 on the residual RMSE
    (recorded, and a stop only when ``stop_at_eps``).

    ``armijo="step"`` tests sufficient decrease on the step actually taken,
    Phi(x+) <= Phi(x) + c <G, x+ - x> (Armijo along the projection arc, the test that
    makes projected Newton methods converge to KKT points); ``"proposal"`` is the
    paper's Phi(x+) <= Phi(x) + c rho <G, p>. ``gtol`` (projected-gradient infinity
    norm), ``xtol`` (relative step) and ``ftol`` (relative actual and predicted cost
    reduction) are off (0) in the paper protocol and on in :func:`least_squares`.

    ``endgame=True`` switches to the production stopping rules of
    :func:`invphys.least_squares` (``xtol``, ``ftol`` and the stall test are then
    ignored; see ``_protocol._endgame``). Success: the method's undamped Gauss-Newton
    step is below ``rtol * |x| + atol`` in every component; the projected gradient is
    <= ``gtol``; the residual fell below eps |r_0|; the rounding floor (the GN step,
    already below sqrt(eps) |x|, no longer contracts); or ``stagnation`` iterations
    without progress / ``max_rejections`` failed line searches in a row at a point whose
    Jacobian columns are orthogonal to the residual to eps^(1/3). Once the GN step is
    below ``polish`` |x| (scaled), the plain GN step is taken when Deuflhard's natural
    monotonicity test accepts it (the cost cannot see the last digits of x), and Armijo
    tolerates a rise of ``noise_tol`` ulps of Phi. All of it is off by default.
    """

    alpha0: float = 1.0
    max_halvings: int = eqx.field(static=True, default=8)
    rho: float = 0.4
    armijo_c: float = 1e-4
    armijo: str = eqx.field(static=True, default="proposal")
    max_iter: int = eqx.field(static=True, default=200)
    stall_tol: float = 1e-4
    stall_patience: int = 20
    eps: float = 0.30
    stop_at_eps: bool = eqx.field(static=True, default=False)
    gtol: float = 0.0
    xtol: float = 0.0
    ftol: float = 0.0
    endgame: bool = eqx.field(static=True, default=False)
    rtol: float = 0.0
    atol: float = 0.0
    noise_tol: float = 0.0
    polish: float = 0.0
    max_rejections: int = eqx.field(static=True, default=12)
    stagnation: int = eqx.field(static=True, default=10)

    def __check_init__(self):
        if self.armijo not in ("proposal", "step"):
            raise ValueError(f"armijo must be 'proposal' or 'step', got {self.armijo!r}")
        if self.max_iter < 1 or self.max_halvings < 0:
            raise ValueError("max_iter must be >= 1 and max_halvings >= 0")


def result_names(codes) -> list[str]:
    """The names (``"stalled"``, ...) of a solve's ``stats["result"]`` codes (any shape)."""
    import numpy as np

    names = {int(item._value): name for name, item in RESULTS._name_to_item.items()}
    return [names[int(c)] for c in np.atleast_1d(np.asarray(codes)).ravel()]
