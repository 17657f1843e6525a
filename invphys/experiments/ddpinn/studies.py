"""The four studies of paper ``ddpinn``; each returns plain numbers (lists, floats).

* :func:`oscillator` -- the FBPINN harmonic oscillator (omega_0 = 80), four trainers;
* :func:`poisson` -- Poisson 2D as in energy natural gradient (Mueller and Zeinhofer 2023);
* :func:`inverse` -- the damped oscillator's identifiable parameters, PINN + GN beside
  the diffrax simulator + LM (:func:`invphys.solve.solve`) on the same noisy data;
* :func:`scaling` -- seconds per GN direction against the number of subdomains.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import invphys.pinn as pinn

from ...physics import load_problem
from ...physics.oscillator import identifiable
from ...solve import solve
from ..timing import compile_ahead, time_call

# Energy natural gradient's step: a pseudo-inverse of J (DenseSolve "svd", the Gram's
# least-squares cut) or CG, the grid line search over 2^-k, and a damping that is only a
# safeguard: it starts at 1e-3, shrinks 3x on every accepted step (rho_low = rho_high =
# 0) and grows 3x on a rejected one (see invphys.pinn.gauss_newton_step)
ENG = {"line_search": "grid", "rho_low": 0.0, "rho_high": 0.0}

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


def _osc_residuals(n_sub, width, depth, key, overlap, points=200):
    dec = pinn.Decomposition.uniform(0.0, 1.0, n_sub, overlap=overlap)
    field = pinn.Field.mlp(dec, width, depth, key=key, ansatz=oscillator_ansatz)
    return pinn.Residuals(field, [pinn.Term(np.linspace(0, 1, points), oscillator_op)])


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
    """Single network vs FBPINN (15 subdomains, [1, 32, 1], 200 collocation points),
    each with Adam and GN (energy natural gradient's step, :data:`ENG`); the full run
    adds FBPINN + GN on 400 points (the collocation floor: with 200 points on 13
    periods the error between the points stalls near 1e-4 while the loss still falls)."""
    adam_steps = 1000 if quick else 20000
    gn_iters = 40 if quick else 300
    tt = np.linspace(0, 1, 500)
    runs = {}
    specs = [("single network + Adam", 1, 32, 2, "adam", 200),
             ("FBPINN + Adam", 15, 32, 1, "adam", 200),
             ("single network + GN", 1, 32, 2, "gn", 200),
             ("FBPINN + GN", 15, 32, 1, "gn", 200)]
    if not quick:
        specs.append(("FBPINN + GN, 400 points", 15, 32, 1, "gn", 400))
    for name, n_sub, width, depth, how, points in specs:
        res = _osc_residuals(n_sub, width, depth, jax.random.key(0), overlap, points)
        theta = res.init(jax.random.key(1))
        metric = pinn.relative_l2(res, tt, oscillator_exact(tt))
        if how == "adam":
            _, hist = pinn.fit_optax(res, optax.adam(1e-3), theta, adam_steps,
                                     chunk=adam_steps // 20, metric=metric)
        else:
            # FBPINN: the block-banded Cholesky; single network (200 residuals, 1153
            # parameters): Cholesky of the 200 x 200 J J^T. The damping floor is the
            # default 1e-14: a Cholesky that fails gives a NaN step, which is rejected,
            # and the safeguard rule raises the damping until it factors
            solver = pinn.BandedSolve() if n_sub > 1 else pinn.DenseSolve("auto")
            kw = ENG
            _, hist = pinn.fit_gauss_newton(res, solver, theta, gn_iters, metric=metric,
                                            every=5, target=1e-6, **kw)
        runs[name] = dict(_summary(hist, 1e-4), parameters=n_sub * res.field.size,
                          subdomains=n_sub, optimizer=how, collocation=points)
        log(f"    {name:<24} rel L2 {hist['metric'][-1]:.3e} after {hist['iteration'][-1]} "
            f"({hist['time_s'][-1]:.1f} s)")
    return {"adam_steps": adam_steps, "gn_iterations": gn_iters, "overlap": overlap,
            "runs": runs, "gn_step": dict(ENG, damping0=1e-3)}


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
    """GN (dense pseudo-inverse, single network and a 3 x 3 FBPINN; block-Jacobi PCG on
    the FBPINN) vs Adam; the energy-natural-gradient setting (tanh [2, 32, 1], float64)."""
    n = 14 if quick else 30
    inner, bdry = _poisson_points(n)
    g = np.linspace(0, 1, 41)
    test = np.stack([a.ravel() for a in np.meshgrid(g, g, indexing="ij")], 1)
    exact = np.sin(np.pi * test[:, 0]) * np.sin(np.pi * test[:, 1])
    terms = [pinn.Term(inner, poisson_op, name="pde"),
             pinn.dirichlet(bdry, np.zeros(len(bdry)))]
    gn_iters = 40 if quick else 100
    adam_steps = 1000 if quick else 20000
    dense = pinn.DenseSolve("svd")
    # CG needs a damping it can resolve in max_steps: the plain LM rule, floor 1e-10
    lm_cg = {"line_search": "grid", "min_damping": 1e-10}
    specs = [("single network + GN (dense pinv)", (1, 1), 32, "gn", dense,
              dict(ENG, min_damping=0.0)),
             ("FBPINN 3x3 + GN (dense pinv)", (3, 3), 16, "gn", dense,
              dict(ENG, min_damping=0.0)),
             ("FBPINN 3x3 + GN (block-Jacobi PCG)", (3, 3), 16, "gn",
              pinn.PCGSolve(rtol=1e-12, max_steps=400), lm_cg),
             ("single network + Adam", (1, 1), 32, "adam", None, None)]
    if quick:
        specs = [s for s in specs if "dense pinv" not in s[0] or s[1] == (1, 1)]
    runs = {}
    for name, shape, width, how, solver, kw in specs:
        dec = pinn.Decomposition.uniform([0.0, 0.0], [1.0, 1.0], shape, overlap=1.9)
        res = pinn.Residuals(pinn.Field.mlp(dec, width, 1, key=jax.random.key(0)), terms)
        theta = res.init(jax.random.key(1))
        metric = pinn.relative_l2(res, test, exact)
        if how == "adam":
            _, hist = pinn.fit_optax(res, optax.adam(1e-3), theta, adam_steps,
                                     chunk=adam_steps // 20, metric=metric)
        else:
            _, hist = pinn.fit_gauss_newton(res, solver, theta, gn_iters, metric=metric,
                                            every=2, target=1e-8, **kw)
            hist["cg_steps_mean"] = float(np.mean(hist["solver_steps"]))
        runs[name] = dict(_summary(hist, 1e-6), parameters=dec.count * res.field.size,
                          subdomains=dec.count, cg_steps_mean=hist.get("cg_steps_mean"))
        log(f"    {name:<36} rel L2 {hist['metric'][-1]:.3e} after {hist['iteration'][-1]} "
            f"({hist['time_s'][-1]:.1f} s)")
    return {"grid": n, "gn_iterations": gn_iters, "adam_steps": adam_steps, "runs": runs,
            "gn_step": dict(ENG, damping0=1e-3), "gn_step_cg": lm_cg}


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
    count = 2 if quick else 20
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
    # penalty continuation on the physics (weights 1, 1e2, 1e4 on the ODE residual; the
    # data term is the Gaussian likelihood), each stage warm-started from the last
    stages = ((1.0, 25), (1e2, 25), (1e4, 40)) if quick else ((1.0, 60), (1e2, 60), (1e4, 120))
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


def _best_of(compiled, args, repeats, budget_s):
    """Best wall-clock and best process CPU seconds of ``repeats`` calls (stopping once
    the calls add up to ``budget_s``). CPU time counts this process's threads only, so
    other programs on a shared machine barely move it; the wall clock they do."""
    jax.block_until_ready(compiled(*args))  # one untimed call (allocation, caches)
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(compiled(*args))
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
        if sum(wall) > budget_s:
            break
    return min(wall), min(cpu)


def scaling(quick, log):
    """Seconds per GN direction (linearise, assemble, solve) vs the number of subdomains,
    1D, 16 collocation points per subdomain, [1, 32, 1] networks, overlap 1.9: compiled
    ahead (compile excluded), best of ``repeats`` calls, wall-clock and process CPU
    time; the exponents are fitted to the CPU time (the cost; the wall clock of a shared
    machine also carries the other programs' load) and reported for both."""
    counts = (8, 16, 32) if quick else (8, 16, 32, 64, 128)
    dense_max = 32 if quick else 64
    repeats = 15 if quick else 25  # cheap at small J; the budget caps the large ones
    budget_s = 4.0 if quick else 20.0
    rows = []
    for j in counts:
        dec = pinn.Decomposition.uniform(0.0, 1.0, j, overlap=1.9)
        field = pinn.Field.mlp(dec, 32, 1, key=jax.random.key(0), ansatz=oscillator_ansatz)
        res = pinn.Residuals(field, [pinn.Term(np.linspace(0, 1, 16 * j), oscillator_op)])
        theta = res.init(jax.random.key(1))
        rec = {"subdomains": j, "parameters": j * field.size}
        for name, solver in (("banded", pinn.BandedSolve()), ("dense", pinn.DenseSolve())):
            if name == "dense" and j > dense_max:
                rec[name] = rec[name + "_wall"] = None
                continue
            fn = jax.jit(lambda th, s=solver, r=res: s(r.linearise(th), 1e-3)[0])
            compiled, _ = compile_ahead(fn, theta)
            rec[name + "_wall"], rec[name] = _best_of(compiled, (theta,), repeats, budget_s)
        rows.append(rec)
        log(f"    J={j:<4} banded {rec['banded']:.4f} s CPU ({rec['banded_wall']:.4f} wall)  "
            f"dense {'-' if rec['dense'] is None else format(rec['dense'], '.4f')} s CPU")
    fit = {}
    for name in ("banded", "dense", "banded_wall", "dense_wall"):
        pts = [(r["subdomains"], r[name]) for r in rows if r[name] is not None]
        if len(pts) >= 2:
            x, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
            fit[name] = float(np.polyfit(x, t, 1)[0])
    return {"rows": rows, "exponent": fit, "clock": "process CPU s (best of repeats)"}
