"""``invphys reproduce --paper sgn``: stochastic Gauss-Newton with LM damping and a
cumulative GN metric (arXiv 2511.03972, a theory paper with no published numbers),
its qualitative claims put to a small, smooth test.

Setting: a one-hidden-layer tanh MLP (4 -> width -> 1) regresses a random tanh teacher
(4-16-1, output standardised) plus Gaussian noise (std 0.1) from 256 training samples;
2048 fresh samples measure the test loss. :func:`invphys.optim.sgn_lm` (step 1,
``alpha = 1``, ``lambda`` the LM damping, the diagonal cumulative metric at every width,
so the widths run the same algorithm, and the paper's projection onto the ball
``|w - w_0| <= 10``: without it, steps of 1 in the Hutchinson-estimated diagonal metric
diverge for lambda <= 0.1) trains every (width, batch, lambda) for the
same number of outer iterations from the same initial weights.

Measured: the training-loss floor (the final training loss), the generalisation gap
(test minus training loss), and the smallest eigenvalue of the GN matrix along the
path. A mini-batch GN matrix has rank at most the batch size, so its smallest
eigenvalue is zero whenever the batch is smaller than the parameter count; what is
measured is the GN matrix of the whole training set restricted to its informative
side: ``sigma_min(J)^2 / n`` with ``J`` the ``n x P`` Jacobian of the outputs (the
smallest eigenvalue of ``J^T J / n`` when ``P <= n``, of the NTK Gram ``J J^T / n``
otherwise) [our reading], at checkpoints, reported as its minimum along the path.

Claims tested (and reported as holding or not): (1) a larger ``lambda_min`` along the
path goes with a smaller gap (Spearman rank correlation over the seed-averaged
configurations, overall and per width; "holds" needs a one-sided permutation p < 0.05,
"does not hold" a significantly positive correlation, else "undecided");
(2) the optimisation error (training-loss floor) falls with width (strictly, for every
(batch, lambda) pair). Both are tested over all configurations and again over the
converged ones only (final training loss below the initial one for every seed): at
step 1, small lambda overshoots to the ball's boundary, and such a run measures the
step size rather than the claims.

Cost: the lambdas of one (width, batch, seed) run as one ``vmap``-ped compiled loop;
``lambda_min`` is one compiled, ``vmap``-ped call per configuration (per-sample
gradients, a QR and a small SVD), with OpenBLAS single-threaded
(:func:`._gn_bench.single_threaded_blas`).
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from pathlib import Path
from typing import Any

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from .. import optim
from . import _gn_bench as gb
from .papers import Context, Paper
from .report import Report, markdown


@dataclasses.dataclass(frozen=True)
class Settings:
    quick: bool = False
    widths: tuple[int, ...] = (32, 128, 512)
    batches: tuple[int, ...] = (8, 32, 0)  # 0: the full batch
    lambdas: tuple[float, ...] = (1e-3, 1e-1, 10.0)
    steps: int = 1000
    checkpoints: int = 10
    seeds: int = 3
    n_train: int = 256
    n_test: int = 2048
    noise: float = 0.1
    radius: float = 10.0  # the paper's projection: |w - w_0| <= radius

    @classmethod
    def make(cls, quick: bool) -> Settings:
        return cls(quick=True, steps=300, checkpoints=5, seeds=2) if quick else cls()


def data(s: Settings, seed: int = 0):
    """``(x_train, y_train, x_test, y_test)`` from the seeded teacher."""
    kx, kt, kn = jax.random.split(jax.random.key(100 + seed), 3)
    x = jax.random.normal(kx, (s.n_train + s.n_test, 4))
    f = gb.mlp_apply(gb.init_mlp(kt, (4, 16, 1)), x)
    y = (f - f.mean()) / f.std() + s.noise * jax.random.normal(kn, f.shape)
    return x[: s.n_train], y[: s.n_train], x[s.n_train:], y[s.n_train:]


def _lambda_min(params, x):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    # per-sample gradients (O(n P) work), not jacrev of the batch (n backward passes
    # over the whole batch: O(n^2 width) and an n x n x width intermediate)
    jac = jax.vmap(jax.grad(lambda f, xi: gb.mlp_apply(unravel(f), xi[None])[0, 0]),
                   (None, 0))(flat, x)
    tall = jac.T if jac.shape[1] > jac.shape[0] else jac
    # sigma(J) = sigma(R) for J = QR (J^T = QR when P > n): the SVD of a small square
    r = jnp.linalg.qr(tall, mode="r")
    return jnp.linalg.svd(r, compute_uv=False)[-1] ** 2 / x.shape[0]


# singular values, not eigvalsh of a Gram matrix: sigma_min^2 keeps its accuracy far below
# eps * lambda_max (saturated units give values down to 1e-20 here)
_lambda_min_many = jax.jit(jax.vmap(jax.vmap(_lambda_min, (0, None)), (0, None)))


def lambda_min(params, x) -> float:
    """``sigma_min(J)^2 / n`` of the outputs' Jacobian on ``x`` (see the module docstring):
    the value :func:`invphys.optim.ggn_lambda_min_informative` gives for ``half_mse`` on
    the whole of ``x`` (``H_loss = I / n``), from the singular values of ``J`` for accuracy."""
    return float(jax.jit(_lambda_min)(params, x))


def spearman(a, b) -> float | None:
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return None
    ra, rb = (np.argsort(np.argsort(v[ok])).astype(float) for v in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def rank_test(a, b, *, permutations: int = 10000, seed: int = 0) -> float | None:
    """One-sided permutation p-value of a *negative* Spearman correlation of ``a`` and ``b``
    (the share of random pairings at least as negative as the observed one)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ok = np.isfinite(a) & np.isfinite(b)
    rho = spearman(a, b)
    if rho is None:
        return None
    ra, rb = (np.argsort(np.argsort(v[ok])).astype(float) for v in (a, b))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    shuffled = np.random.default_rng(seed).permuted(np.tile(rb, (permutations, 1)), axis=1)
    null = shuffled @ ra / (np.linalg.norm(ra) * np.linalg.norm(rb))
    return float((np.sum(null <= rho + 1e-12) + 1) / (permutations + 1))


def _verdict_1(rho: float | None, p: float | None, p_pos: float | None) -> bool | None:
    """True: a significantly negative rank correlation (p < 0.05); False: a significantly
    positive one; None: neither (undecided)."""
    if rho is None:
        return None
    if p is not None and p < 0.05:
        return True
    if p_pos is not None and p_pos < 0.05:
        return False
    return None


def one_config(s: Settings, width: int, batch: int, seed: int, log) -> list[dict[str, Any]]:
    """Every lambda at one (width, batch, seed): one compiled loop, ``vmap``-ped over lambda."""
    xtr, ytr, xte, yte = data(s, seed)
    bench = gb.Bench(gb.mlp_apply, gb.half_mse, xtr, ytr, batch or s.n_train, seed=seed)
    method = gb.Method("sgn", lambda lam: optim.sgn_lm(
        1.0, damping=lam, metric="diagonal", radius=s.radius))
    p0 = gb.init_mlp(jax.random.key(seed), (4, width, 1))
    every = max(s.steps // s.checkpoints, 1)
    losses, snaps = bench.paths(method, p0, s.lambdas, steps=s.steps, every=every)
    stacked = jax.tree.map(lambda *a: jnp.stack(a), *snaps)  # (checkpoints + 1, lambdas, ...)
    lmins = np.asarray(_lambda_min_many(stacked, xtr), float).T  # (lambdas, checkpoints + 1)
    rows = []
    for j, lam in enumerate(s.lambdas):
        train = float(losses[j, -1])
        last = jax.tree.map(lambda a, j=j: a[j], snaps[-1])
        test = float(gb.half_mse(gb.mlp_apply(last, xte), yte))
        rows.append({"width": width, "batch": batch or s.n_train, "lambda": lam, "seed": seed,
                     "params": gb.num_params(p0), "initial_loss": float(losses[j, 0]),
                     "train_loss": train, "test_loss": test,
                     "gap": test - train, "lambda_min_path": float(np.min(lmins[j])),
                     "lambda_min_final": float(lmins[j, -1]),
                     "lambda_min_trace": lmins[j].tolist(),
                     "loss_curve": losses[j, ::every].tolist()})
        log(f"[sgn] width {width:>4} batch {batch or s.n_train:>4} lambda {lam:<6g} seed "
            f"{seed}: train {train:.4g} gap {test - train:.4g} lambda_min {lmins[j].min():.3g}")
    return rows


def _test_claims(avg: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    rho_all = spearman([a["lambda_min_path"] for a in avg], [a["gap"] for a in avg])
    per_width = {str(w): spearman([a["lambda_min_path"] for a in avg if a["width"] == w],
                                  [a["gap"] for a in avg if a["width"] == w])
                 for w in s.widths}
    by_key = {(a["width"], a["batch"], a["lambda"]): a["train_loss"] for a in avg}
    mono, pairs = 0, 0
    for b, lam in itertools.product(sorted({a["batch"] for a in avg}), s.lambdas):
        if not all((w, b, lam) in by_key for w in s.widths):
            continue  # a width of this pair left out (diverged): no monotonicity to test
        losses = [by_key[w, b, lam] for w in s.widths]
        pairs += 1
        mono += all(x2 < x1 for x1, x2 in zip(losses, losses[1:], strict=False))
    mean_by_width = {str(w): float(np.mean([a["train_loss"] for a in avg if a["width"] == w]))
                     if any(a["width"] == w for a in avg) else None for w in s.widths}
    lmin, gap = [a["lambda_min_path"] for a in avg], [a["gap"] for a in avg]
    p_neg = rank_test(lmin, gap)
    p_pos = rank_test(lmin, [-g for g in gap])
    return {
        "configs_used": len(avg),
        "spearman_lambda_min_vs_gap": rho_all,
        "p_value_negative": p_neg,
        "p_value_positive": p_pos,
        "spearman_per_width": per_width,
        "claim1_larger_lambda_min_smaller_gap": _verdict_1(rho_all, p_neg, p_pos),
        "train_loss_monotone_in_width": f"{mono}/{pairs}",
        "mean_train_loss_by_width": mean_by_width,
        "claim2_optimisation_error_falls_with_width": (mono == pairs) if pairs else None,
    }


def claims(rows: list[dict[str, Any]], s: Settings) -> dict[str, Any]:
    """The two qualitative claims, on seed-averaged configurations: over all of them, and
    again over the converging ones only (``stable``: the final training loss below the
    initial one for every seed), since a run that diverged to the projection ball's
    boundary measures the step size, not the claims."""
    keyed: dict[tuple, list] = {}
    for r in rows:
        keyed.setdefault((r["width"], r["batch"], r["lambda"]), []).append(r)
    avg = [{"width": w, "batch": b, "lambda": lam,
            **{k: float(np.mean([r[k] for r in rs]))
               for k in ("train_loss", "gap", "lambda_min_path")},
            "stable": all(np.isfinite(r["train_loss"])
                          and r["train_loss"] < r.get("initial_loss", np.inf) for r in rs)}
           for (w, b, lam), rs in keyed.items()]
    out = _test_claims(avg, s)
    out["stable"] = _test_claims([a for a in avg if a["stable"]], s)
    out["diverged"] = [[a["width"], a["batch"], a["lambda"]] for a in avg if not a["stable"]]
    out["configs"] = avg
    return out


def draw(rows, s: Settings, folder: Path) -> list[str]:
    from .plots import plt

    fig, (a0, a1) = plt.subplots(1, 2, figsize=(11, 4))
    markers = dict(zip(sorted({r["batch"] for r in rows}), "o^s", strict=False))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, w in enumerate(s.widths):
        for r in (r for r in rows if r["width"] == w):
            a0.scatter(r["lambda_min_path"], r["gap"], color=colors[i],
                       marker=markers[r["batch"]], s=20 + 20 * np.log10(r["lambda"] * 1e4))
        a0.scatter([], [], color=colors[i], label=f"width {w}")
    for b, m in markers.items():
        a0.scatter([], [], color="gray", marker=m, label=f"batch {b}")
    a0.set(xscale="log", xlabel="min lambda_min of the GN matrix along the path",
           ylabel="generalisation gap (test - train)", title="marker size: LM lambda")
    a0.legend(fontsize=7)
    for j, lam in enumerate(s.lambdas):
        for b, m in markers.items():
            ys = [np.mean([r["train_loss"] for r in rows if (r["width"], r["batch"],
                   r["lambda"]) == (w, b, lam)]) for w in s.widths]
            a1.loglog(s.widths, ys, marker=m, color=colors[j],
                      label=f"lambda {lam:g}" if b == max(markers) else None)
    a1.set(xlabel="width", ylabel="final training loss", title="optimisation error vs width")
    a1.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(folder / "sgn_gap_width.png", dpi=110)
    plt.close(fig)
    return ["sgn_gap_width.png"]


def study(ctx: Context) -> Report:
    t0 = time.perf_counter()
    s = Settings.make(ctx.quick)
    log = print if ctx.progress else (lambda _: None)
    with gb.single_threaded_blas():
        rows = [r for seed in range(s.seeds) for w in s.widths for b in s.batches
                for r in one_config(s, w, b, seed, log)]
    c = claims(rows, s)
    head = ["width", "batch", "lambda", "train loss", "test loss", "gap", "min lambda_min",
            "converged"]
    table = [head] + [[str(a["width"]), str(a["batch"]), f"{a['lambda']:g}",
                       gb.fmt(a["train_loss"]), gb.fmt(a.get("test_loss")), gb.fmt(a["gap"]),
                       gb.fmt(a["lambda_min_path"]), "yes" if a["stable"] else "no"]
                      for a in _with_test(c["configs"], rows)]

    def verdict(v):
        return {True: "holds", False: "does not hold", None: "undecided"}[v]
    # claim 1: "does not hold" is a significantly positive correlation, "undecided" none

    def claim_lines(cl, which):
        return [
            f"* Claim 1 ({which}), larger lambda_min goes with a smaller gap: Spearman rho = "
            f"{gb.fmt(cl['spearman_lambda_min_vs_gap'])} over {cl['configs_used']} "
            f"configurations, one-sided permutation p = {gb.fmt(cl['p_value_negative'], 2)} "
            f"(for a positive one: {gb.fmt(cl['p_value_positive'], 2)}; holds: p < 0.05) "
            "(per width: "
            + ", ".join(f"{w}: {gb.fmt(v)}" for w, v in cl["spearman_per_width"].items())
            + f"): **{verdict(cl['claim1_larger_lambda_min_smaller_gap'])}**.",
            f"* Claim 2 ({which}), optimisation error falls with width: train loss strictly "
            f"decreasing in width for {cl['train_loss_monotone_in_width']} (batch, lambda) "
            "pairs; mean by width " + ", ".join(
                f"{w}: {gb.fmt(v)}" for w, v in cl["mean_train_loss_by_width"].items())
            + f": **{verdict(cl['claim2_optimisation_error_falls_with_width'])}**."]

    readme = "\n".join([
        f"SGN-LM (diagonal cumulative metric, step 1, projection onto |w - w0| <= "
        f"{s.radius:g}) on a tanh teacher-student regression, {s.n_train} training samples, "
        f"{s.steps} outer iterations, {s.seeds} seed(s). lambda_min: the smallest eigenvalue "
        "of the full-training-set GN matrix on its informative side, sigma_min(J)^2/n (J the "
        "n x P Jacobian of the outputs: lambda_min(J^T J/n) when P <= n, of the NTK-type Gram "
        "J J^T/n when P > n; not the mini-batch matrix, whose smallest eigenvalue is 0 when "
        "the batch is smaller than P), its minimum along the path (checkpoints, the initial "
        f"weights included). {len(c['diverged'])} of {len(c['configs'])} configurations did "
        "not converge (final training loss above the initial one: step 1 is too long for "
        "small lambda); the claims are tested over all configurations and again over the "
        "converged ones.", "",
        *claim_lines(c, "all"), *claim_lines(c["stable"], "converged only"), "",
        markdown(table)])
    public = {"quick": ctx.quick, "settings": dataclasses.asdict(s), "claims": c,
              "runs": [{k: v for k, v in r.items() if k != "loss_curve"} for r in rows]}
    return Report(tables={"sgn_configs": table}, public=public, figures={"runs": rows},
                  readme=readme, draw=lambda folder: draw(rows, s, Path(folder)),
                  images=("sgn_gap_width.png",), device=jax.devices()[0].device_kind,
                  wall_s=time.perf_counter() - t0, quick=ctx.quick)


def _with_test(avg, rows):
    for a in avg:
        a["test_loss"] = float(np.mean([r["test_loss"] for r in rows if (
            r["width"], r["batch"], r["lambda"]) == (a["width"], a["batch"], a["lambda"])]))
    return avg


PAPER = Paper("sgn", "stochastic Gauss-Newton (cumulative GN metric, LM damping): "
              "lambda_min, generalisation gap and width", study, needs_models=False)
