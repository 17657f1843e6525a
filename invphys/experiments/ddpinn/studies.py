"""The four studies of paper ``ddpinn``; each returns plain numbers (lists, floats).

* :func:`oscillator` -- the FBPINN harmonic oscillator (omega_0 = 80), four trainers;
* :func:`poisson` -- Poisson 2D as in energy natural gradient (Mueller and Zeinhofer 2023);
* :func:`inverse` -- the damped oscillator's identifiable parameters, PINN + GN beside
  the diffrax simulator + LM (:func:`invphys.solve.solve`) on the same noisy data;
* :func:`scaling` -- seconds per GN direction against the number of subdomains.
"""

from __future__ import annotations

import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import invphys.pinn as pinn

from ...physics import load_problem
from ...physics.oscillator import identifiable
from ...solve import solve
from ..timing import time_call

D, W0 = 2.0, 80.0  # the FBPINN library's HarmonicOscillator1D(d=2, w0=80)


def oscillator_exact(t):
    w = np.sqrt(W0**2 - D**2)
    phi = np.arctan(-D / w)
    return np.exp(-D * t) * np.cos(phi + w * t) / np.cos(phi)


def oscillator_op(u, x, q, datum):
    """``(u'' + 2 d u' + w0^2 u) / w0^2`` (FBPINN's residual, scaled by 1/w0^2)."""
    return (pinn.derivative(u, 0, 2)(x) + 2 * D * pinn.derivative(u)(x) + W0**2 * u(x)) / W0**2


def oscillator_ansatz(x, u, q):
    """FBPINN's hard constraint ``u = 1 + tanh(t / 0.1)^2 N``: u(0) = 1, u'(0) = 0."""
    return 1.0 + jnp.tanh(x[0] / 0.1) ** 2 * u


def _osc_residuals(n_sub, width, depth, key, overlap):
    dec = pinn.Decomposition.uniform(0.0, 1.0, n_sub, overlap=overlap)
    field = pinn.Field.mlp(dec, width, depth, key=key, ansatz=oscillator_ansatz)
    return pinn.Residuals(field, [pinn.Term(np.linspace(0, 1, 200), oscillator_op)])


def _summary(hist, target):
    it = next((i for i, m in zip(hist["iteration"], hist["metric"], strict=True)
               if m <= target), None)
    tm = next((s for s, m in zip(hist["time_s"], hist["metric"], strict=True)
               if m <= target), None)
    return {"final_error": hist["metric"][-1], "iterations": hist["iteration"][-1],
            "run_s": hist["time_s"][-1], "compile_s": hist["compile_s"],
            "iters_to_target": it, "seconds_to_target": tm, "curve": {
                k: hist[k] for k in ("iteration", "time_s", "metric", "loss")}}


def oscillator(quick, overlap, log):
    """Single network vs FBPINN (15 subdomains, [1, 32, 1]), each with Adam and GN."""
    adam_steps = 3000 if quick else 20000
    gn_iters = 150 if quick else 300
    tt = np.linspace(0, 1, 500)
    runs = {}
    specs = [("single network + Adam", 1, 32, 2, "adam"),
             ("FBPINN + Adam", 15, 32, 1, "adam"),
             ("single network + GN", 1, 32, 2, "gn"),
             ("FBPINN + GN", 15, 32, 1, "gn")]
    for name, n_sub, width, depth, how in specs:
        res = _osc_residuals(n_sub, width, depth, jax.random.key(0), overlap)
        theta = res.init(jax.random.key(1))
        metric = pinn.relative_l2(res, tt, oscillator_exact(tt))
        if how == "adam":
            _, hist = pinn.fit_optax(res, optax.adam(1e-3), theta, adam_steps,
                                     chunk=adam_steps // 20, metric=metric)
        else:
            solver = pinn.BandedSolve() if n_sub > 1 else pinn.DenseSolve("auto")
            _, hist = pinn.fit_gauss_newton(res, solver, theta, gn_iters, metric=metric,
                                            every=5, target=1e-5)
        runs[name] = dict(_summary(hist, 1e-4), parameters=n_sub * res.field.size,
                          subdomains=n_sub, optimizer=how)
        log(f"    {name:<24} rel L2 {hist['metric'][-1]:.3e} after {hist['iteration'][-1]} "
            f"({hist['time_s'][-1]:.1f} s)")
    return {"adam_steps": adam_steps, "gn_iterations": gn_iters, "overlap": overlap,
            "runs": runs}


def poisson_op(u, x, q, datum):
    """``Delta u + f`` with ``f = 2 pi^2 sin(pi x) sin(pi y)`` (``-Delta u = f``)."""
    f = 2 * jnp.pi**2 * jnp.sin(jnp.pi * x[0]) * jnp.sin(jnp.pi * x[1])
    return pinn.laplacian(u, x) + f


def _poisson_points(n):
    g = (np.arange(n) + 0.5) / n
    inner = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], 1)
    s = np.linspace(0, 1, n + 1)[:-1]
    z, o = np.zeros_like(s), np.ones_like(s)
    bdry = np.concatenate([np.stack(p, 1) for p in ((s, z), (o, s), (1 - s, o), (z, 1 - s))])
    return inner, bdry


def poisson(quick, log):
    """GN (dense, single network; dense and block-PCG on a 3 x 3 FBPINN) vs Adam."""
    n = 20 if quick else 30
    inner, bdry = _poisson_points(n)
    g = np.linspace(0, 1, 41)
    test = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], 1)
    exact = np.sin(np.pi * test[:, 0]) * np.sin(np.pi * test[:, 1])
    terms = [pinn.Term(inner, poisson_op, name="pde"),
             pinn.dirichlet(bdry, np.zeros(len(bdry)))]
    gn_iters = 60 if quick else 100
    adam_steps = 2000 if quick else 20000
    specs = [("single network + GN (dense)", (1, 1), 32, "gn", pinn.DenseSolve("auto")),
             ("FBPINN 3x3 + GN (dense)", (3, 3), 16, "gn", pinn.DenseSolve("auto")),
             ("FBPINN 3x3 + GN (block-Jacobi PCG)", (3, 3), 16, "gn",
              pinn.PCGSolve(rtol=1e-12, max_steps=400)),
             ("single network + Adam", (1, 1), 32, "adam", None)]
    runs = {}
    for name, shape, width, how, solver in specs:
        dec = pinn.Decomposition.uniform([0.0, 0.0], [1.0, 1.0], shape, overlap=1.9)
        res = pinn.Residuals(pinn.Field.mlp(dec, width, 1, key=jax.random.key(0)), terms)
        theta = res.init(jax.random.key(1))
        metric = pinn.relative_l2(res, test, exact)
        if how == "adam":
            _, hist = pinn.fit_optax(res, optax.adam(1e-3), theta, adam_steps,
                                     chunk=adam_steps // 20, metric=metric)
        else:
            _, hist = pinn.fit_gauss_newton(res, solver, theta, gn_iters, metric=metric,
                                            every=2, target=1e-8)
            hist["cg_steps_mean"] = float(np.mean(hist["solver_steps"]))
        runs[name] = dict(_summary(hist, 1e-6), parameters=dec.count * res.field.size,
                          subdomains=dec.count, cg_steps_mean=hist.get("cg_steps_mean"))
        log(f"    {name:<36} rel L2 {hist['metric'][-1]:.3e} after {hist['iteration'][-1]} "
            f"({hist['time_s'][-1]:.1f} s)")
    return {"grid": n, "gn_iterations": gn_iters, "adam_steps": adam_steps, "runs": runs}


def inverse_op(u, x, q, datum):
    """``x'' + (c/m) x' + (k/m) x`` with ``q = (c/m, k/m, x0, v0)``."""
    return pinn.derivative(u, 0, 2)(x) + q[0] * pinn.derivative(u)(x) + q[1] * u(x)


def inverse_ansatz_for(t_final):
    def ansatz(x, u, q):
        t = x[0]
        return q[2] + q[3] * t + (t / t_final) ** 2 * u
    return ansatz


def inverse(quick, log):
    """Recover (c/m, k/m, x0, v0) from the ``oscillator`` problem's noisy observations."""
    problem = load_problem("oscillator")
    ph = problem.spec["physics"]
    t_final, n_obs, sigma = ph["t_final"], ph["n_obs"], problem.spec["noise"]["std"]
    count = 4 if quick else 20
    k_x, k_n = jax.random.split(jax.random.key(2024))
    x_true = problem.sample(k_x, count)
    _, y = problem.observe(k_n, x_true)
    q_true, names = identifiable(np.asarray(x_true))
    lo, hi = np.asarray(problem.lower), np.asarray(problem.upper)
    q_lo = np.array([lo[1] / hi[0], lo[2] / hi[0], lo[3], lo[4]])
    q_hi = np.array([hi[1] / lo[0], hi[2] / lo[0], hi[3], hi[4]])
    q_start = identifiable(np.asarray(problem.start())[None])[0][0]

    t0 = time.perf_counter()
    sol_t = time_call(lambda yy: solve(problem, yy, method="lm").x, y, repeats=1)
    lm_total = time.perf_counter() - t0
    q_lm = identifiable(np.asarray(sol_t.output))[0]

    dec = pinn.Decomposition.uniform(0.0, t_final, 5, overlap=1.9)
    field = pinn.Field.mlp(dec, 32, 1, key=jax.random.key(0),
                           ansatz=inverse_ansatz_for(t_final))
    t_obs = np.linspace(0, t_final, n_obs)
    t_col = np.linspace(0, t_final, 200)
    bounds = pinn.Bounded(q_lo, q_hi)
    stages = ((1.0, 40), (1e2, 40), (1e4, 60)) if quick else ((1.0, 60), (1e2, 60), (1e4, 120))
    q_pinn, pinn_s, compile_s = [], [], 0.0
    for i in range(count):
        theta = None
        clock = 0.0
        for weight, iters in stages:
            res = pinn.Residuals(field, [pinn.Term(t_col, inverse_op, weight=weight),
                                         pinn.observation(t_obs, y[i], sigma)], bounds)
            if theta is None:
                theta = res.init(jax.random.key(1), q0=q_start)
            theta, hist = pinn.fit_gauss_newton(res, pinn.BandedSolve(), theta, iters)
            clock += hist["time_s"][-1]
            compile_s = max(compile_s, hist["compile_s"])
        q_pinn.append(np.asarray(res.q(theta)))
        pinn_s.append(clock)
    q_pinn = np.stack(q_pinn)
    rel = lambda q: np.abs(q - q_true) / np.maximum(np.abs(q_true), 1e-12)
    e_lm, e_pinn = rel(q_lm), rel(q_pinn)
    out = {"instances": count, "names": list(names), "q_true": q_true, "q_lm": q_lm,
           "q_pinn": q_pinn, "rel_err_lm": e_lm, "rel_err_pinn": e_pinn,
           "median_rel_err_lm": float(np.median(e_lm)),
           "median_rel_err_pinn": float(np.median(e_pinn)),
           "median_by_param_lm": np.median(e_lm, axis=0),
           "median_by_param_pinn": np.median(e_pinn, axis=0),
           "lm_run_s": sol_t.run_s, "lm_compile_s": sol_t.compile_s, "lm_total_s": lm_total,
           "pinn_run_s": float(np.sum(pinn_s)), "pinn_compile_s": compile_s,
           "stages": [list(s) for s in stages]}
    out["ratio_err"] = out["median_rel_err_pinn"] / out["median_rel_err_lm"]
    out["ratio_time"] = out["pinn_run_s"] / out["lm_run_s"]
    log(f"    median rel err: PINN+GN {out['median_rel_err_pinn']:.3e}, simulator+LM "
        f"{out['median_rel_err_lm']:.3e}; wall PINN {out['pinn_run_s']:.1f} s, "
        f"LM {out['lm_run_s']:.2f} s")
    return out


def scaling(quick, log):
    """Seconds per GN direction (linearise, assemble, solve) vs the number of subdomains,
    1D, 16 collocation points per subdomain, [1, 32, 1] networks, overlap 1.9."""
    counts = (8, 16, 32, 64) if quick else (8, 16, 32, 64, 128)
    dense_max = 32 if quick else 64
    rows = []
    for j in counts:
        dec = pinn.Decomposition.uniform(0.0, 1.0, j, overlap=1.9)
        field = pinn.Field.mlp(dec, 32, 1, key=jax.random.key(0), ansatz=oscillator_ansatz)
        res = pinn.Residuals(field, [pinn.Term(np.linspace(0, 1, 16 * j), oscillator_op)])
        theta = res.init(jax.random.key(1))
        rec = {"subdomains": j, "parameters": j * field.size}
        for name, solver in (("banded", pinn.BandedSolve()), ("dense", pinn.DenseSolve())):
            if name == "dense" and j > dense_max:
                rec[name] = None
                continue
            fn = eqx.filter_jit(lambda r, th, s=solver: s(r.linearise(th), 1e-3)[0])
            rec[name] = time_call(fn, res, theta, repeats=3, budget_s=20).run_s
        rows.append(rec)
        log(f"    J={j:<4} banded {rec['banded']:.4f} s  dense "
            f"{'-' if rec['dense'] is None else format(rec['dense'], '.4f')} s")
    fit = {}
    for name in ("banded", "dense"):
        pts = [(r["subdomains"], r[name]) for r in rows if r[name] is not None]
        if len(pts) >= 2:
            x, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            fit[name] = float(np.polyfit(x, t, 1)[0])
    return {"rows": rows, "exponent": fit}
