"""Certification: NIST StRD (27 datasets x 2 starts) and Moré-Garbow-Hillstrom problems.

    python -m benchmarks.nist            # full: 54 NIST runs, batch of 1000, MGH
    python -m benchmarks.nist --quick    # 8 datasets, batch of 200, a few MGH problems
    python benchmarks/nist.py --no-peers --datasets MGH09 Thurber

invphys.least_squares (default settings) beside scipy.optimize.least_squares (``trf``
and ``lm``, xtol = ftol = gtol = 1e-15, at most 1000 residual evaluations, exact
Jacobians from jax) and optimistix.LevenbergMarquardt (rtol = atol = 1e-12, 1000
steps), all in this process, float64. Accuracy: the LRE (correct significant digits of
the worst parameter against NIST's certified values, capped at 11, non-finite = 0).
Time per solve: the median of ``--repeats`` warm calls (compile excluded), compile
time separately (the first call minus a warm one; scipy's is the jit of its residual
and Jacobian). scipy calls the jitted jax residual/Jacobian from numpy, so its times
include jax's per-call dispatch. BLAS threads are capped to 1 before numpy loads
(benchmarks._common), so that scipy and jax do not fight over the cores.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # python benchmarks/nist.py
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# first: caps BLAS threads before numpy loads, switches x64 on
from benchmarks._common import device_line  # noqa: E402

# isort: split
import argparse  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import invphys  # noqa: E402
from invphys.certify import MGH_BOUNDED, MGH_PROBLEMS, NIST_DATASETS, load_nist, lre  # noqa: E402
from invphys.experiments.timing import time_call  # noqa: E402
from invphys.solve import result_names  # noqa: E402

least_squares = invphys.least_squares

QUICK_DATASETS = ["Misra1a", "Chwirut2", "DanWood", "Nelson", "MGH09", "BoxBOD", "MGH10",
                  "Bennett5"]
QUICK_MGH = ["rosenbrock", "freudenstein_roth", "beale", "helical_valley", "meyer",
             "osborne2", "rosenbrock_bounded", "wood_bounded"]
SOLVERS = ("invphys", "scipy-trf", "scipy-lm", "optx-LM")


# ----------------------------------------------------------------------------- timing
def _timed(call, repeats):
    """(compile_s, median_warm_s, output): the first call compiles; compile = the first
    call minus the best warm one; the tables report the median warm call."""
    t = time_call(call, repeats=repeats)
    return t.compile_s, t.median_s, t.output


# ----------------------------------------------------------------------------- solvers
def run_invphys(residual, x0, repeats, lower=None, upper=None):
    bounds = {} if lower is None else {"lower": lower, "upper": upper}
    compile_s, med, s = _timed(lambda: least_squares(residual, x0, **bounds), repeats)
    return {"x": np.asarray(s.x), "f": 2.0 * float(s.cost), "steps": int(s.steps),
            "nfev": int(s.nfev), "ok": bool(s.success), "status": _result_name(s.result),
            "time": med, "compile": compile_s}


def _result_name(result):
    return result_names(result._value)[0]


def run_optx(residual, x0, repeats):
    import optimistix as optx

    fn = lambda y, args: residual(y)  # noqa: E731  (one object: one compile)
    solver = optx.LevenbergMarquardt(rtol=1e-12, atol=1e-12)
    y0 = jnp.asarray(x0)
    call = lambda: optx.least_squares(fn, solver, y0, max_steps=1000, throw=False)  # noqa: E731
    compile_s, med, s = _timed(call, repeats)
    ok = bool(s.result == optx.RESULTS.successful)
    return {"x": np.asarray(s.value), "f": float(2.0 * 0.5 * jnp.sum(residual(s.value) ** 2)),
            "steps": int(s.stats["num_steps"]), "nfev": int(s.stats["num_steps"]), "ok": ok,
            "status": "successful" if ok else "max_steps/fail", "time": med,
            "compile": compile_s}


def _scipy_fns(residual, x0):
    """The jitted residual and Jacobian scipy calls, compiled here (the compile time)."""
    t0 = time.perf_counter()
    f = jax.jit(residual)
    jac = jax.jit(jax.jacfwd(residual))
    jax.block_until_ready((f(x0), jac(x0)))
    return f, jac, time.perf_counter() - t0


def run_scipy(fns, x0, method, repeats, lower=None, upper=None):
    import scipy.optimize

    f, jac, compile_s = fns
    x0 = np.asarray(x0, float)
    bounds = (-np.inf, np.inf) if lower is None else (np.asarray(lower), np.asarray(upper))

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return scipy.optimize.least_squares(
                lambda b: np.asarray(f(b)), x0, jac=lambda b: np.asarray(jac(b)),
                method=method, bounds=bounds, xtol=1e-15, ftol=1e-15, gtol=1e-15,
                max_nfev=1000)

    _, med, r = _timed(call, repeats)
    return {"x": r.x, "f": 2.0 * float(r.cost), "steps": int(r.nfev), "nfev": int(r.nfev),
            "ok": bool(r.success), "status": f"status {r.status}", "time": med,
            "compile": compile_s}


def run_all(residual, x0, repeats, peers, lower=None, upper=None):
    out = {"invphys": run_invphys(residual, x0, repeats, lower, upper)}
    if peers:
        fns = _scipy_fns(residual, np.asarray(x0, float))
        out["scipy-trf"] = run_scipy(fns, x0, "trf", repeats, lower, upper)
        if lower is None:
            out["scipy-lm"] = run_scipy(fns, x0, "lm", repeats)
            out["optx-LM"] = run_optx(residual, x0, repeats)
    return out


# ------------------------------------------------------------------------------ NIST
def nist_table(names, repeats, peers):
    solvers = SOLVERS if peers else ("invphys",)
    print("\n== NIST StRD: LRE (digits, max 11) / steps (scipy: residual evaluations) / "
          "result; time per solve in ms (compile excluded)")
    head = f"{'dataset':<9} {'st':>2} " + " ".join(f"{s:>24}" for s in solvers)
    print(head)
    print("-" * len(head))
    rows = []
    for name in names:
        prob = load_nist(name)
        for k in range(2):
            res = run_all(prob.residual, prob.starts[k], repeats, peers)
            for s in res.values():
                s["lre"] = lre(s["x"], prob.certified)
            rows.append((name, k + 1, res))
            cells = []
            for s in solvers:
                r = res[s]
                flag = "" if r["ok"] else "!"
                cells.append(f"{r['lre']:5.2f} {r['steps']:4d}{flag:1s} {r['time'] * 1e3:8.2f}ms")
            print(f"{name:<9} {k + 1:>2} " + " ".join(f"{c:>24}" for c in cells), flush=True)
    print("('!' = the solver did not report success)")
    _nist_summary(rows, solvers)
    return rows


def _nist_summary(rows, solvers):
    print(f"\n== NIST summary ({len(rows)} runs)")
    print(f"{'solver':<10} {'mean LRE':>9} {'>=4 dig':>8} {'>=6 dig':>8} {'min LRE':>8} "
          f"{'success':>8} {'false ok':>9} {'med ms':>8} {'med compile s':>14} "
          f"{'time / invphys':>15}")
    base = np.array([r[2]["invphys"]["time"] for r in rows])
    for s in solvers:
        lres = np.array([r[2][s]["lre"] for r in rows])
        times = np.array([r[2][s]["time"] for r in rows])
        # compile once per dataset: the first start's first call (start 2 hits the cache)
        comp = np.array([r[2][s]["compile"] for r in rows if r[1] == 1])
        ok = np.array([r[2][s]["ok"] for r in rows])
        false_ok = int(np.sum(ok & (lres < 4)))
        ratio = float(np.exp(np.mean(np.log(times / base))))
        print(f"{s:<10} {lres.mean():9.2f} {int((lres >= 4).sum()):5d}/{len(rows)} "
              f"{int((lres >= 6).sum()):5d}/{len(rows)} {lres.min():8.2f} "
              f"{int(ok.sum()):5d}/{len(rows)} {false_ok:9d} {np.median(times) * 1e3:8.2f} "
              f"{np.median(comp):14.2f} {ratio:14.2f}x")
    print("(false ok: reported success with < 4 correct digits. time / invphys: geometric "
          "mean over runs of the solver's time per solve / invphys's; > 1 = slower)")


# ----------------------------------------------------------------------------- batch
def batch(name, size, peers, seed=0):
    """One vmapped call solving ``size`` perturbed starts of one dataset."""
    prob = load_nist(name)
    key = jax.random.key(seed)
    x0 = jnp.asarray(prob.starts[1]) * jnp.exp(0.1 * jax.random.normal(key, (size, prob.p)))
    print(f"\n== vmapped batch: {name}, {size} starts = NIST start 2 x exp(0.1 N(0,1)), "
          "one call")
    solve = jax.jit(jax.vmap(lambda b: least_squares(prob.residual, b)))
    compile_s, med, s = _timed(lambda: solve(x0), 2)
    lres = np.array([lre(x, prob.certified) for x in np.asarray(s.x)])
    ok = np.asarray(s.success)
    steps = np.asarray(s.steps)
    print(f"invphys   compile {compile_s:6.2f} s   batch {med * 1e3:9.1f} ms   "
          f"{med / size * 1e6:8.1f} us/solve   LRE >= 4: {int((lres >= 4).sum())}/{size}   "
          f"success {int(ok.sum())}/{size} (of which < 4 digits: "
          f"{int(np.sum(ok & (lres < 4)))})   steps median {int(np.median(steps))} "
          f"max {int(steps.max())}")
    if peers:
        import optimistix as optx

        solver = optx.LevenbergMarquardt(rtol=1e-12, atol=1e-12)
        fn = lambda y, a: prob.residual(y)  # noqa: E731

        def one(b):
            sol = optx.least_squares(fn, solver, b, max_steps=1000, throw=False)
            return sol.value, sol.result == optx.RESULTS.successful

        osolve = jax.jit(jax.vmap(one))
        ocompile, omed, (ox, ook) = _timed(lambda: osolve(x0), 2)
        olres = np.array([lre(x, prob.certified) for x in np.asarray(ox)])
        ook = np.asarray(ook)
        print(f"optx-LM   compile {ocompile:6.2f} s   batch {omed * 1e3:9.1f} ms   "
              f"{omed / size * 1e6:8.1f} us/solve   LRE >= 4: {int((olres >= 4).sum())}/{size}"
              f"   success {int(ook.sum())}/{size} (of which < 4 digits: "
              f"{int(np.sum(ook & (olres < 4)))})")
        print(f"batch time optx / invphys: {omed / med:.2f}x")


# ------------------------------------------------------------------------------- MGH
def mgh_table(names, repeats, peers):
    probs = [p for p in MGH_PROBLEMS + MGH_BOUNDED if names is None or p.name in names]
    solvers = SOLVERS if peers else ("invphys",)
    print("\n== Moré-Garbow-Hillstrom from the standard starts (bounded: x0 projected). "
          "f = sum r^2; '*' = the known minimum f* (or an MGH local minimum, 'L') reached; "
          "bounded: '*' = f <= scipy trf's f (1 + 1e-8) and KKT holds")
    head = f"{'problem':<25} " + " ".join(f"{s:>28}" for s in solvers)
    print(head)
    print("-" * len(head))
    score = {s: [0, 0] for s in solvers}
    for p in probs:
        lower = upper = None
        x0 = np.asarray(p.x0)
        if p.bounded:
            lower, upper = np.asarray(p.lower), np.asarray(p.upper)
            x0 = np.clip(x0, lower, upper)
        res = run_all(p.residual, x0, repeats, peers, lower, upper)
        ref_f = res["scipy-trf"]["f"] if "scipy-trf" in res else None
        cells = []
        for s in solvers:
            if s not in res:
                cells.append("-")
                continue
            r = res[s]
            mark = _mgh_mark(p, r, ref_f)
            score[s][0] += mark in ("*", "L")
            score[s][1] += 1
            flag = "" if r["ok"] else "!"
            cells.append(f"{r['f']:.6e}{mark:1s} {r['steps']:4d}{flag:1s} {r['time'] * 1e3:7.2f}ms")
        print(f"{p.name:<25} " + " ".join(f"{c:>28}" for c in cells), flush=True)
    print("('!' = the solver did not report success; steps: iterations, scipy: residual "
          "evaluations)")
    for s in solvers:
        print(f"{s:<10} reached the minimum on {score[s][0]}/{score[s][1]}")


def _mgh_mark(p, r, ref_f):
    f = r["f"]
    if not np.isfinite(f):
        return " "
    if p.bounded:
        x = jnp.asarray(r["x"])
        g = np.asarray(jax.jacfwd(p.residual)(x).T @ p.residual(x))
        lo, hi, xn = np.asarray(p.lower), np.asarray(p.upper), np.asarray(x)
        at_lo, at_hi = xn <= lo + 1e-10, xn >= hi - 1e-10
        tol = 1e-6 * max(1.0, float(np.max(np.abs(g))))
        kkt = (np.all(np.abs(g[~(at_lo | at_hi)]) <= tol) and np.all(g[at_lo] >= -tol)
               and np.all(g[at_hi] <= tol))
        good = kkt and (ref_f is None or f <= ref_f * (1 + 1e-8) + 1e-12)
        return "*" if good else " "
    if p.f_star is not None and abs(f - p.f_star) <= max(p.f_star_tol,
                                                          1e-8 * max(1.0, p.f_star)):
        return "*"
    if any(abs(f - fl) <= 1e-5 * abs(fl) for fl in p.f_local):
        return "L"
    return " "


# ------------------------------------------------------------------------------ main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="8 datasets, 3 repeats, a batch of 200, 8 MGH problems")
    ap.add_argument("--datasets", nargs="+", help="NIST datasets (default: all 27)")
    ap.add_argument("--repeats", type=int, help="warm calls timed per solve (default 5)")
    ap.add_argument("--batch", type=int,
                    help="starts in the vmapped batch (default 1000; 0: no batch)")
    ap.add_argument("--batch-dataset", default="Thurber")
    ap.add_argument("--no-peers", action="store_true", help="invphys only")
    ap.add_argument("--no-mgh", action="store_true")
    args = ap.parse_args(argv)
    names = args.datasets or (QUICK_DATASETS if args.quick else [n for n, _ in NIST_DATASETS])
    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 5)
    size = args.batch if args.batch is not None else (200 if args.quick else 1000)
    peers = not args.no_peers
    print(device_line())
    print("invphys.least_squares defaults; scipy trf/lm: tolerances 1e-15, max_nfev 1000; "
          "optimistix LM: rtol = atol = 1e-12, max_steps 1000")
    t0 = time.perf_counter()
    nist_table(names, repeats, peers)
    if size > 0:
        batch(args.batch_dataset, size, peers)
    if not args.no_mgh:
        mgh_table(QUICK_MGH if args.quick else None, repeats, peers)
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
