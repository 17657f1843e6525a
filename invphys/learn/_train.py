"""Training a Deceptron: the paper's protocol as a task of the one harness (:mod:`._trainer`).

One epoch is one jitted call (a ``lax.scan`` over shuffled minibatches). What changes
from epoch to epoch besides the weights and the optimizer state (the JCP trigger flag,
the last validation MSE) is carried as arrays in the state's ``extra``, so the epoch
compiles once. The randomness of epoch ``k`` (shuffle, JCP probes, RJCP probes) is
drawn from ``fold_in(key, k)``, ``key`` fixed by the seed: a run resumed after epoch k
replays exactly the epochs an uninterrupted run would, and ends bit-identical.

JCP schedule (protocol): w_JCP = 0 until epoch >= round(jcp_start * epochs) and the
validation MSE (of the weights entering the epoch) is below ``jcp_trigger``; from then on
(the trigger is sticky) w_JCP = jcp_weight (0.2 + 0.8 t), t = (epoch - start) /
(ramp_end - start) clipped to [0, 1], ramp_end = round(jcp_ramp_end * epochs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from .._configs import TrainConfig
from .._data import Dataset, make_dataset
from .._spec import load_spec
from ..physics import load_problem
from ._checkpoint import EXTRA_FILES, Checkpoint, finalise
from ._deceptron import AbstractDeceptron, init_model, skeleton_model
from ._losses import (
    TERMS,
    LossWeights,
    as_probes,
    deceptron_outputs,
    jcp_from_probes,
    terms_from_outputs,
)
from ._optimizers import make_optimizer
from ._store import check_out_dir
from ._trainer import AbstractTask, TrainState, fit


def loss_weights(cfg: TrainConfig) -> LossWeights:
    return LossWeights(fit=cfg.w_fit, rec=cfg.w_rec, cyc=cfg.w_cyc, spectral=cfg.w_spectral,
                       bias=cfg.w_bias, comp=cfg.w_comp, sup=cfg.w_sup)


def jcp_weight_at(cfg: TrainConfig, epoch, on):
    """The scheduled JCP weight at ``epoch`` given the (sticky) trigger flag ``on``."""
    start, end = cfg.start_epoch, cfg.ramp_end_epoch
    epoch = jnp.asarray(epoch).astype(float)  # the default float: float64 with x64
    t = jnp.clip((epoch - start) / max(end - start, 1), 0.0, 1.0)
    return jnp.where(on, cfg.jcp_weight * (0.2 + 0.8 * t), 0.0)


def jcp_gate(cfg: TrainConfig, epoch, was_on, last_val_mse):
    """Whether JCP is on in ``epoch``: it was on already (sticky), or epoch >= the start
    epoch and the validation MSE of the weights entering the epoch is below the trigger.
    Never with ``cfg.jcp`` false."""
    if not cfg.jcp:
        return jnp.asarray(False)
    return jnp.asarray(was_on) | (
        (jnp.asarray(epoch) >= cfg.start_epoch) & (jnp.asarray(last_val_mse) < cfg.trigger)
    )


def val_mse(model: AbstractDeceptron, x: Array, z: Array) -> Array:
    """MSE(f(x), z) over every sample and output dimension."""
    return jnp.mean((jax.vmap(model.f)(x) - z) ** 2)


_val_mse_jit = eqx.filter_jit(val_mse)


class JCPState(eqx.Module):
    """What the Deceptron task carries between epochs: the sticky JCP trigger and the
    validation MSE of the current weights."""

    jcp_on: Bool[Array, ""]
    val_mse: Float[Array, ""]


def steps_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(batch size, batches per epoch); the remainder of each shuffle is dropped."""
    batch = min(cfg.batch_size, n_train)
    return batch, n_train // batch


@dataclasses.dataclass(frozen=True)
class DeceptronTask(AbstractTask):
    """The Deceptron protocol (affine or MLP pair) on raw x and normalised z.

    ``data`` holds ``x_train``, ``z_train``, ``x_val``, ``z_val``."""

    cfg: TrainConfig
    n_train: int
    x_size: int
    y_size: int

    @property
    def seed(self) -> int:  # type: ignore[override]
        return self.cfg.seed

    def describe(self) -> str:
        return f"train [{self.cfg.model}, {self.cfg.optimizer}]"

    def init_model(self, data):
        return init_model(self.cfg, data["x_train"], data["z_train"])

    def skeleton(self):
        return skeleton_model(self.cfg, self.x_size, self.y_size)

    def init_extra(self, model, data):
        return JCPState(jcp_on=jnp.zeros((), bool),
                        val_mse=_val_mse_jit(model, data["x_val"], data["z_val"]))

    def skeleton_extra(self):
        dtype = jnp.float64 if self.cfg.dtype == "float64" else jnp.float32
        return JCPState(jcp_on=jnp.zeros((), bool), val_mse=jnp.zeros((), dtype))

    def plan(self, epoch: Int[Array, ""], extra: JCPState, data):
        cfg = self.cfg
        x_tr, x_val = data["x_train"], data["x_val"]
        batch, nb = steps_per_epoch(cfg, self.n_train)
        on = jcp_gate(cfg, epoch, extra.jcp_on, extra.val_mse)
        w_jcp = jcp_weight_at(cfg, epoch, on).astype(x_tr.dtype)
        # All of the epoch's randomness in ONE draw (each PRNG call site costs compile
        # time): the shuffle (argsort of N normals), the JCP probes of every step, and
        # the RJCP probes. Memory: (1 + P) x the training x, plus the RJCP probes.
        nv, n = x_val.shape
        sizes = (self.n_train, nb * batch * cfg.jcp_probes * n, nv * cfg.rjcp_probes * n)
        k_train = jax.random.split(jax.random.key(cfg.seed))[1]
        u = jax.random.normal(jax.random.fold_in(k_train, epoch), (sum(sizes),), x_tr.dtype)
        u_perm, u_jcp, u_rjcp = jnp.split(u, np.cumsum(sizes)[:-1].tolist())
        idx = jnp.argsort(u_perm)[: nb * batch].reshape(nb, batch)
        xi = as_probes(u_jcp.reshape(nb, batch, cfg.jcp_probes, n), cfg.probe)
        xi_val = as_probes(u_rjcp.reshape(nv, cfg.rjcp_probes, n), cfg.probe)
        return (idx, xi), {"on": on, "w_jcp": w_jcp, "xi_val": xi_val}

    def batch(self, data, step):
        idx, xi = step
        return data["x_train"][idx], data["z_train"][idx], xi

    def outputs(self, model, batch, ctx):
        xb, zb, xib = batch
        return deceptron_outputs(model, xb, zb, xib, with_jcp=ctx["on"])

    def loss(self, outputs, batch, ctx):
        xb, zb, _ = batch
        terms = terms_from_outputs(outputs, xb, zb)
        w, w_jcp = loss_weights(self.cfg), ctx["w_jcp"]
        loss = (w.fit * terms["fit"] + w.rec * terms["rec"] + w.cyc * terms["cyc"]
                + w.spectral * terms["spectral"] + w.bias * terms["bias"]
                + w.comp * terms["comp"] + w.sup * terms["sup"] + w_jcp * terms["jcp"])
        return loss, terms

    def end_epoch(self, model, extra, ctx, aux, data):
        v = val_mse(model, data["x_val"], data["z_val"])
        metrics = {
            "loss": jnp.mean(aux["loss"]),
            **{k: jnp.mean(aux[k]) for k in TERMS},
            "val_mse": v,
            "rjcp": jcp_from_probes(model, data["x_val"], ctx["xi_val"]),
            "w_jcp": ctx["w_jcp"],
            "jcp_on": ctx["on"],
        }
        return JCPState(jcp_on=ctx["on"], val_mse=v), metrics

    def postfix(self, metrics):
        return {"loss": f"{metrics['loss']:.3g}", "fit": f"{metrics['fit']:.3g}",
                "val": f"{metrics['val_mse']:.3g}", "rjcp": f"{metrics['rjcp']:.3g}",
                "w_jcp": f"{metrics['w_jcp']:.2g}"}


def task_data(dataset: Dataset, dtype) -> dict[str, Array]:
    """The arrays a :class:`DeceptronTask` trains on (x raw, z normalised)."""
    norm = dataset.normaliser
    return {
        "x_train": jnp.asarray(dataset.x_train, dtype),
        "z_train": jnp.asarray(norm.transform(dataset.y_train), dtype),
        "x_val": jnp.asarray(dataset.x_val, dtype),
        "z_val": jnp.asarray(norm.transform(dataset.y_val), dtype),
    }


def train_deceptron(
    dataset: Dataset,
    config: TrainConfig | Mapping[str, Any] | None = None,
    *,
    spec=None,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
    stop_after: int | None = None,
    optimizer=None,
) -> Checkpoint:
    """Train a Deceptron on ``dataset`` (raw x, normalised y) and return a :class:`Checkpoint`.

    Arguments:
        dataset: from :func:`invphys.make_dataset`; the model maps raw x to
            ``dataset.normaliser.transform(y)``.
        config: a :class:`TrainConfig` (or a mapping of its fields); default: the spec's
            ``[train]`` section, else the protocol defaults.
        spec: the problem's :class:`invphys.Spec` (recorded in the card; used to name
            the problem and find pinned components).
        out: checkpoint folder. After every epoch the training state is saved there
            (``state.eqx``, ``state.json``, ``log.jsonl``); at the end the weights
            (``model.eqx``), ``normaliser.npz`` and ``card.json``. Every file is atomic.
        resume: continue from the state saved in ``out`` (same config and data required).
        overwrite: start afresh even if ``out`` already holds a run.
        progress: show a tqdm bar (epoch, losses, validation MSE, RJCP, JCP weight).
        stop_after: stop after this many completed epochs without finalising (as if
            interrupted); resume later with ``resume=True``.
        optimizer: an optax transformation to use instead of ``config.optimizer``
            (see :mod:`invphys.learn._trainer` for what its update receives).
    """
    if config is None:
        config = TrainConfig.from_spec(spec) if spec is not None else TrainConfig()
    elif not isinstance(config, TrainConfig):
        config = TrainConfig.from_dict(config)
    cfg = config
    data = task_data(dataset, jnp.float64 if cfg.dtype == "float64" else jnp.float32)
    n_train, n = data["x_train"].shape
    task = DeceptronTask(cfg=cfg, n_train=n_train, x_size=n, y_size=data["z_train"].shape[1])
    nb = steps_per_epoch(cfg, n_train)[1]
    if optimizer is None:
        optimizer = make_optimizer(cfg.optimizer, lr=cfg.lr, clip_norm=cfg.clip_norm,
                                   schedule=cfg.lr_schedule, lr_final=cfg.lr_final,
                                   total_steps=cfg.epochs * nb)
    digest = dataset.digest()
    state, history = fit(task, data, optimizer, epochs=cfg.epochs, config=cfg.to_dict(),
                         digest=digest, out=out, resume=resume, overwrite=overwrite,
                         progress=progress, stop_after=stop_after, steps_per_epoch=nb,
                         extra_files=EXTRA_FILES)
    complete = int(state.epoch) >= cfg.epochs
    return finalise(state, cfg, dataset, spec=spec, history=history,
                    out=Path(out) if (out is not None and complete) else None,
                    complete=complete, digest=digest)


def train_from_spec(
    spec,
    *,
    out: str | Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = False,
) -> Checkpoint:
    """Build the spec's problem, simulate its dataset, and train (the ``invphys train`` path)."""
    spec = load_spec(spec)
    if out is not None and not overwrite:  # before the dataset is simulated
        check_out_dir(Path(out), resume=resume, overwrite=False, extra_files=EXTRA_FILES)
    problem = load_problem(spec)
    dataset = make_dataset(problem, progress=progress)
    return train_deceptron(dataset, spec=spec, out=out, resume=resume, overwrite=overwrite,
                           progress=progress)


__all__ = ["DeceptronTask", "JCPState", "TrainConfig", "TrainState", "jcp_gate",
           "jcp_weight_at", "steps_per_epoch", "train_deceptron", "train_from_spec",
           "val_mse"]
