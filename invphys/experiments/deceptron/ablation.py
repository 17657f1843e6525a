"""The paper's JCP ablation on Heat (paper mode, the main table's 40 test problems):
train each variant (or load it), then report its model metrics and the paper-mode D-IPG
iterations to eps."""

from __future__ import annotations

from typing import Any

from ..._data import Dataset
from ..._spec import Spec
from ..models import ModelStore
from .common import ABLATION, Settings, solve_untimed, training_log
from .paper_mode import paper_methods, paper_setup


def ablation_config(base, label: str):
    """The TrainConfig of an ablation variant (``base`` with the variant's changes)."""
    return base.replace(**ABLATION[label][1])


def ablation(spec: Spec, dataset: Dataset, base_cfg, base_ck, store: ModelStore,
             settings: Settings, log, name: str = "heat1d-linear") -> dict[str, Any]:
    """One row per variant of ``settings.ablation``; the paper model (``base_ck``) is the
    "+JCP" row, the others are found or trained by ``store`` as ``name + suffix``."""
    rows: dict[str, Any] = {}
    for label in settings.ablation:
        suffix, _ = ABLATION[label]
        cfg = ablation_config(base_cfg, label)
        if cfg == base_cfg:
            ck, how = base_ck, "the paper model"
        else:
            ck, how = store.deceptron(spec, dataset, cfg, name + suffix)
        ps = paper_setup(spec, dataset, ck)
        dipg = solve_untimed(ps.surrogate, ps.y, ps.x0,
                             paper_methods(ck, ps.surrogate, ("dipg",))["dipg"], ps.rules)
        m = ck.card["metrics"]
        rows[label] = {
            "source": how, "changes": ABLATION[label][1],
            **{k: m.get(k) for k in ("val_mse", "rjcp", "vw_i_fro", "cond_w", "jcp_on")},
            "dipg": dipg, "_log": training_log(ck),
        }
        log(f"[ablation] {label:<15} val MSE {m['val_mse']:.4f}  RJCP {m['rjcp']:.3g}  "
            f"||VW-I||_F {m.get('vw_i_fro', float('nan')):.3g}  D-IPG iters "
            f"{dipg['iterations_mean']:.2f} (success {dipg['success']:.2f})  [{how}]")
    return rows
