"""Why a solve stopped: the result codes shared by every termination."""

from __future__ import annotations

import equinox as eqx
import numpy as np


class RESULTS(eqx.Enumeration):
    """Why a solve stopped."""

    target_reached = "the residual RMSE reached the target eps (stop_at_eps)"
    max_iterations = "the iteration limit was reached"
    stalled = "the RMSE changed by less than stall_tol for stall_patience iterations"
    converged = "converged: projected gradient or scaled step below tolerance"
    no_progress = "no trial point reduced the objective (at the limit of precision)"
    # the certified stopping rules (CertifiedStop, used by least_squares)
    step_converged = "converged: the Gauss-Newton step is below rtol * |x| + atol"
    gradient_converged = "converged: the projected gradient is below gtol"
    zero_residual = "converged: the residual vanished (below eps^2 of its start)"
    precision_limit = ("converged to the limit of floating-point precision: the "
                       "Gauss-Newton step stopped shrinking")
    degenerate = ("stopped where a parameter no longer affects the residual (a plateau or "
                  "a minimum at infinity): not a certified minimum")
    nonfinite = "the residual is not finite at the start"


#: The result codes that mean a least-squares solve succeeded (CertifiedStop).
SUCCESS = ("converged", "step_converged", "gradient_converged", "zero_residual",
           "precision_limit")


def result_names(codes) -> list[str]:
    """The names (``"stalled"``, ...) of a solve's ``stats["result"]`` codes (any shape)."""
    names = {int(item._value): name for name, item in RESULTS._name_to_item.items()}
    return [names[int(c)] for c in np.atleast_1d(np.asarray(codes)).ravel()]
