"""Our own surrogate inverses: the Deceptron trained with GN, layer-wise GN and SGN
against Adam, through the one harness (:func:`invphys.learn.fit`).

Every optimizer trains the spec's model on the same data from the same seed and
records the validation MSE after every epoch; reported: epochs and training
wall-clock (the first epoch's compilation left out, reported apart) to the
val-MSE targets. Adam keeps the spec's protocol (learning rate, clip, cosine
schedule, batch); the Gauss-Newton optimizers take larger batches (fewer, costlier
steps) and run in float64 (in float32 the GN direction of the MLP Deceptron came out
non-finite on the first step).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from ... import optim
from ..._data import make_dataset
from ..._spec import load_spec
from ...learn import DeceptronTask, TrainConfig, fit, make_optimizer, steps_per_epoch, task_data
from ...physics import load_problem
from .. import _gn_bench as gb


@dataclasses.dataclass(frozen=True)
class Case:
    """One surrogate: the spec, its size overrides, epochs per optimizer, targets."""

    spec: str
    changes: tuple[tuple[str, Any], ...]
    n_train: int
    adam_epochs: int
    gn_epochs: int
    gn_batch: int
    targets: tuple[float, ...]
    optimizers: tuple[str, ...] = ("adam", "gn-full", "gn-layerwise", "sgn")
    epochs_by: tuple[tuple[str, int], ...] = ()  # per-optimizer epochs instead of gn_epochs

    def epochs(self, optimizer: str) -> int:
        return dict(self.epochs_by).get(
            optimizer, self.adam_epochs if optimizer == "adam" else self.gn_epochs)


def cases(quick: bool) -> dict[str, Case]:
    """The oscillator MLP Deceptron (target val MSE <= 1e-3) and the linear Heat-1D
    Deceptron (target 0.06, the shipped model's 0.058 rounded up). Quick: 1000 training samples, a
    64 x 2 oscillator MLP, Adam and full GN only."""
    if quick:
        return {
            "oscillator-mlp": Case("oscillator", (("width", 64), ("depth", 2)), 1000, 40, 4,
                                   250, (1e-1, 1e-2, 1e-3), ("adam", "gn-full")),
            "heat1d-linear": Case("heat1d", (), 1000, 30, 3, 500, (0.1, 0.06),
                                  ("adam", "gn-full")),
        }
    # layer-wise GN on the oscillator's 3 x 256 MLPs runs one CG per layer (8 blocks),
    # several times a full-GN step: 4 epochs of it fit the run, not 20
    return {
        "oscillator-mlp": Case("oscillator", (), 5000, 100, 20, 500, (1e-1, 1e-2, 1e-3),
                               epochs_by=(("gn-layerwise", 4),)),
        "heat1d-linear": Case("heat1d", (), 5000, 60, 10, 500, (0.1, 0.06)),
    }


def _optimizers(cfg: TrainConfig, nb: int) -> dict[str, tuple[Any, int, str]]:
    """name -> (optimizer, batch size or 0 for the config's, dtype)."""
    gn_kw = dict(cg_max_steps=50, cg_atol=1e-12)
    adam = make_optimizer("adam", lr=cfg.lr, clip_norm=cfg.clip_norm,
                          schedule=cfg.lr_schedule, lr_final=cfg.lr_final,
                          total_steps=cfg.epochs * nb)
    return {
        "adam": (adam, 0, cfg.dtype),
        "gn-full": (optim.gauss_newton(**gn_kw), 1, "float64"),
        "gn-layerwise": (optim.gauss_newton(mode="layerwise", groups=optim.by_layer, **gn_kw),
                         1, "float64"),
        "sgn": (optax.chain(optim.sgn_lm(1.0, damping=1e-3, metric="diagonal"),
                            optax.zero_nans()), 1, "float64"),
    }


def train_case(name: str, case: Case, log) -> dict[str, Any]:
    spec = load_spec(case.spec)
    dataset = make_dataset(load_problem(spec.replace({"physics.fidelity": "paper"})),
                           n_train=case.n_train)
    base = TrainConfig.from_spec(spec).replace(**dict(case.changes))
    out: dict[str, Any] = {"targets": list(case.targets), "n_train": case.n_train,
                           "config": dict(case.changes), "runs": {}}
    for opt_name in case.optimizers:
        gn = opt_name != "adam"
        cfg = base.replace(epochs=case.epochs(opt_name))
        if gn:
            cfg = cfg.replace(batch_size=case.gn_batch, dtype="float64")
        nb = steps_per_epoch(cfg, case.n_train)[1]
        opt = _optimizers(cfg, nb)[opt_name][0]
        data = task_data(dataset, jnp.float64 if cfg.dtype == "float64" else jnp.float32)
        task = DeceptronTask(cfg=cfg, n_train=case.n_train, x_size=data["x_train"].shape[1],
                             y_size=data["z_train"].shape[1])
        try:
            _, hist = fit(task, data, opt, epochs=cfg.epochs, config=cfg.to_dict(),
                          digest=dataset.digest())
        except Exception as e:  # a diverged run is a result, not a crash
            log(f"[surrogate] {name} {opt_name}: {type(e).__name__}: {e}")
            out["runs"][opt_name] = {"error": f"{type(e).__name__}: {e}"}
            continue
        val = np.array([h["val_mse"] for h in hist])
        times = np.array([h["time_s"] for h in hist])
        steady = float(np.median(times[1:])) if len(times) > 1 else float(times[0])
        compile_s = max(float(times[0]) - steady, 0.0)
        run_times = np.cumsum(np.concatenate([[steady], times[1:]]))
        run = {"batch": cfg.batch_size, "epochs": cfg.epochs, "dtype": cfg.dtype,
               "val_mse": val.tolist(), "compile_s": compile_s, "epoch_s": steady,
               "targets": {}}
        for t in case.targets:
            k = gb.iters_to_target(np.concatenate([[np.inf], val]), t)
            run["targets"][f"{t:g}"] = {"epochs": k,
                                        "wall_s": float(run_times[k - 1]) if k else None}
        out["runs"][opt_name] = run
        log(f"[surrogate] {name} {opt_name}: val MSE {val[-1]:.3g} after {cfg.epochs} epochs "
            f"(batch {cfg.batch_size}), {steady:.2g} s/epoch, to targets "
            + ", ".join(f"{t}: {v['epochs']}" for t, v in run["targets"].items()))
    return out


def run_surrogates(quick: bool, parts, log) -> dict[str, Any]:
    chosen = {"oscillator": "oscillator-mlp", "heat1d": "heat1d-linear"}
    return {name: train_case(name, case, log) for key, name in chosen.items()
            if key in parts for case in [cases(quick)[name]]}


def tables(res: dict[str, Any]) -> dict[str, list[list[str]]]:
    t = {}
    for name, r in res.items():
        rows = [["optimizer", "batch", "epochs run", "final val MSE", "s / epoch"]
                + [f"epochs to {x:g}" for x in r["targets"]]
                + [f"wall s to {x:g}" for x in r["targets"]]
                + [f"wall ratio vs adam to {min(r['targets']):g}"]]
        adam = r["runs"].get("adam", {}).get("targets", {}).get(f"{min(r['targets']):g}", {})
        for opt_name, run in r["runs"].items():
            if "error" in run:
                rows.append([opt_name, "-", "-", run["error"][:40]] + ["-"] * (
                    2 * len(r["targets"]) + 2))
                continue
            tg = [run["targets"][f"{x:g}"] for x in r["targets"]]
            last = tg[-1].get("wall_s")
            ratio = last / adam["wall_s"] if last and adam.get("wall_s") else None
            rows.append([opt_name, str(run["batch"]), str(run["epochs"]),
                         gb.fmt(run["val_mse"][-1]), gb.fmt(run["epoch_s"], 2)]
                        + [gb.fmt(x["epochs"]) for x in tg]
                        + [gb.fmt(x["wall_s"], 2) for x in tg] + [gb.fmt(ratio, 2)])
        t[f"surrogate_{name}"] = rows
    return t
