"""The paper's Heat difficulty sweep (paper mode): per number of explicit FD steps T its
own dataset and Deceptron, then x-GD / D-IPG / GN iterations to eps."""

from __future__ import annotations

from typing import Any

from ..._data import make_dataset
from ..._spec import Spec
from ..models import ModelStore
from .common import Settings, load_problem_paper, solve_untimed
from .paper_mode import paper_methods, paper_setup


def difficulty_sweep(spec: Spec, base: dict[str, Any], settings: Settings, store: ModelStore,
                     log) -> dict[str, Any]:
    """One row per ``settings.sweep_steps``. ``base`` holds the main run's checkpoint
    (``ck``), config (``cfg``) and paper results (``paper``), reused at the spec's own T."""
    rows: dict[str, Any] = {}
    own = spec["physics"]["steps"]
    constraints = load_problem_paper(spec)
    for steps in settings.sweep_steps:
        if steps == own:
            res = {m: base["paper"][m] for m in ("pg", "dipg", "gn")}
            metrics, how = base["ck"].card["metrics"], "the paper model"
        else:
            spec_t = spec.replace({"physics.steps": steps})
            dataset = make_dataset(load_problem_paper(spec_t), progress=store.progress)
            ck, how = store.deceptron(spec_t, dataset, base["cfg"],
                                      f"{spec.name}-T{steps}-linear")
            ps = paper_setup(spec_t, dataset, ck, constraints=constraints)
            res = {k: solve_untimed(ps.surrogate, ps.y, ps.x0, method, ps.rules)
                   for k, method in paper_methods(ck, ps.surrogate, ("pg", "dipg", "gn")).items()}
            metrics = ck.card["metrics"]
        row = {"steps": steps, "source": how,
               **{k: metrics.get(k) for k in ("val_mse", "rjcp", "vw_i_fro", "cond_w")},
               **{m: {k: v for k, v in r.items() if not k.startswith("_")}
                  | {"_iters": r["_iters"]} for m, r in res.items()}}
        row["ratio_pg_dipg"] = res["pg"]["iterations_mean"] / res["dipg"]["iterations_mean"]
        rows[str(steps)] = row
        log(f"[sweep] T = {steps:>3}: x-GD {res['pg']['iterations_mean']:6.1f}  D-IPG "
            f"{res['dipg']['iterations_mean']:5.2f}  GN {res['gn']['iterations_mean']:5.2f}  "
            f"ratio {row['ratio_pg_dipg']:.1f}x  [{how}]")
    return rows
