"""Overlapping rectangular domain decomposition with smooth windows (FBPINN style).

A box ``[lower, upper]`` in ``d`` dimensions is covered by a tensor grid of
overlapping boxes (subdomains), numbered row-major. Subdomain ``j`` has the raw window

    phi_j(x) = prod_d ((1 + cos(pi z_d)) / 2)^2,   z = (x - c_j) / h_j,  |z_d| < 1

(zero outside; C^3 at the edge of its support), and the windows used are
``w_j = phi_j / sum_m phi_m``: a partition of unity on the box, smooth wherever the
sum is positive (everywhere on the box when the edge subdomains are centred on its
faces, as here). A point touches only the few subdomains whose support contains it:
:meth:`Decomposition.cover` lists them once, on concrete points, so the residual at a
point depends on those subdomains' parameters only (the block sparsity of the
Gauss-Newton system).
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

__all__ = ["Decomposition", "cosine_window"]


def cosine_window(z: Float[Array, "... d"]) -> Float[Array, "..."]:
    """``prod_d ((1 + cos(pi z_d)) / 2)^2`` for ``|z_d| < 1``, else 0 (and flat outside)."""
    zc = jnp.clip(z, -1.0, 1.0)
    return jnp.prod(((1.0 + jnp.cos(jnp.pi * zc)) / 2.0) ** 2, axis=-1)


class Decomposition(eqx.Module):
    """Overlapping boxes on ``[lower, upper]``: centres ``(J, d)``, half widths ``(J, d)``,
    ``shape`` the number of subdomains along each axis (row-major numbering)."""

    centers: Float[Array, "J d"]
    half_widths: Float[Array, "J d"]
    lower: Float[Array, " d"]
    upper: Float[Array, " d"]
    shape: tuple[int, ...] = eqx.field(static=True)

    def __check_init__(self):
        if self.centers.shape != self.half_widths.shape or self.centers.ndim != 2:
            raise ValueError("centers and half_widths must both have shape (J, d)")
        if int(np.prod(self.shape)) != self.centers.shape[0]:
            raise ValueError(f"shape {self.shape} does not hold {self.centers.shape[0]} boxes")

    @classmethod
    def uniform(cls, lower, upper, shape, overlap: float = 1.9) -> Decomposition:
        """``shape[a]`` subdomains along axis ``a``, centres equally spaced from ``lower``
        to ``upper`` (on the faces), each ``overlap`` times the centre spacing wide (the
        FBPINN library's ``get_subdomain_ws(xs, overlap)``). One subdomain along an axis
        spans the whole interval (plus 5%, so its window is positive on the closed box).
        ``overlap < 2``: a point lies in at most 2 subdomains per axis."""
        lower = np.atleast_1d(np.asarray(lower, float))
        upper = np.atleast_1d(np.asarray(upper, float))
        shape = tuple(int(s) for s in np.atleast_1d(shape))
        if len(shape) != lower.size or lower.size != upper.size:
            raise ValueError("lower, upper and shape must have one entry per dimension")
        if min(shape) < 1 or overlap <= 1.0:
            raise ValueError("need at least one subdomain per axis and overlap > 1")
        axes_c, axes_h = [], []
        for lo, hi, n in zip(lower, upper, shape, strict=True):
            if n == 1:
                axes_c.append(np.array([(lo + hi) / 2]))
                axes_h.append(np.array([1.05 * (hi - lo) / 2]))
            else:
                axes_c.append(np.linspace(lo, hi, n))
                axes_h.append(np.full(n, overlap * (hi - lo) / (n - 1) / 2))
        c = np.stack([g.ravel() for g in np.meshgrid(*axes_c, indexing="ij")], axis=1)
        h = np.stack([g.ravel() for g in np.meshgrid(*axes_h, indexing="ij")], axis=1)
        return cls(jnp.asarray(c), jnp.asarray(h), jnp.asarray(lower), jnp.asarray(upper),
                   shape)

    @property
    def count(self) -> int:
        """The number of subdomains ``J``."""
        return self.centers.shape[0]

    @property
    def dim(self) -> int:
        return self.centers.shape[1]

    def local(self, x: Float[Array, " d"]) -> Float[Array, "J d"]:
        """``x`` in each subdomain's coordinates: ``(x - c_j) / h_j`` (in [-1, 1] inside)."""
        return (x - self.centers) / self.half_widths

    def raw_windows(self, x: Float[Array, " d"]) -> Float[Array, " J"]:
        """``phi_j(x)`` for every subdomain."""
        return cosine_window(self.local(x))

    def windows(self, x: Float[Array, " d"]) -> Float[Array, " J"]:
        """The partition of unity ``w_j(x) = phi_j(x) / sum_m phi_m(x)`` (x in the box)."""
        phi = self.raw_windows(x)
        return phi / jnp.sum(phi)

    def cover(self, points) -> tuple[np.ndarray, np.ndarray]:
        """For concrete points ``(N, d)``: ``slots (N, K)``, the subdomains whose support
        contains each point (``K`` the most any point has), and ``mask (N, K)``, False on
        padding (padding repeats the point's first subdomain). Raises if a point lies
        in no subdomain."""
        pts = np.asarray(points, float).reshape(-1, self.dim)
        c, h = np.asarray(self.centers), np.asarray(self.half_widths)
        inside = np.all(np.abs(pts[:, None, :] - c[None]) < h[None], axis=2)
        counts = inside.sum(axis=1)
        if counts.min(initial=1) == 0:
            bad = pts[np.argmin(counts)]
            raise ValueError(f"point {bad} lies in no subdomain")
        k = int(counts.max(initial=1))
        slots = np.zeros((len(pts), k), np.int32)
        mask = np.zeros((len(pts), k), bool)
        for i, row in enumerate(inside):
            idx = np.flatnonzero(row)
            slots[i, : len(idx)] = idx
            slots[i, len(idx):] = idx[0]
            mask[i, : len(idx)] = True
        return slots, mask
