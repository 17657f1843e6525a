"""Residual assembly: PDE/ODE collocation, boundary and initial conditions, observations.

A :class:`Term` is an operator evaluated at points: ``operator(u, x, q, datum)`` with
``u`` the solution as a function ``(d,) -> ()`` (differentiate it with
:func:`~invphys.pinn.derivative` / :func:`~invphys.pinn.laplacian`: forward mode),
``x`` the point, ``q`` the physical parameters and ``datum`` the point's target
value (0 when the term has none). Its residuals are ``weight / sqrt(N_t) *
operator(...)``, so the loss ``0.5 |r|^2`` is ``sum_t weight_t^2 mean_t(op^2) / 2``.

:class:`Residuals` ties terms to a :class:`~invphys.pinn.Field` (and the bounds of the
unknown physical parameters), finds once which subdomains each point touches, and
returns residuals, loss and the block :class:`~invphys.pinn.Linearisation` that the
Gauss-Newton solvers use (per-point Jacobians by reverse mode over the forward-mode
PDE operator, restricted to the point's subdomains).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from ._blocks import Linearisation, Pattern
from ._field import Bounded, Field, Theta

__all__ = ["Residuals", "Term", "dirichlet", "observation", "value_minus_datum"]


def value_minus_datum(u, x, q, datum):
    """``u(x) - datum``: Dirichlet conditions and observations."""
    return u(x) - datum


class Term(eqx.Module):
    """``operator`` at ``points (N, d)`` with targets ``data (N,)``, scaled by ``weight``
    (see the module docstring). Points and data are leaves: new data, same compile."""

    points: Float[Array, "N d"]
    data: Float[Array, " N"]
    weight: Float[Array, ""]
    operator: Callable = eqx.field(static=True)
    name: str = eqx.field(static=True, default="pde")

    def __init__(self, points, operator: Callable, data=None, weight=1.0, name: str = "pde"):
        pts = jnp.asarray(points, float)
        self.points = pts[:, None] if pts.ndim == 1 else pts
        n = self.points.shape[0]
        self.data = jnp.zeros(n, pts.dtype) if data is None else jnp.asarray(data, pts.dtype)
        self.weight = jnp.asarray(weight, pts.dtype)
        self.operator = operator
        self.name = name

    def __check_init__(self):
        if self.data.shape != self.points.shape[:1]:
            raise ValueError(f"term {self.name!r}: {self.points.shape[0]} points but data "
                             f"of shape {self.data.shape}")


def dirichlet(points, values, weight=1.0, name: str = "boundary") -> Term:
    """``u = values`` at ``points`` (boundary or initial values)."""
    return Term(points, value_minus_datum, values, weight, name)


def observation(points, values, sigma: float, name: str = "data") -> Term:
    """Observations ``values`` of ``u`` at ``points`` with noise ``sigma``: residuals
    ``(u(x_k) - y_k) / sigma``, i.e. the Gaussian negative log-likelihood."""
    n = np.shape(points)[0]
    return Term(points, value_minus_datum, values, np.sqrt(n) / sigma, name)


class Residuals(eqx.Module):
    """All residual terms of a PINN on one :class:`Field` (see the module docstring).

    ``bounds``: the box of the unknown physical parameters (a :class:`Bounded`; None:
    none). Built from concrete points (the subdomain cover is computed here once).
    """

    field: Field
    terms: tuple[Term, ...]
    bounds: Bounded | None
    slots: Int[Array, "N K"]
    mask: Bool[Array, "N K"]
    pattern: Pattern

    def __init__(self, field: Field, terms, bounds: Bounded | None = None):
        self.field = field
        self.terms = tuple(terms)
        self.bounds = bounds
        pts = np.concatenate([np.asarray(t.points) for t in self.terms])
        slots, mask = field.decomposition.cover(pts)
        self.slots, self.mask = jnp.asarray(slots), jnp.asarray(mask)
        self.pattern = Pattern.from_cover(slots, mask, field.decomposition.count)

    @property
    def n_phys(self) -> int:
        return 0 if self.bounds is None else self.bounds.lower.shape[0]

    def q(self, theta: Theta) -> Float[Array, " q"]:
        """The physical parameters (in their box) of ``theta``."""
        return theta.phys if self.bounds is None else self.bounds(theta.phys)

    def init(self, key: PRNGKeyArray, q0=None) -> Theta:
        """Fresh networks; physical parameters at ``q0`` (default: the box midpoint)."""
        nets = self.field.init(key)
        if self.bounds is None:
            return Theta(nets, jnp.zeros((0,), nets.dtype))
        if q0 is None:
            lo, hi = self.bounds.lower, self.bounds.upper
            q0 = jnp.where(jnp.isfinite(lo), 0.5 * (lo + hi), 0.0)
        return Theta(nets, self.bounds.inverse(jnp.asarray(q0, nets.dtype)))

    def _segments(self):
        start = 0
        for t in self.terms:
            n = t.points.shape[0]
            yield t, slice(start, start + n)
            start += n

    def _point_fn(self, term: Term):
        field, bounds = self.field, self.bounds
        scale = term.weight / jnp.sqrt(term.points.shape[0])

        def f(nets_s, phys, slots, mask, x, datum):
            q = phys if bounds is None else bounds(phys)
            u = lambda y: field.at_slots(nets_s, slots, mask, y, q)
            return scale * term.operator(u, x, q, datum)

        return f

    def residual(self, theta: Theta) -> Float[Array, " N"]:
        """All residuals, terms in order."""
        out = []
        for t, sl in self._segments():
            f = jax.vmap(self._point_fn(t), in_axes=(0, None, 0, 0, 0, 0))
            out.append(f(theta.nets[self.slots[sl]], theta.phys, self.slots[sl],
                         self.mask[sl], t.points, t.data))
        return jnp.concatenate(out)

    def loss(self, theta: Theta) -> Float[Array, ""]:
        """``0.5 |r(theta)|^2``."""
        r = self.residual(theta)
        return 0.5 * jnp.vdot(r, r)

    def linearise(self, theta: Theta) -> Linearisation:
        """Residuals and their Jacobian, local to each point's subdomains."""
        rs, js, jqs = [], [], []
        for t, sl in self._segments():
            f = self._point_fn(t)

            def with_aux(nets_s, phys, *rest, f=f):
                v = f(nets_s, phys, *rest)
                return v, v

            jf = jax.jacrev(with_aux, argnums=(0, 1), has_aux=True)
            (jn, jq), r = jax.vmap(jf, in_axes=(0, None, 0, 0, 0, 0))(
                theta.nets[self.slots[sl]], theta.phys, self.slots[sl], self.mask[sl],
                t.points, t.data)
            rs.append(r)
            js.append(jn)
            jqs.append(jq)
        return Linearisation(jnp.concatenate(rs), jnp.concatenate(js), jnp.concatenate(jqs),
                             self.slots, self.mask, self.pattern)

    def solution(self, theta: Theta, x) -> Float[Array, " M"]:
        """``u`` at points ``x (M, d)`` (or ``(M,)`` in 1D), every subdomain evaluated."""
        x = jnp.asarray(x)
        x = x[:, None] if x.ndim == 1 else x
        q = self.q(theta)
        return jax.vmap(lambda xi: self.field(theta.nets, xi, q))(x)
