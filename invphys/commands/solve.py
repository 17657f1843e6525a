"""``invphys solve SPEC --obs y.npy``: recover x from observations under the shared protocol."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import numpy as np

from .._data import normalise_obs, normalised_problem, spec_normaliser
from .._errors import InputFileError, ShapeError
from .._io import load_npy, save_figure, save_json, save_npy
from ..experiments.plots import plot_convergence
from ..learn import load_checkpoint
from ..physics import load_problem
from ..solve import DIPG, Rules, result_names, solve


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve", help="recover x from observations (pg, gn, lm, dipg)",
        description="Solve for x given raw observations (as written by `invphys simulate`), "
        "in the paper's normalised output space. Writes x.npy, report.json and "
        "convergence.png to --out.",
    )
    p.add_argument("spec", help="bundled spec name or .toml path")
    p.add_argument("--obs", type=Path, required=True, help="observations .npy, (m,) or (K, m)")
    p.add_argument("--x0", type=Path, help="start .npy, (n,) or (K, n); default: the spec's")
    p.add_argument("--method", choices=("pg", "gn", "lm", "dipg"), default="gn")
    p.add_argument("--model", type=Path, help="Deceptron checkpoint folder (needed for dipg; "
                   "its normaliser then defines the output space)")
    p.add_argument("--form", choices=("paper", "local"), default=None,
                   help="D-IPG form (default: paper on the surrogate, local otherwise)")
    p.add_argument("--objective", choices=("simulator", "surrogate"), default="simulator",
                   help="solve against the spec's simulator or the model's surrogate f")
    p.add_argument("--fidelity", choices=("paper", "accurate"), help="override the spec")
    p.add_argument("--eps", type=float, help="target normalised RMSE (default: the spec's)")
    p.add_argument("--max-iter", type=int, help="iteration limit (default: the spec's)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    overrides = {"physics.fidelity": args.fidelity} if args.fidelity else None
    problem = load_problem(args.spec, overrides)
    m = problem.y_shape()[0]
    y = load_npy(args.obs, what="observations", shape=(..., m))
    if y.ndim > 2:
        raise ShapeError(f"observations file {args.obs} has shape {y.shape}, "
                         f"expected ({m},) or (K, {m})")
    x0 = None
    if args.x0 is not None:
        x0 = load_npy(args.x0, what="x0", shape=(..., problem.x_size))
    method: object = args.method
    if args.method == "dipg" or args.objective == "surrogate":
        if args.model is None:
            raise InputFileError("--model CKPT is needed for dipg and the surrogate objective")
        ckpt = load_checkpoint(args.model, problem)
        model, normaliser = ckpt.model, ckpt.normaliser
        form = args.form or ("paper" if args.objective == "surrogate" else "local")
        if args.method == "dipg":
            method = DIPG(inverse=model.g, form=form)
        target = problem.with_forward(model.f) if args.objective == "surrogate" else \
            normalised_problem(problem, normaliser)
    else:
        normaliser = spec_normaliser(problem)
        target = normalised_problem(problem, normaliser)
    solve_spec = problem.spec["solve"]
    rules = Rules(eps=args.eps if args.eps is not None else solve_spec["eps"],
                  max_iter=args.max_iter or solve_spec["max_iter"])
    z = normalise_obs(y, normaliser)
    t0 = time.perf_counter()
    sol = solve(target, z, x0, method=method, rules=rules)
    jax.block_until_ready(sol.x)
    seconds = time.perf_counter() - t0
    out = args.out
    save_npy(out / "x.npy", sol.x)
    batched = np.ndim(sol.steps) > 0

    def per(a):
        return np.asarray(a).tolist()

    report = {
        "spec": problem.name, "method": args.method, "objective": args.objective,
        "fidelity": problem.spec["physics"]["fidelity"], "eps": rules.eps,
        "max_iter": rules.max_iter, "x0_projected": sol.x0_projected,
        "wall_seconds_including_compile": seconds,
        "steps": per(sol.steps), "final_rmse": per(sol.rmse), "converged": per(sol.converged),
        "steps_to_eps": per(sol.stats["steps_to_eps"]),
        "result": result_names(sol.stats["result"]) if batched
        else result_names(sol.stats["result"])[0],
        "nfev": per(sol.stats["nfev"]), "njev": per(sol.stats["njev"]),
        "accepted": per(sol.stats["accepted"]), "rejected": per(sol.stats["rejected"]),
    }
    save_json(out / "report.json", report)
    save_figure(out / "convergence.png", plot_convergence(
        {args.method: np.atleast_2d(np.asarray(sol.history["rmse"]))}, eps=rules.eps,
        title=f"{problem.name}: {args.method} ({args.objective})"))
    k = int(np.size(sol.steps))
    n_conv = int(np.sum(np.asarray(sol.converged)))
    print(f"solved {k} problem(s) of {problem.name} with {args.method}: {n_conv}/{k} reached "
          f"eps={rules.eps}; wrote {out}/x.npy, report.json, convergence.png")
    return 0
