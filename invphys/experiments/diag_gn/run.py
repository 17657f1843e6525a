"""The run of ``invphys reproduce --paper diag-gn``: arms x quadrants x seeds x a shared
learning-rate grid, then tables, claims and figures.

Per quadrant and arm one compiled function runs every (learning rate, seed) pair
(``vmap`` over both, ``lax.scan`` over steps). The learning rate of each arm is tuned on
the shared grid with *tuning* seeds (fewest steps to the target when every tuning seed
reaches it, else the lowest mean log final excess) and reported on separate *evaluation*
seeds. "A beats B" on a seed: A reaches the target in fewer steps, or, when neither
(or both at the same step) does, A's final excess is lower.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ...optim import diagonal_adam, diagonal_gn, extra_args
from ..papers import Context
from ..report import Report
from . import problems
from .problems import Quadrant


class Arm(NamedTuple):
    """An optimizer as a function of the learning rate; ``fixed_lr``: not tuned."""

    name: str
    make: Callable[[Any], optax.GradientTransformationExtraArgs]
    fixed_lr: float | None = None


def arms_for(q: Quadrant) -> list[Arm]:
    """Adam, GN^-1, GN^-1/2 in the quadrant's basis (plus references); the MLP compares the
    identity and Kronecker bases, with estimated (Hutchinson) curvature."""
    if q.name == "mlp":
        est = dict(estimator="hutchinson", probes=1, refresh_every=10, factor_decay=0.9)
        gn = dict(est, decay=0.9, damping=1e-4)
        return [
            Arm("adam (identity)", lambda lr: diagonal_adam(lr, "identity")),
            Arm("adam (kronecker)", lambda lr: diagonal_adam(lr, "kronecker", **est)),
            Arm("gn^-1/2 (identity)", lambda lr: diagonal_gn(lr, 0.5, "identity", **gn)),
            Arm("gn^-1/2 (kronecker)", lambda lr: diagonal_gn(lr, 0.5, "kronecker", **gn)),
            Arm("gn^-1 (kronecker)", lambda lr: diagonal_gn(lr, 1.0, "kronecker", **gn)),
        ]
    b = dict(basis=q.basis, refresh_every=q.refresh_every)
    out = [
        Arm("adam", lambda lr: diagonal_adam(lr, **b)),
        Arm("gn^-1", lambda lr: diagonal_gn(lr, 1.0, **b)),
        Arm("gn^-1/2", lambda lr: diagonal_gn(lr, 0.5, **b)),
    ]
    if q.full_batch:
        out.append(Arm("gd (reference)", lambda lr: optax.with_extra_args_support(optax.sgd(lr))))
    if q.name == "quadratic":
        out.append(Arm("gn^-1 at lr 1", lambda lr: diagonal_gn(lr, 1.0, **b), fixed_lr=1.0))
    return out


def run_arm(q: Quadrant, arm: Arm, lrs, seeds, steps: int, probe: Callable | None = None):
    """Relative-excess curves ``(lr, seed, steps // eval_every + 1)`` (entry ``k``: after
    ``k * eval_every`` steps) and the probe ``(lr, seed)``."""

    def one(lr, seed):
        key = jax.random.key(seed)
        params, data = q.setup(key)
        opt = arm.make(lr)
        e0 = q.excess(params, data)

        def step(carry, i):
            p, s = carry
            k = jax.random.fold_in(jax.random.fold_in(key, 17), i)
            model_fn, loss_fn, cm, cl = q.batches(data, k)
            _, grads, kw = extra_args(model_fn, loss_fn, p, jax.random.fold_in(k, 1))
            updates, s = opt.update(grads, s, p, curvature_model_fn=cm,
                                    curvature_loss_fn=cl, **kw)
            return (optax.apply_updates(p, updates), s), None

        def chunk(carry, first):
            carry, _ = jax.lax.scan(step, carry, first + jnp.arange(q.eval_every))
            return carry, q.excess(carry[0], data) / e0

        starts = q.eval_every * jnp.arange(steps // q.eval_every)
        (_, state), rel = jax.lax.scan(chunk, (params, opt.init(params)), starts)
        extra = probe(state, data) if probe is not None else jnp.full((), jnp.nan)
        return jnp.concatenate([jnp.ones(1, rel.dtype), rel]), extra

    fn = jax.jit(jax.vmap(jax.vmap(one, (None, 0)), (0, None)))
    curves, extra = fn(jnp.asarray(lrs, jnp.result_type(float)), jnp.asarray(seeds))
    return np.asarray(curves, float), np.asarray(extra, float)


# --------------------------------------------------------------------------- scoring
def steps_to(curve: np.ndarray, target: float, every: int = 1) -> int | None:
    hits = np.flatnonzero(np.asarray(curve) <= target)
    return int(hits[0]) * every if hits.size else None


def final(curve: np.ndarray) -> float:
    v = float(curve[-1])
    return v if math.isfinite(v) else math.inf


FLOOR = 1e-30


def _log(v: float, floor: float | None = None) -> float:
    return math.log10(max(v, floor or FLOOR)) if math.isfinite(v) else math.inf


def rank(curves: np.ndarray, target: float, floor: float) -> tuple:
    """Tuning score of one rate over seeds (smaller is better)."""
    hits = [steps_to(c, target) for c in curves]
    logs = [_log(final(c), floor) for c in curves]
    if all(h is not None for h in hits):
        return (0, float(np.mean(hits)), float(np.mean(logs)))
    return (1, float(np.mean(logs)), 0.0)


def beats(a: np.ndarray, b: np.ndarray, target: float, floor: float) -> bool:
    ha, hb = steps_to(a, target), steps_to(b, target)
    if ha is not None and (hb is None or ha < hb):
        return True
    if ha is not None and hb is not None and ha > hb:
        return False
    if hb is not None and ha is None:
        return False
    return _log(final(a), floor) < _log(final(b), floor)


def summarise(curves: np.ndarray, q: Quadrant) -> dict[str, Any]:
    hits = [steps_to(c, q.target, q.eval_every) for c in curves]
    reached = [h for h in hits if h is not None]
    logs = np.asarray([_log(final(c), q.floor) for c in curves])
    ok = np.isfinite(logs)
    return {"log10_final_mean": float(logs[ok].mean()) if ok.any() else math.inf,
            "log10_final_std": float(logs[ok].std()) if ok.any() else math.inf,
            "finals": [final(c) for c in curves], "steps_to_target": hits,
            "steps_mean": float(np.mean(reached)) if reached else None,
            "steps_std": float(np.std(reached)) if reached else None,
            "reached": len(reached), "runs": len(hits)}


def run_quadrant(q: Quadrant, lrs, tune_seeds, eval_seeds, steps, log) -> dict[str, Any]:
    probe = problems.adam_slope if q.name == "stochastic" else None
    seeds = list(tune_seeds) + list(eval_seeds)
    nt = len(tune_seeds)
    out: dict[str, Any] = {"title": q.title, "basis": q.basis, "target": q.target,
                           "steps": steps, "floor": q.floor, "eval_every": q.eval_every,
                           "arms": {}}
    for arm in arms_for(q):
        t0 = time.perf_counter()
        grid = [arm.fixed_lr] if arm.fixed_lr is not None else list(lrs)
        curves, extra = run_arm(q, arm, grid, seeds, steps, probe)
        scores = [rank(curves[i, :nt], q.target, q.floor) for i in range(len(grid))]
        best = int(min(range(len(grid)), key=lambda i: scores[i]))
        ev = curves[best, nt:]
        s = summarise(ev, q)
        s.update(lr=grid[best], curves=ev, probe=extra[best, nt:].tolist(),
                 tuned=arm.fixed_lr is None, wall_s=time.perf_counter() - t0)
        out["arms"][arm.name] = s
        log(f"  {q.name:<10} {arm.name:<20} lr {grid[best]:<9.3g} log10 final "
            f"{s['log10_final_mean']:7.2f} +- {s['log10_final_std']:.2f}  reached "
            f"{s['reached']}/{s['runs']}  ({s['wall_s']:.1f} s)")
    return out


def _wins(res, a: str, b: str) -> int:
    ca, cb, t = res["arms"][a]["curves"], res["arms"][b]["curves"], res["target"]
    return sum(beats(x, y, t, res["floor"]) for x, y in zip(ca, cb, strict=True))


def claims(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each quadrant's claim, what was measured and whether it reproduced."""
    out = []
    for name in ("blockcov", "logistic", "logistic-fixed"):
        if name not in results:
            continue
        r = results[name]
        n = r["arms"]["adam"]["runs"]
        w1, w2 = _wins(r, "adam", "gn^-1"), _wins(r, "adam", "gn^-1/2")
        a = r["arms"]
        measured = (f"adam beats gn^-1 on {w1}/{n} seeds, gn^-1/2 on {w2}/{n}; log10 final "
                    + ", ".join(f"{k} {v['log10_final_mean']:.2f}+-{v['log10_final_std']:.2f}"
                                for k, v in a.items()))
        claim = "Adam beats GN^-1 and GN^-1/2 (full batch, " + r["basis"] + " basis)"
        if name == "logistic-fixed":
            claim += ", basis fixed at the start"
        if name == "blockcov":
            g, d = a["gn^-1"]["log10_final_mean"], a["gd (reference)"]["log10_final_mean"]
            measured += f"; gn^-1 vs gd: {g:.2f} vs {d:.2f} (log10 final)"
        out.append({"quadrant": name, "claim": claim, "measured": measured,
                    "reproduced": w1 == n and w2 == n})
    if "quadratic" in results:
        r = results["quadratic"]["arms"]["gn^-1 at lr 1"]
        one = [c[1] for c in r["curves"]]
        out.append({"quadrant": "quadratic",
                    "claim": "GN^-1 in the eigenbasis converges in one step at lr 1",
                    "measured": f"relative excess after 1 step: max {max(one):.2e} over "
                                f"{len(one)} seeds (mean log10 "
                                f"{np.mean([_log(v) for v in one]):.1f})",
                    "reproduced": max(one) <= 1e-10})
    if "stochastic" in results:
        r = results["stochastic"]
        sl = np.asarray(r["arms"]["adam"]["probe"])
        a = r["arms"]
        w = _wins(r, "adam", "gn^-1/2")
        measured = (f"slope of log P_adam vs log lambda {sl.mean():.3f} +- {sl.std():.3f} "
                    f"(GN^-1/2: -0.5, GN^-1: -1, GD: 0); log10 final excess adam "
                    f"{a['adam']['log10_final_mean']:.2f}+-{a['adam']['log10_final_std']:.2f}, "
                    f"gn^-1/2 {a['gn^-1/2']['log10_final_mean']:.2f}"
                    f"+-{a['gn^-1/2']['log10_final_std']:.2f}, gn^-1 "
                    f"{a['gn^-1']['log10_final_mean']:.2f}+-{a['gn^-1']['log10_final_std']:.2f}"
                    f"; adam beats gn^-1/2 on {w}/{len(sl)} seeds")
        out.append({"quadrant": "stochastic",
                    "claim": "mini-batch: Adam's diagonal tracks GN^-1/2's (Adam ~ GN^-1/2)",
                    "measured": measured,
                    "reproduced": bool(np.all(np.abs(sl + 0.5) < 0.15))})
    return out


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def tables(results: dict[str, Any], found: list[dict[str, Any]]):
    rows = [["quadrant", "arm", "lr", "log10 final rel. excess (mean +- std)",
             "steps to target (mean +- std)", "reached"]]
    for name, r in results.items():
        for arm, s in r["arms"].items():
            st = ("-" if s["steps_mean"] is None
                  else f"{s['steps_mean']:.1f} +- {s['steps_std']:.1f}")
            rows.append([name, arm, _fmt(s["lr"]) + ("" if s["tuned"] else " (fixed)"),
                         f"{s['log10_final_mean']:.2f} +- {s['log10_final_std']:.2f}", st,
                         f"{s['reached']}/{s['runs']}"])
    claim_rows = [["quadrant", "paper's claim", "measured", "reproduced"]]
    claim_rows += [[c["quadrant"], c["claim"], c["measured"],
                    "yes" if c["reproduced"] else "**no**"] for c in found]
    return {"quadrants": rows, "claims": claim_rows}


def draw(results: dict[str, Any]) -> Callable:
    def _draw(folder):
        from ..plots import plt

        names = list(results)
        fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.6), squeeze=False)
        for ax, name in zip(axes[0], names, strict=True):
            r = results[name]
            for arm, s in r["arms"].items():
                c = np.clip(np.asarray(s["curves"], float), 1e-32, 1e6)
                med = np.nanmedian(c, axis=0)
                x = r["eval_every"] * np.arange(len(med))
                (line,) = ax.plot(x, med, label=f"{arm} (lr {s['lr']:.3g})")
                ax.fill_between(x, np.nanmin(c, 0), np.nanmax(c, 0),
                                color=line.get_color(), alpha=0.15)
            ax.axhline(r["target"], color="k", ls="--", lw=0.7)
            ax.set_yscale("log")
            ax.set_xlabel("step")
            ax.set_title(name, fontsize=9)
            ax.legend(fontsize=6)
        axes[0][0].set_ylabel("relative excess loss (median, min-max)")
        fig.tight_layout()
        fig.savefig(folder / "curves.png", dpi=110)
        plt.close(fig)
        return ["curves.png"]

    return _draw


def run(ctx: Context) -> Report:
    t0 = time.perf_counter()
    log = print if ctx.progress else (lambda _: None)
    quick = ctx.quick
    lrs = [float(v) for v in 10.0 ** np.arange(-3.5, 1.01, 0.5 if quick else 0.25)]
    tune_seeds = [1000, 1001, 1002]
    eval_seeds = list(range(5 if quick else 10))
    mlp_q, source = problems.mlp()
    chosen = [problems.blockcov(), problems.logistic(), problems.logistic(fixed_basis=True),
              problems.quadratic(), problems.stochastic(), mlp_q]
    if ctx.parts:
        chosen = [q for q in chosen if q.name in ctx.parts]
    results = {}
    for q in chosen:
        steps = q.quick_steps if quick else q.steps
        log(f"[diag-gn] {q.title}: {steps} steps, "
            f"{len(tune_seeds)}+{len(eval_seeds)} seeds")
        grid = lrs[::2] if quick and q.name == "mlp" else lrs  # the costliest: a coarser grid
        results[q.name] = run_quadrant(q, grid, tune_seeds, eval_seeds, steps, log)
    found = claims(results)
    tabs = tables(results, found)
    from ..report import markdown

    body = ("Diagonal preconditioners `theta -= lr U P U^T g` (arXiv 2510.13680): Adam vs "
            "GN^-1 vs GN^-1/2, same rotation code, the learning rate of each arm tuned on a "
            f"shared grid of {len(lrs)} rates with {len(tune_seeds)} tuning seeds, reported "
            f"over {len(eval_seeds)} evaluation seeds (relative excess loss = (loss - "
            f"optimum) / its start; the MLP ({source}): loss / initial loss).\n\n"
            + markdown(tabs["claims"]) + "\n" + markdown(tabs["quadrants"]))
    public = {name: {**{k: v for k, v in r.items() if k != "arms"},
                     "arms": {a: {k: v for k, v in s.items() if k != "curves"}
                              for a, s in r["arms"].items()}} for name, r in results.items()}
    public["claims"] = found
    public["settings"] = {"lrs": lrs, "tune_seeds": tune_seeds, "eval_seeds": eval_seeds,
                          "quick": quick, "mlp_data": source}
    figures = {name: {a: np.nanmedian(s["curves"], axis=0) for a, s in r["arms"].items()}
               for name, r in results.items()}
    return Report(tables=tabs, public=public, figures=figures, readme=body, draw=draw(results),
                  images=("curves.png",), device=jax.devices()[0].device_kind,
                  wall_s=time.perf_counter() - t0, quick=quick)
