"""``invphys simulate SPEC``: draw or read x, simulate, add noise, write arrays and a figure."""

from __future__ import annotations

import argparse
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._errors import NonFiniteError, ShapeError
from .._io import check_input_file, check_output_dir, load_npy, save_figure, save_npy
from ..experiments.plots import plot_observations
from ..physics import load_problem
from ._checks import at_least


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate a problem: x, clean y, noisy y (.npy) and a PNG",
        description="Simulate a problem from its spec. Writes x.npy, y_clean.npy, "
        "y_noisy.npy and simulate.png to --out.",
    )
    p.add_argument("spec", help="bundled spec name (heat1d, oscillator) or a .toml path")
    p.add_argument("--x", type=Path, help="x values (.npy, shape (n,) or (K, n)); "
                   "default: K draws from the prior")
    p.add_argument("--n", type=int, default=4, help="number of prior draws, >= 1 (default 4)")
    p.add_argument("--seed", type=int, default=0, help="random seed (prior and noise)")
    p.add_argument("--fidelity", choices=("paper", "accurate", "adaptive"),
                   help="override the spec: the paper's scheme, the exact flow (accurate), "
                   "or an adaptive diffrax solve")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    check_output_dir(args.out, what="--out")
    if args.x is not None:
        check_input_file(args.x, what="--x")
    else:
        at_least("--n", args.n, 1)
    overrides = {"physics.fidelity": args.fidelity} if args.fidelity else None
    problem = load_problem(args.spec, overrides)
    kx, kn = jax.random.split(jax.random.key(args.seed))
    if args.x is not None:
        x = load_npy(args.x, what="x", shape=(..., problem.x_size))
        if x.ndim > 2 or x.size == 0:
            raise ShapeError(f"x file {args.x} has shape {x.shape}, expected (n,) or (K, n) "
                             "with K >= 1")
        x = jnp.atleast_2d(jnp.asarray(x, float))
        if not bool(jnp.all(problem.is_feasible(x, atol=1e-12))):
            print(f"note: x outside the constraint set of {problem.name}; simulated as given")
    else:
        x = problem.sample(kx, args.n)
    y_clean, y_noisy = eqx.filter_jit(problem.observe)(kn, x)
    if not bool(np.all(np.isfinite(np.asarray(y_clean)))):
        raise NonFiniteError(f"{problem.name}: the simulation produced NaN or inf; nothing "
                             "written (check the spec's [physics] step sizes)")
    out = args.out
    save_npy(out / "x.npy", x)
    save_npy(out / "y_clean.npy", y_clean)
    save_npy(out / "y_noisy.npy", y_noisy)
    fig = plot_observations(problem, x, y_clean, y_noisy)
    save_figure(out / "simulate.png", fig)
    print(f"wrote {len(x)} simulation(s) of {problem.name} to {out}/ "
          "(x.npy, y_clean.npy, y_noisy.npy, simulate.png)")
    return 0
