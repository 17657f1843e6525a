"""Why a solve stopped: the result codes shared by every termination.

A code is what happened, in one word; ``RESULTS[code]`` says it in a sentence (the
``message`` of a solution). :data:`SUCCESS` lists the codes that mean a
:func:`invphys.least_squares` solve found a minimiser (``success=True``); every other
code says why it did not.
"""

from __future__ import annotations

import equinox as eqx
import numpy as np


class RESULTS(eqx.Enumeration):
    """Why a solve stopped."""

    target_reached = "the residual RMSE reached the target eps (stop_at_eps)"
    max_iterations = "the iteration limit was reached"
    stalled = "the RMSE changed by less than stall_tol for stall_patience iterations"
    converged = "converged: projected gradient or scaled step below tolerance"
    no_progress = ("no progress: no trial point reduced the objective beyond its "
                   "rounding, at a point that is not a minimum to working precision (the "
                   "gradient is larger than rounding explains)")
    # the certified stopping rules (CertifiedStop, used by least_squares)
    step_converged = "converged: the Gauss-Newton step is below rtol * |x| + atol"
    gradient_converged = "converged: the projected gradient is below gtol"
    zero_residual = "converged: the residual vanished (below eps^2 of its start)"
    precision_limit = ("converged to the limit of floating-point precision: the "
                       "Gauss-Newton step stopped shrinking")
    degenerate = ("stopped where a parameter no longer affects the residual (a plateau or "
                  "a minimum at infinity): not a certified minimum")
    nonfinite = "the residual is not finite at the start"
    # (new codes go last: the integer values of the older ones stay as they were)
    cost_converged = ("converged: a minimum to working precision (no step along the "
                      "gradient or the Gauss-Newton step can lower the cost by more than "
                      "its rounding, at positive curvature; x is then known to about "
                      "sqrt(eps) relative)")
    nonfinite_trial = ("stopped: the residual is NaN or inf at the steps the method "
                       "proposes from x, and no finite trial reduced the objective: x is "
                       "not a minimum to working precision")


#: The result codes that mean a least-squares solve succeeded (CertifiedStop).
SUCCESS = ("converged", "step_converged", "gradient_converged", "zero_residual",
           "precision_limit", "cost_converged")


def result_names(codes) -> list[str]:
    """The names (``"stalled"``, ...) of a solve's ``stats["result"]`` codes (any shape)."""
    names = {int(item._value): name for name, item in RESULTS._name_to_item.items()}
    return [names[int(c)] for c in np.atleast_1d(np.asarray(codes)).ravel()]
