"""DeceptronNet v0 against x-GD and LM on Deblur-2D, under the paper's fairness protocol.

The protocol ("DeceptronNet v0" in the Deceptron protocol spec):

* every method starts from the same point, ``starts(y) = clamp(upsample(y), 0, 1)``;
* the baselines stop when RMSE(A(x) - y) <= 0.3 x its value at the start, or after 80
  iterations; projected gradient (x-GD, p = -alpha G, eta = 1) with Armijo backtracking
  (alpha = 1, halved up to 8 times, c = 1e-4) and Levenberg-Marquardt as Newton-CG (10
  CG iterations, adaptive damping from 1e-2), both from the shared solver layer
  (:class:`invphys.ProjectedGradient`, :class:`invphys.LevenbergMarquardt` and
  :class:`invphys.Rules`). No relaxation (``rho = 1``: the 2-D protocol names plain
  backtracking) and no stall stop (the protocol stops only on the residual or the cap).
* the baselines know each sample's true kernel sigma; DeceptronNet only A_nom (6 steps).

Reported per method: x-RMSE (mean over images of the per-image RMSE), the final data
residual RMSE(A_true(x) - y) (for every method under the *true* kernel), its ratio to
the start's residual, iterations (mean) and the fraction that met the 0.3 criterion,
and wall time per image of the batched solve (compilation excluded and reported
separately). Beyond the paper: the baselines given only the nominal kernel (their
stop test then uses A_nom too: it is all they know), and a kernel-mismatch test set
with sigma ~ U(2.0, 2.6), outside the training range U(0.7, 2.0), built with the spec's
operator (static kernel radius 8 px, i.e. the Gaussian truncated at >= 3.07 sigma and
renormalised) so that the same compiled solvers serve both sets.

Per-sample kernels, batched. :func:`invphys.solve` vmaps one problem over a batch of
(y, x0) and takes one absolute ``Rules.eps``; here both the forward (sigma) and the stop
threshold (0.3 x the sample's own start residual) differ per sample. So the runner
vmaps the solver layer's single-problem loop (:func:`invphys.solve.solve_one`, the
loop ``solve`` itself runs, unchanged) over (sigma, eps, y, x0) with the problem
rebuilt per sample by :func:`invphys.physics.deblur2d.true_problem` (see
:func:`make_batched_solver`).

Two consequences of the protocol worth knowing when reading the tables. The objective
is Phi = 1/2 mean(r^2) over the 1024 pixels of y, so with eta = 1 the x-GD step is tiny
(|G| ~ 1e-6 per pixel) and x-GD barely leaves the start in 80 iterations. And the noise
(std 0.03 sqrt(y), RMSE ~ 0.02) is above 0.3 x the start's residual (~0.012): a method
that meets the stop rule has fitted noise, which is why LM's x-RMSE can exceed the
start's.

Modules: :mod:`.protocol` (methods, rules, batched solves, test sets, rows),
:mod:`.outputs` (table and figure), :mod:`.run` (the entry points and the section of
``invphys reproduce``). The baselines need float64 (``jax_enable_x64``, switched on by
the entry point: the CLI, the tests); this package changes no global JAX setting.
"""

from .outputs import COLUMNS, recovery_figure, write_tables
from .protocol import (
    EPS_REL,
    MAX_ITER,
    MISMATCH_RANGE,
    PAPER,
    TARGET_X_RMSE,
    SolverBank,
    TestSet,
    baseline_methods,
    baseline_rows,
    evaluate_baselines,
    evaluate_set,
    make_batched_solver,
    protocol_rules,
    require_x64,
    residual_rmse,
    rows_reached,
    run_net,
    starts,
    subset,
    test_sets,
)
from .run import (
    BASELINE_CACHE,
    FULL_BASELINE_IMAGES,
    QUICK_IMAGES,
    QUICK_OVERRIDES,
    SHIPPED_NAME,
    SHIPPED_OVERRIDES,
    compute_baselines,
    reproduce_deblur,
    section,
)

__all__ = [
    "BASELINE_CACHE", "COLUMNS", "EPS_REL", "FULL_BASELINE_IMAGES", "MAX_ITER",
    "MISMATCH_RANGE", "PAPER", "QUICK_IMAGES", "QUICK_OVERRIDES", "SHIPPED_NAME",
    "SHIPPED_OVERRIDES", "TARGET_X_RMSE", "SolverBank", "TestSet", "baseline_methods",
    "baseline_rows", "compute_baselines", "evaluate_baselines", "evaluate_set",
    "make_batched_solver", "protocol_rules", "recovery_figure", "reproduce_deblur",
    "require_x64", "residual_rmse", "rows_reached", "run_net", "section", "starts",
    "subset", "test_sets", "write_tables",
]
