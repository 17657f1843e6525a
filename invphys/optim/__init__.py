"""The Gauss-Newton family as optax transformations (``optax.GradientTransformationExtraArgs``).

Optimizers:

* :func:`gauss_newton` -- generalised Gauss-Newton, matrix-free, lineax CG, adaptive
  Levenberg-Marquardt damping, backtracking line search; ``mode="layerwise"`` keeps only
  the GN matrix's diagonal blocks (one per layer).
* :func:`gauss_newton_prox_linear` -- linearise, run an inner optax optimizer on the
  linearised model's loss, line-search along the result (the full-GN paper's scheme).
* :func:`sgn_lm` -- stochastic GN with a cumulative GN metric, LM damping and an
  optional projection onto a ball in that metric.

Curvature tools: :func:`linearize_ggn` (the matrix-free ``G v = J^T H_loss J v``),
:func:`ggn_lambda_min` / :func:`lanczos_extreme_eigenvalues` (Lanczos),
:func:`ggn_lambda_min_informative` (the smallest eigenvalue of ``G`` on its non-trivial
side: the output-space Gram when a batch has fewer outputs than parameters), and
:func:`project_onto_ball` (projection in a metric).

The extra-args contract (every optimizer here; the trainer calls them so)::

    updates, state = opt.update(grads, state, params,
        model_fn=model_fn,   # params -> outputs (a pytree), the model on the current batch
        loss_fn=loss_fn,     # outputs -> scalar loss (mean over the batch); closes over targets
        value=value,         # loss_fn(model_fn(params)), already computed
        grad=grads,          # the same as the first argument (optax's line-search convention)
        value_fn=value_fn,   # params -> loss_fn(model_fn(params)) (optax's convention)
        key=key)             # a PRNG key for this step
    params = optax.apply_updates(params, updates)   # updates are added

Unused keywords are ignored, so optax's plain optimizers (``optax.adam``) run in the
same loop; optax's line-search ones (``optax.lbfgs``) reject unknown keywords and run
as ``with_contract(optax.lbfgs())``. The Gauss-Newton optimizers raise
``TypeError`` naming ``model_fn``/``loss_fn`` when those are missing.
:func:`extra_args` builds the keywords for a plain optax loop (its docstring shows
one); :mod:`invphys.optim._contract` says more on the contract.

Every optimizer's state is a NamedTuple of arrays (checkpointable with equinox
serialisation); updates use ``lax`` control flow only, so they jit, vmap over seeds,
and run on batches sharded with ``jax.sharding``.
"""

from ._contract import extra_args, value_fn_of, with_contract
from ._curvature import (
    GGN,
    ggn_extreme_eigenvalues,
    ggn_lambda_min,
    ggn_lambda_min_informative,
    lanczos_extreme_eigenvalues,
    linearize_ggn,
)
from ._diagonal import (
    BasisState,
    GNDiagonalState,
    Rotation,
    diagonal_adam,
    diagonal_gn,
    scale_by_gn_diagonal,
    scale_by_rotation,
)
from ._gauss_newton import (
    GaussNewtonState,
    by_layer,
    gauss_newton,
    gauss_newton_direction,
    gauss_newton_prox_linear,
)
from ._linesearch import backtracking, lm_damping_update
from ._newton import (
    CurvatureMatrix,
    NewtonState,
    curvature_matrix,
    gn_k,
    gradient_error_bound,
    newton,
    unit_roundoff,
)
from ._sgn import SGNState, project_onto_ball, sgn_lm

__all__ = [
    "BasisState",
    "GNDiagonalState",
    "Rotation",
    "diagonal_adam",
    "diagonal_gn",
    "scale_by_gn_diagonal",
    "scale_by_rotation",
    "CurvatureMatrix",
    "GGN",
    "GaussNewtonState",
    "NewtonState",
    "SGNState",
    "backtracking",
    "by_layer",
    "curvature_matrix",
    "extra_args",
    "gauss_newton",
    "gauss_newton_direction",
    "gauss_newton_prox_linear",
    "ggn_extreme_eigenvalues",
    "ggn_lambda_min",
    "ggn_lambda_min_informative",
    "gn_k",
    "gradient_error_bound",
    "lanczos_extreme_eigenvalues",
    "linearize_ggn",
    "lm_damping_update",
    "newton",
    "project_onto_ball",
    "sgn_lm",
    "unit_roundoff",
    "value_fn_of",
    "with_contract",
]
