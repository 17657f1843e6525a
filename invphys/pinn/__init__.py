"""Physics-informed networks with overlapping domain decomposition and block Gauss-Newton.

The pieces, from geometry to training::

    dec = pinn.Decomposition.uniform(0.0, 1.0, 15, overlap=2.99)   # FBPINN subdomains
    field = pinn.Field.mlp(dec, width=32, key=key, ansatz=hard_bc)  # one net per subdomain
    res = pinn.Residuals(field, [pinn.Term(t, oscillator_op)])      # collocation, bc, data
    theta = res.init(key)                                           # Theta(nets, phys)
    theta, hist = pinn.fit_gauss_newton(res, pinn.BandedSolve(), theta, 300)

* :class:`Decomposition` -- overlapping boxes with cosine windows forming a partition
  of unity; :meth:`~Decomposition.cover` lists the subdomains each point touches.
* :class:`Field` -- the windowed sum of small Equinox networks (all evaluated with one
  ``vmap``), a hard-constraint ``ansatz``; :class:`Bounded` unknown physical parameters;
  :func:`derivative`, :func:`gradient`, :func:`laplacian`: forward-mode derivatives.
* :class:`Term` (:func:`dirichlet`, :func:`observation`) and :class:`Residuals` -- the
  weighted residual vector and its block :class:`Linearisation`.
* Solvers of the damped GN system: :class:`DenseSolve` (checking),
  :class:`BandedSolve` (block-banded Cholesky; linear in the number of subdomains in
  1D), :class:`PCGSolve` with a lineax preconditioner (:class:`BlockJacobi`).
* :func:`gauss_newton_step` (LM damping; Armijo backtracking or energy natural
  gradient's :func:`grid_search`), :func:`fit_gauss_newton`, :func:`fit_optax`,
  :func:`relative_l2`.
"""

from ._blocks import (
    AbstractBlockSolver,
    AbstractPreconditioner,
    BandedSolve,
    BlockJacobi,
    DenseSolve,
    Linearisation,
    Pattern,
    PCGSolve,
    from_vector,
    to_vector,
)
from ._decomposition import Decomposition, cosine_window
from ._field import Bounded, Field, Theta, derivative, gradient, laplacian
from ._residual import Residuals, Term, dirichlet, observation, value_minus_datum
from ._train import (
    GNState,
    fit_gauss_newton,
    fit_optax,
    gauss_newton_step,
    grid_search,
    init_state,
    relative_l2,
)

__all__ = [
    "AbstractBlockSolver", "AbstractPreconditioner", "BandedSolve", "BlockJacobi",
    "Bounded", "Decomposition", "DenseSolve", "Field", "GNState", "Linearisation",
    "PCGSolve", "Pattern", "Residuals", "Term", "Theta", "cosine_window", "derivative",
    "dirichlet", "fit_gauss_newton", "fit_optax", "from_vector", "gauss_newton_step",
    "gradient", "grid_search", "init_state", "laplacian", "observation", "relative_l2", "to_vector",
    "value_minus_datum",
]
