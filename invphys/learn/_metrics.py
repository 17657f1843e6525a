"""Final metrics of a trained Deceptron, as recorded in its model card.

Surrogate quality (normalised MSE of f on validation and test), the RJCP diagnostic,
the affine model's ||V W - I||_F and cond(W), and the accuracy of the learned inverse
g on the test split, measured on the quantities the observation identifies: for the
oscillator only (c/m, k/m, x0, v0) are identifiable (scaling m, c, k together leaves
x(t) unchanged), so g is scored on those, not on (m, c, k) themselves.

Card metrics: ``val_mse`` (all output dims; the protocol's number), ``val_mse_signal``
(dims above the noise only: Heat's pinned endpoints are pure noise), ``test_mse`` and
``test_mse_clean`` (against noisy and clean test outputs), ``rjcp`` (the JCP estimator,
4 Gaussian probes per validation sample), ``recon_val_mse`` (MSE(g(f(x)), x)); for the
affine model ``vw_i_fro`` = ||V W - I||_F, ``vw_i_fro_free`` (the same on unpinned
components), ``cond_w`` (2-norm condition number of W) and ``rjcp_exact`` (= ||VW-I||_F^2,
what RJCP estimates when s is the identity); for g on the noisy test split either
``g_median_rel_err`` (per identifiable quantity) or ``g_rel_l2_median`` (median relative
L2 error on the free components; large for Heat, whose forward map erases high modes:
g is a local inverse for D-IPG steps, not a denoiser).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._data import Dataset
from ._deceptron import AbstractDeceptron
from ._losses import as_probes, jcp_from_probes

#: ``x -> (q, names)``: the quantities of x an observation identifies (or None: all of x).
Identifiable = Callable[[np.ndarray], "tuple[np.ndarray, tuple[str, ...]] | None"]

FINAL_RJCP_PROBES = 4  # the protocol's ablation table uses 4 probes


def median_rel_errors(q_true: np.ndarray, q_hat: np.ndarray, names) -> dict[str, float]:
    """Per-quantity median of |q_hat - q| / |q| over samples (q = 0 samples skipped)."""
    out = {}
    for i, name in enumerate(names):
        t, h = q_true[:, i], q_hat[:, i]
        ok = t != 0
        out[name] = float(np.median(np.abs(h[ok] - t[ok]) / np.abs(t[ok])))
    return out


def g_accuracy(identifiable: Identifiable | None, x_true: np.ndarray, x_hat: np.ndarray,
               free: np.ndarray | None = None) -> dict[str, Any]:
    """How well g recovers x: the identifiable quantities when the problem names them
    (``identifiable(x) -> (q, names)``), else the relative L2 error."""
    x_true = np.asarray(x_true, np.float64)
    x_hat = np.asarray(x_hat, np.float64)
    q_true = identifiable(x_true) if identifiable is not None else None
    if q_true is not None:
        q, names = q_true
        qh, _ = identifiable(x_hat)
        errs = median_rel_errors(q, qh, names)
        return {"g_median_rel_err": errs, "g_median_rel_err_max": max(errs.values())}
    if free is not None:
        x_true, x_hat = x_true[:, free], x_hat[:, free]
    num = np.linalg.norm(x_hat - x_true, axis=1)
    den = np.linalg.norm(x_true, axis=1)
    ok = den > 0
    return {"g_rel_l2_median": float(np.median(num[ok] / den[ok]))}


@eqx.filter_jit
def _outputs(model, xv, xt, zt, xi):
    """Everything evaluate needs from the model, in one compiled call."""
    f, g = jax.vmap(model.f), jax.vmap(model.g)
    fv = f(xv)
    return {"fv": fv, "ft": f(xt), "gfv": g(fv), "gt": g(zt),
            "rjcp": jcp_from_probes(model, xv, xi)}


def evaluate(
    model: AbstractDeceptron,
    dataset: Dataset,
    *,
    seed: int = 0,
    probe: str = "gaussian",
    identifiable: Identifiable | None = None,
    pinned: tuple[int, ...] = (),
) -> dict[str, Any]:
    """The card's metrics (all MSEs in normalised output space)."""
    norm = dataset.normaliser
    mean, scale = np.asarray(norm.mean), np.asarray(norm.scale)
    zv = (np.asarray(dataset.y_val) - mean) / scale
    zt = (np.asarray(dataset.y_test) - mean) / scale
    zt_clean = (np.asarray(dataset.y_test_clean) - mean) / scale
    xv, xt = np.asarray(dataset.x_val), np.asarray(dataset.x_test)
    dtype = model_dtype(model)
    # RJCP probes from NumPy's seeded generator (no PRNG compile for a one-off draw)
    normal = np.random.default_rng(seed).standard_normal((*xv.shape[:1], FINAL_RJCP_PROBES,
                                                          xv.shape[1]))
    xi = as_probes(jnp.asarray(normal, dtype), probe)
    o = jax.device_get(_outputs(model, jnp.asarray(xv, dtype), jnp.asarray(xt, dtype),
                                jnp.asarray(zt, dtype), xi))
    fv, ft = np.asarray(o["fv"], np.float64), np.asarray(o["ft"], np.float64)
    signal = np.asarray(norm.signal)
    sq_val = (fv - zv) ** 2
    out: dict[str, Any] = {
        "val_mse": float(sq_val.mean()),
        "val_mse_signal": float(sq_val[:, signal].mean()) if signal.any() else None,
        "test_mse": float(((ft - zt) ** 2).mean()),
        "test_mse_clean": float(((ft - zt_clean) ** 2).mean()),
        "rjcp": float(o["rjcp"]),
        "rjcp_probes": FINAL_RJCP_PROBES,
        "recon_val_mse": float(((np.asarray(o["gfv"], np.float64) - xv) ** 2).mean()),
    }
    n = xv.shape[1]
    free = np.ones(n, bool)
    if pinned:
        free[np.asarray(pinned) % n] = False
    out.update(affine_metrics(model, free if pinned else None))
    out.update(g_accuracy(identifiable, xt, np.asarray(o["gt"]), free if pinned else None))
    return out


def affine_metrics(model: AbstractDeceptron, free: np.ndarray | None) -> dict[str, float]:
    """For a model with W and V (the affine Deceptron): ||V W - I||_F (also on the free
    components), cond(W), and what RJCP estimates for a linear s, ||V W - I||_F^2."""
    maps = model.affine()
    if maps is None:
        return {}
    W = np.asarray(maps[0], np.float64)
    E = np.asarray(maps[1], np.float64) @ W - np.eye(W.shape[1])
    out = {"vw_i_fro": float(np.linalg.norm(E)), "cond_w": float(np.linalg.cond(W))}
    if free is not None:
        out["vw_i_fro_free"] = float(np.linalg.norm(E[np.ix_(free, free)]))
    if maps[2]:
        out["rjcp_exact"] = float(np.sum(E**2))
    return out


def model_dtype(model: AbstractDeceptron):
    leaves = [x for x in jax.tree_util.tree_leaves(model) if eqx.is_inexact_array(x)]
    return leaves[0].dtype if leaves else jnp.result_type(float)
