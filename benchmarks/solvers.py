"""Solver layer vs peers on the true simulators: iterations, success, ms per problem.

    python -m benchmarks.solvers                  # 40 problems + batch of 1000 + N-scaling
    python -m benchmarks.solvers --quick          # 16 problems, batch 200, N up to 1024
    python -m benchmarks.solvers --problems oscillator --batch 0 --no-scaling
    python -m benchmarks.solvers --problems oscillator --only-batches   # cost vs batch size

Problems (float64, normalised residuals z = (y - mean) / std with the normaliser fitted
on ``--n-fit`` simulated noisy samples, as in the Deceptron protocol):

* ``oscillator``: the accurate simulator (``--osc-fidelity``; *accurate* is the exact
  flow, the closed-form matrix exponential; *adaptive* the Tsit5 integrator it
  replaced), bounds from the spec, the spec's midpoint start;
* ``heat1d``: the spec's simulator (``--heat-fidelity``, the paper's 200 explicit FD
  steps by default: the simulator that generates the paper's data; ``--heat-paper-form
  matrix`` applies the same scheme as one mat-vec), N = 64, box
  [-3, 3] with both endpoints pinned, the zero start. The two pinned endpoints carry
  only noise, so z-scoring puts a floor of ~0.2 under every method's RMSE: eps = 0.05
  is out of reach for all (see the reproduce command's discrepancy stop).

Solvers, all in this process on the same residuals, starts and bounds:

* ``invphys-gn``: the paper's projected Gauss-Newton (lam = 1e-3, 8 CG) under
  ``Rules(rho=1, armijo="step")`` with scipy's default stopping tolerances
  (xtol = ftol = 1e-8), batched (one jitted, vmapped while loop);
* ``invphys-lm``: adaptive Levenberg-Marquardt with the projected-Newton active set
  (``solver="auto"``: J from n JVPs and one SVD per iteration for n <= 400; on Heat
  also the matrix-free CG variant), same rules, batched; the row
  "stop at 0.30" is the same solve stopped at the first iterate with RMSE <= 0.30
  (the others stop at 0.05 or at the xtol / ftol tests); "compact" (batch run) is
  ``solve(..., compact=True)``: finished members are gathered out between rounds;
* ``scipy-trf``: ``scipy.optimize.least_squares(method="trf", bounds=...)`` with the
  exact Jacobian (jitted ``jax.jacfwd``), one problem at a time (it has no batch mode);
* ``optx-lm``: ``optimistix.LevenbergMarquardt`` (rtol = atol = 1e-8; no bounds, the
  answer clipped to the box afterwards), vmapped over the batch.

Pinned components are removed from the unknowns for the peers (scipy needs lb < ub).
Success at eps: the best normalised RMSE reached is <= eps. Times: the warm batched
call (best of ``--repeats``) divided by the batch size; compile time is the first
call minus a warm one. Ratios are printed against invphys-lm.

The batch-size table (``--batches``, default 16 / 200 / 1000) times invphys-lm per
problem at each batch size, as one vmapped loop (``compact=False``) and compacted
(``compact=True``), with the compile time of each, and the process's peak RSS after
the largest batch (``resource.getrusage``; a running maximum over the process).

The scaling part times single-problem LM iterations on Heat with N = 64 ... 4096
grid points (200 FD steps each): invphys matrix-free CG (one JVP + one VJP per CG
product) against optimistix (dense QR on the Jacobian from N JVPs) and scipy trf.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # python benchmarks/solvers.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# first: caps BLAS threads before numpy loads, switches x64 on
from benchmarks._common import device_line, peak_rss_mib, recorded  # noqa: E402

# isort: split
import argparse  # noqa: E402
import dataclasses  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import invphys  # noqa: E402
from invphys import (  # noqa: E402
    GaussNewton,
    LevenbergMarquardt,
    Normaliser,
    Rules,
    normalise_obs,
    normalised_problem,
)
from invphys.experiments.timing import time_call  # noqa: E402

EPS = (0.30, 0.05)


# ------------------------------------------------------------------------- problems
@dataclasses.dataclass
class Bench:
    """One benchmark problem: the normalised target, test observations and truths."""

    name: str
    target: invphys.Problem  # forward = normalised simulator
    y: jax.Array  # (count, m) normalised noisy observations
    x_true: jax.Array
    x0: jax.Array  # (n,) the shared start

    @property
    def free(self) -> np.ndarray:
        p = self.target.pinned
        return np.arange(self.x0.size) if p is None else np.flatnonzero(~np.asarray(p))

    def expand(self, z):
        """Free unknowns -> full x (pinned components at their value)."""
        return self.x0.at[self.free].set(z) if self.free.size < self.x0.size else z

    def free_bounds(self):
        lo = np.broadcast_to(np.asarray(self.target.lower, float), self.x0.shape)[self.free]
        hi = np.broadcast_to(np.asarray(self.target.upper, float), self.x0.shape)[self.free]
        return lo, hi


def make_bench(name: str, count: int, n_fit: int, seed: int, overrides: dict) -> Bench:
    problem = invphys.load_problem(name, overrides)
    k_x, k_n = jax.random.split(jax.random.key(seed))
    xs = problem.sample(k_x, n_fit + count)
    _, y_noisy = eqx.filter_jit(problem.observe)(k_n, xs)
    norm = Normaliser.fit(y_noisy[:n_fit], getattr(problem.noise, "sigma", None))
    target = normalised_problem(problem, norm)
    ph = problem.spec["physics"]
    form = ", one mat-vec" if ph["fidelity"] == "paper" and ph.get("paper_form") == "matrix" \
        else ""
    label = f"{name} ({ph.get('fidelity')}{form}, n = {problem.x_size})"
    return Bench(label, target, normalise_obs(y_noisy[n_fit:], norm), xs[n_fit:],
                 problem.start())


# -------------------------------------------------------------------------- solvers
def _rmse(b: Bench, x):
    r = jax.vmap(b.target.fn)(x) - b.y[: x.shape[0]]
    return np.sqrt(np.mean(np.asarray(r) ** 2, axis=1))


def _row(best_rmse, iters, wall, compile_s, count):
    best_rmse = np.asarray(best_rmse)
    return {"success": {e: float(np.mean(best_rmse <= e)) for e in EPS},
            "iters_mean": float(np.mean(iters)), "iters_median": float(np.median(iters)),
            "iters_max": float(np.max(iters)),
            "rmse_median": float(np.median(best_rmse)),
            "ms_per_problem": 1e3 * wall / count, "compile_s": compile_s, "count": count}


def run_invphys(b: Bench, method, count: int, repeats: int, max_iter: int,
                eps: float = min(EPS), compact: bool | str = False):
    rules = Rules(rho=1.0, armijo="step", eps=eps, stop_at_eps=True, xtol=1e-8,
                  ftol=1e-8, max_iter=max_iter)
    y = b.y[:count]
    jax.clear_caches()  # an honest compile time even when an earlier table ran this shape
    call = lambda: invphys.solve(b.target, y, b.x0, method=method, rules=rules,  # noqa: E731
                                 compact=compact)
    t = time_call(call, repeats=repeats)
    compile_s, wall, sol = t.compile_s, t.run_s, t.output
    best = np.nanmin(np.asarray(sol.history["rmse"]), axis=1)
    return _row(best, np.asarray(sol.steps), wall, compile_s, count)


def run_optx(b: Bench, count: int, repeats: int, max_steps: int):
    import optimistix as optx

    lo, hi = b.free_bounds()
    z0 = b.x0[b.free]
    solver = optx.LevenbergMarquardt(rtol=1e-8, atol=1e-8)
    fn = lambda z, y: b.target.fn(b.expand(z)) - y  # noqa: E731

    @jax.jit
    def batch(y):
        def one(yi):
            s = optx.least_squares(fn, solver, z0, args=yi, max_steps=max_steps,
                                   throw=False)
            return s.value, s.stats["num_steps"]
        return jax.vmap(one)(y)

    y = b.y[:count]
    t = time_call(lambda: batch(y), repeats=repeats)
    compile_s, wall, (z, steps) = t.compile_s, t.run_s, t.output
    x = jax.vmap(b.expand)(jnp.clip(z, lo, hi))  # no bounds in optimistix: clip after
    return _row(_rmse(b, x), np.asarray(steps), wall, compile_s, count)


def scipy_fns(b: Bench):
    """The jitted residual ``(z, y) -> r`` and Jacobian ``z -> J`` over the free unknowns
    that scipy calls from NumPy, compiled here."""
    fz = lambda z: b.target.fn(b.expand(z))  # noqa: E731
    res, jac = jax.jit(lambda z, y: fz(z) - y), jax.jit(jax.jacfwd(fz))
    z0 = b.x0[b.free]
    jax.block_until_ready((res(z0, b.y[0]), jac(z0)))
    return res, jac


def run_scipy(b: Bench, count: int):
    import scipy.optimize

    lo, hi = b.free_bounds()
    z0 = np.asarray(b.x0[b.free])
    t0 = time.perf_counter()
    res, jac = scipy_fns(b)
    compile_s = time.perf_counter() - t0
    zs, iters = [], []
    t0 = time.perf_counter()
    for i in range(count):
        yi = b.y[i]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            r = scipy.optimize.least_squares(
                lambda z, yi=yi: np.asarray(res(z, yi)), z0,
                jac=lambda z: np.asarray(jac(z)), bounds=(lo, hi), method="trf")
        zs.append(r.x)
        iters.append(r.njev)
    wall = time.perf_counter() - t0
    x = jax.vmap(b.expand)(jnp.asarray(np.stack(zs)))
    return _row(_rmse(b, x), np.asarray(iters), wall, compile_s, count)


def compare(b: Bench, count: int, repeats: int, max_iter: int, peers=("scipy", "optx"),
            gn: bool = True):
    rows = {"invphys-gn": run_invphys(b, GaussNewton(), count, repeats, max_iter)} if gn \
        else {}
    rows["invphys-lm"] = run_invphys(b, LevenbergMarquardt(), count, repeats, max_iter)
    if not gn:  # the big batch: also with finished members compacted away between rounds
        rows["invphys-lm, compact"] = run_invphys(b, LevenbergMarquardt(), count, repeats,
                                                  max_iter, compact=True)
    if b.x0.size > 16:  # a field: the matrix-free variant too
        rows["invphys-lm (cg)"] = run_invphys(b, LevenbergMarquardt(solver="cg"), count,
                                              repeats, max_iter)
    # the time a user who stops at the looser target pays (first iterate with RMSE <= 0.30)
    rows["invphys-lm, stop at 0.30"] = run_invphys(b, LevenbergMarquardt(), count, repeats,
                                                   max_iter, eps=max(EPS))
    if "optx" in peers:
        rows["optx-lm"] = run_optx(b, count, repeats, 4 * max_iter)
    if "scipy" in peers:
        rows["scipy-trf"] = run_scipy(b, count)
    return rows


def print_table(title: str, rows: dict, ref: str = "invphys-lm"):
    print(f"\n## {title}\n")
    print("| solver | success eps 0.30 / 0.05 | iterations mean (median) | median RMSE "
          "| ms per problem | compile s | time vs invphys-lm |")
    print("|---|---|---|---|---|---|---|")
    t_ref = rows[ref]["ms_per_problem"]
    for name, r in rows.items():
        s = r["success"]
        print(f"| {name} | {100 * s[0.30]:.0f}% / {100 * s[0.05]:.0f}% | "
              f"{r['iters_mean']:.1f} ({r['iters_median']:.0f}) | {r['rmse_median']:.3f} | "
              f"{r['ms_per_problem']:.3f} | {r['compile_s']:.2f} | "
              f"{r['ms_per_problem'] / t_ref:.1f}x |", flush=True)


def batch_sizes(b: Bench, batches, repeats: int, max_iter: int, method=None):
    """invphys-lm per problem against the batch size, one loop vs compacted."""
    method = method if method is not None else LevenbergMarquardt()
    print(f"\n## {b.name}: invphys-lm cost per problem vs batch size\n")
    print("| batch | mode | success eps 0.05 | iterations mean (max) | ms per problem "
          "| compile s |")
    print("|---|---|---|---|---|---|")
    out = {}
    for count in batches:
        for compact in (False, True):
            r = run_invphys(b, method, count, repeats, max_iter, compact=compact)
            out[count, compact] = r
            mode = "compact" if compact else "one loop"
            print(f"| {count} | {mode} | {100 * r['success'][0.05]:.0f}% | "
                  f"{r['iters_mean']:.1f} ({r['iters_max']:.0f}) | "
                  f"{r['ms_per_problem']:.3f} | {r['compile_s']:.2f} |", flush=True)
    print(f"\npeak RSS after batch {max(batches)}: {peak_rss_mib():.0f} MiB (process)")
    return out


# -------------------------------------------------------------------------- scaling
def iteration_costs(n: int, peers: bool, iters: int, repeats: int) -> dict[str, float]:
    """ms per LM iteration on one Heat problem with N = n grid points (no stopping)."""
    import optimistix as optx
    import scipy.optimize

    b = make_bench("heat1d", 1, 256, 0, {"physics.n": n, "bounds.pin": [0, n - 1]})
    rules = Rules(rho=1.0, armijo="step", eps=0.0, stall_tol=0.0, max_iter=iters)
    lm = LevenbergMarquardt(solver="cg")
    y = b.y[0]
    t = time_call(lambda: invphys.solve(b.target, y, b.x0, method=lm, rules=rules),
                  repeats=repeats)
    row = {"invphys": 1e3 * t.run_s / int(t.output.steps)}
    if not peers:
        return row
    fz = lambda z: b.target.fn(b.expand(z))  # noqa: E731
    z0 = b.x0[b.free]
    solver = optx.LevenbergMarquardt(rtol=0.0, atol=0.0)
    run = jax.jit(lambda y: optx.least_squares(lambda z, y: fz(z) - y, solver, z0, args=y,
                                               max_steps=iters, throw=False).value)
    row["optx"] = 1e3 * time_call(lambda: run(y), repeats=repeats).run_s / iters
    res, jac = scipy_fns(b)
    t0 = time.perf_counter()
    r = scipy.optimize.least_squares(
        lambda z: np.asarray(res(z, y)), np.asarray(z0), jac=lambda z: np.asarray(jac(z)),
        bounds=b.free_bounds(), method="trf", max_nfev=iters)
    row["scipy"] = 1e3 * (time.perf_counter() - t0) / max(r.njev, 1)
    return row


def per_iteration(sizes, peers_upto: int, iters: int = 5, repeats: int = 2):
    """The per-iteration cost table vs grid size, with fitted power laws."""
    print("\n## Heat-1D: ms per LM iteration vs grid size N (one problem, 200 FD steps)\n")
    print("| N | invphys LM (CG) | optimistix LM (dense QR) | scipy trf (dense) |")
    print("|---|---|---|---|")
    out = {}
    for n in sizes:
        row = out[n] = iteration_costs(n, n <= peers_upto, iters, repeats)
        cells = [f"{row[k]:.2f}" if k in row else "-" for k in ("invphys", "optx", "scipy")]
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
    for key in ("invphys", "optx", "scipy"):
        have = [n for n in sorted(out) if key in out[n]]
        if len(have) >= 2:
            slope = np.polyfit(np.log(have), np.log([out[n][key] for n in have]), 1)[0]
            print(f"- {key}: cost ~ N^{slope:.2f} over N = {have[0]}..{have[-1]}")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--problems", nargs="+", default=["oscillator", "heat1d"])
    ap.add_argument("--count", type=int, default=40, help="problems in the peer comparison")
    ap.add_argument("--batch", type=int, default=1000,
                    help="batched throughput run (invphys and optimistix; 0 = skip)")
    ap.add_argument("--n-fit", type=int, default=2000, help="samples for the normaliser")
    ap.add_argument("--heat-fidelity", default="paper",
                    choices=("paper", "accurate", "adaptive"))
    ap.add_argument("--heat-paper-form", default="steps", choices=("steps", "matrix"),
                    help="paper fidelity: the literal steps (the spec default) or one mat-vec")
    ap.add_argument("--osc-fidelity", default="accurate", choices=("accurate", "adaptive"))
    ap.add_argument("--batches", type=int, nargs="*", default=[16, 200, 1000],
                    help="batch sizes of the cost-per-problem table (none: skip)")
    ap.add_argument("--only-batches", action="store_true",
                    help="only the batch-size table (no peer comparison, no scaling)")
    ap.add_argument("--max-iter", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="*", default=[64, 256, 1024, 4096])
    ap.add_argument("--peers-upto", type=int, default=1024,
                    help="largest N at which the dense peers are timed")
    ap.add_argument("--no-scaling", action="store_true")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--readme", help="also write the output into this README's generated "
                    "section <!-- results:bench-solvers:start/end -->")
    args = ap.parse_args(argv)
    with recorded("solvers", argv, args.readme):
        return run(args)


def run(args) -> int:
    if args.quick:
        args.count, args.batch, args.repeats = 16, 200, 1
        args.sizes = [s for s in args.sizes if s <= 1024]
        args.peers_upto = min(args.peers_upto, 256)
    print(device_line())
    overrides = {"oscillator": {"physics.fidelity": args.osc_fidelity},
                 "heat1d": {"physics.fidelity": args.heat_fidelity,
                            "physics.paper_form": args.heat_paper_form}}
    for name in args.problems:
        b = make_bench(name, max(args.count, args.batch, *args.batches), args.n_fit,
                       args.seed, overrides[name])
        if args.batches:
            batch_sizes(b, args.batches, max(1, args.repeats - 1), args.max_iter)
        if args.only_batches:
            continue
        rows = compare(b, args.count, args.repeats, args.max_iter)
        print_table(f"{b.name}: {args.count} problems", rows)
        if args.batch:
            # the paper's projected GN is left out here: its few stragglers that never
            # reach eps run the whole batch to max_iter (see the 40-problem table)
            big = compare(b, args.batch, max(1, args.repeats - 1), args.max_iter,
                          peers=("optx",), gn=False)
            print_table(f"{b.name}: batch of {args.batch}", big)
    if not (args.no_scaling or args.only_batches):
        per_iteration(args.sizes, args.peers_upto)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
