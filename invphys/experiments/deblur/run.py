"""The Deblur-2D study's entry points: the baselines (cached), the full comparison and
its section of ``invphys reproduce``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from ..._io import save_json
from ..._spec import Spec, load_spec
from ...physics import deblur2d
from ..models import ModelStore, default_models_dir
from ..papers import Section
from .outputs import recovery_figure, write_tables
from .protocol import (
    EPS_REL,
    MAX_ITER,
    MISMATCH_RANGE,
    PAPER,
    REG_CG_STEPS,
    REG_MAX_ITER,
    TARGET_X_RMSE,
    SolverBank,
    baseline_rows,
    evaluate_set,
    require_x64,
    subset,
    test_sets,
)
from .regularised import ALPHAS, TAU, TV_EPS

#: The shipped checkpoint and the spec overrides it was trained with: the largest
#: configuration that fitted ~45 minutes of one (shared) CPU core: 8 channels instead
#: of 32 and 6 epochs instead of 12, everything else the protocol (the full protocol is
#: ~10 h of one core there). See models/<name>/card.json.
SHIPPED_NAME = "deceptronnet-v0-c8-e6"
SHIPPED_OVERRIDES = {"train.channels": 8, "train.epochs": 6}
#: The quick variant (CI, smoke tests): a tiny network trained for seconds.
QUICK_OVERRIDES = {"train.channels": 4, "train.steps": 2, "train.depth": 1,
                   "train.epochs": 2, "train.batch_size": 16, "data.n_train": 64,
                   "data.n_val": 8, "data.n_test": 6}


FIGURE_IMAGES = 4
BASELINE_CACHE = "deblur_baselines.json"


def _specs(quick: bool, model_name: str | None) -> tuple[Spec, str]:
    base = load_spec("deblur2d")
    if quick:
        return base.replace(QUICK_OVERRIDES), model_name or "deceptronnet-quick"
    return base.replace(SHIPPED_OVERRIDES), model_name or SHIPPED_NAME


def _protocol() -> dict[str, Any]:
    return {"eps_rel": EPS_REL, "max_iter": MAX_ITER, "rho": 1.0, "armijo_c": 1e-4,
            "max_halvings": 8, "lm_cg_steps": 10, "lm_damping0": 1e-2,
            "mismatch_sigma": list(MISMATCH_RANGE), "dtype": "float64",
            "beyond_paper": {"xgd_sum_eta": "m", "noise_stop_tau": TAU,
                             "regularised": {"solver": "LM Newton-CG", "cg_steps": REG_CG_STEPS,
                                             "max_iter": REG_MAX_ITER, "tv_eps": TV_EPS,
                                             "alphas": {k: list(v) for k, v in ALPHAS.items()},
                                             "choice": "discrepancy (tau x noise level); "
                                                       "oracle (best x-RMSE) reported apart"}}}


def _baseline_key(spec: Spec, count: int, k: int) -> dict[str, Any]:
    d = spec.to_dict()
    return {"problem": {sec: d.get(sec) for sec in ("physics", "prior", "noise", "bounds")},
            "data_seed": spec["data"]["seed"], "n_test": count, "n_baseline": k,
            "protocol": _protocol()}


def compute_baselines(out: Path, quick: bool, progress: bool = True, *,
                      n_test: int | None = None, n_baseline: int | None = None,
                      model_name: str | None = None) -> dict[str, Any]:
    """Run only the baselines (they do not depend on the network) and cache them in
    ``out/deblur_baselines.json``, which :func:`reproduce_deblur` then reuses. They run
    in float64: the caller's entry point must have switched ``jax_enable_x64`` on."""
    require_x64(jnp.float64)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda s: None)
    spec, _ = _specs(quick, model_name)
    count = n_test or spec["data"]["n_test"]
    k = min(n_baseline or count, count)
    problem = deblur2d.build(spec)
    bank = SolverBank(problem)
    cache: dict[str, Any] = {"key": _baseline_key(spec, count, k), "sets": {}}
    for ts in test_sets(spec, count):
        rows, recon = baseline_rows(bank, problem, subset(ts, k), log=say, extended=True)
        cache["sets"][ts.name] = {
            "rows": rows,
            "recon": {m: np.asarray(x[:FIGURE_IMAGES]).tolist() for m, x in recon.items()}}
    save_json(out / BASELINE_CACHE, cache)
    return cache


def _cached_baselines(out: Path, key: dict[str, Any]) -> dict[str, Any] | None:
    try:
        cache = json.loads((out / BASELINE_CACHE).read_text())
    except (OSError, ValueError):
        return None
    return cache if isinstance(cache, dict) and cache.get("key") == key else None


def reproduce_deblur(out: Path, quick: bool, progress: bool = True, *,
                     n_test: int | None = None, n_baseline: int | None = None,
                     model_name: str | None = None,
                     models: Path | None = None) -> dict[str, Any]:
    """Run the Deblur-2D comparison and write ``deblur_table.{md,csv}`` and
    ``deblur_recovery.png`` to ``out``; return the numbers (JSON-able).

    ``quick``: a tiny network trained on the spot (seconds) and a few test images.
    Otherwise the shipped checkpoint ``MODELS/deceptronnet-v0-c8-e6`` (``models``: the
    models folder, default the checkout's ``models/``; trained into ``out/models`` if
    absent or mismatched) on all 400 test images (``n_test`` evaluates a prefix;
    ``n_baseline`` runs the baselines on a smaller prefix, see :func:`evaluate_set`).
    The baselines' results are cached in ``out/deblur_baselines.json`` (reused when
    the problem, test set and protocol match; :func:`compute_baselines`).
    The baselines run in float64 (the entry point must have switched ``jax_enable_x64``
    on; the CLI and the tests do), the network in its training dtype (float32); both
    dtypes are in the table.
    """
    dtype = jnp.float64
    require_x64(dtype)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda s: None)
    spec, name = _specs(quick, model_name)
    t_all = time.perf_counter()
    store = ModelStore(models if models is not None else default_models_dir(), out, progress)
    ck, how = store.deceptronnet(spec, name)
    say(f"deblur2d: {how}")
    problem = deblur2d.build(spec)
    count = n_test or spec["data"]["n_test"]
    k = min(n_baseline or count, count)
    cache = _cached_baselines(out, _baseline_key(spec, count, k))
    if cache is None:
        cache = compute_baselines(out, quick, progress, n_test=count, n_baseline=k,
                                  model_name=model_name)
    else:
        say(f"deblur2d: baselines from {out / BASELINE_CACHE}")
    results: dict[str, Any] = {
        "quick": quick, "n_test": count, "n_baseline": k,
        "model": {"how": how, "name": name, "config": ck.card["config"],
                  "training_time_s": ck.card["training_time_s"],
                  "card_metrics": ck.card["metrics"]},
        "protocol": _protocol(), "paper": PAPER, "sets": {},
    }
    recon_test = None
    for ts in test_sets(spec, count):
        cached = cache["sets"][ts.name]
        baselines = (cached["rows"], {m: np.asarray(x) for m, x in cached["recon"].items()})
        rows, recon = evaluate_set(None, problem, ck.model, ts, dtype=dtype, n_baseline=k,
                                   baselines=baselines, log=say)
        results["sets"][ts.name] = rows
        if ts.name == "test":
            recon_test = (ts, recon)
    measured = results["sets"]["test"]["DeceptronNet"]["x_rmse"]
    results["target"] = {"x_rmse": TARGET_X_RMSE, "measured": measured,
                         "met": bool(measured <= TARGET_X_RMSE)}
    results["wall_s"] = time.perf_counter() - t_all
    write_tables(out, results)
    recovery_figure(out, *recon_test, count=FIGURE_IMAGES)
    save_json(out / "deblur_results.json", results)
    return results


#: Baseline images in the full (non-quick) reproduction: x-GD and LM over 80 iterations
#: of the 64 x 64 problem cost ~3 s per image pair on 2 CPU cores (all 400: ~20 min)
FULL_BASELINE_IMAGES = 100


#: Test images of the quick reproduction when the shipped network is available
QUICK_IMAGES = 16
#: ... and the baselines' share of them (the regularised baselines solve a grid of
#: alphas per image: ~1 s per image and regulariser on 2 CPU cores)
QUICK_BASELINE_IMAGES = 8


#: The section's work folder inside the paper's folder, and the files it publishes
WORK = ".work"
PUBLISHED = ("deblur_table.csv", "deblur_table.md", "deblur_recovery.png",
             "deblur_results.json")


def section(n_baseline: int = FULL_BASELINE_IMAGES):
    """The Deblur-2D study as an extra section of ``invphys reproduce`` (published as
    ``OUT/deblur2d/``; its table and figure go into the README section).

    The study computes into the work folder ``OUT/.work/deblur2d`` (which also keeps the
    baselines' cache between runs); its outputs are handed to the shared writer as
    ``files``, which publishes them with the rest of the run, whole or not at all."""

    def run(ctx, settings, log) -> dict[str, Any]:
        sub = Path(ctx.out) / WORK / "deblur2d"
        models = ctx.models.models
        why_not = ctx.models.shipped_deceptronnet(*_specs(False, None)) \
            if settings.quick else None
        if why_not:
            log(f"[deblur2d] shipped {SHIPPED_NAME} not usable ({why_not}): training a "
                "tiny network")
        if settings.quick and not why_not:
            # quick: the shipped network (inference is cheap) on a few test images
            res = reproduce_deblur(sub, quick=False, progress=True, n_test=QUICK_IMAGES,
                                   n_baseline=QUICK_BASELINE_IMAGES, models=models)
        else:  # no usable shipped model in quick mode: a tiny one trained on the spot
            res = reproduce_deblur(sub, quick=settings.quick, progress=True,
                                   n_baseline=None if settings.quick else n_baseline,
                                   models=models)
        md = (sub / "deblur_table.md").read_text().splitlines()
        body = "\n".join(md[1:]).strip()  # drop the Markdown title
        t = res["target"]
        log(f"[deblur2d] DeceptronNet x-RMSE {t['measured']:.4f} (target {t['x_rmse']}: "
            f"{'met' if t['met'] else 'MISSED'})")
        public = {"sets": res["sets"], "target": res["target"], "n_test": res["n_test"],
                  "n_baseline": res["n_baseline"], "model": {
                      k: res["model"][k] for k in ("how", "name", "config", "training_time_s")}}
        return {"public": public,
                "readme": "**DeceptronNet v0 on Deblur-2D** (the paper's 2D preview, "
                          "fairness protocol):\n\n" + body,
                "images": ["deblur2d/deblur_recovery.png"],
                "files": {f"deblur2d/{name}": str(sub / name) for name in PUBLISHED},
                "figures": {"deblur_table": res["sets"]}}

    return Section("deblur2d", run)
