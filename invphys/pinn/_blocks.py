"""The block-sparse Gauss-Newton system of a decomposed PINN, and its solvers.

With parameters ``Theta(nets (J, P), phys (q,))`` and residuals ``r_i`` that each
depend on the few subdomains whose support holds point ``i`` (``slots[i]``), the
Jacobian is stored locally, ``jac (N, K, P)`` and ``jac_q (N, q)``, and the Gram matrix
``G = J^T J`` has a non-zero ``P x P`` block ``(a, b)`` only when some point lies in both
subdomains a and b (overlapping neighbours): a :class:`Pattern`, fixed by the points.
The physical parameters add a border (``J x P x q``) and a corner (``q x q``): an arrow.

Solvers of the damped system ``(G + lambda I) d = -J^T r`` (all return ``(d, steps)``):

* :class:`DenseSolve` -- the full matrix, Cholesky (for checking; cubic in ``J``);
* :class:`BandedSolve` -- block-banded Cholesky on the subdomain order (consecutive
  subdomains grouped into super-blocks of ``bandwidth`` so the matrix is block
  tridiagonal, then a block Thomas sweep in ``lax.scan``); the border by a Schur
  complement. Exact; linear in ``J`` for a 1D chain;
* :class:`PCGSolve` -- lineax CG on the matrix-free ``G`` with a preconditioner passed
  in (:class:`BlockJacobi`: the inverse diagonal blocks, i.e. additive Schwarz on
  the non-overlapping parameter blocks), for any decomposition.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
import lineax as lx
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._field import Theta

__all__ = ["AbstractBlockSolver", "AbstractPreconditioner", "BandedSolve", "BlockJacobi",
           "DenseSolve", "Linearisation", "PCGSolve", "Pattern"]


class Pattern(eqx.Module):
    """The non-zero blocks ``(a, b)``, ``a <= b``, of ``G`` and the ``(point, slot,
    slot)`` triples that feed each one (padded with weight 0)."""

    first: tuple[int, ...] = eqx.field(static=True)
    second: tuple[int, ...] = eqx.field(static=True)
    count: int = eqx.field(static=True)
    point: Int[Array, "pairs m"]
    slot_a: Int[Array, "pairs m"]
    slot_b: Int[Array, "pairs m"]
    weight: Float[Array, "pairs m"]

    @classmethod
    def from_cover(cls, slots, mask, count: int) -> Pattern:
        slots, mask = np.asarray(slots), np.asarray(mask, bool)
        n, k = slots.shape
        i, ka, kb = (a.ravel() for a in np.meshgrid(np.arange(n), np.arange(k), np.arange(k),
                                                    indexing="ij"))
        a, b = slots[i, ka], slots[i, kb]
        keep = mask[i, ka] & mask[i, kb] & (a <= b)
        i, ka, kb, a, b = i[keep], ka[keep], kb[keep], a[keep], b[keep]
        pairs, which = np.unique(np.stack([a, b], 1), axis=0, return_inverse=True)
        which = which.ravel()
        order = np.argsort(which, kind="stable")
        sizes = np.bincount(which, minlength=len(pairs))
        m = int(sizes.max())
        arr = np.zeros((3, len(pairs), m), np.int32)
        wt = np.zeros((len(pairs), m))
        start = 0
        for p, sz in enumerate(sizes):
            sel = order[start:start + sz]
            arr[:, p, :sz] = i[sel], ka[sel], kb[sel]
            wt[p, :sz] = 1.0
            start += sz
        return cls(tuple(int(x) for x in pairs[:, 0]), tuple(int(x) for x in pairs[:, 1]),
                   count, jnp.asarray(arr[0]), jnp.asarray(arr[1]), jnp.asarray(arr[2]),
                   jnp.asarray(wt))

    @property
    def bandwidth(self) -> int:
        """The largest ``b - a`` over the non-zero blocks (1: block tridiagonal)."""
        return max(b - a for a, b in zip(self.first, self.second, strict=True))

    @property
    def diagonal(self) -> tuple[int, ...]:
        """Index of block ``(a, a)`` for each subdomain ``a``."""
        where = {a: p for p, (a, b) in enumerate(zip(self.first, self.second, strict=True))
                 if a == b}
        return tuple(where[a] for a in range(self.count))


def to_vector(t: Theta) -> Float[Array, " n"]:
    return jnp.concatenate([t.nets.ravel(), t.phys])


def from_vector(v: Float[Array, " n"], like: Theta) -> Theta:
    n = like.nets.size
    return Theta(v[:n].reshape(like.nets.shape), v[n:])


class Linearisation(eqx.Module):
    """Residuals ``r`` and their local Jacobian at one ``Theta`` (see the module docstring)."""

    r: Float[Array, " N"]
    jac: Float[Array, "N K P"]
    jac_q: Float[Array, "N q"]
    slots: Int[Array, "N K"]
    mask: Bool[Array, "N K"]
    pattern: Pattern

    @property
    def value(self) -> Float[Array, ""]:
        """``0.5 |r|^2``."""
        return 0.5 * jnp.vdot(self.r, self.r)

    def like(self) -> Theta:
        n_sub, p = self.pattern.count, self.jac.shape[-1]
        return Theta(jnp.zeros((n_sub, p), self.r.dtype), jnp.zeros(self.jac_q.shape[1:],
                                                                     self.r.dtype))

    def jvp(self, v: Theta) -> Float[Array, " N"]:
        """``J v``."""
        return jnp.einsum("nkp,nkp->n", self.jac, v.nets[self.slots]) + self.jac_q @ v.phys

    def vjp(self, u: Float[Array, " N"]) -> Theta:
        """``J^T u``."""
        like = self.like()
        nets = like.nets.at[self.slots].add(self.jac * u[:, None, None])
        return Theta(nets, self.jac_q.T @ u)

    def gradient(self) -> Theta:
        """``J^T r``, the gradient of ``0.5 |r|^2``."""
        return self.vjp(self.r)

    def gram_matvec(self, v: Theta) -> Theta:
        return self.vjp(self.jvp(v))

    def blocks(self, which: tuple[int, ...] | None = None) -> Float[Array, "pairs P P"]:
        """The non-zero blocks ``G_ab`` (all, or the pattern entries ``which``)."""
        pat = self.pattern
        sel = slice(None) if which is None else np.asarray(which)
        i, ka, kb, w = pat.point[sel], pat.slot_a[sel], pat.slot_b[sel], pat.weight[sel]
        return jnp.einsum("qmi,qmj,qm->qij", self.jac[i, ka], self.jac[i, kb], w)

    def border(self) -> Float[Array, "J P q"]:
        """``G`` between the networks and the physical parameters."""
        outer = self.jac[:, :, :, None] * self.jac_q[:, None, None, :]
        return jnp.zeros(self.like().nets.shape + self.jac_q.shape[1:],
                         self.r.dtype).at[self.slots].add(outer)

    def corner(self) -> Float[Array, "q q"]:
        return self.jac_q.T @ self.jac_q

    def dense_jacobian(self) -> Float[Array, "N n"]:
        """The full Jacobian, columns ordered as :func:`to_vector`."""
        n, _, p = self.jac.shape
        full = jnp.zeros((n, self.pattern.count, p), self.r.dtype)
        full = full.at[jnp.arange(n)[:, None], self.slots].add(self.jac)
        return jnp.concatenate([full.reshape(n, -1), self.jac_q], axis=1)


class AbstractBlockSolver(eqx.Module):
    """Solves ``(G + damping I) d = -J^T r``; returns ``(d, steps)`` (steps: iterations
    of an iterative solver, 0 for a direct one)."""

    @abc.abstractmethod
    def __call__(self, lin: Linearisation, damping) -> tuple[Theta, Int[Array, ""]]:
        ...


class DenseSolve(AbstractBlockSolver):
    """The whole matrix and a Cholesky solve. ``side="params"``: ``n x n`` with ``n``
    the parameter count; ``"residuals"``: the equivalent ``N x N`` system ``d = -J^T (J J^T
    + damping I)^{-1} r`` (needs damping > 0 unless ``J`` has full row rank); ``"auto"``:
    the smaller; ``"svd"``: the thin SVD ``J = U S V^T`` and ``d = -V S (S^2 + damping)^+
    U^T r`` with singular values below ``rcond * s_max`` dropped (a truncated,
    damped pseudo-inverse; ``rcond=None``: ``sqrt(eps n)``, the cut that a least-squares
    solve of the ``n x n`` Gram system ``J^T J d = -J^T r`` makes with its default
    ``eps n`` cut on the Gram's singular values ``s^2``). The SVD never forms ``J^T J``,
    whose condition number is the square of ``J``'s: a PINN's ``J`` has singular values
    spread over 10+ decades, so Cholesky of ``J^T J + damping I`` fails (or is noise)
    below a damping of about ``1e-16 |J|^2``, while the SVD stays exact to ``eps |J|``
    at any damping, zero included (energy natural gradient's least-squares solve of
    the Gram system)."""

    side: str = eqx.field(static=True, default="params")
    rcond: float | None = eqx.field(static=True, default=None)

    def __call__(self, lin, damping):
        jd = lin.dense_jacobian()
        n_res, n_par = jd.shape
        if self.side == "svd":
            u, s, vt = jnp.linalg.svd(jd, full_matrices=False)
            rcond = (np.sqrt(np.finfo(jd.dtype).eps * n_par) if self.rcond is None
                     else self.rcond)
            keep = s > rcond * s[0]
            den = jnp.where(keep, s**2 + damping, 1.0)
            f = jnp.where(keep & (den > 0), s / den, 0.0)
            d = -(vt.T @ (f * (u.T @ lin.r)))
            return from_vector(d, lin.like()), jnp.zeros((), jnp.int32)
        side = self.side if self.side != "auto" else ("residuals" if n_res < n_par else "params")
        if side == "residuals":
            k = jd @ jd.T + damping * jnp.eye(n_res, dtype=jd.dtype)
            d = -jd.T @ jsl.cho_solve(jsl.cho_factor(k), lin.r)
        else:
            g = jd.T @ lin.r
            k = jd.T @ jd + damping * jnp.eye(n_par, dtype=jd.dtype)
            d = -jsl.cho_solve(jsl.cho_factor(k), g)
        return from_vector(d, lin.like()), jnp.zeros((), jnp.int32)


def _block_tridiagonal_solve(diag, upper, rhs):
    """Solve the SPD block-tridiagonal system (``diag (S, m, m)``, ``upper (S-1, m, m)``
    with ``A[s, s+1] = upper[s]``, ``A[s+1, s] = upper[s]^T``) for ``rhs (S, m, r)``:
    block Cholesky elimination forward, substitution backward, in ``lax.scan``."""
    c0 = jsl.cholesky(diag[0], lower=True)

    def forward(carry, inp):
        chol, z = carry
        d, u, b = inp
        w = jsl.cho_solve((chol, True), jnp.concatenate([u, z], axis=1))
        wu, wz = w[:, : u.shape[1]], w[:, u.shape[1]:]
        chol_new = jsl.cholesky(d - u.T @ wu, lower=True)
        z_new = b - u.T @ wz
        return (chol_new, z_new), (chol_new, z_new)

    _, (chols, zs) = jax.lax.scan(forward, (c0, rhs[0]), (diag[1:], upper, rhs[1:]))
    chols = jnp.concatenate([c0[None], chols])
    zs = jnp.concatenate([rhs[:1], zs])
    x_last = jsl.cho_solve((chols[-1], True), zs[-1])

    def backward(x_next, inp):
        chol, z, u = inp
        x = jsl.cho_solve((chol, True), z - u @ x_next)
        return x, x

    _, xs = jax.lax.scan(backward, x_last, (chols[:-1], zs[:-1], upper), reverse=True)
    return jnp.concatenate([xs, x_last[None]])


class BandedSolve(AbstractBlockSolver):
    """Exact block-banded solve on the subdomain numbering (see the module docstring);
    the ``q`` physical parameters by a Schur complement (``q + 1`` right-hand sides)."""

    def __call__(self, lin, damping):
        pat = lin.pattern
        bw, n_sub, p = pat.bandwidth, pat.count, lin.jac.shape[-1]
        bw = max(bw, 1)
        n_sup = -(-n_sub // bw)
        dtype = lin.r.dtype
        blocks = lin.blocks()
        a, b = np.asarray(pat.first), np.asarray(pat.second)
        sa, ra = np.divmod(a, bw)
        sb, rb = np.divmod(b, bw)
        same, off = sa == sb, sb == sa + 1
        diag = jnp.zeros((n_sup, bw, p, bw, p), dtype)
        diag = diag.at[sa[same], ra[same], :, rb[same], :].add(blocks[same])
        low = same & (a != b)
        diag = diag.at[sa[low], rb[low], :, ra[low], :].add(jnp.swapaxes(blocks[low], 1, 2))
        upper = jnp.zeros((max(n_sup - 1, 0), bw, p, bw, p), dtype)
        upper = upper.at[sa[off], ra[off], :, rb[off], :].add(blocks[off])
        m = bw * p
        pad = n_sup * bw - n_sub
        eye = jnp.eye(m, dtype=dtype)
        real = jnp.repeat(jnp.arange(n_sup * bw) < n_sub, p).reshape(n_sup, m)
        diag = diag.reshape(n_sup, m, m) + eye * jnp.where(real, damping, 1.0)[:, :, None]
        upper = upper.reshape(-1, m, m)
        g = lin.gradient()
        gn = jnp.concatenate([g.nets, jnp.zeros((pad, p), dtype)]).reshape(n_sup, m, 1)
        nq = g.phys.shape[0]
        if nq:
            border = jnp.concatenate([lin.border(), jnp.zeros((pad, p, nq), dtype)])
            rhs = jnp.concatenate([-gn, border.reshape(n_sup, m, nq)], axis=2)
        else:
            rhs = -gn
        if n_sup == 1:
            sol = jsl.cho_solve(jsl.cho_factor(diag[0]), rhs[0])[None]
        else:
            sol = _block_tridiagonal_solve(diag, upper, rhs)
        x_f = sol[:, :, 0].reshape(-1)[: n_sub * p]
        if nq:
            x_b = sol[:, :, 1:].reshape(-1, nq)[: n_sub * p]
            bmat = lin.border().reshape(-1, nq)
            schur = lin.corner() + damping * jnp.eye(nq, dtype=dtype) - bmat.T @ x_b
            y = jnp.linalg.solve(schur, -g.phys - bmat.T @ x_f)
            x_f = x_f - x_b @ y
        else:
            y = g.phys
        return Theta(x_f.reshape(n_sub, p), y), jnp.zeros((), jnp.int32)


class AbstractPreconditioner(eqx.Module):
    """Builds a lineax operator approximating ``(G + damping I)^{-1}``."""

    @abc.abstractmethod
    def __call__(self, lin: Linearisation, damping) -> lx.AbstractLinearOperator:
        ...


class BlockJacobi(AbstractPreconditioner):
    """The inverse of each subdomain's diagonal block (and of the ``q x q`` corner):
    additive Schwarz over the non-overlapping parameter blocks, one Cholesky each."""

    def __call__(self, lin, damping):
        like = lin.like()
        p = like.nets.shape[1]
        diag = lin.blocks(lin.pattern.diagonal) + damping * jnp.eye(p, dtype=lin.r.dtype)
        chol = jax.vmap(lambda m: jsl.cholesky(m, lower=True))(diag)
        nq = like.phys.shape[0]
        corner = lin.corner() + damping * jnp.eye(nq, dtype=lin.r.dtype)

        def apply(v: Theta) -> Theta:
            nets = jax.vmap(lambda c, x: jsl.cho_solve((c, True), x))(chol, v.nets)
            phys = jnp.linalg.solve(corner, v.phys) if nq else v.phys
            return Theta(nets, phys)

        return lx.FunctionLinearOperator(apply, jax.eval_shape(lambda: like),
                                         tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))


class PCGSolve(AbstractBlockSolver):
    """lineax CG on the matrix-free ``G + damping I`` (``J^T (J v)`` from the local
    Jacobian), preconditioned by ``preconditioner`` (None: plain CG)."""

    rtol: float = 1e-10
    atol: float = 0.0
    max_steps: int = eqx.field(static=True, default=500)
    preconditioner: AbstractPreconditioner | None = BlockJacobi()

    def __call__(self, lin, damping):
        like = lin.like()

        def mv(v):
            gv = lin.gram_matvec(v)
            return jax.tree.map(lambda a, b: a + damping * b, gv, v)

        op = lx.FunctionLinearOperator(mv, jax.eval_shape(lambda: like),
                                       tags=(lx.symmetric_tag, lx.positive_semidefinite_tag))
        options = {} if self.preconditioner is None else {
            "preconditioner": self.preconditioner(lin, damping)}
        rhs = jax.tree.map(jnp.negative, lin.gradient())
        cg = lx.CG(rtol=self.rtol, atol=self.atol, max_steps=self.max_steps)
        sol = lx.linear_solve(op, rhs, cg, options=options, throw=False)
        return sol.value, jnp.asarray(sol.stats["num_steps"], jnp.int32)
