"""``invphys solve SPEC --obs y.npy``: recover x from observations under the shared protocol.

report.json fields (one value per problem, lists for a batch):

* ``reached_eps``: the normalised residual RMSE reached ``eps`` at some iteration
  (``steps_to_eps`` >= 0: the first such iteration, else -1). It says nothing about why
  the loop stopped, and it is a target on the *normalised* output scale
  (``output_space``), not a convergence certificate.
* ``result``: why the loop stopped (``result_message`` says it in words):
  ``target_reached``, ``max_iterations``, ``stalled``, ``converged``, ``no_progress``,
  ...; ``nonfinite``: whether the residual or x became NaN/inf along the path (then
  ``final_rmse`` is null and the top-level ``nonfinite`` field lists the nulls).
* ``steps``, ``final_rmse``, ``nfev``, ``njev``, ``accepted``, ``rejected``: counts and
  the last normalised RMSE; ``eps``, ``max_iter``: the rules it ran under.
* ``residual``: ``normalised`` (z-scored outputs, the paper's space) or ``whitened``
  (outputs divided by the noise std, noise-only outputs left out: an RMSE of 1 is the
  noise level, and the default ``eps`` 1.1 with a stop at it is the discrepancy
  principle); ``filter``: ``signal`` when D-IPG reads the whitened residual through the
  training outputs' signal subspace (``signal_dims`` directions above the
  Marchenko-Pastur edge of pure noise), else null; ``start``: ``spec``, ``file`` (--x0)
  or ``g`` (the model's inverse of the observations).
* ``identifiable``: what the data determine of the recovered x: the physics' named
  combinations (the oscillator's c/m, k/m, x0, v0), or, where outputs carry noise only
  along some directions, the number of signal directions and (Heat-1D) which sine modes
  of x they are, with the recovered amplitudes; the rest of x comes from the start and
  the prior, not from the data.

Where the problem has noise-only outputs (Heat-1D's pinned endpoints), ``--method dipg``
defaults to the whitened, signal-filtered D-IPG of the README's results: unfiltered, the
learned inverse amplifies noise into x directions the forward map erases.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from .._data import (
    make_dataset,
    normalise_obs,
    normalised_problem,
    signal_basis,
    whitened_normaliser,
)
from .._errors import InputFileError, ShapeError
from .._io import (
    check_input_dir,
    check_input_file,
    check_output_dir,
    load_npy,
    save_figure,
    save_json,
    save_npy,
)
from .._problem import validate_solve_inputs
from ..experiments.plots import plot_convergence
from ..learn import load_checkpoint
from ..physics import REGISTRY, load_problem
from ..solve import DIPG, RESULTS, Rules, result_names, solve
from ._checks import at_least, positive_finite

FIELDS_HELP = (
    "report.json: reached_eps (the normalised RMSE reached --eps at iteration "
    "steps_to_eps; a target, not a convergence certificate), result and result_message "
    "(why the loop stopped: max_iterations, stalled, converged, ...), nonfinite (NaN/inf "
    "appeared along the path), steps, final_rmse, nfev, njev, accepted, rejected. "
    "residual, filter, signal_dims, start, identifiable (what the data determine of x). "
    "Exit status: 0 solved (whether or not eps was reached), 1 some solution is not "
    "finite (outputs still written), 2 bad input (nothing computed or written)."
)
#: The whitened target RMSE: the discrepancy principle's factor over the noise level.
DISCREPANCY = 1.1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "solve", help="recover x from observations (pg, gn, lm, dipg)",
        description="Solve for x given raw observations (as written by `invphys simulate`), "
        "in the paper's normalised output space. Writes x.npy, report.json and "
        "convergence.png to --out.", epilog=FIELDS_HELP,
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
    p.add_argument("--fidelity", choices=("paper", "accurate", "adaptive"),
                   help="override the spec: the paper's scheme, the exact flow (accurate), "
                   "or an adaptive diffrax solve")
    p.add_argument("--residual", choices=("normalised", "whitened"), default=None,
                   help="output space of the residual: normalised (z-scored) or whitened "
                   "(noise std 1, noise-only outputs left out; dipg then reads it through "
                   "the training outputs' signal directions). Default: whitened for dipg "
                   "where some outputs carry noise only (Heat-1D), else normalised")
    p.add_argument("--start", choices=("spec", "g"), default=None,
                   help="start: the spec's x0 (default) or g, the model's inverse of the "
                   "observations (needs --model)")
    p.add_argument("--eps", type=float, help="target RMSE, a finite number > 0 (default: "
                   f"the spec's; {DISCREPANCY} with a stop there for --residual whitened)")
    p.add_argument("--max-iter", type=int, help="iteration limit, >= 1 (default: the spec's)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    """Every option and path, before any work (one-line errors naming the option)."""
    positive_finite("--eps", args.eps)
    at_least("--max-iter", args.max_iter, 1)
    needs_model = args.method == "dipg" or args.objective == "surrogate"
    if needs_model and args.model is None:
        raise InputFileError("--model CKPT is needed for dipg and the surrogate objective")
    if args.start == "g" and args.model is None:
        raise InputFileError("--start g needs --model CKPT (its inverse g)")
    if args.start is not None and args.x0 is not None:
        raise InputFileError("give either --x0 or --start, not both")
    if args.residual == "whitened" and args.objective == "surrogate":
        raise InputFileError("--residual whitened solves against the simulator; it does "
                             "not go with --objective surrogate")
    check_output_dir(args.out, what="--out")
    check_input_file(args.obs, what="--obs observations")
    if args.x0 is not None:
        check_input_file(args.x0, what="--x0")
    if needs_model:
        check_input_dir(args.model, what="--model checkpoint")


def run(args: argparse.Namespace) -> int:
    check_args(args)
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
    setup = build_target(problem, args, y)
    target, method, inverse = setup["target"], setup["method"], setup["inverse"]
    whitened = setup["residual"] == "whitened"
    solve_spec = problem.spec["solve"]
    eps = args.eps if args.eps is not None else DISCREPANCY if whitened else solve_spec["eps"]
    rules = Rules(eps=eps, max_iter=args.max_iter if args.max_iter is not None
                  else solve_spec["max_iter"], stop_at_eps=whitened)
    # the raw arrays (names as the library knows them), then the residual-space ones
    y, x0 = validate_solve_inputs(problem, y, x0)
    z = setup["obs"](y)
    z, x0 = validate_solve_inputs(target, z, x0, inverse=inverse)
    start = "file" if x0 is not None else args.start or "spec"
    if start == "g":
        zb = jnp.reshape(jnp.asarray(z), (-1, z.shape[-1]))
        x0 = problem.project(jax.vmap(setup["g_start"])(zb)).reshape(
            (*z.shape[:-1], problem.x_size))
    t0 = time.perf_counter()
    sol = solve(target, z, x0, method=method, rules=rules)
    jax.block_until_ready(sol.x)
    seconds = time.perf_counter() - t0
    report, bad = build_report(problem, args, rules, sol, seconds)
    report.update(residual=setup["residual"], filter=setup["filter"],
                  signal_dims=setup["signal_dims"], start=start,
                  output_space=setup["output_space"],
                  identifiable=identifiable_report(problem, sol.x, setup))
    out = args.out
    save_npy(out / "x.npy", sol.x)
    save_json(out / "report.json", report)
    save_figure(out / "convergence.png", plot_convergence(
        {args.method: np.atleast_2d(np.asarray(sol.history["rmse"]))}, eps=rules.eps,
        title=f"{problem.name}: {args.method} ({args.objective})"))
    k = int(np.size(sol.steps))
    n_eps = int(np.sum(np.asarray(sol.stats["steps_to_eps"]) >= 0))
    names = np.atleast_1d(report["result"])
    why = ", ".join(f"{int(np.sum(names == r))} {r}" for r in dict.fromkeys(names.tolist()))
    how = args.method + (" (signal-filtered)" if setup["filter"] else "")
    print(f"solved {k} problem(s) of {problem.name} with {how}: {n_eps}/{k} reached "
          f"eps={rules.eps} ({setup['residual']} RMSE); stopped: {why}; wrote {out}/x.npy, "
          "report.json, convergence.png")
    print(identifiable_summary(report["identifiable"]))
    if bad:
        print(f"invphys solve: error: {bad}/{k} solution(s) are not finite (NaN or inf "
              f"along the path; see 'nonfinite' in {out}/report.json)", file=sys.stderr)
        return 1
    return 0


def build_report(problem, args, rules, sol, seconds) -> tuple[dict, int]:
    """report.json (see the module docstring) and the count of non-finite solutions."""
    batched = np.ndim(sol.steps) > 0

    def per(a):
        a = np.asarray(a)
        return a.tolist() if batched else a.reshape(-1)[0].tolist() if a.size else a.tolist()

    steps = np.atleast_1d(np.asarray(sol.steps))
    hist = np.atleast_2d(np.asarray(sol.history["rmse"]))
    x = np.asarray(sol.x).reshape(len(steps), -1)
    upto = np.arange(hist.shape[1])[None, :] <= steps[:, None]
    nonfinite = (np.any(upto & ~np.isfinite(hist), axis=1)
                 | ~np.isfinite(np.atleast_1d(np.asarray(sol.rmse)))
                 | ~np.all(np.isfinite(x), axis=1))
    codes = result_names(sol.stats["result"])
    messages = [RESULTS[getattr(RESULTS, c)] for c in codes]
    steps_to_eps = np.asarray(sol.stats["steps_to_eps"])
    report = {
        "spec": problem.name, "method": args.method, "objective": args.objective,
        "fidelity": problem.spec["physics"]["fidelity"],
        "eps": rules.eps, "max_iter": rules.max_iter, "x0_projected": sol.x0_projected,
        "wall_seconds_including_compile": seconds,
        "steps": per(sol.steps), "final_rmse": per(sol.rmse),
        "reached_eps": per(steps_to_eps >= 0), "steps_to_eps": per(steps_to_eps),
        "result": codes if batched else codes[0],
        "result_message": messages if batched else messages[0],
        "nonfinite": per(nonfinite),
        "nfev": per(sol.stats["nfev"]), "njev": per(sol.stats["njev"]),
        "accepted": per(sol.stats["accepted"]), "rejected": per(sol.stats["rejected"]),
    }
    return report, int(np.sum(nonfinite))


def training_data(spec_arg: str):
    """The spec's training split (simulated from its seed, at the spec's own fidelity)."""
    return make_dataset(load_problem(spec_arg), n_val=1, n_test=1)


def build_target(problem, args, y) -> dict:
    """What the solve runs on: the target problem, the method, the inverse D-IPG uses and
    the one that makes a g start, the observations' map into the residual space, and
    what the report says about them."""
    m = problem.y_shape()[0]
    ckpt = None
    data = None
    if args.model is not None and (args.method == "dipg" or args.objective == "surrogate"
                                   or args.start == "g"):
        ckpt = load_checkpoint(args.model, problem)
        normaliser, space = ckpt.normaliser, "the checkpoint's normaliser"
    else:
        data = training_data(args.spec)
        normaliser, space = data.normaliser, "the normaliser of the spec's training split"
    sigma = getattr(problem.noise, "sigma", None) or 0.0
    keep = np.flatnonzero(np.asarray(normaliser.signal))
    noise_only = sigma > 0 and keep.size < m
    residual = args.residual or ("whitened" if args.method == "dipg" and noise_only
                                 and args.objective == "simulator" else "normalised")
    if residual == "whitened" and not sigma > 0:
        raise InputFileError(f"--residual whitened needs noise (the spec's noise.std is "
                             f"{sigma})")
    out = {"residual": residual, "filter": None, "signal_dims": None, "basis": None,
           "inverse": None, "g_start": None}
    if noise_only or residual == "whitened":
        # the signal directions of the whitened training outputs: what the data can see
        white, keep = whitened_normaliser(normaliser, sigma)
        if data is None:
            data = training_data(args.spec)
        mu, U, _ = signal_basis(white.transform(data.y_train)[:, keep])
        out.update(signal_dims=int(U.shape[1]), basis=(keep, U))
    if residual == "whitened":
        out.update(target=normalised_problem(problem, white, signal_only=True),
                   obs=lambda y: normalise_obs(y, white, signal_only=True),
                   output_space=f"whitened (divided by the noise std {sigma}; the "
                   f"{m - keep.size} noise-only output(s) left out; mean of {space})")
        if ckpt is not None:
            model = ckpt.model
            mu_j, U_j = jnp.asarray(mu), jnp.asarray(U)

            def inverse(w):  # g on the signal part of a whitened residual
                w = mu_j + U_j @ (U_j.T @ (w - mu_j))
                return model.g(normaliser.transform(white.mean.at[keep].add(w * sigma)))

            out.update(g_start=inverse, filter="signal")
    else:
        out.update(obs=lambda y: normalise_obs(y, normaliser),
                   output_space=f"normalised ({space})")
        if ckpt is not None:
            out.update(g_start=ckpt.model.g)
        if args.objective == "surrogate":
            out["target"] = problem.with_forward(ckpt.model.f)
        else:
            out["target"] = normalised_problem(problem, normaliser)
    method: object = args.method
    if args.method == "dipg":
        form = args.form or ("paper" if args.objective == "surrogate" else "local")
        out["inverse"] = out["g_start"]
        method = DIPG(inverse=out["inverse"], form=form)
    out["method"] = method
    return out


def sine_modes(x, modes) -> np.ndarray:
    """Amplitudes a_j of u = sum_j a_j sin(pi j s) on s = linspace(0, 1, n) (endpoints 0):
    the discrete sine transform, exact for such u. ``x`` is (K, n)."""
    x = np.asarray(x, np.float64)
    steps = x.shape[-1] - 1
    i = np.arange(x.shape[-1])
    basis = np.sin(np.pi * np.asarray(modes)[:, None] * i[None, :] / steps)
    return 2.0 / steps * x @ basis.T


def signal_modes(keep, U, n_out: int) -> list[int]:
    """Which sine modes of the output grid the signal directions U (on outputs ``keep``)
    are: each direction's dominant discrete sine frequency."""
    steps = n_out - 1
    j = np.arange(1, steps)
    S = np.sin(np.pi * j[:, None] * np.asarray(keep)[None, :] / steps)
    return sorted(int(j[np.argmax(np.abs(S @ U[:, c]))]) for c in range(U.shape[1]))


def identifiable_report(problem, x, setup) -> dict | None:
    """What the data determine of the recovered x (see the module docstring)."""
    xb = np.asarray(x, np.float64).reshape(-1, problem.x_size)
    batched = np.ndim(x) > 1
    kind = problem.spec.problem if problem.spec is not None else None
    named = REGISTRY[kind].identifiable if kind in REGISTRY else None
    if named is not None:
        q, names = named(xb)
        values = [dict(zip(names, map(float, row), strict=True)) for row in q]
        return {"what": "the combinations of x the observations determine (the rest of "
                "x is not identifiable)", "names": list(names),
                "values": values if batched else values[0]}
    if setup["basis"] is None:
        return None
    keep, U = setup["basis"]
    rep = {"what": f"the data carry signal above the noise along {U.shape[1]} output "
           f"direction(s); x is determined only along the x directions they see, the rest "
           "comes from the start and the prior", "signal_dims": int(U.shape[1])}
    if kind == "heat1d":
        modes = signal_modes(keep, U, problem.y_shape()[0])
        amps = sine_modes(xb, modes)
        values = [dict(zip((f"a{j}" for j in modes), map(float, row), strict=True))
                  for row in amps]
        rep.update(what=f"x = sum_j a_j sin(pi j s): the heat flow damps mode j by "
                   f"exp(-(pi j)^2 t), so only modes {modes} stand above the noise; the "
                   "higher modes of x are not identifiable from the data",
                   names=[f"a{j}" for j in modes], modes=modes,
                   values=values if batched else values[0])
    return rep


def identifiable_summary(ident: dict | None, show: int = 3) -> str:
    """One or a few lines for the terminal."""
    if ident is None:
        return "identifiable: not determined for this problem (see report.json)"
    if "values" not in ident:
        return f"identifiable: {ident['signal_dims']} signal direction(s); {ident['what']}"
    rows = ident["values"] if isinstance(ident["values"], list) else [ident["values"]]
    head = ("identifiable from the data: " + ", ".join(ident["names"])
            + (f" ({ident['signal_dims']} signal directions; higher modes are not)"
               if "modes" in ident else ""))
    lines = [head] + [f"  [{i}] " + ", ".join(f"{k}={v:.4g}" for k, v in r.items())
                      for i, r in enumerate(rows[:show])]
    if len(rows) > show:
        lines.append(f"  ... {len(rows) - show} more in report.json")
    return "\n".join(lines)
